"""The κ evaluator: phono3py parity on real DFT forces, the Matbench metrics and inputs, the CLI."""

from __future__ import annotations

import functools
import json

import ase.io
import numpy as np
import phono3py
import pytest
import xarray as xr
from typer.testing import CliRunner

import phonon_eval as pe
import phonon_eval.kappa_results as kappa_results_module
from cli.eval import app
from conftest import shared_file, tiny_model_file
from phonon_eval.kappa import (
    Conductivity,
    KappaInputError,
    KappaMaterial,
    KappaSettings,
    compare,
    imaginary_modes,
    produce_force_constants,
    read_matbench,
    reference_conductivity,
    run_conductivity,
    srd,
    srme,
)
from phonon_eval.records import read_record

runner = CliRunner()
SI = "data/dft/phono3py-Si-PBE"
# the settings of the READMEs of the phono3py examples: RTA, no isotopes, no boundary scattering
README = dict(method="rta", isotope=False, boundary_mfp=None, relax=False)


@pytest.fixture(scope="module")
def si_record():
    return read_record(shared_file(SI))


@pytest.fixture(scope="module")
def si_rta11(si_record) -> Conductivity:
    """DFT κ of Si by this module's pipeline: 11x11x11, RTA, 300 K."""
    settings = KappaSettings(mesh=(11, 11, 11), **README)
    return reference_conductivity(KappaMaterial.from_record(si_record), settings.mesh, settings)


def _phono3py_kappa(ph3: phono3py.Phono3py, mesh: list[int]) -> np.ndarray:
    """phono3py's own κ at 300 K: RTA, no isotopes, no boundary scattering (its defaults)."""
    ph3.mesh_numbers = mesh
    ph3.init_phph_interaction()
    ph3.run_thermal_conductivity(temperatures=[300.0])
    return ph3.thermal_conductivity.kappa[0, 0]  # (6,) xx, yy, zz, yz, xz, xy


def _ours(ph3: phono3py.Phono3py, mesh: tuple[int, int, int]) -> Conductivity:
    """This module's DFT side on a phono3py object holding only the displacement datasets."""
    produce_force_constants(ph3)
    ph3.mesh_numbers = list(mesh)
    ph3.init_phph_interaction()
    return run_conductivity(ph3, KappaSettings(mesh=mesh, **README))


def _assert_kappa(ours: Conductivity, kappa6: np.ndarray, rtol: float) -> None:
    assert ours.kappa[0] == pytest.approx(kappa6[:3].mean(), rel=rtol)
    tensor = ours.kappa_tensor[0]
    np.testing.assert_allclose(np.diag(tensor), kappa6[:3], rtol=rtol)
    np.testing.assert_allclose([tensor[1, 2], tensor[0, 2], tensor[0, 1]], kappa6[3:], atol=1e-8)
    # phono3py's mode κ carry their q-point's star: they add up to κ
    np.testing.assert_allclose(ours.mode_kappa.sum(axis=(1, 2)) / ours.weights.sum(), ours.kappa, rtol=1e-10)


def _check_dft_side(load_args: tuple, load_kwargs: dict, record: Conductivity, mesh: tuple[int, int, int]) -> None:
    """Our fc2/fc3 production and κ equal phono3py.load's to 1e-8 on phono3py's own structure.

    The record-based DFT side agrees to 5e-4 only: the record keeps Cartesian positions, and the
    5.5e-17 by which the fractional coordinates come back different moves phono3py's κ by ~2e-4.
    """
    expected = _phono3py_kappa(phono3py.load(*load_args, **load_kwargs), list(mesh))
    _assert_kappa(_ours(phono3py.load(*load_args, produce_fc=False, **load_kwargs), mesh), expected, rtol=1e-8)
    _assert_kappa(record, expected, rtol=5e-4)


def test_si_dft_kappa_is_phono3pys_own(si_rta11, monkeypatch, tmp_path):
    folder = shared_file(SI)
    monkeypatch.chdir(tmp_path)  # phono3py.load would pick up an fc3.hdf5 in the working directory
    _check_dft_side((folder / "phono3py_disp.yaml",), {"forces_fc3_filename": folder / "FORCES_FC3"}, si_rta11, (11, 11, 11))
    # the example's README: 119.5 W/m-K at 300 K on 11x11x11 (phono3py 4.10 gives 119.43)
    assert si_rta11.kappa[0] == pytest.approx(119.5, abs=0.1)


@pytest.mark.slow
def test_znte_dft_kappa_is_phono3pys_own(monkeypatch, tmp_path):
    """ZnTe with NAC, 14x14x14 (3 κ solutions of about a minute each). The README's 46.5 W/m-K
    is not what phono3py 4.10 itself gives for the README's command (52.84 W/m-K; 45.0 with
    isotopes, 63.3 without NAC): an older phono3py made it, so the check is against the
    installed phono3py only."""
    import lzma

    source = shared_file("data/dft/phono3py-ZnTe-PBEsol/phono3py_params_ZnTe.yaml.xz")
    settings = KappaSettings(mesh=(14, 14, 14), **README)
    record = reference_conductivity(KappaMaterial.from_record(read_record(source)), settings.mesh, settings)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "phono3py_params.yaml").write_bytes(lzma.decompress(source.read_bytes()))
    _check_dft_side(("phono3py_params.yaml",), {}, record, settings.mesh)


def test_conductivity_methods_on_the_installed_phono3py(si_record, monkeypatch):
    """Wigner is transport_type="smm19" in phono3py 4.x; its band-pair terms are split into modes."""
    ph3 = si_record.to_phono3py(produce_fc=False)
    produce_force_constants(ph3)
    ph3.mesh_numbers = [5, 5, 5]
    ph3.init_phph_interaction()
    calls = []
    real = ph3.run_thermal_conductivity

    @functools.wraps(real)  # keeps the signature that run_conductivity inspects
    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(ph3, "run_thermal_conductivity", spy)
    result = {m: run_conductivity(ph3, KappaSettings(method=m, temperatures=(300.0, 600.0))) for m in ("rta", "wigner", "lbte")}
    if tuple(int(x) for x in phono3py.__version__.split(".")[:2]) >= (4, 10):
        assert calls[1]["transport_type"] == "smm19" and "conductivity_type" not in calls[1]
    assert [c["is_LBTE"] for c in calls] == [False, False, True]
    for method, c in result.items():
        np.testing.assert_allclose(c.mode_kappa.sum(axis=(1, 2)) / c.weights.sum(), c.kappa, rtol=1e-8, err_msg=method)
        assert c.mode_kappa.shape == (2, len(c.qpoints), 6) and c.weights.sum() == 125
    # the coherence (inter-band) term adds a little to the particle-like κ
    assert np.all(result["wigner"].kappa > result["rta"].kappa)
    assert np.all(result["wigner"].kappa < 1.01 * result["rta"].kappa)


def test_reference_against_itself_is_zero_error(si_rta11):
    row = compare(si_rta11, si_rta11)
    assert row["srme"][0] == 0.0 and row["sre"][0] == 0.0 and row["srd"][0] == 0.0
    assert row["note"] == ""


def test_metrics_of_known_perturbations(si_rta11):
    # every mode 10 % higher: SRD = SRME = 2 · 0.1 / 2.1
    eps = 0.1
    more = Conductivity(
        temperatures=si_rta11.temperatures, kappa=si_rta11.kappa * (1 + eps), mode_kappa=si_rta11.mode_kappa * (1 + eps),
        qpoints=si_rta11.qpoints, weights=si_rta11.weights, mesh=si_rta11.mesh,
    )
    row = compare(more, si_rta11)
    assert row["srd"][0] == pytest.approx(2 * eps / (2 + eps), rel=1e-12)
    assert row["sre"][0] == pytest.approx(2 * eps / (2 + eps), rel=1e-12)
    assert row["srme"][0] == pytest.approx(2 * eps / (2 + eps), rel=1e-12)

    # by hand: two q-points of weights 1 and 3, two bands; reference modes (1, 2) and (3, 6),
    # so κ_ref = 12 / 4 = 3; model modes (2, 2) and (3, 3), κ = 10 / 4 = 2.5.
    # SRD = 2 (2.5 - 3) / 5.5 = -2/11; SRME = 2 (|1| + 0 + 0 + |-3|) / 4 / 5.5 = 4/11
    q = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    ref = Conductivity(np.array([300.0]), np.array([3.0]), np.array([[[1.0, 2.0], [3.0, 6.0]]]), q, np.array([1, 3]), np.array([2, 2, 2]))
    model = Conductivity(np.array([300.0]), np.array([2.5]), np.array([[[2.0, 2.0], [3.0, 3.0]]]), q, np.array([1, 3]), np.array([2, 2, 2]))
    assert srd(model.kappa, ref.kappa)[0] == pytest.approx(-2 / 11)
    assert srme(model.mode_kappa, ref.mode_kappa, model.weights, model.kappa, ref.kappa)[0] == pytest.approx(4 / 11)
    # compare matches q-points by coordinates, modulo reciprocal lattice vectors, in any order
    shuffled = Conductivity(ref.temperatures, ref.kappa, ref.mode_kappa[:, ::-1], np.array([[-0.5, 0, 0], [1.0, 0, 0]]), ref.weights[::-1], ref.mesh)
    row = compare(model, shuffled)
    assert row["srme"][0] == pytest.approx(4 / 11) and row["sre"][0] == pytest.approx(2 / 11)
    np.testing.assert_array_equal(row["mode_kappa_ref"], ref.mode_kappa)
    # other q-points: no mode-by-mode comparison, said so
    other = Conductivity(ref.temperatures, ref.kappa, ref.mode_kappa, q + [0, 0.25, 0], ref.weights, np.array([4, 4, 4]))
    row = compare(model, other)
    assert np.isnan(row["srme"][0]) and "4x4x4" in row["note"] and row["srd"][0] == pytest.approx(-2 / 11)


def test_imaginary_modes_follow_matbench():
    addresses = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    ok = np.array([[0.5, 0.6, 0.7, 2.0], [-0.005, 0.0, 0.0, 3.0], [0.1, 0.2, 0.3, 4.0]])
    assert imaginary_modes(ok, addresses, 0.01) == (0.1, "")
    soft = ok.copy()
    soft[0, 0] = -1e-4  # away from Γ nothing may be negative
    lowest, reason = imaginary_modes(soft, addresses, 0.01)
    assert lowest == -1e-4 and "imaginary modes" in reason
    acoustic = ok.copy()
    acoustic[1, 0] = -0.02  # the acoustic modes at Γ only down to -tolerance
    assert "acoustic modes at Γ" in imaginary_modes(acoustic, addresses, 0.01)[1]


def _write_matbench(folder, reference: Conductivity, structures: dict[str, tuple], mesh_key: str = "q_mesh"):
    """Matbench Discovery inputs: extxyz structures and a gzipped pandas JSON reference."""
    pd = pytest.importorskip("pandas")
    images = []
    for material, (atoms, fc2, fc3, pmat) in structures.items():
        atoms = atoms.copy()
        atoms.info.update({"mp_id": material, "fc2_supercell": fc2, "fc3_supercell": fc3, mesh_key: np.asarray(reference.mesh)})
        if pmat is not None:
            atoms.info["primitive_matrix"] = pmat
        images.append(atoms)
    ase.io.write(folder / "structures.extxyz", images, format="extxyz")
    entry = {
        "temperatures": reference.temperatures.tolist(),
        "kappa_TOT_ave": reference.kappa.tolist(),
        "mode_kappa_TOT_ave": reference.mode_kappa.tolist(),
        "qpoints": reference.qpoints.tolist(),
        "weights": reference.weights.tolist(),
        "frequencies": reference.frequencies.tolist(),
        "heat_capacity": reference.heat_capacity.tolist(),
        "q_mesh": reference.mesh.tolist(),
    }
    pd.DataFrame([{"mp_id": m, **entry} for m in structures]).to_json(folder / "reference.json.gz")
    return folder / "structures.extxyz", folder / "reference.json.gz"


def test_matbench_inputs_are_read(si_record, si_rta11, tmp_path):
    si = si_record.unitcell
    structures, reference = _write_matbench(
        tmp_path, si_rta11,
        {"mp-149": (si, 2 * np.eye(3, dtype=int), [2, 2, 2], si_record.primitive_matrix), "mp-149-auto": (si, [1, 1, 1], np.eye(3, dtype=int), None)},
        mesh_key="q_point_mesh",
    )
    assert reference.read_bytes()[:2] == b"\x1f\x8b"  # gzipped, as the published file
    materials = read_matbench(structures, reference)
    assert [m.id for m in materials] == ["mp-149", "mp-149-auto"]
    first, second = materials
    np.testing.assert_array_equal(first.fc2_supercell, 2 * np.eye(3))
    np.testing.assert_array_equal(first.fc3_supercell, 2 * np.eye(3))
    np.testing.assert_allclose(first.primitive_matrix, si_record.primitive_matrix)
    assert first.mesh == (11, 11, 11) and second.primitive_matrix == "auto"
    np.testing.assert_array_equal(second.fc2_supercell, np.eye(3))
    np.testing.assert_allclose(first.unitcell.positions, si.positions)
    assert first.unitcell.get_chemical_formula() == "Si8"
    assert first.reference_name == "Matbench Discovery PBE"
    np.testing.assert_array_equal(first.unitcell.get_masses(), 28.0855)  # phonopy's, as Matbench
    read = first.reference
    # pandas writes 10 decimals
    for name in ("temperatures", "kappa", "mode_kappa", "qpoints", "frequencies", "heat_capacity"):
        np.testing.assert_allclose(getattr(read, name), getattr(si_rta11, name), rtol=1e-9, atol=1e-10, err_msg=name)
    np.testing.assert_array_equal(read.weights, si_rta11.weights)
    assert compare(si_rta11, read)["srme"][0] < 1e-8

    # a reference without weights: one error naming the file, the material and the field
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mp_id": {"0": "mp-149"}, "kappa_TOT_ave": {"0": [1.0]}}))
    with pytest.raises(KappaInputError, match=r"bad.json: material 'mp-149', field 'temperatures': missing"):
        read_matbench(structures, bad)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random Nequix model that knows Si only. Seed 5 with a 3 Å cutoff happens to give diamond
    Si real (soft) phonons on the test mesh and imaginary ones 5 % expanded."""
    return tiny_model_file(tmp_path_factory.mktemp("model"), (14,), cutoff=3.0, seed=5)


@pytest.fixture
def count_evaluations(monkeypatch):
    calls = []
    real = kappa_results_module.evaluate_material

    def counting(model, material, settings):
        calls.append(material.id)
        return real(model, material, settings)

    monkeypatch.setattr(kappa_results_module, "evaluate_material", counting)
    return calls


def test_cli_matbench_records_unstable_and_failed_and_resumes(si_record, tiny_ckpt, tmp_path, count_evaluations):
    settings = KappaSettings(mesh=(4, 4, 4))  # the Matbench protocol: Wigner, isotopes
    si_dft = reference_conductivity(KappaMaterial.from_record(si_record), settings.mesh, settings)
    si = si_record.unitcell
    expanded = si.copy()
    expanded.set_cell(si.cell * 1.05, scale_atoms=True)
    germanium = si.copy()
    germanium.set_chemical_symbols(["Ge"] * len(si))
    one, pmat = np.eye(3, dtype=int), si_record.primitive_matrix
    # the germanium structure fails before its reference (Si's) would be used
    structures, reference = _write_matbench(
        tmp_path, si_dft, {"mp-149": (si, one, one, pmat), "mp-149-expanded": (expanded, one, one, pmat), "mp-32": (germanium, one, one, pmat)}
    )
    out = tmp_path / "kappa.nc"
    args = ["kappa", str(tiny_ckpt), "--structures", str(structures), "--reference", str(reference), "--out", str(out), "--no-relax", "--no-progress"]

    res = runner.invoke(app, args + ["--materials", "mp-149"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, args + ["--resume"])
    assert res.exit_code == 3, res.output  # results written, mp-32 failed (unstable is an outcome, not a failure)
    assert count_evaluations == ["mp-149", "mp-149-expanded", "mp-32"]  # resume skipped mp-149
    assert "SRME" in res.output and "mean" in res.output

    ds = xr.load_dataset(out)
    assert list(ds["material"].values) == ["mp-149", "mp-149-expanded", "mp-32"]
    assert list(ds["status"].values) == ["ok", "unstable", "failed"]
    ok, unstable, failed = (ds.isel(material=k) for k in range(3))
    assert "imaginary" in str(unstable["error"].values) and float(unstable["min_frequency"]) < 0
    assert "Ge (Z=32)" in str(failed["error"].values)
    for penalised in (unstable, failed):
        assert float(penalised["srme"][0]) == 2.0 and float(penalised["sre"][0]) == 2.0 and float(penalised["srd"][0]) == -2.0
        assert np.isnan(float(penalised["kappa"][0]))
    assert float(unstable["kappa_ref"][0]) == pytest.approx(si_dft.kappa[0])
    assert 0 < float(ok["srme"][0]) <= 2 and float(ok["kappa"][0]) > 0
    assert float(ok["kappa_ref"][0]) == pytest.approx(si_dft.kappa[0], rel=1e-9)
    # the mode data: 8 irreducible q-points of the 4x4x4 mesh for Si only, 6 bands
    assert list(ds["qpoint_count"].values) == [8, 0, 0] and ds.sizes["qpoint"] == 8 and ds.sizes["band"] == 6
    np.testing.assert_allclose(ds["mode_kappa"].sum(("qpoint", "band")) / ds["weight"].sum(), ok["kappa"], rtol=1e-8)
    np.testing.assert_allclose(ds["mode_kappa_ref"].values[0], si_dft.mode_kappa[0], rtol=1e-9, atol=1e-10)  # pandas: 10 decimals
    assert ds["kappa"].attrs["units"] == "W/m-K" and all("long_name" in ds[v].attrs for v in ds.data_vars)
    assert int(ok["n_fc3_supercells"]) == 16 and int(ok["n_fc2_supercells"]) == 1
    attrs = ds.attrs
    assert attrs["setting_method"] == "wigner" and attrs["setting_isotope"] == 1 and attrs["setting_displacement"] == 0.03
    assert "phono3py 4" in attrs["source"] and attrs["model_sha256"] == pe.load_potential(tiny_ckpt).sha256
    assert attrs["structures"] == str(structures) and attrs["Conventions"] == "CF-1.8"
    assert list(ds["reference_name"].values) == ["Matbench Discovery PBE"] * 2 + [""]
    assert "vs Matbench Discovery PBE" in kappa_results_module.KappaSummary(ds).table().title

    # relaxation off: nothing converged or failed to
    assert ds["relax_converged"].dtype == "int8" and list(ds["relax_converged"].values) == [-1, -1, -1]
    assert ds["relax_converged"].attrs["flag_meanings"] == "not_relaxed not_converged converged"

    # nothing left to do: --resume evaluates nothing and writes the same results
    res = runner.invoke(app, args + ["--resume"])
    assert res.exit_code == 3, res.output
    assert "3 of 3 materials kept, 0 left" in " ".join(res.output.split())
    assert len(count_evaluations) == 3
    again = xr.load_dataset(out)
    for d in (ds, again):
        d.attrs.pop("history")
    xr.testing.assert_identical(again, ds)


def test_cli_on_a_phono3py_record(tiny_ckpt, tmp_path):
    folder = shared_file(SI).parent
    out = tmp_path / "kappa.nc"
    res = runner.invoke(app, [
        "kappa", str(tiny_ckpt), "--dataset", str(folder), "--materials", "phono3py-Si-PBE", "--mesh", "4",
        "--method", "rta", "--no-isotope", "--no-relax", "--no-progress", "--out", str(out),
    ])
    assert res.exit_code == 0, res.output
    ds = xr.load_dataset(out)
    assert str(ds["status"].values[0]) == "ok", str(ds["error"].values[0])
    # fc2 from the fc3 displacements (same supercell), as the DFT record has it
    assert int(ds["n_fc3_supercells"][0]) == 111 and int(ds["n_fc2_supercells"][0]) == 0
    assert int(ds["n_supercell_atoms"][0]) == 64 and ds.attrs["dataset"] == str(folder.resolve())
    assert 0 < float(ds["srme"][0, 0]) <= 2 and np.isfinite(ds["kappa_ref"].values).all()
    assert list(ds["reference_name"].values) == ["DFT"] and "vs DFT" in kappa_results_module.KappaSummary(ds).table().title


def test_a_relaxation_that_breaks_the_symmetry_is_recorded(si_record, tiny_ckpt, monkeypatch):
    import phonon_eval.kappa as kappa_module
    from phonon_eval.relax import RelaxResult

    def breaking(potential, atoms, **kwargs):
        moved = atoms.copy()
        moved.positions[0] += [0.05, 0.0, 0.0]
        return RelaxResult(atoms=moved, converged=True, steps=3, fmax=0.0, energy=0.0)

    monkeypatch.setattr(kappa_module, "relax", breaking)
    material = KappaMaterial(id="si", unitcell=si_record.unitcell, fc3_supercell=np.eye(3, dtype=int), mesh=(4, 4, 4))
    row = kappa_module.evaluate_material(pe.load_potential(tiny_ckpt), material, KappaSettings())
    assert row["status"] == "symmetry broken" and "space group 227 became" in row["error"]
    assert row["srme"][0] == 2.0 and row["space_group_number"] == 227 and row["relax_steps"] == 3


def test_bad_inputs_give_one_clear_line(tiny_ckpt, tmp_path):
    out = ["--out", str(tmp_path / "k.nc")]
    res = runner.invoke(app, ["kappa", str(tiny_ckpt), *out])
    assert res.exit_code == 2 and "--structures with --reference" in res.output
    res = runner.invoke(app, ["kappa", str(tiny_ckpt), "--structures", "s.extxyz", *out])
    assert res.exit_code == 2 and "--reference" in res.output
    res = runner.invoke(app, ["kappa", str(tiny_ckpt), "--dataset", str(tmp_path), *out])
    assert res.exit_code == 2 and "--mesh" in res.output
    res = runner.invoke(app, ["kappa", str(tiny_ckpt), "--dataset", str(tmp_path), "--mesh", "4", "--workers", "2", "--scheduler", "tcp://h:8786", *out])
    assert res.exit_code == 2 and "brings its own workers" in res.output
    res = runner.invoke(app, ["kappa", str(tiny_ckpt), "--dataset", str(tmp_path), "--mesh", "4", "--method", "bte", *out])
    assert res.exit_code == 2 and "rta, wigner, lbte" in res.output
    res = runner.invoke(app, ["kappa", str(tiny_ckpt), "--dataset", str(tmp_path), "--mesh", "4", "--temperatures", "100", *out])
    assert res.exit_code == 2 and "300 K" in res.output
    missing = tmp_path / "missing.extxyz"
    res = runner.invoke(app, ["kappa", str(tiny_ckpt), "--structures", str(missing), "--reference", str(tmp_path / "r.json"), *out])
    assert res.exit_code == 1 and "r.json" in res.output


def test_mean_metrics_penalise_as_matbench_and_say_how_many():
    """A material with a reference but no SRME (other q-points) counts as 2, like one without a
    model κ; materials of a κ-only run (no reference anywhere) give no means."""
    from phonon_eval.fanout import failed_row
    from phonon_eval.kappa_results import metrics, to_dataset

    def row(material, status, kappa, kappa_ref, srme):
        srd = 2 * (kappa - kappa_ref) / (kappa + kappa_ref) if status == "ok" else -2.0
        return {"material": material, "status": status, "error": "", "note": "", "kappa": [kappa], "kappa_ref": [kappa_ref],
                "srd": [srd], "sre": [abs(srd)], "srme": [srme if status == "ok" else 2.0]}

    rows = [row("a", "ok", 10.0, 11.0, 0.1), row("b", "ok", 10.0, 10.0, np.nan), row("c", "unstable", np.nan, 5.0, 2.0), failed_row("d", "boom")]
    m = metrics(to_dataset(rows, [300.0]))
    assert (m["n_used"], m["n_penalised"], m["n_ok"], m["n_unstable"], m["n_failed"]) == (4, 3, 2, 1, 1)
    assert m["srme"] == pytest.approx((0.1 + 2 + 2 + 2) / 4)
    assert m["sre"] == pytest.approx((2 / 21 + 2 + 2 + 2) / 4) and m["srd"] == pytest.approx((-2 / 21 - 2 - 2 - 2) / 4)
    alone = metrics(to_dataset([row("a", "ok", 10.0, np.nan, np.nan), failed_row("d", "boom")], [300.0]))
    assert alone["n_used"] == 0 and np.isnan(alone["srme"])


@pytest.mark.parametrize(("raised", "code", "said"), [
    (KeyboardInterrupt, 130, "interrupted: 0 finished materials are saved in"),
    (RuntimeError, 1, "no material succeeded (1 failed)"),
])
def test_cli_exit_status_when_interrupted_or_nothing_succeeded(tmp_path, monkeypatch, raised, code, said):
    from cli.eval import BUILTIN_DATASET

    def broken(model, material, settings):
        raise raised("stopped")

    monkeypatch.setattr(kappa_results_module, "evaluate_material", broken)
    res = runner.invoke(app, ["kappa", "--calculator", "ase.calculators.emt:EMT", "--dataset", str(BUILTIN_DATASET.parent / "emt-kappa"),
                              "--mesh", "4", "--out", str(tmp_path / "k.nc"), "--no-progress"])
    text = " ".join(res.output.split())
    assert res.exit_code == code and said in text, res.output
    if raised is KeyboardInterrupt:
        assert "pft-eval kappa` command again with --resume" in text

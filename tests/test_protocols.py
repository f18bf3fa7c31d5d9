"""Named protocols: MDR and Matbench as their public scripts run them, identical on both sides.

References: the values the MDR record stores (computed by the MDR scripts with phonopy), phono3py
called as the Matbench Discovery script calls it, and a model that is the reference itself
(its own DFT forces, or its own force constants), which must give zero error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from calculators import ReplayForces
from conftest import shared_file
from typer.testing import CliRunner

import phonon_eval as pe
from cli.eval import BUILTIN_DATASET, app
from phonon_eval.datasets import Dataset
from phonon_eval.kappa import KappaMaterial, KappaSettings, reference_conductivity, run_conductivity
from phonon_eval.kappa import evaluate_material as evaluate_kappa
from phonon_eval.phonons import PHONON_PROTOCOLS, PhononSettings, band_path, evaluate_material, phonon_properties

runner = CliRunner()
FAST = {"mesh": (6, 6, 6), "band_points": 5}
PROPERTIES = ("omega_max", "min_frequency", "gamma_acoustic", "entropy", "free_energy", "heat_capacity", "band_frequency")


def test_protocols_are_named_and_overrides_are_recorded():
    mdr = PhononSettings()
    assert (mdr.protocol, mdr.overrides, mdr.fc_method, mdr.displacement, mdr.nac) == ("mdr", (), "finite", 0.01, False)
    exact = PhononSettings.from_protocol("exact", mesh=(8, 8, 8))
    assert exact.fc_method == "auto" and exact.overrides == ("mesh",)
    assert PhononSettings(fc_method="analytic").overrides == ("fc_method",)  # against mdr, the default
    assert exact.as_attrs()["setting_overrides"] == "mesh" and exact.as_attrs()["setting_protocol_version"] == 1
    assert KappaSettings().protocol == "matbench" and KappaSettings.from_protocol("phono3py").overrides == ()
    with pytest.raises(ValueError, match="unknown protocol 'nope': phonons knows mdr, exact"):
        PhononSettings.from_protocol("nope")
    with pytest.raises(ValueError, match="unknown protocol 'mdr': kappa knows matbench, phono3py"):
        KappaSettings.from_protocol("mdr")


def _replay(record: pe.Record, settings: PhononSettings) -> ReplayForces:
    """The record's DFT forces for the displacements the protocol makes (the record's own)."""
    ph = record.to_phonopy()
    ph.generate_displacements(distance=settings.displacement, is_diagonal=settings.diagonal_displacements)
    assert len(ph.displacements) == len(record.dataset["first_atoms"]), "the protocol displaces otherwise"
    return ReplayForces(ph.supercells_with_displacements, [d["forces"] for d in record.dataset["first_atoms"]])


@pytest.mark.parametrize("protocol", list(PHONON_PROTOCOLS))
@pytest.mark.parametrize("nac", [False, True])
def test_the_references_own_forces_on_the_model_side_give_zero_error(protocol, nac):
    """phonopy-NaCl (DFT forces and Born charges): its forces replayed as the model, finite
    displacements, no relaxation: both sides make force constants the same way, so nothing differs."""
    record = pe.read_record(shared_file("data/dft/phonopy-NaCl"))
    settings = PhononSettings.from_protocol(protocol, relax=False, fc_method="finite", nac=nac, **FAST)
    row = evaluate_material(_replay(record, settings), record, settings)
    for key in PROPERTIES:
        np.testing.assert_allclose(row[key], row[f"{key}_ref"], rtol=0, atol=1e-9, err_msg=key)
    assert row["mode_mae"] < 1e-9 and row["band_mae"] < 1e-9


@pytest.mark.parametrize("material", ["Cu-fcc", "CuAu-L10"])
def test_the_references_own_force_constants_as_an_exact_model_give_zero_error(material):
    record = Dataset(BUILTIN_DATASET)[material]
    model = pe.HarmonicModel(record.supercell(), record.full_force_constants())
    row = evaluate_material(model, record, PhononSettings.from_protocol("exact", relax=False, **FAST))
    assert row["fc_method"] == "analytic"
    for key in PROPERTIES:
        # ω ~ sqrt(eigenvalue): the acoustic modes at Γ turn 1e-14 of round-off into 1e-7 THz
        np.testing.assert_allclose(row[key], row[f"{key}_ref"], rtol=0, atol=1e-6, err_msg=key)


def test_the_reference_side_reproduces_what_the_mdr_record_stores():
    """mp-149 under mdr: S, F, C_V at the record's temperatures and the frequencies at its
    commensurate points (the MDR scripts' q-points, Γ first) are the record's own. Its force
    constants are used as stored: one more pass of phonopy's symmetrisation, which is not
    idempotent, would move S by 5e-3 J/K/mol."""
    record = pe.read_record(shared_file("data/mdr/mp-149.yaml"))
    settings = PhononSettings()
    ph = record.to_phonopy()
    ph.nac_params = None
    props = phonon_properties(ph, settings, band_path(ph, 5))
    ref = record.reference
    assert tuple(ref["temperatures"]) == settings.temperatures
    np.testing.assert_allclose(props["entropy"], ref["entropy"], atol=5e-5)
    np.testing.assert_allclose(props["free_energy"], ref["free_e"], atol=5e-5)
    np.testing.assert_allclose(props["heat_capacity"], ref["heat_capacity"], atol=5e-5)
    np.testing.assert_allclose(props["commensurate_frequencies"], ref["phonon_freq"], atol=1e-6)
    ph.symmetrize_force_constants(show_drift=False)
    again = phonon_properties(ph, settings, band_path(ph, 5))
    assert abs(again["entropy"][3] - ref["entropy"][3]) > 1e-3


def test_matbench_kappa_is_phono3py_called_as_the_matbench_script_calls_it():
    """phono3py-Si-PBE's DFT forces: fc2 and fc3 as phono3py.load + the Matbench script's calls
    make them, to 1e-12; κ from them equal to 1e-6 on one phono3py object (across objects the
    tetrahedron method's floor, ~1e-3 here, applies: tests/test_provider.py)."""
    import phono3py

    from phonon_eval.kappa import produce_force_constants

    folder = shared_file("data/dft/phono3py-Si-PBE")
    record = pe.read_record(folder)
    settings = KappaSettings(mesh=(7, 7, 7))  # matbench: Wigner, isotopes, 1 m boundary
    loaded = phono3py.load(folder / "phono3py_disp.yaml", forces_fc3_filename=folder / "FORCES_FC3", produce_fc=False, log_level=0)
    ours = record.to_phono3py(produce_fc=False)
    with warnings.catch_warnings():  # the script's call, deprecated in phono3py 4
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded.produce_fc3(symmetrize_fc3r=True)
    produce_force_constants(ours, "matbench")
    for name in ("fc2", "fc3"):
        a, b = getattr(ours, name), getattr(loaded, name)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max(), err_msg=name)
    ours.fc2, ours.fc3 = loaded.fc2, loaded.fc3  # the script's force constants, in our object
    ours.mesh_numbers = [7, 7, 7]
    ours.init_phph_interaction(symmetrize_fc3q=False)
    direct = run_conductivity(ours, settings)
    via_reference = reference_conductivity(KappaMaterial.from_record(record), settings.mesh, settings)
    np.testing.assert_allclose(via_reference.kappa, direct.kappa, rtol=1e-6)
    np.testing.assert_allclose(via_reference.mode_kappa, direct.mode_kappa, rtol=1e-6, atol=1e-9)
    symfc = reference_conductivity(KappaMaterial.from_record(record), settings.mesh, KappaSettings.from_protocol("phono3py", mesh=(7, 7, 7)))
    assert abs(symfc.kappa[0] / via_reference.kappa[0] - 1) > 1e-6  # the two protocols do differ


@pytest.mark.parametrize("protocol", ["matbench", "phono3py"])
def test_kappa_from_the_references_own_forces_equals_the_reference(protocol):
    record = pe.read_record(shared_file("data/dft/phono3py-Si-PBE"))
    ph3 = record.to_phono3py(produce_fc=False)
    model = ReplayForces(ph3.supercells_with_displacements, ph3.forces)
    settings = KappaSettings.from_protocol(protocol, relax=False, mesh=(5, 5, 5), method="rta", isotope=False)
    row = evaluate_kappa(model, KappaMaterial.from_record(record), settings)
    assert row["status"] == "ok", row["error"]
    np.testing.assert_allclose(row["kappa"], row["kappa_ref"], rtol=1e-12)
    assert row["srme"][0] < 1e-12


def test_cli_names_the_protocol_and_its_overrides(tmp_path):
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["phonons", "--calculator", "ase.calculators.emt:EMT", "--materials", "Cu-fcc", "--protocol", "exact",
                              "--mesh", "6", "--temperatures", "0,300", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    ds = xr.load_dataset(out)
    assert ds.attrs["setting_protocol"] == "exact" and ds.attrs["setting_overrides"] == "mesh, temperatures"
    assert ds.attrs["fc_method_used"] == "finite"  # exact's auto, for a calculator
    assert "protocol exact v1, overridden: mesh, temperatures" in res.output.replace("\n", " ")
    res = runner.invoke(app, ["phonons", "--calculator", "ase.calculators.emt:EMT", "--protocol", "matbench", "--out", str(out)])
    assert res.exit_code == 2 and "unknown protocol 'matbench': phonons knows mdr, exact" in res.output
    res = runner.invoke(app, ["kappa", "--calculator", "ase.calculators.emt:EMT", "--protocol", "mdr", "--dataset", str(tmp_path), "--mesh", "4", "--out", str(out)])
    assert res.exit_code == 2 and "kappa knows matbench, phono3py" in res.output

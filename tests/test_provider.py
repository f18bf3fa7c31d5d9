"""Any model in the evaluators: ASE calculators, JAX energy functions and the built-in potential.

References: ASE's own Lennard-Jones and EMT calculators (the built-in EMT records were made
with EMT), phonopy's finite differences, central differences of float64 forces, and the
built-in potential's native (batched, analytic) route.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from calculators import LJ_CU, lennard_jones
from conftest import REPO, readme_block
from typer.testing import CliRunner

import phonon_eval as pe
from cli.eval import BUILTIN_DATASET, app
from phonon_eval.datasets import Dataset
from phonon_eval.kappa import KappaMaterial, KappaSettings
from phonon_eval.kappa import evaluate_material as evaluate_kappa
from phonon_eval.phonons import PhononSettings, evaluate_material
from phonon_eval.units import THZ_TO_K

runner = CliRunner()
EMT_SPEC = "ase.calculators.emt:EMT"
FAST = ["--mesh", "6", "--temperatures", "0,300", "--band-points", "5", "--no-progress"]
# the exact protocol: analytic force constants where the model has HVPs, finite otherwise
SETTINGS = PhononSettings.from_protocol("exact", mesh=(6, 6, 6), temperatures=(0.0, 300.0), band_points=5)
PROPERTIES = ("omega_max", "omega_max_mesh", "min_frequency", "entropy", "free_energy", "heat_capacity", "band_frequency", "volume")


def _lj_ase() -> LennardJones:
    return LennardJones(sigma=LJ_CU["sigma"], epsilon=LJ_CU["epsilon"], rc=LJ_CU["cutoff"], smooth=False)


def _lj_jax(dtype: str = "float64") -> pe.EnergyFunction:
    return pe.EnergyFunction(lennard_jones, LJ_CU, name="LJ", dtype=dtype)


def _rattled(seed: int = 0):
    atoms = bulk("Cu", "fcc", a=3.65, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=seed)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.01 * np.random.default_rng(seed).normal(size=(3, 3))), scale_atoms=True)
    return atoms


def test_a_jax_energy_function_equals_ases_lennard_jones():
    atoms = _rattled()
    ours = _lj_jax().calculator()
    ref = _lj_ase()
    for calc in (ours, ref):
        calc.calculate(atoms, ["energy", "forces", "stress"])
    assert abs(ours.results["energy"] - ref.results["energy"]) < 1e-9 * len(atoms)
    np.testing.assert_allclose(ours.results["forces"], ref.results["forces"], atol=1e-9)
    np.testing.assert_allclose(ours.results["stress"], ref.results["stress"], atol=1e-9)
    positions = np.stack([atoms.positions, atoms.positions + 0.01])
    np.testing.assert_allclose(_lj_jax().forces(atoms, positions), pe.AseCalculator(_lj_ase()).forces(atoms, positions), atol=1e-9)


def test_hessian_columns_of_an_energy_function_equal_central_differences_of_its_forces():
    atoms, h = _rattled(1), 1e-4
    provider = _lj_jax()
    columns = [(0, 0), (5, 2), (17, 1)]
    cols = provider.hessian_columns(atoms, columns)
    for k, (atom, direction) in enumerate(columns):
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[atom, direction] += h
        minus[atom, direction] -= h
        f = provider.forces(atoms, np.stack([plus, minus]))
        np.testing.assert_allclose(cols[k], -(f[0] - f[1]) / (2 * h), atol=1e-6)


def test_float64_potential_hvp_equals_central_differences_to_float64_precision(tiny_ckpt):
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    atoms.rattle(0.05, seed=3)
    provider = pe.as_provider(tiny_ckpt, dtype="float64")
    assert provider.dtype == "float64" and provider.provenance()["model_dtype"] == "float64"
    h = 1e-5
    plus, minus = atoms.positions.copy(), atoms.positions.copy()
    plus[2, 1] += h
    minus[2, 1] -= h
    f = provider.forces(atoms, np.stack([plus, minus]))
    column = provider.hessian_columns(atoms, [(2, 1)])[0]
    np.testing.assert_allclose(column, -(f[0] - f[1]) / (2 * h), atol=1e-7)
    # float32 cannot get there: its central differences carry ~1e-2 eV/Å² of round-off
    f32 = pe.as_provider(tiny_ckpt).forces(atoms, np.stack([plus, minus]))
    assert np.abs(-(f32[0] - f32[1]) / (2 * h) - column).max() > 1e-4
    # the relaxation calculator runs in float64 too
    calc = provider.calculator()
    calc.calculate(atoms, ["forces"])
    np.testing.assert_allclose(calc.results["forces"], provider.forces(atoms, atoms.positions[None])[0], atol=1e-12)


def test_phonons_of_a_jax_function_and_of_the_same_ase_calculator_agree():
    """Analytic force constants (HVPs of the JAX function) against phonopy's finite differences
    of ASE's calculator: the same model by two routes, to finite-difference accuracy."""
    record = Dataset(BUILTIN_DATASET)["Cu-fcc"]
    analytic = evaluate_material(_lj_jax(), record, SETTINGS)
    finite = evaluate_material(_lj_ase(), record, SETTINGS)
    assert (analytic["fc_method"], finite["fc_method"]) == ("analytic", "finite")
    assert abs(analytic["volume"] / record.unitcell.get_volume() - 1) > 0.01  # LJ relaxes away from EMT
    for key in PROPERTIES:
        np.testing.assert_allclose(analytic[key], finite[key], rtol=5e-4, atol=5e-4, err_msg=key)
    # the difference is finite-difference truncation: it shrinks as the displacement squared
    finer = evaluate_material(_lj_ase(), record, dataclasses.replace(SETTINGS, displacement=0.005))
    for key in ("omega_max", "free_energy"):
        coarse, fine = (np.abs(np.asarray(r[key]) - analytic[key]).max() for r in (finite, finer))
        assert 3.0 < coarse / fine < 5.0, (key, coarse, fine)


def test_the_builtin_potential_through_its_calculator_equals_the_native_route(tiny_ckpt):
    """Phonons: the native batched route and the ASE route, both with finite displacements,
    agree to float32 rounding; the native route's default, analytic, to finite differences."""
    potential = pe.load_potential(tiny_ckpt)
    record = Dataset(BUILTIN_DATASET)["CuAu-L10"]
    finite = dataclasses.replace(SETTINGS, fc_method="finite")
    native = evaluate_material(potential, record, finite)
    through_ase = evaluate_material(potential.calculator(), record, finite)
    analytic = evaluate_material(potential, record, SETTINGS)
    assert analytic["fc_method"] == "analytic" and through_ase["fc_method"] == "finite"
    for key in PROPERTIES:
        np.testing.assert_allclose(through_ase[key], native[key], rtol=1e-4, atol=2e-4, err_msg=key)
        np.testing.assert_allclose(analytic[key], native[key], rtol=5e-3, atol=5e-3, err_msg=key)


def _cu_kappa_phono3py():
    from phono3py import Phono3py

    from phonon_eval.records import phonopy_from_ase

    record = Dataset(Path(BUILTIN_DATASET).parent / "emt-kappa")["Cu-fcc"]
    ph3 = Phono3py(phonopy_from_ase(record.unitcell), supercell_matrix=record.fc3_supercell_matrix,
                   primitive_matrix=record.phonopy_primitive_matrix, symprec=1e-5)
    ph3.generate_displacements(distance=0.03)
    return ph3


def test_kappa_through_the_calculator_equals_the_native_route():
    """fc2 and fc3 by both routes agree to float32 rounding, and so does κ, within the
    tetrahedron method's own floor (next test)."""
    from phonon_eval.kappa import produce_force_constants
    from phonon_eval.records import ase_from_phonopy

    potential = pe.load_potential(Path(BUILTIN_DATASET).parent / "models" / "demo.ckpt")
    fcs = []
    for provider in (pe.as_provider(potential), pe.AseCalculator(potential.calculator())):
        ph3 = _cu_kappa_phono3py()
        positions = np.array([s.positions for s in ph3.supercells_with_displacements])
        ph3.forces = provider.forces(ase_from_phonopy(ph3.supercell), positions)
        produce_force_constants(ph3)
        fcs.append((ph3.fc2, ph3.fc3))
    np.testing.assert_allclose(fcs[1][0], fcs[0][0], atol=1e-5)
    np.testing.assert_allclose(fcs[1][1], fcs[0][1], atol=1e-3 * np.abs(fcs[0][1]).max())
    material = KappaMaterial.from_record(Dataset(Path(BUILTIN_DATASET).parent / "emt-kappa")["Cu-fcc"])
    settings = KappaSettings(relax=False, mesh=(8, 8, 8), method="rta", isotope=False)
    native = evaluate_kappa(potential, material, settings)
    through_ase = evaluate_kappa(potential.calculator(), material, settings)
    assert native["status"] == through_ase["status"] == "ok", (native["error"], through_ase["error"])
    np.testing.assert_allclose(through_ase["kappa"], native["kappa"], rtol=1e-2)


def test_phono3pys_tetrahedron_kappa_jumps_under_round_off_and_smearing_does_not():
    """Why κ of two routes agrees to 1e-2, not 1e-6: phono3py's tetrahedron integration is not
    continuous at the exact degeneracies of a symmetric mesh, so fc2 changed by 1e-13 eV/Å²
    (float64 round-off, 1e-12 of its entries) moves κ of fcc Cu by 0.05 to 0.1 % (how much
    depends on the round-off of the fc2 it starts from, which differs between CPUs); Gaussian
    smearing does not move."""
    from phonon_eval.kappa import produce_force_constants, run_conductivity
    from phonon_eval.records import ase_from_phonopy

    potential = pe.as_provider(Path(BUILTIN_DATASET).parent / "models" / "demo.ckpt", dtype="float64")
    ph3 = _cu_kappa_phono3py()
    positions = np.array([s.positions for s in ph3.supercells_with_displacements])
    forces = potential.forces(ase_from_phonopy(ph3.supercell), positions)
    settings = KappaSettings(relax=False, mesh=(8, 8, 8), method="rta", isotope=False)
    kappa = {}
    for sigma in (None, 0.2):
        for noise in (0.0, 1e-13):
            ph3 = _cu_kappa_phono3py()
            ph3.forces = forces
            produce_force_constants(ph3)
            ph3.fc2 = ph3.fc2 + noise * np.random.default_rng(0).normal(size=ph3.fc2.shape)
            if sigma is not None:
                ph3.sigmas = [sigma]
            ph3.mesh_numbers = [8, 8, 8]
            ph3.init_phph_interaction()
            kappa[sigma, noise] = float(run_conductivity(ph3, settings).kappa[0])
    assert abs(kappa[None, 1e-13] / kappa[None, 0.0] - 1) > 1e-4, kappa
    assert abs(kappa[0.2, 1e-13] / kappa[0.2, 0.0] - 1) < 1e-9, kappa


def test_emt_by_spec_reproduces_the_emt_records(tmp_path, monkeypatch):
    """The README's first calculator command. The built-in records were made with EMT: the
    calculator route gets them back to finite-difference accuracy, orders of magnitude below the
    demo potential's errors."""
    command = readme_block("## Any model")[0]
    assert command[:3] == ["pft-eval", "phonons", "--calculator"] and EMT_SPEC in command
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(REPO / "data")
    res = runner.invoke(app, [*command[1:], "--no-progress"])
    assert res.exit_code == 0, res.output
    out = tmp_path / command[command.index("--out") + 1]
    ds = xr.load_dataset(out)
    assert list(ds["status"].values) == ["ok"] * 4
    assert ds.attrs["model"] == "EMT" and ds.attrs["model_kind"] == "ase-calculator"
    assert ds.attrs["calculator"] == EMT_SPEC and json.loads(ds.attrs["calculator_kwargs"]) == {}
    assert ds.attrs["model_versions"].startswith("ase ") and ds.attrs["setting_fc_method"] == "finite"
    assert "EMT − EMT at 300 K" in res.output  # the model, and what the records say their reference is
    at = ds.sel(temperature=300.0)
    mae = {
        "omega_max_K": float(np.abs(ds["omega_max_K"] - ds["omega_max_K_ref"]).mean()),
        "entropy": float(np.abs(at["entropy"] - at["entropy_ref"]).mean()),
        "free_energy": float(np.abs(at["free_energy"] - at["free_energy_ref"]).mean()),
        "heat_capacity": float(np.abs(at["heat_capacity"] - at["heat_capacity_ref"]).mean()),
    }
    # the demo potential's MAEs (README): 96.0 K, 7.91 J/K/mol, 2.55 kJ/mol, 0.847 J/K/mol
    demo = {"omega_max_K": 96.0, "entropy": 7.91, "free_energy": 2.55, "heat_capacity": 0.847}
    print("MAE of EMT by spec:", mae)
    # what is left is the MDR pipeline's own (axis-only 0.01 Å displacements, one symmetrisation
    # pass) against the records' symfc-projected force constants
    for key, value in mae.items():
        assert value < 2e-3 * demo[key], (key, value)
    assert float(ds["band_mae"].max()) < 2e-3


def test_the_python_api_takes_a_calculator_object_a_provider_or_a_path(tiny_ckpt):
    record = Dataset(BUILTIN_DATASET)["Cu-fcc"]
    settings = PhononSettings.from_protocol("exact", relax=False, mesh=(4, 4, 4), temperatures=(300.0,), band_points=3)
    by_object = pe.evaluate_material(EMT(), record, settings)
    by_spec = pe.evaluate_material(pe.AseCalculator(spec=EMT_SPEC), record, settings)
    assert by_object["omega_max"] == by_spec["omega_max"]
    assert abs(by_object["omega_max"] - by_object["omega_max_ref"]) * THZ_TO_K < 1e-6
    by_path = pe.evaluate_material(tiny_ckpt, record, settings)
    assert by_path["fc_method"] == "analytic"
    with pytest.raises(pe.ProviderError, match="cannot evaluate a dict"):
        pe.evaluate_material({}, record, settings)
    with pytest.raises(pe.ProviderError, match="Hessian-vector products"):
        pe.evaluate_material(EMT(), record, PhononSettings(relax=False, fc_method="analytic"))


def test_an_energy_function_refuses_elements_it_does_not_know():
    record = Dataset(BUILTIN_DATASET)["CuAu-L10"]
    provider = pe.EnergyFunction(lennard_jones, LJ_CU, name="LJ-Cu", elements=(29,))
    with pytest.raises(pe.ProviderError, match=r"LJ-Cu does not know Au \(Z=79\)"):
        evaluate_material(provider, record, SETTINGS)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "give a model file or --calculator"),
        (["MODEL", "--calculator", EMT_SPEC], 2, "exactly one of them"),
        (["--calculator", "nosuch.module:Calc"], 1, "cannot import 'nosuch.module'"),
        (["--calculator", "ase.calculators.emt"], 1, "expected MODULE:FACTORY"),
        (["--calculator", "ase.calculators.emt:Nope"], 1, "has no 'Nope'"),
        (["--calculator", "ase.build:bulk"], 1, "TypeError"),
        (["--calculator", "ase.build:bulk", "--calculator-kwargs", '{"name": "Cu"}'], 1, "not an ASE calculator"),
        (["--calculator", EMT_SPEC, "--calculator-kwargs", "{model: 1}"], 2, "is not JSON"),
        (["--calculator", EMT_SPEC, "--calculator-kwargs", "[1]"], 2, "must be a JSON object"),
        (["--calculator", EMT_SPEC, "--device", "cuda"], 1, "takes no device"),
        (["--calculator", EMT_SPEC, "--dtype", "float64"], 2, "--dtype applies to model files"),
        (["--calculator", EMT_SPEC, "--fc", "analytic"], 2, "use finite displacements"),
        (["--calculator", EMT_SPEC, "--fc", "finit"], 2, "--fc must be one of auto, analytic, finite"),
        (["MODEL", "--dtype", "float16"], 1, "dtype must be float32 or float64"),
    ],
)
def test_bad_model_arguments_are_one_clear_line(args, code, message, tmp_path, tiny_ckpt):
    args = [str(tiny_ckpt) if a == "MODEL" else a for a in args]
    for command in ("phonons", "kappa"):
        if command == "kappa" and "--fc" in args:
            continue
        extra = ["--dataset", str(tmp_path), "--mesh", "4"] if command == "kappa" else []
        res = runner.invoke(app, [command, *args, *extra, "--out", str(tmp_path / "r.nc"), "--no-progress"])
        assert res.exit_code == code, (command, res.output)
        assert message in res.output and "Traceback" not in res.output, (command, res.output)
    assert not (tmp_path / "r.nc").exists()


@pytest.mark.parametrize(("spec", "reason"), [("calculators:NaNForces", "NaN or infinite forces"), ("calculators:WrongShape", "forces of shape (31, 3)")])
def test_a_calculator_with_broken_forces_fails_each_material_by_name(spec, reason, tmp_path):
    out = tmp_path / "r.nc"
    args = ["phonons", "--calculator", spec, "--materials", "Cu-fcc,Pt-fcc", "--no-relax", "--out", str(out), *FAST]
    res = runner.invoke(app, args)
    assert res.exit_code == 1 and "no material succeeded (2 failed)" in res.output, res.output
    ds = xr.load_dataset(out)
    for error in ds["error"].values:
        assert error.startswith("ForceError: ") and reason in error, error
        assert spec.split(":")[1] in error


def _pair_lj(sigma: float) -> pe.Potential:
    from calculators import PairLJ

    model = PairLJ(epsilon=jnp.asarray(LJ_CU["epsilon"]), sigma=jnp.asarray(sigma), cutoff=LJ_CU["cutoff"])
    return pe.Potential(model=model, atomic_numbers=(29,), cutoff=LJ_CU["cutoff"])


def test_a_non_nequix_edge_model_is_evaluated_and_fine_tuned_with_pft():
    """Lennard-Jones written as an EdgeModel: equal to ASE's, and PFT on a teacher's Hessian
    (another σ) moves its σ toward the teacher's."""
    from finetune.data import Example
    from finetune.samplers import make_sampler
    from finetune.trainer import TrainConfig, Trainer, hessian_mae

    from phonon_eval.symmetry import SupercellSymmetry

    atoms = _rattled(2)
    student, teacher = _pair_lj(2.30), _pair_lj(LJ_CU["sigma"])
    ref = _lj_ase()
    ref.calculate(atoms, ["energy", "forces", "stress"])
    e, f, s = pe.energy_forces_stress(teacher, atoms)
    assert abs(e - ref.results["energy"]) < 1e-4 and np.abs(f - ref.results["forces"]).max() < 1e-4

    crystal = bulk("Cu", "fcc", a=3.62, cubic=True) * (2, 2, 2)
    classes = SupercellSymmetry.from_atoms(crystal).column_orbits()
    n = len(crystal)
    example = Example(
        id="Cu", atoms=crystal, energy=0.0, forces=np.zeros((n, 3)), stress=np.zeros((3, 3)),
        force_constants=pe.hessian(teacher, crystal), sampler=make_sampler("symmetry", n, classes), classes=classes,
    )
    config = TrainConfig(epochs=12, batch_size=1, learning_rate=2e-3, schedule="constant", optimizer="adam",
                         energy_weight=0.0, force_weight=0.0, stress_weight=0.0, hessian_weight=1.0, ema_decay=0.0)
    trainer = Trainer(student, config, [example])
    before = hessian_mae(student, [example])
    for _ in range(config.epochs):
        trainer.train_epoch()
    after = hessian_mae(trainer.potential, [example])
    sigma = float(trainer.potential.model.sigma)
    assert after < 0.5 * before and abs(sigma - LJ_CU["sigma"]) < 0.5 * abs(2.30 - LJ_CU["sigma"]), (before, after, sigma)


def test_the_readmes_jax_example_runs_and_is_ases_lennard_jones(monkeypatch):
    text = (REPO / "README.md").read_text()
    code = text.split("<!-- jax-example", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(REPO)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    row = namespace["row"]
    assert row["fc_method"] == "analytic" and row["status"] == "ok"
    atoms = _rattled(4)
    ref = _lj_ase()
    ref.calculate(atoms, ["energy"])
    ours = pe.EnergyFunction(namespace["lennard_jones"], LJ_CU, dtype="float64").energy_forces_stress(atoms)[0]
    assert abs(ours - ref.results["energy"]) < 1e-9


def test_an_equinox_module_is_an_energy_function_with_traced_arrays():
    import equinox as eqx

    class LJ(eqx.Module):
        epsilon: jnp.ndarray
        sigma: jnp.ndarray

        def __call__(self, positions, cell, numbers):
            params = {"epsilon": self.epsilon, "sigma": self.sigma, "cutoff": LJ_CU["cutoff"]}
            return lennard_jones(params, positions, cell, numbers)

    atoms = _rattled(5)
    module = LJ(np.asarray(LJ_CU["epsilon"]), np.asarray(LJ_CU["sigma"]))  # float64 leaves: cast as the provider needs
    by_module = pe.EnergyFunction(module, dtype="float64")
    assert by_module.name == "LJ"
    np.testing.assert_allclose(by_module.forces(atoms, atoms.positions[None]), _lj_jax().forces(atoms, atoms.positions[None]), atol=1e-12)
    columns = [(0, 0), (3, 1)]
    np.testing.assert_allclose(by_module.hessian_columns(atoms, columns), _lj_jax().hessian_columns(atoms, columns), atol=1e-10)

"""A real third-party MLIP through the calculator route: SevenNet-0 on real DFT records.

Needs the optional `sevenn` package (and PyTorch, CPU build); skips without it. Slow: run with
PFT_SLOW=1. The numbers it prints are the ones in the README.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import xarray as xr
from conftest import shared_file
from typer.testing import CliRunner

from cli.eval import app

pytest.importorskip("sevenn", reason="SevenNet is not installed: pip install torch==2.13.0+cpu sevenn==0.13.0")
runner = CliRunner()
SEVENNET = ["--calculator", "sevenn.calculator:SevenNetCalculator", "--calculator-kwargs", '{"model": "7net-0"}', "--device", "cpu"]


def _phonons(folder: str, material: str, tmp_path) -> xr.Dataset:
    data = shared_file(f"data/{folder}").parent / folder
    out = tmp_path / "phonons.nc"
    res = runner.invoke(app, ["phonons", *SEVENNET, "--dataset", str(data), "--materials", material, "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    print(res.output)
    ds = xr.load_dataset(out)
    assert ds["status"].values[0] == "ok", ds["error"].values[0]
    assert ds.attrs["model_kind"] == "ase-calculator" and ds.attrs["setting_fc_method"] == "finite"
    assert "sevenn 0.13" in ds.attrs["model_versions"] and "torch" in ds.attrs["model_versions"]
    weights = ds.attrs["model_path"]
    assert ds.attrs["model_sha256"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()
    assert json.loads(ds.attrs["calculator_kwargs"]) == {"model": "7net-0"}
    at = ds.sel(temperature=300.0)
    for name in ("omega_max", "entropy", "free_energy", "heat_capacity"):
        print(f"{material} {name}: SevenNet-0 {float(at[name][0]):.3f}, DFT {float(at[name + '_ref'][0]):.3f}")
    return at


@pytest.mark.slow
def test_sevennet_silicon_phonons_equal_a_plain_phonopy_run(tmp_path):
    """Si mp-149 against the simplest independent route: ASE FIRE relaxation, phonopy's own
    displacements of a 54-atom supercell and a loop over SevenNet's forces."""
    import phonopy
    from ase import Atoms
    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from phonopy.structure.atoms import PhonopyAtoms
    from sevenn.calculator import SevenNetCalculator

    at = _phonons("mdr", "mp-149", tmp_path)
    calc = SevenNetCalculator(model="7net-0", device="cpu")
    si = bulk("Si", "diamond", a=5.47)
    si.calc = calc
    FIRE(FrechetCellFilter(si), logfile=None).run(fmax=1e-3)
    unit = PhonopyAtoms(symbols=["Si"] * 2, cell=si.cell.array, scaled_positions=si.get_scaled_positions())
    ph = phonopy.Phonopy(unit, supercell_matrix=3 * np.eye(3, dtype=int))
    ph.generate_displacements(distance=0.01)
    forces = []
    for s in ph.supercells_with_displacements:
        atoms = Atoms(s.symbols, cell=s.cell, scaled_positions=s.scaled_positions, pbc=True)
        atoms.calc = calc
        forces.append(atoms.get_forces())
    ph.forces = forces
    ph.produce_force_constants()
    ph.run_qpoints([[0, 0, 0]])
    optical = float(ph.qpoints.frequencies[0].max())  # ω_max of diamond Si: the optical mode at Γ
    print(f"plain phonopy: optical Γ {optical:.3f} THz")
    assert float(at["omega_max"][0]) == pytest.approx(optical, rel=2e-3)
    # SevenNet-0 is that much softer than PBE here: the route is right, the model is soft
    assert float(at["omega_max"][0]) < 0.9 * float(at["omega_max_ref"][0])


@pytest.mark.slow
def test_sevennet_nacl_phonons_are_close_to_dft(tmp_path):
    at = _phonons("dft", "phonopy-NaCl", tmp_path)
    for name in ("omega_max", "entropy", "heat_capacity"):
        assert float(at[name][0]) == pytest.approx(float(at[name + "_ref"][0]), rel=0.1), name


@pytest.mark.slow
def test_sevennet_kappa_of_silicon(tmp_path):
    data = shared_file("data/dft/phono3py-Si-PBE").parent
    out = tmp_path / "kappa.nc"
    res = runner.invoke(app, ["kappa", *SEVENNET, "--dataset", str(data), "--materials", "phono3py-Si-PBE", "--mesh", "11",
                              "--method", "rta", "--no-isotope", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    print(res.output)
    ds = xr.load_dataset(out).sel(temperature=300.0)
    assert ds["status"].values[0] == "ok", ds["error"].values[0]
    kappa, ref = float(ds["kappa"][0]), float(ds["kappa_ref"][0])
    print(f"Si κ: SevenNet-0 {kappa:.2f}, DFT {ref:.2f} W/m-K, SRME {float(ds['srme'][0]):.3f}")
    assert np.isfinite(ds["srme"][0]) and 0.3 < kappa / ref < 1.5

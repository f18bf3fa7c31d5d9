"""Force constants from a potential: symmetry-reduced HVPs against the dense Hessian and phonopy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import phonopy
import pytest
from ase.build import bulk
from phonopy.structure.atoms import PhonopyAtoms

import phonon_eval as pe
from phonon_eval.force_constants import analytic_force_constants, finite_force_constants, force_constants
from phonon_eval.symmetry import SupercellSymmetry

TINY = pe.NequixConfig(
    atomic_numbers=(11, 17),
    cutoff=4.5,
    hidden_irreps="8x0e + 4x1o + 4x2e",
    lmax=2,
    n_layers=2,
    radial_basis_size=6,
    radial_mlp_size=16,
    avg_n_neighbors=12.0,
)


def _tiny():
    model = pe.Nequix(TINY, key=jax.random.key(11))
    return pe.Potential(model=model, atomic_numbers=TINY.atomic_numbers, cutoff=TINY.cutoff)


STRUCTURES = {
    # cubic: one independent column per species
    "rocksalt": (bulk("NaCl", "rocksalt", a=5.2), np.diag([2, 2, 2])),
    # hexagonal: 120° rotations, columns rebuilt by least squares
    "wurtzite": (bulk("NaCl", "wurtzite", a=4.1, c=6.6), np.diag([2, 2, 1])),
}


def _phonopy(unitcell, matrix):
    cell = PhonopyAtoms(symbols=unitcell.get_chemical_symbols(), cell=unitcell.cell.array, positions=unitcell.positions)
    return phonopy.Phonopy(cell, supercell_matrix=matrix)


def _ase(cell):
    import ase

    return ase.Atoms(symbols=cell.symbols, positions=cell.positions, cell=cell.cell, pbc=True)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_analytic_equals_dense_hessian(name):
    unitcell, matrix = STRUCTURES[name]
    supercell = _ase(_phonopy(unitcell, matrix).supercell)
    with jax.enable_x64(True):
        pot = _tiny().astype(jnp.float64)
        symmetry = SupercellSymmetry.from_atoms(supercell)
        fc = analytic_force_constants(pot, supercell, symmetry)
        dense = pe.hessian(pot, supercell)
    assert len(symmetry.independent_columns()) < 3 * len(supercell) / 4
    assert np.abs(dense).max() > 0.1
    np.testing.assert_allclose(fc, dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_analytic_agrees_with_phonopy_finite_displacements(name):
    """Within finite-difference error at 0.01 Å: the two methods differ by O(h) terms only."""
    unitcell, matrix = STRUCTURES[name]
    pot = _tiny()
    ph = _phonopy(unitcell, matrix)
    finite = finite_force_constants(pot, ph, distance=0.01)
    analytic = analytic_force_constants(pot, _ase(ph.supercell))
    scale = np.abs(analytic).max()
    assert np.abs(finite - analytic).max() < 2e-3 * scale
    # and the difference shrinks with the step, as finite-difference error does
    coarse = finite_force_constants(pot, _phonopy(unitcell, matrix), distance=0.04)
    assert np.abs(coarse - analytic).max() > 2 * np.abs(finite - analytic).max()


def test_force_constants_sets_them_on_phonopy():
    unitcell, matrix = STRUCTURES["rocksalt"]
    ph = _phonopy(unitcell, matrix)
    method, n = force_constants(_tiny(), ph, "analytic", symmetrization="phonopy")
    assert (method, n) == ("analytic", 2)  # one column per species in rocksalt
    np.testing.assert_allclose(ph.force_constants.sum(axis=1), 0.0, atol=1e-8)
    with pytest.raises(ValueError, match="unknown force-constant method"):
        force_constants(_tiny(), ph, "magic")

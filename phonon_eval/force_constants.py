"""Harmonic force constants from a potential: exact from a few HVPs, or by finite displacements.

`analytic` computes Hessian columns only for the symmetry-independent (atom, direction) pairs
(one column for diamond Si instead of 192) and rebuilds the rest with the space group.
`finite` is phonopy's own finite-displacement method, with every displaced supercell's forces
from one compiled, batched function over a shared neighbour graph.
"""

from __future__ import annotations

from typing import Literal

import ase
import numpy as np
import phonopy

from phonon_eval.potential import Potential, batched_forces, hessian_columns
from phonon_eval.records import ase_from_phonopy
from phonon_eval.symmetry import SupercellSymmetry, symmetrize_translational

__all__ = ["analytic_force_constants", "finite_force_constants", "force_constants"]

Method = Literal["analytic", "finite"]


def analytic_force_constants(
    potential: Potential,
    supercell: ase.Atoms,
    symmetry: SupercellSymmetry | None = None,
    *,
    symmetrize: bool = False,
) -> np.ndarray:
    """Exact force constants d²E/dr dr of a supercell from its independent Hessian columns.

    Args:
        potential: the potential.
        supercell: the supercell (N atoms), at the geometry where the force constants are wanted.
        symmetry: its symmetry, if already known.
        symmetrize: also enforce the acoustic sum rule and index symmetry (phonopy's method).

    Returns:
        (N, N, 3, 3) force constants in eV/Å², phonopy's full layout.
    """
    symmetry = symmetry or SupercellSymmetry.from_atoms(supercell)
    columns = symmetry.independent_columns()
    values = hessian_columns(potential, supercell, columns.pairs())
    fc = symmetry.rebuild(values)
    return symmetrize_translational(fc) if symmetrize else fc


def finite_force_constants(
    potential: Potential, phonon: phonopy.Phonopy, distance: float = 0.01, *, chunk: int = 8
) -> np.ndarray:
    """Force constants by phonopy's finite displacements (±`distance` Å as phonopy chooses).

    Sets `phonon.forces` and `phonon.force_constants` (full form) as a side effect, like
    `produce_force_constants`.

    Returns:
        (N, N, 3, 3) force constants in eV/Å².
    """
    phonon.generate_displacements(distance=distance)
    supercell = ase_from_phonopy(phonon.supercell)
    positions = np.array([s.positions for s in phonon.supercells_with_displacements])
    phonon.forces = batched_forces(potential, supercell, positions, skin=max(0.2, 4 * distance), chunk=chunk)
    phonon.produce_force_constants(fc_calculator="traditional")
    fc = phonon.force_constants
    if fc.shape[0] != fc.shape[1]:
        from phonopy.harmonic.force_constants import compact_fc_to_full_fc

        fc = compact_fc_to_full_fc(phonon.primitive, fc)
        phonon.force_constants = fc
    return fc


def force_constants(
    potential: Potential,
    phonon: phonopy.Phonopy,
    method: Method = "analytic",
    *,
    distance: float = 0.01,
    symmetrize: bool = False,
) -> int:
    """Set the force constants of `phonon`'s supercell by `method`.

    Returns:
        What it cost: HVPs (analytic) or displaced-supercell force evaluations (finite).
    """
    if method == "analytic":
        supercell = ase_from_phonopy(phonon.supercell)
        symmetry = SupercellSymmetry.from_atoms(supercell)
        fc = analytic_force_constants(potential, supercell, symmetry, symmetrize=symmetrize)
        phonon.force_constants = fc
        return len(symmetry.independent_columns())
    if method == "finite":
        fc = finite_force_constants(potential, phonon, distance)
        if symmetrize:
            phonon.force_constants = symmetrize_translational(fc)
        return len(phonon.displacements)
    raise ValueError(f"unknown force-constant method {method!r} (analytic or finite)")

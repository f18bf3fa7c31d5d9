"""Harmonic force constants from a model: exact from a few HVPs, or by finite displacements.

`analytic` computes Hessian columns only for the symmetry-independent (atom, direction) pairs
(one column for diamond Si instead of 192) and rebuilds the rest with the space group; it needs
a provider with Hessian-vector products (a JAX model). `finite` is phonopy's own
finite-displacement method with the displaced supercells' forces from the provider (for a JAX
potential, one compiled, batched function over a shared neighbour graph). `auto` takes the
best the provider offers.
"""

from __future__ import annotations

from typing import Literal

import ase
import numpy as np
import phonopy

from phonon_eval.provider import ForceProvider, ModelLike, ProviderError, as_provider
from phonon_eval.records import ase_from_phonopy, produce_force_constants, symmetrize
from phonon_eval.symmetry import SupercellSymmetry, symmetrize_translational

__all__ = ["METHODS", "analytic_force_constants", "finite_force_constants", "force_constants", "resolve_method"]

Method = Literal["auto", "analytic", "finite"]
METHODS = ("auto", "analytic", "finite")


def resolve_method(provider: ForceProvider, method: str) -> str:
    """"analytic" or "finite" for `method` ("auto": analytic where the provider has HVPs).

    Raises:
        ProviderError: "analytic" for a provider without Hessian-vector products, or an unknown method.
    """
    if method not in METHODS:
        raise ProviderError(f"unknown force-constant method {method!r} (auto, analytic or finite)")
    if method == "auto":
        return "analytic" if provider.has_hessian else "finite"
    if method == "analytic" and not provider.has_hessian:
        raise ProviderError(
            f"analytic force constants need Hessian-vector products, which {provider.name} does not give "
            "(an ASE calculator): use finite displacements (--fc finite, or auto)"
        )
    return method


def analytic_force_constants(
    provider: ModelLike,
    supercell: ase.Atoms,
    symmetry: SupercellSymmetry | None = None,
    *,
    symmetrize: bool = False,
) -> np.ndarray:
    """Exact force constants d²E/dr dr of a supercell from its independent Hessian columns.

    Args:
        provider: a model with Hessian-vector products (a provider, Potential or checkpoint path).
        supercell: the supercell (N atoms), at the geometry where the force constants are wanted.
        symmetry: its symmetry, if already known.
        symmetrize: also enforce the acoustic sum rule and index symmetry (phonopy's method).

    Returns:
        (N, N, 3, 3) force constants in eV/Å², phonopy's full layout.
    """
    provider = as_provider(provider)
    resolve_method(provider, "analytic")
    symmetry = symmetry or SupercellSymmetry.from_atoms(supercell)
    columns = symmetry.independent_columns()
    values = provider.hessian_columns(supercell, columns.pairs())
    fc = symmetry.rebuild(values)
    return symmetrize_translational(fc) if symmetrize else fc


def finite_force_constants(
    provider: ModelLike,
    phonon: phonopy.Phonopy,
    distance: float = 0.01,
    *,
    diagonal: bool = True,
    remove_drift: bool = False,
    symmetrization: str = "none",
) -> np.ndarray:
    """Force constants by phonopy's finite displacements (±`distance` Å as phonopy chooses).

    Sets `phonon.forces` and `phonon.force_constants` (full form) as a side effect. The force
    constants are made from the forces by `records.produce_force_constants`, the function that
    makes a record's reference force constants from its DFT forces.

    Args:
        diagonal: let phonopy displace along non-Cartesian directions (its is_diagonal).
        remove_drift: subtract each supercell's mean force (the MDR scripts do).
        symmetrization: "none" (phonopy's traditional finite differences only), "phonopy" or
            "symfc" (see `records.produce_force_constants`).

    Returns:
        (N, N, 3, 3) force constants in eV/Å².
    """
    phonon.generate_displacements(distance=distance, is_diagonal=diagonal)
    supercell = ase_from_phonopy(phonon.supercell)
    positions = np.array([s.positions for s in phonon.supercells_with_displacements])
    phonon.forces = as_provider(provider).forces(supercell, positions)
    produce_force_constants(phonon, symmetrization, remove_drift)
    return np.asarray(phonon.force_constants)


def force_constants(
    provider: ModelLike,
    phonon: phonopy.Phonopy,
    method: Method = "auto",
    *,
    distance: float = 0.01,
    diagonal: bool = True,
    remove_drift: bool = False,
    symmetrization: str = "none",
) -> tuple[str, int]:
    """Set the force constants of `phonon`'s supercell by `method`.

    `distance`, `diagonal` and `remove_drift` are those of `finite_force_constants`;
    `symmetrization` ("none", "phonopy", "symfc") is applied to either method's force
    constants, as to a reference's made from forces.

    Returns:
        The method used ("analytic" or "finite") and what it cost: HVPs (analytic) or
        displaced-supercell force evaluations (finite).
    """
    provider = as_provider(provider)
    method = resolve_method(provider, method)
    if method == "analytic":
        supercell = ase_from_phonopy(phonon.supercell)
        symmetry = SupercellSymmetry.from_atoms(supercell)
        phonon.force_constants = analytic_force_constants(provider, supercell, symmetry)
        symmetrize(phonon, symmetrization)
        return method, len(symmetry.independent_columns())
    finite_force_constants(provider, phonon, distance, diagonal=diagonal, remove_drift=remove_drift, symmetrization=symmetrization)
    return method, len(phonon.displacements)

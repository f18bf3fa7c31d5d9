"""Symmetry-preserving relaxation of a unit cell with any model (the MDR and Matbench protocols)."""

from __future__ import annotations

import dataclasses
import warnings

import ase
import numpy as np
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from phonon_eval.provider import ModelLike, as_provider

__all__ = ["RelaxResult", "RelaxationError", "relax"]


class RelaxationError(RuntimeError):
    """The relaxation did not reach the force threshold within its step budget."""


@dataclasses.dataclass(frozen=True)
class RelaxResult:
    atoms: ase.Atoms
    converged: bool
    steps: int
    fmax: float
    energy: float


def relax(
    provider: ModelLike,
    atoms: ase.Atoms,
    fmax: float = 0.005,
    steps: int = 500,
    symprec: float = 1e-5,
    *,
    relax_cell: bool = True,
) -> RelaxResult:
    """FIRE on positions and cell (FrechetCellFilter) under FixSymmetry, to `fmax` eV/Å.

    Args:
        provider: the model (its ASE calculator does the work).
        atoms: the starting unit cell (not modified).
        fmax: largest force (and scaled stress) component at convergence, eV/Å.
        steps: step budget.
        symprec: tolerance for the symmetry kept fixed, Å.
        relax_cell: relax the cell too (the MDR protocol), or positions only.

    Returns:
        The relaxed copy and how it got there; `converged` is False if the budget ran out.
    """
    a = atoms.copy()
    a.calc = as_provider(provider).calculator()
    with warnings.catch_warnings():
        # FixSymmetry reports the symmetry it found through warnings at INFO level
        warnings.simplefilter("ignore")
        a.set_constraint(FixSymmetry(a, symprec=symprec))
    target = FrechetCellFilter(a) if relax_cell else a
    opt = FIRE(target, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = target.get_forces()
    result = a.copy()
    result.set_constraint()
    return RelaxResult(
        atoms=result,
        converged=converged,
        steps=int(opt.nsteps),
        fmax=float(np.sqrt((forces**2).sum(axis=1)).max()),
        energy=float(a.get_potential_energy()),
    )

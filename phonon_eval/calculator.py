"""ASE calculators over JAX models: energy, free_energy, forces and stress."""

from __future__ import annotations

from typing import Any, Callable

import ase
import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from phonon_eval.potential import Potential, energy_forces_stress, precision

__all__ = ["FunctionCalculator", "PotentialCalculator"]

EFS = tuple[float, np.ndarray, "np.ndarray | None"]


class _EFSCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def _efs(self, atoms: ase.Atoms) -> EFS:
        raise NotImplementedError

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        e, f, s = self._efs(self.atoms)
        self.results = {"energy": e, "free_energy": e, "forces": f}
        if s is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(s)


class PotentialCalculator(_EFSCalculator):
    """ASE calculator of a Potential, in its own dtype or in `dtype` (float64 inside x64 mode).

    Graph sizes only grow while the atom count stays the same, so a relaxation compiles a few
    times at most, and a calculator shared between structures does not pad a small cell to a
    large supercell's size.
    """

    def __init__(self, potential: Potential, dtype: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.potential = potential
        self.dtype = dtype or str(potential.dtype)
        self._cast: Potential | None = None
        self._sizes = (0, 0, 0)  # atoms, nodes, edges

    def _efs(self, atoms: ase.Atoms) -> EFS:
        with precision(self.dtype):
            potential = self.potential
            if str(potential.dtype) != self.dtype:
                if self._cast is None:
                    self._cast = potential.astype(self.dtype)
                potential = self._cast
            graph = potential.graph(atoms)
            # keep the largest padding seen, so a neighbour count that wobbles does not recompile
            known = self._sizes if self._sizes[0] == len(atoms) else (len(atoms), 0, 0)
            sizes = (len(atoms), max(known[1], graph.n_nodes), max(known[2], graph.n_edges))
            if sizes[1:] != (graph.n_nodes, graph.n_edges):
                graph = potential.graph(atoms, n_nodes=sizes[1], n_edges=sizes[2])
            self._sizes = sizes
            return energy_forces_stress(potential, atoms, graph)


class FunctionCalculator(_EFSCalculator):
    """ASE calculator of any function atoms -> (energy eV, forces (N, 3) eV/Å, stress (3, 3) eV/Å³ or None)."""

    def __init__(self, efs: Callable[[ase.Atoms], EFS], **kwargs: Any):
        super().__init__(**kwargs)
        self.efs = efs

    def _efs(self, atoms: ase.Atoms) -> EFS:
        return self.efs(atoms)

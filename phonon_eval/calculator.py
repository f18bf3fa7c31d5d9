"""ASE calculator over a Potential: energy, free_energy, forces and stress."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from phonon_eval.potential import Potential, energy_forces_stress

__all__ = ["PotentialCalculator"]


class PotentialCalculator(Calculator):
    """ASE calculator. Graph sizes only grow within a run, so relaxations compile a few times at most."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, potential: Potential, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential
        self._sizes = (0, 0)

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        graph = self.potential.graph(self.atoms)
        # keep the largest padding seen, so a neighbour count that wobbles does not recompile
        sizes = (max(self._sizes[0], graph.n_nodes), max(self._sizes[1], graph.n_edges))
        if sizes != (graph.n_nodes, graph.n_edges):
            graph = self.potential.graph(self.atoms, n_nodes=sizes[0], n_edges=sizes[1])
        self._sizes = sizes
        e, f, s = energy_forces_stress(self.potential, self.atoms, graph)
        self.results = {"energy": e, "free_energy": e, "forces": f}
        if s is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(s)

"""A potential: a model that gives per-atom energies from edge vectors, with its species and cutoff.

`Potential.energy` is the one energy function of the toolkit. Everything else in this module is a
jitted convenience over it and over `derivatives`: ASE atoms in, numpy arrays out.
"""

from __future__ import annotations

from typing import Protocol

import ase
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols

from phonon_eval import derivatives
from phonon_eval.graph import Graph, build_graph, pad_positions

__all__ = [
    "EdgeModel",
    "Potential",
    "UnknownElementError",
    "total_energy",
    "energy_forces_stress",
    "hessian_vector_product",
    "hessian",
]


class UnknownElementError(ValueError):
    """The structure holds an element the potential was not trained on."""


class EdgeModel(Protocol):
    """What a model must provide to become a Potential (Nequix does)."""

    def node_energies(
        self, vectors: jax.Array, species: jax.Array, senders: jax.Array, receivers: jax.Array
    ) -> jax.Array: ...


class Potential(eqx.Module):
    """A model with the species it knows and its cutoff radius (Å).

    Attributes:
        model: the equinox module (parameters are its array leaves).
        atomic_numbers: sorted atomic numbers; species index = position in this tuple.
        cutoff: interaction radius in Å; edges beyond it contribute nothing.
        source: where it was loaded from, and the sha256 of that file ('' if built in memory).
    """

    model: EdgeModel
    atomic_numbers: tuple[int, ...] = eqx.field(static=True)
    cutoff: float = eqx.field(static=True)
    source: str = eqx.field(static=True, default="")
    sha256: str = eqx.field(static=True, default="")

    @property
    def dtype(self) -> np.dtype:
        """Floating dtype of the parameters; positions and cell are cast to it."""
        leaves = jax.tree.leaves(eqx.filter(self.model, eqx.is_inexact_array))
        return np.dtype(leaves[0].dtype)

    def astype(self, dtype) -> "Potential":
        """The same potential with floating parameters cast (float64 needs jax_enable_x64)."""
        cast = lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x  # noqa: E731
        return jax.tree.map(cast, self)

    def species(self, numbers: np.ndarray) -> np.ndarray:
        """Species indices of atomic numbers; UnknownElementError names what is missing."""
        lookup = {z: i for i, z in enumerate(self.atomic_numbers)}
        numbers = np.asarray(numbers)
        unknown = sorted({int(z) for z in numbers} - lookup.keys())
        if unknown:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            raise UnknownElementError(f"the potential does not know {names}")
        return np.array([lookup[int(z)] for z in numbers], dtype=np.int32)

    def graph(self, atoms: ase.Atoms, skin: float = 0.0, **pad) -> Graph:
        """Neighbour graph of `atoms` at this potential's cutoff (+ skin)."""
        return build_graph(
            atoms.positions,
            atoms.cell.array,
            self.species(atoms.numbers),
            self.cutoff,
            pbc=atoms.pbc,
            skin=skin,
            **pad,
        )

    def energy(self, graph: Graph, positions: jax.Array, cell: jax.Array) -> jax.Array:
        """Total energy (eV) of padded positions (n_nodes, 3) in a cell (3, 3): the one energy function."""
        vectors = positions[graph.senders] - positions[graph.receivers] + graph.shifts @ cell
        # padded edges get a vector beyond the cutoff: zero message, zero gradient, no NaN
        far = jnp.zeros(3, vectors.dtype).at[0].set(2.0 * graph.cutoff + 1.0)
        vectors = jnp.where(graph.edge_mask[:, None], vectors, far)
        e = self.model.node_energies(vectors, graph.species, graph.senders, graph.receivers)
        return jnp.sum(jnp.where(graph.node_mask, e, 0.0))

    def energy_fn(self, graph: Graph) -> derivatives.EnergyFn:
        """The energy as a function of (positions, cell) for `derivatives`."""
        return lambda positions, cell: self.energy(graph, positions, cell)

    def calculator(self, **kwargs) -> "ase.calculators.calculator.Calculator":
        """An ASE calculator (energy, free_energy, forces, stress)."""
        from phonon_eval.calculator import PotentialCalculator

        return PotentialCalculator(self, **kwargs)


@eqx.filter_jit
def _efs(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array):
    return derivatives.energy_forces_stress(potential.energy_fn(graph), positions, cell)


@eqx.filter_jit
def _ef(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array):
    return derivatives.energy_and_forces(potential.energy_fn(graph), positions, cell)


@eqx.filter_jit
def _hvp(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array, v: jax.Array):
    return derivatives.hvp(potential.energy_fn(graph), positions, cell, v)


@eqx.filter_jit
def _hessian(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array):
    return derivatives.hessian(potential.energy_fn(graph), positions, cell, batch_size=32)


def _inputs(potential: Potential, atoms: ase.Atoms, graph: Graph | None):
    graph = graph if graph is not None else potential.graph(atoms)
    dtype = potential.dtype
    return graph, pad_positions(atoms.positions, graph, dtype), jnp.asarray(atoms.cell.array, dtype)


def total_energy(potential: Potential, atoms: ase.Atoms, graph: Graph | None = None) -> float:
    """Total energy in eV."""
    graph, r, cell = _inputs(potential, atoms, graph)
    return float(_ef(potential, graph, r, cell)[0])


def energy_forces_stress(
    potential: Potential, atoms: ase.Atoms, graph: Graph | None = None
) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (eV), forces (N, 3) eV/Å and stress (3, 3) eV/Å³ (None unless fully periodic)."""
    graph, r, cell = _inputs(potential, atoms, graph)
    n = graph.n_atoms
    if atoms.pbc.all():
        e, f, s = _efs(potential, graph, r, cell)
        return float(e), np.asarray(f[:n], dtype=np.float64), np.asarray(s, dtype=np.float64)
    e, f = _ef(potential, graph, r, cell)
    return float(e), np.asarray(f[:n], dtype=np.float64), None


def hessian_vector_product(
    potential: Potential, atoms: ase.Atoms, vector: np.ndarray, graph: Graph | None = None
) -> np.ndarray:
    """(d²E/dr dr) · vector for a vector of shape (N, 3); returns (N, 3) in eV/Å² per Å."""
    graph, r, cell = _inputs(potential, atoms, graph)
    vector = np.asarray(vector, dtype=np.float64)
    if vector.shape != (len(atoms), 3):
        raise ValueError(f"vector must have shape ({len(atoms)}, 3), got {vector.shape}")
    v = pad_positions(vector, graph, potential.dtype)
    return np.asarray(_hvp(potential, graph, r, cell, v)[: graph.n_atoms], dtype=np.float64)


def hessian(potential: Potential, atoms: ase.Atoms, graph: Graph | None = None) -> np.ndarray:
    """Dense Hessian (N, N, 3, 3) in eV/Å², phonopy's force-constant layout. Small systems only."""
    graph, r, cell = _inputs(potential, atoms, graph)
    n = graph.n_atoms
    return np.asarray(_hessian(potential, graph, r, cell)[:n, :n], dtype=np.float64)

"""A potential: a model that gives per-atom energies from edge vectors, with its species and cutoff.

`Potential.energy` is the one energy function of the toolkit. Everything else in this module is a
jitted convenience over it and over `derivatives`: ASE atoms in, numpy arrays out.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol

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
    "hessian_columns",
    "batched_forces",
    "hessian",
    "chunked",
    "column_vectors",
    "precision",
    "unknown_elements",
]


class UnknownElementError(ValueError):
    """The structure holds an element the potential was not trained on."""


def unknown_elements(numbers: np.ndarray, known: tuple[int, ...]) -> str:
    """The elements among `numbers` that are not in `known`, as "Pt (Z=78), ..." ('' if none)."""
    unknown = sorted({int(z) for z in np.asarray(numbers)} - {int(z) for z in known})
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)


def column_vectors(columns: list[tuple[int, int]], n_rows: int, dtype) -> np.ndarray:
    """One-hot vectors (n, n_rows, 3) selecting the Hessian columns (atom, direction)."""
    vs = np.zeros((len(columns), n_rows, 3), dtype=dtype)
    for k, (atom, direction) in enumerate(columns):
        vs[k, atom, direction] = 1.0
    return vs


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
        unknown = unknown_elements(numbers, self.atomic_numbers)
        if unknown:
            raise UnknownElementError(f"the potential does not know {unknown}")
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
def _hvp_batch(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array, vs: jax.Array):
    f = potential.energy_fn(graph)
    return derivatives.over_leading_axis(lambda v: derivatives.hvp(f, positions, cell, v), vs)


@eqx.filter_jit
def _forces_batch(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array):
    f = potential.energy_fn(graph)
    return derivatives.over_leading_axis(lambda r: derivatives.forces(f, r, cell), positions)


@eqx.filter_jit
def _hessian(potential: Potential, graph: Graph, positions: jax.Array, cell: jax.Array):
    return derivatives.hessian(potential.energy_fn(graph), positions, cell, batch_size=32)


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """Run JAX in `dtype`'s precision: float64 arrays exist only while x64 mode is on."""
    if np.dtype(dtype) != np.float64:
        yield
        return
    with jax.enable_x64(True):
        yield


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
    n = len(atoms)
    if atoms.pbc.all():
        e, f, s = _efs(potential, graph, r, cell)
        return float(e), np.asarray(f, dtype=np.float64)[:n], np.asarray(s, dtype=np.float64)
    e, f = _ef(potential, graph, r, cell)
    return float(e), np.asarray(f, dtype=np.float64)[:n], None


def hessian_vector_product(
    potential: Potential, atoms: ase.Atoms, vector: np.ndarray, graph: Graph | None = None
) -> np.ndarray:
    """(d²E/dr dr) · vector for a vector of shape (N, 3); returns (N, 3) in eV/Å² per Å."""
    graph, r, cell = _inputs(potential, atoms, graph)
    vector = np.asarray(vector, dtype=np.float64)
    if vector.shape != (len(atoms), 3):
        raise ValueError(f"vector must have shape ({len(atoms)}, 3), got {vector.shape}")
    v = pad_positions(vector, graph, potential.dtype)
    return np.asarray(_hvp(potential, graph, r, cell, v), dtype=np.float64)[: len(atoms)]


def hessian(potential: Potential, atoms: ase.Atoms, graph: Graph | None = None) -> np.ndarray:
    """Dense Hessian (N, N, 3, 3) in eV/Å², phonopy's force-constant layout. Small systems only."""
    graph, r, cell = _inputs(potential, atoms, graph)
    n = len(atoms)
    return np.asarray(_hessian(potential, graph, r, cell), dtype=np.float64)[:n, :n]


def chunked(fn, items: np.ndarray, chunk: int) -> np.ndarray:
    """fn over items in fixed-size chunks (the last one padded), so it compiles once.

    Fewer items than `chunk` use the next power of two instead, so that a single column does
    not pay for four, and the set of compiled sizes stays small.
    """
    chunk = min(chunk, 1 << max(0, len(items) - 1).bit_length())
    out = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        n = len(part)
        if n < chunk:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - n, axis=0)])
        out.append(np.asarray(fn(part))[:n])
    return np.concatenate(out).astype(np.float64)


def hessian_columns(
    potential: Potential,
    atoms: ase.Atoms,
    columns: list[tuple[int, int]],
    graph: Graph | None = None,
    chunk: int = 4,
) -> np.ndarray:
    """Hessian columns d²E / dr dr[atom, direction] for (atom, direction) pairs, (n, N, 3) eV/Å².

    One HVP per column, `chunk` of them vectorised per call of one compiled function.
    """
    graph, r, cell = _inputs(potential, atoms, graph)
    vs = column_vectors(columns, graph.n_nodes, potential.dtype)
    cols = chunked(lambda v: _hvp_batch(potential, graph, r, cell, jnp.asarray(v)), vs, chunk)
    return cols[:, : len(atoms)]


def batched_forces(
    potential: Potential,
    atoms: ase.Atoms,
    positions: np.ndarray,
    skin: float = 0.2,
    chunk: int = 8,
) -> np.ndarray:
    """Forces (B, N, 3) in eV/Å for B displaced copies of `atoms`, through one shared graph.

    The graph of the undisplaced structure is built once with `skin`; it holds every neighbour of
    the displaced copies as long as no atom moves more than skin / 2, which is checked.

    Args:
        atoms: the reference structure (N atoms); its cell is used for every copy.
        positions: (B, N, 3) Cartesian positions of the copies, Å.
        skin: extra neighbour radius, Å.
        chunk: copies evaluated per call of the compiled function (bounds memory).
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 3 or positions.shape[1:] != (len(atoms), 3):
        raise ValueError(f"positions must have shape (B, {len(atoms)}, 3), got {positions.shape}")
    moved = np.linalg.norm(positions - atoms.positions[None], axis=-1).max() if len(positions) else 0.0
    if moved >= skin / 2:
        raise ValueError(f"an atom moves {moved:.3f} Å, more than skin / 2 = {skin / 2:.3f} Å")
    graph = potential.graph(atoms, skin=skin)
    cell = jnp.asarray(atoms.cell.array, potential.dtype)
    padded = np.zeros((len(positions), graph.n_nodes, 3), dtype=potential.dtype)
    padded[:, : len(atoms)] = positions
    f = chunked(lambda r: _forces_batch(potential, graph, jnp.asarray(r), cell), padded, chunk)
    return f[:, : len(atoms)]

"""Periodic neighbour graphs padded to bucketed sizes, so that jit compiles once per bucket.

A graph fixes the topology (who neighbours whom, through which lattice shift); positions and cell
stay separate arguments of the energy function so that they can be differentiated. Built with
`skin > 0`, a graph stays valid while every atom moves less than `skin / 2` from where it was
built, which lets all displaced supercells of a phonon calculation share one graph.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import vesin

__all__ = ["Graph", "build_graph", "count_edges", "bucket", "pad_positions", "check_structure", "StructureError"]


class StructureError(ValueError):
    """A structure the potential cannot be evaluated on (NaN positions, zero-volume cell, ...)."""


class Graph(eqx.Module):
    """Padded neighbour graph of one structure. Node and edge counts are bucketed.

    Attributes:
        species: (N,) int32 species indices; padded nodes get 0.
        senders, receivers: (E,) int32; the edge vector is r[senders] - r[receivers] + shifts @ cell.
        shifts: (E, 3) lattice shifts (integers stored as floats).
        node_mask, edge_mask: (N,), (E,) True for real nodes and edges.
        cutoff: the radius the edges were built with, skin included (static).

    Structures of different atom counts padded to the same sizes share every compiled
    function: nothing about a graph is static except the cutoff, which is the potential's.
    """

    species: jax.Array
    senders: jax.Array
    receivers: jax.Array
    shifts: jax.Array
    node_mask: jax.Array
    edge_mask: jax.Array
    cutoff: float = eqx.field(static=True)

    @property
    def n_atoms(self) -> int:
        """Number of real atoms (outside jit: it reads the node mask)."""
        return int(np.count_nonzero(np.asarray(self.node_mask)))

    @property
    def n_nodes(self) -> int:
        return self.species.shape[0]

    @property
    def n_edges(self) -> int:
        return self.senders.shape[0]


def bucket(n: int, per_octave: int = 8, minimum: int = 8) -> int:
    """Smallest size >= n on a geometric grid of `per_octave` steps per doubling.

    Padding wastes at most 1/per_octave of the work, and structures of similar size share a
    compiled function.
    """
    if n <= minimum:
        return minimum
    step = 2 ** max(0, math.floor(math.log2(n)) - int(math.log2(per_octave)))
    return int(math.ceil(n / step) * step)


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """Raise StructureError for inputs that would silently give NaN or garbage."""
    positions = np.asarray(positions)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) == 0:
        raise StructureError(f"positions must have shape (N, 3) with N > 0, got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise StructureError(f"positions are not finite (NaN or inf) for atoms {bad.tolist()}")
    cell = np.asarray(cell, dtype=float)
    if not np.all(np.isfinite(cell)):
        raise StructureError("cell is not finite (NaN or inf)")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if pbc.any():
        periodic = cell[pbc]
        # the periodic lattice vectors must span as many dimensions as there are of them
        s = np.linalg.svd(periodic, compute_uv=False)
        if s.min() < 1e-6 * max(1.0, s.max()):
            raise StructureError(
                f"cell has zero volume along its periodic directions (singular values {s.round(6)})"
            )


def _complete_cell(cell: np.ndarray, pbc: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Give non-periodic directions a box large enough for the neighbour search."""
    cell = np.array(cell, dtype=float)
    extent = np.ptp(positions, axis=0).max() + 1.0
    for i in range(3):
        if not pbc[i] and np.linalg.norm(cell[i]) < 1e-8:
            v = np.zeros(3)
            v[i] = extent
            cell[i] = v
    return cell


def build_graph(
    positions: np.ndarray,
    cell: np.ndarray,
    species: np.ndarray,
    cutoff: float,
    *,
    pbc: bool | np.ndarray = True,
    skin: float = 0.0,
    n_nodes: int | None = None,
    n_edges: int | None = None,
) -> Graph:
    """Neighbour graph of one structure, padded to bucketed (or given) sizes.

    Args:
        positions: (N, 3) Cartesian positions in Å.
        cell: (3, 3) lattice vectors as rows, Å.
        species: (N,) species indices of the potential.
        cutoff: interaction radius in Å.
        pbc: periodicity, one flag or one per lattice vector.
        skin: extra radius in Å, so that the graph survives displacements below skin / 2.
        n_nodes, n_edges: pad to exactly these sizes instead of the bucket (for batching).

    Returns:
        A Graph with at least one padded node, to which padded edges point.
    """
    positions = np.asarray(positions, dtype=np.float64)
    radius = float(cutoff) + float(skin)
    i, j, s = _neighbours(positions, cell, pbc, radius)
    n, e = len(positions), len(i)
    n_pad = n_nodes if n_nodes is not None else bucket(n + 1)
    e_pad = n_edges if n_edges is not None else bucket(e)
    if n_pad <= n or e_pad < e:
        raise ValueError(f"graph of {n} atoms and {e} edges does not fit ({n_pad}, {e_pad})")

    species_p = np.zeros(n_pad, dtype=np.int32)
    species_p[:n] = species
    # padded edges connect the last padded node to itself; the energy masks them out
    senders = np.full(e_pad, n_pad - 1, dtype=np.int32)
    receivers = np.full(e_pad, n_pad - 1, dtype=np.int32)
    senders[:e], receivers[:e] = j, i
    shifts = np.zeros((e_pad, 3), dtype=np.float32)
    shifts[:e] = s
    return Graph(
        species=jnp.asarray(species_p),
        senders=jnp.asarray(senders),
        receivers=jnp.asarray(receivers),
        shifts=jnp.asarray(shifts),
        node_mask=jnp.asarray(np.arange(n_pad) < n),
        edge_mask=jnp.asarray(np.arange(e_pad) < e),
        cutoff=radius,
    )


def count_edges(positions: np.ndarray, cell: np.ndarray, cutoff: float, *, pbc: bool | np.ndarray = True) -> int:
    """Number of (directed) edges `build_graph` makes at `cutoff`, without building the graph.

    For sizing padded batches in one pass over a large dataset.
    """
    return len(_neighbours(np.asarray(positions, dtype=np.float64), cell, pbc, float(cutoff))[0])


def _neighbours(positions: np.ndarray, cell: np.ndarray, pbc: bool | np.ndarray, radius: float):
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    check_structure(positions, cell, pbc)
    box = _complete_cell(cell, pbc, positions)
    return vesin.NeighborList(cutoff=radius, full_list=True).compute(
        points=positions, box=box, periodic=pbc, quantities="ijS"
    )


def pad_positions(positions: np.ndarray, graph: Graph, dtype=np.float32) -> jax.Array:
    """(N, 3) -> (graph.n_nodes, 3), zeros on padded nodes."""
    out = np.zeros((graph.n_nodes, 3), dtype=dtype)
    out[: len(positions)] = positions
    return jnp.asarray(out)

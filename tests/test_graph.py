"""Neighbour graphs: complete edge sets against ASE, bucketed padding, skin validity."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from phonon_eval.graph import bucket, build_graph


def test_bucket_is_monotone_with_bounded_overhead():
    sizes = [bucket(n) for n in range(1, 5000)]
    assert all(b >= n for n, b in zip(range(1, 5000), sizes))
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert max(b / n for n, b in zip(range(64, 5000), sizes[63:])) <= 1.125 + 1e-9
    # few distinct shapes, hence few compilations: at most 8 per doubling of the size
    for k in range(3, 12):
        assert len({b for b in sizes if 2**k <= b < 2 ** (k + 1)}) <= 8


@pytest.mark.parametrize("cutoff", [3.0, 6.0])
def test_edges_match_ase_neighbour_list(cutoff):
    """Same (i, j, shift) set as ASE's reference implementation, for a one-atom cell too."""
    for atoms in [bulk("Cu", "fcc", a=3.61), bulk("NaCl", "rocksalt", a=5.64) * (2, 1, 1)]:
        atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
        species = np.zeros(len(atoms), dtype=np.int32)
        g = build_graph(atoms.positions, atoms.cell.array, species, cutoff)
        m = np.asarray(g.edge_mask)
        ours = {
            (int(r), int(s), *map(int, sh))
            for r, s, sh in zip(np.asarray(g.receivers)[m], np.asarray(g.senders)[m], np.asarray(g.shifts)[m])
        }
        i, j, S = neighbor_list("ijS", atoms, cutoff)
        ref = {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, S)}
        assert ours == ref
        assert g.n_nodes > len(atoms)  # one padded node at least, for padded edges to point to


def test_skin_keeps_graph_valid_for_small_displacements():
    atoms = bulk("Si", "diamond", a=5.43) * 2
    species = np.zeros(len(atoms), dtype=np.int32)
    g = build_graph(atoms.positions, atoms.cell.array, species, 4.0, skin=0.2)
    moved = atoms.copy()
    moved.positions += np.random.default_rng(1).uniform(-0.05, 0.05, moved.positions.shape)
    i, j, S = neighbor_list("ijS", moved, 4.0)
    m = np.asarray(g.edge_mask)
    have = {
        (int(r), int(s), *map(int, sh))
        for r, s, sh in zip(np.asarray(g.receivers)[m], np.asarray(g.senders)[m], np.asarray(g.shifts)[m])
    }
    assert {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, S)} <= have

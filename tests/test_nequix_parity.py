"""Golden parity with the public `nequix` package (values in shared/golden, made by make_golden.py)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

import phonon_eval as pe
from conftest import shared_file

MODELS = ["nequix-mp-1", "nequix-mp-1-pft"]


@pytest.fixture(scope="module")
def golden():
    npz = np.load(shared_file("golden/nequix_golden.npz"))
    frames = ase.io.read(shared_file("golden/structures.extxyz"), ":")
    return {a.info["name"]: a for a in frames}, dict(npz)


@pytest.fixture(scope="module")
def potentials():
    return {m: pe.load_potential(shared_file(f"models/{m}.nqx")) for m in MODELS}


@pytest.fixture(scope="module")
def common_padding(golden, potentials):
    """One padded size for every golden structure, so the whole module compiles each function once."""
    structures, _ = golden
    pot = potentials["nequix-mp-1"]
    graphs = [pot.graph(a) for a in structures.values()]
    return max(g.n_nodes for g in graphs), max(g.n_edges for g in graphs)


def _cases(golden_values):
    return sorted({tuple(k.split("/")[:2]) for k in golden_values})


def test_every_golden_case_is_covered(golden):
    structures, values = golden
    cases = _cases(values)
    assert {m for m, _ in cases} == set(MODELS)
    assert {n for _, n in cases} == set(structures)


@pytest.mark.parametrize("model", MODELS)
def test_energy_forces_stress_hvp_match_public_nequix(model, golden, potentials, common_padding):
    structures, values = golden
    pot = potentials[model]
    n_nodes, n_edges = common_padding
    names = [n for m, n in _cases(values) if m == model]
    for name in names:
        atoms = structures[name]
        key = f"{model}/{name}"
        graph = pot.graph(atoms, n_nodes=n_nodes, n_edges=n_edges)
        e, f, s = pe.energy_forces_stress(pot, atoms, graph)
        n = len(atoms)
        assert abs(e - values[f"{key}/energy"]) / n < 1e-5, name
        np.testing.assert_allclose(f, values[f"{key}/forces"], atol=1e-4, rtol=0, err_msg=name)
        np.testing.assert_allclose(s, values[f"{key}/stress"], atol=1e-5, rtol=0, err_msg=name)

        e0 = np.zeros((n, 3))
        e0[0, 0] = 1.0
        for vec, ref in [(e0, values[f"{key}/hvp_e0"]), (values[f"{key}/hvp_vec"], values[f"{key}/hvp_random"])]:
            hvp = pe.hessian_vector_product(pot, atoms, vec, graph)
            scale = np.abs(ref).max()
            if scale == 0.0:  # one atom: translation invariance makes the HVP vanish
                assert np.abs(hvp).max() < 1e-4, name
            else:
                assert np.abs(hvp - ref).max() / scale < 1e-3, name

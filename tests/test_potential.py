"""Properties every potential must have, checked on a small random Nequix in float64.

Equivariance under rotation and inversion, translation and lattice-image invariance, forces
summing to zero, and every derivative against central finite differences of the one below it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ase
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

import phonon_eval as pe
from phonon_eval import derivatives
from phonon_eval.graph import pad_positions

TINY = pe.NequixConfig(
    atomic_numbers=(11, 17),
    cutoff=4.0,
    hidden_irreps="8x0e + 4x1o + 4x2e",
    lmax=2,
    n_layers=2,
    radial_basis_size=6,
    radial_mlp_size=16,
    radial_mlp_layers=2,
    avg_n_neighbors=10.0,
)


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def tiny(x64):
    model = pe.Nequix(TINY, key=jax.random.key(7))
    # non-zero reference energies so that they are exercised too
    model = eqx.tree_at(lambda m: m.atom_energies, model, jnp.array([-1.3, -2.1], jnp.float32))
    pot = pe.Potential(model=model, atomic_numbers=TINY.atomic_numbers, cutoff=TINY.cutoff)
    return pot.astype(jnp.float64)


@pytest.fixture
def nacl(x64):
    rng = np.random.default_rng(0)
    a = bulk("NaCl", "rocksalt", a=5.4) * (2, 1, 2)
    cell = a.cell.array.copy()
    cell[2] += [0.3, -0.2, 0.0]  # triclinic, so no accidental symmetry hides errors
    a.set_cell(cell, scale_atoms=True)
    a.positions += rng.normal(0, 0.08, a.positions.shape)
    return a


def _random_rotation(rng, inversion: bool) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if inversion else q


def _transformed(atoms: ase.Atoms, rot: np.ndarray, shift=np.zeros(3)) -> ase.Atoms:
    b = atoms.copy()
    b.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    b.positions = atoms.positions @ rot.T + shift
    return b


@pytest.mark.parametrize("inversion", [False, True])
def test_equivariance(tiny, nacl, inversion):
    rng = np.random.default_rng(1 + inversion)
    rot = _random_rotation(rng, inversion)
    moved = _transformed(nacl, rot, shift=rng.normal(size=3))
    e1, f1, s1 = pe.energy_forces_stress(tiny, nacl)
    e2, f2, s2 = pe.energy_forces_stress(tiny, moved)
    assert e2 == pytest.approx(e1, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(f2, f1 @ rot.T, atol=1e-9)
    np.testing.assert_allclose(s2, rot @ s1 @ rot.T, atol=1e-10)
    v = rng.normal(size=(len(nacl), 3))
    h1 = pe.hessian_vector_product(tiny, nacl, v)
    h2 = pe.hessian_vector_product(tiny, moved, v @ rot.T)
    np.testing.assert_allclose(h2, h1 @ rot.T, atol=1e-9)


def test_energy_is_not_trivially_invariant(tiny, nacl):
    """Guards the tests above: a constant potential would pass them."""
    e1, f1, _ = pe.energy_forces_stress(tiny, nacl)
    moved = nacl.copy()
    moved.positions[0] += [0.1, 0.0, 0.0]
    assert abs(pe.total_energy(tiny, moved) - e1) > 1e-6
    assert np.abs(f1).max() > 1e-3


def test_lattice_image_invariance(tiny, nacl):
    """A 2x1x2 supercell has 4x the energy and the same forces and stress."""
    e1, f1, s1 = pe.energy_forces_stress(tiny, nacl)
    big = nacl * (2, 1, 2)
    e2, f2, s2 = pe.energy_forces_stress(tiny, big)
    assert e2 == pytest.approx(4 * e1, rel=1e-10)
    np.testing.assert_allclose(f2, np.tile(f1, (4, 1)), atol=1e-9)
    np.testing.assert_allclose(s2, s1, atol=1e-11)


def test_forces_sum_to_zero(tiny, nacl):
    _, f, _ = pe.energy_forces_stress(tiny, nacl)
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-10)


def test_forces_are_central_differences_of_energy(tiny, nacl):
    _, f, _ = pe.energy_forces_stress(tiny, nacl)
    h = 1e-5
    for atom, d in [(0, 0), (3, 2), (5, 1)]:
        plus, minus = nacl.copy(), nacl.copy()
        plus.positions[atom, d] += h
        minus.positions[atom, d] -= h
        fd = -(pe.total_energy(tiny, plus) - pe.total_energy(tiny, minus)) / (2 * h)
        assert f[atom, d] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_stress_is_strain_derivative_of_energy(tiny, nacl):
    _, _, s = pe.energy_forces_stress(tiny, nacl)
    h = 1e-6
    volume = nacl.get_volume()
    for i, j in [(0, 0), (1, 2), (2, 0)]:
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h / (2 if i != j else 1)
        energies = []
        for sign in (1, -1):
            b = nacl.copy()
            b.set_cell(nacl.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            energies.append(pe.total_energy(tiny, b))
        # off the diagonal, the symmetric pair (i, j), (j, i) shares the step h
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert s[i, j] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_hvp_is_central_difference_of_forces(tiny, nacl):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(len(nacl), 3))
    hvp = pe.hessian_vector_product(tiny, nacl, v)
    h = 1e-5
    plus, minus = nacl.copy(), nacl.copy()
    plus.positions += h * v
    minus.positions -= h * v
    fd = -(pe.energy_forces_stress(tiny, plus)[1] - pe.energy_forces_stress(tiny, minus)[1]) / (2 * h)
    np.testing.assert_allclose(hvp, fd, rtol=1e-5, atol=1e-7)


def test_dense_hessian_is_symmetric_obeys_sum_rule_and_matches_columns(tiny, nacl):
    hess = pe.hessian(tiny, nacl)
    n = len(nacl)
    assert hess.shape == (n, n, 3, 3)
    flat = hess.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    np.testing.assert_allclose(flat, flat.T, atol=1e-10)
    # acoustic sum rule: rigid translations cost nothing
    np.testing.assert_allclose(hess.sum(axis=1), 0.0, atol=1e-10)
    graph = tiny.graph(nacl)
    r = pad_positions(nacl.positions, graph, np.float64)
    cell = jnp.asarray(nacl.cell.array)
    column = jax.jit(lambda r, c: derivatives.hessian_column(tiny.energy_fn(graph), r, c, 2, 1))
    col = column(r, cell)
    np.testing.assert_allclose(np.asarray(col)[:n], hess[:, 2, :, 1], atol=1e-12)


def test_third_order_is_central_difference_of_hvp(tiny, nacl):
    rng = np.random.default_rng(4)
    u, v = rng.normal(size=(2, len(nacl), 3))
    graph = tiny.graph(nacl, skin=0.5)
    r = pad_positions(nacl.positions, graph, np.float64)
    up, vp = pad_positions(u, graph, np.float64), pad_positions(v, graph, np.float64)
    cell = jnp.asarray(nacl.cell.array)
    f = tiny.energy_fn(graph)
    third = jax.jit(lambda r: derivatives.third_order(f, r, cell, up, vp))(r)
    hvp = jax.jit(lambda r: derivatives.hvp(f, r, cell, vp))
    h = 1e-5
    fd = (hvp(r + h * up) - hvp(r - h * up)) / (2 * h)
    np.testing.assert_allclose(np.asarray(third), np.asarray(fd), rtol=1e-5, atol=1e-7)


def test_padding_does_not_change_results(tiny, nacl):
    small = tiny.graph(nacl)
    big = tiny.graph(nacl, n_nodes=small.n_nodes + 16, n_edges=small.n_edges + 200)
    skinned = tiny.graph(nacl, skin=1.0)
    ref = pe.energy_forces_stress(tiny, nacl, small)
    for g in (big, skinned):
        e, f, s = pe.energy_forces_stress(tiny, nacl, g)
        assert e == pytest.approx(ref[0], rel=1e-12)
        np.testing.assert_allclose(f, ref[1], atol=1e-12)
        np.testing.assert_allclose(s, ref[2], atol=1e-12)


def test_batched_forces_and_columns_equal_one_structure_at_a_time(tiny, nacl):
    """The batched paths (lax.map on the CPU, vmap elsewhere) give the unbatched numbers, for a
    count that is not a multiple of the chunk (the last chunk is padded)."""
    rng = np.random.default_rng(3)
    copies = nacl.positions + rng.uniform(-0.02, 0.02, (5, len(nacl), 3))
    batched = pe.batched_forces(tiny, nacl, copies, skin=0.2, chunk=2)
    for positions, f in zip(copies, batched):
        atoms = nacl.copy()
        atoms.positions = positions
        np.testing.assert_allclose(f, pe.energy_forces_stress(tiny, atoms)[1], atol=1e-12)
    columns = [(0, 0), (1, 2), (3, 1)]
    for (atom, axis), col in zip(columns, pe.hessian_columns(tiny, nacl, columns, chunk=2)):
        v = np.zeros((len(nacl), 3))
        v[atom, axis] = 1.0
        np.testing.assert_allclose(col, pe.hessian_vector_product(tiny, nacl, v), atol=1e-12)
    xs = jnp.asarray(rng.normal(size=(3, 4)))
    np.testing.assert_array_equal(derivatives.over_leading_axis(jnp.sin, xs), jax.vmap(jnp.sin)(xs))


@contextlib.contextmanager
def _compilations() -> Iterator[list[str]]:
    """The XLA compilations made inside the block, one event each."""
    import jax.monitoring

    compiled: list[str] = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_structures_of_other_sizes_in_the_same_padding_share_compilations(tiny, nacl):
    """Only shapes select a compiled function: a smaller structure padded like `nacl` compiles
    nothing new, and its results equal those of its own unpadded graph."""
    smaller = nacl[:-3]
    padded = tiny.graph(nacl)
    same_shape = tiny.graph(smaller, n_nodes=padded.n_nodes, n_edges=padded.n_edges)
    pe.energy_forces_stress(tiny, nacl, padded)
    pe.hessian_vector_product(tiny, nacl, np.ones((len(nacl), 3)), padded)
    v = np.ones((len(smaller), 3))
    with _compilations() as compiled:
        e, f, s = pe.energy_forces_stress(tiny, smaller, same_shape)
        hv = pe.hessian_vector_product(tiny, smaller, v, same_shape)
    assert compiled == []
    ref = pe.energy_forces_stress(tiny, smaller)
    assert f.shape == (len(smaller), 3) and hv.shape == (len(smaller), 3)
    assert e == pytest.approx(ref[0], rel=1e-12)
    np.testing.assert_allclose(f, ref[1], atol=1e-12)
    np.testing.assert_allclose(s, ref[2], atol=1e-12)
    np.testing.assert_allclose(hv, pe.hessian_vector_product(tiny, smaller, v), atol=1e-10)


def test_an_unpickled_or_rebuilt_copy_compiles_nothing_new(tiny, nacl, tmp_path):
    """A Dask worker's unpickled model and a checkpoint loaded again are equal to the original
    as trees, so JAX's compiled functions are found for them: e3nn's linear plans compared by
    identity and had every function traced and compiled again (seconds per function)."""
    import pickle

    import cloudpickle

    path = tmp_path / "tiny.ckpt"
    pe.save_potential(path, tiny.astype(jnp.float32))
    loaded = pe.load_potential(path).astype(jnp.float64)
    pe.energy_forces_stress(loaded, nacl)
    with _compilations() as compiled:
        for copy in (pickle.loads(cloudpickle.dumps(loaded)), pe.load_potential(path).astype(jnp.float64)):
            assert jax.tree.structure(copy) == jax.tree.structure(loaded)
            e, f, s = pe.energy_forces_stress(copy, nacl)
    assert compiled == []
    np.testing.assert_array_equal(f, pe.energy_forces_stress(loaded, nacl)[1])


def test_ase_calculator_matches_functional_api(tiny, nacl):
    a = nacl.copy()
    a.calc = tiny.calculator()
    e, f, s = pe.energy_forces_stress(tiny, nacl)
    assert a.get_potential_energy() == pytest.approx(e, rel=1e-12)
    np.testing.assert_allclose(a.get_forces(), f, atol=1e-12)
    np.testing.assert_allclose(a.get_stress(voigt=False), s, atol=1e-12)


def test_unknown_element_is_named(tiny):
    a = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(pe.UnknownElementError, match=r"Cu \(Z=29\)"):
        pe.total_energy(tiny, a)


def test_zero_volume_cell_is_refused(tiny):
    a = ase.Atoms("NaCl", positions=[[0, 0, 0], [1.5, 1.5, 0]], cell=[[3, 0, 0], [0, 3, 0], [3, 3, 0]], pbc=True)
    with pytest.raises(pe.StructureError, match="zero volume"):
        pe.total_energy(tiny, a)


def test_nan_positions_are_refused(tiny, nacl):
    a = nacl.copy()
    a.positions[1, 2] = np.nan
    with pytest.raises(pe.StructureError, match=r"not finite.*\[1\]"):
        pe.total_energy(tiny, a)


def test_non_periodic_cluster_has_forces_but_no_stress(tiny):
    a = ase.Atoms("NaCl", positions=[[0, 0, 0], [2.4, 0.3, 0.1]], pbc=False)
    e, f, s = pe.energy_forces_stress(tiny, a)
    assert s is None
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-10)
    assert np.abs(f).max() > 0

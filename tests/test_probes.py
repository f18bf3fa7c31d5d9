"""Hessian probes: each loss, over its draws, is the full-Hessian quantity it claims to estimate,
and its gradient is the finite-difference gradient of the same loss (float64, a small model)."""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import phonon_eval as pe
from cli.eval import BUILTIN_DATASET
from conftest import tiny_model_file
from finetune.data import Batcher, phonon_examples
from finetune.loss import LossWeights, batch_loss
from finetune.probes import every_class, force_constant_product, hessian_loss_for
from finetune.trainer import TrainConfig
from phonon_eval.datasets import Dataset

HESSIAN_ONLY = LossWeights(0.0, 0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def student(x64, tmp_path_factory):
    path = tiny_model_file(tmp_path_factory.mktemp("probe-model"), (29, 79), cutoff=4.0, seed=3)
    return pe.load_potential(path).astype(jnp.float64)


@pytest.fixture(scope="module", params=["Cu-fcc", "CuAu-L10"])
def material(request, student):
    """(example, error matrix Ĥ − Φ as 3N x 3N) of a record; Cu-fcc has one class of columns."""
    record = Dataset(BUILTIN_DATASET)[request.param]
    (example,) = phonon_examples([record], dtype=np.float64)
    n = len(example.atoms)
    error = np.asarray(pe.hessian(student, example.atoms)) - record.full_force_constants()  # [i, a, α, β]
    return example, error.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)


_loss = eqx.filter_jit(lambda p, b, loss: batch_loss(p, b, jnp.asarray(HESSIAN_ONLY, jnp.float64), True, loss)[0])


def _probe_loss(student, example, probe, loss: str) -> float:
    """The Hessian term of the training loss for one structure and one probe (a column (a, d) or v)."""
    batch = Batcher(student, [example], batch_size=1).make([0], columns=[probe])
    return float(_loss(student, batch, loss))


def test_compact_force_constants_times_a_vector_is_the_full_product(material):
    example, _ = material
    record = Dataset(BUILTIN_DATASET)[example.id]
    v = np.random.default_rng(0).normal(size=(len(example.atoms), 3))
    expected = np.einsum("iaxy,ay->ix", record.full_force_constants(), v)
    np.testing.assert_allclose(force_constant_product(example.force_constants, v), expected, rtol=1e-12, atol=1e-12)


def test_column_losses_over_all_columns_are_the_hessian_mae_and_mse(student, material):
    example, error = material
    columns = [(a, d) for a in range(len(example.atoms)) for d in range(3)]
    for loss, exact in (("mae", np.abs(error).mean()), ("mse", (error**2).mean())):
        mean = np.mean([_probe_loss(student, example, c, loss) for c in columns])
        assert mean == pytest.approx(exact, rel=1e-9), loss


def test_the_symmetry_probe_averages_to_the_squared_frobenius_error_over_every_sign(student, material):
    """Every sign pattern of the K classes, enumerated: the mean is exact, not a sample."""
    example, error = material
    classes = example.classes
    exact = (error**2).mean()
    losses = []
    for signs in itertools.product([-1.0, 1.0], repeat=len(classes)):
        v = np.zeros((len(example.atoms), 3))
        v[classes.atoms, classes.directions] = np.array(signs) * np.sqrt(classes.multiplicity)
        losses.append(_probe_loss(student, example, v, "mse"))
    assert np.mean(losses) == pytest.approx(exact, rel=1e-8)
    if len(classes) == 1:  # one class: every draw is the full-Hessian error exactly
        np.testing.assert_allclose(losses, exact, rtol=1e-8)
    else:
        assert np.std(losses) > 1e-3 * exact  # several classes: a draw is only an estimate


def test_the_rademacher_probe_is_unbiased_to_sampling_error(student, material):
    example, error = material
    batcher = Batcher(student, [example], batch_size=1, probe="rademacher")
    rng = np.random.default_rng(1)
    losses = [float(_loss(student, batcher.make([0], rng), "mse")) for _ in range(200)]
    standard_error = np.std(losses) / np.sqrt(len(losses))
    assert abs(np.mean(losses) - (error**2).mean()) < 4 * standard_error


@pytest.mark.parametrize("probe", ["column", "rademacher", "symmetry"])
def test_a_gradient_through_each_probe_is_the_finite_difference_one(student, material, probe):
    example, _ = material
    loss = hessian_loss_for(probe)
    batcher = Batcher(student, [example], batch_size=1, probe=probe)
    batch = batcher.make([0], np.random.default_rng(2))
    params, static = eqx.partition(student, eqx.is_inexact_array)
    grad = eqx.filter_jit(eqx.filter_grad(lambda p: _loss(eqx.combine(p, static), batch, loss)))(params)
    direction = jax.tree.map(lambda x: jnp.asarray(np.random.default_rng(4).normal(size=x.shape)), params)
    eps = 1e-5

    def at(t: float) -> float:
        moved = jax.tree.map(lambda p, d: p + t * d, params, direction)
        return float(_loss(eqx.combine(moved, static), batch, loss))

    finite = (at(eps) - at(-eps)) / (2 * eps)
    analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    assert analytic == pytest.approx(finite, rel=1e-6)


@pytest.mark.parametrize("loss", ["mae", "mse"])
def test_k_probes_through_one_linearisation_are_the_mean_of_one_at_a_time(student, material, loss):
    """Loss and gradient of K probes per structure (one linearisation, K pushes) equal the mean
    over the same probes taken one per step (one JVP each), sampler weights included."""
    example, _ = material
    n = len(example.atoms)
    rng = np.random.default_rng(5)
    probes = [(1, 2, 0.5), (0, 0, 2.0), (n - 1, 1, 1.0)]
    if loss == "mse":
        probes += [rng.choice([-1.0, 1.0], size=(n, 3))]
    params, static = eqx.partition(student, eqx.is_inexact_array)
    value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(lambda p, b: _loss(eqx.combine(p, static), b, loss)))
    together = value_and_grad(params, Batcher(student, [example], 1, probes=len(probes)).make([0], columns=[probes]))
    alone = [value_and_grad(params, Batcher(student, [example], 1).make([0], columns=[p])) for p in probes]
    assert float(together[0]) == pytest.approx(np.mean([float(v) for v, _ in alone]), rel=1e-12)
    for leaf, *leaves in zip(jax.tree.leaves(together[1]), *(jax.tree.leaves(g) for _, g in alone)):
        np.testing.assert_allclose(leaf, np.mean(leaves, axis=0), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss", ["mae", "mse"])
def test_every_class_at_once_is_the_expected_step_of_each_probe(student, material, loss):
    """The benchmark's zero-variance reference: every class of a structure in one step, weighted
    by multiplicity, has the mean loss and gradient of all 3N columns and (mse) of every sign
    pattern of the symmetry probe, exactly. An unbiased probe of the same loss then differs from
    it by noise only: it cannot take a step that this one, on average, does not."""
    example, error = material
    n, classes = len(example.atoms), example.classes
    if len(classes) == 1:
        pytest.skip("one class: every symmetry probe is the exact step (test_the_symmetry_probe_averages_...)")
    params, static = eqx.partition(student, eqx.is_inexact_array)
    value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(lambda p, b: _loss(eqx.combine(p, static), b, loss)))
    k = len(classes) + 1  # one padding probe of weight 0 too
    exact, grad = value_and_grad(params, Batcher(student, [example], 1, probes=k).make([0], columns=[every_class(classes, n, k)]))
    assert float(exact) == pytest.approx(np.abs(error).mean() if loss == "mae" else (error**2).mean(), rel=1e-9)

    def mean_of(probes):
        runs = [value_and_grad(params, Batcher(student, [example], 1).make([0], columns=[v])) for v in probes]
        return np.mean([float(v) for v, _ in runs]), [np.mean(x, axis=0) for x in zip(*(jax.tree.leaves(g) for _, g in runs))]

    expectations = [mean_of([(a, d) for a in range(n) for d in range(3)])]
    if loss == "mse":
        signs = itertools.product([-1.0, 1.0], repeat=len(classes))
        expectations.append(mean_of([_symmetry_probe(example, s) for s in signs]))
    for value, leaves in expectations:
        assert value == pytest.approx(float(exact), rel=1e-9)
        for leaf, expected in zip(jax.tree.leaves(grad), leaves, strict=True):
            np.testing.assert_allclose(leaf, expected, rtol=1e-7, atol=1e-12)
    with pytest.raises(ValueError, match="classes do not fit in"):
        every_class(classes, n, len(classes) - 1 or 0)


def _symmetry_probe(example, signs) -> np.ndarray:
    v = np.zeros((len(example.atoms), 3))
    c = example.classes
    v[c.atoms, c.directions] = np.array(signs) * np.sqrt(c.multiplicity)
    return v


def test_the_batcher_draws_k_independent_probes_per_structure(student, material):
    example, _ = material
    batch = Batcher(student, [example], 1, probe="rademacher", probes=4).make([0], np.random.default_rng(0))
    v = np.asarray(batch.vector)[0, :, : len(example.atoms)]
    assert v.shape == (4, len(example.atoms), 3) and np.all(np.abs(v) == 1.0)
    assert len({row.tobytes() for row in v}) == 4
    with pytest.raises(ValueError, match="2 probes given, the batcher makes 4"):
        Batcher(student, [example], 1, probes=4).make([0], columns=[[(0, 0), (0, 1)]])


def test_probe_settings_are_checked():
    assert (hessian_loss_for("column"), hessian_loss_for("symmetry"), hessian_loss_for("column", "mse")) == ("mae", "mse", "mse")
    with pytest.raises(ValueError, match="the rademacher probe estimates the squared Hessian error only"):
        TrainConfig(probe="rademacher", hessian_loss="mae")
    with pytest.raises(ValueError, match="the symmetry sampler draws columns; the rademacher probe draws its own"):
        TrainConfig(probe="rademacher", sampler="symmetry")
    with pytest.raises(ValueError, match="unknown probe 'gauss'"):
        TrainConfig(probe="gauss")
    with pytest.raises(ValueError, match="probes_per_structure must be at least 1, got 0"):
        TrainConfig(probes_per_structure=0)

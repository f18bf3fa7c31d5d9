"""PFT: the HVP column loss against the materialised Hessian, samplers, training, exact resume."""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from typer.testing import CliRunner

import phonon_eval as pe
from cli.eval import BUILTIN_DATASET
from cli.finetune import app
from phonon_eval.datasets import Dataset
from finetune.data import Batcher, Example, upstream_examples
from finetune.loss import LossWeights, batch_loss
from finetune.samplers import make_sampler
from finetune.trainer import TrainConfig, Trainer, hessian_mae
from phonon_eval.potential import _inputs
from phonon_eval.symmetry import SupercellSymmetry
from phonon_eval.derivatives import hessian as dense_hessian

SMALL = dict(cutoff=4.0, hidden_irreps="8x0e + 4x1o + 4x2e", lmax=2, n_layers=2, radial_basis_size=6, radial_mlp_size=16, avg_n_neighbors=16.0)


def _potential(numbers, seed):
    config = pe.NequixConfig(atomic_numbers=tuple(numbers), **SMALL)
    return pe.Potential(model=pe.Nequix(config, key=jax.random.key(seed)), atomic_numbers=config.atomic_numbers, cutoff=config.cutoff)


def _phonon_example(atoms, teacher, sampler="uniform"):
    """A phonon example whose reference force constants are another model's exact Hessian."""
    classes = SupercellSymmetry.from_atoms(atoms).column_orbits()
    n = len(atoms)
    return Example(
        id=atoms.get_chemical_formula(), atoms=atoms, energy=0.0, forces=np.zeros((n, 3)), stress=np.zeros((3, 3)),
        force_constants=pe.hessian(teacher, atoms), sampler=make_sampler(sampler, n, classes), classes=classes,
    )


@pytest.fixture(scope="module")
def si8():
    return bulk("Si", "diamond", a=5.43, cubic=True)


def test_hvp_column_loss_equals_the_materialised_hessian_column(si8):
    """The column from one HVP inside the loss is the column of the jacfwd Hessian."""
    student, teacher = _potential([14], 0), _potential([14], 1)
    ex = _phonon_example(si8, teacher)
    batcher = Batcher(student, [ex], batch_size=1)
    graph, r, cell = _inputs(student, si8, None)
    full = np.asarray(jax.jit(lambda r: dense_hessian(student.energy_fn(graph), r, cell))(r))[:8, :8]
    loss = eqx.filter_jit(batch_loss)  # op by op, the nested JVP would take most of a minute
    for atom, direction in [(0, 0), (3, 2), (7, 1)]:
        batch = batcher.make([0], None, columns=[(atom, direction)])
        _, terms = loss(student, batch, jnp.asarray(LossWeights()))
        expected = np.abs(full[:, atom, :, direction] - ex.force_constants[:, atom, :, direction]).mean()
        assert float(terms[3]) == pytest.approx(expected, rel=1e-5)


def test_hvp_training_follows_the_full_hessian_loss_curve(si8):
    """Diamond Si: one column class, so any sampled column's loss is the full-Hessian MAE (the seed's demo)."""
    student, teacher = _potential([14], 0), _potential([14], 1)
    ex = _phonon_example(si8, teacher)
    cfg = TrainConfig(epochs=1, batch_size=1, learning_rate=3e-3, schedule="constant", optimizer="adam",
                      energy_weight=0.0, force_weight=0.0, stress_weight=0.0, hessian_weight=1.0, ema_decay=0.0)
    trainer = Trainer(student, cfg, [ex])
    graph, r, cell = _inputs(student, si8, None)
    ref = jnp.asarray(np.pad(ex.force_constants, ((0, graph.n_nodes - 8), (0, graph.n_nodes - 8), (0, 0), (0, 0))))
    node = np.zeros(graph.n_nodes, bool)
    node[:8] = True
    pair = jnp.asarray(node[:, None] & node[None, :])[:, :, None, None]

    def full_loss(p):
        h = dense_hessian(p.energy_fn(graph), r, cell)
        return jnp.sum(jnp.where(pair, jnp.abs(h - ref), 0.0)) / (9 * 64)

    opt = optax.adam(3e-3)

    @eqx.filter_jit
    def full_step(p, state):
        loss, grads = eqx.filter_value_and_grad(full_loss)(p)
        updates, state = opt.update(grads, state, eqx.filter(p, eqx.is_inexact_array))
        return eqx.apply_updates(p, updates), state, loss

    p_full = student
    state = opt.init(eqx.filter(p_full, eqx.is_inexact_array))
    full_curve, hvp_curve = [], []
    for _ in range(4):
        p_full, state, loss = full_step(p_full, state)
        full_curve.append(float(loss))
        hvp_curve.append(trainer.train_epoch()["column_loss_mean"])
    np.testing.assert_allclose(hvp_curve, full_curve, rtol=2e-3)
    assert hvp_curve[-1] < hvp_curve[0]


def test_symmetry_sampling_has_the_uniform_expected_loss():
    """Over all 3N columns: uniform mean = Σ p_class · loss(representative) = cycle mean."""
    record = Dataset(BUILTIN_DATASET)["CuAu-L10"]
    atoms = record.supercell()
    student = _potential([29, 79], 2)
    h = pe.hessian(student, atoms)
    per_column = np.abs(h - record.full_force_constants()).mean(axis=(0, 2))  # (N, 3): column (b, j)
    uniform = per_column.mean()
    classes = SupercellSymmetry.from_atoms(atoms).column_orbits()
    assert 1 < len(classes) < 3 * len(atoms)
    sym = make_sampler("symmetry", len(atoms), classes)
    expected = sum(p * per_column[a, d] for a, d, p in zip(sym.atoms, sym.directions, sym.probabilities))
    assert expected == pytest.approx(uniform, rel=1e-6)  # float32 Hessian: classes agree to rounding
    cyc = make_sampler("cycle", len(atoms), classes)
    rng = np.random.default_rng(0)
    draws = [cyc.draw(rng) for _ in range(cyc.n_candidates)]
    assert len({(a, d) for a, d, _ in draws}) == cyc.n_candidates
    assert np.mean([w * per_column[a, d] for a, d, w in draws]) == pytest.approx(uniform, rel=1e-6)
    # and the Hessian MAE used for validation (class representatives) is the full one
    ex = Example("CuAu", atoms, 0.0, np.zeros((len(atoms), 3)), None, record.full_force_constants(), None, classes)
    assert hessian_mae(student, [ex]) == pytest.approx(uniform, rel=1e-5)


def test_members_of_a_column_class_give_the_same_gradient():
    """Why symmetry sampling cannot take fewer steps than uniform sampling: for an equivariant
    model every column of a class has the same loss and the same parameter gradient, so drawing
    representatives with probability multiplicity / 3N gives the uniform distribution of steps."""
    record = Dataset(BUILTIN_DATASET)["CuAu-L10"]
    atoms = record.supercell()
    student = _potential([29, 79], 2)
    classes = SupercellSymmetry.from_atoms(atoms).column_orbits()
    big = int(np.argmax(classes.multiplicity))
    other = (big + 1) % len(classes)
    members = [*classes.members(big)[[0, 1, -1]], classes.members(other)[0]]
    ex = Example("CuAu", atoms, 0.0, np.zeros((len(atoms), 3)), None, record.full_force_constants(), None, classes)
    batcher = Batcher(student, [ex], batch_size=1)
    weights = jnp.asarray(LossWeights(0.0, 0.0, 0.0, 1.0))
    grad = eqx.filter_jit(eqx.filter_grad(lambda p, b: batch_loss(p, b, weights)[0]))
    grads = [grad(student, batcher.make([0], None, columns=[tuple(m)])) for m in members]
    flat = [np.concatenate([np.ravel(x) for x in jax.tree.leaves(eqx.filter(g, eqx.is_inexact_array))]) for g in grads]
    scale = np.abs(flat[0]).max()
    assert scale > 0
    for same in flat[1:3]:
        np.testing.assert_allclose(same, flat[0], atol=1e-4 * scale)
    assert np.abs(flat[3] - flat[0]).max() > 1e-2 * scale  # another class: another gradient


def _emt_frames(n=8, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        a = bulk(["Cu", "Au"][k % 2], "fcc", a=[3.61, 4.08][k % 2], cubic=True)
        a.set_cell(a.cell.array @ (np.eye(3) + rng.normal(0, 0.01, (3, 3))), scale_atoms=True)
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        a.get_potential_energy()
        a.get_stress()
        frames.append(a)
    return frames


def test_resume_continues_exactly(tmp_path):
    frames = upstream_examples(_emt_frames(), "emt")
    cfg = TrainConfig(epochs=2, batch_size=2, cotrain_batch_size=2, learning_rate=1e-3, seed=3)
    start = _potential([29, 79], 5)
    straight = Trainer(start, cfg, [], cotrain=frames)
    straight.train_epoch(), straight.train_epoch()
    first = Trainer(start, cfg, [], cotrain=frames)
    first.train_epoch()
    first.save_state(tmp_path / "s.state")
    second = Trainer(start, cfg, [], cotrain=frames)
    second.load_state(tmp_path / "s.state")
    second.train_epoch()
    for a, b in zip(jax.tree.leaves(straight.ema), jax.tree.leaves(second.ema)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert straight.step == second.step


def test_cli_from_scratch_then_pft_with_symmetry_sampling(tmp_path):
    import ase.io

    ase.io.write(tmp_path / "frames.extxyz", _emt_frames(12, seed=1))
    ase.io.write(tmp_path / "val.extxyz", _emt_frames(4, seed=2))
    arch = tmp_path / "arch.toml"
    arch.write_text('cutoff = 4.0\nhidden_irreps = "8x0e + 4x1o"\nlmax = 1\nn_layers = 2\nradial_basis_size = 6\nradial_mlp_size = 16\n')
    runner = CliRunner()
    scratch = tmp_path / "scratch.ckpt"
    res = runner.invoke(app, ["--init", str(arch), "--cotrain", str(tmp_path / "frames.extxyz"), "--cotrain-val", str(tmp_path / "val.extxyz"),
                              "--epochs", "6", "--learning-rate", "1e-2", "--out", str(scratch), "--no-progress"])
    assert res.exit_code == 0, res.output
    metrics = np.genfromtxt(scratch.with_suffix(".csv"), delimiter=",", names=True)
    assert metrics["val_energy_mae"][-1] < 0.5 * metrics["val_energy_mae"][0]
    assert metrics["val_force_mae"][-1] < metrics["val_force_mae"][0]

    data = tmp_path / "cuau"
    data.mkdir()
    for name in ("Cu-fcc", "Cu3Au-L12", "CuAu-L10", "Au-fcc"):
        (data / f"{name}.yaml.xz").symlink_to(BUILTIN_DATASET / f"{name}.yaml.xz")
    (data / "split.json").write_text(json.dumps({"train": ["Cu-fcc", "CuAu-L10", "Au-fcc"], "val": ["Cu3Au-L12"]}))
    tuned = tmp_path / "tuned.ckpt"
    res = runner.invoke(app, ["--model", str(scratch), "--dataset", str(data),
                              "--symmetry-sampling", "--cotrain", str(tmp_path / "frames.extxyz"),
                              "--epochs", "2", "--learning-rate", "2e-3", "--batch-size", "2", "--out", str(tuned), "--no-progress"])
    assert res.exit_code == 0, res.output
    header = pe.checkpoint.read_header(tuned)
    assert header["provenance"]["training_config"]["sampler"] == "symmetry"
    # no --cotrain-val: the energy and force MAE were not measured, and are not printed
    assert "Hessian MAE" in res.output and "force MAE" not in res.output and "nan" not in res.output
    metrics = np.genfromtxt(tuned.with_suffix(".csv"), delimiter=",", names=True)
    assert metrics["val_hessian_mae"][-1] < metrics["val_hessian_mae"][0]


def test_cli_refuses_bad_usage(tmp_path, tiny_ckpt):
    res = CliRunner().invoke(app, ["--out", str(tmp_path / "x.ckpt")])
    assert res.exit_code == 2 and "--model" in res.output
    out = tmp_path / "tuned.ckpt"
    res = CliRunner().invoke(app, ["--model", str(tiny_ckpt), "--dataset", str(BUILTIN_DATASET), "--out", str(out), "--resume", "--no-progress"])
    assert res.exit_code == 2 and "no training state" in res.output and "tuned.ckpt.state" in " ".join(res.output.split())


def test_summary_names_only_what_was_measured():
    from finetune.run import _summary

    nan = float("nan")
    first = {"val_hessian_mae": 0.5, "val_energy_mae": nan, "val_force_mae": nan}
    text = _summary("m.ckpt", 10, first, {**first, "val_hessian_mae": 0.25})
    assert text == "wrote m.ckpt after 10 steps; validation Hessian MAE 0.5000 -> 0.2500 eV/Å²"
    assert "nothing validated" in _summary("m.ckpt", 3, dict.fromkeys(first, nan), dict.fromkeys(first, nan))


@pytest.mark.parametrize("saved", [False, True])
def test_cli_interrupt_says_what_was_saved(tmp_path, tiny_ckpt, monkeypatch, saved):
    import finetune.run

    out = tmp_path / "tuned.ckpt"
    if saved:
        (tmp_path / "tuned.ckpt.state").write_bytes(b"state")

    def interrupted(spec, config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune.run, "run", interrupted)
    res = CliRunner().invoke(app, ["--model", str(tiny_ckpt), "--dataset", str(BUILTIN_DATASET), "--out", str(out), "--no-progress"])
    text = " ".join(res.output.split())
    assert res.exit_code == 130 and "interrupted:" in text
    assert ("--resume" in text and "tuned.ckpt.state" in text) if saved else "nothing was saved" in text


@pytest.mark.slow
def test_pft_on_mp149_moves_nequix_toward_dft(tmp_path):
    """Issue 6: fine-tuning nequix-mp-1 on Si mp-149 lowers its Hessian MAE and moves S, F, C_V toward DFT.

    A foundation model on one structure wants a small step: at 1e-5, 12 Adam steps move S
    41.02 -> 39.37 J/K/mol (DFT 39.33), F, C_V and ω_max monotonically toward DFT and the
    Hessian MAE 0.101 -> 0.079 eV/Å²; at 1e-4, 6 steps already overshoot S (about 37).
    """
    from conftest import shared_file
    from phonon_eval.phonons import PhononSettings, evaluate_material

    from finetune.data import phonon_examples

    record = pe.read_record(shared_file("data/mdr/mp-149.yaml"))
    start = pe.load_potential(shared_file("models/nequix-mp-1.nqx"))
    examples = phonon_examples([record], "symmetry")
    cfg = TrainConfig(epochs=6, batch_size=1, learning_rate=1e-5, schedule="constant", ema_decay=0.0, cotrain_ratio=0)
    trainer = Trainer(start, cfg, examples, examples)
    before = trainer.validate()["val_hessian_mae"]
    for _ in range(cfg.epochs):
        trainer.train_epoch()
    after = trainer.validate()["val_hessian_mae"]
    assert after < before
    settings = PhononSettings(temperatures=(0.0, 300.0), band_points=11)
    row0 = evaluate_material(start, record, settings)
    row1 = evaluate_material(trainer.ema, record, settings)
    for key in ("entropy", "free_energy", "heat_capacity"):
        assert abs(row1[key][1] - row1[key + "_ref"][1]) < abs(row0[key][1] - row0[key + "_ref"][1]), key

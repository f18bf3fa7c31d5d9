"""Data-parallel fine-tuning (`devices`): one device's numbers, the batch really split, clear errors.

Two devices need XLA_FLAGS before JAX starts, so the comparison runs in a subprocess with two
host CPU devices; it prints its measurements as JSON and the assertions are made here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from ase.build import bulk
from typer.testing import CliRunner

import phonon_eval as pe
from cli.finetune import app
from conftest import REPO
from finetune.data import Example
from finetune.trainer import TrainConfig, Trainer

SCRIPT = r"""
import json
import sys

import equinox as eqx
import jax
import numpy as np

import finetune.trainer as trainer_module
import phonon_eval as pe
from cli.eval import BUILTIN_DATASET
from finetune.data import phonon_examples
from finetune.trainer import TrainConfig, Trainer
from phonon_eval.datasets import Dataset

assert jax.device_count() == 2, jax.devices()
arch = pe.NequixConfig(atomic_numbers=(29, 79), cutoff=3.2, hidden_irreps="4x0e + 2x1o", lmax=1,
                       n_layers=1, radial_basis_size=6, radial_mlp_size=16, avg_n_neighbors=12.0)
model = pe.Nequix(arch, key=jax.random.key(0))
start = pe.Potential(model=model, atomic_numbers=arch.atomic_numbers, cutoff=arch.cutoff)
data = Dataset(BUILTIN_DATASET)
# three structures of one shape in batches of 2: every other batch is half padding, which on two
# devices leaves one device without a real structure (the mean must still be the global one)
examples = phonon_examples([data[i] for i in ("Cu-fcc", "Au-fcc", "Cu3Au-L12")])
cfg = TrainConfig(epochs=2, batch_size=2, learning_rate=1e-3, cotrain_ratio=0)

compiles = []


def on_event(event, secs, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        compiles.append(event)


jax.monitoring.register_event_duration_secs_listener(on_event)
placed = []
real_step = trainer_module._step


def spy(potential, opt_state, ema, batch, *args):
    leaf = batch.positions
    spec = str(getattr(leaf.sharding, "spec", None))
    placed.append([spec, len(leaf.sharding.device_set), [s.data.shape[0] for s in leaf.addressable_shards]])
    return real_step(potential, opt_state, ema, batch, *args)


trainer_module._step = spy


def flat(tree):
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return np.concatenate([np.ravel(x) for x in leaves]).tolist()


def train(devices, epochs, state_in=None, state_out=None):
    tr = Trainer(start, cfg, examples, val=examples[:1], devices=devices)
    assert len(tr.train.groups) == 1
    if state_in:
        tr.load_state(state_in)
    placed.clear()
    out = {"loss": [], "params": [], "compiles": []}

    def on_step(stats):
        out["loss"].append(stats["loss"])
        out["params"].append(flat(tr.potential))
        out["compiles"].append(len(compiles))

    for _ in range(epochs):
        tr.train_epoch(on_step)
    if state_out:
        tr.save_state(state_out)
    leaf = jax.tree.leaves(eqx.filter(tr.potential, eqx.is_inexact_array))[0]
    out.update(placed=list(placed), ema=flat(tr.ema), val=tr.validate()["val_hessian_mae"],
               param_devices=len(leaf.sharding.device_set),
               param_spec=str(getattr(leaf.sharding, "spec", None)))
    return out


state = sys.argv[1]
one = train(1, 2)
two = train(2, 2)
one_epoch = train(1, 1, state_out=state)
resumed = train(2, 1, state_in=state)  # a state saved on one device continues on two
print(json.dumps({"one": one, "two": two, "resumed": resumed}))
"""


@pytest.fixture(scope="module")
def two_device_runs(tmp_path_factory):
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    state = tmp_path_factory.mktemp("sharding") / "s.state"
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(state)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_batch_is_split_over_two_devices_and_weights_replicated(two_device_runs):
    one, two, resumed = two_device_runs["one"], two_device_runs["two"], two_device_runs["resumed"]
    assert len(two["placed"]) == 4
    for spec, n_devices, shard_rows in two["placed"] + resumed["placed"]:
        assert (spec, n_devices, shard_rows) == (str(jax.sharding.PartitionSpec("batch")), 2, [1, 1])
    assert all(n_devices == 1 for _, n_devices, _ in one["placed"])
    assert (two["param_devices"], two["param_spec"]) == (2, str(jax.sharding.PartitionSpec()))
    assert resumed["param_devices"] == 2  # load_state replicates what it reads


def test_no_recompilation_after_the_first_step(two_device_runs):
    for name in ("one", "two", "resumed"):
        compiles = two_device_runs[name]["compiles"]
        assert compiles[-1] == compiles[0], (name, compiles)


def test_two_devices_give_the_one_device_numbers(two_device_runs):
    """One step, then four (two epochs, with padded batches): losses, parameters, EMA, validation."""
    one, two, resumed = two_device_runs["one"], two_device_runs["two"], two_device_runs["resumed"]
    # observed: losses agree to 1.3e-7 relative, parameters to 3e-8 absolute and the EMA to 6e-8
    # (float32 summation order); parameters are O(1)
    np.testing.assert_allclose(two["loss"][0], one["loss"][0], rtol=1e-5)
    np.testing.assert_allclose(two["params"][0], one["params"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(two["params"][-1], one["params"][-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["ema"], one["ema"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["val"], one["val"], rtol=1e-5)
    np.testing.assert_allclose(resumed["loss"], one["loss"][2:], rtol=1e-5)
    np.testing.assert_allclose(resumed["params"][-1], one["params"][-1], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    arch = pe.NequixConfig(atomic_numbers=(29,), cutoff=3.0, hidden_irreps="4x0e", lmax=1, n_layers=1,
                           radial_basis_size=4, radial_mlp_size=8, avg_n_neighbors=12.0)
    model = pe.Nequix(arch, key=jax.random.key(0))
    potential = pe.Potential(model=model, atomic_numbers=arch.atomic_numbers, cutoff=arch.cutoff)
    return potential, [Example("Cu", bulk("Cu", "fcc", a=3.61), 0.0, np.zeros((1, 3)), None)]


def test_devices_errors_name_the_setting(tiny):
    potential, frames = tiny
    too_many = jax.device_count() + 1
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        Trainer(potential, TrainConfig(cotrain_batch_size=too_many), [], cotrain=frames,
                devices=too_many)
    with pytest.raises(ValueError, match="^cotrain_batch_size 3 is not divisible by devices 2"):
        Trainer(potential, TrainConfig(cotrain_batch_size=3), [], cotrain=frames, devices=2)
    with pytest.raises(ValueError, match="^batch_size 3 is not divisible by devices 2"):
        Trainer(potential, TrainConfig(batch_size=3), frames, devices=2)
    # an unused batch size need not divide
    with pytest.raises(ValueError, match="JAX sees only"):
        Trainer(potential, TrainConfig(batch_size=3, cotrain_batch_size=too_many), [], cotrain=frames,
                devices=too_many)


def test_cli_devices_option(tmp_path):
    runner = CliRunner()
    assert "--devices" in runner.invoke(app, ["--help"]).output
    too_many = jax.device_count() + 1
    base = ["--model", str(tmp_path / "m.ckpt"), "--dataset", str(tmp_path),
            "--out", str(tmp_path / "x.ckpt"), "--no-progress"]
    # refused before any data is read (the paths do not exist)
    res = runner.invoke(app, base + ["--devices", str(too_many), "--batch-size", str(too_many)])
    assert res.exit_code == 1 and "xla_force_host_platform_device_count" in res.output, res.output
    res = runner.invoke(app, base + ["--devices", "2", "--batch-size", "3"])
    assert res.exit_code == 1 and "batch_size 3 is not divisible by devices 2" in res.output, res.output

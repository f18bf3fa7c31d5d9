"""PFT at scale: compact force constants, streamed upstream frames, exact resume on the same data.

Each test compares against the path it replaces: the full (N, N, 3, 3) force constants, the
in-memory frames, an uninterrupted run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import ase.db
import ase.io
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

import phonon_eval as pe
from cli.eval import BUILTIN_DATASET
from conftest import shared_file
from finetune import frames as frames_module
from finetune.array_cache import ArrayCache
from finetune.data import Batcher, Example, dataset_examples, phonon_examples, read_frames, upstream_examples
from finetune.force_constants import compact_force_constants
from finetune.frames import INDEX_SUFFIX, FrameSource, _Shard
from finetune.loss import LossWeights, batch_loss
from finetune.trainer import TrainConfig, Trainer
from phonon_eval.datasets import Dataset
from phonon_eval.records import read_record

TINY = dict(hidden_irreps="4x0e + 2x1o", lmax=1, n_layers=1, radial_basis_size=4, radial_mlp_size=8, avg_n_neighbors=20.0)


def _potential(numbers=(29, 79), seed=0, cutoff=3.2):
    config = pe.NequixConfig(atomic_numbers=tuple(numbers), cutoff=cutoff, **TINY)
    return pe.Potential(model=pe.Nequix(config, key=jax.random.key(seed)), atomic_numbers=config.atomic_numbers, cutoff=cutoff)


def _records():
    data = Dataset(BUILTIN_DATASET)
    return [data[i] for i in data.ids] + [read_record(shared_file("data/mdr/mp-149.yaml"))]


# -- compact force constants --------------------------------------------------------------------


def _same_example(a: Example, b: Example) -> None:
    assert a.id == b.id and a.energy == b.energy and a.digest() == b.digest()
    for get in (lambda e: e.atoms.numbers, lambda e: e.atoms.positions, lambda e: e.atoms.cell.array,
                lambda e: e.atoms.pbc, lambda e: e.atoms.get_masses(), lambda e: e.forces, lambda e: e.stress):
        np.testing.assert_array_equal(get(a), get(b))
    for name in ("fc", "primitive", "translation", "permutations"):
        x, y = getattr(a.force_constants, name), getattr(b.force_constants, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    for name in ("atoms", "directions", "multiplicity", "labels"):
        np.testing.assert_array_equal(getattr(a.classes, name), getattr(b.classes, name))
    for name in ("atoms", "directions", "probabilities", "weights"):
        np.testing.assert_array_equal(getattr(a.sampler, name), getattr(b.sampler, name))


def test_cached_phonon_examples_are_the_fresh_ones_and_a_changed_file_is_made_again(tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(BUILTIN_DATASET, folder)
    data = Dataset(folder)
    fresh = phonon_examples(data.records(), "symmetry")
    cache = ArrayCache(tmp_path / "cache")
    made = dataset_examples(data, data.ids, "symmetry", cache=cache)
    assert (cache.hits, cache.misses) == (0, len(data))
    cache.hits = cache.misses = 0
    loaded = dataset_examples(data, data.ids, "symmetry", cache=cache)
    assert (cache.hits, cache.misses) == (len(data), 0)
    for a, b, c in zip(fresh, made, loaded, strict=True):
        _same_example(a, b)
        _same_example(a, c)
    # another sampler is made from the same entry; another dtype is another entry
    cycle = dataset_examples(data, ["CuAu-L10"], "cycle", cache=cache)[0]
    _same_example(phonon_examples([data["CuAu-L10"]], "cycle")[0], cycle)
    cache.hits = cache.misses = 0
    dataset_examples(data, ["CuAu-L10"], dtype=np.float64, cache=cache)
    assert cache.misses == 1
    # a file whose bytes change gives the example of its new content (here: Ag's bytes, Ag's entry)
    shutil.copyfile(data.path("Ag-fcc"), data.path("Cu-fcc"))
    (changed,) = dataset_examples(data, ["Cu-fcc"], "symmetry", cache=cache)
    _same_example(phonon_examples([data["Cu-fcc"]], "symmetry")[0], changed)
    assert changed.atoms.get_chemical_symbols()[0] == "Ag"


def test_a_cache_that_cannot_be_written_costs_only_time(tmp_path):
    data = Dataset(BUILTIN_DATASET)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = ArrayCache(blocker / "cache")
    (ex,) = dataset_examples(data, ["Cu-fcc"], cache=cache)
    _same_example(phonon_examples([data["Cu-fcc"]])[0], ex)
    assert not (blocker / "cache").exists()



def test_compact_columns_are_the_full_columns():
    """Every (atom, direction) column read from the compact form is the full form's column:
    to rounding in float64, to float32 rounding in float32; and it is far smaller."""
    for record in _records():
        full = record.full_force_constants()
        c64, c32 = compact_force_constants(record, np.float64), compact_force_constants(record)
        assert c32.fc.dtype == np.float32 and c64.fc.shape == (record.n_primitive_atoms, len(full), 3, 3)
        scale = np.abs(full).max()
        for atom in range(len(full)):
            for direction in range(3):
                ref = full[:, atom, :, direction]
                np.testing.assert_allclose(c64.column(atom, direction), ref, rtol=0, atol=1e-13 * scale)
                np.testing.assert_allclose(c32.column(atom, direction), ref, rtol=0, atol=1e-7 * scale)
        np.testing.assert_allclose(c64.full(), full, rtol=0, atol=1e-13 * scale)
        assert c32.nbytes < full.nbytes / 10, record.id


def test_training_from_compact_force_constants_equals_training_from_full_ones():
    """Loss and gradients of one batch: compact (what phonon_examples keeps) vs full arrays."""
    data = Dataset(BUILTIN_DATASET)
    records = [data[i] for i in ("CuAu-L10", "Cu3Au-L12")]
    compact = phonon_examples(records, "symmetry")
    full = [
        Example(ex.id, ex.atoms, ex.energy, ex.forces, ex.stress, r.full_force_constants(), ex.sampler, ex.classes)
        for ex, r in zip(compact, records)
    ]
    student = _potential()
    weights = jnp.asarray(LossWeights(0.0, 1.0, 1.0, 1.0))
    value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(lambda p, b: batch_loss(p, b, weights)[0]))
    for columns in [[(0, 0), (5, 2)], [(17, 1), (31, 0)]]:
        out = []
        for examples in (full, compact):
            batch = Batcher(student, examples, batch_size=2).make([0, 1], columns=columns)
            out.append(value_and_grad(student, batch))
        (loss_full, g_full), (loss_compact, g_compact) = out
        assert float(loss_compact) == pytest.approx(float(loss_full), rel=1e-6)
        for a, b in zip(jax.tree.leaves(eqx.filter(g_full, eqx.is_inexact_array)), jax.tree.leaves(eqx.filter(g_compact, eqx.is_inexact_array))):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-7 * float(np.abs(a).max() + 1e-30))


# -- streamed upstream frames -------------------------------------------------------------------


def _frames(n, seed=0):
    """EMT frames of 4, 8 and 16 atoms (several padded shapes), rattled, with stress."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = bulk(["Cu", "Au"][k % 2], "fcc", a=[3.61, 4.08][k % 2], cubic=True) * [(1, 1, 1), (2, 1, 1), (2, 2, 1)][k % 3]
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        a.calc = EMT()
        a.get_potential_energy(), a.get_stress()
        out.append(a)
    return out


def _write_db(path, frames):
    with ase.db.connect(path) as db:
        for a in frames:
            db.write(a)
    return path


def _same_batches(potential, in_memory, streamed, seed=7):
    """Both batchers give the same groups, the same shuffled epoch and the same batch arrays."""
    assert {k: v.tolist() for k, v in in_memory.groups.items()} == {k: v.tolist() for k, v in streamed.groups.items()}
    assert len(in_memory.groups) > 1
    epochs = [list(b.epoch(np.random.default_rng(seed))) for b in (in_memory, streamed)]
    assert epochs[0] == epochs[1]
    for indices in epochs[0]:
        a, b = in_memory.make(indices), streamed.make(indices)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_streamed_frames_give_the_in_memory_batches(tmp_path):
    """An ASE database, one extxyz file, and two extxyz shards by glob: the batches of the list
    that read_frames + upstream_examples make, for the same seed."""
    potential = _potential()
    frames = _frames(14)
    db = _write_db(tmp_path / "frames.db", frames)
    xyz = tmp_path / "frames.extxyz"
    ase.io.write(xyz, frames)
    xz = tmp_path / "frames.extxyz.xz"
    ase.io.write(xz, frames)
    for path in (db, xyz, xz):
        memory = Batcher(potential, upstream_examples(read_frames(path), str(path)), 3)
        source = FrameSource(path, potential.cutoff)
        assert len(source) == 14 and source[5].id == f"{path}#5"
        assert source.shards[0].kind == ("db" if path == db else "extxyz")  # streamed, not read whole
        _same_batches(potential, memory, Batcher(potential, source, 3))
    copy = source.shards[0].text  # the compressed file's, decompressed once into the cache
    assert copy.parent == Path(os.environ["PFT_CACHE_DIR"]) / "frames" and copy.read_bytes() == xyz.read_bytes()
    shards = tmp_path / "shards"
    shards.mkdir()
    ase.io.write(shards / "a.extxyz", frames[:9])
    ase.io.write(shards / "b.extxyz", frames[9:])
    memory = upstream_examples(read_frames(shards / "a.extxyz"), str(shards / "a.extxyz"))
    memory += upstream_examples(read_frames(shards / "b.extxyz"), str(shards / "b.extxyz"))
    source = FrameSource(str(shards / "*.extxyz"), potential.cutoff)
    assert [s.name for s in source.shards] == [str(shards / "a.extxyz"), str(shards / "b.extxyz")]
    assert [ex.id for ex in memory] == [source[i].id for i in range(len(source))]
    _same_batches(potential, Batcher(potential, memory, 3), Batcher(potential, source, 3))


def test_more_database_shards_than_held_connections_give_the_in_memory_batches(tmp_path, monkeypatch):
    """Five database shards with two connections held: the least recently read are closed, and
    the batches are still those of the frames read into memory."""
    monkeypatch.setattr(frames_module, "OPEN_DATABASES", 2)
    potential, frames = _potential(), _frames(15)
    memory = []
    for k in range(5):
        path = _write_db(tmp_path / f"s{k}.db", frames[3 * k: 3 * k + 3])
        memory += upstream_examples(read_frames(path), str(path))
    source = FrameSource(str(tmp_path / "s*.db"), potential.cutoff)
    _same_batches(potential, Batcher(potential, memory, 3), Batcher(potential, source, 3))
    held = frames_module._databases.open
    assert 0 < len(held) <= 2 and all(db.connection is not None for db in held.values())


def test_the_frame_index_is_cached_beside_the_file_and_remade_when_it_changes(tmp_path, monkeypatch):
    xyz = tmp_path / "frames.extxyz"
    ase.io.write(xyz, _frames(6))
    first = FrameSource(xyz, 3.2)
    index = xyz.with_name(xyz.name + INDEX_SUFFIX)
    assert index.is_file()
    made = []
    real = _Shard._make_index
    monkeypatch.setattr(_Shard, "_make_index", lambda self, cutoff: made.append(cutoff) or real(self, cutoff))
    again = FrameSource(xyz, 3.2)
    assert made == []  # read from the sidecar
    np.testing.assert_array_equal(again.sizes(3.2)[1], first.sizes(3.2)[1])
    FrameSource(xyz, 4.0)  # edge counts depend on the cutoff
    assert made == [4.0]
    ase.io.write(xyz, _frames(7), append=False)
    os.utime(xyz, ns=(1, 1))
    assert len(FrameSource(xyz, 4.0)) == 7 and made == [4.0, 4.0]
    with pytest.raises(ValueError, match="indexed at cutoff 4.0"):
        FrameSource(xyz, 4.0).sizes(3.2)


def test_a_frame_without_forces_is_refused_naming_the_file_and_frame(tmp_path):
    frames = _frames(3)
    frames[1].calc = None
    xyz = tmp_path / "bad.extxyz"
    ase.io.write(xyz, frames)
    with pytest.raises(ValueError, match=r"bad\.extxyz: frame 1 has no energy or forces"):
        FrameSource(xyz, 3.2)
    with pytest.raises(FileNotFoundError, match="no upstream frame files match"):
        FrameSource(str(tmp_path / "none-*.db"), 3.2)


# -- exact resume on the same data --------------------------------------------------------------


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]


def test_resume_with_the_cycle_sampler_continues_exactly(tmp_path):
    """Interrupted after epoch 1 and resumed equals straight through, bit for bit: the cycling
    samplers' places are in the state (without them the resumed run draws other columns)."""
    data = Dataset(BUILTIN_DATASET)
    records = [data[i] for i in ("CuAu-L10", "Cu3Au-L12", "Au3Cu-L12")]  # 3 or 4 column classes each
    frames = upstream_examples(_frames(4), "emt")
    cfg = TrainConfig(epochs=2, batch_size=2, cotrain_batch_size=2, cotrain_ratio=1, learning_rate=1e-2, sampler="cycle", seed=1)
    start = _potential(seed=3)

    def trainer():
        return Trainer(start, cfg, phonon_examples(records, "cycle"), cotrain=frames)

    straight = trainer()
    straight.train_epoch(), straight.train_epoch()
    first = trainer()
    first.train_epoch()
    assert first._sampler_states()  # mid-cycle: the test would pass without the sampler states otherwise
    first.save_state(tmp_path / "s.state")
    second = trainer()
    second.load_state(tmp_path / "s.state")
    second.train_epoch()
    assert straight.step == second.step
    for a, b in zip(_leaves(straight.ema), _leaves(second.ema), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [ex.sampler.state for ex in straight.train.examples] == [ex.sampler.state for ex in second.train.examples]


def test_resuming_on_other_data_is_refused_naming_what_differs(tmp_path):
    data = Dataset(BUILTIN_DATASET)
    cu, au, cuau = (phonon_examples([data[i]]) for i in ("Cu-fcc", "Au-fcc", "CuAu-L10"))
    xyz = tmp_path / "up.extxyz"
    ase.io.write(xyz, _frames(4))
    cfg = TrainConfig(epochs=1, batch_size=2, cotrain_batch_size=2)
    start = _potential()
    state = tmp_path / "s.state"
    Trainer(start, cfg, cu + au, cotrain=FrameSource(xyz, 3.2), data={"split": "train"}).save_state(state)
    Trainer(start, cfg, cu + au, cotrain=FrameSource(xyz, 3.2), data={"split": "train"}).load_state(state)  # same data
    with pytest.raises(ValueError, match=r"train: missing \['Au-fcc'\], new \['CuAu-L10'\]"):
        Trainer(start, cfg, cu + cuau, cotrain=FrameSource(xyz, 3.2), data={"split": "train"}).load_state(state)
    with pytest.raises(ValueError, match=r"split: 'train' then, 'val' now"):
        Trainer(start, cfg, cu + au, cotrain=FrameSource(xyz, 3.2), data={"split": "val"}).load_state(state)
    moved = Example(*[getattr(au[0], f) for f in ("id", "atoms", "energy", "forces", "stress")], cu[0].force_constants, au[0].sampler, au[0].classes)
    with pytest.raises(ValueError, match=r"train: changed \['Au-fcc'\]"):
        Trainer(start, cfg, cu + [moved], cotrain=FrameSource(xyz, 3.2), data={"split": "train"}).load_state(state)
    ase.io.write(xyz, _frames(5))
    with pytest.raises(ValueError, match=rf"cotrain: changed {re.escape(str(xyz.resolve()))} \(size or mtime\)"):
        Trainer(start, cfg, cu + au, cotrain=FrameSource(xyz, 3.2), data={"split": "train"}).load_state(state)


def test_cli_cotrains_on_several_streamed_files_and_refuses_to_resume_on_others(tmp_path):
    """--cotrain repeated and as a quoted glob (a database and extxyz shards); --resume with one
    file left out is refused, naming it."""
    from typer.testing import CliRunner

    from cli.finetune import app

    frames = _frames(12, seed=4)
    _write_db(tmp_path / "a.db", frames[:6])
    (tmp_path / "shards").mkdir()
    ase.io.write(tmp_path / "shards" / "b1.extxyz", frames[6:9])
    ase.io.write(tmp_path / "shards" / "b2.extxyz", frames[9:])
    ase.io.write(tmp_path / "val.extxyz", _frames(3, seed=5))
    arch = tmp_path / "arch.toml"
    arch.write_text('cutoff = 3.2\nhidden_irreps = "4x0e + 2x1o"\nlmax = 1\nn_layers = 1\nradial_basis_size = 4\nradial_mlp_size = 8\n')
    out = tmp_path / "m.ckpt"
    args = ["--init", str(arch), "--cotrain", str(tmp_path / "a.db"), "--cotrain", str(tmp_path / "shards" / "*.extxyz"),
            "--cotrain-val", str(tmp_path / "val.extxyz"), "--epochs", "1", "--out", str(out), "--no-progress"]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "shards" / ("b2.extxyz" + INDEX_SUFFIX)).is_file() and (tmp_path / ("a.db" + INDEX_SUFFIX)).is_file()
    every = Batcher(_potential(), FrameSource([tmp_path / "a.db", str(tmp_path / "shards" / "*.extxyz")], 3.2), 4)
    assert sum(len(m) for m in every.groups.values()) == 12
    steps = sum(-(-len(m) // 4) for m in every.groups.values())
    assert pe.checkpoint.read_header(out)["provenance"]["step"] == steps  # all three files, one epoch
    res = runner.invoke(app, args[:4] + args[6:] + ["--resume"])
    assert res.exit_code == 1
    assert "cotrain: missing" in res.output and "b1.extxyz" in res.output

"""PFT data at scale: peak memory and data-loading time per step as the training data grows.

Synthetic data made here: copies of the built-in EMT records (data/emt) under their own ids,
written with `phonon_eval.records.write_record` to a temporary dataset folder, and rattled EMT
frames (8-atom fcc cells of the same seven elements) in ASE databases of 1,000 frames each; a
size of F frames co-trains on the first F / 1,000 of them (`--cotrain` with several files).
Past `--distinct-shards` databases the files repeat the first ones byte for byte (EMT and
ase.db take 5 ms a frame to make): the reading, indexing and memory per frame are the same.
The phonon examples (supercell, symmetry classes, compact force constants) of the largest record
set are made without a cache, timed per record, then loaded from a warm example cache (what
every later run does; the copies share their bytes, so it holds 16 entries), timed again. Each size is measured in a fresh subprocess: it loads the phonon
examples from that cache and builds the streamed frame source, then trains `--steps` steps (one phonon step, four
upstream steps, as in the public configuration) with a small Nequix, and reports its peak RSS
(`resource.getrusage`) and the medians per step of: the time to make a batch (reading frames,
building graphs, on the loader thread), the time the step waited for it, and the step itself.
The frame indexes are made once, before the measurements (their cost per frame is printed).
Ratios are largest / smallest size, measured in this one run.

    python benchmarks/scale_training.py                                  # 100 and 1,000 records; 1e3, 1e4 frames
    python benchmarks/scale_training.py --records 100 1000 10000 --frames 10000 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
REPO = _HERE.parent
SHARD = 1000  # frames per database file
ELEMENTS = ("Ag", "Al", "Au", "Cu", "Ni", "Pd", "Pt")


def make_records(folder: Path, n: int) -> list[str]:
    """`n` records in `folder`: copies of the built-in EMT records, each under its own id."""
    from phonon_eval.datasets import Dataset
    from phonon_eval.records import write_record

    folder.mkdir(parents=True, exist_ok=True)
    base = Dataset(REPO / "data" / "emt")
    written = {}
    for material in base.ids:  # phonopy's yaml writer once per material; copies are the same bytes
        written[material] = write_record(base[material], folder / "_base" / f"{material}.yaml")
    ids = []
    for k in range(n):
        material = base.ids[k % len(base.ids)]
        ids.append(f"{material}-{k:05d}")
        target = folder / f"{ids[-1]}.yaml"
        if not target.exists():
            shutil.copyfile(written[material], target)
    shutil.rmtree(folder / "_base")
    return ids


def make_frames(path: Path, n: int, seed: int) -> None:
    """`n` rattled, strained 8-atom fcc cells with EMT energy, forces and stress, in an ASE database."""
    import ase.db
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    calc = EMT()
    tmp = path.with_suffix(".tmp.db")
    tmp.unlink(missing_ok=True)
    with ase.db.connect(tmp) as db:
        for k in range(n):
            atoms = bulk(ELEMENTS[k % len(ELEMENTS)], "fcc", cubic=True) * (2, 1, 1)
            atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.01, (3, 3))), scale_atoms=True)
            atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
            atoms.calc = calc
            atoms.get_potential_energy(), atoms.get_stress()
            db.write(atoms)
    tmp.rename(path)


def child(dataset: Path, split: str, cache: Path, shards: list[str], steps: int) -> None:
    """One measurement, in its own process: prints a JSON line."""
    import resource

    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # `finetune` is the package
    import jax
    import numpy as np

    import phonon_eval as pe
    from finetune.array_cache import ArrayCache
    from finetune.data import dataset_examples
    from finetune.frames import FrameSource
    from finetune.trainer import TrainConfig, Trainer

    def rss_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    config = pe.NequixConfig(atomic_numbers=(13, 28, 29, 46, 47, 78, 79), cutoff=4.0, hidden_irreps="8x0e + 4x1o", lmax=1,
                             n_layers=2, radial_basis_size=6, radial_mlp_size=16, avg_n_neighbors=30.0)
    potential = pe.Potential(model=pe.Nequix(config, key=jax.random.key(0)), atomic_numbers=config.atomic_numbers, cutoff=config.cutoff)
    base = rss_mb()
    t = time.perf_counter()
    data = pe.Dataset(dataset)
    train = dataset_examples(data, data.split(split), "symmetry", cache=ArrayCache(cache))
    phonon_s = time.perf_counter() - t
    t = time.perf_counter()
    frames = FrameSource(shards, potential.cutoff)
    frames_s = time.perf_counter() - t
    trainer = Trainer(potential, TrainConfig(epochs=1, sampler="symmetry"), train, cotrain=frames)
    after_data = rss_mb()
    per_step = []

    def on_step(_):
        per_step.append(dict(trainer.timings))

    t = time.perf_counter()
    trainer.train_epoch(on_step=on_step, max_steps=steps)
    wall = time.perf_counter() - t
    rows = [{k: b[k] - a[k] for k in ("load", "wait", "step")} for a, b in zip([dict.fromkeys(per_step[0], 0.0)] + per_step, per_step)]
    later = rows[len(rows) // 4 :]  # past the first compilations (the median is robust to the rest)
    med = {k: float(np.median([r[k] for r in later])) for k in ("load", "wait", "step")}
    fc_mb = sum(ex.force_constants.nbytes for ex in train) / 1e6
    print(json.dumps({
        "records": len(train), "frames": len(frames), "rss_start_mb": base, "rss_data_mb": after_data,
        "peak_rss_mb": rss_mb(), "phonon_setup_s": phonon_s, "frames_setup_s": frames_s, "fc_mb": fc_mb,
        "load_ms": 1e3 * med["load"], "wait_ms": 1e3 * med["wait"], "step_ms": 1e3 * med["step"],
        "steps": len(rows), "wall_s": wall,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[100, 1000], help="phonon record counts")
    parser.add_argument("--frames", type=int, nargs="+", default=[1000, 10000], help="upstream frame counts (multiples of 1,000)")
    parser.add_argument("--steps", type=int, default=40, help="training steps measured per size")
    parser.add_argument("--distinct-shards", type=int, default=10, help="databases of their own EMT frames; the rest repeat them")
    parser.add_argument("--workdir", type=Path, default=None, help="where the synthetic data goes (default: a temporary folder)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dataset, split, cache, steps, *shards = args.child
        return child(Path(dataset), split, Path(cache), shards, int(steps))

    work = args.workdir or Path(tempfile.mkdtemp(prefix="pft-scale-"))
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(REPO))
    records, frames = sorted(args.records), sorted(args.frames)
    t = time.perf_counter()
    ids = make_records(work / "records", records[-1])
    (work / "records" / "split.json").write_text(json.dumps({f"n{n}": ids[:n] for n in records}))
    print(f"{records[-1]} records written in {time.perf_counter() - t:.1f} s ({work / 'records'})")
    n_shards = -(-frames[-1] // SHARD)
    shards = [work / "frames" / f"shard-{k:04d}.db" for k in range(n_shards)]
    (work / "frames").mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for k, path in enumerate(shards):
        if path.exists():
            continue
        if k < args.distinct_shards:
            make_frames(path, SHARD, seed=k)
        else:  # EMT at 5 ms a frame would take longer than the measurement: repeat the shards
            shutil.copyfile(shards[k % args.distinct_shards], path)
    print(f"{n_shards * SHARD} frames in {n_shards} databases ({min(n_shards, args.distinct_shards)} distinct) written in {time.perf_counter() - t:.1f} s")
    from finetune.array_cache import ArrayCache
    from finetune.data import dataset_examples
    from finetune.frames import FrameSource
    from phonon_eval.datasets import Dataset

    cache = work / "example-cache"
    shutil.rmtree(cache, ignore_errors=True)
    data = Dataset(work / "records")
    per_record = []
    # made without a cache (copies share their bytes, so a cold cache would make only 16), then
    # loaded from a warm one
    for store in (None, ArrayCache(cache)):
        if store is not None:
            dataset_examples(data, ids, "symmetry", cache=store)
        t = time.perf_counter()
        dataset_examples(data, ids, "symmetry", cache=store)
        per_record.append(1e3 * (time.perf_counter() - t) / len(ids))
    print(f"phonon examples of {len(ids)} records: made {per_record[0]:.1f} ms per record, loaded from the cache "
          f"{per_record[1]:.1f} ms ({per_record[0] / per_record[1]:.0f}x)")

    t = time.perf_counter()
    FrameSource(shards, 4.0)  # the one pass of each file, cached beside it
    print(f"frame index: {1e3 * (time.perf_counter() - t) / (n_shards * SHARD):.2f} ms per frame, made once")

    sizes = list(zip(records + [records[-1]] * (len(frames) - len(records)), frames + [frames[-1]] * (len(records) - len(frames))))
    results = []
    for n_rec, n_frames in sizes:
        argv = [sys.executable, __file__, "--child", str(work / "records"), f"n{n_rec}", str(cache), str(args.steps)]
        argv += [str(p) for p in shards[: -(-n_frames // SHARD)]]
        out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        if out.returncode:
            sys.exit(out.stderr)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{r['records']:>6} records {r['frames']:>8} frames: peak RSS {r['peak_rss_mb']:7.0f} MB "
            f"(after data {r['rss_data_mb']:.0f} MB, compact fc {r['fc_mb']:.1f} MB); per step: make batch "
            f"{r['load_ms']:6.1f} ms, waited {r['wait_ms']:5.2f} ms, step {r['step_ms']:6.1f} ms; setup: records "
            f"{r['phonon_setup_s']:.1f} s, frames {r['frames_setup_s']:.2f} s",
            flush=True,
        )
    small, large = results[0], results[-1]
    print(
        f"largest / smallest: peak RSS {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}, make batch "
        f"{large['load_ms'] / small['load_ms']:.2f}, step {large['step_ms'] / small['step_ms']:.2f} "
        f"(data {large['records'] / small['records']:.0f}x records, {large['frames'] / small['frames']:.0f}x frames)"
    )
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

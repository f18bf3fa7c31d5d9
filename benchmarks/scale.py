"""Scale: evaluation time per material and peak memory as the number of materials grows.

Synthetic workloads made here: `--sizes` copies of the built-in EMT Cu record, each with its own
id, in a temporary dataset folder, evaluated with the demo potential (phonons; cheap settings,
since what is measured is what grows with the number of materials: results, I/O, the table).
Each size runs in a fresh process, which reports its wall time per material and its peak RSS;
the table prints both and the ratio of the largest size to the smallest (goal: peak RSS at most
1.5x, time per material flat within noise). The training side (phonon records and upstream
frames) is `benchmarks/scale_training.py`.

    python benchmarks/scale.py [--sizes 10,100,1000] [--model data/models/demo.ckpt]
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

from _common import REPO, peak_rss_mb

SETTINGS = {"relax": False, "fc_method": "auto", "mesh": (8, 8, 8), "band_points": 11}


def make_dataset(folder: Path, n: int) -> list[str]:
    """n copies of data/emt/Cu-fcc, ids cu00000 ..., all in the test split."""
    folder.mkdir(parents=True, exist_ok=True)
    source = REPO / "data" / "emt" / "Cu-fcc.yaml.xz"
    ids = [f"cu{k:05d}" for k in range(n)]
    for material in ids:
        shutil.copyfile(source, folder / f"{material}.yaml.xz")
    (folder / "split.json").write_text(json.dumps({"test": ids}))
    return ids


def child(folder: Path, model: str, out: Path) -> None:
    """One evaluation in this (fresh) process; prints its measurements as JSON."""
    from phonon_eval.datasets import Dataset
    from phonon_eval.phonons import PhononSettings
    from phonon_eval.results import run_phonons

    data = Dataset(folder)
    ids = data.split("test")
    settings = PhononSettings.from_protocol("exact", **SETTINGS)
    t0 = time.perf_counter()
    summary = run_phonons(model, data, ids, settings, out, progress=False)
    summary.table()  # the table too: it is part of what a run costs at the end
    wall = time.perf_counter() - t0
    times = sum(summary.dataset[v].values for v in ("time_relax", "time_fc", "time_properties"))
    print(json.dumps({
        "n": len(ids), "n_ok": summary.n_ok, "wall": wall, "per_material": wall / len(ids),
        "steady": float(sorted(times)[len(times) // 2]), "rss_mb": peak_rss_mb(),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated numbers of materials")
    parser.add_argument("--model", default=str(REPO / "data" / "models" / "demo.ckpt"))
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.model, Path(args.child[1]))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / f"data-{n}"
            make_dataset(folder, n)
            done = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--child", str(folder), str(Path(tmp) / f"r{n}.nc")],
                capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{n:6d} materials: {r['wall']:8.1f} s, {r['per_material']:.3f} s/material "
                  f"(median evaluation {r['steady']:.3f} s), peak RSS {r['rss_mb']:.0f} MB", flush=True)
    first, last = rows[0], rows[-1]
    if last["n"] > first["n"]:
        marginal = (last["wall"] - first["wall"]) / (last["n"] - first["n"])
        print(f"marginal time per material between {first['n']} and {last['n']}: {marginal:.3f} s "
              f"(in the last run: {last['per_material']:.3f} s/material overall)")
    print(f"largest/smallest ({last['n']}/{first['n']}): peak RSS {last['rss_mb'] / first['rss_mb']:.2f}x "
          f"(goal <= 1.5x), time per material {last['per_material'] / first['per_material']:.2f}x "
          f"(start-up and compilation are in the smallest's share)")


if __name__ == "__main__":
    main()

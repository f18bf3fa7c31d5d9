"""Scale-out: the phonon evaluator in process vs on a local Dask cluster, and what that predicts.

Evaluates the same materials of the built-in EMT dataset (default: all 16) with `--model`
(default: the demo potential) twice, side by side in one run: (a) in this process, (b) on a
`dask.distributed` LocalCluster of `--workers` process workers (one core each on this machine).
Prints the wall times and their ratio a/b, the cluster's start-up time, and the per-material
overhead of the Dask path: (workers x b - a) / materials, the extra core-seconds each material
costs there (worker start-up, JAX import and compilation in every worker, transfers). Then one κ
material (`data/emt-kappa`, fcc Cu) in process for a κ per-material time, and an estimate of
the MDR phonon test split (1,000 materials) and the Matbench κ set (103) on 1, 8 and 64 workers
from the measured steady-state per-material times: start-up + compilation + ceil(M / W) x t.
The EMT materials are small (32-atom supercells); pass `--model` and `--dataset` for others.
`--repeat R` evaluates R copies of each material (own ids, in a temporary dataset): the shapes
are compiled once per process whatever R is, so a larger R shows the steady state that long
runs reach, where a short run is dominated by every worker compiling the same shapes.
`--compile-cache DIR` keeps the compiled programs in DIR for both sides (as `pft-eval` does by
default): run twice with the same DIR, and the second run measures both sides without compiling.

    python benchmarks/scale_out.py [--model data/models/demo.ckpt] [--workers 2] [--materials 16] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
from _common import REPO

import phonon_eval as pe
from phonon_eval.datasets import Dataset
from phonon_eval.fanout import Cluster
from phonon_eval.kappa import KappaMaterial, KappaSettings
from phonon_eval.kappa_results import run_kappa
from phonon_eval.phonons import PhononSettings
from phonon_eval.results import run_phonons


def per_material_seconds(ds: xr.Dataset) -> np.ndarray:
    """Each material's evaluation time from the results' own timing variables."""
    names = [v for v in ds.data_vars if str(v).startswith("time_")]
    return np.nansum([ds[v].values for v in names], axis=0)


def repeated(data: Dataset, ids: list[str], repeat: int, folder: Path) -> tuple[Dataset, list[str]]:
    """`repeat` copies of each record of `ids`, ids `<id>-<k>`, in `folder` (the originals when 1)."""
    if repeat == 1:
        return data, ids
    copies = []
    for k in range(repeat):
        for material in ids:
            source = data.path(material)
            copy = f"{material}-{k}"
            shutil.copyfile(source, folder / source.name.replace(material, copy, 1))
            copies.append(copy)
    (folder / "split.json").write_text(json.dumps({"test": copies}))
    return Dataset(folder), copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "data" / "models" / "demo.ckpt"))
    parser.add_argument("--dataset", default=str(REPO / "data" / "emt"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--materials", type=int, default=16, help="how many materials (at least 8 for the issue)")
    parser.add_argument("--repeat", type=int, default=1, help="copies of each material (own ids)")
    parser.add_argument("--no-kappa", action="store_true", help="skip the κ material and the estimates")
    parser.add_argument("--compile-cache", help="JAX's persistent compilation cache for both sides (default: none in "
                        "process, a folder of the run's own for the workers)")
    args = parser.parse_args()
    if args.compile_cache:
        from phonon_eval.compile_cache import enable_compile_cache

        enable_compile_cache(args.compile_cache)

    potential = pe.load_potential(args.model)
    settings = PhononSettings()
    with tempfile.TemporaryDirectory() as tmp:
        data = Dataset(args.dataset)
        data, ids = repeated(data, data.ids[: args.materials], args.repeat, Path(tmp))
        print(f"{len(ids)} materials ({args.repeat} copies of {len(ids) // args.repeat}) of {args.dataset}, model {args.model}")
        start = time.perf_counter()
        serial = run_phonons(potential, data, ids, settings, Path(tmp) / "a.nc", progress=False).dataset
        a = time.perf_counter() - start

        from distributed import Client, LocalCluster

        from phonon_eval.fanout import worker_environment

        start = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None, env=worker_environment(args.workers)) as lc, Client(lc):
            startup = time.perf_counter() - start
        start = time.perf_counter()
        cluster = Cluster(workers=args.workers)
        parallel = run_phonons(potential, data, ids, settings, Path(tmp) / "b.nc", cluster=cluster, progress=False).dataset
        b = time.perf_counter() - start

        if args.no_kappa:
            kappa_first = kappa_t = float("nan")
        else:
            kappa_first, kappa_t = kappa_times(potential, Path(tmp))

    report(args, ids, serial, parallel, a, b, startup, kappa_first, kappa_t)


def kappa_times(potential, tmp: Path) -> tuple[float, float]:
    """(first, second) wall time of κ of fcc Cu (Wigner, 19x19x19) in this process."""
    data = Dataset(REPO / "data" / "emt-kappa")
    settings = KappaSettings(mesh=(19, 19, 19))
    times = []
    for out in ("k1.nc", "k2.nc"):
        start = time.perf_counter()
        run_kappa(potential, lambda i: KappaMaterial.from_record(data[i]), data.ids, settings, tmp / out, progress=False)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def report(args, ids, serial, parallel, a: float, b: float, startup: float, kappa_first: float, kappa_t: float) -> None:
    ok = (serial["status"] == "ok").values
    same = all((parallel["status"] == serial["status"]).values)
    times = per_material_seconds(serial)
    steady = float(np.median(times[ok])) if ok.any() else float("nan")
    compile_s = max(0.0, a - float(times.sum())) + float(times[0] - steady)
    print(f"(a) in process:           {a:8.1f} s  ({len(ids)} materials, {int(ok.sum())} ok)")
    print(f"(b) {args.workers} dask workers:       {b:8.1f} s  (cluster start-up {startup:.1f} s; statuses equal: {same})")
    print(f"ratio a/b:                {a / b:8.2f}")
    print(f"Dask overhead per material: {(args.workers * b - a) / len(ids):6.2f} core-s")
    # where it goes: inside the materials (one core each instead of the process's two) or between them
    inside = per_material_seconds(parallel)
    print(f"time inside the materials: {times.sum():7.1f} s in process, {inside.sum():.1f} s summed over the workers "
          f"({inside.sum() / max(times.sum(), 1e-9):.2f}x; median {float(np.median(inside[ok])) if ok.any() else float('nan'):.2f} s "
          f"vs {steady:.2f} s); outside them: {a - times.sum():.1f} s vs {args.workers * b - inside.sum():.1f} core-s")
    if math.isnan(kappa_t):
        return
    print(f"steady per-material time:  {steady:7.2f} s phonons (median), {kappa_t:.2f} s κ (second run; first {kappa_first:.1f} s)")
    print("estimates (start-up + compile + ceil(M/W) x t; the EMT materials are small):")
    for label, count, t, first in (("MDR phonon test split", 1000, steady, compile_s), ("Matbench κ set", 103, kappa_t, kappa_first - kappa_t)):
        cells = []
        for workers in (1, 8, 64):
            overhead = 0.0 if workers == 1 else startup
            seconds = overhead + first + math.ceil(count / workers) * t
            cells.append(f"{workers} workers {seconds / 60:7.1f} min")
        print(f"  {label:22s} ({count:4d}): " + ", ".join(cells))


if __name__ == "__main__":
    main()

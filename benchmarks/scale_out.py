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

    python benchmarks/scale_out.py [--model data/models/demo.ckpt] [--workers 2] [--materials 16]
"""

from __future__ import annotations

import argparse
import math
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "data" / "models" / "demo.ckpt"))
    parser.add_argument("--dataset", default=str(REPO / "data" / "emt"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--materials", type=int, default=16, help="how many materials (at least 8 for the issue)")
    args = parser.parse_args()

    potential = pe.load_potential(args.model)
    data = Dataset(args.dataset)
    ids = data.ids[: args.materials]
    settings = PhononSettings()
    print(f"{len(ids)} materials of {args.dataset}, model {args.model}")
    with tempfile.TemporaryDirectory() as tmp:
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

        kappa_data = Dataset(REPO / "data" / "emt-kappa")
        kappa_settings = KappaSettings(mesh=(19, 19, 19))
        start = time.perf_counter()
        run_kappa(potential, lambda i: KappaMaterial.from_record(kappa_data[i]), kappa_data.ids, kappa_settings,
                  Path(tmp) / "k.nc", progress=False)
        kappa_first = time.perf_counter() - start
        start = time.perf_counter()
        run_kappa(potential, lambda i: KappaMaterial.from_record(kappa_data[i]), kappa_data.ids, kappa_settings,
                  Path(tmp) / "k2.nc", progress=False)
        kappa_t = time.perf_counter() - start

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

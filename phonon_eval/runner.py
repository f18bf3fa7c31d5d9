"""Run an evaluator over many materials into one results file: failures recorded, resumable.

After every material the whole results file is rewritten atomically, so a crash loses at most
the materials in flight, and `resume=True` skips what the file already holds. Materials run in
process or on a Dask cluster (`phonon_eval.fanout`) with the same results. This module knows no
results schema: each format (phonons, κ) brings its writer and reader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import xarray as xr
from rich.console import Console

from phonon_eval.fanout import Cluster, Evaluate, run_materials
from phonon_eval.provenance import software_versions
from phonon_eval.provider import ForceProvider

__all__ = ["run_to_file"]


def run_to_file(
    name: str,
    ids: Sequence[str],
    evaluate: Evaluate,
    provider: ForceProvider,
    settings: Any,
    out: str | os.PathLike,
    to_dataset: Callable[..., xr.Dataset],
    rows_from_dataset: Callable[[xr.Dataset], list[dict[str, Any]]],
    *,
    resume: bool = False,
    cluster: Cluster = Cluster(),
    progress: bool = True,
    console: Console | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    """`run_materials` into a results netCDF of one format, resumable.

    `settings` gives `temperatures` and `as_attrs()`; `to_dataset(rows, temperatures, attrs)` and
    `rows_from_dataset(ds)` are the format's writer and reader. The file's attributes say what
    was evaluated (`provider.provenance()`), with which settings and software.
    """
    out = Path(out)
    done = rows_from_dataset(xr.load_dataset(out)) if resume and out.is_file() else []
    all_attrs = {
        "source": "; ".join(f"{k} {v}" for k, v in software_versions().items()),
        **provider.provenance(),
        **settings.as_attrs(),
        **(attrs or {}),
    }

    def save(rows: list[dict[str, Any]]) -> xr.Dataset:
        ds = to_dataset(rows, settings.temperatures, all_attrs)
        write_atomic(ds, out)
        return ds

    return run_materials(name, ids, evaluate, provider, save, done=done, cluster=cluster, progress=progress, console=console)


def write_atomic(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write netCDF through a temporary file in the same folder, then rename."""
    from phonon_eval.atomic import atomic_path

    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")

"""Run an evaluator over many materials into one results file: failures recorded, resumable.

Each finished material is written at once as its own part (`phonon_eval.store`), and the parts
are merged into the results file at the end, so a crash loses at most the materials in flight,
nothing is rewritten as the run grows, and memory stays flat in the number of materials.
`resume=True` skips what the file and the parts hold, after checking that they were made with
the same model and settings; `retry_failed=True` evaluates the failed materials again.
Materials run in process or on a Dask cluster (`phonon_eval.fanout`) with the same results.
This module knows no results schema: each format (phonons, κ) brings its writer.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

import xarray as xr
from rich.console import Console

from phonon_eval.fanout import Cluster, Evaluate, run_materials
from phonon_eval.provenance import software_versions
from phonon_eval.provider import ForceProvider
from phonon_eval.store import ResultsStore, write_atomic

__all__ = ["knows_elements", "run_to_file", "unevaluable", "write_atomic"]


def knows_elements(provider: ForceProvider) -> bool:
    """Whether the model can say which elements it treats (JAX models; ASE calculators cannot)."""
    return type(provider).check_elements is not ForceProvider.check_elements


def unevaluable(provider: ForceProvider, numbers: Mapping[str, Sequence[int]]) -> dict[str, str]:
    """{material: why the model cannot evaluate it} for materials holding elements it lacks,
    found before any work (the evaluators would find each only when they reach it)."""
    out = {}
    for material, zs in numbers.items():
        try:
            provider.check_elements(np.asarray(zs, dtype=int))
        except ValueError as err:  # ProviderError, or the potential's own
            out[material] = str(err)
    return out


def run_to_file(
    name: str,
    ids: Sequence[str],
    evaluate: Evaluate,
    provider: ForceProvider,
    settings: Any,
    out: str | os.PathLike,
    to_dataset: Callable[..., xr.Dataset],
    *,
    resume: bool = False,
    retry_failed: bool = False,
    cluster: Cluster = Cluster(),
    progress: bool = True,
    console: Console | None = None,
    attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    """`run_materials` into a results netCDF of one format, resumable.

    `settings` gives `temperatures` and `as_attrs()`; `to_dataset(rows, temperatures, attrs)` is
    the format's writer. The file's attributes say what was evaluated (`provider.provenance()`),
    with which settings and software.

    Returns:
        The per-material variables of the results file (what tables and aggregates need, small
        however many materials); open the file for the band paths, DOS and mode data.

    Raises:
        store.ResumeError: resuming a file made with another model or other settings.
    """
    store = ResultsStore(out)
    all_attrs = {
        "source": "; ".join(f"{k} {v}" for k, v in software_versions().items()),
        **provider.provenance(),
        **settings.as_attrs(),
        **(attrs or {}),
    }
    if resume:
        store.check(all_attrs)
        done = [m for m, status in store.statuses().items() if not (retry_failed and status == "failed")]
        kept = len(set(done) & set(ids))
        if console is not None:
            console.print(f"resuming {store.out}: {kept} of {len(ids)} materials kept, {len(ids) - kept} left")
    else:
        store.clear()
        done = []

    def save(row: dict[str, Any]) -> None:
        store.add(to_dataset([row], settings.temperatures, all_attrs))

    run_materials(name, ids, evaluate, provider, save, done=done, cluster=cluster, progress=progress, console=console)
    store.merge(ids, to_dataset([], settings.temperatures, all_attrs), keep_out=resume)
    # loaded and closed: a file left open here would be stale once a later run replaces it
    with xr.open_dataset(store.out) as ds:
        return ds.drop_vars([v for v in ds.data_vars if "material" not in ds[v].dims]).load()

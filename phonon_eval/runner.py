"""Run the phonon evaluator over many materials: failures recorded, results saved as they come.

After every material the whole results file is rewritten atomically, so a crash loses at most
the materials in flight, and `resume=True` skips what the file already holds. Materials run in
process or on a Dask cluster (`phonon_eval.fanout`) with the same results.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr
from rich.console import Console
from rich.table import Table

from phonon_eval.datasets import Dataset
from phonon_eval.fanout import Cluster, Evaluate, run_materials
from phonon_eval.phonons import PhononSettings, evaluate_material
from phonon_eval.potential import Potential
from phonon_eval.results import metrics, rows_from_dataset, to_dataset, write_atomic

__all__ = ["Summary", "run_phonons", "run_to_file", "software_versions"]


def software_versions() -> dict[str, str]:
    """Versions of everything that decides the numbers, for the results' `source` attribute."""
    import jax
    import phono3py
    import phonopy
    import spglib

    import phonon_eval

    return {
        "pft-toolkit": phonon_eval.__version__,
        "phonopy": phonopy.__version__,
        "phono3py": phono3py.__version__,
        "spglib": spglib.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "xarray": xr.__version__,
        "python": platform.python_version(),
    }


@dataclasses.dataclass
class Summary:
    dataset: xr.Dataset

    @property
    def n_ok(self) -> int:
        return int((self.dataset["status"] == "ok").sum())

    @property
    def n_failed(self) -> int:
        return int((self.dataset["status"] != "ok").sum())

    def table(self) -> Table:
        """Per-material errors at 300 K, failures with their reasons, and the MAE row."""
        ds = self.dataset
        t = ds.sel(temperature=300.0)
        table = Table(
            title=f"Model − reference at 300 K ({self.n_ok} ok, {self.n_failed} failed)",
            caption="ω_max in K, S and C_V in J/K/mol, F in kJ/mol, bands: MAE along the q-path in THz",
        )
        for col in ["material", "ω_max", "S", "F", "C_V", "bands", "note"]:
            table.add_column(col, justify="left" if col in ("material", "note") else "right")
        for i, m in enumerate(ds["material"].values):
            if ds["status"][i] != "ok":
                table.add_row(str(m), "", "", "", "", "", f"[red]failed: {ds['error'][i].values}")
                continue
            table.add_row(
                str(m),
                f"{float(ds['omega_max_K'][i] - ds['omega_max_K_ref'][i]):+.1f}",
                f"{float(t['entropy'][i] - t['entropy_ref'][i]):+.2f}",
                f"{float(t['free_energy'][i] - t['free_energy_ref'][i]):+.3f}",
                f"{float(t['heat_capacity'][i] - t['heat_capacity_ref'][i]):+.3f}",
                f"{float(ds['band_mae'][i]):.3f}",
                "" if bool(ds["stable"][i]) else "[yellow]unstable",
            )
        m = metrics(ds)
        if m:
            table.add_section()
            table.add_row(
                "[bold]MAE",
                f"{m['omega_max_K']:.1f}",
                f"{m['entropy']:.2f}",
                f"{m['free_energy']:.3f}",
                f"{m['heat_capacity']:.3f}",
                f"{m['band_mae']:.3f}",
                "",
            )
        return table


def _phonon_row(data: Dataset, settings: PhononSettings, potential: Potential, material: str) -> dict[str, Any]:
    return evaluate_material(data[material], potential, settings)


def run_to_file(
    name: str,
    ids: Sequence[str],
    evaluate: Evaluate,
    potential: Potential,
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
    """`run_materials` into a results netCDF of one format (phonons or κ), resumable.

    `settings` gives `temperatures` and `as_attrs()`; `to_dataset(rows, temperatures, attrs)` and
    `rows_from_dataset(ds)` are the format's writer and reader.
    """
    out = Path(out)
    done = rows_from_dataset(xr.load_dataset(out)) if resume and out.is_file() else []
    all_attrs = {
        "source": "; ".join(f"{k} {v}" for k, v in software_versions().items()),
        "model_sha256": potential.sha256,
        **settings.as_attrs(),
        **(attrs or {}),
    }

    def save(rows: list[dict[str, Any]]) -> xr.Dataset:
        ds = to_dataset(rows, settings.temperatures, all_attrs)
        write_atomic(ds, out)
        return ds

    return run_materials(name, ids, evaluate, potential, save, done=done, cluster=cluster, progress=progress, console=console)


def run_phonons(
    potential: Potential,
    data: Dataset,
    ids: Sequence[str],
    settings: PhononSettings,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    cluster: Cluster = Cluster(),
    progress: bool = True,
    console: Console | None = None,
    attrs: dict[str, Any] | None = None,
) -> Summary:
    """Evaluate `ids` of `data`, in process or on Dask, rewriting `out` after each material."""
    evaluate = functools.partial(_phonon_row, data, settings)
    ds = run_to_file(
        "phonons", ids, evaluate, potential, settings, out, to_dataset, rows_from_dataset,
        resume=resume, cluster=cluster, progress=progress, console=console, attrs=attrs,
    )
    return Summary(ds)

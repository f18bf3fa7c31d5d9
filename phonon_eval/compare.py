"""Several results files side by side: one row per file, the errors over the materials they share.

A model that fails on the hard materials would look better over its own successes, so every
mean is taken over the common set: the materials every file evaluated successfully
(`results.common_materials`). What that set leaves out, and why, is part of the comparison.
Phonon files and κ files hold different metrics and are not compared with each other.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr
from rich.table import Table

from phonon_eval import kappa_results
from phonon_eval.access import file_kind
from phonon_eval.results import REFERENCE_SUFFIX, common_materials, metrics as phonon_metrics

__all__ = ["FORMATS", "CompareError", "Comparison", "compare", "read_results"]

FORMATS = ("table", "markdown", "csv", "json")

# metric -> (heading, unit, format) of each kind's summary row, in column order
PHONON_METRICS = {
    "omega_max_K": ("ω_max", "K", ".1f"),
    "entropy": ("S", "J/K/mol", ".2f"),
    "free_energy": ("F", "kJ/mol", ".3f"),
    "heat_capacity": ("C_V", "J/K/mol", ".3f"),
    "mode_mae": ("modes", "THz", ".3f"),
    "band_mae": ("bands", "THz", ".3f"),
}
KAPPA_METRICS = {
    "srme": ("κ_SRME", "1", ".3f"),
    "sre": ("κ_SRE", "1", ".3f"),
    "srd": ("κ_SRD", "1", "+.3f"),
    "srme_all": ("κ_SRME (all)", "1", ".3f"),
}
HEADINGS = {
    "n_materials": "materials", "n_ok": "ok", "n_failed": "failed", "n_unstable": "unstable",
    "n_symmetry_broken": "symmetry broken", "kappa": "κ", "kappa_ref": "κ_ref",
}
# per-material columns of the long form
PHONON_PER_MATERIAL = ("omega_max_K", "entropy", "free_energy", "heat_capacity", "mode_mae", "band_mae")
KAPPA_PER_MATERIAL = ("kappa", "kappa_ref", "srd", "sre", "srme")


class CompareError(ValueError):
    """Files that cannot be compared: unreadable, of two kinds, without the temperature, or
    without a material they all evaluated."""


def read_results(path: str | os.PathLike) -> xr.Dataset:
    """The material-indexed variables of a results file, loaded (the ragged data left on disk)."""
    path = Path(path)
    if not path.is_file():
        raise CompareError(f"{path}: no such file")
    try:
        with xr.open_dataset(path) as ds:
            keep = [v for v in ds.data_vars if set(ds[v].dims) <= {"material", "temperature", "i", "j", "axis"}]
            kind = file_kind(ds)
            out = ds[keep].load()
    except (OSError, ValueError) as err:
        raise CompareError(f"{path}: not a pft-eval results file ({err})") from None
    out.attrs["kind"] = kind
    return out


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The comparison of several results files of one kind.

    Attributes:
        kind: "phonons" or "kappa".
        temperature: K, where the temperature-dependent metrics are taken.
        files: the files, in the order given.
        common: the materials every file evaluated successfully, in the first file's order.
        dropped: {material: why it is not in the common set} for every other material of any file.
        rows: one per file: file, model, counts (n_materials, n_ok, n_failed) and the metrics
            over `common` (κ files: counts per status, and `srme_all`, Matbench's mean over all
            their materials).
        per_material: one per (common material, file): the material's errors.
    """

    kind: str
    temperature: float
    files: tuple[str, ...]
    common: tuple[str, ...]
    dropped: dict[str, str]
    rows: tuple[dict[str, Any], ...]
    per_material: tuple[dict[str, Any], ...]

    @property
    def metric_columns(self) -> dict[str, tuple[str, str, str]]:
        return PHONON_METRICS if self.kind == "phonons" else KAPPA_METRICS

    def summary(self) -> str:
        """One sentence on the common set: its size, and what it leaves out."""
        n = len(self.common)
        text = f"{n} material{'' if n == 1 else 's'} evaluated successfully by all {len(self.files)} files"
        if not self.dropped:
            return text + ", none left out"
        shown = "; ".join(f"{m} ({why})" for m, why in list(self.dropped.items())[:10])
        more = f"; and {len(self.dropped) - 10} more" if len(self.dropped) > 10 else ""
        return f"{text}; {len(self.dropped)} left out: {shown}{more}"

    # -- output -------------------------------------------------------------------------------

    def records(self, per_material: bool = False) -> list[dict[str, Any]]:
        """The rows as plain dicts (the long form with `per_material`)."""
        return [dict(r) for r in (self.per_material if per_material else self.rows)]

    def table(self, per_material: bool = False) -> Table:
        """A rich table of the rows (or the long form)."""
        rows = self.records(per_material)
        title = f"{'phonon' if self.kind == 'phonons' else 'κ'} results compared at {self.temperature:g} K"
        table = Table(title=title, caption=self.summary() + self._units(per_material))
        keys = list(rows[0]) if rows else []
        for key in keys:
            table.add_column(self._heading(key), justify="left" if key in ("file", "model", "material") else "right")
        for row in rows:
            table.add_row(*(self._cell(k, v) for k, v in row.items()))
        return table

    def text(self, fmt: str, per_material: bool = False) -> str:
        """The rows as markdown, csv or json text (json also holds the common set and the dropped)."""
        rows = self.records(per_material)
        if fmt == "json":
            return json.dumps(
                {
                    "kind": self.kind, "temperature": self.temperature, "files": list(self.files),
                    "common": list(self.common), "dropped": self.dropped, "rows": [_plain(r) for r in rows],
                },
                indent=1,
            ) + "\n"
        keys = list(rows[0]) if rows else []
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: "" if _missing(v) else v for k, v in r.items()} for r in rows)
            return buf.getvalue()
        if fmt == "markdown":
            lines = [
                "| " + " | ".join(self._heading(k) for k in keys) + " |",
                "|" + "|".join(":---" if k in ("file", "model", "material") else "---:" for k in keys) + "|",
            ]
            lines += ["| " + " | ".join(self._cell(k, v) for k, v in r.items()) + " |" for r in rows]
            return "\n".join(lines) + f"\n\n{self.summary()}{self._units(per_material)}\n"
        raise ValueError(f"format {fmt}: one of {', '.join(FORMATS)}")

    def _heading(self, key: str) -> str:
        heading, _, _ = self.metric_columns.get(key, (HEADINGS.get(key, key), "", ""))
        return heading

    def _cell(self, key: str, value: Any) -> str:
        if _missing(value):
            return ""
        if isinstance(value, float):
            fmt = self.metric_columns.get(key, (None, None, ".4g"))[2]
            return f"{value:{fmt}}"
        return str(value)

    def _units(self, per_material: bool = False) -> str:
        units = ", ".join(f"{h} in {u}" for h, u, _ in self.metric_columns.values() if u != "1")
        if self.kind == "kappa":
            if per_material:
                return "; κ and κ_ref in W/m-K"
            return "; means over the common set; κ_SRME (all): Matbench's mean over all of each file's materials, failures penalised"
        if per_material:
            return f"; model − reference (modes, bands: MAE); {units}"
        return f"; MAE over the common set: {units}"


def compare(paths: Sequence[str | os.PathLike], temperature: float = 300.0) -> Comparison:
    """Compare results files of one kind (all phonons or all κ) over their common materials.

    Raises:
        CompareError: fewer than one file, unreadable files, a mix of kinds (naming the files of
            each), a temperature a file lacks, or no material every file evaluated.
    """
    if not paths:
        raise CompareError("no results files to compare")
    names = [str(p) for p in paths]
    datasets = [read_results(p) for p in paths]
    kinds: dict[str, list[str]] = {}
    for name, ds in zip(names, datasets):
        kinds.setdefault(ds.attrs["kind"], []).append(name)
    if len(kinds) > 1:
        said = "; ".join(f"{'phonon' if k == 'phonons' else 'κ'} files: {', '.join(v)}" for k, v in kinds.items())
        raise CompareError(f"phonon and κ results cannot be compared with each other ({said}): compare files of one kind")
    kind = next(iter(kinds))
    for name, ds in zip(names, datasets):
        if not np.isclose(ds["temperature"].values, temperature).any():
            have = ", ".join(f"{t:g}" for t in ds["temperature"].values)
            raise CompareError(f"{name} has no results at {temperature:g} K (it has {have} K): choose --temperature among them")
    common = common_materials(*datasets)
    if not common:
        raise CompareError(f"no material was evaluated successfully by every file ({', '.join(names)}): nothing to compare")
    t = float(datasets[0]["temperature"].values[np.isclose(datasets[0]["temperature"].values, temperature)][0])
    rows, long = [], []
    for name, ds in zip(names, datasets):
        head = {"file": name, "model": str(ds.attrs.get("model", "model"))}
        if kind == "phonons":
            m = phonon_metrics(ds, t, materials=common)
            status = ds["status"].values
            counts = {"n_materials": len(status), "n_ok": int((status == "ok").sum()), "n_failed": int((status != "ok").sum())}
            values = {k: m[k] for k in PHONON_METRICS}
        else:
            m = kappa_results.metrics(ds, t, materials=common)
            every = kappa_results.metrics(ds, t)
            counts = {k: every[k] for k in ("n_materials", "n_ok", "n_unstable", "n_symmetry_broken", "n_failed")}
            values = {**{k: m[k] for k in ("srme", "sre", "srd")}, "srme_all": every["srme"]}
        rows.append({**head, **counts, **values})
        long += [{"material": c, **head, **v} for c, v in _per_material(ds, kind, t, common).items()]
    order = {c: k for k, c in enumerate(common)}
    long.sort(key=lambda r: order[r["material"]])  # stable: files keep their order within a material
    return Comparison(kind, t, tuple(names), tuple(common), _dropped(names, datasets, set(common)), tuple(rows), tuple(long))


def _per_material(ds: xr.Dataset, kind: str, temperature: float, materials: list[str]) -> dict[str, dict[str, float]]:
    """{material: its errors} of one file (phonons: model − reference; κ: κ, κ_ref and the SR metrics)."""
    at = ds.sel(material=materials).sel(temperature=temperature, method="nearest")
    out: dict[str, dict[str, float]] = {m: {} for m in materials}
    for name in PHONON_PER_MATERIAL if kind == "phonons" else KAPPA_PER_MATERIAL:
        values = at[name].values
        if kind == "phonons" and name not in ("mode_mae", "band_mae"):
            values = values - at[name + REFERENCE_SUFFIX].values
        for m, v in zip(materials, values):
            out[m][name] = float(v)
    return out


def _dropped(names: list[str], datasets: list[xr.Dataset], common: set[str]) -> dict[str, str]:
    """{material: 'failed in A.nc; absent from B.nc'} for every material outside the common set."""
    everything = list(dict.fromkeys(m for ds in datasets for m in ds["material"].values.tolist()))
    out = {}
    for material in everything:
        if material in common:
            continue
        why = []
        for name, ds in zip(names, datasets):
            ids = ds["material"].values.tolist()
            if material not in ids:
                why.append(f"absent from {name}")
            else:
                status = str(ds["status"].values[ids.index(material)])
                if status != "ok":
                    why.append(f"{status} in {name}")
        out[material] = "; ".join(why)
    return out


def _missing(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: null instead."""
    return {k: None if _missing(v) else v for k, v in row.items()}

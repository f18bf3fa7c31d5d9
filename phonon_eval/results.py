"""Phonon results as an xarray Dataset (CF conventions), written atomically, read back for resume,
and the run of the phonon evaluator over many materials into such a file.

Dimensions: `material`, `temperature`, `band`, and two flat ragged dimensions for what varies in
length between materials: `path_point` (band paths) and `dos_point` (DOS grids). The CF
"contiguous ragged array" form is used: `path_count[material]` and `dos_count[material]` give
how many consecutive points belong to each material (`sample_dimension` attribute). Bands
beyond a material's 3·n_primitive are NaN. Yes/no variables (`stable`, `stable_ref`) are int8
with CF `flag_values` -1, 0, 1 and `flag_meanings` (netCDF has no boolean type; -1: the material
failed first); settings are global attributes `setting_*`, arrays as arrays.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from typing import Any, Iterable, Sequence

import numpy as np
import xarray as xr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from phonon_eval.datasets import Dataset
from phonon_eval.fanout import Cluster, failed_row
from phonon_eval.phonons import PhononSettings, evaluate_material
from phonon_eval.provenance import protocol_caption, reference_names
from phonon_eval.provider import ModelLike, as_provider
from phonon_eval.runner import run_to_file, write_atomic
from phonon_eval.tables import WORST, reason, shown_rows
from phonon_eval.units import THZ_TO_K

__all__ = ["Summary", "VARIABLES", "common_materials", "failed_row", "metrics", "rows_from_dataset", "run_phonons", "to_dataset", "write_atomic"]

# name -> (dims after material, units, long_name); `_ref` twins are added for the reference side
VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "omega_max": ((), "THz", "maximum phonon frequency over the commensurate q-points"),
    "omega_max_mesh": ((), "THz", "maximum phonon frequency over the q-point mesh"),
    "min_frequency": ((), "THz", "lowest phonon frequency over the q-point mesh, the commensurate q-points and the band path, acoustic modes at Γ excepted"),
    "gamma_acoustic": ((), "THz", "lowest acoustic phonon frequency at Γ"),
    "entropy": (("temperature",), "J/K/mol", "vibrational entropy per mole of primitive cells"),
    "free_energy": (("temperature",), "kJ/mol", "Helmholtz vibrational free energy per mole of primitive cells"),
    "heat_capacity": (("temperature",), "J/K/mol", "heat capacity at constant volume per mole of primitive cells"),
}
REFERENCE_SUFFIX = "_ref"

SCALARS: dict[str, tuple[str, str, Any]] = {
    # name -> (units, long_name, fill for a failed material)
    "formula": ("1", "reduced chemical formula", ""),
    "reference_name": ("1", "what the reference is (the record's label: MDR PBE, DFT, EMT, ...)", ""),
    "n_primitive_atoms": ("1", "atoms in the primitive cell", -1),
    "n_supercell_atoms": ("1", "atoms in the supercell", -1),
    "volume": ("Å^3", "unit-cell volume after relaxation with the model", np.nan),
    "volume_ref": ("Å^3", "unit-cell volume of the reference record", np.nan),
    "relax_steps": ("1", "relaxation steps taken", -1),
    "fc_method": ("1", "how the model's force constants were made: analytic (HVPs) or finite (displacements)", ""),
    "n_fc_evaluations": ("1", "HVPs (analytic) or displaced supercells (finite) for the force constants", -1),
    "band_mae": ("THz", "mean absolute error of the band frequencies along the q-path", np.nan),
    "mode_mae": ("THz", "mean absolute error of the frequencies of every mode at the commensurate q-points", np.nan),
    "stable": ("1", "dynamically stable with the model (no frequency below -tolerance on mesh, commensurate points and path; acoustic modes at Γ above -gamma_tolerance)", -1),
    "stable_ref": ("1", "dynamically stable with the reference force constants", -1),
    "time_relax": ("s", "wall time of the relaxation", np.nan),
    "time_fc": ("s", "wall time of the force constants", np.nan),
    "time_properties": ("s", "wall time of the phonopy properties", np.nan),
}
TIMING = ("time_relax", "time_fc", "time_properties")
FLAGS: dict[str, dict[str, Any]] = {
    # yes/no variables: int8 with CF flag attributes (netCDF has no boolean type); -1 for a
    # material that failed before the question was answered
    name: {"flag_values": np.asarray([-1, 0, 1], dtype=np.int8), "flag_meanings": f"not_evaluated {no} {yes}"}
    for name, (no, yes) in {"stable": ("unstable", "stable"), "stable_ref": ("unstable", "stable")}.items()
}


def _names() -> list[str]:
    return [n for v in VARIABLES for n in (v, v + REFERENCE_SUFFIX)]


def to_dataset(rows: Iterable[dict[str, Any]], temperatures: np.ndarray, attrs: dict[str, Any] | None = None) -> xr.Dataset:
    """Build the results Dataset from result rows (ok or failed), in the order given."""
    rows = list(rows)
    temperatures = np.asarray(temperatures, dtype=float)
    m, t = len(rows), len(temperatures)
    ok = [r for r in rows if r["status"] == "ok"]
    n_bands = max([r["band_frequency"].shape[1] for r in ok], default=0)

    data: dict[str, Any] = {}
    for name, (dims, units, long) in VARIABLES.items():
        for suffix in ("", REFERENCE_SUFFIX):
            shape = (m,) + ((t,) if dims else ())
            arr = np.full(shape, np.nan)
            for i, r in enumerate(rows):
                if r["status"] == "ok":
                    arr[i] = r[name + suffix]
            side = "reference" if suffix else "model"
            data[name + suffix] = (("material",) + dims, arr, {"units": units, "long_name": f"{long} ({side})"})
    data["omega_max_K"] = (("material",), data["omega_max"][1] * THZ_TO_K, {"units": "K", "long_name": "maximum phonon frequency over the commensurate q-points (model)"})
    data["omega_max_K_ref"] = (("material",), data["omega_max_ref"][1] * THZ_TO_K, {"units": "K", "long_name": "maximum phonon frequency over the commensurate q-points (reference)"})
    for name, (units, long, fill) in SCALARS.items():
        values = [r.get(name, fill) if r["status"] == "ok" else fill for r in rows]
        dtype = object if isinstance(fill, str) else np.int8 if name in FLAGS else (np.int64 if isinstance(fill, int) else float)
        data[name] = (("material",), np.asarray(values, dtype=dtype), {"units": units, "long_name": long, **FLAGS.get(name, {})})
    data["status"] = (("material",), np.asarray([r["status"] for r in rows], dtype=object), {"long_name": "ok or failed"})
    data["error"] = (("material",), np.asarray([r.get("error", "") for r in rows], dtype=object), {"long_name": "why the material failed ('' if ok)"})

    # ragged band paths and DOS grids
    distances = _ragged_field(rows, "band_distance")
    counts = np.asarray([len(p) for p in distances], dtype=np.int64)
    data["path_count"] = (("material",), counts, {"long_name": "number of band-path points of each material", "sample_dimension": "path_point"})
    data["band_distance"] = (("path_point",), _cat(distances), {"units": "1/Å", "long_name": "distance along the band path (reference reciprocal lattice)"})
    data["band_segment"] = (("path_point",), _cat(_ragged_field(rows, "band_segment"), np.int64), {"long_name": "index of the band-path segment"})
    data["band_label"] = (("path_point",), _cat(_ragged_field(rows, "band_label"), object), {"long_name": "high-symmetry point label ('' elsewhere)"})
    for suffix in ("", REFERENCE_SUFFIX):
        freq = np.full((int(counts.sum()), n_bands), np.nan)
        start = 0
        for c, r in zip(counts, rows):
            if c:
                f = r["band_frequency" + suffix]
                freq[start : start + c, : f.shape[1]] = f
            start += c
        side = "reference" if suffix else "model"
        data["band_frequency" + suffix] = (("path_point", "band"), freq, {"units": "THz", "long_name": f"phonon frequency along the band path ({side})"})
    grids = _ragged_field(rows, "dos_frequency")
    dos_counts = np.asarray([len(p) for p in grids], dtype=np.int64)
    data["dos_count"] = (("material",), dos_counts, {"long_name": "number of DOS points of each material", "sample_dimension": "dos_point"})
    data["dos_frequency"] = (("dos_point",), _cat(grids), {"units": "THz", "long_name": "frequency of the DOS grid"})
    data["dos"] = (("dos_point",), _cat(_ragged_field(rows, "dos")), {"units": "1/THz", "long_name": "total phonon DOS per primitive cell (model)"})
    data["dos_ref"] = (("dos_point",), _cat(_ragged_field(rows, "dos_ref")), {"units": "1/THz", "long_name": "total phonon DOS per primitive cell (reference)"})

    ds = xr.Dataset(
        data,
        coords={
            "material": ("material", np.asarray([r["material"] for r in rows], dtype=object), {"long_name": "material id"}),
            "temperature": ("temperature", temperatures, {"units": "K", "long_name": "temperature"}),
            "band": ("band", np.arange(n_bands), {"long_name": "band index, ascending frequency"}),
        },
    )
    ds.attrs.update(
        {
            "Conventions": "CF-1.8",
            "title": "Phonon properties of a potential against a reference (phonopy)",
            "history": f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} pft-eval phonons",
        }
    )
    ds.attrs.update(attrs or {})
    return ds


def _ragged_field(rows: list[dict[str, Any]], key: str) -> list[np.ndarray]:
    return [np.asarray(r[key]) if r["status"] == "ok" else np.zeros(0) for r in rows]


def _cat(parts: list[np.ndarray], dtype=float) -> np.ndarray:
    parts = [np.asarray(p, dtype=dtype) for p in parts]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def rows_from_dataset(ds: xr.Dataset) -> list[dict[str, Any]]:
    """The result rows a Dataset was built from (for --resume)."""
    rows = []
    p0 = d0 = 0
    for i, material in enumerate(ds["material"].values):
        pc, dc = int(ds["path_count"][i]), int(ds["dos_count"][i])
        status = str(ds["status"][i].values)
        if status != "ok":
            rows.append(failed_row(str(material), str(ds["error"][i].values)))
        else:
            r: dict[str, Any] = {"material": str(material), "status": "ok", "error": ""}
            for name in _names() + list(SCALARS):
                if name in SCALARS and name not in ds:  # a file written before the variable existed
                    r[name] = SCALARS[name][2]
                    continue
                value = ds[name][i].values
                r[name] = value.item() if value.ndim == 0 else np.asarray(value)
            n_bands = 3 * int(r["n_primitive_atoms"])
            r["stable"], r["stable_ref"] = bool(r["stable"]), bool(r["stable_ref"])
            sl = slice(p0, p0 + pc)
            r["band_distance"] = ds["band_distance"].values[sl]
            r["band_segment"] = ds["band_segment"].values[sl]
            r["band_label"] = ds["band_label"].values[sl]
            r["band_frequency"] = ds["band_frequency"].values[sl, :n_bands]
            r["band_frequency_ref"] = ds["band_frequency_ref"].values[sl, :n_bands]
            dl = slice(d0, d0 + dc)
            r["dos_frequency"] = ds["dos_frequency"].values[dl]
            r["dos"] = ds["dos"].values[dl]
            r["dos_ref"] = ds["dos_ref"].values[dl]
            rows.append(r)
        p0 += pc
        d0 += dc
    return rows


def common_materials(*datasets: xr.Dataset) -> list[str]:
    """The materials every results file evaluated successfully, in the first file's order:
    the set to compare models over, so that a model that fails more does not look better."""
    ok = [set(ds["material"].values[ds["status"].values == "ok"].tolist()) for ds in datasets]
    first = datasets[0]["material"].values.tolist() if datasets else []
    return [m for m in first if all(m in s for s in ok)]


def metrics(ds: xr.Dataset, temperature: float = 300.0, materials: Iterable[str] | None = None) -> dict[str, float]:
    """MAE of ω_max (K), S, F, C_V at `temperature` and the band MAE (THz), with the counts.

    Taken over the materials that succeeded, or over `materials` (all of which must have
    succeeded, e.g. `common_materials` of several files). Computed per material from the
    material-indexed variables only, so memory does not grow with the ragged band data.

    Returns:
        n_materials, n_ok, n_failed (of the file), n_used (in the means), and the MAEs; {} when
        no material is used.
    """
    status = ds["status"].values
    ids = ds["material"].values
    keep = status == "ok"
    if materials is not None:
        wanted = set(materials)
        missing = wanted - set(ids[keep].tolist())
        if missing:
            raise ValueError(f"not evaluated successfully in this file: {', '.join(sorted(missing))}")
        keep &= np.isin(ids, list(wanted))
    used = np.flatnonzero(keep)
    counts = {"n_materials": len(status), "n_ok": int((status == "ok").sum()), "n_failed": int((status != "ok").sum()), "n_used": len(used)}
    if not len(used):
        return {}
    t = int(np.flatnonzero(np.isclose(ds["temperature"].values, temperature))[0])

    def mae(name: str, at_t: bool = False) -> float:
        a, b = ds[name].values[used], ds[name + REFERENCE_SUFFIX].values[used]
        return float(np.abs(a[:, t] - b[:, t] if at_t else a - b).mean())

    return {
        **counts,
        "omega_max_K": mae("omega_max_K"),
        "entropy": mae("entropy", True),
        "free_energy": mae("free_energy", True),
        "heat_capacity": mae("heat_capacity", True),
        "mode_mae": float(ds["mode_mae"].values[used].mean()),
        "band_mae": float(ds["band_mae"].values[used].mean()),
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

    def table(self, limit: int | None = WORST, values: bool = False) -> Table:
        """Per-material errors at 300 K, failures with their reasons (one line each), and the MAE row.

        With `limit`, a run of more than 2·limit materials shows the `limit` worst by mode MAE
        and at most `limit` failed ones (None: every material). With `values`, the long form of
        `values_table` instead."""
        if values:
            return self.values_table(limit)
        ds = self.dataset
        t = ds.sel(temperature=300.0)
        table = Table(
            title=self._title(),
            caption=f"{protocol_caption(ds.attrs)}; ω_max in K, S and C_V in J/K/mol, F in kJ/mol, modes: MAE of the "
            "frequencies at the commensurate q-points and bands: along the q-path, in THz" + self._cut_note(),
        )
        for col in ["material", "ω_max", "S", "F", "C_V", "modes", "bands", "note"]:
            table.add_column(col, justify="left" if col in ("material", "note") else "right")
        ids = ds["material"].values
        shown, hidden = shown_rows(ds["status"].values == "ok", ds["mode_mae"].values, limit)
        for i in shown:
            m = ids[i]
            if ds["status"][i] != "ok":
                table.add_row(str(m), "", "", "", "", "", "", f"[red]failed: {escape(reason(ds['error'][i].values))}")
                continue
            table.add_row(
                str(m),
                f"{float(ds['omega_max_K'][i] - ds['omega_max_K_ref'][i]):+.1f}",
                f"{float(t['entropy'][i] - t['entropy_ref'][i]):+.2f}",
                f"{float(t['free_energy'][i] - t['free_energy_ref'][i]):+.3f}",
                f"{float(t['heat_capacity'][i] - t['heat_capacity_ref'][i]):+.3f}",
                f"{float(ds['mode_mae'][i]):.3f}",
                f"{float(ds['band_mae'][i]):.3f}",
                "" if int(ds["stable"][i]) == 1 else "[yellow]unstable",
            )
        if hidden:
            table.add_row(f"[dim]… {hidden} more (--table full)", "", "", "", "", "", "", "")
        m = metrics(ds)
        if m:
            table.add_section()
            table.add_row(
                f"[bold]MAE[/] ({m['n_used']} of {m['n_materials']}, {m['n_failed']} failed)",
                f"{m['omega_max_K']:.1f}",
                f"{m['entropy']:.2f}",
                f"{m['free_energy']:.3f}",
                f"{m['heat_capacity']:.3f}",
                f"{m['mode_mae']:.3f}",
                f"{m['band_mae']:.3f}",
                "",
            )
        return table

    def values_table(self, limit: int | None = WORST) -> Table:
        """The long form: one row per material and quantity at 300 K, with the model's and the
        reference's values, their difference and the relative error, the unit-cell volume (after
        relaxation with the model, against the reference record's) among them; then the MAEs."""
        ds = self.dataset
        t = ds.sel(temperature=300.0)
        table = Table(
            title=self._title(),
            caption=f"{protocol_caption(ds.attrs)}; relative: difference / |reference|; V: unit-cell volume after "
            "relaxation with the model vs the reference record's" + self._cut_note(),
        )
        for col in ["material", "quantity", "model", "reference", "difference", "relative", "note"]:
            table.add_column(col, justify="left" if col in ("material", "quantity", "note") else "right", no_wrap=col == "quantity")
        quantities = [
            (ds, "omega_max_K", "ω_max (K)", ".1f"), (t, "entropy", "S (J/K/mol)", ".2f"),
            (t, "free_energy", "F (kJ/mol)", ".3f"), (t, "heat_capacity", "C_V (J/K/mol)", ".3f"),
        ]
        ids = ds["material"].values
        shown, hidden = shown_rows(ds["status"].values == "ok", ds["mode_mae"].values, limit)
        for i in shown:
            if ds["status"][i] != "ok":
                table.add_row(str(ids[i]), "", "", "", "", "", f"[red]failed: {escape(reason(ds['error'][i].values))}")
                table.add_section()
                continue
            pairs = [(label, float(src[name][i]), float(src[name + REFERENCE_SUFFIX][i]), fmt) for src, name, label, fmt in quantities]
            pairs.append(("V (Å³)", float(ds["volume"][i]), float(ds["volume_ref"][i]), ".3f"))
            note = "" if int(ds["stable"][i]) == 1 else "[yellow]unstable"
            for k, (label, a, b, fmt) in enumerate(pairs):
                rel = f"{(a - b) / abs(b):+.2%}" if b and np.isfinite(a - b) else ""
                table.add_row(str(ids[i]) if k == 0 else "", label, f"{a:{fmt}}", f"{b:{fmt}}", f"{a - b:+{fmt}}", rel, note if k == 0 else "")
            table.add_section()
        if hidden:
            table.add_row(f"[dim]… {hidden} more (--table full)", "", "", "", "", "", "")
        m = metrics(ds)
        if m:
            label = f"[bold]MAE[/] ({m['n_used']} of {m['n_materials']})"
            for k, (name, quantity, fmt) in enumerate([
                ("omega_max_K", "ω_max (K)", ".1f"), ("entropy", "S (J/K/mol)", ".2f"), ("free_energy", "F (kJ/mol)", ".3f"),
                ("heat_capacity", "C_V (J/K/mol)", ".3f"), ("mode_mae", "modes (THz)", ".3f"), ("band_mae", "bands (THz)", ".3f"),
            ]):
                table.add_row(label if k == 0 else "", quantity, "", "", f"{m[name]:{fmt}}", "", "")
        return table

    def _title(self) -> str:
        ds = self.dataset
        model = escape(str(ds.attrs.get("model", "model")))
        return f"{model} − {escape(reference_names(ds))} at 300 K ({self.n_ok} ok, {self.n_failed} failed)"

    def _cut_note(self) -> str:
        return "; failure reasons on one line, cut: the whole text is the file's `error`" if self.n_failed else ""


def _phonon_row(data: Dataset, settings: PhononSettings, model: ModelLike, material: str) -> dict[str, Any]:
    return evaluate_material(model, data[material], settings)


def run_phonons(
    model: ModelLike,
    data: Dataset,
    ids: Sequence[str],
    settings: PhononSettings,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    retry_failed: bool = False,
    cluster: Cluster = Cluster(),
    progress: bool = True,
    console: Console | None = None,
    attrs: dict[str, Any] | None = None,
) -> Summary:
    """Evaluate `ids` of `data` with `model` (anything `as_provider` takes), in process or on
    Dask, each material written as it finishes and all merged into `out` at the end; `resume`
    keeps what `out` or its parts hold (same model and settings, else ResumeError) and
    `retry_failed` evaluates the failed materials again.

    The file records the protocol, every setting, which of them override the protocol, and the
    force-constant method used ("auto" resolved for the model: `fc_method_used`).

    Raises:
        ProviderError: `settings` ask for analytic force constants of a model without HVPs.
    """
    provider = as_provider(model)
    attrs = {"fc_method_used": settings.method_for(provider), **(attrs or {})}
    evaluate = functools.partial(_phonon_row, data, settings)
    ds = run_to_file(
        "phonons", ids, evaluate, provider, settings, out, to_dataset,
        resume=resume, retry_failed=retry_failed, cluster=cluster, progress=progress, console=console, attrs=attrs,
    )
    return Summary(ds)

"""κ results as an xarray Dataset (CF conventions), and the run over many materials.

Dimensions: `material`, `temperature`, `i`/`j` (Cartesian, for the κ tensor), `axis` (reciprocal
axes, for q-meshes and q-points), `band`, and the flat ragged `qpoint` for the mode data on each
material's irreducible q-points: the CF "contiguous ragged array" form, `qpoint_count[material]`
consecutive q-points per material (`sample_dimension` attribute). Bands beyond a material's
3·n_primitive are NaN. Materials without a model κ carry the Matbench penalty (SRME = SRE = 2,
SRD = -2) and no mode data. `relax_converged` is int8 with CF flag attributes: -1 when no
relaxation was run (off, or the material failed first), 0 ran out of steps, 1 converged.

`run_kappa` evaluates materials one by one through `phonon_eval.runner`: each is written as it
finishes, a crash loses at most the material in flight, and `resume=True` skips what is saved.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import xarray as xr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from phonon_eval.fanout import Cluster, failed_row
from phonon_eval.kappa import PENALTY, KappaMaterial, KappaSettings, evaluate_material
from phonon_eval.provenance import protocol_caption, reference_names
from phonon_eval.provider import ModelLike, as_provider
from phonon_eval.runner import run_to_file
from phonon_eval.tables import WORST, reason, shown_rows

__all__ = ["PER_MATERIAL", "PER_QPOINT", "KappaSummary", "metrics", "rows_from_dataset", "run_kappa", "to_dataset"]

NAN = float("nan")
T = ("temperature",)

# name -> (dims after `material`, units, long_name, fill for a material without it)
PER_MATERIAL: dict[str, tuple[tuple[str, ...], str, str, Any]] = {
    "kappa": (T, "W/m-K", "lattice thermal conductivity, mean of the diagonal of the tensor (model)", NAN),
    "kappa_ref": (T, "W/m-K", "lattice thermal conductivity, mean of the diagonal of the tensor (reference)", NAN),
    "kappa_tensor": (T + ("i", "j"), "W/m-K", "lattice thermal conductivity tensor (model)", NAN),
    "kappa_tensor_ref": (T + ("i", "j"), "W/m-K", "lattice thermal conductivity tensor (reference; NaN when the reference gives only the mean)", NAN),
    "srd": (T, "1", "symmetric relative difference 2 (κ - κ_ref) / (κ + κ_ref); -2 without a model κ", PENALTY["srd"]),
    "sre": (T, "1", "symmetric relative error |SRD|; 2 without a model κ", PENALTY["sre"]),
    "srme": (T, "1", "mode-resolved symmetric relative mean error (Matbench Discovery κ_SRME); 2 without a model κ", PENALTY["srme"]),
    "q_mesh": (("axis",), "1", "q-point sampling mesh", -1),
    "formula": ((), "1", "reduced chemical formula", ""),
    "reference_name": ((), "1", "what the reference is (the record's label, or Matbench Discovery PBE for its reference file)", ""),
    "n_primitive_atoms": ((), "1", "atoms in the primitive cell", -1),
    "n_supercell_atoms": ((), "1", "atoms in the fc3 supercell", -1),
    "n_fc2_supercells": ((), "1", "displaced fc2 supercells (0: fc2 from the fc3 displacements)", -1),
    "n_fc3_supercells": ((), "1", "displaced fc3 supercells", -1),
    "n_fc_parameters": ((), "1", "free fc2 + fc3 parameters fitted by symfc to random supercells (-1: pair displacements)", -1),
    "space_group_number": ((), "1", "space-group number of the input structure", -1),
    "space_group_number_relaxed": ((), "1", "space-group number after relaxation with the model", -1),
    "relax_steps": ((), "1", "relaxation steps taken", -1),
    "relax_converged": ((), "1", "relaxation reached the force threshold (1), ran out of steps (0), or was not run (-1: relaxation off, or the material failed first)", -1),
    "volume": ((), "Å^3", "unit-cell volume after relaxation with the model", NAN),
    "volume_input": ((), "Å^3", "unit-cell volume of the input structure", NAN),
    "min_frequency": ((), "THz", "lowest phonon frequency on the q-mesh, acoustic modes at Γ excluded (model)", NAN),
    "time_reference": ((), "s", "wall time of the reference (read, or phono3py on the DFT forces)", NAN),
    "time_relax": ((), "s", "wall time of the relaxation", NAN),
    "time_setup": ((), "s", "wall time of phono3py's set-up and displacements", NAN),
    "time_fc2": ((), "s", "wall time of the forces of the displaced fc2 supercells", NAN),
    "time_fc3": ((), "s", "wall time of the forces of the displaced fc3 supercells", NAN),
    "time_force_constants": ((), "s", "wall time of phono3py's fc2 and fc3 from the forces", NAN),
    "time_conductivity": ((), "s", "wall time of the phonon check and the conductivity solution", NAN),
}

# name -> (dims, units, long_name) of the ragged mode data; `qpoint` is the sample dimension
MODE_KAPPA = "mode contribution to κ, mean of the diagonal, summed over the q-point's star (phono3py's mode_kappa: κ = Σ mode_kappa / Σ weight)"
PER_QPOINT: dict[str, tuple[tuple[str, ...], str, str]] = {
    "qpoint_coordinates": (("qpoint", "axis"), "1", "irreducible q-point, reduced coordinates of the primitive reciprocal cell"),
    "weight": (("qpoint",), "1", "number of mesh points the q-point stands for"),
    "frequency": (("qpoint", "band"), "THz", "phonon frequency (model)"),
    "frequency_ref": (("qpoint", "band"), "THz", "phonon frequency (reference; NaN where not given)"),
    "mode_kappa": (T + ("qpoint", "band"), "W/m-K", f"{MODE_KAPPA} (model)"),
    "mode_kappa_ref": (T + ("qpoint", "band"), "W/m-K", f"{MODE_KAPPA} (reference; NaN where q-points differ)"),
}
FLAGS: dict[str, dict[str, Any]] = {
    # yes/no variables: int8 with CF flag attributes (netCDF has no boolean type)
    "relax_converged": {"flag_values": np.asarray([-1, 0, 1], dtype=np.int8), "flag_meanings": "not_relaxed not_converged converged"},
}
STRINGS = {
    "status": "ok, unstable, symmetry broken or failed",
    "error": "why the material failed or has no model κ ('' if ok)",
    "note": "remark on a material that is ok, e.g. why SRME is not computed ('' if none)",
}


def _dtype(fill: Any) -> type:
    return object if isinstance(fill, str) else np.int64 if isinstance(fill, int) else float


def to_dataset(
    rows: Iterable[dict[str, Any]], temperatures: Sequence[float], attrs: dict[str, Any] | None = None
) -> xr.Dataset:
    """Build the results Dataset from result rows (any status), in the order given.

    Args:
        rows: from `kappa.evaluate_material` or `fanout.failed_row`.
        temperatures: (T,) K, the temperatures of every row.
        attrs: global attributes to add (settings, versions, inputs).
    """
    rows = list(rows)
    temperatures = np.asarray(temperatures, dtype=float)
    sizes = {"temperature": len(temperatures), "i": 3, "j": 3, "axis": 3}
    data: dict[str, Any] = {}
    for name, (dims, units, long, fill) in PER_MATERIAL.items():
        shape = (len(rows),) + tuple(sizes[d] for d in dims)
        values = np.full(shape, fill, dtype=np.int8 if name in FLAGS else _dtype(fill))
        for k, r in enumerate(rows):
            if name in r:
                values[k] = r[name]
        data[name] = (("material",) + dims, values, {"units": units, "long_name": long, **FLAGS.get(name, {})})
    for name, long in STRINGS.items():
        values = np.asarray([r.get(name, "") for r in rows], dtype=object)
        data[name] = (("material",), values, {"long_name": long})

    moded = [r for r in rows if "weight" in r]
    counts = np.asarray([len(r["weight"]) if "weight" in r else 0 for r in rows], dtype=np.int64)
    n_bands = max([r["frequency"].shape[1] for r in moded], default=0)
    long = "number of irreducible q-points of each material"
    data["qpoint_count"] = (("material",), counts, {"long_name": long, "sample_dimension": "qpoint"})
    sizes["band"] = n_bands
    for name, (dims, units, long) in PER_QPOINT.items():
        axis = dims.index("qpoint")
        parts = [np.asarray(r[name]) for r in moded]
        if "band" in dims:  # pad the bands of smaller primitive cells with NaN
            parts = [_pad_bands(p, n_bands) for p in parts]
        if parts:
            values = np.concatenate(parts, axis=axis)
        else:
            shape = tuple(0 if d == "qpoint" else sizes[d] for d in dims)
            values = np.zeros(shape, dtype=np.int64 if name == "weight" else float)
        data[name] = (dims, values, {"units": units, "long_name": long})

    ds = xr.Dataset(
        data,
        coords={
            "material": ("material", np.asarray([r["material"] for r in rows], dtype=object), {"long_name": "material id"}),
            "temperature": ("temperature", temperatures, {"units": "K", "long_name": "temperature"}),
            "i": ("i", np.asarray(["x", "y", "z"], dtype=object), {"long_name": "Cartesian direction (tensor row)"}),
            "j": ("j", np.asarray(["x", "y", "z"], dtype=object), {"long_name": "Cartesian direction (tensor column)"}),
            "band": ("band", np.arange(n_bands), {"long_name": "band index, ascending frequency"}),
        },
    )
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    ds.attrs.update(
        {
            "Conventions": "CF-1.8",
            "title": "Lattice thermal conductivity of a potential against a reference (phono3py)",
            "history": f"{now} pft-eval kappa",
        }
    )
    ds.attrs.update(attrs or {})
    return ds


def _pad_bands(values: np.ndarray, n_bands: int) -> np.ndarray:
    """(..., B) -> (..., n_bands), NaN beyond B."""
    width = [(0, 0)] * (values.ndim - 1) + [(0, n_bands - values.shape[-1])]
    return np.pad(values.astype(float), width, constant_values=np.nan)


def rows_from_dataset(ds: xr.Dataset) -> list[dict[str, Any]]:
    """The result rows a Dataset was built from (for resume)."""
    rows = []
    ends = np.cumsum(ds["qpoint_count"].values)
    for k, material in enumerate(ds["material"].values):
        count = int(ds["qpoint_count"][k])
        start = int(ends[k]) - count
        status, error = str(ds["status"][k].values), str(ds["error"][k].values)
        if status == "failed":
            rows.append(failed_row(str(material), error))
            continue
        note = str(ds["note"][k].values)
        row: dict[str, Any] = {"material": str(material), "status": status, "error": error, "note": note}
        for name in PER_MATERIAL:
            if name not in ds:  # a file written before the variable existed
                continue
            value = ds[name].values[k]
            row[name] = value.item() if np.ndim(value) == 0 else value
        if count:
            bands = 3 * int(row["n_primitive_atoms"])
            cut = {"qpoint": slice(start, start + count), "band": slice(0, bands)}
            for name, (dims, _, _) in PER_QPOINT.items():
                row[name] = ds[name].values[tuple(cut.get(d, slice(None)) for d in dims)]
        rows.append(row)
    return rows


def metrics(ds: xr.Dataset, temperature: float = 300.0, materials: Iterable[str] | None = None) -> dict[str, float]:
    """Counts per status and the means over materials of SRD, SRE and SRME at `temperature`, as
    Matbench Discovery takes them.

    A material without a model κ (unstable, symmetry broken, failed) counts with SRME = SRE = 2
    and SRD = -2, and so does one whose metric could not be computed although it has a reference
    (e.g. its q-points differ from the reference's): `n_penalised` says how many. Only materials
    without any reference are left out (a κ-only run has NaN means). With `materials` (e.g. the
    `results.common_materials` of several files), counts and means are over those alone.
    """
    if materials is not None:
        wanted = list(materials)
        missing = sorted(set(wanted) - set(ds["material"].values.tolist()))
        if missing:
            raise ValueError(f"not in this file: {', '.join(missing)}")
        ds = ds.isel(material=np.flatnonzero(np.isin(ds["material"].values, wanted)))
    at = ds.sel(temperature=temperature)
    status = ds["status"].values
    counts = {f"n_{s.replace(' ', '_')}": int((status == s).sum()) for s in ("ok", "unstable", "symmetry broken", "failed")}
    # a row without a model κ may not know κ_ref (a failure can come first); in a run that has
    # references at all it is penalised like the others
    kappa_ref = at["kappa_ref"].values
    has_reference = (np.isfinite(kappa_ref) | (status != "ok")) & np.isfinite(kappa_ref).any()
    srme = at["srme"].values
    penalised = has_reference & ((status != "ok") | ~np.isfinite(srme))
    means = {}
    for name in ("srd", "sre", "srme"):
        values = np.where(penalised, PENALTY[name], at[name].values)[has_reference]
        means[name] = float(values.mean()) if len(values) else NAN
    return {
        "n_materials": len(status),
        **counts,
        **means,
        "n_used": int(has_reference.sum()),
        "n_penalised": int(penalised.sum()),
    }


@dataclasses.dataclass
class KappaSummary:
    """The results of a run, and their table."""

    dataset: xr.Dataset

    @property
    def n_failed(self) -> int:
        """Materials the evaluation failed on (an error); unstable or symmetry-broken ones were
        evaluated, their outcome is the Matbench penalty."""
        return int((self.dataset["status"] == "failed").sum())

    @property
    def n_ok(self) -> int:
        """Materials evaluated (ok, unstable or symmetry broken)."""
        return int(self.dataset.sizes["material"]) - self.n_failed

    def table(self, temperature: float = 300.0, limit: int | None = WORST, values: bool = False) -> Table:
        """Per-material κ and errors at `temperature`, reasons for the rest (one line each), and the means.

        With `limit`, a run of more than 2·limit materials shows the `limit` worst by SRME and at
        most `limit` of the others (None: every material). With `values`, the relative error of
        κ and of the relaxed unit-cell volume (against the input structure's) are added."""
        ds = self.dataset
        at = ds.sel(temperature=temperature)
        m = metrics(ds, temperature)
        model = escape(str(ds.attrs.get("model", "model")))
        title = (
            f"κ of {model} at {temperature:g} K vs {escape(reference_names(ds))} ({m['n_ok']} ok, {m['n_unstable']} unstable, "
            f"{m['n_symmetry_broken']} symmetry broken, {m['n_failed']} failed)"
        )
        caption = (
            f"{protocol_caption(ds.attrs)}; κ in W/m-K (mean of the diagonal); means over {m['n_used']} materials, {m['n_penalised']} of them "
            "penalised with SRME = SRE = 2 (no model κ, or no mode-resolved comparison: Matbench Discovery)"
            + ("; Δκ: (κ − κ_ref) / κ_ref, ΔV: relaxed volume vs the input's" if values else "")
            + ("; reasons cut to one line, the whole text is the file's `error`" if self.n_ok < ds.sizes["material"] else "")
        )
        table = Table(title=title, caption=caption)
        columns = ["material", "κ", "κ_ref", "SRD", "SRE", "SRME"] + (["Δκ", "ΔV"] if values else []) + ["note"]
        for col in columns:
            table.add_column(col, justify="left" if col in ("material", "note") else "right")
        colour = {"unstable": "yellow", "symmetry broken": "yellow", "failed": "red"}
        ids = ds["material"].values
        shown, hidden = shown_rows(ds["status"].values == "ok", at["srme"].values, limit)
        for k in shown:
            material, status = ids[k], str(ds["status"][k].values)
            note = escape(reason(ds["note"][k].values if status == "ok" else ds["error"][k].values))
            if status != "ok":
                note = f"[{colour[status]}]{status}: {note}"
            cells = [float(at[v][k]) for v in ("kappa", "kappa_ref", "srd", "sre", "srme")]
            formats = ["{:.2f}", "{:.2f}", "{:+.3f}", "{:.3f}", "{:.3f}"]
            if values:
                with np.errstate(divide="ignore", invalid="ignore"):
                    cells += [np.float64(cells[0]) / cells[1] - 1, float(ds["volume"][k] / ds["volume_input"][k]) - 1]
                formats += ["{:+.1%}", "{:+.2%}"]
            table.add_row(str(material), *("" if not np.isfinite(c) else f.format(c) for f, c in zip(formats, cells)), note)
        blank = [""] * (len(columns) - 1)
        if hidden:
            table.add_row(f"[dim]… {hidden} more (--table full)", *blank)
        table.add_section()
        table.add_row("[bold]mean", "", "", f"{m['srd']:+.3f}", f"{m['sre']:.3f}", f"{m['srme']:.3f}", *([""] * (len(columns) - 6)))
        return table


def _kappa_row(
    load: Callable[[str], KappaMaterial], settings: KappaSettings, model: ModelLike, material: str
) -> dict[str, Any]:
    row = evaluate_material(model, load(material), settings)
    if not settings.relax:  # nothing converged, or failed to: no relaxation was run
        row["relax_converged"] = -1
    return row


def run_kappa(
    model: ModelLike,
    load: Callable[[str], KappaMaterial],
    ids: Sequence[str],
    settings: KappaSettings,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    retry_failed: bool = False,
    cluster: Cluster = Cluster(),
    progress: bool = True,
    console: Console | None = None,
    attrs: dict[str, Any] | None = None,
) -> KappaSummary:
    """Evaluate the materials `ids`, in process or on Dask, each written as it finishes and all
    merged into `out` at the end (`phonon_eval.runner`).

    Args:
        model: a checkpoint path, `Potential`, ASE calculator or `ForceProvider`.
        load: material id -> KappaMaterial (may raise: the material is then recorded as failed);
            picklable to run on Dask.
        ids: material ids, in the order of the results.
        settings: the protocol.
        out: results netCDF (written atomically; parts in `<out>.parts/` while running).
        resume: keep the materials of `ids` already in `out` or its parts and evaluate only the
            rest; refused (ResumeError) if they were made with another model or settings.
        retry_failed: with `resume`, evaluate the failed materials again.
        cluster: where the materials run (`phonon_eval.fanout.Cluster`).
        progress: show a progress bar on `console`.
        attrs: global attributes to add (inputs).

    Returns:
        The summary of the final Dataset.
    """
    evaluate = functools.partial(_kappa_row, load, settings)
    ds = run_to_file(
        "kappa", ids, evaluate, as_provider(model), settings, out, to_dataset,
        resume=resume, retry_failed=retry_failed, cluster=cluster, progress=progress, console=console, attrs=attrs,
    )
    return KappaSummary(ds)

"""A results file written one material at a time and merged once, in memory flat in its size.

Each finished material goes to its own small netCDF file in `<out>.parts/` (atomically), so a run
killed at any moment loses at most the materials in flight, and nothing is rewritten as the run
grows. At the end the parts, and the materials of an earlier results file that a resumed run
keeps, are merged into `<out>` (atomically) one material at a time, and the parts are removed.

The merge knows no schema beyond two conventions the result formats share: one row per
`material`, and CF contiguous ragged arrays, whose count variables over `material` name their
`sample_dimension` (band paths, DOS grids, q-points). Every other dimension (temperatures, bands)
is the largest any material has, padded with the variable's fill value (NaN) as the formats pad
bands in one go. The values are copied as stored, so the merged file reads back as the file the
format's writer makes from all rows at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from phonon_eval.atomic import atomic_path

__all__ = ["IDENTITY_ATTRS", "ResultsStore", "ResumeError", "write_atomic"]

MATERIAL = "material"

IDENTITY_ATTRS = ("model_kind", "model_sha256", "model_function", "model_dtype", "calculator", "calculator_kwargs", "fc_method_used")
"""Attributes (besides every `setting_*`) that must agree for a results file to be resumed."""


class ResumeError(ValueError):
    """A results file cannot be continued: made with another model or other settings."""


class ResultsStore:
    """The results file `out` and its folder of per-material parts."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")

    # -- what is there ---------------------------------------------------------------------

    def _part(self, material: str) -> Path:
        return self.parts / f"{urllib.parse.quote(material, safe='')}.nc"

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("*.nc")) if self.parts.is_dir() else []

    def statuses(self) -> dict[str, str]:
        """{material: status} of what the file and the parts hold (a part wins)."""
        found: dict[str, str] = {}
        for path in ([self.out] if self.out.is_file() else []) + self.part_files():
            found.update(_read(path, "status"))
        return found

    def check(self, attrs: Mapping[str, Any]) -> None:
        """Refuse to continue results made with another model or other settings, naming them."""
        for path in ([self.out] if self.out.is_file() else []) + self.part_files()[:1]:
            with xr.open_dataset(path) as ds:
                old = dict(ds.attrs)
            differ = [key for key in _identity(old) | _identity(attrs) if not _same(old.get(key), attrs.get(key))]
            if differ:
                said = "; ".join(f"{k}: {_show(old.get(k))} there, {_show(attrs.get(k))} now" for k in sorted(differ))
                raise ResumeError(f"{path} was made with another model or other settings ({said}): use another --out, or run without --resume")

    # -- writing ---------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget the parts of an earlier run (a fresh start)."""
        shutil.rmtree(self.parts, ignore_errors=True)

    def add(self, ds: xr.Dataset) -> None:
        """One material's results, written atomically as its own part."""
        self.parts.mkdir(parents=True, exist_ok=True)
        write_atomic(ds, self._part(str(ds[MATERIAL].values[0])))

    def merge(self, ids: Sequence[str], empty: xr.Dataset, keep_out: bool = True) -> None:
        """Write `out` from the parts (and the old `out`'s materials, with `keep_out`), in `ids`
        order (those present), then remove the parts. `empty`: the format's dataset of no rows,
        written when there is none."""
        sources: dict[str, tuple[Path, int]] = {}
        for path in ([self.out] if keep_out and self.out.is_file() else []) + self.part_files():
            sources.update((m, (path, k)) for k, m in enumerate(_read(path)))
        chosen = [sources[m] for m in ids if m in sources]
        if not chosen:
            write_atomic(empty, self.out)
        else:
            with atomic_path(self.out) as tmp:
                _merge(chosen, tmp, newest=max({p for p, _ in chosen}, key=lambda p: p.stat().st_mtime_ns))
        self.clear()


def write_atomic(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write netCDF through a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")


def _read(path: Path, name: str | None = None) -> dict[str, str]:
    """{material: its value of `name` (a string variable) or ""}, in file order; netCDF4 alone,
    which opens a small file several times faster than xarray (there may be 10,000 parts)."""
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        materials = [str(m) for m in nc.variables[MATERIAL][:]]
        values = [str(v) for v in nc.variables[name][:]] if name else [""] * len(materials)
    return dict(zip(materials, values))


# --------------------------------------------------------------------------------------------
# the merge, at the netCDF level (values copied as stored)
# --------------------------------------------------------------------------------------------


def _merge(chosen: list[tuple[Path, int]], out: Path, newest: Path) -> None:
    import netCDF4

    files = list(dict.fromkeys(p for p, _ in chosen))
    layout = _Layout()
    for path in files:
        with netCDF4.Dataset(path) as nc:
            layout.add(path, nc, [k for p, k in chosen if p == path])
    with netCDF4.Dataset(out, "w", format="NETCDF4") as dst:
        with netCDF4.Dataset(newest) as nc:
            dst.setncatts({k: nc.getncattr(k) for k in nc.ncattrs()})
        for dim, size in layout.sizes.items():
            dst.createDimension(dim, size)
        for name, (dtype, dims, fill, attrs) in layout.variables.items():
            dst.createVariable(name, dtype, dims, fill_value=fill).setncatts(attrs)
        dst.set_auto_maskandscale(False)
        for name, path in layout.fixed.items():  # coordinates such as temperature or band
            with netCDF4.Dataset(path) as nc:
                nc.set_auto_maskandscale(False)
                values = nc.variables[name][...]
                dst.variables[name][tuple(slice(0, n) for n in np.shape(values))] = values
        offsets = dict.fromkeys(layout.concat, 0)
        with contextlib.ExitStack() as stack:
            nc, opened = None, None
            for path, k in chosen:  # one material at a time: memory does not grow with the file
                if path != opened:  # consecutive materials of one source share its handle
                    stack.close()
                    nc, opened = stack.enter_context(netCDF4.Dataset(path)), path
                    nc.set_auto_maskandscale(False)
                extent = layout.extent(path, k)
                for name, var in nc.variables.items():
                    if name in layout.fixed or name not in layout.variables:
                        continue
                    values = var[tuple(extent.get(d, slice(None)) for d in var.dimensions)]
                    if np.size(values) == 0:
                        continue
                    # along the concatenated dimensions at the running offset, elsewhere padded
                    at = tuple(
                        slice(offsets[d], offsets[d] + n) if d in extent else slice(0, n)
                        for d, n in zip(var.dimensions, np.shape(values))
                    )
                    dst.variables[name][at] = values
                for dim, span in extent.items():
                    offsets[dim] += span.stop - span.start


class _Layout:
    """Dimensions and variables of the merged file, gathered from every source."""

    def __init__(self) -> None:
        self.concat = {MATERIAL}
        self.counts: dict[str, str] = {}  # ragged dimension -> its count variable
        self.sizes: dict[str, int] = {}
        self.variables: dict[str, tuple[Any, tuple[str, ...], Any, dict[str, Any]]] = {}
        self.fixed: dict[str, Path] = {}  # variable along no concatenated dimension -> its largest source
        self._fixed_size: dict[str, int] = {}
        self._starts: dict[Path, dict[str, np.ndarray]] = {}  # source -> ragged dimension -> offsets

    def add(self, path: Path, nc: Any, materials: list[int]) -> None:
        for name, var in nc.variables.items():
            if "sample_dimension" in var.ncattrs():
                self.counts[var.getncattr("sample_dimension")] = name
                self.concat.add(var.getncattr("sample_dimension"))
        # each source's counts read once: a resumed file may hold 10,000 materials
        self._starts[path] = {
            dim: np.concatenate([[0], np.cumsum(np.asarray(nc.variables[count][:], dtype=np.int64))])
            for dim, count in self.counts.items()
            if count in nc.variables
        }
        extents = [self.extent(path, k) for k in materials]
        for dim, d in nc.dimensions.items():
            if dim in self.concat:
                self.sizes[dim] = self.sizes.get(dim, 0) + sum(e[dim].stop - e[dim].start for e in extents if dim in e)
            else:
                self.sizes[dim] = max(self.sizes.get(dim, 0), len(d))
        for name, var in nc.variables.items():
            attrs = {k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"}
            fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
            known = self.variables.get(name)
            # xarray writes an empty string variable as float: strings win
            if known is None or (known[0] is not str and var.dtype is str):
                self.variables[name] = (str if var.dtype is str else var.datatype, var.dimensions, fill, attrs)
            if not set(var.dimensions) & self.concat and var.size >= self._fixed_size.get(name, 0):
                self.fixed[name], self._fixed_size[name] = path, var.size

    def extent(self, path: Path, k: int) -> dict[str, slice]:
        """Where material `k` of a source lies along each concatenated dimension."""
        out = {MATERIAL: slice(k, k + 1)}
        for dim, starts in self._starts[path].items():
            out[dim] = slice(int(starts[k]), int(starts[k + 1]))
        return out


# --------------------------------------------------------------------------------------------
# resume checks
# --------------------------------------------------------------------------------------------


def _identity(attrs: Mapping[str, Any]) -> set[str]:
    return {k for k in attrs if k.startswith("setting_") or k in IDENTITY_ATTRS}


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    a, b = np.ravel(a), np.ravel(b)  # netCDF reads a one-element attribute back as a scalar
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return a.shape == b.shape and bool(np.allclose(a.astype(float), b.astype(float), rtol=1e-12, atol=0, equal_nan=True))
    return a.shape == b.shape and bool(np.all(a.astype(str) == b.astype(str)))


def _show(value: Any) -> str:
    if value is None:
        return "absent"
    text = str(np.asarray(value).tolist()) if isinstance(value, (np.ndarray, list, tuple)) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


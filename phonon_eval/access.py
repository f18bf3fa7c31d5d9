"""One material of a results file (phonons or κ) as a plain Dataset: the ragged layout cut out.

A results file stores what varies in length between materials (band paths, DOS grids, κ mode
data) as CF contiguous ragged arrays: `<x>_count[material]` consecutive points of the sample
dimension named by the count's `sample_dimension` attribute. `material` cuts one material's
points out, and its bands (3·n_primitive of them), with every other variable at that material.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from phonon_eval.names import not_found

__all__ = ["MaterialNotFoundError", "file_kind", "material"]

# a variable only one kind of file holds -> the kind
_KINDS = {"path_count": "phonons", "qpoint_count": "kappa"}


class MaterialNotFoundError(KeyError):
    """A material id the results do not hold (the message suggests the closest ids)."""

    def __str__(self) -> str:  # KeyError's own would quote the message
        return str(self.args[0])


def file_kind(ds: xr.Dataset) -> str:
    """"phonons" (written by `pft-eval phonons`) or "kappa" (by `pft-eval kappa`).

    Raises:
        ValueError: neither kind of results.
    """
    for variable, kind in _KINDS.items():
        if variable in ds:
            return kind
    raise ValueError(f"{_source(ds) or 'the dataset'} is not a results file of pft-eval phonons or kappa")


def material(ds: xr.Dataset, id: str) -> xr.Dataset:
    """One material's data, loaded: properties at it, its ragged points, its bands only.

    Phonon files give `band_frequency[_ref]` (path_point, band) with the coordinates
    `band_distance`, `band_segment`, `band_label`; `dos[_ref]` over the coordinate
    `dos_frequency`; S, F, C_V (temperature); ω_max and the other scalars. κ files give `kappa`,
    `kappa_tensor`, `srme`, ... (temperature, ...), and `frequency[_ref]`, `mode_kappa[_ref]`
    (..., qpoint, band) with `weight` and `qpoint_coordinates`. A failed material has empty
    point dimensions; `status` and `error` say why.

    Only this material is read from a lazily opened file.

    Args:
        ds: a results Dataset (`xarray.open_dataset` of a results file, or in memory).
        id: material id.

    Raises:
        MaterialNotFoundError: `id` is not in `ds` (the message names the closest ids).
        ValueError: `ds` is not a results file.
    """
    kind = file_kind(ds)
    ids = [str(m) for m in ds["material"].values]
    if id not in ids:
        raise MaterialNotFoundError(not_found("material", id, ids, _source(ds)))
    k = ids.index(id)
    cut: dict[str, object] = {"material": k}
    counts = [name for name in ds.data_vars if "sample_dimension" in ds[name].attrs]
    for name in counts:
        # counts are one integer per material: cheap to read whole, and all the slicing needs
        sizes = ds[name].values
        end = int(sizes[: k + 1].sum())
        cut[ds[name].attrs["sample_dimension"]] = slice(end - int(sizes[k]), end)
    n_primitive = int(ds["n_primitive_atoms"][k])
    cut["band"] = slice(0, 3 * max(n_primitive, 0))
    # index before loading: a lazily opened file reads this material's slices only
    one = ds.drop_vars(counts).isel({d: s for d, s in cut.items() if d in ds.dims}).load()
    if kind == "phonons":
        one = one.set_coords(["band_distance", "band_segment", "band_label"])
        one = one.set_coords("dos_frequency").swap_dims(dos_point="dos_frequency")
    else:
        one = one.set_coords(["qpoint_coordinates", "weight"])
    return one


def _source(ds: xr.Dataset) -> str:
    return str(ds.encoding.get("source", ""))

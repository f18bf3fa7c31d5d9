"""Band structure and DOS figures from a saved results Dataset alone (nothing is recomputed)."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = ["material_slice", "plot_bands"]


def material_slice(ds: xr.Dataset, material: str) -> dict[str, np.ndarray]:
    """The ragged band-path and DOS arrays of one material."""
    ids = [str(m) for m in ds["material"].values]
    if material not in ids:
        raise KeyError(f"material {material!r} is not in the results (have: {', '.join(ids)})")
    i = ids.index(material)
    if str(ds["status"][i].values) != "ok":
        raise ValueError(f"material {material!r} failed: {ds['error'][i].values}")
    p0 = int(ds["path_count"][:i].sum())
    d0 = int(ds["dos_count"][:i].sum())
    p = slice(p0, p0 + int(ds["path_count"][i]))
    d = slice(d0, d0 + int(ds["dos_count"][i]))
    n_bands = 3 * int(ds["n_primitive_atoms"][i])
    return {
        "distance": ds["band_distance"].values[p],
        "segment": ds["band_segment"].values[p],
        "label": ds["band_label"].values[p],
        "frequency": ds["band_frequency"].values[p, :n_bands],
        "frequency_ref": ds["band_frequency_ref"].values[p, :n_bands],
        "dos_frequency": ds["dos_frequency"].values[d],
        "dos": ds["dos"].values[d],
        "dos_ref": ds["dos_ref"].values[d],
        "formula": str(ds["formula"][i].values),
    }


def _tex(label: str) -> str:
    return r"$\Gamma$" if label in ("GAMMA", "G", "Γ") else label.replace("_", "")


def plot_bands(
    ds: xr.Dataset, material: str, model_name: str = "model", reference_name: str = "reference (DFT)"
) -> Figure:
    """Phonon bands along the q-path (model vs reference) with the DOS beside them."""
    m = material_slice(ds, material)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax, ax_dos = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    ref_style = {"color": "0.2", "lw": 1.2}
    model_style = {"color": "tab:red", "lw": 1.0, "ls": "--"}
    for seg in np.unique(m["segment"]):
        s = m["segment"] == seg
        x = m["distance"][s]
        ax.plot(x, m["frequency_ref"][s], **ref_style)
        ax.plot(x, m["frequency"][s], **model_style)
    ticks, names = [], []
    for x, name in zip(m["distance"], m["label"]):
        if name:
            if ticks and np.isclose(ticks[-1], x):
                if names[-1] != _tex(name):  # a break in the path: "X|K"
                    names[-1] = f"{names[-1]}|{_tex(name)}"
            else:
                ticks.append(x)
                names.append(_tex(name))
    for x in ticks:
        ax.axvline(x, color="0.7", lw=0.6)
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set_xticks(ticks, names)
    ax.set_xlim(m["distance"][0], m["distance"][-1])
    ax.set_ylabel("Frequency (THz)")
    ax.set_title(f"{material} ({m['formula']})")
    ax.legend(
        [Line2D([], [], **ref_style), Line2D([], [], **model_style)],
        [reference_name, model_name],
        loc="lower right",
        frameon=False,
    )
    ax_dos.plot(m["dos_ref"], m["dos_frequency"], **ref_style)
    ax_dos.plot(m["dos"], m["dos_frequency"], **model_style)
    ax_dos.set_xlabel("DOS (1/THz)")
    ax_dos.set_xlim(left=0)
    return fig

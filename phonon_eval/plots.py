"""Band structure and DOS figures from a saved results Dataset alone (nothing is recomputed)."""

from __future__ import annotations

from collections.abc import Sequence

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

    def cut(name: str, where: slice, bands: bool = False) -> np.ndarray:
        # slice before reading: a lazily opened file then reads this material only
        return ds[name][where, :n_bands].values if bands else ds[name][where].values

    return {
        "distance": cut("band_distance", p),
        "segment": cut("band_segment", p),
        "label": cut("band_label", p),
        "frequency": cut("band_frequency", p, True),
        "frequency_ref": cut("band_frequency_ref", p, True),
        "dos_frequency": cut("dos_frequency", d),
        "dos": cut("dos", d),
        "dos_ref": cut("dos_ref", d),
        "formula": str(ds["formula"][i].values),
        "reference_name": str(ds["reference_name"][i].values) if "reference_name" in ds else "reference",
    }


def _tex(label: str) -> str:
    return r"$\Gamma$" if label in ("GAMMA", "G", "Γ") else label.replace("_", "")


_MODEL_STYLES = (
    {"color": "tab:red", "lw": 1.0, "ls": "--"},
    {"color": "tab:blue", "lw": 1.0, "ls": "-."},
    {"color": "tab:green", "lw": 1.0, "ls": ":"},
    {"color": "tab:purple", "lw": 1.0, "ls": (0, (5, 1))},
)


def plot_bands(
    results: xr.Dataset | Sequence[xr.Dataset],
    material: str,
    model_name: str | Sequence[str] = "model",
    reference_name: str | None = None,
) -> Figure:
    """Phonon bands along the q-path (one or more models vs the reference) with the DOS beside them.

    The reference's legend entry is `reference_name`, by default the label the results file
    holds for the material (its record's: "MDR PBE", "DFT", "EMT").

    Several results files of the same material (say before and after fine-tuning) are drawn
    over one reference curve; they must share the band path and the reference, else ValueError.
    """
    datasets = [results] if isinstance(results, xr.Dataset) else list(results)
    names = [model_name] if isinstance(model_name, str) else list(model_name)
    if len(names) != len(datasets):
        raise ValueError(f"{len(datasets)} results but {len(names)} model names")
    if len(datasets) > len(_MODEL_STYLES):
        raise ValueError(f"at most {len(_MODEL_STYLES)} results in one figure")
    slices = [material_slice(ds, material) for ds in datasets]
    m = slices[0]
    for name, other in zip(names[1:], slices[1:]):
        same_path = other["distance"].shape == m["distance"].shape and np.allclose(other["distance"], m["distance"])
        if not same_path or not np.allclose(other["frequency_ref"], m["frequency_ref"], atol=1e-6):
            raise ValueError(f"{name}: {material} has another band path or reference than {names[0]}")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax, ax_dos = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    ref_style = {"color": "0.2", "lw": 1.2}
    styles = _MODEL_STYLES[: len(slices)]
    for seg in np.unique(m["segment"]):
        s = m["segment"] == seg
        x = m["distance"][s]
        ax.plot(x, m["frequency_ref"][s], **ref_style)
        for other, style in zip(slices, styles):
            ax.plot(x, other["frequency"][s], **style)
    ticks, labels = [], []
    for x, name in zip(m["distance"], m["label"]):
        if name:
            if ticks and np.isclose(ticks[-1], x):
                if labels[-1] != _tex(name):  # a break in the path: "X|K"
                    labels[-1] = f"{labels[-1]}|{_tex(name)}"
            else:
                ticks.append(x)
                labels.append(_tex(name))
    for x in ticks:
        ax.axvline(x, color="0.7", lw=0.6)
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set_xticks(ticks, labels)
    ax.set_xlim(m["distance"][0], m["distance"][-1])
    ax.set_ylabel("Frequency (THz)")
    ax.set_title(f"{material} ({m['formula']})")
    ax.legend(
        [Line2D([], [], **ref_style)] + [Line2D([], [], **style) for style in styles],
        [reference_name or m["reference_name"], *names],
        loc="lower right",
        frameon=False,
    )
    ax_dos.plot(m["dos_ref"], m["dos_frequency"], **ref_style)
    for other, style in zip(slices, styles):
        ax_dos.plot(other["dos"], other["dos_frequency"], **style)
    ax_dos.set_xlabel("DOS (1/THz)")
    ax_dos.set_xlim(left=0)
    return fig

"""Figures from saved results Datasets alone (nothing is recomputed): bands with DOS and
thermodynamics of one material, parity of model vs reference over materials, mode and
cumulative κ of one material.

Each function takes one results Dataset or several (models side by side, say before and after
fine-tuning, over one reference curve) and returns a `matplotlib.figure.Figure`; save it with
`fig.savefig(path)` (PNG, PDF, SVG by suffix) and resize it with `fig.set_size_inches`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from phonon_eval.access import file_kind, material as material_data
from phonon_eval.kappa_results import metrics as kappa_metrics
from phonon_eval.provenance import reference_names
from phonon_eval.results import common_materials, metrics as phonon_metrics

__all__ = ["KINDS", "plot_bands", "plot_kappa", "plot_parity", "plot_thermo", "smear"]

# the figures each kind of results file can draw, its default first
KINDS = {"phonons": ("bands", "thermo", "parity"), "kappa": ("kappa", "parity")}

REFERENCE_STYLE = {"color": "0.15", "lw": 1.3, "ls": "-"}
# one colour per model in every figure, with a line style that tells them apart in grey print
MODEL_STYLES = (
    {"color": "tab:red", "lw": 1.1, "ls": "--"},
    {"color": "tab:blue", "lw": 1.1, "ls": "-."},
    {"color": "tab:green", "lw": 1.1, "ls": ":"},
    {"color": "tab:purple", "lw": 1.1, "ls": (0, (5, 1))},
)
MARKERS = ("o", "s", "^", "D")

Results = xr.Dataset | Sequence[xr.Dataset]
Names = str | Sequence[str]


def smear(frequency: np.ndarray, dos: np.ndarray, sigma: float) -> np.ndarray:
    """The DOS convolved with a Gaussian of standard deviation `sigma` on its own grid.

    Args:
        frequency: (N,) THz, ascending.
        dos: (N,) 1/THz.
        sigma: THz, > 0.

    Returns:
        (N,) 1/THz; the area is kept except for what spreads beyond the grid's ends.
    """
    if sigma <= 0:
        raise ValueError(f"smearing must be positive, not {sigma} THz")
    if len(frequency) < 2:
        return np.asarray(dos, dtype=float)
    width = np.gradient(frequency)  # the grid spacing at each point, for the integral
    gauss = np.exp(-0.5 * ((frequency[:, None] - frequency[None, :]) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    return gauss @ (dos * width)


def plot_bands(
    results: Results,
    material: str,
    model_name: Names = "model",
    reference_name: str | None = None,
    smearing: float | None = None,
) -> Figure:
    """Phonon bands along the q-path (one or more models vs the reference) with the DOS beside them.

    The frequency axis spans the data with a small margin: below zero only as far as imaginary
    (negative) modes reach.

    Args:
        results: one results Dataset of `pft-eval phonons`, or several of the same material
            (they must share the band path and the reference, else ValueError).
        material: material id.
        model_name: legend entry of each Dataset.
        reference_name: legend entry of the reference (default: the label the file holds, its
            record's: "MDR PBE", "DFT", "EMT").
        smearing: Gaussian standard deviation (THz) applied to every DOS (default: as stored).
    """
    cuts, names = _cuts(results, material, model_name, "phonons")
    m = cuts[0]
    _same_reference(cuts, names, material, "band_distance", "band_frequency_ref", "band path")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax, ax_dos = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    styles = MODEL_STYLES[: len(cuts)]
    segment = m["band_segment"].values
    for seg in np.unique(segment):
        s = segment == seg
        x = m["band_distance"].values[s]
        ax.plot(x, m["band_frequency_ref"].values[s], **REFERENCE_STYLE)
        for cut, style in zip(cuts, styles):
            ax.plot(x, cut["band_frequency"].values[s], **style)
    ticks, labels = _high_symmetry_ticks(m["band_distance"].values, m["band_label"].values)
    for x in ticks:
        ax.axvline(x, color="0.75", lw=0.6, zorder=0)
    ax.axhline(0.0, color="0.75", lw=0.6, zorder=0)
    ax.set_xticks(ticks, labels)
    ax.set_xlim(m["band_distance"].values[0], m["band_distance"].values[-1])
    ax.set_ylim(*_frequency_range([m["band_frequency_ref"].values] + [c["band_frequency"].values for c in cuts]))
    ax.set_ylabel("Frequency (THz)")

    def dos(cut: xr.Dataset, name: str) -> np.ndarray:
        values = cut[name].values
        if smearing:
            values = smear(cut["dos_frequency"].values, values, smearing)
        return np.clip(values, 0.0, None)  # interpolation can dip below zero; a DOS cannot

    ax_dos.plot(dos(m, "dos_ref"), m["dos_frequency"].values, **REFERENCE_STYLE)
    for cut, style in zip(cuts, styles):
        ax_dos.plot(dos(cut, "dos"), cut["dos_frequency"].values, **style)
    ax_dos.set_xlabel("DOS (1/THz)" + (f"\nσ = {smearing:g} THz" if smearing else ""))
    ax_dos.set_xlim(left=0)
    _title_and_legend(fig, m, material, reference_name, names, styles, on=ax)
    return fig


def plot_thermo(results: Results, material: str, model_name: Names = "model", reference_name: str | None = None) -> Figure:
    """Vibrational entropy, free energy and heat capacity against temperature, models vs the
    reference, for one material (three panels).

    Args:
        results: one or several results Datasets of `pft-eval phonons` with this material.
        material: material id.
        model_name: legend entry of each Dataset.
        reference_name: legend entry of the reference (default: the file's label).
    """
    cuts, names = _cuts(results, material, model_name, "phonons")
    m = cuts[0]
    _same_reference(cuts, names, material, "temperature", "entropy_ref", "set of temperatures")
    fig = Figure(figsize=(9, 3.3), layout="constrained")
    styles = MODEL_STYLES[: len(cuts)]
    for ax, (name, symbol) in zip(fig.subplots(1, 3), THERMO):
        ax.plot(m["temperature"], m[name + "_ref"], marker="o", ms=3.5, **REFERENCE_STYLE)
        for cut, style, marker in zip(cuts, styles, MARKERS):
            ax.plot(cut["temperature"], cut[name], marker=marker, ms=3.5, mfc="none", **style)
        ax.set_xlabel("Temperature (K)")
        ax.set_ylabel(f"{symbol} ({m[name].attrs['units']})")
        ax.set_xlim(left=0)
    _title_and_legend(fig, m, material, reference_name, names, styles, marker=True)
    return fig


THERMO = (("entropy", "$S$"), ("free_energy", "$F$"), ("heat_capacity", "$C_V$"))
PARITY = (("omega_max_K", r"$\omega_\mathrm{max}$"), *THERMO)


def plot_parity(results: Results, model_name: Names = "model", temperature: float = 300.0) -> Figure:
    """Model against reference over materials, for one or several results files, with each
    model's error in the legend.

    Phonon files: ω_max, S, F and C_V at `temperature` (four panels), the MAE taken over the
    materials every file evaluated successfully (as the run's table takes it). κ files: κ on
    log axes with its MAE over the materials every file has a κ of, and κ_SRME over all (as
    Matbench Discovery, with the penalty for materials without a model κ).

    Args:
        results: one or several results Datasets of one kind.
        model_name: legend entry of each Dataset.
        temperature: K, one of the files' temperatures.
    """
    datasets, names = _inputs(results, model_name)
    kinds = {file_kind(ds) for ds in datasets}
    if len(kinds) > 1:
        raise ValueError("a parity plot takes phonon results or κ results, not both")
    for ds in datasets:
        _check_temperature(ds, temperature)
    if kinds == {"kappa"}:
        return _kappa_parity(datasets, names, temperature)
    common = common_materials(*datasets)
    if not common:
        raise ValueError("no material was evaluated successfully in every file: nothing to compare")
    fig = Figure(figsize=(7, 6.6), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (name, symbol) in zip(axes, PARITY):
        units = datasets[0][name].attrs["units"]
        for ds, label, style, marker in zip(datasets, names, MODEL_STYLES, MARKERS):
            mae = phonon_metrics(ds, temperature, common)[name]
            # each file against its own reference: files may differ in it (settings, records)
            ax.scatter(_at(ds, name + "_ref", common, temperature), _at(ds, name, common, temperature), s=22, marker=marker, color=style["color"],
                       alpha=0.8, label=f"{label} (MAE {mae:.3g} {units})")
        _parity_axes(ax, f"{symbol} reference ({units})", f"{symbol} model ({units})")
        ax.legend(loc="best", frameon=False, fontsize="small", handletextpad=0.2)
    fig.suptitle(f"Model vs {_references(datasets)}, {_count(len(common))}; $S$, $F$, $C_V$ at {temperature:g} K", fontsize="medium")
    return fig


def plot_kappa(
    results: Results,
    material: str,
    model_name: Names = "model",
    reference_name: str | None = None,
    temperature: float = 300.0,
) -> Figure:
    """Mode κ against frequency and cumulative κ against frequency, models vs the reference,
    for one material of κ results.

    A mode's κ is its q-point's share of phono3py's κ (mode_kappa over the total weight): the
    mode κ of a material sum to its κ, where the cumulative curve ends.

    Args:
        results: one or several results Datasets of `pft-eval kappa` with this material.
        material: material id.
        model_name: legend entry of each Dataset.
        reference_name: legend entry of the reference (default: the file's label).
        temperature: K, one of the files' temperatures.
    """
    cuts, names = _cuts(results, material, model_name, "kappa")
    for cut in cuts:
        _check_temperature(cut, temperature)
    _same_reference(cuts, names, material, "weight", "kappa_ref", "q-point mesh")
    m = cuts[0].sel(temperature=temperature)
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax_mode, ax_cum = fig.subplots(1, 2, sharex=True)
    styles = MODEL_STYLES[: len(cuts)]
    sides = [(m["frequency_ref"], m["mode_kappa_ref"], m, REFERENCE_STYLE, "o")]
    sides += [(c["frequency"], c["mode_kappa"].sel(temperature=temperature), c, s, k) for c, s, k in zip(cuts, styles, MARKERS)]
    for frequency, mode_kappa, cut, style, marker in sides:
        f, k = frequency.values.ravel(), (mode_kappa.values / cut["weight"].values.sum()).ravel()
        keep = np.isfinite(f) & np.isfinite(k)
        f, k = f[keep], k[keep]
        if not len(f):  # a reference without mode data (only its κ)
            continue
        positive = k > 0  # acoustic modes at Γ carry none, and log axes cannot show it
        ax_mode.scatter(f[positive], k[positive], s=12, marker=marker, color=style["color"], alpha=0.7,
                        facecolors="none" if style is not REFERENCE_STYLE else style["color"], linewidths=0.8)
        order = np.argsort(f)
        ax_cum.step(np.r_[0.0, f[order]], np.r_[0.0, np.cumsum(k[order])], where="post", **style)
    ax_mode.set_yscale("log")
    ax_mode.set_xlabel("Frequency (THz)")
    ax_mode.set_ylabel("Mode κ (W/m-K)")
    ax_cum.set_xlabel("Frequency (THz)")
    ax_cum.set_ylabel("Cumulative κ (W/m-K)")
    ax_cum.set_xlim(left=0)
    ax_cum.set_ylim(0, 1.06 * ax_cum.get_ylim()[1])
    kappas = [float(m["kappa_ref"])] + [float(c["kappa"].sel(temperature=temperature)) for c in cuts]
    _title_and_legend(
        fig, m, material, reference_name, names, styles, marker=True,
        values=[f"κ = {k:.3g} W/m-K" if np.isfinite(k) else "no κ" for k in kappas], on=ax_cum, inside=True,  # above a cumulative curve is empty
    )
    return fig


def _inputs(results: Results, model_name: Names) -> tuple[list[xr.Dataset], list[str]]:
    datasets = [results] if isinstance(results, xr.Dataset) else list(results)
    names = [model_name] if isinstance(model_name, str) else list(model_name)
    if len(names) != len(datasets):
        raise ValueError(f"{len(datasets)} results but {len(names)} model names")
    if len(datasets) > len(MODEL_STYLES):
        raise ValueError(f"at most {len(MODEL_STYLES)} results in one figure")
    return datasets, names


def _cuts(results: Results, material: str, model_name: Names, kind: str) -> tuple[list[xr.Dataset], list[str]]:
    """The material of each Dataset, which must be of `kind` and have succeeded there."""
    datasets, names = _inputs(results, model_name)
    cuts = []
    for ds in datasets:
        have = file_kind(ds)
        if have != kind:
            what = "κ results have no bands or thermodynamics" if have == "kappa" else "phonon results have no κ"
            raise ValueError(f"{what}; they can plot: {', '.join(KINDS[have])}")
        cut = material_data(ds, material)
        status = str(cut["status"].values)
        if status != "ok":
            raise ValueError(f"material {material} {'failed' if status == 'failed' else f'has no model κ ({status})'}: {cut['error'].values}")
        cuts.append(cut)
    return cuts, names


def _same_reference(cuts: list[xr.Dataset], names: list[str], material: str, grid: str, reference: str, what: str) -> None:
    """Several results drawn over one reference curve must have the same one, on the same `grid`."""
    first = cuts[0]
    for name, other in zip(names[1:], cuts[1:]):
        same_grid = other[grid].shape == first[grid].shape and np.allclose(other[grid], first[grid])
        if not same_grid or not np.allclose(other[reference], first[reference], atol=1e-6, equal_nan=True):
            raise ValueError(f"{name}: {material} has another {what} or reference than {names[0]}")


def _high_symmetry_ticks(distance: np.ndarray, label: np.ndarray) -> tuple[list[float], list[str]]:
    ticks: list[float] = []
    labels: list[str] = []
    for x, name in zip(distance, label):
        if name:
            if ticks and np.isclose(ticks[-1], x):
                if labels[-1] != _tex(name):  # a break in the path: "X|K"
                    labels[-1] = f"{labels[-1]}|{_tex(name)}"
            else:
                ticks.append(x)
                labels.append(_tex(name))
    return ticks, labels


def _tex(label: str) -> str:
    return r"$\Gamma$" if label in ("GAMMA", "G", "Γ") else label.replace("_", "")


def _frequency_range(frequencies: list[np.ndarray]) -> tuple[float, float]:
    """Limits that fit the bands: zero with a small margin below, unless modes are imaginary."""
    low = min(float(np.nanmin(f)) for f in frequencies)
    high = max(float(np.nanmax(f)) for f in frequencies)
    low = min(low, 0.0)
    margin = 0.03 * (high - low)
    return low - margin, high + margin


def _formula(formula: str) -> str:
    """"AuCu3" with the 3 as a subscript (mathtext)."""
    return re.sub(r"(\d+)", r"$_{\1}$", formula)


def _title_and_legend(
    fig: Figure,
    m: xr.Dataset,
    material: str,
    reference_name: str | None,
    names: list[str],
    styles: Sequence[dict],
    marker: bool = False,
    values: Sequence[str] = (),
    on: Axes | None = None,
    inside: bool = False,
) -> None:
    """The material as its title on the left, and one legend for every panel, on the right above
    the axes (of the figure, or of `on`) where it covers no data, or in the upper left inside
    `on`; `values` (reference first) go beside the names."""
    # files older than the label do not name their reference
    reference = reference_name or (str(m["reference_name"].values) if "reference_name" in m else "") or "reference"
    labels = [reference, *names]
    if values:
        labels = [f"{label} ({value})" for label, value in zip(labels, values)]
    ref = Line2D([], [], marker="o" if marker else None, ms=3.5, **REFERENCE_STYLE)
    models = [
        Line2D([], [], marker=k if marker else None, ms=3.5, mfc="none", **style) for style, k in zip(styles, MARKERS)
    ]
    formula = str(m["formula"].values)
    title = f"{material} ({_formula(formula)})" if formula else material
    if "temperature" in m.coords and m["temperature"].ndim == 0:
        title += f" at {float(m['temperature']):g} K"
    fig.suptitle(title, x=0.02, ha="left", fontsize="medium")
    if on is None:
        fig.legend([ref, *models], labels, loc="outside upper right", ncols=1 + len(names), frameon=False)
    elif inside:
        on.legend([ref, *models], labels, loc="upper left", frameon=False, fontsize="small")
    else:
        on.legend([ref, *models], labels, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=1 + len(names),
                  frameon=False, borderaxespad=0.2)


def _check_temperature(ds: xr.Dataset, temperature: float) -> None:
    have = ds["temperature"].values
    if not np.isclose(have, temperature).any():
        raise ValueError(f"no temperature {temperature:g} K in the results; they hold {', '.join(f'{t:g}' for t in have)} K")


def _at(ds: xr.Dataset, name: str, materials: list[str], temperature: float) -> np.ndarray:
    values = ds[name].sel(material=materials)
    return (values.sel(temperature=temperature, method="nearest") if "temperature" in values.dims else values).values


def _parity_axes(ax: Axes, xlabel: str, ylabel: str, log: bool = False) -> None:
    """Equal ranges on both axes with room for the legend, the diagonal, square."""
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    low = min(ax.get_xlim()[0], ax.get_ylim()[0])
    high = max(ax.get_xlim()[1], ax.get_ylim()[1])
    if log:
        low, high = low / 1.5, high * 1.5
        if high / low < 30:  # at least one labelled decade, no crowded minor labels
            middle = np.sqrt(low * high)
            low, high = middle / np.sqrt(30), middle * np.sqrt(30)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())
    else:
        low, high = low - 0.08 * (high - low), high + 0.08 * (high - low)
    ax.plot([low, high], [low, high], color="0.6", lw=0.8, zorder=0)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _references(datasets: list[xr.Dataset]) -> str:
    return ", ".join(sorted({n for ds in datasets for n in reference_names(ds).split(", ")}))


def _count(n: int) -> str:
    return f"{n} material{'s' if n != 1 else ''}"


def _kappa_parity(datasets: list[xr.Dataset], names: list[str], temperature: float) -> Figure:
    at = [ds.sel(temperature=temperature, method="nearest") for ds in datasets]
    # log axes: only materials with a model κ in every file and a positive reference κ
    usable = [set(a["material"].values[np.isfinite(a["kappa"].values) & (a["kappa_ref"].values > 0)].tolist()) for a in at]
    both = [i for i in at[0]["material"].values.tolist() if all(i in u for u in usable)]
    if not both:
        raise ValueError("no material has a model κ and a reference κ in every file: nothing to compare")
    fig = Figure(figsize=(4.6, 4.4), layout="constrained")
    ax = fig.subplots()
    for ds, a, label, style, marker in zip(datasets, at, names, MODEL_STYLES, MARKERS):
        model, ref = (a[name].sel(material=both).values for name in ("kappa", "kappa_ref"))
        mae = float(np.abs(model - ref).mean())
        srme = kappa_metrics(ds, temperature)["srme"]
        ax.scatter(ref, model, s=26, marker=marker, color=style["color"], alpha=0.8,
                   label=f"{label} (MAE {mae:.3g} W/m-K, κ$_\\mathrm{{SRME}}$ {srme:.2f})")
    _parity_axes(ax, "κ reference (W/m-K)", "κ model (W/m-K)", log=True)
    ax.legend(loc="best", frameon=False, fontsize="small", handletextpad=0.2)
    fig.suptitle(f"κ vs {_references(datasets)} at {temperature:g} K, {_count(len(both))}", fontsize="medium")
    return fig

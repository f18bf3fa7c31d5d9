"""`pft-eval plot`: the figures of results files, from the netCDF alone."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import EXIT_USAGE, console, fail, reported

FORMATS = (".png", ".pdf", ".svg")


def plot(
    results: Annotated[list[Path], typer.Argument(help="Results netCDF file(s) of `pft-eval phonons` or `pft-eval kappa`; several (e.g. before and after fine-tuning) are drawn side by side over one reference.")],
    kind: Annotated[Optional[str], typer.Option(help="Figure: bands (bands and DOS), thermo (S, F, C_V against temperature), parity (model vs reference over materials: ω_max, S, F, C_V, or κ on log axes) or kappa (mode and cumulative κ against frequency). Default: bands for phonon files, kappa for κ files.", show_default=False)] = None,
    material: Annotated[Optional[str], typer.Option(help="Material id (default: the first that succeeded in the first file); not for parity.", show_default=False)] = None,
    temperature: Annotated[float, typer.Option(help="Temperature in K of the parity and κ figures.")] = 300.0,
    smearing: Annotated[Optional[float], typer.Option(help="Gaussian smearing (standard deviation, THz) of the DOS in the bands figure (default: the DOS as stored).", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Figure file, .png, .pdf or .svg; default: <first results>-<material>-<kind>.png (parity: <first results>-parity.png).", show_default=False)] = None,
    dpi: Annotated[int, typer.Option(help="Resolution of a PNG, dots per inch.")] = 150,
    size: Annotated[Optional[str], typer.Option(help="Figure size W,H in inches, e.g. 3.4,2.6 for one column (default: the figure's own).", show_default=False)] = None,
) -> None:
    """Figures from the netCDF alone: bands with DOS, thermodynamics, parity over materials, κ."""
    import xarray as xr

    from phonon_eval import plots
    from phonon_eval.access import MaterialNotFoundError, file_kind

    inches = _size(size)
    if out is not None and out.suffix.lower() not in FORMATS:
        fail(f"--out {out}: give a .png, .pdf or .svg file", EXIT_USAGE)
    if smearing is not None and smearing <= 0:
        fail(f"--smearing {smearing:g}: give a positive width in THz", EXIT_USAGE)
    for path in results:
        if not path.is_file():
            fail(f"{path}: no such results file")
    with contextlib.ExitStack() as files:  # closed however the command ends
        with reported(OSError, ValueError):
            # opened lazily: only the material drawn is read, however large the files
            datasets = [files.enter_context(xr.open_dataset(path)) for path in results]
            kinds = [file_kind(ds) for ds in datasets]
        if len(set(kinds)) > 1:
            fail("give phonon results or κ results, not both: " + ", ".join(f"{p} ({k})" for p, k in zip(results, kinds)), EXIT_USAGE)
        can = plots.KINDS[kinds[0]]
        kind = kind or can[0]
        if kind not in can:
            known = plots.KINDS["phonons"] + plots.KINDS["kappa"]
            reason = f"no figure {kind}" if kind not in known else (
                "a κ results file has no bands or thermodynamics" if kinds[0] == "kappa" else "a phonon results file has no κ")
            fail(f"{reason}; {results[0]} can plot: {', '.join(can)} (--kind)", EXIT_USAGE)
        if kind == "parity" and material is not None:
            fail("--material is for one material's figure; parity draws all materials", EXIT_USAGE)
        # a file's own name says "before" or "after" better than the model name when they differ
        names = [_model_name(ds) for ds in datasets]
        if len(set(names)) < len(names):
            names = [path.stem for path in results]
        with reported(ValueError, MaterialNotFoundError):
            if kind == "parity":
                fig = plots.plot_parity(datasets, names, temperature=temperature)
            else:
                material = material or _first_ok(datasets[0], results[0])
                if kind == "bands":
                    fig = plots.plot_bands(datasets, material, names, smearing=smearing)
                elif kind == "thermo":
                    fig = plots.plot_thermo(datasets, material, names)
                else:
                    fig = plots.plot_kappa(datasets, material, names, temperature=temperature)
        if inches is not None:
            fig.set_size_inches(inches)
        if out is None:
            out = results[0].with_name(f"{results[0].stem}-{'parity' if kind == 'parity' else f'{material}-{kind}'}.png")
        with reported(OSError):
            fig.savefig(out, dpi=dpi)
    console.print(f"wrote {out}")


def _size(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        width, height = (float(v) for v in text.split(","))
    except ValueError:
        fail(f"--size {text}: give the width and height in inches, e.g. 6,4", EXIT_USAGE)
    if width <= 0 or height <= 0:
        fail(f"--size {text}: the width and height must be positive", EXIT_USAGE)
    return width, height


def _first_ok(ds, path: Path) -> str:
    ok = [str(m) for m, s in zip(ds["material"].values, ds["status"].values) if s == "ok"]
    if not ok:
        raise ValueError(f"{path}: no material succeeded, nothing to plot")
    return ok[0]


def _model_name(ds) -> str:
    name = str(ds.attrs.get("model", "model"))
    # files written before `model_kind` existed hold the model's path
    return name if "model_kind" in ds.attrs else Path(name).stem

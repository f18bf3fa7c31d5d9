"""`pft-eval`: evaluate a potential's phonons and thermal conductivity, convert and inspect models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import console, not_landed, reported, version_callback

app = typer.Typer(
    name="pft-eval",
    help="Evaluate machine-learned interatomic potentials on phonons (phonopy) and thermal "
    "conductivity (phono3py) against DFT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    pass


ModelArg = Annotated[Path, typer.Argument(help="Model file: a .ckpt checkpoint or a public Nequix .nqx file.")]


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Input model (.nqx or .ckpt).")],
    dest: Annotated[Path, typer.Argument(help="Output checkpoint (.ckpt), written atomically.")],
) -> None:
    """Convert a public Nequix .nqx file (or a .ckpt) into the project's model.ckpt format."""
    from phonon_eval.checkpoint import CheckpointError, convert as _convert

    with reported(CheckpointError, OSError):
        potential = _convert(source, dest)
    console.print(
        f"wrote {dest} ({len(potential.atomic_numbers)} elements, cutoff {potential.cutoff} Å)"
    )


@app.command()
def info(model: ModelArg) -> None:
    """Show a model's architecture, elements, cutoff, parameter count and provenance."""
    import equinox as eqx
    import jax
    from ase.data import chemical_symbols
    from rich.table import Table

    from phonon_eval.checkpoint import CheckpointError, load_potential, read_header

    with reported(CheckpointError, OSError):
        potential = load_potential(model)
        header = read_header(model)
    config = potential.model.config
    n_params = sum(x.size for x in jax.tree.leaves(eqx.filter(potential.model, eqx.is_array)))
    table = Table(title=str(model), show_header=False)
    table.add_row("format", header.get("format", "nequix .nqx"))
    table.add_row("parameters", f"{n_params:,}")
    table.add_row("sha256", potential.sha256)
    for key, value in config.to_dict().items():
        if key == "atomic_numbers":
            value = " ".join(chemical_symbols[z] for z in value)
        table.add_row(key, str(value))
    for key, value in (header.get("provenance") or {}).items():
        if key != "training_config":
            table.add_row(f"provenance.{key}", str(value))
    console.print(table)


@app.command()
def phonons(model: ModelArg) -> None:
    """Phonons with phonopy vs DFT: band structure, DOS, ω_max, S, F, C_V (not landed yet)."""
    not_landed("pft-eval phonons", "issue 4")


@app.command()
def kappa(model: ModelArg) -> None:
    """Lattice thermal conductivity with phono3py and κ_SRME vs DFT (not landed yet)."""
    not_landed("pft-eval kappa", "issue 5")


@app.command()
def plot(results: Annotated[Path, typer.Argument(help="Results netCDF written by `pft-eval phonons`.")]) -> None:
    """Band structures and DOS from a saved results netCDF (not landed yet)."""
    not_landed("pft-eval plot", "issue 4")


def main() -> None:
    app()

"""`pft-finetune`: phonon fine-tuning with the Hessian-column loss."""

from __future__ import annotations

import typer

from cli.common import not_landed

app = typer.Typer(
    name="pft-finetune",
    help="Fine-tune a potential on DFT force constants (PFT) with Hessian-vector products.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def finetune() -> None:
    """Phonon fine-tuning (not landed yet)."""
    not_landed("pft-finetune", "issue 6")


def main() -> None:
    app()

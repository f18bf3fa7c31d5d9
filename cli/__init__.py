"""Command-line interfaces: thin typer apps over phonon_eval and finetune."""

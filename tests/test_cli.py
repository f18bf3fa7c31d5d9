"""The command-line apps: help, version, and honest refusals for work that has not landed."""

from __future__ import annotations

from typer.testing import CliRunner

from cli.eval import app as eval_app
from cli.finetune import app as finetune_app

runner = CliRunner()


def test_help_lists_every_command():
    res = runner.invoke(eval_app, ["--help"])
    assert res.exit_code == 0
    for command in ["convert", "info", "phonons", "kappa", "plot"]:
        assert command in res.output


def test_version():
    res = runner.invoke(eval_app, ["--version"])
    assert res.exit_code == 0 and "pft-toolkit" in res.output


def test_finetune_help_is_complete():
    res = runner.invoke(finetune_app, ["--help"])
    assert res.exit_code == 0
    for option in ["--model", "--init", "--dataset", "--symmetry-sampling", "--cotrain", "--config", "--resume", "--epochs",
                   "--probe", "--n-probes", "--example-cache"]:
        assert option in res.output


def test_help_states_the_exit_status():
    for app, command in ((eval_app, ["phonons", "--help"]), (eval_app, ["kappa", "--help"]), (finetune_app, ["--help"])):
        text = " ".join(runner.invoke(app, command).output.split())
        assert "Exit status" in text and "130 interrupted" in text and "2 bad usage" in text, command

"""The README walkthrough, run verbatim: PFT makes the demo potential's phonons better.

The commands are read from the README's walkthrough block, so a README that drifts from the
code fails here. The reference check of the embedded demo: fine-tuning lowers the test-split
MAE of at least three of ω_max, S, F, C_V, and co-training keeps the energy and force errors on
held-out upstream frames within 20 % of their starting values.
"""

from __future__ import annotations

import csv
import numpy as np
import pytest
import xarray as xr
from conftest import REPO, readme_block
from typer.testing import CliRunner

from cli.eval import app as eval_app
from cli.finetune import app as finetune_app
from phonon_eval.results import metrics

APPS = {"pft-eval": eval_app, "pft-finetune": finetune_app}
WALKTHROUGH = "<!-- walkthrough"


def test_readme_first_command_is_the_walkthroughs_first_step():
    install, tests = readme_block("On a fresh machine")
    walkthrough = readme_block(WALKTHROUGH)
    last = max(i for i, token in enumerate(install) if token == "&&")
    assert install[last + 1 :] == walkthrough[0]
    assert tests == ["python", "-m", "pytest", "-q"]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    """Every walkthrough command in a fresh folder that sees the repository's data/."""
    folder = tmp_path_factory.mktemp("walkthrough")
    (folder / "data").symlink_to(REPO / "data")
    runner = CliRunner()
    results = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for argv in readme_block(WALKTHROUGH):
            assert argv[0] in APPS, f"README walkthrough runs {argv[0]}, not a project command"
            res = runner.invoke(APPS[argv[0]], argv[1:])
            results.append((argv, res))
            if res.exit_code != 0:
                break
    return folder, results


def test_walkthrough_commands_succeed(walkthrough):
    folder, results = walkthrough
    for argv, res in results:
        assert res.exit_code == 0, f"{shlex.join(argv)}\n{res.output}\n{res.exception!r}"
    assert len(results) == len(readme_block(WALKTHROUGH))
    for name in ("before.nc", "after.nc", "pft.ckpt", "pft.csv", "Cu3Au-L12.png", "kappa.nc"):
        assert (folder / name).is_file(), name


def test_pft_improves_the_demo_phonons(walkthrough):
    folder, results = walkthrough
    assert all(res.exit_code == 0 for _, res in results)
    before = metrics(xr.load_dataset(folder / "before.nc"))
    after = metrics(xr.load_dataset(folder / "after.nc"))
    assert before["n_failed"] == after["n_failed"] == 0
    keys = ("omega_max_K", "entropy", "free_energy", "heat_capacity")
    lower = [k for k in keys if after[k] < before[k]]
    assert len(lower) >= 3, f"PFT lowered only {lower}: before {before}, after {after}"

    with open(folder / "pft.csv") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    assert float(last["val_hessian_mae"]) < float(first["val_hessian_mae"])
    for key in ("val_energy_mae", "val_force_mae"):
        assert float(last[key]) <= 1.2 * float(first[key]), (key, first[key], last[key])


def test_walkthrough_kappa_is_computed_against_the_emt_reference(walkthrough):
    folder, results = walkthrough
    assert all(res.exit_code == 0 for _, res in results)
    ds = xr.load_dataset(folder / "kappa.nc")
    assert [str(m) for m in ds["material"].values] == ["Cu-fcc"]
    assert str(ds["status"].values[0]) == "ok"
    srme = float(np.asarray(ds["srme"]).ravel()[0])
    assert 0.0 <= srme < 2.0

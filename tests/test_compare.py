"""`pft-eval compare`: results files side by side over the materials they all evaluated."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from cli.eval import BUILTIN_DATASET, app
from phonon_eval.compare import CompareError, compare

runner = CliRunner()
FAST = ["--no-relax", "--mesh", "4", "--temperatures", "0,300", "--band-points", "5", "--no-progress"]
EMT = ["--calculator", "ase.calculators.emt:EMT"]


def _run(args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code in (0, 3), res.output


@pytest.fixture(scope="session")
def files(tmp_path_factory, tiny_ckpt):
    """EMT twice on the test split, the tiny model (Pt-fcc fails) on it, and one κ file."""
    folder = tmp_path_factory.mktemp("compare")
    out = {name: folder / f"{name}.nc" for name in ("emt", "emt_again", "tiny", "kappa")}
    _run(["phonons", *EMT, "--split", "test", "--out", str(out["emt"]), *FAST])
    _run(["phonons", *EMT, "--split", "test", "--out", str(out["emt_again"]), *FAST])
    _run(["phonons", str(tiny_ckpt), "--split", "test", "--out", str(out["tiny"]), *FAST])
    _run(["kappa", *EMT, "--dataset", str(BUILTIN_DATASET.parent / "emt-kappa"), "--mesh", "5", "--out", str(out["kappa"]), "--no-progress"])
    return out


def test_the_same_model_twice_gives_zero_differences(files):
    result = compare([files["emt"], files["emt_again"]])
    assert result.kind == "phonons" and len(result.common) == 4 and result.dropped == {}
    first, second = result.rows
    assert first["model"] == second["model"] == "EMT" and first["n_failed"] == 0
    for key in ("omega_max_K", "entropy", "free_energy", "heat_capacity", "mode_mae", "band_mae"):
        assert first[key] == second[key]
    by_material = {}
    for row in result.per_material:
        by_material.setdefault(row["material"], []).append(row)
    assert len(by_material) == 4 and all(a == {**b, "file": a["file"]} for a, b in by_material.values())


def test_different_failures_use_the_common_set_and_say_so(files):
    result = compare([files["emt"], files["tiny"]])
    assert "Pt-fcc" not in result.common and len(result.common) == 3
    assert "Pt-fcc" in result.dropped and "failed in" in result.dropped["Pt-fcc"] and str(files["tiny"]) in result.dropped["Pt-fcc"]
    emt, tiny = result.rows
    assert (emt["n_failed"], tiny["n_failed"]) == (0, 1) and tiny["model"] == "tiny"
    res = runner.invoke(app, ["compare", str(files["emt"]), str(files["tiny"])])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "3 materials evaluated successfully by all 2 files; 1 left out: Pt-fcc (failed in" in text


def test_a_mix_of_kappa_and_phonon_files_is_refused_by_name(files):
    with pytest.raises(CompareError, match="phonon files: .*emt.nc; κ files: .*kappa.nc"):
        compare([files["emt"], files["kappa"]])
    res = runner.invoke(app, ["compare", str(files["emt"]), str(files["kappa"])])
    assert res.exit_code == 2 and "kappa.nc" in res.output and "emt.nc" in res.output


def test_kappa_files_compare_their_srme(files):
    result = compare([files["kappa"], files["kappa"]])
    assert result.kind == "kappa" and result.common == ("Cu-fcc",)
    row = result.rows[0]
    assert {"srme", "sre", "srd", "srme_all"} <= set(row) and 0 <= row["srme"] < 2


@pytest.mark.parametrize("per_material", [False, True])
def test_formats_parse(files, tmp_path, per_material):
    args = ["compare", str(files["emt"]), str(files["tiny"])] + (["--per-material"] if per_material else [])
    n_rows = 6 if per_material else 2  # 3 common materials x 2 files, or one row per file

    res = runner.invoke(app, [*args, "--format", "json", "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert len(data["rows"]) == n_rows and data["common"] == ["Cu-fcc", "Cu3Au-L12", "CuAu-L10"] and "Pt-fcc" in data["dropped"]

    res = runner.invoke(app, [*args, "--format", "csv", "--out", str(tmp_path / "c.csv")])
    rows = list(csv.DictReader(io.StringIO((tmp_path / "c.csv").read_text())))
    assert res.exit_code == 0 and len(rows) == n_rows and "model" in rows[0]
    float(rows[0]["entropy"])

    res = runner.invoke(app, [*args, "--format", "markdown", "--out", str(tmp_path / "c.md")])
    lines = [line for line in (tmp_path / "c.md").read_text().splitlines() if line.startswith("|")]
    assert res.exit_code == 0 and len(lines) == 2 + n_rows
    assert len({line.count("|") for line in lines}) == 1 and set(lines[1]) <= set("|:-")


def test_bad_usage(files, tmp_path):
    res = runner.invoke(app, ["compare", str(files["emt"]), "--format", "xml"])
    assert res.exit_code == 2 and "--format xml" in res.output
    res = runner.invoke(app, ["compare", str(files["emt"]), str(tmp_path / "none.nc")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["compare", str(files["emt"]), "--temperature", "500"])
    assert res.exit_code == 2 and "no results at 500 K" in res.output

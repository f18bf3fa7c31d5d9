"""`pft-eval phonons` and `pft-eval plot` end to end on the built-in EMT dataset, with a tiny model."""

from __future__ import annotations

import pytest
import xarray as xr
from typer.testing import CliRunner

import phonon_eval as pe
import phonon_eval.results as runner_module
from cli.eval import BUILTIN_DATASET, app

runner = CliRunner()
FAST = ["--no-relax", "--mesh", "4", "--temperatures", "0,300", "--band-points", "5", "--no-progress"]


@pytest.fixture
def count_evaluations(monkeypatch):
    calls = []
    real = runner_module.evaluate_material

    def counting(model, record, settings):
        calls.append(record.id)
        return real(model, record, settings)

    monkeypatch.setattr(runner_module, "evaluate_material", counting)
    return calls


def test_phonons_on_builtin_split_records_failures_and_resumes(tmp_path, tiny_ckpt, count_evaluations):
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--split", "test", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert "MAE" in res.output
    ds = xr.load_dataset(out)
    assert list(ds["material"].values) == ["Cu-fcc", "Pt-fcc", "Cu3Au-L12", "CuAu-L10"]
    status = dict(zip(ds["material"].values, ds["status"].values))
    assert status["Pt-fcc"] == "failed" and "Pt (Z=78)" in str(ds["error"].sel(material="Pt-fcc").values)
    assert sum(s == "ok" for s in status.values()) == 3
    assert ds.attrs["setting_fc_method"] == ds.attrs["fc_method_used"] == "finite" and "phonopy" in ds.attrs["source"]
    assert ds.attrs["model_sha256"] == pe.load_potential(tiny_ckpt).sha256
    assert len(count_evaluations) == 4

    # --resume does nothing more, and gives the same results
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--split", "test", "--out", str(out), "--resume", *FAST])
    assert res.exit_code == 0, res.output
    assert len(count_evaluations) == 4
    again = xr.load_dataset(out)
    for d in (ds, again):
        d.attrs.pop("history")
    xr.testing.assert_identical(again, ds)


def test_resume_after_a_partial_run_evaluates_only_the_rest(tmp_path, tiny_ckpt, count_evaluations):
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fcc", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fcc,CuAu-L10", "--out", str(out), "--resume", *FAST])
    assert res.exit_code == 0, res.output
    assert count_evaluations == ["Cu-fcc", "CuAu-L10"]
    assert list(xr.load_dataset(out)["material"].values) == ["Cu-fcc", "CuAu-L10"]


def test_plot_from_the_netcdf_alone(tmp_path, tiny_ckpt):
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "CuAu-L10", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    png = tmp_path / "bands.png"
    res = runner.invoke(app, ["plot", str(out), "--material", "CuAu-L10", "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    res = runner.invoke(app, ["plot", str(out), "--material", "nope"])
    assert res.exit_code == 1 and "no material nope in" in res.output and "known: CuAu-L10" in res.output

    # several results over one reference; one from another material setting is refused
    other = tmp_path / "other.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "CuAu-L10", "--out", str(other), *FAST[:-3], "--band-points", "7", "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["plot", str(out), str(out), "--material", "CuAu-L10", "--out", str(tmp_path / "two.png")])
    assert res.exit_code == 0 and (tmp_path / "two.png").is_file(), res.output
    res = runner.invoke(app, ["plot", str(out), str(other), "--material", "CuAu-L10", "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 1 and "another band path or reference" in res.output


def test_bad_inputs_give_one_clear_line(tmp_path, tiny_ckpt):
    res = runner.invoke(app, ["phonons", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "r.nc")])
    assert res.exit_code == 1 and "no such checkpoint" in res.output
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--split", "nosuch", "--out", str(tmp_path / "r.nc")])
    assert res.exit_code == 1 and "nosuch" in res.output
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--temperatures", "100,200", "--out", str(tmp_path / "r.nc")])
    assert res.exit_code == 2 and "300 K" in res.output
    assert BUILTIN_DATASET.is_dir()

"""`pft-eval phonons` and `pft-eval plot` end to end on the built-in EMT dataset, with a tiny model."""

from __future__ import annotations

import pytest
import xarray as xr
from typer.testing import CliRunner

import phonon_eval as pe
import phonon_eval.results as runner_module
from cli.eval import BUILTIN_DATASET, app
from phonon_eval.results import Summary

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
    assert res.exit_code == 3, res.output  # results written, one material failed
    text = " ".join(res.output.split())
    assert "MAE" in text and "1 of 4 materials failed (exit 3)" in text
    # the unknown element is named up front, before any material is evaluated
    assert "1 of 4 materials hold elements the model does not know" in text and "Pt-fcc: the potential does not know Pt (Z=78)" in text
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
    assert res.exit_code == 3, res.output
    assert "4 of 4 materials kept, 0 left" in " ".join(res.output.split())
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
    assert "1 of 2 materials kept, 1 left" in " ".join(res.output.split())
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


def test_exit_status_none_succeeded_and_usage(tmp_path, tiny_ckpt):
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Pt-fcc", "--out", str(tmp_path / "r.nc"), *FAST])
    assert res.exit_code == 1 and "no material succeeded (1 failed)" in res.output
    assert (tmp_path / "r.nc").is_file()  # the failure and its reason are still written
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--fc", "finit", "--out", str(tmp_path / "r.nc")])
    assert res.exit_code == 2 and "--fc must be one of" in res.output and "finite" in res.output and "fc_method" not in res.output
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fc", "--out", str(tmp_path / "r.nc")])
    assert res.exit_code == 2 and "no material Cu-fc in" in res.output and "closest: Cu-fcc" in res.output
    res = runner.invoke(app, ["phonons", "--help"])
    assert res.exit_code == 0 and "Exit status: 0 every material evaluated; 3" in " ".join(res.output.split())


def test_split_file_and_a_folder_without_one(tmp_path, tiny_ckpt):
    import json
    import shutil

    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(BUILTIN_DATASET / "Cu-fcc.yaml.xz", folder)
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--dataset", str(folder), "--out", str(tmp_path / "r.nc"), *FAST])
    assert res.exit_code == 1 and "split.json does not exist" in res.output
    assert "--materials" in res.output and "--split-file" in res.output
    split = tmp_path / "mdr_split.json"  # the form of MDR's pbe_mdr_split.json
    split.write_text(json.dumps({"train": [], "test": ["Cu-fcc"]}))
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--dataset", str(folder), "--split-file", str(split), "--out", str(tmp_path / "r.nc"), *FAST])
    assert res.exit_code == 0, res.output
    ds = xr.load_dataset(tmp_path / "r.nc")
    assert list(ds["material"].values) == ["Cu-fcc"] and ds.attrs["dataset"] == str(folder.resolve())
    assert ds["stable"].dtype == "int8" and list(ds["stable"].attrs["flag_values"]) == [-1, 0, 1]


def test_values_table_and_one_line_reasons(tmp_path, tiny_ckpt):
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fcc,Pt-fcc", "--out", str(out), "--values", *FAST])
    assert res.exit_code == 3, res.output
    for heading in ("model", "reference", "difference", "relative", "V (Å³)", "ω_max (K)"):
        assert heading in res.output, res.output
    ds = xr.load_dataset(out)
    ds["error"] = ds["error"].astype(object)
    ds["error"].loc["Pt-fcc"] = "a very long reason\n" + "x" * 300  # as a traceback-long message
    for table in (Summary(ds).table(), Summary(ds).table(values=True)):
        text = _render(table)
        assert "failed: a very long reason xxx" in text and "xxx…" in text  # on one line, cut
        assert "x" * 100 not in text and "the whole text is the file's `error`" in " ".join(text.split())


def _render(table) -> str:
    from rich.console import Console

    console = Console(width=300, record=True)
    console.print(table)
    return console.export_text()


def test_interrupt_says_what_was_saved_and_how_to_resume(tmp_path, tiny_ckpt, monkeypatch):
    real = runner_module.evaluate_material

    def interrupting(model, record, settings):
        if record.id == "CuAu-L10":
            raise KeyboardInterrupt
        return real(model, record, settings)

    monkeypatch.setattr(runner_module, "evaluate_material", interrupting)
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fcc,CuAu-L10", "--out", str(out), *FAST])
    assert res.exit_code == 130, res.output
    text = " ".join(res.output.split())
    assert "interrupted: 1 finished materials are saved in" in text and "--resume" in text
    monkeypatch.setattr(runner_module, "evaluate_material", real)
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fcc,CuAu-L10", "--out", str(out), "--resume", *FAST])
    assert res.exit_code == 0 and "1 of 2 materials kept, 1 left" in " ".join(res.output.split()), res.output


def test_resume_of_a_file_written_before_the_flags(tmp_path, tiny_ckpt):
    """A results file whose stability flags are plain int64 (before int8 with CF flag attributes)
    is still resumed."""
    out = tmp_path / "r.nc"
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fcc", "--out", str(out), *FAST])
    assert res.exit_code == 0, res.output
    old = xr.load_dataset(out)
    for name in ("stable", "stable_ref"):
        old[name] = old[name].astype("int64")
        old[name].attrs = {k: v for k, v in old[name].attrs.items() if not k.startswith("flag_")}
    old.to_netcdf(out)
    res = runner.invoke(app, ["phonons", str(tiny_ckpt), "--materials", "Cu-fcc,CuAu-L10", "--out", str(out), "--resume", *FAST])
    assert res.exit_code == 0, res.output
    ds = xr.load_dataset(out)
    assert list(ds["material"].values) == ["Cu-fcc", "CuAu-L10"] and set(ds["stable"].values) <= {0, 1}

"""Results written one material at a time and merged once: the same file as a one-go write,
runs that resume exactly, refuse other settings and retry failures, and tables and plots that
read only what they show."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import xarray as xr
from ase.calculators.emt import EMT

import phonon_eval.results as results_module
from cli.eval import BUILTIN_DATASET
from phonon_eval.access import material
from phonon_eval.datasets import Dataset
from phonon_eval.phonons import PhononSettings, compare
from phonon_eval.results import Summary, failed_row, run_phonons, to_dataset
from phonon_eval.runner import write_atomic
from phonon_eval.store import ResultsStore, ResumeError

SETTINGS = PhononSettings(relax=False, mesh=(4, 4, 4), temperatures=(0.0, 300.0), band_points=5)
IDS = ["Cu-fcc", "Pt-fcc", "Cu3Au-L12", "CuAu-L10"]


@pytest.fixture(scope="module")
def data():
    return Dataset(BUILTIN_DATASET)


def _row(record, settings=SETTINGS):
    row = compare(record.to_phonopy(), record.to_phonopy(), record, settings)
    row.update(relax_steps=0, n_fc_evaluations=0, time_relax=0.0, time_fc=0.0)
    return row


def _settled(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.load().drop_vars([v for v in ds.data_vars if str(v).startswith("time_")])
    ds.attrs.pop("history", None)
    return ds


def test_parts_merge_into_the_file_the_writer_makes_in_one_go(data, tmp_path):
    """Failed rows first and between (no bands, no path), 3 and 6 bands, parts written in reverse
    order: the merged file reads back identical to `to_dataset` of all rows."""
    rows = [failed_row("x-0", "boom"), _row(data["Cu-fcc"]), failed_row("x-1", "bang"), _row(data["CuAu-L10"])]
    temperatures = np.asarray(SETTINGS.temperatures)
    write_atomic(to_dataset(rows, temperatures, {"model": "m"}), tmp_path / "one.nc")
    store = ResultsStore(tmp_path / "merged.nc")
    for row in rows[::-1]:
        store.add(to_dataset([row], temperatures, {"model": "m"}))
    assert len(store.part_files()) == 4
    store.merge([r["material"] for r in rows], to_dataset([], temperatures, {"model": "m"}))
    one, merged = xr.load_dataset(tmp_path / "one.nc"), xr.load_dataset(tmp_path / "merged.nc")
    assert merged.sizes["band"] == 6 and not store.parts.exists()
    xr.testing.assert_identical(_settled(merged), _settled(one))  # all but the time of writing
    # an old file's materials merge with new parts (a resumed run), in the order asked for
    store.add(to_dataset([_row(data["Pt-fcc"])], temperatures, {"model": "m"}))
    store.merge(["x-0", "Pt-fcc", "CuAu-L10"], to_dataset([], temperatures, {"model": "m"}))
    again = xr.load_dataset(tmp_path / "merged.nc")
    expected = to_dataset([rows[0], _row(data["Pt-fcc"]), rows[3]], temperatures, {"model": "m"})
    xr.testing.assert_identical(_settled(again), _settled(expected))


class Interrupt(BaseException):
    """What a kill does to the run: it stops between materials, the saved parts stay."""


def test_a_run_stopped_midway_and_resumed_equals_a_one_go_run(data, tmp_path, monkeypatch):
    run_phonons(EMT(), data, IDS, SETTINGS, tmp_path / "one.nc", progress=False)
    one_go = _settled(xr.load_dataset(tmp_path / "one.nc"))
    real = results_module.evaluate_material

    def stop_at_third(model, record, settings):
        if record.id == IDS[2]:
            raise Interrupt
        return real(model, record, settings)

    out = tmp_path / "r.nc"
    monkeypatch.setattr(results_module, "evaluate_material", stop_at_third)
    with pytest.raises(Interrupt):
        run_phonons(EMT(), data, IDS, SETTINGS, out, progress=False)
    store = ResultsStore(out)
    assert not out.exists() and store.statuses() == {"Cu-fcc": "ok", "Pt-fcc": "ok"}
    seen = []
    monkeypatch.setattr(results_module, "evaluate_material", lambda m, r, s: (seen.append(r.id), real(m, r, s))[1])
    summary = run_phonons(EMT(), data, IDS, SETTINGS, out, resume=True, progress=False)
    assert seen == IDS[2:] and not store.parts.exists() and summary.n_ok == 4
    xr.testing.assert_identical(_settled(xr.load_dataset(out)), one_go)


def test_resume_refuses_other_settings_or_another_model_and_retries_failures(data, tmp_path, monkeypatch):
    out = tmp_path / "r.nc"
    real = results_module.evaluate_material

    def flaky(model, record, settings):  # a transient fault: the first attempt at Pt fails
        if record.id == "Pt-fcc" and "Pt-fcc" not in tried:
            tried.append(record.id)
            raise OSError("NFS hiccup")
        return real(model, record, settings)

    tried: list[str] = []
    monkeypatch.setattr(results_module, "evaluate_material", flaky)
    first = run_phonons(EMT(), data, IDS[:2], SETTINGS, out, progress=False).dataset
    assert list(first["status"].values) == ["ok", "failed"] and "NFS hiccup" in str(first["error"].values[1])

    with pytest.raises(ResumeError, match=r"setting_mesh: \[4, 4, 4\] there, \[6, 6, 6\] now"):
        run_phonons(EMT(), data, IDS[:2], dataclasses.replace(SETTINGS, mesh=(6, 6, 6)), out, resume=True, progress=False)
    with pytest.raises(ResumeError, match="calculator: ase.calculators.emt:EMT there"):
        from calculators import lennard_jones, LJ_CU
        import phonon_eval as pe

        run_phonons(pe.EnergyFunction(lennard_jones, LJ_CU), data, IDS[:2], SETTINGS, out, resume=True, progress=False)

    kept = run_phonons(EMT(), data, IDS[:2], SETTINGS, out, resume=True, progress=False).dataset
    assert list(kept["status"].values) == ["ok", "failed"]  # resume alone keeps the failure
    retried = run_phonons(EMT(), data, IDS[:2], SETTINGS, out, resume=True, retry_failed=True, progress=False).dataset
    assert list(retried["status"].values) == ["ok", "ok"]
    xr.testing.assert_identical(_settled(retried.isel(material=[0])), _settled(first.isel(material=[0])))
    assert set(retried.data_vars) < set(xr.load_dataset(out).data_vars)  # the ragged data stay in the file


def test_a_large_table_shows_the_worst_and_the_failed(data, tmp_path):
    row = _row(data["Cu-fcc"])
    rows = [{**row, "material": f"m{k:03d}", "mode_mae": k / 100} for k in range(60)]
    rows += [failed_row(f"f{k:02d}", "boom") for k in range(30)]
    ds = to_dataset(rows, np.asarray(SETTINGS.temperatures), {"model": "m"})
    table = Summary(ds).table()
    shown = list(table.columns[0].cells)
    assert shown[:20] == [f"m{k:03d}" for k in range(59, 39, -1)]  # the worst first
    assert shown[20:40] == [f"f{k:02d}" for k in range(20)] and "50 more" in shown[40]
    assert "60 of 90, 30 failed" in shown[41]  # the aggregate is over every material
    assert len(list(Summary(ds).table(limit=None).columns[0].cells)) == 91


def test_a_plot_reads_one_material_of_a_lazily_opened_file(data, tmp_path):
    rows = [_row(data[m]) for m in ("Cu-fcc", "CuAu-L10")]
    write_atomic(to_dataset(rows, np.asarray(SETTINGS.temperatures), {"model": "m"}), tmp_path / "r.nc")
    with xr.open_dataset(tmp_path / "r.nc") as ds:
        cut = material(ds, "CuAu-L10")
        assert not ds["band_frequency"].variable._in_memory and not ds["dos"].variable._in_memory
    np.testing.assert_array_equal(cut["band_frequency"], rows[1]["band_frequency"])
    np.testing.assert_array_equal(cut["dos"], rows[1]["dos"])


def test_kill_9_at_any_moment_then_resume_equals_a_one_go_run(tmp_path):
    """The CLI killed with SIGKILL as soon as its first material is saved: the saved parts
    survive, nothing else was written, and --resume finishes the file a one-go run writes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from cli.eval import app

    args = ["phonons", "--calculator", "ase.calculators.emt:EMT", "--split", "train", "--no-relax", "--mesh", "4",
            "--temperatures", "0,300", "--band-points", "5", "--no-progress"]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "one.nc")]).exit_code == 0
    out = tmp_path / "killed.nc"
    parts = ResultsStore(out).parts
    child = subprocess.Popen([sys.executable, "-c", "from cli.eval import main; main()", *args, "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.getcwd())
    deadline = time.monotonic() + 120
    while not (parts.is_dir() and any(parts.glob("*.nc"))) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    saved = len(list(parts.glob("*.nc")))
    assert 1 <= saved < 9 and not out.exists()
    res = runner.invoke(app, [*args, "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert not parts.exists()
    xr.testing.assert_identical(_settled(xr.load_dataset(out)), _settled(xr.load_dataset(tmp_path / "one.nc")))
    refused = runner.invoke(app, [*args[:-3], "--band-points", "7", "--no-progress", "--out", str(out), "--resume"])
    assert refused.exit_code == 1 and "setting_band_points: 5 there, 7 now" in refused.output

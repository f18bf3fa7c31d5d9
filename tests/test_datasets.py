"""Datasets (folder + split file) and the `data` CLI, on the built-in EMT set and shared/ data."""

from __future__ import annotations

import json
import lzma
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, shared_file
from typer.testing import CliRunner

from cli.data import app
from phonon_eval.datasets import Dataset, DatasetError, IndexEntry
from phonon_eval.records import RecordError

EMT = REPO / "data" / "emt"


@pytest.fixture(scope="module")
def emt() -> Dataset:
    return Dataset(EMT)


@pytest.fixture()
def shared_folder(tmp_path) -> Path:
    """A dataset of symlinks to shared/: an MDR file, a phonopy and a phono3py folder."""
    os.symlink(shared_file("data/mdr/mp-149.yaml"), tmp_path / "mp-149.yaml")
    os.symlink(shared_file("data/dft/phonopy-MgB2"), tmp_path / "MgB2")
    os.symlink(shared_file("data/dft/phono3py-Si-PBE"), tmp_path / "Si-phono3py")
    split = {"train": ["mp-149", "MgB2"], "test": ["Si-phono3py"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    (tmp_path / "notes.txt").write_text("not a record")
    return tmp_path


@pytest.fixture()
def broken_folder(tmp_path) -> Path:
    """Several problems at once: unreadable, inconsistent, duplicated, and a bad split file."""
    shutil.copy(EMT / "Cu-fcc.yaml.xz", tmp_path)
    shutil.copy(EMT / "Ag-fcc.yaml.xz", tmp_path / "Ag-fcc.yaml.xz")
    plain = lzma.decompress((EMT / "Ag-fcc.yaml.xz").read_bytes())
    (tmp_path / "Ag-fcc.yaml").write_bytes(plain)  # the same id twice
    (tmp_path / "garbage.yaml").write_bytes(b"\x00\x01 this is not yaml: [")
    text = lzma.decompress((EMT / "Au-fcc.yaml.xz").read_bytes()).decode()
    (tmp_path / "Au-fcc.yaml").write_text(text.replace("shape: [ 1, 32 ]", "shape: [ 1, 31 ]"))
    split = {"train": ["Cu-fcc", "Au-fcc", "Pd-fcc"], "test": ["Cu-fcc", "garbage"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    return tmp_path


# --------------------------------------------------------------------------------------------
# the built-in EMT dataset
# --------------------------------------------------------------------------------------------


def test_emt_dataset(emt):
    assert len(emt) == 16
    assert {name: len(ids) for name, ids in emt.splits.items()} == {"train": 9, "val": 3, "test": 4}
    assert emt.split("test") == ["Cu-fcc", "Pt-fcc", "Cu3Au-L12", "CuAu-L10"]
    assert sorted(sum(emt.splits.values(), [])) == emt.ids  # every record in exactly one split
    record = emt["Cu3Au-L12"]
    assert record.formula == "AuCu3" and record.n_supercell_atoms == 32
    assert record.force_constants.shape == (32, 32, 3, 3)
    assert set(record.reference) >= {"temperatures", "free_e", "entropy", "heat_capacity"}
    assert emt.splits_of("Cu3Au-L12") == ["test"]


def test_emt_index_and_validation(emt):
    rows = emt.index(emt.split("test"))
    assert rows[0] == IndexEntry("Cu-fcc", "Cu", 32, "Fm-3m", 225, "Cu-fcc.yaml.xz")
    groups = [(r.space_group, r.space_group_number) for r in rows[2:]]
    assert groups == [("Pm-3m", 221), ("P4/mmm", 123)]
    assert emt.validate() == []


def test_records_are_read_on_demand(emt):
    assert emt["Cu-fcc"] is not emt["Cu-fcc"]  # nothing kept in memory
    assert [r.id for r in emt.records("val")] == ["Ag-fcc", "Ni3Pt-L12", "NiPd-L10"]


# --------------------------------------------------------------------------------------------
# datasets over shared/ data, the MDR split
# --------------------------------------------------------------------------------------------


def test_dataset_of_files_and_folders(shared_folder):
    ds = Dataset(shared_folder)
    assert ds.ids == ["MgB2", "Si-phono3py", "mp-149"]
    assert ds.path("MgB2").name == "MgB2"
    assert ds.split("train") == ["mp-149", "MgB2"]
    assert ds["Si-phono3py"].fc3_dataset is not None
    rows = {r.id: r for r in ds.index(["MgB2", "Si-phono3py"])}
    assert rows["MgB2"].formula == "MgB2" and rows["MgB2"].space_group == "P6/mmm"
    assert rows["Si-phono3py"].n_atoms == 64
    with pytest.raises(DatasetError, match="no record 'mp-1'"):
        ds["mp-1"]


def test_mdr_split_file_loads(shared_folder):
    ds = Dataset(shared_folder, split_file=shared_file("data/mdr/pbe_mdr_split.json"))
    sizes = {name: len(ids) for name, ids in ds.splits.items()}
    assert sizes == {"train": 8510, "val": 448, "test": 1000}
    assert ds.splits_of("mp-149") == ["train"]
    assert ds.split("train", present_only=True) == ["mp-149"]
    with pytest.raises(DatasetError) as err:
        ds.split("train")
    assert "8509 of 8510 ids of split 'train'" in str(err.value) and "mp-558985" in str(err.value)


def test_unknown_split_lists_the_available_ones(shared_folder):
    ds = Dataset(shared_folder)
    with pytest.raises(DatasetError, match="unknown split 'valid'; available splits: train, test"):
        ds.split("valid")
    (shared_folder / "split.json").unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset(shared_folder).split("test")


def test_bad_split_files(tmp_path):
    (tmp_path / "split.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable JSON"):
        Dataset(tmp_path).splits
    (tmp_path / "split.json").write_text(json.dumps({"train": "mp-1"}))
    with pytest.raises(DatasetError, match="train: must be a list of id strings"):
        Dataset(tmp_path).splits
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset(tmp_path / "nowhere")


def test_validate_reports_every_problem_at_once(broken_folder):
    problems = Dataset(broken_folder).validate()
    found = {(p.id, p.field) for p in problems}
    assert ("Ag-fcc", "id") in found  # two files give the same id
    assert ("garbage", "yaml") in found
    assert ("Au-fcc", "force_constants.shape") in found
    assert (None, "train") in found  # Pd-fcc has no record
    assert ("Cu-fcc", "test") in found  # in two splits
    assert len(problems) == 5
    by_id = {p.id: p for p in problems}
    assert by_id["Au-fcc"].file == broken_folder / "Au-fcc.yaml"
    assert "Pd-fcc" in by_id[None].message


def test_index_cache(tmp_path, monkeypatch):
    shutil.copy(EMT / "Cu-fcc.yaml.xz", tmp_path)
    ds = Dataset(tmp_path)
    first = ds.index(cache=True)
    assert (tmp_path / "index.json").is_file()
    monkeypatch.setattr(Dataset, "index_entry", lambda self, i: pytest.fail("cache not used"))
    assert ds.index(cache=True) == first
    os.utime(tmp_path / "Cu-fcc.yaml.xz", ns=(1, 1))  # a changed file is read again
    with pytest.raises(pytest.fail.Exception):
        ds.index(cache=True)


def test_index_raises_or_reports_unreadable(broken_folder):
    ds = Dataset(broken_folder)
    with pytest.raises(RecordError):
        ds.index(["garbage"])
    errors = {}
    rows = ds.index(["Cu-fcc", "garbage"], on_error=errors.__setitem__)
    assert [r.id for r in rows] == ["Cu-fcc"] and list(errors) == ["garbage"]


# --------------------------------------------------------------------------------------------
# CLI: pft-eval data ...
# --------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_list():
    result = runner.invoke(app, ["list", str(EMT), "--split", "test", "--no-progress"])
    assert result.exit_code == 0, result.output
    for material_id in ("Cu-fcc", "Pt-fcc", "Cu3Au-L12", "CuAu-L10"):
        assert material_id in result.stdout
    assert "Al-fcc" not in result.stdout
    assert "P4/mmm" in result.stdout


def test_cli_bad_usage_exits_2(tmp_path):
    result = runner.invoke(app, ["list", str(EMT), "--split", "nope", "--no-progress"])
    assert result.exit_code == 2
    assert "unknown split 'nope'" in result.stderr and "train, val, test" in result.stderr
    assert result.stdout == ""
    result = runner.invoke(app, ["describe", str(EMT), "Xx-fcc"])
    assert result.exit_code == 2 and "no record Xx-fcc" in result.stderr and "closest:" in result.stderr
    result = runner.invoke(app, ["describe", str(EMT), "Cu-fc"])
    assert result.exit_code == 2 and "closest: Cu-fcc" in result.stderr
    result = runner.invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_cli_describe():
    result = runner.invoke(app, ["describe", str(EMT), "CuAu-L10"])
    assert result.exit_code == 0, result.output
    for text in ("AuCu", "P4/mmm (123)", "reference.entropy", "J/K/mol", "stored"):
        assert text in result.stdout


def test_cli_validate(broken_folder):
    result = runner.invoke(app, ["validate", str(EMT), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "ok: 16 records" in result.stdout
    result = runner.invoke(app, ["validate", str(broken_folder), "--no-progress"])
    assert result.exit_code == 1
    assert "5 problem(s)" in result.stderr
    for text in ("garbage", "Au-fcc", "Pd-fcc"):
        assert text in result.stdout


def test_cli_list_marks_unreadable_records(broken_folder):
    result = runner.invoke(app, ["list", str(broken_folder), "--no-progress"])
    assert result.exit_code == 1
    assert "unreadable" in result.stdout and "Cu-fcc" in result.stdout
    assert "could not be read" in result.stderr
    assert result.stdout.count("Fm-3m") == 2  # Cu-fcc and Ag-fcc read; Au-fcc and garbage did not

"""Datasets: a folder of records plus a split file, loaded lazily.

A record is a yaml file (plain or compressed; its id is the file name without .yaml[.xz]) or a
sub-folder in phonopy/phono3py layout (its id is the folder name); see `phonon_eval.records`.
The split file (default `split.json` in the folder) maps split names to ids:
{"train": [...], "val": [...], "test": [...]}, the form of the public MDR split.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ase.data import atomic_numbers

from phonon_eval.atomic import atomic_write
from phonon_eval.records import (
    Record,
    RecordError,
    is_yaml_name,
    read_record,
    record_id,
)

__all__ = ["DEFAULT_SPLIT_FILE", "INDEX_FILE", "Dataset", "DatasetError", "IndexEntry", "Problem"]

DEFAULT_SPLIT_FILE = "split.json"
INDEX_FILE = "index.json"
"""Where `Dataset.index(cache=True)` keeps the index, keyed by each record's size and mtime."""

Progress = Callable[[Iterable[str]], Iterable[str]]
"""Wraps the ids being worked through, e.g. `rich.progress.track`."""


class DatasetError(ValueError):
    """A dataset that cannot be used as asked: no folder, bad split file, unknown split or id."""


class Problem(NamedTuple):
    """One problem found by `Dataset.validate`: record id (None: the dataset), file, field, what."""

    id: str | None
    file: Path
    field: str
    message: str


class IndexEntry(NamedTuple):
    """One row of the dataset index."""

    id: str
    formula: str
    n_atoms: int  # in the (fc2) supercell
    space_group: str  # international symbol
    space_group_number: int
    source: str  # file or folder name inside the dataset


class Dataset:
    """A folder of records plus a split file; records are read on demand.

    Args:
        folder: the dataset folder.
        split_file: the split JSON; default `folder / "split.json"` (absent: no splits).

    Raises:
        DatasetError: when the folder does not exist.
    """

    def __init__(self, folder: str | os.PathLike, split_file: str | os.PathLike | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError(f"dataset folder {self.folder} does not exist")
        default = self.folder / DEFAULT_SPLIT_FILE
        self.split_file = Path(split_file) if split_file is not None else default
        self._paths, self._duplicates = _scan(self.folder)
        self._splits: dict[str, list[str]] | None = None

    def __repr__(self) -> str:
        return f"Dataset({str(self.folder)!r}, {len(self)} records)"

    # -- records ------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """All record ids in the folder, sorted."""
        return sorted(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, material_id: object) -> bool:
        return material_id in self._paths

    def path(self, material_id: str) -> Path:
        """The file or sub-folder of a record."""
        if material_id not in self._paths:
            raise DatasetError(f"no record {material_id!r} in {self.folder}")
        return self._paths[material_id]

    def __getitem__(self, material_id: str) -> Record:
        """Read one record (on every call; nothing is kept in memory)."""
        return read_record(self.path(material_id), material_id=material_id)

    def records(self, split: str | None = None) -> Iterator[Record]:
        """Read the records of a split (all records with None), one at a time."""
        for material_id in self.ids if split is None else self.split(split):
            yield self[material_id]

    # -- splits -------------------------------------------------------------------------------

    @property
    def splits(self) -> dict[str, list[str]]:
        """The split file's mapping of split name to ids ({} without a split file)."""
        if self._splits is None:
            splits, problems = self._read_splits()
            if problems and problems[0].field != "split_file":  # no split file is no error
                first = problems[0]
                raise DatasetError(f"{first.file}: {first.field}: {first.message}")
            self._splits = splits
        return self._splits

    def split(self, name: str, *, present_only: bool = False) -> list[str]:
        """The ids of one split, in the split file's order.

        Args:
            name: split name, e.g. "test".
            present_only: keep only ids with a record in the folder instead of raising.

        Raises:
            DatasetError: unknown split (listing the available ones), or split ids without a
                record in the folder (naming them).
        """
        splits = self.splits
        if name not in splits:
            if not splits:
                raise DatasetError(
                    f"no split {name}: {self.split_file} does not exist; give the ids with --materials, "
                    "or a split JSON file with --split-file"
                )
            raise DatasetError(f"unknown split {name!r}; available splits: {', '.join(splits)}")
        ids = splits[name]
        missing = [i for i in ids if i not in self._paths]
        if missing and not present_only:
            raise DatasetError(
                f"{len(missing)} of {len(ids)} ids of split {name!r} in {self.split_file} have no "
                f"record in {self.folder}: {_some(missing)}"
            )
        return [i for i in ids if i in self._paths]

    def splits_of(self, material_id: str) -> list[str]:
        """The names of the splits an id belongs to."""
        return [name for name, ids in self.splits.items() if material_id in ids]

    def _read_splits(self) -> tuple[dict[str, list[str]], list[Problem]]:
        file = self.split_file
        if not file.is_file():
            return {}, [Problem(None, file, "split_file", "no split file")]
        try:
            raw = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            return {}, [Problem(None, file, "json", f"not a readable JSON file: {err}")]
        if not isinstance(raw, dict):
            message = 'must be an object {"train": [...], "val": [...], ...}'
            return {}, [Problem(None, file, "json", message)]
        splits, problems = {}, []
        for name, ids in raw.items():
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                problems.append(Problem(None, file, name, "must be a list of id strings"))
                continue
            splits[name] = ids
        return splits, problems

    # -- index --------------------------------------------------------------------------------

    def index(
        self,
        ids: Iterable[str] | None = None,
        *,
        cache: bool = False,
        progress: Progress | None = None,
        on_error: Callable[[str, RecordError], None] | None = None,
    ) -> list[IndexEntry]:
        """Id, formula, supercell size and space group of records (read on demand).

        Args:
            ids: which records; default all.
            cache: keep the rows in `folder / "index.json"`, reused while a record's file size
                and modification time are unchanged (skipped silently in a read-only folder).
            progress: wraps the ids being read.
            on_error: called with the id and error of an unreadable record, which is then left
                out; without it the error is raised.

        Returns:
            One entry per (readable) id, in the order given.

        Raises:
            RecordError: a record that cannot be read, when `on_error` is None.
        """
        ids = self.ids if ids is None else list(ids)
        cached = self._read_index_cache() if cache else {}
        rows, changed = [], False
        for material_id in progress(ids) if progress else ids:
            stamp = _stamp(self.path(material_id))
            hit = cached.get(material_id)
            if isinstance(hit, dict) and hit.get("stamp") == stamp:
                rows.append(IndexEntry(**hit["entry"]))
                continue
            try:
                entry = self.index_entry(material_id)
            except RecordError as err:
                if on_error is None:
                    raise
                on_error(material_id, err)
                continue
            cached[material_id] = {"stamp": stamp, "entry": entry._asdict()}
            rows.append(entry)
            changed = True
        if cache and changed:
            try:
                text = json.dumps(cached, indent=1, sort_keys=True)
                atomic_write(self.folder / INDEX_FILE, text.encode())
            except OSError:
                pass  # a read-only dataset still lists, only slower next time
        return rows

    def atomic_numbers(self, ids: Iterable[str]) -> dict[str, list[int]]:
        """{id: the sorted atomic numbers of its elements}, from the `symbol:` lines of the
        record's yaml files alone: no yaml parsing, so a split of 1,000 MDR records is checked in
        seconds, not minutes. Ids whose files name no element are left out (they fail, named,
        when read)."""
        out = {}
        for material_id in ids:
            path = self.path(material_id)
            files = [path] if path.is_file() else sorted(p for p in path.iterdir() if is_yaml_name(p.name))
            symbols = {m.decode() for f in files for m in _SYMBOL.findall(_text(f))}
            numbers = sorted(atomic_numbers[s] for s in symbols if s in atomic_numbers)
            if numbers:
                out[material_id] = numbers
        return out

    def index_entry(self, material_id: str) -> IndexEntry:
        """The index row of one record (reads it)."""
        record = self[material_id]
        symbol, number = record.space_group
        return IndexEntry(
            id=material_id,
            formula=record.formula,
            n_atoms=record.n_supercell_atoms,
            space_group=symbol,
            space_group_number=number,
            source=self.path(material_id).name,
        )

    def _read_index_cache(self) -> dict[str, Any]:
        try:
            cached = json.loads((self.folder / INDEX_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return cached if isinstance(cached, dict) else {}

    # -- validation ---------------------------------------------------------------------------

    def validate(self, progress: Progress | None = None) -> list[Problem]:
        """Read every record and check the split file; report every problem, never stop early.

        Args:
            progress: wraps the ids being read.

        Returns:
            All problems found, records in id order first, then the split file; [] when clean.
        """
        problems = [
            Problem(i, self.folder, "id", f"several records share this id: {', '.join(names)}")
            for i, names in sorted(self._duplicates.items())
        ]
        for i in progress(self.ids) if progress else self.ids:
            try:
                self[i]
            except RecordError as err:
                problems.append(Problem(i, err.file or self.path(i), err.field, err.message))
            except Exception as err:  # noqa: BLE001 - a validator reports, it does not crash
                message = f"{type(err).__name__}: {err}"
                problems.append(Problem(i, self.path(i), "?", message))
        splits, split_problems = self._read_splits()
        problems += split_problems
        file = self.split_file
        seen: dict[str, str] = {}
        for name, ids in splits.items():
            missing = [i for i in ids if i not in self._paths]
            if missing:
                message = f"{len(missing)} ids have no record in the folder: {_some(missing)}"
                problems.append(Problem(None, file, name, message))
            repeated = [i for i, n in Counter(ids).items() if n > 1]
            if repeated:
                problems.append(Problem(None, file, name, f"ids listed twice: {_some(repeated)}"))
            for i in dict.fromkeys(ids):  # ordered, each once
                if i in seen:
                    problems.append(Problem(i, file, name, f"also in split {seen[i]!r}"))
                seen.setdefault(i, name)
        return problems


def _scan(folder: Path) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Find the records in a folder: yaml files and sub-folders holding a yaml file."""
    paths: dict[str, Path] = {}
    names: dict[str, list[str]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden and temporary files
        if entry.is_file() and is_yaml_name(entry.name):
            pass
        elif entry.is_dir() and any(is_yaml_name(p.name) for p in entry.iterdir() if p.is_file()):
            pass
        else:
            continue
        material_id = record_id(entry)
        names.setdefault(material_id, []).append(entry.name)
        paths.setdefault(material_id, entry)
    return paths, {i: n for i, n in names.items() if len(n) > 1}


_SYMBOL = re.compile(rb"^[ \t]*(?:-[ \t]*)?symbol:[ \t]*['\"]?([A-Z][a-z]?)['\"]?[ \t]*(?:#.*)?$", re.MULTILINE)
"""An atom's element in phonopy yaml (`- symbol: Si # 1`, or `symbol: Si` under `points`)."""


def _text(path: Path) -> bytes:
    """A yaml file's bytes, decompressed (recognised by content, as the record reader does)."""
    try:
        data = path.read_bytes()
        for magic, module in ((b"\xfd7zXZ\x00", lzma), (b"\x1f\x8b", gzip), (b"BZh", bz2)):
            if data.startswith(magic):
                return module.decompress(data)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return b""  # the record reader names what is wrong with it
    return data


def _stamp(path: Path) -> list[int]:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return [x for p in files for x in (p.stat().st_size, p.stat().st_mtime_ns)]


def _some(ids: list[str], n: int = 10) -> str:
    more = f" (and {len(ids) - n} more)" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more

"""Upstream frames streamed from disk: ASE databases and extxyz files, several or a glob of them.

MPtrj has 1.6 million frames: as ASE Atoms in memory they do not fit a 24 GB machine. A
`FrameSource` keeps an index of its files instead (per frame: where it starts, its atom count,
its edge count at the cutoff) and reads a frame when a batch needs it: an ASE database by row
id, an extxyz file by seeking to the frame's byte offset. The index is made in one pass over
each file and cached beside it (`<file>.pft-index.npz`), keyed by the file's size, mtime and the
cutoff; a changed file or another cutoff makes it again. Compressed extxyz (.xz, .gz, .bz2)
cannot be read from an offset: it is decompressed once, in one streamed pass, into the cache
folder (`finetune.array_cache.default_cache_dir() / "frames"`, keyed by the file's path, size
and mtime), and read from that copy; other formats are read into memory whole.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import ase
import ase.db
import ase.io
import numpy as np
from ase.io.extxyz import read_xyz

from finetune.array_cache import default_cache_dir
from finetune.data import Example, read_frames, upstream_example
from phonon_eval.atomic import atomic_path, atomic_write
from phonon_eval.graph import count_edges

__all__ = ["FrameSource", "expand_paths", "INDEX_SUFFIX"]

INDEX_SUFFIX = ".pft-index.npz"
_INDEX_VERSION = 1
_STREAMED_TEXT = (".extxyz", ".xyz")
_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
OPEN_DATABASES = 64
"""ASE databases kept open per thread. ASE opens a new sqlite connection for every read unless
one is held (0.46 ms a frame instead of 0.15), and a held one is a file descriptor: the least
recently read of many shards are closed."""


class _Databases(threading.local):
    """This thread's open databases, least recently read first (a connection stays in its thread)."""

    def __init__(self):
        self.open: OrderedDict[tuple, ase.db.core.Database] = OrderedDict()

    def get(self, path: Path, size: int, mtime_ns: int) -> ase.db.core.Database:
        key = (path, size, mtime_ns)  # a file replaced at the same path is not read through an old handle
        db = self.open.pop(key, None)
        if db is None:
            db = ase.db.connect(path).__enter__()  # hold one connection for the reads that follow
            while len(self.open) >= OPEN_DATABASES:
                self.open.popitem(last=False)[1].__exit__(None, None, None)
        self.open[key] = db
        return db


_databases = _Databases()


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files from paths and glob patterns (sorted matches); a pattern matching nothing is an error."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        text = str(p)
        if not Path(text).exists() and glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise FileNotFoundError(f"no upstream frame files match {text!r}")
            out += [Path(m) for m in matches]
        elif not Path(text).is_file():
            raise FileNotFoundError(f"upstream frame file {text} does not exist")
        else:
            out.append(Path(text))
    if not out:
        raise ValueError("no upstream frame files given")
    return out


class _Shard:
    """One file of frames; `locator[i]` says where frame i is (byte offset, row id or list index)."""

    def __init__(self, path: Path, cutoff: float):
        self.path = path
        self.name = str(path)  # the frames' ids, as the in-memory reader names them
        stat = path.stat()
        self.key = {
            "format": "pft-frame-index", "version": _INDEX_VERSION, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "cutoff": float(cutoff),
        }
        self.text = _plain_text(path)  # the extxyz file read by offset (a decompressed copy), or None
        self.kind = "db" if path.suffix == ".db" else "extxyz" if self.text is not None else "memory"
        self._frames: list[ase.Atoms] | None = None
        index = self._load_index()
        if index is None:
            index = self._make_index(cutoff)
            self._save_index(index)
        self.locator, self.n_atoms, self.n_edges, self.numbers = (
            index["locator"], index["n_atoms"], index["n_edges"], index["numbers"]
        )

    def __len__(self) -> int:
        return len(self.locator)

    @property
    def index_path(self) -> Path:
        return self.path.with_name(self.path.name + INDEX_SUFFIX)

    def atoms(self, i: int) -> ase.Atoms:
        if self.kind == "db":
            db = _databases.get(self.path, self.key["size"], self.key["mtime_ns"])
            return db.get(id=int(self.locator[i])).toatoms(add_additional_information=True)
        if self.kind == "extxyz":
            with open(self.text, "rb") as f:
                f.seek(int(self.locator[i]))
                return _read_frame_at(f, self.path, i)
        return self._memory()[i]

    def _memory(self) -> list[ase.Atoms]:
        if self._frames is None:
            self._frames = read_frames(self.path)
        return self._frames

    # -- the index --------------------------------------------------------------------------

    def _frames_for_index(self) -> Iterable[tuple[int, ase.Atoms]]:
        """(locator, atoms) of every frame, in order."""
        if self.kind == "db":
            with ase.db.connect(self.path) as db:
                for row in db.select():
                    yield row.id, row.toatoms(add_additional_information=True)
        elif self.kind == "extxyz":
            with open(self.text, "rb") as f:
                i = 0
                while True:
                    offset = f.tell()
                    if not f.readline().strip():  # end of file (blank lines at the end are allowed)
                        if f.tell() == offset:
                            return
                        continue
                    f.seek(offset)
                    yield offset, _read_frame_at(f, self.path, i)
                    i += 1
        else:
            yield from enumerate(self._memory())

    def _make_index(self, cutoff: float) -> dict[str, np.ndarray]:
        locator, n_atoms, n_edges, numbers = [], [], [], set()
        for i, (where, atoms) in enumerate(self._frames_for_index()):
            upstream_example(atoms, self.name, i, as_read=True)  # refuse a frame without energy or forces now, not mid-run
            locator.append(where)
            n_atoms.append(len(atoms))
            n_edges.append(count_edges(atoms.positions, atoms.cell.array, cutoff, pbc=atoms.pbc))
            numbers.update(int(z) for z in atoms.numbers)
        if not locator:
            raise ValueError(f"{self.path}: no frames")
        return {
            "locator": np.asarray(locator, np.int64),
            "n_atoms": np.asarray(n_atoms, np.int64),
            "n_edges": np.asarray(n_edges, np.int64),
            "numbers": np.asarray(sorted(numbers), np.int64),
        }

    def _load_index(self) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self.index_path) as z:
                if json.loads(str(z["key"])) != self.key:
                    return None  # another file content or cutoff: make it again
                return {k: z[k] for k in ("locator", "n_atoms", "n_edges", "numbers")}
        except (OSError, KeyError, ValueError):
            return None

    def _save_index(self, index: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, key=np.array(json.dumps(self.key)), **index)
        try:
            atomic_write(self.index_path, buf.getvalue())
        except OSError:
            pass  # a read-only data folder: the index is made again next time, nothing is lost

    def fingerprint(self) -> dict:
        return {"path": str(self.path.resolve()), "size": self.key["size"], "mtime_ns": self.key["mtime_ns"], "frames": len(self)}


def _plain_text(path: Path) -> Path | None:
    """The uncompressed extxyz to read `path` from by offset: itself, a decompressed copy, or None."""
    if path.suffix in _STREAMED_TEXT:
        return path
    if path.suffix not in _COMPRESSED or Path(path.stem).suffix not in _STREAMED_TEXT:
        return None
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    copy = default_cache_dir() / "frames" / f"{key}-{path.stem}"
    if not copy.is_file():
        try:
            with atomic_path(copy) as tmp, _COMPRESSED[path.suffix](path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except OSError:
            return None  # no writable cache folder: the file is read into memory whole, as before
    return copy


def _read_frame_at(f, path: Path, i: int) -> ase.Atoms:
    """The extxyz frame starting at the current position of the binary file `f`."""
    offset = f.tell()
    head = f.readline()
    try:
        n = int(head.split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"{path}: frame {i} at byte {offset}: expected an atom count, got {head[:40]!r}") from None
    lines = [head] + [f.readline() for _ in range(n + 1)]
    if not lines[-1]:
        raise ValueError(f"{path}: frame {i} at byte {offset}: file ends inside the frame ({n} atoms)")
    return next(read_xyz(io.StringIO(b"".join(lines).decode()), 0))


class FrameSource:
    """Upstream energy/force/stress frames of one or more files, read when a batch needs them.

    Indexable like the list `upstream_examples` makes (the same examples in the same order), and
    `Batcher` groups it by the sizes of the index instead of building every graph up front.

    Args:
        paths: ASE databases (.db), extxyz files (.extxyz, .xyz, and those compressed: .gz, .bz2,
            .xz, streamed from a decompressed copy) or glob patterns of them; frames are numbered through the files in order.
        cutoff: the potential's cutoff, for the edge counts that size the padded batches.
    """

    has_columns = False

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], cutoff: float):
        self.cutoff = float(cutoff)
        self.shards = [_Shard(p, self.cutoff) for p in expand_paths(paths)]
        self._starts = np.cumsum([0] + [len(s) for s in self.shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> Example:
        if not 0 <= i < len(self):
            raise IndexError(f"frame {i} of {len(self)}")
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        shard, local = self.shards[k], int(i - self._starts[k])
        return upstream_example(shard.atoms(local), shard.name, local, as_read=True)

    def __repr__(self) -> str:
        return f"FrameSource({[s.name for s in self.shards]}, {len(self)} frames)"

    def sizes(self, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """(n_atoms, n_edges) of every frame at `cutoff` (the source's own)."""
        if float(cutoff) != self.cutoff:
            raise ValueError(f"frames indexed at cutoff {self.cutoff} Å, asked for {cutoff} Å")
        return np.concatenate([s.n_atoms for s in self.shards]), np.concatenate([s.n_edges for s in self.shards])

    def atomic_numbers(self) -> dict[str, list[int]]:
        """The elements of each file, by file name."""
        return {s.name: s.numbers.tolist() for s in self.shards}

    def fingerprint(self) -> list[dict]:
        """What identifies the data: each file's absolute path, size, mtime and frame count."""
        return [s.fingerprint() for s in self.shards]

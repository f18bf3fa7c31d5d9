"""Named arrays kept on disk between runs, one .npz per key, keyed by the content they come from.

What a training run derives from each phonon record (its supercell, symmetry classes and compact
force constants) takes tens of milliseconds to make and one to load: 10,000 MDR-sized records are
minutes at every start. A key is the SHA-256 of the inputs' bytes plus whatever else the arrays
depend on, so an entry can never be stale, only unused; entries are written atomically, so runs
may share a folder, and a folder that cannot be written only costs the time it would have saved.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from phonon_eval.atomic import atomic_write
from phonon_eval.compile_cache import cache_root

__all__ = ["ArrayCache", "default_cache_dir", "content_digest"]


def default_cache_dir() -> Path:
    """`$PFT_CACHE_DIR`, else `$XDG_CACHE_HOME/pft`, else `~/.cache/pft` (the compile cache's too)."""
    return cache_root()


def content_digest(path: str | os.PathLike, *salt: object) -> str:
    """SHA-256 of a file's bytes (a folder's: every file under it, with its relative name) and `salt`."""
    path = Path(path)
    h = hashlib.sha256(repr(salt).encode())
    files: Iterable[Path] = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else "").encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class ArrayCache:
    """A folder of `<key>.npz` files.

    Args:
        folder: created on first write.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.hits = self.misses = 0

    def __repr__(self) -> str:
        return f"ArrayCache({str(self.folder)!r})"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under `key`, or None (absent or unreadable: made again)."""
        try:
            with np.load(self.folder / f"{key}.npz", allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return arrays

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store `arrays` under `key` (atomically; a folder that cannot be written is skipped)."""
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.folder / f"{key}.npz", buf.getvalue())
        except OSError:
            pass

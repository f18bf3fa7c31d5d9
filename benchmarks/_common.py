"""Helpers shared by the benchmark scripts: timing compiled calls and reading peak memory."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import jax

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    path = Path(os.environ.get("PFT_SHARED", REPO.parent / "shared"))
    if not path.is_dir():
        sys.exit(f"public reference data not found at {path}: set PFT_SHARED")
    return path


def timed(fn: Callable, repeats: int = 3) -> tuple[float, float]:
    """(first call in s, i.e. compile + run; median of `repeats` further calls in s)."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t)
    return first, sorted(runs)[len(runs) // 2]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

"""JAX's persistent compilation cache in a lasting folder: a program compiled once is loaded later.

Compilation is much of a short evaluation's time: the demo potential's 16 EMT materials took
69 s from cold and 44 s with every program cached (benchmarks/scale_out.py). The programs do not
depend on the model's weights (they are arguments), only on its architecture, the shapes and
the XLA flags, which JAX's cache key holds. So evaluating a fine-tuned model after its base
model, or rerunning a benchmark, or a second Dask worker meeting a shape the first has compiled,
loads the program instead of compiling it again. An entry can never be stale, only unused; the
folder is bounded (least recently used programs go first).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "default_compile_cache", "enable_compile_cache", "MAX_BYTES", "MIN_COMPILE_SECONDS"]

MAX_BYTES = 2 << 30
"""The compile cache's bound on disk (2 GiB; the demo potential's programs for the 16 EMT
materials take 5 MB in all, 0.15 MB for one energy-forces-stress program)."""

MIN_COMPILE_SECONDS = 0.2
"""Programs that compile faster than this are not kept: reading them back would save nothing."""


def cache_root() -> Path:
    """`$PFT_CACHE_DIR`, else `$XDG_CACHE_HOME/pft`, else `~/.cache/pft`: this project's caches."""
    if os.environ.get("PFT_CACHE_DIR"):
        return Path(os.environ["PFT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pft"


def default_compile_cache() -> Path:
    """`$JAX_COMPILATION_CACHE_DIR` when set (JAX's own variable), else `cache_root() / "jax"`."""
    return Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or cache_root() / "jax")


def enable_compile_cache(folder: str | os.PathLike | None = None, *, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> Path | None:
    """Keep this process's compiled programs, and those of the workers it starts, in `folder`.

    Call it before JAX compiles anything (a cache JAX has already opened keeps its folder).

    Args:
        folder: the cache folder (default `default_compile_cache()`), or "off" to compile
            every program anew.
        min_compile_seconds: keep only programs that took at least this long to compile.

    Returns:
        The folder in use, or None when off or when it cannot be created (then nothing is
        cached, and nothing else changes).
    """
    if str(folder) == "off":
        os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
        _update(jax_enable_compilation_cache=False)
        return None
    path = Path(folder) if folder is not None else default_compile_cache()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    # environment variables, read when JAX starts, reach the Dask workers this process starts
    settings = {
        "JAX_ENABLE_COMPILATION_CACHE": "true",
        "JAX_COMPILATION_CACHE_DIR": str(path),
        "JAX_COMPILATION_CACHE_MAX_SIZE": str(MAX_BYTES),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(min_compile_seconds),
    }
    os.environ.update(settings)
    _update(
        jax_enable_compilation_cache=True,
        jax_compilation_cache_dir=str(path),
        jax_compilation_cache_max_size=MAX_BYTES,
        jax_persistent_cache_min_compile_time_secs=min_compile_seconds,
    )
    return path


def _update(**values: object) -> None:
    """Set JAX config values in this process, where JAX has been imported already."""
    import sys

    jax = sys.modules.get("jax")
    if jax is None:
        return
    for name, value in values.items():
        jax.config.update(name, value)

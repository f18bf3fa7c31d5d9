"""Shared fixtures: where the public reference data lives, and small potentials for fast tests."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """../shared beside the checkout, or $PFT_SHARED."""
    env = os.environ.get("PFT_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if path is None:
        pytest.skip("public reference data not found: set PFT_SHARED or place shared/ beside the checkout")
    return path


def shared_file(relative: str) -> Path:
    """A file under shared/, or skip the test naming what is missing."""
    root = shared_dir()
    if root is None or not (root / relative).exists():
        pytest.skip(f"reference file shared/{relative} not found (set PFT_SHARED)")
    return root / relative


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A tiny random Nequix that knows Cu and Au only (Pt records fail with a named element)."""
    return tiny_model_file(tmp_path_factory.mktemp("model"), (29, 79), cutoff=4.0, seed=0)


def tiny_model_file(directory: Path, atomic_numbers: tuple[int, ...], cutoff: float, seed: int) -> Path:
    """`directory`/tiny.ckpt: a one-layer random Nequix (4x0e + 2x1o) for fast end-to-end tests."""
    import jax

    import phonon_eval as pe

    config = pe.NequixConfig(
        atomic_numbers=atomic_numbers, cutoff=cutoff, hidden_irreps="4x0e + 2x1o", lmax=1, n_layers=1,
        radial_basis_size=4, radial_mlp_size=8, avg_n_neighbors=20.0,
    )
    pot = pe.Potential(model=pe.Nequix(config, key=jax.random.key(seed)), atomic_numbers=atomic_numbers, cutoff=cutoff)
    path = directory / "tiny.ckpt"
    pe.save_potential(path, pot)
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_example_cache(tmp_path_factory):
    """`pft-finetune` keeps phonon examples in $PFT_CACHE_DIR: the tests' own, not the user's."""
    previous = os.environ.get("PFT_CACHE_DIR")
    os.environ["PFT_CACHE_DIR"] = str(tmp_path_factory.mktemp("pft-cache"))
    yield
    if previous is None:
        os.environ.pop("PFT_CACHE_DIR", None)
    else:
        os.environ["PFT_CACHE_DIR"] = previous


@pytest.fixture(scope="module", autouse=True)
def _fresh_jax_caches():
    """Drop compiled executables after each test module: one pytest process compiles hundreds
    of programs, and holding them all only grows its memory."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run only with PFT_SLOW=1 (CI cannot afford them on 2 cores)."""
    if os.environ.get("PFT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set PFT_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def readme_block(marker: str) -> list[list[str]]:
    """The commands of the first ```bash block after `marker` in the README."""
    text = (REPO / "README.md").read_text()
    assert marker in text, f"README has no {marker!r}"
    block = text.split(marker, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if shlex.split(line, comments=True)]

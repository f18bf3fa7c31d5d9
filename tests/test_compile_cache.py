"""JAX's persistent compilation cache in a lasting folder: what one process compiled, the next
loads (JAX logs the hit), from the library call and from the command line alike."""

from __future__ import annotations

import os
import subprocess
import sys

from cli.eval import BUILTIN_DATASET

HIT = "Persistent compilation cache hit for 'jit_program'"


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _program(setting: str) -> str:
    return (
        "import logging; logging.basicConfig(level=logging.DEBUG)\n"
        "from phonon_eval.compile_cache import enable_compile_cache\n"
        f"print('folder', enable_compile_cache({setting!r}, min_compile_seconds=0))\n"
        "import jax, jax.numpy as jnp\n"
        "def program(x): return jnp.sin(x) @ x.T\n"
        "print(jax.jit(program)(jnp.ones((3, 3))).sum())"
    )


def test_a_program_compiled_once_is_loaded_by_the_next_process(tmp_path):
    folder = tmp_path / "jax"
    first = _python(_program(str(folder)))
    assert f"folder {folder}" in first.stdout and HIT not in first.stderr
    assert any(folder.iterdir()), "nothing was cached"
    second = _python(_program(str(folder)))
    assert HIT in second.stderr


def test_off_compiles_anew_and_the_default_folder_is_pft_cache_dir(tmp_path):
    off = _python(_program("off"), {"PFT_CACHE_DIR": str(tmp_path)})
    assert "folder None" in off.stdout and not (tmp_path / "jax").exists()
    code = "from phonon_eval.compile_cache import default_compile_cache as d; print(d())"
    env = {"PFT_CACHE_DIR": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": ""}
    assert _python(code, env).stdout.strip() == str(tmp_path / "jax")
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "own")  # JAX's own variable wins
    assert _python(code, env).stdout.strip() == str(tmp_path / "own")


def test_the_command_line_keeps_the_models_programs(tmp_path, tiny_ckpt):
    """`pft-eval phonons --compile-cache DIR` fills DIR with the potential's programs, and a second
    run (the same shapes) loads them instead of compiling them."""
    folder = tmp_path / "cache"
    args = [
        str(tiny_ckpt), "--dataset", str(BUILTIN_DATASET), "--materials", "Cu-fcc", "--no-relax", "--mesh", "4",
        "--temperatures", "0,300", "--band-points", "5", "--no-progress", "--compile-cache", str(folder),
    ]
    code = "import sys, logging; logging.basicConfig(level=logging.DEBUG); from cli.eval import main; sys.argv[0] = 'pft-eval'; main()"
    runs = []
    for out in ("a.nc", "b.nc"):
        done = subprocess.run([sys.executable, "-c", code, "phonons", *args, "--out", str(tmp_path / out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(done.stderr)
    assert any(folder.iterdir()), "the run kept no program"
    assert "Persistent compilation cache hit" not in runs[0]
    assert "Persistent compilation cache hit for 'jit__forces_batch'" in runs[1]


def test_a_folder_that_cannot_be_made_is_said_and_the_run_goes_on(tmp_path):
    from typer.testing import CliRunner

    from cli.eval import app
    from phonon_eval.compile_cache import enable_compile_cache

    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the folder's parent should be
    assert enable_compile_cache(blocked / "jax") is None
    # the warning comes first; the run then stops at its own usage error (no model given)
    res = CliRunner().invoke(app, ["phonons", "--compile-cache", str(blocked / "jax")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and f"cannot create {blocked / 'jax'}: compiling without a cache" in text

"""What every command shares: the console on stderr, error reporting and exit codes."""

from __future__ import annotations

import contextlib
from typing import Annotated, Iterator, NoReturn, Optional

import typer
from rich.console import Console

# progress, tables and errors go to stderr so stdout stays clean for data
err_console = Console(stderr=True)
console = Console()

# One exit convention for every command that evaluates or trains, so a pipeline can branch on it
EXIT_OK = 0
"""Every material was evaluated (or the training finished)."""
EXIT_FAILED = 1
"""An error, or no material evaluated: nothing usable was written."""
EXIT_USAGE = 2
"""Bad usage: an unknown option value, file or id; nothing was run."""
EXIT_PARTIAL = 3
"""The results file was written, but some materials failed (their reasons are in the file)."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C, 128 + SIGINT as shells report it); what finished is saved for --resume."""

EXIT_HELP = (
    "Exit status: 0 every material evaluated; 3 results written but some materials failed; "
    "1 an error or no material evaluated; 2 bad usage; 130 interrupted (what finished is saved: "
    "run again with --resume)."
)
"""The convention in words, for the epilog of each command's --help."""

EXIT_HELP_TRAINING = (
    "Exit status (as pft-eval's): 0 training finished; 1 an error; 2 bad usage (also --resume without a "
    "state file); 130 interrupted (the last finished epoch is saved: run again with --resume)."
)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one clear line and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def reported(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected errors of a command into one clear line and exit 1."""
    try:
        yield
    except errors as err:
        fail(str(err))


def exit_for_results(n_ok: int, n_failed: int) -> int:
    """The exit status of a run that wrote its results file: 0, 3 (some failed) or 1 (none ok)."""
    if n_ok == 0:
        return EXIT_FAILED
    return EXIT_PARTIAL if n_failed else EXIT_OK


def interrupted(saved: str, resume: str) -> NoReturn:
    """Say what an interrupted run saved and how to continue it, and exit 130."""
    err_console.print(f"[bold yellow]interrupted:[/] {saved}; {resume}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_INTERRUPTED)


def version_callback(value: bool) -> None:
    if value:
        from phonon_eval import __version__

        console.print(f"pft-toolkit {__version__}")
        raise typer.Exit()


CompileCacheOption = Annotated[Optional[str], typer.Option(
    help="Folder of JAX's persistent compilation cache, shared by later runs and by the workers: programs "
    "compiled once (they depend on the architecture and shapes, not the weights) are loaded, not compiled "
    "again. Default $JAX_COMPILATION_CACHE_DIR, else $PFT_CACHE_DIR/jax, else ~/.cache/pft/jax; 'off' "
    "compiles everything anew.", show_default=False)]


def use_compile_cache(folder: str | None) -> None:
    """JAX's compilation cache in `folder` (the option's value), before anything compiles; a
    folder that was asked for and cannot be made is said, and the run goes on without it."""
    from phonon_eval.compile_cache import enable_compile_cache

    if enable_compile_cache(folder) is None and folder not in (None, "off"):
        err_console.print(f"[yellow]warning:[/] cannot create {folder}: compiling without a cache", highlight=False, soft_wrap=True)


VersionOption = Annotated[
    bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
]

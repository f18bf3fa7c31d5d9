"""What every command shares: the console on stderr, error reporting and exit codes."""

from __future__ import annotations

import contextlib
from typing import Iterator, NoReturn

import typer
from rich.console import Console

# progress, tables and errors go to stderr so stdout stays clean for data
err_console = Console(stderr=True)
console = Console()

EXIT_FAILED = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print one clear line and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def not_landed(command: str, issue: str) -> NoReturn:
    """For a command whose work has not landed yet: say so, print nothing made up, exit 1."""
    fail(f"`{command}` is not implemented yet ({issue}); no output was produced.")


@contextlib.contextmanager
def reported(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the expected errors of a command into one clear line and exit 1."""
    try:
        yield
    except errors as err:
        fail(str(err))


def version_callback(value: bool) -> None:
    if value:
        from phonon_eval import __version__

        console.print(f"pft-toolkit {__version__}")
        raise typer.Exit()

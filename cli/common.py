"""What every command shares: the console on stderr, error reporting and exit codes."""

from __future__ import annotations

import contextlib
from typing import Annotated, Iterator, NoReturn

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


VersionOption = Annotated[
    bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
]

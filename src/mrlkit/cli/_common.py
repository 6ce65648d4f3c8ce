"""What every command module shares: the Typer app, the two consoles (results on
stdout, messages on stderr), the store option, and progress for long work."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.console import Console

app = typer.Typer(help="Matryoshka embeddings: embed once, serve any prefix, search in tiers.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=True)

out = Console()
err = Console(stderr=True)

def _version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"mrlkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print mrlkit's version and exit.")] = False) -> None:
    """Matryoshka embeddings: embed once, serve any prefix, search in tiers."""


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def confirm(action: str, yes: bool) -> None:
    """Ask before destroying data: on a terminal a yes/no question, elsewhere ``--yes``
    is required (a script must say what it means)."""
    import sys

    from ..errors import InvalidInputError

    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInputError(f"{action}: pass --yes to confirm (no terminal to ask on)")
    if not typer.confirm(f"{action}. Continue?", default=False, err=True):
        err.print("nothing changed")
        raise typer.Exit(1)


StoreOpt = Annotated[Optional[str], typer.Option("--store", envvar="MRLKIT_STORE",
                     help="Store location (default ./mrlkit-data).")]


def _store(location: Optional[str], *, create: bool = False) -> Any:
    """The store at ``location``; only commands that create a set create a store."""
    from ..stores import open_store

    return open_store(location, create=create)

"""`mrlkit pg start|stop`: an embedded PostgreSQL for users who have none."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._common import app, err, out


pg_app = typer.Typer(help="An embedded PostgreSQL with pgvector, for users who have none.",
                     no_args_is_help=True)
app.add_typer(pg_app, name="pg")
PgData = Annotated[str, typer.Option("--data", help="Data folder of the server.")]


@pg_app.command("start")
def pg_start(data: PgData = "~/.local/share/mrlkit/pg") -> None:
    """Start PostgreSQL 18 + pgvector (keeps running) and print its URL for --store."""
    from ..stores import start_embedded

    url = start_embedded(data)
    err.print(f"PostgreSQL with pgvector is running (data in {data}); use it with:")
    sys.stdout.write(f"{url}\n")
    # one line each, never wrapped: they are copied and pasted
    err.print(f"  export MRLKIT_STORE='{url}'", soft_wrap=True, markup=False, highlight=False)
    err.print(f"  stop it with: mrlkit pg stop --data {data}", soft_wrap=True, markup=False,
              highlight=False)


@pg_app.command("stop")
def pg_stop(data: PgData = "~/.local/share/mrlkit/pg") -> None:
    """Stop the embedded PostgreSQL started by `mrlkit pg start`."""
    from ..stores import stop_embedded

    out.print("stopped" if stop_embedded(data) else f"no server running in {data}")

"""`mrlkit models`: the catalog."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ._common import JsonListOpt, JsonlOpt, app, emit, out, show


models_app = typer.Typer(help="The model catalog.", invoke_without_command=True)
app.add_typer(models_app, name="models")

# --- models ------------------------------------------------------------------
@models_app.callback()
def models(ctx: typer.Context, json_out: JsonListOpt = False,
           jsonl: JsonlOpt = False) -> None:
    """List the catalog: name, provider, native dim, MRL, allowed dims."""
    if ctx.invoked_subcommand is not None:
        return
    from ..registry import list_specs

    if emit([spec.as_dict() for spec in list_specs()], as_json=json_out, as_jsonl=jsonl):
        return

    table = Table(title="mrlkit models")
    table.add_column("name")
    table.add_column("provider")
    table.add_column("dim", justify="right")
    table.add_column("MRL")
    table.add_column("allowed dims")
    for s in list_specs():
        table.add_row(s.name, s.provider, str(s.native_dim), "yes" if s.supports_mrl else "no",
                      s.allowed_dims_text())
    show(table, wrap=("allowed dims",))


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(
        help="A model name from `mrlkit models`.")]) -> None:
    """Everything about one model."""
    from ..registry import get_spec

    table = Table(show_header=False, title=name)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in get_spec(name).as_dict().items():
        table.add_row(key, json.dumps(value) if not isinstance(value, str) else repr(value)
                      if key.endswith("prompt") else value)
    out.print(table)

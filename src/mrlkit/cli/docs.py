"""`mrlkit docs get|list|delete`: the documents of a set, and `mrlkit check`: a funnel's
recall on the set's own documents."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import InvalidInputError
from ._common import StoreOpt, _store, app, out

docs_app = typer.Typer(help="The documents of a set: get, list, delete.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON lines on stdout.")]


def _print(docs: list[Any], title: str, json_out: bool) -> None:
    if json_out:
        for d in docs:
            sys.stdout.write(json.dumps({"id": d.id, "text": d.text,
                                         "metadata": d.metadata}) + "\n")
        return
    table = Table(title=title, expand=True)
    table.add_column("id", no_wrap=True, min_width=min(max([len(d.id) for d in docs] + [2]),
                                                       max(8, out.width // 3)))
    table.add_column("text", overflow="ellipsis", no_wrap=True, ratio=1, min_width=10)
    table.add_column("metadata", overflow="ellipsis", no_wrap=True, max_width=40)
    for d in docs:
        table.add_row(d.id, (d.text or "").replace("\n", " "),
                      json.dumps(d.metadata, ensure_ascii=False) if d.metadata else "")
    out.print(table)


@docs_app.command("get")
def docs_get(name: str, ids: Annotated[list[str], typer.Argument(help="Document ids.")],
             store: StoreOpt = None, json_out: JsonFlag = False) -> None:
    """Documents by id; exit 1 when one is missing."""
    found = _store(store).get(name, ids)
    missing = [i for i, d in zip(ids, found) if d is None]
    _print([d for d in found if d is not None], f"{name}: {len(ids)} ids", json_out)
    if missing:
        raise InvalidInputError(f"not in set {name!r}: {missing[:10]}")


@docs_app.command("list")
def docs_list(name: str, limit: Annotated[int, typer.Option(help="Documents per page.")] = 20,
              offset: Annotated[int, typer.Option(help="Documents to skip.")] = 0,
              store: StoreOpt = None, json_out: JsonFlag = False) -> None:
    """A page of a set's documents (--offset and --limit to scroll)."""
    docs = _store(store).documents(name, offset=offset, limit=limit)
    _print(docs, f"{name}: documents {offset + 1}–{offset + len(docs)}", json_out)


@docs_app.command("delete")
def docs_delete(name: str, ids: Annotated[list[str], typer.Argument(help="Document ids.")],
                store: StoreOpt = None) -> None:
    """Delete documents by id (the ones named, nothing else)."""
    removed = _store(store).delete(name, ids)
    out.print(f"deleted {removed} of {len(ids)} documents from {name}"
              + (f" ({len(ids) - removed} were not in it)" if removed < len(ids) else ""))


@app.command("check")
def check_funnel(name: str,
                 funnel: Annotated[str, typer.Option(help="The funnel to check, e.g. "
                                                          "64:binary:1000,384.")],
                 k: Annotated[int, typer.Option("-k", "--k", help="Hits compared.")] = 10,
                 sample: Annotated[int, typer.Option(
                     help="Documents of the set used as queries.")] = 200,
                 store: StoreOpt = None, json_out: JsonFlag = False) -> None:
    """recall@k of a funnel against exact search on the set's own documents (no labels
    needed), with the latency of each."""
    from ..evaluation.selfcheck import funnel_recall
    from ..funnel import Funnel

    result = funnel_recall(_store(store), name, Funnel.parse(funnel), sample=sample, k=k)
    if json_out:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        return
    table = Table(title=f"{name}: funnel {result.funnel} on {result.sample} of its own "
                        f"documents as queries")
    for col in ("recall@k", "k", "funnel p50 ms", "exact p50 ms"):
        table.add_column(col, justify="right")
    table.add_row(f"{100 * result.recall:.1f}%", str(result.k), f"{result.p50_ms:.2f}",
                  f"{result.exact_p50_ms:.2f}")
    out.print(table)

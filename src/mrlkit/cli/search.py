"""`mrlkit search`: a query text, or every query of a file, against a set."""

from __future__ import annotations

import json
import sys
import warnings
from typing import Annotated, Any, Optional, TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from ._common import SetArg, StoreOpt, _store, app, err, out

if TYPE_CHECKING:
    from ..embedding_set import EmbeddingSet


@app.command("search")
def search(
    name: SetArg,
    query: Annotated[Optional[str], typer.Argument(
        help="The query text (or give --queries FILE).")] = None,
    queries: Annotated[Optional[str], typer.Option(
        "--queries", help="A file of queries, searched in batches: JSONL (text or query, "
                          "id or _id; BEIR's queries.jsonl) or one query per line. "
                          "Prints one line per query: id, hits and scores (--jsonl: "
                          "a JSON object per query; --json: one list).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of hits.")] = 10,
    funnel: Annotated[Optional[str], typer.Option(
        help="Stages DIM[:PRECISION][:KEEP], e.g. 64:binary:1000,256:int8:100,384.")] = None,
    filter: Annotated[Optional[list[str]], typer.Option("--filter",
                      help="Metadata equality key=value (repeatable).")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print one JSON document on stdout (with --queries: a list of "
        "every query's hits).")] = False,
    jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="With --queries: one JSON object per query, streamed as each "
        "batch is searched.")] = False,
    batch_size: Annotated[int, typer.Option(
        help="Queries embedded and searched together (--queries).")] = 256,
    recall: Annotated[Optional[float], typer.Option(
        help="Without --funnel: the cheapest plan `sets tune` measured to keep this "
        "recall@10 (default: the set's target).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    store: StoreOpt = None,
) -> None:
    """Search a set with a query text, or with every query of a file (--queries)."""
    from ..embedding_set import EmbeddingSet
    from ..stores import parse_filters

    if (query is None) == (queries is None):
        raise typer.BadParameter("give a QUERY or --queries FILE (one of the two)")
    s = EmbeddingSet(_store(store), name)
    filters = parse_filters(filter or [])
    if queries is not None:
        _search_file(s, queries, k=k, funnel=funnel, filters=filters, json_out=json_out,
                     jsonl=jsonl, batch_size=batch_size, progress=not quiet, recall=recall)
        return
    if jsonl:
        raise typer.BadParameter("--jsonl streams the queries of --queries FILE; for one "
                                 "query use --json")
    assert query is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = s.search(query, k=k, funnel=funnel, filters=filters, recall=recall)
    if json_out:
        sys.stdout.write(json.dumps({"query": query, **result.as_dict()}) + "\n")
        return
    hits = result.hits[0]
    # the id is what a user acts on: shown whole (up to a third of the width), the text
    # takes what is left and is cut with an ellipsis
    id_width = min(max([len(h.id) for h in hits] + [2]), max(8, out.width // 3))
    table = Table(title=escape(f"{name}: {query!r}"), expand=True)
    table.add_column("#", justify="right", no_wrap=True, min_width=len(str(len(hits))))
    table.add_column("id", no_wrap=True, min_width=id_width, overflow="fold")
    table.add_column("score", justify="right", no_wrap=True, min_width=6)
    table.add_column("text", overflow="ellipsis", no_wrap=True, ratio=1, min_width=10)
    for rank, h in enumerate(hits, 1):
        table.add_row(str(rank), h.id, f"{h.score:.4f}", (h.text or "").replace("\n", " "))
    out.print(table)
    stages = " → ".join(f"{t.precision}@{t.dim} keep {t.keep} ({t.method}) {t.ms:.1f} ms"
                        for t in result.timings)
    out.print(f"[dim]funnel {result.funnel} ({result.path}): {stages}; dims used: "
              f"{result.dims_used[0]}[/]")
    for note in result.notes:  # e.g. an index that could not be written (a full disk)
        err.print(f"note: {note}", markup=False, highlight=False)


def _search_file(s: EmbeddingSet, path: str, *, k: int, funnel: str | None,
                 filters: dict[str, Any], json_out: bool, jsonl: bool, batch_size: int,
                 progress: bool, recall: float | None = None) -> None:
    """Every query of a file, ``batch_size`` at a time: one model call and one batched
    search per batch, results streamed as they come (nothing held for the whole file)."""
    from ..documents import read_queries
    from ..progress import Progress

    if json_out and jsonl:
        raise typer.BadParameter("give --json (one document) or --jsonl (a line per "
                                 "query), not both")
    items = read_queries(path)
    collected: list[dict[str, Any]] = []  # --json: one document, written at the end
    if not items:
        raise typer.BadParameter(f"{path} holds no query")
    if batch_size < 1:
        raise typer.BadParameter("--batch-size must be at least 1")
    with Progress("searching", total=len(items), enabled=progress, unit="queries") as bar, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            result = s.search([t for _, t in chunk], k=k, funnel=funnel, filters=filters,
                              recall=recall)
            for (qid, text), hits in zip(chunk, result.hits):
                row = {"query_id": qid, "query": text,
                       "hits": [{"id": h.id, "score": h.score} for h in hits]}
                if json_out:
                    collected.append(row)
                elif jsonl:
                    sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                else:  # plain tab-separated lines: for a pipe more than for a screen
                    sys.stdout.write(f"{qid}\t" + "  ".join(f"{h.id} ({h.score:.4f})"
                                                            for h in hits) + "\n")
            sys.stdout.flush()
            bar.advance(len(chunk))
    if json_out:
        sys.stdout.write(json.dumps(collected, ensure_ascii=False) + "\n")

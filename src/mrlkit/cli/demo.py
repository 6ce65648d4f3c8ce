"""`mrlkit demo`: the retention table and a search on data every machine has."""

from __future__ import annotations

from typing import Any

import warnings

from rich.table import Table

from ._common import show
from ._common import app, err, out
from .sets import storage_table


@app.command()
def demo() -> None:
    """Offline tour with the bundled model: what truncation does to similarity."""
    from ..demo import similarity_demo

    err.print("Embedding sentence pairs with the bundled all-MiniLM-L6-v2 …")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = similarity_demo()
    table = Table(title=f"Quality retention — {result['model']}, {result['pairs']} sentence pairs")
    for col in ("dimension", "mean pair similarity", "retention vs full",
                "rank agreement vs full", "bytes / vector (float32)"):
        table.add_column(col, justify="right")
    for r in result["rows"]:
        table.add_row(str(r["dim"]), f"{r['mean_similarity']:.3f}", f"{r['retention']:.1%}",
                      f"{r['rank_agreement']:.3f}", str(r["bytes_per_vector"]))
    out.print(table)
    _note_non_mrl(result)
    _search_demo()


def _search_demo() -> None:
    from ..demo import search_demo

    err.print("\nIndexing standard-library docstrings (present on every machine) …")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = search_demo()
    table = Table(title=f"Search {result['documents']} docstrings: exact vs funnel "
                        f"{result['funnel']}")
    table.add_column("query", overflow="fold", ratio=2)
    table.add_column("exact top 3", overflow="fold", ratio=3)
    table.add_column("ms", justify="right")
    table.add_column("funnel top 3", overflow="fold", ratio=3)
    table.add_column("ms", justify="right")
    for r in result["rows"]:
        same = r["exact"] == r["funnel"]
        table.add_row(r["query"], ", ".join(r["exact"]), f"{r['exact_ms']:.2f}",
                      ("[green]" if same else "[yellow]") + ", ".join(r["funnel"]),
                      f"{r['funnel_ms']:.2f}")
    out.print(table)
    agree = sum(r["exact"] == r["funnel"] for r in result["rows"])
    out.print(f"Same top 3 for {agree} of {len(result['rows'])} queries. On a set this small "
              "an exact scan is already fast; funnels pay off from ~100k vectors "
              "(see benchmarks/search.py).")
    out.print(storage_table(result["storage"]))
    _retrieval_demo()


def _retrieval_demo() -> None:
    from ..demo import retrieval_demo
    from ..evaluation.report import retrieval_table

    err.print("\nMeasuring retrieval retention on the same docstrings (query: the "
              "function's name in words; relevant: its docstring) …")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = retrieval_demo()
    show(retrieval_table(report))
    out.print("Plots: " + ", ".join(report["plots"]) + " (and the table as JSON beside them).")


def _note_non_mrl(result: dict[str, Any]) -> None:
    if not result["supports_mrl"]:
        out.print("[yellow]Note:[/] all-MiniLM-L6-v2 is [bold]not[/] Matryoshka-trained. "
                  "Its prefixes were never trained to stand alone, so this table is the "
                  "control: an MRL model keeps more at the same dimension. Mean similarity "
                  "can even rise when truncating (short prefixes look alike); the rank "
                  "agreement column shows whether the ordering of pairs survives.")

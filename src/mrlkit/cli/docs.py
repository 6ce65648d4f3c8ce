"""`mrlkit docs get|list|delete`: the documents of a set, and `mrlkit check`: a funnel's
recall on the set's own documents."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import InvalidInputError
from ._common import (JsonListOpt, JsonlOpt, SetArg, StoreOpt, _store, app,
                      emit, err, out)
from .sets import sets_app

docs_app = typer.Typer(help="The documents of a set: get, list, delete.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

def _print(docs: list[Any], title: str, json_out: bool, jsonl: bool) -> None:
    if emit([{"id": d.id, "text": d.text, "metadata": d.metadata} for d in docs],
            as_json=json_out, as_jsonl=jsonl):
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
def docs_get(name: SetArg, ids: Annotated[list[str], typer.Argument(help="Document ids.")],
             store: StoreOpt = None, json_out: JsonListOpt = False,
             jsonl: JsonlOpt = False) -> None:
    """Documents by id; exit 1 when one is missing."""
    found = _store(store).get(name, ids)
    missing = [i for i, d in zip(ids, found) if d is None]
    _print([d for d in found if d is not None], f"{name}: {len(ids)} ids", json_out, jsonl)
    if missing:
        raise InvalidInputError(f"not in set {name!r}: {missing[:10]}")


@docs_app.command("list")
def docs_list(name: SetArg, limit: Annotated[int, typer.Option(help="Documents per page.")] = 20,
              offset: Annotated[int, typer.Option(help="Documents to skip.")] = 0,
              store: StoreOpt = None, json_out: JsonListOpt = False,
             jsonl: JsonlOpt = False) -> None:
    """A page of a set's documents (--offset and --limit to scroll)."""
    docs = _store(store).documents(name, offset=offset, limit=limit)
    _print(docs, f"{name}: documents {offset + 1}–{offset + len(docs)}", json_out, jsonl)


@docs_app.command("delete")
def docs_delete(name: SetArg, ids: Annotated[list[str], typer.Argument(help="Document ids.")],
                store: StoreOpt = None) -> None:
    """Delete documents by id (the ones named, nothing else)."""
    removed = _store(store).delete(name, ids)
    out.print(f"deleted {removed} of {len(ids)} documents from {name}"
              + (f" ({len(ids) - removed} were not in it)" if removed < len(ids) else ""))


@app.command("check")
def check_funnel(name: SetArg,
                 funnel: Annotated[str, typer.Option(help="The funnel to check, e.g. "
                                                          "64:binary:1000,384.")],
                 k: Annotated[int, typer.Option("-k", "--k", help="Hits compared.")] = 10,
                 sample: Annotated[int, typer.Option(
                     help="Documents of the set used as queries.")] = 200,
                 store: StoreOpt = None, json_out: JsonListOpt = False,
             jsonl: JsonlOpt = False) -> None:
    """recall@k of a funnel against exact search on the set's own documents (no labels
    needed), with the latency of each."""
    from ..evaluation.selfcheck import funnel_recall
    from ..funnel import Funnel

    result = funnel_recall(_store(store), name, Funnel.parse(funnel), sample=sample, k=k)
    if json_out:
        sys.stdout.write(json.dumps(result.as_dict()) + "\n")
        return
    table = Table(title=f"{name}: funnel {result.funnel} on {result.sample} of its own "
                        f"documents as queries (each held out of its own hits)")
    for col in ("recall@k", "95% CI", "k", "funnel p50 ms", "exact p50 ms"):
        table.add_column(col, justify="right")
    table.add_row(f"{100 * result.recall:.1f}%",
                  f"{100 * result.low:.1f}–{100 * result.high:.1f}%", str(result.k),
                  f"{result.p50_ms:.2f}", f"{result.exact_p50_ms:.2f}")
    out.print(table)


def _metadata(columns: dict[str, Any]) -> dict[str, Any]:
    """A row's metadata: its other columns; a ``metadata`` column holding a JSON object
    (as `sets export` writes it) is unpacked."""
    packed = columns.pop("metadata", None)
    if isinstance(packed, str):
        try:
            packed = json.loads(packed)
        except ValueError:
            return {**columns, "metadata": packed}
    return {**(packed if isinstance(packed, dict) else {}), **columns}


@app.command("add-vectors")
def add_vectors(name: SetArg,
                path: Annotated[Path, typer.Argument(help=".npy (with --ids) or .parquet.")],
                ids: Annotated[Optional[Path], typer.Option(
                    help=".npy input: a text file of ids, one per line, in row order.")] = None,
                id_field: Annotated[str, typer.Option(help="parquet: the id column.")] = "id",
                vector_field: Annotated[str, typer.Option(
                    help="parquet: the vector column.")] = "embedding",
                text_field: Annotated[str, typer.Option(
                    help="parquet: a text column, when present.")] = "text",
                upsert: Annotated[bool, typer.Option(help="Replace existing ids.")] = False,
                store: StoreOpt = None) -> None:
    """Add precomputed vectors (at the set's stored dimension; normalised on the way in)
    with no model call: one atomic batch per 10,000 rows."""
    import numpy as np

    from ..progress import Progress

    texts: list[Any] | None = None
    metadata: list[dict[str, Any]] | None = None
    if path.suffix == ".npy":
        if ids is None:
            raise InvalidInputError("a .npy file needs --ids FILE (one id per line)")
        try:
            x = np.load(path, allow_pickle=False)
            id_list = [line for line in ids.read_text("utf-8").splitlines() if line.strip()]
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read {path} or {ids}: {exc}") from None
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow's own kinds for a bad file
            raise InvalidInputError(f"{path}: not a parquet file ({exc})") from None
        if rows and (id_field not in rows[0] or vector_field not in rows[0]):
            raise InvalidInputError(f"{path}: needs columns {id_field!r} and "
                                    f"{vector_field!r} (has {', '.join(rows[0])})")
        id_list = [r[id_field] for r in rows]
        x = np.asarray([r[vector_field] for r in rows], np.float32)
        texts = [r.get(text_field) for r in rows]
        metadata = [_metadata({k: v for k, v in r.items()
                               if k not in (id_field, vector_field, text_field)})
                    for r in rows]
    else:
        raise InvalidInputError(f"{path}: expected .npy (with --ids) or .parquet")
    if len(id_list) != len(x):
        raise InvalidInputError(f"{len(id_list)} ids but {len(x)} vectors")
    st = _store(store)
    added = 0
    with Progress(f"adding vectors to {name}", len(id_list), unit="vectors") as bar:
        for start in range(0, len(id_list), 10_000):
            end = start + 10_000
            added += st.add(name, id_list[start:end], x[start:end],
                            texts[start:end] if texts else None,
                            metadata[start:end] if metadata else None, upsert=upsert)
            bar.advance(min(end, len(id_list)) - start)
    out.print(f"added {added:,} vectors to {name} (no model call)")


@sets_app.command("export")
def sets_export(name: SetArg,
                output: Annotated[Path, typer.Option("--output", "-o",
                                                     help=".parquet, .npy or .jsonl.")],
                force: Annotated[bool, typer.Option(
                    "--force", help="Overwrite files that exist (the output, and for .npy "
                    "the .jsonl beside it).")] = False,
                store: StoreOpt = None) -> None:
    """Export a set's ids, texts, metadata and stored vectors: .parquet (one row each),
    .jsonl (one line each), or .npy (the vectors; ids, texts and metadata in
    <name>.jsonl beside it)."""
    import numpy as np

    if output.suffix not in (".parquet", ".npy", ".jsonl"):
        raise InvalidInputError(f"--output must end in .parquet, .npy or .jsonl, not "
                                f"{output.name!r}")
    if not output.resolve().parent.is_dir():
        raise InvalidInputError(f"the folder {output.parent} does not exist")
    written = [output] + ([output.with_suffix(".jsonl")] if output.suffix == ".npy" else [])
    there = [str(p) for p in written if p.exists()]
    if there and not force:
        raise InvalidInputError(f"{' and '.join(there)} exist{'s' if len(there) == 1 else ''}"
                                ": pass --force to overwrite, or choose another --output")
    st = _store(store)
    ids, x = st.vectors(name)
    docs = []
    for start in range(0, len(ids), 5_000):
        docs += st.get(name, ids[start:start + 5_000])
    rows = [{"id": i, "text": d.text if d else None, "metadata": d.metadata if d else {}}
            for i, d in zip(ids, docs)]
    if output.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({
            "id": ids, "text": [r["text"] for r in rows],
            "metadata": [json.dumps(r["metadata"]) for r in rows],
            "embedding": pa.array(list(x.astype(np.float32)), pa.list_(pa.float32()))}),
            output)
    elif output.suffix == ".npy":
        np.save(output, x.astype(np.float32))
        side = output.with_suffix(".jsonl")
        side.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
        err.print(f"ids, texts and metadata in {side}")
    else:
        output.write_text("".join(json.dumps({**r, "embedding": v.tolist()}) + "\n"
                                  for r, v in zip(rows, x)), "utf-8")
    out.print(f"exported {len(ids):,} documents of {name} to {output}")


@sets_app.command("copy")
def sets_copy(name: SetArg,
              to: Annotated[str, typer.Option("--to", help="The store to copy into (any "
                                              "backend: a folder, postgresql://…, "
                                              "chroma:…, qdrant:…).")],
              as_name: Annotated[Optional[str], typer.Option(
                  "--as", help="The copy's name (default: the same).")] = None,
              store: StoreOpt = None) -> None:
    """Copy a set — ids, texts, metadata and stored vectors, no model call — into
    another store, e.g. from qdrant:PATH to a Qdrant server. Re-running an interrupted
    copy completes it (documents are upserted)."""
    from ..progress import Progress

    src = _store(store)
    target = as_name or name
    same = src.location == to
    count = src.get_set(name).count
    dst = src if same else _store(to, create=True)
    with Progress(f"copying {name} to {to}", count, unit="documents") as bar:
        copied = src.copy_set(name, dst, target, progress=bar.advance)
    if not same:
        dst.close()
    out.print(f"copied {copied:,} documents of {name} to {target} in {to}")

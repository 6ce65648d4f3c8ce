"""`mrlkit sets …`, `add` and `search`: embedding sets and their documents."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import warnings
from typing import Annotated, Optional, TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from ._common import show
from ._common import JsonListOpt, JsonlOpt, JsonOpt, SetArg, emit
from ._common import (BackendOpt, DeviceOpt, EncodeBatchOpt, StoreOpt, YesOpt, _store, app,
                      confirm, err, out, provider_options)

if TYPE_CHECKING:
    from ..stores import StorageInfo


# --- sets, index, search -----------------------------------------------------------
sets_app = typer.Typer(help="Embedding sets: create, list, info, index, check, truncate, "
                       "export, copy, drop.",
                       no_args_is_help=True)
app.add_typer(sets_app, name="sets")

@sets_app.command("create")
def sets_create(
    name: SetArg,
    model: Annotated[str, typer.Option(help="Model name from `mrlkit models`.")],
    dim: Annotated[Optional[int], typer.Option(help="truncate_dim (default: native).")] = None,
    storage: Annotated[str, typer.Option(
        help="float16 (the default: half the bytes, the same recall@10 in "
             "docs/benchmarks.md) or float32.")] = "float16",
    allow_non_mrl: Annotated[bool, typer.Option(
        "--allow-non-mrl", help="Allow a truncate_dim for a model that is not "
        "Matryoshka-trained (its prefixes lose quality: measure it with `mrlkit eval`).")
    ] = False,
    index: Annotated[bool, typer.Option(
        help="pgvector: create the HNSW index of the default funnel's first stage now "
             "(--no-index loads faster; index after with `sets index`).")] = True,
    recall: Annotated[Optional[float], typer.Option(
        help="The set's recall@10 target against exact full-vector search (default "
             "0.95): its tunes keep it, and a search without --funnel runs the cheapest "
             "plan measured to keep it.")] = None,
    store: StoreOpt = None,
) -> None:
    """Create an embedding set (model and dimension validated by the registry)."""
    info = _store(store, create=True).create_set(name, model, dim, storage=storage,
                                    allow_non_mrl=allow_non_mrl, index=index,
                                    recall=recall)
    out.print(f"created set [bold]{info.name}[/]: {info.model} at {info.stored_dim} "
              f"dimensions, {info.storage}"
              + (f", recall target {recall}" if recall is not None else ""))


@sets_app.command("index")
def sets_index(name: SetArg, funnel: Annotated[str, typer.Option(
        help="The funnel whose first stage to index, e.g. 64:binary:1000,768.")],
               store: StoreOpt = None) -> None:
    """Build, ahead of the first search, what a funnel's first stage reads: on the local
    store an HNSW graph of a float prefix (large sets) or a view of codes, on pgvector an
    HNSW expression index, on Chroma and Qdrant the first-stage collection or vector."""
    from ..funnel import Funnel

    made = _store(store).index(name, Funnel.parse(funnel))
    out.print(f"set {name}: " + (", ".join(made) if made else "nothing to build "
                                 "(the stage reads the stored vectors, or the set is empty)"))


@sets_app.command("tune")
def sets_tune(name: SetArg,
              queries: Annotated[Optional[str], typer.Option(
                  "--queries", help="Your own queries to measure on (JSONL with text or "
                  "query, or one per line): real queries beat documents. Default: 200 of "
                  "the set's documents, each searched with itself excluded.")] = None,
              recall: Annotated[Optional[float], typer.Option(
                  help="The recall@k target against exact full-vector search (default: "
                       "the set's own, 0.95 unless created with another).")] = None,
              k: Annotated[int, typer.Option("-k", "--k", help="Hits per search.")] = 10,
              probes: Annotated[int, typer.Option(
                  help="Documents sampled as probe queries (without --queries).")] = 200,
              json_out: JsonOpt = False, store: StoreOpt = None) -> None:
    """Measure, on the set's own data, the cheapest search plan that keeps a recall
    target, and keep it: searches without --funnel then run it. Every plan tried is
    shown with its measured recall and p50 latency; the choice with its 95% confidence
    interval and sample size."""
    from ..documents import read_queries
    from ..embedding_set import EmbeddingSet

    texts = [t for _, t in read_queries(queries)] if queries else None
    if queries and not texts:
        raise typer.BadParameter(f"{queries} holds no query")
    s = EmbeddingSet(_store(store), name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tuned = s.tune(texts, recall=recall, k=k, probes=probes,
                       progress=None if json_out else lambda line: err.print(
                           f"  {line}", markup=False, highlight=False))
    if json_out:
        sys.stdout.write(json.dumps(dataclasses.asdict(tuned)) + "\n")
        return
    table = Table(title=escape(f"{name}: plans measured for recall@{k} ≥ {tuned.target} "
                               f"on {tuned.probes} probe {tuned.source}"))
    for col in ("funnel", "recall", "p50 ms", "path"):
        table.add_column(col, no_wrap=True, justify="left" if col == "funnel" else "right")
    for t in tuned.tried:
        mark = " ←" if t["funnel"] == tuned.funnel else ""
        table.add_row(escape(t["funnel"]) + mark, f"{t['recall']:.3f}", f"{t['p50_ms']}",
                      t["path"])
    show(table)
    out.print(escape(f"set {name}: {tuned.funnel} — {tuned.describe()}; {tuned.why}"))


@sets_app.command("list")
def sets_list(store: StoreOpt = None, json_out: JsonListOpt = False,
              jsonl: JsonlOpt = False) -> None:
    """List the sets of a store."""
    sets = _store(store).list_sets()
    if emit([s.as_dict() for s in sets], as_json=json_out, as_jsonl=jsonl):
        return
    table = Table(title="embedding sets")
    for col in ("name", "model", "truncate_dim", "stored dim", "storage", "documents"):
        table.add_column(col)
    for s in sets:
        table.add_row(s.name, s.model, str(s.truncate_dim or "native"), str(s.stored_dim),
                      s.storage, str(s.count))
    show(table)


@sets_app.command("info")
def sets_info(name: SetArg, store: StoreOpt = None, json_out: JsonOpt = False) -> None:
    """Count, stored bytes and bytes of each view (the storage summary)."""
    info = _store(store).info(name)
    if json_out:
        sys.stdout.write(json.dumps(info.as_dict(), indent=2) + "\n")
        return
    out.print(storage_table(info))


def storage_table(info: StorageInfo) -> Table:
    s = info.set
    table = Table(title=f"set {s.name} — {s.count} documents, {s.model} at {s.stored_dim} dims")
    table.add_column("what")
    table.add_column("dim", justify="right")
    table.add_column("precision")
    table.add_column("bytes", justify="right")
    table.add_column("bytes / vector", justify="right")
    rows = max(info.rows, 1)
    table.add_row("stored vectors", str(s.stored_dim), s.storage,
                  f"{info.stored_bytes:,}", str(info.bytes_per_vector))
    for v in info.views:
        table.add_row(v.kind, str(v.dim), v.precision, f"{v.bytes:,}", f"{v.bytes / rows:.1f}")
    notes = []
    if info.dead_rows:
        notes.append(f"{info.dead_rows:,} dead rows (deleted or replaced documents, masked by "
                     "every search)")
    if s.adapted:
        notes.append(f"adapted ({s.adapted}): prefixes meant for "
                     f"{', '.join(map(str, s.mrl_dims or []))} dimensions")
    if s.truncate_dim is not None:
        notes.append(f"truncate_dim {s.truncate_dim} of {s.model}'s native length")
    if info.default_funnel:
        notes.append(f"default funnel {info.default_funnel}: {info.funnel_reason}; it runs "
                     f"{info.path_reason}")
    if notes:
        table.caption = "; ".join(notes)
    return table


@sets_app.command("check")
def sets_check(name: SetArg, repair: Annotated[bool, typer.Option(
        "--repair", help="Rebuild derived data; remove documents whose vectors are lost "
                         "(named, to add again).")] = False,
               store: StoreOpt = None,
               json_out: JsonOpt = False,
               ) -> None:
    """Verify a set (catalogue, vector file and checksum, every stored vector, views);
    exit 3 when a problem is left."""
    report = _store(store).check(name, repair=repair)
    if json_out:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        for line in report.checked:
            out.print(f"checked: {line}", highlight=False)
        for line in report.repaired:
            out.print(f"[green]repaired:[/] {line}", highlight=False)
        for line in report.problems:
            out.print(f"[red]problem:[/] {line}", highlight=False)
        if report.delegated:
            out.print(f"not checked here: {report.delegated}", highlight=False)
        out.print(f"set {name}: " + ("ok" if report.ok else
                                     "problems left" + ("" if repair else
                                                        " (try --repair)")))
    if not report.ok:
        raise typer.Exit(3)


@sets_app.command("drop")
def sets_drop(name: SetArg, store: StoreOpt = None, yes: YesOpt = False) -> None:
    """Delete a set and its vectors (asks first; --yes to skip)."""
    st = _store(store)
    confirm(f"this deletes set {name!r} and its {st.get_set(name).count:,} documents", yes)
    st.drop_set(name)
    out.print(f"dropped set {name}")


@sets_app.command("truncate")
def sets_truncate(name: SetArg, dim: Annotated[int, typer.Option(help="New, smaller dimension.")],
                  allow_non_mrl: Annotated[bool, typer.Option(
                      "--allow-non-mrl", help="Allow it for a model not Matryoshka-trained.")
                  ] = False,
                  store: StoreOpt = None, yes: YesOpt = False) -> None:
    """Keep a shorter prefix of every stored vector (no model call; asks first, --yes to
    skip: the dimensions past it are gone)."""
    st = _store(store)
    info = st.get_set(name)
    if dim < info.stored_dim:
        confirm(f"this rewrites set {name!r} at {dim} of its {info.stored_dim} dimensions; "
                "the rest are lost", yes)
    info = st.truncate(name, dim, allow_non_mrl=allow_non_mrl)
    out.print(f"set {info.name} now stores {info.stored_dim} dimensions "
              f"({info.count} documents, no model call)")


# the old name, kept hidden for one release
sets_app.command("reindex", hidden=True)(sets_truncate)


@app.command("add")
def add(name: SetArg, path: Annotated[str, typer.Argument(
        help="The documents: a JSONL, CSV or parquet file, a BEIR corpus.jsonl, or a "
        "folder of .txt/.md files.")], store: StoreOpt = None,
          batch_size: Annotated[int, typer.Option(help="Documents per atomic batch.")] = 256,
          upsert: Annotated[bool, typer.Option(help="Replace documents whose id exists.")
                            ] = False,
          device: DeviceOpt = "auto",
          backend: BackendOpt = "torch",
          encode_batch_size: EncodeBatchOpt = None,
          quiet: Annotated[bool, typer.Option("--quiet", "-q",
                           help="No progress (on a terminal: a bar; in a log: lines "
                                "with rate and ETA).")] = False,
          id_field: Annotated[Optional[str], typer.Option(
              help="The id field (default: id, or BEIR's _id).")] = None,
          text_field: Annotated[Optional[str], typer.Option(
              help="The text field (default: text).")] = None,
          title_field: Annotated[Optional[str], typer.Option(
              help="A title embedded with the text (default: title, when present).")] = None,
          json_out: Annotated[bool, typer.Option(
              "--json", help="Print what was done as JSON on stdout.")] = False,
          ray: Annotated[Optional[str], typer.Option(
              "--ray", help="Embed on a Ray cluster: its address (host:port, ray://…) or "
              "'local' (needs mrlkit[ray]).")] = None,
          actors: Annotated[int, typer.Option(
              help="With --ray: model actors (one model each).")] = 2,
          ray_batch_size: Annotated[int, typer.Option(
              help="With --ray: texts per actor call.")] = 64) -> None:
    """Embed and add documents: a JSONL, CSV or parquet file (--id-field, --text-field),
    a BEIR corpus.jsonl, or a folder of .txt/.md files. A re-run skips documents already
    stored with the same text (an interrupted job resumes)."""
    from ..documents import Fields, read_documents
    from ..embedding_set import EmbeddingSet

    records, total, collapsed = read_documents(
        path, upsert=upsert, fields=Fields(id_field, text_field, title_field))
    st = _store(store)
    options = provider_options(st.get_set(name).model, device, encode_batch_size,
                               backend)
    s = EmbeddingSet(st, name, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the set's creation already warned about truncation
        if ray:
            from ..ray_index import add_with_ray

            done = add_with_ray(st, name, records, address=ray, actors=actors,
                                batch_size=batch_size, ray_batch_size=ray_batch_size,
                                upsert=upsert, total=total, progress=not quiet,
                                provider_options=options)
        else:
            try:
                # tuned below, with a word on stderr first
                done = s.add_stream(records, total=total, batch_size=batch_size,
                                    upsert=upsert, progress=not quiet, tune=False)
            except KeyboardInterrupt as stop:
                kept = getattr(stop, "added", None)
                stored = (f"{kept.added:,} documents added in this run" if kept else
                          "no batch finished in this run")
                err.print(f"interrupted: {stored}, every finished batch kept; run the same "
                          f"command again to resume (stored documents are skipped): "
                          f"{shlex.join(['mrlkit', *sys.argv[1:]])}", markup=False,
                          highlight=False, soft_wrap=True)
                raise typer.Exit(130) from None
    tuned = None
    if st.needs_tune(name):  # past the size where a first stage pays, or doubled since
        err.print(f"tuning {name}: measuring its search plans (`mrlkit sets tune`)",
                  markup=False, highlight=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tuned = st.tune(name)
    if json_out:
        sys.stdout.write(json.dumps({"set": name, "added": done.added,
                                     "skipped": done.skipped, "replaced": done.replaced,
                                     "collapsed": collapsed,
                                     "tuned": dataclasses.asdict(tuned) if tuned else None})
                         + "\n")
        return
    if tuned:
        out.print(escape(f"set {name}: default plan {tuned.funnel} — {tuned.describe()}"))
    out.print(f"added {done.added} documents to {name}"
              + (f" ({done.replaced} replaced by id)" if done.replaced else "")
              + (f"; skipped {done.skipped} already stored with the same text"
                 if done.skipped else "")
              + (f"; {collapsed} repeated ids in {path} collapsed (the last line won)"
                 if collapsed else ""))


# the old name, kept hidden for one release
app.command("index", hidden=True)(add)

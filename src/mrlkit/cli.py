"""The ``mrlkit`` command line: parse, call the public API, print. No logic of its own.

Example::

    $ mrlkit models
    $ mrlkit embed "hello world" --model all-MiniLM-L6-v2 --dim 128 --allow-non-mrl
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import InvalidInputError, MrlkitError

if TYPE_CHECKING:
    from .stores import StorageInfo

app = typer.Typer(help="Matryoshka embeddings: embed once, serve any prefix, search in tiers.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)
models_app = typer.Typer(help="The model catalog.", invoke_without_command=True)
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)


# --- models ------------------------------------------------------------------
@models_app.callback()
def models(ctx: typer.Context) -> None:
    """List the catalog: name, provider, native dim, MRL, allowed dims."""
    if ctx.invoked_subcommand is not None:
        return
    from .registry import list_specs

    table = Table(title="mrlkit models")
    table.add_column("name", no_wrap=True)
    table.add_column("provider", overflow="fold")
    table.add_column("native dim", justify="right")
    table.add_column("MRL")
    table.add_column("allowed dims", overflow="fold", min_width=22)
    for s in list_specs():
        table.add_row(s.name, s.provider, str(s.native_dim), "yes" if s.supports_mrl else "no",
                      s.allowed_dims_text())
    out.print(table)


@models_app.command("show")
def models_show(name: str) -> None:
    """Everything about one model."""
    from .registry import get_spec

    table = Table(show_header=False, title=name)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in get_spec(name).as_dict().items():
        table.add_row(key, json.dumps(value) if not isinstance(value, str) else repr(value)
                      if key.endswith("prompt") else value)
    out.print(table)


# --- embed -------------------------------------------------------------------
def _read_texts(path: str) -> list[str]:
    from .documents import read_jsonl

    if path == "-":
        try:
            lines = sys.stdin.buffer.read().decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise InvalidInputError("standard input is not UTF-8 text") from None
    elif path.endswith(".jsonl"):
        texts = []
        for n, rec in read_jsonl(path):
            if not isinstance(rec.get("text"), str):
                raise InvalidInputError(f"{path}:{n}: expected a JSON object with a 'text' "
                                        "field")
            texts.append(rec["text"])
        return texts
    else:
        try:
            lines = Path(path).read_bytes().decode("utf-8").splitlines()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise InvalidInputError(f"{path}: not UTF-8 text") from None
    return [line for line in lines if line.strip()]


@app.command()
def embed(
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to embed.")] = None,
    input: Annotated[Optional[str], typer.Option("--input", "-i",
                     help="File with one text per line (or .jsonl with 'text'); - for stdin.")
                     ] = None,
    model: Annotated[str, typer.Option(help="Model name from `mrlkit models`.")
                     ] = "all-MiniLM-L6-v2",
    dim: Annotated[Optional[int], typer.Option(help="Truncate to this dimension.")] = None,
    precision: Annotated[str, typer.Option(help="float32, float16, int8 or binary.")
                         ] = "float32",
    kind: Annotated[str, typer.Option(help="query or document (selects the prompt).")
                    ] = "document",
    allow_non_mrl: Annotated[bool, typer.Option("--allow-non-mrl",
                             help="Allow truncating a model not Matryoshka-trained.")] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o",
                      help=".npy or .jsonl; JSON lines to stdout when absent.")] = None,
    calibration: Annotated[Optional[Path], typer.Option(
        help="int8: a calibration file (written beside an earlier output); default: the "
             "model's reference calibration, made once and kept.")] = None,
) -> None:
    """Embed texts; write .npy or .jsonl, or JSON lines to stdout. int8 codes name their
    calibration (in each JSON line; in a .calibration.json file beside an output file)."""
    from .embedder import Embedder

    if kind not in ("query", "document"):
        raise InvalidInputError(f"--kind must be 'query' or 'document', not {kind!r}")
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise InvalidInputError(f"--output must end in .npy or .jsonl, not {output.name!r}")
    if output is not None and not output.resolve().parent.is_dir():
        raise InvalidInputError(f"--output {output}: the folder {output.parent} does not "
                                "exist (create it first)")
    if texts and input:
        raise InvalidInputError("give texts as arguments or with --input, not both")
    items = list(texts or []) if not input else _read_texts(input)
    if not items:
        raise InvalidInputError("nothing to embed: give texts as arguments or with --input")
    if calibration is not None and precision != "int8":
        raise InvalidInputError("--calibration applies to --precision int8 only")
    embedder = Embedder(model, dim, precision, allow_non_mrl=allow_non_mrl,
                        calibration=calibration)
    array = embedder.embed(items, kind=kind)  # type: ignore[arg-type]
    named = {"calibration": embedder.calibration_name} if precision == "int8" else {}
    if output is not None and output.suffix == ".npy":
        import numpy as np

        np.save(output, array)
    else:
        lines = (json.dumps({"text": t, "embedding": v.tolist(), **named})
                 for t, v in zip(items, array))
        if output is None:
            for line in lines:
                sys.stdout.write(line + "\n")
            return
        output.write_text("".join(line + "\n" for line in lines), "utf-8")
    note = ""
    if embedder.calibration is not None:
        side = embedder.calibration.save(output.with_name(output.stem + ".calibration.json"))
        note = f" (int8 calibration {embedder.calibration.name}, saved to {side})"
    err.print(f"wrote {array.shape[0]} × {embedder.dim} {precision} vectors to {output}{note}")


# --- sets, index, search -----------------------------------------------------------
sets_app = typer.Typer(help="Embedding sets: create, list, info, index, drop, reindex.",
                       no_args_is_help=True)
app.add_typer(sets_app, name="sets")

StoreOpt = Annotated[Optional[str], typer.Option("--store", envvar="MRLKIT_STORE",
                     help="Store location (default ./mrlkit-data).")]


def _store(location: Optional[str]):
    from .stores import open_store

    return open_store(location)


@sets_app.command("create")
def sets_create(
    name: str,
    model: Annotated[str, typer.Option(help="Model name from `mrlkit models`.")],
    dim: Annotated[Optional[int], typer.Option(help="truncate_dim (default: native).")] = None,
    storage: Annotated[str, typer.Option(help="float32 or float16.")] = "float32",
    allow_non_mrl: Annotated[bool, typer.Option("--allow-non-mrl")] = False,
    index: Annotated[bool, typer.Option(
        help="pgvector: create the HNSW index of the default funnel's first stage now "
             "(--no-index loads faster; index after with `sets index`).")] = True,
    store: StoreOpt = None,
) -> None:
    """Create an embedding set (model and dimension validated by the registry)."""
    info = _store(store).create_set(name, model, dim, storage=storage,
                                    allow_non_mrl=allow_non_mrl, index=index)
    out.print(f"created set [bold]{info.name}[/]: {info.model} at {info.stored_dim} "
              f"dimensions, {info.storage}")


@sets_app.command("index")
def sets_index(name: str, funnel: Annotated[str, typer.Option(
        help="The funnel whose first stage to index, e.g. 64:binary:1000,768.")],
               store: StoreOpt = None) -> None:
    """Build what a funnel's first stage reads: an HNSW expression index (pgvector) or a
    resolution view (local)."""
    from .funnel import Funnel

    made = _store(store).index(name, Funnel.parse(funnel))
    out.print(f"set {name}: " + (", ".join(made) if made else "nothing to build "
                                 "(the stage reads the stored vectors, or the set is empty)"))


@sets_app.command("list")
def sets_list(store: StoreOpt = None) -> None:
    """List the sets of a store."""
    table = Table(title="embedding sets")
    for col in ("name", "model", "truncate_dim", "stored dim", "storage", "documents"):
        table.add_column(col)
    for s in _store(store).list_sets():
        table.add_row(s.name, s.model, str(s.truncate_dim or "native"), str(s.stored_dim),
                      s.storage, str(s.count))
    out.print(table)


@sets_app.command("info")
def sets_info(name: str, store: StoreOpt = None,
              json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
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
    return table


@sets_app.command("check")
def sets_check(name: str, repair: Annotated[bool, typer.Option(
        "--repair", help="Rebuild derived data; remove documents whose vectors are lost "
                         "(named, to add again).")] = False,
               store: StoreOpt = None,
               json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
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
def sets_drop(name: str, store: StoreOpt = None) -> None:
    """Delete a set and its vectors."""
    _store(store).drop_set(name)
    out.print(f"dropped set {name}")


@sets_app.command("reindex")
def sets_reindex(name: str, dim: Annotated[int, typer.Option(help="New, smaller dimension.")],
                 allow_non_mrl: Annotated[bool, typer.Option("--allow-non-mrl")] = False,
                 store: StoreOpt = None) -> None:
    """Re-store a set at a smaller prefix from its own vectors (no model call)."""
    info = _store(store).reindex(name, dim, allow_non_mrl=allow_non_mrl)
    out.print(f"set {info.name} now stores {info.stored_dim} dimensions "
              f"({info.count} documents, no model call)")


@app.command("index")
def index(name: str, path: str, store: StoreOpt = None,
          batch_size: Annotated[int, typer.Option(help="Documents per atomic batch.")] = 256,
          upsert: Annotated[bool, typer.Option(help="Replace documents whose id exists.")
                            ] = False) -> None:
    """Embed and add documents: a JSONL file, a BEIR corpus.jsonl, or a folder of .txt/.md."""
    from .documents import read_documents
    from .embedding_set import EmbeddingSet

    records, total, collapsed = read_documents(path, upsert=upsert)
    s = EmbeddingSet(_store(store), name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the set's creation already warned about truncation
        done = s.add_stream(records, total=total, batch_size=batch_size, upsert=upsert)
    out.print(f"indexed {done.added} documents into {name}"
              + (f" ({done.replaced} replaced by id)" if done.replaced else "")
              + (f"; skipped {done.skipped} already stored with the same text"
                 if done.skipped else "")
              + (f"; {collapsed} repeated ids in {path} collapsed (the last line won)"
                 if collapsed else ""))


@app.command("search")
def search(
    name: str, query: str,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of hits.")] = 10,
    funnel: Annotated[Optional[str], typer.Option(
        help="Stages DIM[:PRECISION][:KEEP], e.g. 64:binary:1000,256:int8:100,384.")] = None,
    adaptive: Annotated[bool, typer.Option("--adaptive",
                        help="Stop early per query when the top k is decided.")] = False,
    filter: Annotated[Optional[list[str]], typer.Option("--filter",
                      help="Metadata equality key=value (repeatable).")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
    store: StoreOpt = None,
) -> None:
    """Search a set with a query text."""
    from .embedding_set import EmbeddingSet
    from .funnel import parse_filters

    s = EmbeddingSet(_store(store), name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = s.search(query, k=k, funnel=funnel, filters=parse_filters(filter or []),
                          adaptive=adaptive)
    if json_out:
        sys.stdout.write(json.dumps({"query": query, **result.as_dict()}) + "\n")
        return
    table = Table(title=f"{name}: {query!r}")
    table.add_column("#", justify="right", no_wrap=True, min_width=2)
    table.add_column("id", no_wrap=True, min_width=4)
    table.add_column("score", justify="right", no_wrap=True, min_width=6)
    table.add_column("text", overflow="ellipsis", no_wrap=True, ratio=1)
    for rank, h in enumerate(result.hits[0], 1):
        table.add_row(str(rank), h.id, f"{h.score:.4f}", (h.text or "").replace("\n", " "))
    out.print(table)
    stages = " → ".join(f"{t.precision}@{t.dim} keep {t.keep} ({t.method}) {t.ms:.1f} ms"
                        for t in result.timings)
    out.print(f"[dim]{stages}; dims used: {result.dims_used[0]}[/]")


# --- evaluation -------------------------------------------------------------------
eval_app = typer.Typer(help="Measure quality against dimension and precision on real data.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


ModelOpt = Annotated[str, typer.Option(help="Model name from `mrlkit models`.")]
DimsOpt = Annotated[Optional[str], typer.Option(help="e.g. 64,128,256 (default: the model's "
                    "allowed dims, or powers of two).")]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Write the report as JSON.")]
CsvOpt = Annotated[Optional[Path], typer.Option("--csv", help="Write the rows as CSV.")]


def _save(result: dict, json_path: Optional[Path], csv_path: Optional[Path] = None) -> None:
    from .evaluation import report as rep

    if json_path:
        rep.write_json(result, json_path)
    if csv_path:
        rep.write_csv(result["results"], csv_path)


def _dims(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(d) for d in text.split(",") if d.strip()]
    except ValueError:
        raise InvalidInputError(f"--dims must be integers separated by commas, not {text!r}"
                                ) from None


@eval_app.command("retrieval")
def eval_retrieval(
    beir_dir: str,
    model: ModelOpt = "all-MiniLM-L6-v2",
    dims: DimsOpt = None,
    precisions: Annotated[str, typer.Option(help="Comma-separated.")
                          ] = "float32,float16,int8,binary",
    funnel: Annotated[Optional[list[str]], typer.Option("--funnel",
                      help="A funnel to evaluate too (repeatable).")] = None,
    split: str = "test",
    ignore_identical_ids: Annotated[bool, typer.Option("--ignore-identical-ids",
                                    help="Drop a hit whose id equals the query id.")] = False,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: Annotated[Optional[Path], typer.Option(help="PNG base path (writes "
                    "-by-dim.png and -pareto.png).")] = None,
) -> None:
    """nDCG@10, Recall@100, MRR@10, retention, bytes and latency per setting."""
    from .evaluation import report as rep
    from .evaluation.retrieval import evaluate_retrieval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_retrieval(beir_dir, model, dims=_dims(dims),
                                    precisions=[p.strip() for p in precisions.split(",")],
                                    funnels=funnel or [], split=split,
                                    ignore_identical_ids=ignore_identical_ids)
    out.print(rep.retrieval_table(result))
    _save(result, json_path, csv_path)
    if plot:
        for p in rep.plot_retrieval(result, plot):
            err.print(f"wrote {p}")


@eval_app.command("similarity")
def eval_similarity(
    sts_dir: str,
    model: ModelOpt = "all-MiniLM-L6-v2",
    dims: DimsOpt = None,
    split: str = "test",
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: Annotated[Optional[Path], typer.Option(help="PNG path.")] = None,
) -> None:
    """STS-B: Spearman with gold scores and mean pair similarity per dimension."""
    from .evaluation import report as rep
    from .evaluation.similarity import evaluate_similarity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_similarity(sts_dir, model, dims=_dims(dims), split=split)
    out.print(rep.simple_table(f"{result['model']} on STS-B {split} ({result['pairs']} pairs)",
                               result["results"], ["dim", "spearman", "retention",
                                                   "mean_similarity", "bytes_per_vector"]))
    _save(result, json_path, csv_path)
    if plot:
        rep.plot_curve(result["results"], "spearman", plot,
                       f"{result['model']}: STS-B Spearman by dimension")


@eval_app.command("classification")
def eval_classification(
    csv_dir: str,
    model: ModelOpt = "all-MiniLM-L6-v2",
    dims: DimsOpt = None,
    text_col: str = "text",
    label_col: Annotated[Optional[str], typer.Option(help="Default: label or category.")
                         ] = None,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: Annotated[Optional[Path], typer.Option(help="PNG path.")] = None,
) -> None:
    """Logistic-regression accuracy and k-means V-measure per dimension."""
    from .evaluation import report as rep
    from .evaluation.classification import evaluate_classification

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_classification(csv_dir, model, dims=_dims(dims), text_col=text_col,
                                         label_col=label_col)
    out.print(rep.simple_table(
        f"{result['model']} on {result['dataset']} ({result['labels']} labels)",
        result["results"], ["dim", "accuracy", "accuracy_retention", "v_measure",
                            "v_measure_retention", "bytes_per_vector"]))
    _save(result, json_path, csv_path)
    if plot:
        rep.plot_curve(result["results"], ["accuracy", "v_measure"], plot,
                       f"{result['model']} on {result['dataset']}: accuracy and V-measure")


@eval_app.command("adapt")
def eval_adapt(
    folder: str,
    model: ModelOpt = "all-MiniLM-L6-v2",
    trained: Annotated[Optional[str], typer.Option(
        help="A model from `mrlkit train` to compare (its catalog name).")] = None,
    dims: DimsOpt = None,
    steps: Annotated[int, typer.Option(help="Adaptor optimisation steps.")] = 300,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: Annotated[Optional[Path], typer.Option(help="PNG path.")] = None,
) -> None:
    """Retention at each prefix for truncation, PCA rotation, adaptor and a fine-tune."""
    from .evaluation import report as rep
    from .evaluation.adaptation import compare
    from .evaluation.adaptation import plot as plot_adapt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compare(folder, model, trained=trained, dims=_dims(dims), adaptor_steps=steps)
    out.print(rep.simple_table(
        f"{result['model']} on {result['dataset']} ({result['metric']}, transforms fitted on "
        f"the {result['fitted_on']})", result["results"],
        ["method", "dim", result["metric"], "retention"]))
    _save(result, json_path, csv_path)
    if plot:
        plot_adapt(result, plot)


@app.command("advise")
def advise_cmd(
    beir_dir: str,
    model: ModelOpt = "all-MiniLM-L6-v2",
    target: Annotated[float, typer.Option(help="Retention to keep, e.g. 0.95.")] = 0.95,
    metric: Annotated[str, typer.Option(help="ndcg@10, recall@100 or mrr@10.")] = "ndcg@10",
    split: str = "test",
    json_path: JsonOpt = None,
) -> None:
    """The cheapest setting or funnel whose retention meets the target on your data."""
    from .evaluation.advisor import advise

    if not 0 < target <= 1.5:
        raise InvalidInputError(f"--target is a retention such as 0.95, not {target}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = advise(beir_dir, model, target=target, metric=metric, split=split)
    table = Table(title=f"{result['model']} on {result['dataset']}: {metric} retention "
                        f"(target {target:.0%})")
    for col in ("setting", metric, "retention", "bytes/vec", "p50 ms", "meets target"):
        table.add_column(col, justify="right" if col != "setting" else "left")
    for r in sorted(result["table"], key=lambda r: (r["bytes_per_vector"], r["p50_ms"])):
        setting = r["funnel"] or f"{r['precision']}@{r['dim']}"
        chosen = result["choice"] is r
        table.add_row(("[bold green]→ " if chosen else "") + setting, f"{r[metric]:.4f}",
                      f"{r['metric_retention']:.1%}", str(r["bytes_per_vector"]),
                      f"{r['p50_ms']:.2f}", "yes" if r["metric_retention"] >= target else "no")
    out.print(table)
    c = result["choice"]
    base = result["baseline"]
    if c is None:
        out.print(f"No setting keeps {target:.0%} of {metric}: keep float32 at full dimension.")
    else:
        setting = c["funnel"] or f"{c['precision']} at {c['dim']} dimensions"
        out.print(f"Advice: [bold]{setting}[/] — scans {c['bytes_per_vector']} bytes per "
                  f"vector instead of {base['bytes_per_vector']} "
                  f"({base['bytes_per_vector'] / c['bytes_per_vector']:.0f}× less), keeping "
                  f"{c['metric_retention']:.1%} of {metric}; keeps "
                  f"{c['disk_bytes_per_vector']} bytes per vector on disk.")
        if c.get("non_mrl_truncation"):
            out.print("[yellow]This truncates a model that is not Matryoshka-trained: "
                      "use --allow-non-mrl, knowing the measured loss.[/]")
    _save(result, json_path)


@app.command("check-mrl")
def check_mrl_cmd(
    model: str,
    beir: Annotated[str, typer.Option("--beir", help="A BEIR folder to measure on.")],
    split: str = "test",
    json_path: JsonOpt = None,
) -> None:
    """Does truncation behave as in a Matryoshka-trained model?"""
    from .evaluation import report as rep
    from .evaluation.advisor import check_mrl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = check_mrl(beir, model, split=split)
    table = rep.simple_table(f"{result['model']} on {result['dataset']}: nDCG@10 retention "
                             f"(native {result['native_ndcg@10']:.4f})", result["curve"],
                             ["fraction", "dim", "ndcg@10", "retention", "reference", "ok"])
    out.print(table)
    out.print(("[green]" if result["matryoshka_like"] else "[yellow]") + result["verdict"])
    out.print(f"[dim]Reference: {result['reference_source']}[/]")
    _save(result, json_path)


# --- demo --------------------------------------------------------------------
@app.command("adapt")
def adapt_cmd(
    name: str,
    method: Annotated[str, typer.Option(help="pca (closed form) or adaptor (learned).")] = "pca",
    steps: Annotated[int, typer.Option(help="adaptor: optimisation steps.")] = 300,
    store: StoreOpt = None,
) -> None:
    """Make a set's prefixes meaningful without a model call: fit an orthogonal transform on
    its stored vectors and apply it to them and to every later query."""
    from rich.progress import Progress

    from .transform import adapt, check_method

    check_method(method)
    st = _store(store)
    t0 = time.perf_counter()
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task(f"fitting {method}", total=steps if method == "adaptor" else None)
        info = adapt(st, name, method, steps=steps,
                     progress=lambda i, n, loss: bar.update(
                         task, completed=i, description=f"adaptor loss {loss:.5f}"))
    out.print(f"set {name}: {method} fitted on {info.count:,} stored vectors and applied in "
              f"{time.perf_counter() - t0:.1f} s; prefixes now meant for "
              f"{', '.join(map(str, info.mrl_dims or []))} dimensions. Full-dimension scores "
              "are unchanged (orthogonal); queries are transformed alike.")


@app.command("train")
def train_cmd(
    data: Annotated[str, typer.Argument(help="JSONL pairs, a BEIR folder, or an STS-B folder.")],
    output: Annotated[Path, typer.Option(help="Folder for the trained model.")],
    base: Annotated[str, typer.Option(help="Model to fine-tune.")] = "all-MiniLM-L6-v2",
    name: Annotated[Optional[str], typer.Option(help="Catalog name (default: folder name).")
                    ] = None,
    epochs: Annotated[int, typer.Option()] = 8,
    batch_size: Annotated[int, typer.Option()] = 32,
    max_seq_length: Annotated[int, typer.Option(help="Tokens per text while training.")] = 128,
    learning_rate: Annotated[float, typer.Option()] = 1e-4,
    dims: Annotated[Optional[str], typer.Option(help="Matryoshka dims, e.g. 384,192,96,48.")
                    ] = None,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: epochs).")
                         ] = -1,
    split: Annotated[str, typer.Option(help="BEIR/STS split to train on.")] = "train",
    evaluate: Annotated[bool, typer.Option(help="Before/after retention in the model card "
                                           "(BEIR folders with a test split).")] = True,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint.")] = True,
) -> None:
    """Fine-tune a model with MatryoshkaLoss; register it as MRL in the user catalog."""
    from .training import load_training_data, train

    examples = load_training_data(data, split)
    err.print(f"training {base} on {examples.source}: {len(examples):,} {examples.kind}")
    result = train(examples, output, base=base, name=name, epochs=epochs,
                   batch_size=batch_size, max_seq_length=max_seq_length,
                   learning_rate=learning_rate, dims=_dims(dims), max_steps=max_steps,
                   resume=resume, evaluate=evaluate)
    out.print(f"trained [bold]{result.name}[/] in {result.seconds / 60:.1f} min "
              f"({result.steps} steps), saved to {result.output}")
    out.print(f"registered in {result.catalog} with mrl_dims "
              f"{', '.join(map(str, result.mrl_dims))}; model card: {result.output}/README.md")
    if result.card:
        table = Table(title=f"nDCG@10 on {result.card['dataset']} (test)")
        for col in ("dim", "before", "retention", "after", "retention"):
            table.add_column(col, justify="right")
        b, a = result.card["before"], result.card["after"]
        for d in sorted(result.card["dims"], reverse=True):
            table.add_row(str(d), f"{b['ndcg@10'][d]:.4f}", f"{b['retention'][d]:.1%}",
                          f"{a['ndcg@10'][d]:.4f}", f"{a['retention'][d]:.1%}")
        out.print(table)


pg_app = typer.Typer(help="An embedded PostgreSQL with pgvector, for users who have none.",
                     no_args_is_help=True)
app.add_typer(pg_app, name="pg")
PgData = Annotated[str, typer.Option("--data", help="Data folder of the server.")]


@pg_app.command("start")
def pg_start(data: PgData = "~/.local/share/mrlkit/pg") -> None:
    """Start PostgreSQL 18 + pgvector (keeps running) and print its URL for --store."""
    from .stores.pg_server import start_embedded

    url = start_embedded(data)
    err.print(f"PostgreSQL with pgvector is running (data in {data}); use it with:")
    sys.stdout.write(f"{url}\n")
    err.print(f"  export MRLKIT_STORE='{url}'\n  stop it with: mrlkit pg stop --data {data}")


@pg_app.command("stop")
def pg_stop(data: PgData = "~/.local/share/mrlkit/pg") -> None:
    """Stop the embedded PostgreSQL started by `mrlkit pg start`."""
    from .stores.pg_server import stop_embedded

    out.print("stopped" if stop_embedded(data) else f"no server running in {data}")


@app.command()
def demo() -> None:
    """Offline tour with the bundled model: what truncation does to similarity."""
    from .demo import similarity_demo

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
    from .demo import search_demo

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
    from .demo import retrieval_demo
    from .evaluation.report import retrieval_table

    err.print("\nMeasuring retrieval retention on the same docstrings (query: the "
              "function's name in words; relevant: its docstring) …")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = retrieval_demo()
    out.print(retrieval_table(report))
    out.print("Plots: " + ", ".join(report["plots"]) + " (and the table as JSON beside them).")


def _note_non_mrl(result: dict) -> None:
    if not result["supports_mrl"]:
        out.print("[yellow]Note:[/] all-MiniLM-L6-v2 is [bold]not[/] Matryoshka-trained. "
                  "Its prefixes were never trained to stand alone, so this table is the "
                  "control: an MRL model keeps more at the same dimension. Mean similarity "
                  "can even rise when truncating (short prefixes look alike); the rank "
                  "agreement column shows whether the ordering of pairs survives.")


# --- entry point ---------------------------------------------------------------
def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False)


def main() -> None:
    """Console entry point: errors become one line on stderr and a non-zero exit (2 for
    bad input or a damaged store, 1 for anything unexpected — ``--debug`` shows its
    traceback)."""
    import os

    warnings.showwarning = _one_line_warning
    debug = "--debug" in sys.argv[1:] or bool(os.environ.get("MRLKIT_DEBUG"))
    sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        app()
    except MrlkitError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug, or a fault mrlkit does not know yet: still one line
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.print(f"[red]error:[/] unexpected {type(exc).__name__}: {first} "
                  "(run with --debug for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()

"""`mrlkit eval …`, `advise`, `check-mrl`: quality against dimension and precision."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional
from collections.abc import Callable

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import InvalidInputError
from ._common import show
from ._common import SplitOpt
from ._common import (BackendOpt, DeviceOpt, EncodeBatchOpt, StoreOpt, _store, app, err, out,
                      provider_options)


# --- evaluation -------------------------------------------------------------------
eval_app = typer.Typer(help="Measure quality against dimension and precision on real data.",
                       no_args_is_help=True)
app.add_typer(eval_app, name="eval")


ModelOpt = Annotated[str, typer.Option(help="Model name from `mrlkit models`.")]
DimsOpt = Annotated[Optional[str], typer.Option(help="e.g. 64,128,256 (default: the model's "
                    "allowed dims, or powers of two).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout "
                                                      "(and nothing else).")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o",
                                                   help="Write the report as JSON to a file.")]
CsvOpt = Annotated[Optional[Path], typer.Option("--csv", help="Write the rows as CSV.")]
PlotOpt = Annotated[Optional[Path], typer.Option(help="PNG path.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite --output, --csv and "
                                        "--plot files that exist.")]


def _keep(force: bool, *paths: Path | None) -> None:
    """Refuse, before any model loads, to overwrite a file the user has (``--force``)."""
    there = [str(p) for p in paths if p is not None and p.exists()]
    if there and not force:
        raise InvalidInputError(f"{', '.join(there)} exists: pass --force to overwrite, or "
                                "choose another path")


def _save(result: dict[str, Any], json_out: bool, output: Optional[Path],
          csv_path: Optional[Path] = None) -> None:
    from ..evaluation import report as rep

    if output:
        rep.write_json(result, output)
        err.print(f"wrote {output}")
    if csv_path:
        rep.write_csv(result["results"], csv_path)
        err.print(f"wrote {csv_path}")
    if json_out:
        sys.stdout.write(json.dumps(result, default=str) + "\n")


def _configure(model: str, device: str, batch_size: Optional[int],
               backend: str = "torch") -> None:
    """--device and --batch-size for every model call of this command (checked first)."""
    from ..providers import configure

    configure(**provider_options(model, device, batch_size, backend))


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
    beir_dir: Annotated[str, typer.Argument(
        help="A BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/).")],
    model: ModelOpt = "all-MiniLM-L6-v2",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    batch_size: EncodeBatchOpt = None,
    dims: DimsOpt = None,
    precisions: Annotated[str, typer.Option(help="Comma-separated.")
                          ] = "float32,float16,int8,binary",
    funnel: Annotated[Optional[list[str]], typer.Option("--funnel",
                      help="A funnel to evaluate too (repeatable).")] = None,
    split: SplitOpt = "test",
    ignore_identical_ids: Annotated[bool, typer.Option("--ignore-identical-ids",
                                    help="Drop a hit whose id equals the query id.")] = False,
    max_queries: Annotated[Optional[int], typer.Option(
        help="Evaluate on the first N queries of the split only (faster, noisier).")] = None,
    json_out: JsonOpt = False,
    output: OutputOpt = None,
    csv_path: CsvOpt = None,
    plot: Annotated[Optional[Path], typer.Option(help="PNG of the metric by dimension; the "
                    "Pareto plot goes beside it as <name>-pareto.png.")] = None,
    force: ForceOpt = False,
) -> None:
    """nDCG@10, Recall@100, MRR@10, retention, bytes and latency per setting."""
    _keep(force, output, csv_path, plot, plot.with_name(f"{plot.stem}-pareto{plot.suffix}")
          if plot else None)
    out.quiet = json_out
    _configure(model, device, batch_size, backend)
    from ..evaluation import report as rep
    from ..evaluation.retrieval import evaluate_retrieval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_retrieval(beir_dir, model, dims=_dims(dims),
                                    precisions=[p.strip() for p in precisions.split(",")],
                                    funnels=funnel or [], split=split,
                                    ignore_identical_ids=ignore_identical_ids,
                                    max_queries=max_queries)
    show(rep.retrieval_table(result))
    if result.get("encoder"):
        e = result["encoder"]
        out.print(f"encoder {e['backend']}: mean cosine {e['cosine_to_torch_mean']:.4f} (min "
                  f"{e['cosine_to_torch_min']:.4f}) to the model's own vectors on "
                  f"{e['sample']} of the documents; the same command without --backend "
                  "gives torch's nDCG@10")
    _save(result, json_out, output, csv_path)
    if plot:
        for p in rep.plot_retrieval(result, plot):
            err.print(f"wrote {p}")


@eval_app.command("similarity")
def eval_similarity(
    sts_dir: Annotated[str, typer.Argument(
        help="An STS folder (sts-*.csv, scores 0-5).")],
    model: ModelOpt = "all-MiniLM-L6-v2",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    batch_size: EncodeBatchOpt = None,
    dims: DimsOpt = None,
    split: SplitOpt = "test",
    json_out: JsonOpt = False,
    output: OutputOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    force: ForceOpt = False,
) -> None:
    """STS-B: Spearman with gold scores and mean pair similarity per dimension."""
    _keep(force, output, csv_path, plot)
    out.quiet = json_out
    _configure(model, device, batch_size, backend)
    from ..evaluation.similarity import evaluate_similarity

    result = _quietly(evaluate_similarity, sts_dir, model, dims=_dims(dims), split=split)
    _per_dim(result, f"{result['model']} on STS-B {split} ({result['pairs']} pairs)",
             ["dim", "spearman", "retention", "mean_similarity", "bytes_per_vector"],
             "spearman", f"{result['model']}: STS-B Spearman by dimension",
             json_out=json_out, output=output, csv_path=csv_path, plot=plot)


@eval_app.command("classification")
def eval_classification(
    csv_dir: Annotated[str, typer.Argument(
        help="A classification folder (train.csv and test.csv, text and label columns).")],
    model: ModelOpt = "all-MiniLM-L6-v2",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    batch_size: EncodeBatchOpt = None,
    dims: DimsOpt = None,
    text_col: Annotated[str, typer.Option(help="The CSV column holding the text.")] = "text",
    label_col: Annotated[Optional[str], typer.Option(help="Default: label or category.")
                         ] = None,
    json_out: JsonOpt = False,
    output: OutputOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    force: ForceOpt = False,
) -> None:
    """Logistic-regression accuracy and k-means V-measure per dimension."""
    _keep(force, output, csv_path, plot)
    out.quiet = json_out
    _configure(model, device, batch_size, backend)
    from ..evaluation.classification import evaluate_classification

    result = _quietly(evaluate_classification, csv_dir, model, dims=_dims(dims),
                      text_col=text_col, label_col=label_col)
    _per_dim(result, f"{result['model']} on {result['dataset']} ({result['labels']} labels)",
             ["dim", "accuracy", "accuracy_retention", "v_measure", "v_measure_retention",
              "bytes_per_vector"], ["accuracy", "v_measure"],
             f"{result['model']} on {result['dataset']}: accuracy and V-measure",
             json_out=json_out, output=output, csv_path=csv_path, plot=plot)


def _quietly(fn: Callable[..., dict[str, Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """An evaluation with the libraries' warnings silenced (they are not the user's)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _per_dim(result: dict[str, Any], title: str, columns: list[str], metric: str | list[str],
             plot_title: str, *, json_out: bool, output: Path | None, csv_path: Path | None,
             plot: Path | None) -> None:
    """A per-dimension result: its table, saved where asked, and its curve."""
    from ..evaluation import report as rep

    show(rep.simple_table(title, result["results"], columns))
    _save(result, json_out, output, csv_path)
    if plot:
        rep.plot_curve(result["results"], metric, plot, plot_title)


@eval_app.command("adapt")
def eval_adapt(
    folder: Annotated[str, typer.Argument(help="A BEIR or STS dataset folder.")],
    model: ModelOpt = "all-MiniLM-L6-v2",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    batch_size: EncodeBatchOpt = None,
    trained: Annotated[Optional[str], typer.Option(
        help="A model from `mrlkit train` to compare (its catalog name).")] = None,
    dims: DimsOpt = None,
    steps: Annotated[int, typer.Option(help="Adaptor optimisation steps.")] = 300,
    json_out: JsonOpt = False,
    output: OutputOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    force: ForceOpt = False,
) -> None:
    """Retention at each prefix for truncation, PCA rotation, adaptor and a fine-tune."""
    _keep(force, output, csv_path, plot)
    out.quiet = json_out
    _configure(model, device, batch_size, backend)
    from ..evaluation import report as rep
    from ..evaluation.adaptation import compare
    from ..evaluation.adaptation import plot as plot_adapt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compare(folder, model, trained=trained, dims=_dims(dims), adaptor_steps=steps)
    show(rep.simple_table(
        f"{result['model']} on {result['dataset']} ({result['metric']}, transforms fitted on "
        f"the {result['fitted_on']})", result["results"],
        ["method", "dim", result["metric"], "retention"]))
    _save(result, json_out, output, csv_path)
    if plot:
        plot_adapt(result, plot)


@app.command("advise")
def advise_cmd(
    beir_dir: Annotated[Optional[str], typer.Argument(
        help="A BEIR folder with relevance judgements (or use --set).")] = None,
    model: ModelOpt = "all-MiniLM-L6-v2",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    batch_size: EncodeBatchOpt = None,
    target: Annotated[float, typer.Option(help="Retention to keep, e.g. 0.95.")] = 0.95,
    metric: Annotated[str, typer.Option(help="ndcg@10, recall@100 or mrr@10.")] = "ndcg@10",
    split: SplitOpt = "test",
    set_name: Annotated[Optional[str], typer.Option(
        "--set", help="No judgements: a set of your store, its own documents as queries; "
                      "the target is recall@10 against exact search.")] = None,
    store: StoreOpt = None,
    json_out: JsonOpt = False,
    output: OutputOpt = None,
) -> None:
    """The cheapest setting or funnel whose retention meets the target on your data."""
    out.quiet = json_out
    _configure(model, device, batch_size, backend)
    if (beir_dir is None) == (set_name is None):
        raise InvalidInputError("give a BEIR folder or --set NAME (one of them)")
    if set_name is not None or beir_dir is None:
        _advise_set(str(set_name), target, store, json_out, output)
        return
    from ..evaluation.advisor import advise

    if not 0 < target <= 1.5:
        raise InvalidInputError(f"--target is a retention such as 0.95, not {target}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = advise(beir_dir, model, target=target, metric=metric, split=split)
    table = Table(title=f"{result['model']} on {result['dataset']}: {metric} retention "
                        f"(target {target:.0%})")
    for col in ("setting", metric, "retention", "95% CI", "bytes/vec", "p50 ms",
                "meets target"):
        table.add_column(col, justify="right" if col != "setting" else "left")
    for r in sorted(result["table"], key=lambda r: (r["bytes_per_vector"], r["p50_ms"])):
        setting = r["funnel"] or f"{r['precision']}@{r['dim']}"
        chosen = result["choice"] is r
        lo, hi = r["retention_ci"][metric]
        table.add_row(("[bold green]→ " if chosen else "") + setting, f"{r[metric]:.4f}",
                      f"{r['metric_retention']:.1%}", f"{lo:.1%}–{hi:.1%}",
                      str(r["bytes_per_vector"]),
                      f"{r['p50_ms']:.2f}", "yes" if r["metric_retention"] >= target else "no")
    show(table)
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
        out.print(escape(f"Why: {result['why']}."))
        if c.get("non_mrl_truncation"):
            out.print("[yellow]This truncates a model that is not Matryoshka-trained: "
                      "use --allow-non-mrl, knowing the measured loss.[/]")
    _save(result, json_out, output)


def _advise_set(name: str, target: float, store: Optional[str], json_out: bool,
                output: Optional[Path]) -> None:
    from ..evaluation.selfcheck import advise_set

    result = advise_set(_store(store), name, target=target)
    sample = result.table[0].sample if result.table else 0
    table = Table(title=f"{name}: funnels on {sample} of its own documents (recall@10 "
                        f"against exact, target {target:.0%})")
    for col in ("funnel", "recall@10", "95% CI", "p50 ms", "exact p50 ms"):
        table.add_column(col, justify="right" if col != "funnel" else "left")
    for row in result.table:
        mark = "[bold green]→ " if result.choice is row else ""
        table.add_row(mark + row.funnel, f"{100 * row.recall:.1f}%",
                      f"{100 * row.low:.1f}–{100 * row.high:.1f}%", f"{row.p50_ms:.2f}",
                      f"{row.exact_p50_ms:.2f}")
    show(table)
    c = result.choice
    out.print(f"Advice: [bold]{c.funnel}[/] — the fewest bytes scanned per vector among the "
              f"funnels that kept {target:.0%} (recall {c.recall:.1%}, 95% CI "
              f"{c.low:.1%}–{c.high:.1%} on {c.sample} documents; p50 {c.p50_ms:.2f} ms "
              f"against {c.exact_p50_ms:.2f} ms exact)" if c else
              f"No funnel tried keeps {target:.0%} on {sample} documents: search exactly "
              "(or `mrlkit sets tune` measures more plans).")
    _save(result.as_dict(), json_out, output)


@app.command("check-mrl")
def check_mrl_cmd(
    model: Annotated[str, typer.Argument(help="A model name from `mrlkit models`.")],
    beir: Annotated[str, typer.Option("--beir", help="A BEIR folder to measure on.")],
    split: SplitOpt = "test",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    batch_size: EncodeBatchOpt = None,
    json_out: JsonOpt = False,
    output: OutputOpt = None,
) -> None:
    """Does truncation behave as in a Matryoshka-trained model?"""
    out.quiet = json_out
    _configure(model, device, batch_size, backend)
    from ..evaluation import report as rep
    from ..evaluation.advisor import check_mrl

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = check_mrl(beir, model, split=split)
    table = rep.simple_table(f"{result['model']} on {result['dataset']}: nDCG@10 retention "
                             f"(native {result['native_ndcg@10']:.4f})", result["curve"],
                             ["fraction", "dim", "ndcg@10", "retention", "retention_ci",
                              "reference", "ok"])
    show(table)
    out.print(("[green]" if result["matryoshka_like"] else "[yellow]") + result["verdict"])
    out.print(f"[dim]Reference: {result['reference_source']}[/]")
    _save(result, json_out, output)

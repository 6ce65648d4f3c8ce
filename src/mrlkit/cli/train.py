"""`mrlkit adapt` and `mrlkit train`: make a model's prefixes meaningful."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ._common import SetArg
from ._common import StoreOpt, _store, app, err, out
from .evaluate import _dims


# --- demo --------------------------------------------------------------------
@app.command("adapt")
def adapt_cmd(
    name: SetArg,
    method: Annotated[str, typer.Option(help="pca (closed form) or adaptor (learned).")] = "pca",
    steps: Annotated[int, typer.Option(help="adaptor: optimisation steps.")] = 300,
    store: StoreOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the adapted set as JSON.")
                        ] = False,
) -> None:
    """Make a set's prefixes meaningful without a model call: fit an orthogonal transform
    on its stored vectors and apply it to them and to every later query."""
    from ..progress import Progress
    from ..transform import adapt, check_method

    check_method(method)
    st = _store(store)
    t0 = time.perf_counter()
    with Progress(f"fitting {method} on {name}", steps if method == "adaptor" else None,
                  unit="steps", enabled=method == "adaptor") as bar:
        info = adapt(st, name, method, steps=steps,
                     progress=lambda i, n, loss: bar.advance(
                         1, description=f"fitting adaptor (loss {loss:.5f})"))
    if json_out:
        sys.stdout.write(json.dumps(info.as_dict()) + "\n")
        return
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
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs.")] = 8,
    batch_size: Annotated[int, typer.Option(
        help="Pairs per step (in-batch negatives: more is harder).")] = 32,
    max_seq_length: Annotated[int, typer.Option(help="Tokens per text while training.")] = 128,
    learning_rate: Annotated[float, typer.Option(
        help="The optimiser's learning rate.")] = 1e-4,
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
    from ..training import load_training_data, train

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

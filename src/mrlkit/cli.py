"""The ``mrlkit`` command line: parse, call the public API, print. No logic of its own.

Example::

    $ mrlkit models
    $ mrlkit embed "hello world" --model all-MiniLM-L6-v2 --dim 128 --allow-non-mrl
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import InvalidInputError, MrlkitError

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
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        p = Path(path)
        try:
            raw = p.read_text("utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
        if p.suffix == ".jsonl":
            texts = []
            for n, line in enumerate(raw.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    texts.append(json.loads(line)["text"])
                except (ValueError, KeyError, TypeError):
                    raise InvalidInputError(f"{path}:{n}: expected a JSON object with "
                                            "a 'text' field") from None
            return texts
        lines = raw.splitlines()
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
) -> None:
    """Embed texts; write .npy or .jsonl, or JSON lines to stdout."""
    from .embedder import Embedder

    if kind not in ("query", "document"):
        raise InvalidInputError(f"--kind must be 'query' or 'document', not {kind!r}")
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise InvalidInputError(f"--output must end in .npy or .jsonl, not {output.name!r}")
    if texts and input:
        raise InvalidInputError("give texts as arguments or with --input, not both")
    items = list(texts or []) if not input else _read_texts(input)
    if not items:
        raise InvalidInputError("nothing to embed: give texts as arguments or with --input")
    embedder = Embedder(model, dim, precision, allow_non_mrl=allow_non_mrl)
    array = embedder.embed(items, kind=kind)  # type: ignore[arg-type]
    if output is not None and output.suffix == ".npy":
        import numpy as np

        np.save(output, array)
    else:
        lines = (json.dumps({"text": t, "embedding": v.tolist()}) for t, v in zip(items, array))
        if output is None:
            for line in lines:
                sys.stdout.write(line + "\n")
            return
        output.write_text("".join(line + "\n" for line in lines), "utf-8")
    err.print(f"wrote {array.shape[0]} × {embedder.dim} {precision} vectors to {output}")


# --- demo --------------------------------------------------------------------
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
    """Console entry point: errors become one line on stderr and a non-zero exit."""
    warnings.showwarning = _one_line_warning
    try:
        app()
    except MrlkitError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

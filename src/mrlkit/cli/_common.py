"""What every command module shares: the Typer app, the two consoles (results on
stdout, messages on stderr), the store option, and progress for long work."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.console import Console

app = typer.Typer(help="Matryoshka embeddings: embed once, serve any prefix, search in tiers.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=True)

out = Console()
err = Console(stderr=True)

def _version(value: bool) -> None:
    if value:
        from .. import __version__

        out.print(f"mrlkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print mrlkit's version and exit.")] = False) -> None:
    """Matryoshka embeddings: embed once, serve any prefix, search in tiers."""


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def confirm(action: str, yes: bool) -> None:
    """Ask before destroying data: on a terminal a yes/no question, elsewhere ``--yes``
    is required (a script must say what it means)."""
    import sys

    from ..errors import InvalidInputError

    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidInputError(f"{action}: pass --yes to confirm (no terminal to ask on)")
    if not typer.confirm(f"{action}. Continue?", default=False, err=True):
        err.print("nothing changed")
        raise typer.Exit(1)


DeviceOpt = Annotated[str, typer.Option(
    help="Where a local model runs: auto (a GPU if torch sees one), cpu, cuda or mps.")]
EncodeBatchOpt = Annotated[Optional[int], typer.Option(
    help="Texts per model call (default: the provider's).")]
BackendOpt = Annotated[str, typer.Option(
    "--backend", help="Encoder for local models: torch, onnx, or onnx-int8 (ONNX Runtime, "
    "exported from the model's own weights on first use; int8 ~2-5x faster on a CPU, "
    "0.99 cosine to torch on MiniLM — docs/encoding.md).")]


def show(table: Any, *, wrap: tuple[str, ...] = ()) -> None:
    """Print a table so that a person can read it at 80 columns or in a pipe: every
    cell outside the ``wrap`` columns is kept whole — an id, a funnel, a number is never
    cut — while headers wrap at words (``accuracy_retention`` reads "accuracy
    retention"), and the ``wrap`` columns take the room left, wrapping at spaces. On a
    terminal the table has a light frame; in a pipe, none (plain columns of text)."""
    from rich import box
    from rich.cells import cell_len
    from rich.text import Text

    table.box = box.SIMPLE_HEAD if out.is_terminal else None
    table.pad_edge, table.collapse_padding = False, True
    for col in table.columns:
        header = str(col.header).replace("_", " ")
        col.header = header
        if header in wrap:
            col.ratio, col.overflow = 1, "fold"
            continue
        cells = [Text.from_markup(c).plain if isinstance(c, str) else str(c)
                 for c in col._cells]
        words = max((cell_len(w) for w in header.split()), default=1)
        col.min_width = max([words] + [cell_len(c) for c in cells])
        col.overflow = "fold"
    # Rich wraps a column only when it has a share of the width (ratio) to wrap into:
    # spread the table to the terminal's width when it would not fit as it is
    table.expand = bool(wrap) and out.measure(table).maximum >= out.width
    out.print(table)


def provider_options(model: str, device: str, batch_size: Optional[int],
                     backend: str = "torch") -> dict[str, Any]:
    """Provider options from --device and the encoder batch size, checked before any
    model loads."""
    from ..errors import InvalidInputError
    from ..providers.sentence_transformers import DEVICES
    from ..registry import BACKENDS
    from ..registry import get_spec

    if device not in DEVICES:
        raise InvalidInputError(f"--device must be one of {', '.join(DEVICES)}, not {device!r}")
    if backend not in BACKENDS:
        raise InvalidInputError(f"--backend must be one of {', '.join(BACKENDS)}, not "
                                f"{backend!r}")
    if batch_size is not None and batch_size < 1:
        raise InvalidInputError(f"the batch size must be a positive integer, not {batch_size}")
    spec = get_spec(model)
    options: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    if device != "auto":
        if spec.provider != "sentence-transformers":
            raise InvalidInputError(f"--device applies to local models; {spec.name} is "
                                    f"served by {spec.provider}")
        options["device"] = device
    if backend != "torch":
        if spec.provider != "sentence-transformers":
            raise InvalidInputError(f"--backend applies to local models; {spec.name} is "
                                    f"served by {spec.provider}")
        options["backend"] = backend
    return options


StoreOpt = Annotated[Optional[str], typer.Option("--store", envvar="MRLKIT_STORE",
                     help="Store location (default ./mrlkit-data).")]
SetArg = Annotated[str, typer.Argument(help="The embedding set's name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
JsonListOpt = Annotated[bool, typer.Option(
    "--json", help="Print one JSON document on stdout: a list.")]
JsonlOpt = Annotated[bool, typer.Option(
    "--jsonl", help="Print one JSON object per line on stdout (JSON lines).")]


def emit(items: list[Any], *, as_json: bool, as_jsonl: bool) -> bool:
    """The project's JSON convention, in one place: ``--json`` prints exactly one JSON
    document (here a list), ``--jsonl`` one object per line. Returns True when it
    printed (the caller then prints no table).

    Example::

        >>> emit([{"a": 1}], as_json=False, as_jsonl=True)   # doctest: +SKIP
        {"a": 1}
    """
    import json
    import sys

    if as_json and as_jsonl:
        from ..errors import InvalidInputError

        raise InvalidInputError("give --json (one document) or --jsonl (one object per "
                                "line), not both")
    if as_json:
        sys.stdout.write(json.dumps(items, indent=2, ensure_ascii=False) + "\n")
    elif as_jsonl:
        sys.stdout.write("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    return as_json or as_jsonl
SplitOpt = Annotated[str, typer.Option(help="The dataset split: test, dev or train.")]


def _store(location: Optional[str], *, create: bool = False) -> Any:
    """The store at ``location``; only commands that create a set create a store."""
    from ..stores import open_store

    return open_store(location, create=create)

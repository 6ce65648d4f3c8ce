"""`mrlkit embed`: texts to vectors, to a file or stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InvalidInputError
from ._common import BackendOpt, DeviceOpt, EncodeBatchOpt, app, err, provider_options


# --- embed -------------------------------------------------------------------
def _read_texts(path: str) -> list[str]:
    from ..documents import read_jsonl

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
    device: DeviceOpt = "auto",
    backend: BackendOpt = "torch",
    batch_size: EncodeBatchOpt = None,
    calibration: Annotated[Optional[Path], typer.Option(
        help="int8: a calibration file (written beside an earlier output); default: the "
             "model's reference calibration, made once and kept.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite an --output file that exists.")] = False,
) -> None:
    """Embed texts; write .npy or .jsonl, or JSON lines to stdout. int8 codes name their
    calibration (in each JSON line; in a .calibration.json file beside an output file)."""
    from ..embedder import Embedder

    if kind not in ("query", "document"):
        raise InvalidInputError(f"--kind must be 'query' or 'document', not {kind!r}")
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise InvalidInputError(f"--output must end in .npy or .jsonl, not {output.name!r}")
    if output is not None and not output.resolve().parent.is_dir():
        raise InvalidInputError(f"--output {output}: the folder {output.parent} does not "
                                "exist (create it first)")
    if output is not None and output.exists() and not force:  # before any model loads
        raise InvalidInputError(f"{output} exists: pass --force to overwrite, or choose "
                                "another --output")
    if texts and input:
        raise InvalidInputError("give texts as arguments or with --input, not both")
    items = list(texts or []) if not input else _read_texts(input)
    if not items:
        raise InvalidInputError("nothing to embed: give texts as arguments or with --input")
    if calibration is not None and precision != "int8":
        raise InvalidInputError("--calibration applies to --precision int8 only")
    embedder = Embedder(model, dim, precision, allow_non_mrl=allow_non_mrl,
                        calibration=calibration,
                        **provider_options(model, device, batch_size, backend))
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

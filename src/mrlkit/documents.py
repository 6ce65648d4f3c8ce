"""The one reader of JSONL input, and the documents to index built on it: a JSONL file
(``id``, ``text``, optional ``title`` and ``metadata``), a BEIR ``corpus.jsonl`` (``_id``,
``title``, ``text``), or a folder of ``.txt`` / ``.md`` files (id = path relative to the
folder). Evaluation datasets, training pairs and ``mrlkit embed --input`` read JSONL
through :func:`read_jsonl` too, so every bad line is reported as ``FILE:LINE: why``.

Example::

    >>> records, total = read_documents("corpus.jsonl")  # doctest: +SKIP
    >>> next(records)["id"]                              # doctest: +SKIP
    '4983'
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .errors import InvalidInputError


def read_jsonl(path: str | Path, *, error: type[InvalidInputError] = InvalidInputError
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; a line that is not
    a JSON object, or a file that is not UTF-8, raises ``error`` naming file and line.

    Example::

        >>> next(read_jsonl("corpus.jsonl"))  # doctest: +SKIP
        (1, {'_id': '4983', 'title': '', 'text': '...'})
    """
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise error(f"{path}:{n}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise error(f"{path}:{n}: not valid JSON") from None
            if not isinstance(rec, dict):
                raise error(f"{path}:{n}: expected a JSON object")
            yield n, rec


@dataclass(frozen=True)
class Fields:
    """Which field of an input record is the id, the text, the title and the metadata.
    None: the usual names (``id`` or BEIR's ``_id``, ``text``, ``title``, ``metadata``);
    in CSV and parquet, where records are flat, every other column is metadata."""

    id: str | None = None
    text: str | None = None
    title: str | None = None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, record) of a JSONL, CSV or parquet file."""
    if path.suffix == ".jsonl":
        yield from read_jsonl(path)
    elif path.suffix == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                for n, row in enumerate(csv.DictReader(fh), 2):
                    yield n, dict(row)
        except UnicodeDecodeError:
            raise InvalidInputError(f"{path}: not UTF-8 text") from None
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InvalidInputError("reading parquet needs pyarrow: pip install pyarrow") \
                from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises its own kinds for a bad file
            raise InvalidInputError(f"{path}: not a parquet file ({exc})") from None
        for n, row in enumerate(table.to_pylist(), 1):
            yield n, row


def _records(path: Path, fields: Fields, upsert: bool = False) -> Iterator[dict[str, Any]]:
    """Index records of a file, each checked as the store will check it, so that a bad
    record is named (file, line, id) before anything is embedded or stored. With
    ``upsert`` a repeated id is allowed: its last line wins."""
    from .stores import check_ids, check_metadata

    flat = path.suffix != ".jsonl"
    seen: dict[str, int] = {}
    for n, rec in _rows(path):
        if not seen:  # a field named on the command line must exist in the first record
            for what, name in (("id", fields.id), ("text", fields.text),
                               ("title", fields.title)):
                if name is not None and name not in rec:
                    raise InvalidInputError(f"{path}:{n}: no field {name!r} for the {what} "
                                            f"(fields: {', '.join(map(str, rec))})")
        id_key = fields.id or ("id" if "id" in rec else "_id")
        text_key, title_key = fields.text or "text", fields.title or "title"
        doc_id, text, title = rec.get(id_key), rec.get(text_key), rec.get(title_key)
        if doc_id is None or not isinstance(text, str):
            raise InvalidInputError(f"{path}:{n}: expected {id_key!r} and {text_key!r}"
                                    + ("" if fields.id else " (or '_id')")
                                    + f" (fields here: {', '.join(map(str, rec)) or 'none'})"
                                    + "; --id-field and --text-field name others")
        meta = {k: v for k, v in rec.items() if k not in (id_key, text_key, title_key)} \
            if flat else rec.get("metadata") or {}
        try:
            doc_id = check_ids([doc_id])[0]
            meta = check_metadata(doc_id, meta)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path}:{n}: {exc}") from None
        if doc_id in seen and not upsert:
            raise InvalidInputError(f"{path}:{n}: id {doc_id!r} repeats line {seen[doc_id]} "
                                    "(with --upsert its last line wins)")
        seen[doc_id] = n
        if not text.strip() and isinstance(title, str) and title.strip():
            text = title  # a title-only record is still a document
        if not text.strip() or "\x00" in text:
            raise InvalidInputError(f"{path}:{n}: document {doc_id!r} has an empty text"
                                    if not text.strip() else
                                    f"{path}:{n}: document {doc_id!r}: NUL in its text")
        yield {"id": doc_id, "text": text, "title": title or None, "metadata": meta}


def _folder(path: Path) -> Iterator[dict[str, Any]]:
    for file in sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md")
                       and p.is_file()):
        text = file.read_text("utf-8", errors="replace")
        if text.strip():
            yield {"id": str(file.relative_to(path)), "text": text,
                   "metadata": {"path": str(file.relative_to(path))}}


class Documents(NamedTuple):
    records: Iterator[dict[str, Any]]
    total: int          # records to index (for a progress bar)
    collapsed: int = 0  # repeated ids dropped in favour of their last line (upsert)


def read_documents(path: str | Path, *, upsert: bool = False,
                   fields: Fields = Fields()) -> Documents:
    """Records and their count. A JSONL, CSV or parquet file is validated whole before
    the first record is returned; with ``upsert``, ids repeated in it are collapsed (the
    last line wins)."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.suffix in (".txt", ".md") and f.is_file()]
        if not files:
            raise InvalidInputError(f"{p} holds no .txt or .md files")
        return Documents(_folder(p), len(files))
    if not p.is_file():
        raise InvalidInputError(f"{p} does not exist")
    if p.suffix not in (".jsonl", ".csv", ".parquet"):
        raise InvalidInputError(f"{p}: expected a .jsonl, .csv or .parquet file, or a folder "
                                "of .txt/.md files")
    # a full validating pass first: a bad line deep in the file must fail the command
    # before any batch is embedded or stored (parsing costs little next to embedding)
    last: dict[str, int] = {}
    lines = 0
    for n, rec in enumerate(_records(p, fields, upsert)):
        last[rec["id"]] = n
        lines += 1
    if len(last) == lines:
        return Documents(_records(p, fields, upsert), lines)
    keep = set(last.values())
    return Documents((rec for n, rec in enumerate(_records(p, fields, upsert)) if n in keep),
                     len(last), lines - len(last))


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """(id, text) of each query in a file: JSONL (``text`` or ``query``; ``id`` or BEIR's
    ``_id``, else the line number), or plain text with one query per non-blank line (id:
    the line number). A line without text is refused, naming file and line.

    Example::

        >>> read_queries("queries.jsonl")[0]     # doctest: +SKIP
        ('0', '0-dimensional biomaterials show inductive properties.')
    """
    p = Path(path)
    out: list[tuple[str, str]] = []
    if p.suffix == ".jsonl":
        for n, rec in read_jsonl(p):
            text = rec.get("text", rec.get("query"))
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"{p}:{n}: a query needs a non-empty \"text\" "
                                        "(or \"query\") string")
            out.append((str(rec.get("id", rec.get("_id", n))), text))
        return out
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {p}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{p}: not UTF-8 text") from None
    return [(str(n), line.strip()) for n, line in enumerate(lines, 1) if line.strip()]

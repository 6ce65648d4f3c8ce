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

import json
from pathlib import Path
from collections.abc import Iterator
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


def _jsonl(path: Path, upsert: bool = False) -> Iterator[dict[str, Any]]:
    """Index records of a JSONL file, each checked as the store will check it, so that a
    bad line is named (file, line, id) before anything is embedded or stored. With
    ``upsert`` a repeated id is allowed: its last line wins."""
    from .stores.rules import check_ids, check_metadata

    seen: dict[str, int] = {}
    for n, rec in read_jsonl(path):
        doc_id, text, title = rec.get("id", rec.get("_id")), rec.get("text"), rec.get("title")
        if doc_id is None or not isinstance(text, str):
            raise InvalidInputError(f"{path}:{n}: expected 'id' (or '_id') and 'text'")
        try:
            doc_id = check_ids([doc_id])[0]
            meta = check_metadata(doc_id, rec.get("metadata") or {})
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


def read_documents(path: str | Path, *, upsert: bool = False) -> Documents:
    """Records and their count. A JSONL file is validated whole before the first record
    is returned; with ``upsert``, ids repeated in it are collapsed (the last line wins)."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.suffix in (".txt", ".md") and f.is_file()]
        if not files:
            raise InvalidInputError(f"{p} holds no .txt or .md files")
        return Documents(_folder(p), len(files))
    if not p.is_file():
        raise InvalidInputError(f"{p} does not exist")
    if p.suffix != ".jsonl":
        raise InvalidInputError(f"{p}: expected a .jsonl file or a folder of .txt/.md files")
    # a full validating pass first: a bad line deep in the file must fail the command
    # before any batch is embedded or stored (parsing costs little next to embedding)
    last: dict[str, int] = {}
    lines = 0
    for n, rec in enumerate(_jsonl(p, upsert)):
        last[rec["id"]] = n
        lines += 1
    if len(last) == lines:
        return Documents(_jsonl(p, upsert), lines)
    keep = set(last.values())
    return Documents((rec for n, rec in enumerate(_jsonl(p, upsert)) if n in keep),
                     len(last), lines - len(last))

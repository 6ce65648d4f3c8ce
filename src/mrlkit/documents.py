"""Read documents to index: a JSONL file (``id``, ``text``, optional ``title`` and
``metadata``), a BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``), or a folder of
``.txt`` / ``.md`` files (id = path relative to the folder).

Example::

    >>> records, total = read_documents("corpus.jsonl")  # doctest: +SKIP
    >>> next(records)["id"]                              # doctest: +SKIP
    '4983'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from .errors import InvalidInputError


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise InvalidInputError(f"{path}:{n}: not valid JSON") from None
            if not isinstance(rec, dict):
                raise InvalidInputError(f"{path}:{n}: expected a JSON object")
            doc_id = rec.get("id", rec.get("_id"))
            text = rec.get("text")
            if doc_id is None or not isinstance(text, str):
                raise InvalidInputError(f"{path}:{n}: expected 'id' (or '_id') and 'text'")
            meta = rec.get("metadata") or {}
            if not isinstance(meta, dict):
                raise InvalidInputError(f"{path}:{n}: 'metadata' must be an object")
            if not text.strip() and rec.get("title"):
                text = rec["title"]  # a title-only record is still a document
            yield {"id": str(doc_id), "text": text, "title": rec.get("title") or None,
                   "metadata": meta}


def _folder(path: Path) -> Iterator[dict[str, Any]]:
    for file in sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md")
                       and p.is_file()):
        text = file.read_text("utf-8", errors="replace")
        if text.strip():
            yield {"id": str(file.relative_to(path)), "text": text,
                   "metadata": {"path": str(file.relative_to(path))}}


def read_documents(path: str | Path) -> tuple[Iterator[dict[str, Any]], int]:
    """Records and their count (for a progress bar). A JSONL file is validated whole
    before the first record is returned."""
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.suffix in (".txt", ".md") and f.is_file()]
        if not files:
            raise InvalidInputError(f"{p} holds no .txt or .md files")
        return _folder(p), len(files)
    if not p.is_file():
        raise InvalidInputError(f"{p} does not exist")
    if p.suffix != ".jsonl":
        raise InvalidInputError(f"{p}: expected a .jsonl file or a folder of .txt/.md files")
    # a full validating pass first: a bad line deep in the file must fail the command
    # before any batch is embedded or stored (parsing costs little next to embedding)
    total = sum(1 for _ in _jsonl(p))
    return _jsonl(p), total

"""Benchmark data loaders: BEIR retrieval folders, STS-B pairs, labelled text (CSV).

Example::

    >>> ds = load_beir("../shared/datasets/scifact", "test")   # doctest: +SKIP
    >>> len(ds.doc_ids), len(ds.query_ids)                     # doctest: +SKIP
    (5183, 300)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..documents import read_jsonl
from ..errors import InvalidInputError


class DatasetError(InvalidInputError):
    """A dataset folder is missing files or holds inconsistent data."""


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path} is missing: expected {what}")
    return path


@dataclass
class BeirDataset:
    """A BEIR folder's corpus, the queries its qrels split names, and the judgements."""

    name: str
    split: str
    doc_ids: list[str]
    doc_texts: list[str]       # title + " " + text, as BEIR and MTEB embed them
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [rec for _, rec in read_jsonl(path, error=DatasetError)]


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (header ``query-id corpus-id score``; CRLF or LF).

    Example::

        >>> load_qrels(Path("qrels/test.tsv"))  # doctest: +SKIP
        {'1': {'31715818': 1}, ...}
    """
    qrels: dict[str, dict[str, int]] = {}
    with open(_need(path, "a qrels TSV"), encoding="utf-8", newline="") as fh:
        for n, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t")
            if n == 1 and fields[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(fields) != 3:
                raise DatasetError(f"{path}:{n}: expected query-id, corpus-id, score "
                                   f"separated by tabs")
            try:
                score = int(float(fields[2]))
            except ValueError:
                raise DatasetError(f"{path}:{n}: score {fields[2]!r} is not a number") from None
            qrels.setdefault(fields[0], {})[fields[1]] = score
    if not qrels:
        raise DatasetError(f"{path} holds no judgements")
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Load a BEIR folder; only the queries named by ``qrels/{split}.tsv`` are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder; expected a BEIR folder with "
                           "corpus.jsonl, queries.jsonl and qrels/")
    corpus = _read_jsonl(_need(folder / "corpus.jsonl", "the BEIR corpus"))
    queries = {str(q["_id"]): q["text"] for q in
               _read_jsonl(_need(folder / "queries.jsonl", "the BEIR queries"))}
    qrels = load_qrels(folder / "qrels" / f"{split}.tsv")
    doc_ids = [str(d["_id"]) for d in corpus]
    known = set(doc_ids)
    missing_docs = sorted({d for rel in qrels.values() for d in rel} - known)
    if missing_docs:
        raise DatasetError(f"qrels/{split}.tsv names {len(missing_docs)} document id(s) "
                           f"absent from corpus.jsonl, e.g. {missing_docs[:3]}")
    missing_queries = sorted(set(qrels) - set(queries))
    if missing_queries:
        raise DatasetError(f"qrels/{split}.tsv names {len(missing_queries)} query id(s) "
                           f"absent from queries.jsonl, e.g. {missing_queries[:3]}")
    query_ids = sorted(qrels, key=lambda q: (len(q), q))
    return BeirDataset(
        name=folder.name, split=split, doc_ids=doc_ids,
        doc_texts=[(str(d.get("title") or "") + " " + str(d.get("text") or "")).strip()
                   for d in corpus],
        query_ids=query_ids, query_texts=[queries[q] for q in query_ids], qrels=qrels)


@dataclass
class StsDataset:
    """Sentence pairs with gold similarity scores (0–5)."""

    split: str
    scores: list[float]
    sentences1: list[str]
    sentences2: list[str]


def load_sts(folder: str | Path, split: str = "test") -> StsDataset:
    """Read STS-B's ``sts-{split}.csv``: tab-separated, score in field 5, sentences in
    fields 6 and 7 (some lines carry two more fields; csv quoting is not used)."""
    path = _need(Path(folder) / f"sts-{split}.csv", f"STS-B's sts-{split}.csv")
    scores, s1, s2 = [], [], []
    with open(path, encoding="utf-8", newline="") as fh:
        for n, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 7:
                raise DatasetError(f"{path}:{n}: expected at least 7 tab-separated fields")
            try:
                scores.append(float(fields[4]))
            except ValueError:
                raise DatasetError(f"{path}:{n}: score {fields[4]!r} is not a number") from None
            s1.append(fields[5])
            s2.append(fields[6])
    return StsDataset(split, scores, s1, s2)


@dataclass
class LabelledText:
    """Texts with class labels, one train and one test split."""

    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


def _read_csv(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    with open(_need(path, "a CSV with a header"), encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for col in (text_col, label_col):
            if col not in cols:
                raise DatasetError(f"{path}: no column {col!r}; columns are {cols}")
        rows = [(r[text_col], r[label_col]) for r in reader if r[text_col].strip()]
    return [r[0] for r in rows], [r[1] for r in rows]


def load_labelled(folder: str | Path, text_col: str = "text",
                  label_col: str | None = None) -> LabelledText:
    """Read ``train.csv`` and ``test.csv``; the label column defaults to ``label``, or
    ``category`` (Banking77) when there is no ``label``."""
    folder = Path(folder)
    train = _need(folder / "train.csv", "train.csv")
    if label_col is None:
        with open(train, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        label_col = "label" if "label" in header else "category"
    tt, tl = _read_csv(train, text_col, label_col)
    et, el = _read_csv(folder / "test.csv", text_col, label_col)
    return LabelledText(tt, tl, et, el)

"""SQL for the ``pgvector`` engine: schema migrations, and a funnel as one statement.

A funnel's first stage is an HNSW *expression* index on a prefix view of the one stored
column — ``(subvector(embedding, 1, 64)::vector(64))`` with cosine ops, or
``(binary_quantize(subvector(embedding, 1, 64))::bit(64))`` with hamming ops — so a prefix
costs an index, never a second copy. The funnel runs as one statement: the inner query
orders by the indexed expression with a LIMIT, outer queries rerank on longer prefixes or
the full vector.

Example::

    >>> Expr(Stage(64, "binary"), 384, "float32").expr
    'binary_quantize(subvector(embedding, 1, 64))::bit(64)'
"""

from __future__ import annotations

import json
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np
from psycopg import sql

from .. import vectors
from ..errors import StoreError
from ..funnel import Stage
from .records import Document

HNSW_MAX_DIMS = {"vector": 2000, "halfvec": 4000, "bit": 64000}
INLINE_VECTOR_BYTES = 6_000  # a vector this small stays in its row (page: 8 kB)
Cursor = Any  # psycopg.Cursor[dict[str, Any]]

def ident(set_id: int) -> sql.Identifier:
    return sql.Identifier(f"mrlkit_set_{set_id}")


class Expr:
    """How one (dim, precision) view of the stored column reads in SQL: the indexed
    expression, its HNSW operator class, the distance operator, the query parameter's
    cast and the score (higher is better, as in :mod:`mrlkit.vectors`)."""

    def __init__(self, stage: Stage, stored_dim: int, storage: str) -> None:
        d, prec = stage.dim, stage.precision
        if prec == "int8":
            raise StoreError("pgvector has no int8 type: an int8 stage runs in mrlkit")
        column = "embedding" if d == stored_dim else f"subvector(embedding, 1, {d})"
        self.dim, self.precision = d, prec
        if prec == "binary":
            self.type = "bit"
            self.expr = f"binary_quantize({column})::bit({d})"
            self.ops, self.op = "bit_hamming_ops", "<~>"
            self.param = f"binary_quantize(%(q{d})s::vector({d}))::bit({d})"
            self.score = f"({d} - 2 * ({self.expr} <~> {self.param}))"
        else:
            # a float16 stage, or any float stage of a float16 set, reads as halfvec
            self.type = "halfvec" if "float16" in (prec, storage) else "vector"
            stored_type = "halfvec" if storage == "float16" else "vector"
            self.expr = ("embedding" if d == stored_dim and self.type == stored_type
                         else f"({column})::{self.type}({d})")
            self.ops, self.op = f"{self.type}_cosine_ops", "<=>"
            self.param = f"%(q{d})s::{self.type}({d})"
            self.score = f"(1 - ({self.expr} <=> {self.param}))"
        self.order = f"{self.expr} {self.op} {self.param}"
        self.index_name = f"d{d}_{prec}"

    @property
    def indexable(self) -> bool:
        return self.dim <= HNSW_MAX_DIMS[self.type]


def statement(set_id: int, stored_dim: int, storage: str, stages: Sequence[Stage],
              filters: Mapping[str, Any] | None, *, with_vectors: bool,
              use_index: bool) -> sql.Composed:
    """Nested SELECTs: the innermost orders the table by the first stage's (indexed)
    expression with a LIMIT; each outer one reranks its survivors."""
    exprs = [Expr(s, stored_dim, storage) for s in stages]
    first, last = exprs[0], len(exprs) - 1
    where = "WHERE metadata @> %(filters)s::jsonb" if filters else ""
    # ORDER BY the indexed expression (distance operator) lets the planner use the
    # HNSW index; ORDER BY the score is the same order but never matches an index,
    # which makes the scan exact. Only the last stage's score is selected: an inner
    # stage's would be computed again for every survivor, for nothing.
    def select(i: int) -> str:
        return "id, embedding" + (f", {exprs[i].score} AS score" if i == last else "")

    order = first.order if use_index else f"{first.score} DESC, id"
    text = (f"SELECT {select(0)} FROM {{table}} {where} "
            f"ORDER BY {order} LIMIT {stages[0].keep:d}")
    for i in range(1, len(exprs)):
        text = (f"SELECT {select(i)} FROM ({text}) AS c "
                f"ORDER BY {exprs[i].score} DESC, id LIMIT {stages[i].keep:d}")
    vector = ", f.embedding" if with_vectors else ""
    text = (f"SELECT f.id, t.text, t.metadata, f.score{vector} FROM ({text}) AS f "
            "JOIN {table} AS t USING (id) ORDER BY f.score DESC, f.id")
    return sql.SQL(text).format(table=ident(set_id))


def settings(cur: Cursor, use_index: bool, keep: int, ef_search: int,
             iterative_scan: str) -> None:
    """HNSW search settings for this transaction: candidates per scan (at least the
    stage's keep) and pgvector 0.8's iterative scan."""
    if use_index:
        cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
            sql.Literal(min(1000, max(ef_search, keep)))))
        cur.execute(sql.SQL("SET LOCAL hnsw.iterative_scan = {}").format(
            sql.Literal(iterative_scan)))


def survivors(results: list[list[dict[str, Any]]], stored_dim: int, *, with_vectors: bool
              ) -> tuple[list[np.ndarray], list[np.ndarray], dict[int, Document],
                         np.ndarray | None]:
    """Rows (numbered once per distinct id), scores, documents and, for the stages left,
    the survivors' vectors from each query's result rows."""
    pool: dict[str, int] = {}
    docs: dict[int, Document] = {}
    mats: list[np.ndarray] = []
    rows = []
    for res in results:
        mine = []
        for r in res:
            if r["id"] not in pool:
                pool[r["id"]] = len(pool)
                docs[pool[r["id"]]] = Document(r["id"], r["text"], r["metadata"])
                if with_vectors:
                    mats.append(r["embedding"].to_numpy())
            mine.append(pool[r["id"]])
        rows.append(np.asarray(mine, np.int64))
    scores = [np.asarray([r["score"] for r in res], np.float32) for res in results]
    matrix = np.asarray(mats, np.float32).reshape(len(mats), stored_dim) \
        if with_vectors else None
    return rows, scores, docs, matrix


def params(query: np.ndarray, stages: Sequence[Stage],
           filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The statement's parameters: the query truncated to each stage, the filter."""
    out: dict[str, Any] = {f"q{s.dim}": vectors.truncate(query[None], s.dim)[0]
                           for s in stages}
    if filters:
        out["filters"] = json.dumps(dict(filters))
    return out


def create_table(table: sql.Identifier, dim: int, storage: str) -> sql.Composed:
    """A set's table: the vector typed at its dimension, so PostgreSQL itself refuses
    a vector of another length."""
    column = "halfvec" if storage == "float16" else "vector"
    return sql.SQL("CREATE TABLE {} (id text PRIMARY KEY, text text, "
                   "metadata jsonb NOT NULL DEFAULT '{{}}', embedding {}({}) NOT NULL)").format(
                       table, sql.SQL(column), sql.Literal(dim))


def copy(cur: Cursor, table: sql.Identifier, storage: str,
         rows: Sequence[tuple[Any, ...]], x: np.ndarray) -> None:
    """Binary COPY of (id, text, metadata) rows with their vectors ``x``."""
    from pgvector import HalfVector

    column = "halfvec" if storage == "float16" else "vector"
    data = [HalfVector(v) for v in x.astype(np.float16)] if storage == "float16" else x
    with cur.copy(sql.SQL("COPY {} (id, text, metadata, embedding) FROM STDIN "
                          "WITH (FORMAT BINARY)").format(table)) as cp:
        cp.set_types(["text", "text", "jsonb", column])
        for r, v in zip(rows, data):
            cp.write_row((*r, v))


def table_settings(cur: Cursor, set_id: int, dim: int, storage: str) -> None:
    """A GIN index for metadata filters, and vectors kept inline in the row when
    they fit a page: pgvector's default stores a vector over 2 kB out of line (TOAST),
    which costs a second lookup per candidate in every rerank stage."""
    cur.execute(sql.SQL("CREATE INDEX {} ON {} USING gin (metadata jsonb_path_ops)")
                .format(sql.Identifier(f"mrlkit_set_{set_id}_metadata"),
                        ident(set_id)))
    if dim * (2 if storage == "float16" else 4) <= INLINE_VECTOR_BYTES:
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding SET STORAGE PLAIN")
                    .format(ident(set_id)))


def create_index(cur: Cursor, set_id: int, stored_dim: int, storage: str, stage: Stage, *,
                 required: bool = True) -> str | None:
    """The HNSW expression index of ``stage``, recorded in the set's ``indexes``."""
    expr = Expr(stage, stored_dim, storage)
    if not expr.indexable:
        if required:
            raise StoreError(
                f"pgvector's HNSW indexes {expr.type} up to "
                f"{HNSW_MAX_DIMS[expr.type]:,} dimensions, not {expr.dim:,}: "
                "index a shorter prefix, or float16 (halfvec, up to 4,000)")
        return None
    name = f"mrlkit_set_{set_id}_{expr.index_name}"
    cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
    cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (({}) {})").format(
        sql.Identifier(name), ident(set_id), sql.SQL(expr.expr),
        sql.SQL(expr.ops)))
    stage_text = json.dumps([f"{stage.dim}:{stage.precision}"])
    cur.execute("UPDATE embedding_set SET indexes = indexes || %s::jsonb "
                "WHERE id = %s AND NOT indexes @> %s::jsonb",
                (stage_text, set_id, stage_text))
    return name

"""The store core: every rule of an embedding set, applied once, over a thin engine.

:class:`Store` is what ``open_store`` returns. It validates (names, ``truncate_dim``,
batches, queries, funnels, filters), prepares (transforms, normalises), chooses the
funnel, runs the stages an engine cannot run natively, and builds the results. An
:class:`Engine` (``local``, ``pgvector``, ``chroma``, ``qdrant``: one file each) only
reads and writes: set records, rows, vectors, derived data, and its native first stage.

Example::

    >>> from mrlkit.stores import open_store
    >>> store = open_store("/tmp/mrlkit-example")              # doctest: +SKIP
    >>> store.create_set("docs", "all-MiniLM-L6-v2")           # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, UTC
from typing import Any, Generic
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .rows import damaged_rows, even_rows
from ..errors import DimensionError, InvalidInputError, SetExistsError
from ..funnel import Adaptive, Funnel, MatrixSource, Stage, execute, rerank
from ..registry import get_spec, validate_dim
from ..text import masked
from ..transform import Transform
from ..vectors import Int8Calibration
from . import rules
from .plan import Plan, choose_funnel, plan, threshold
from .records import (CheckReport, Document, Rebuild, SearchResult, SetInfo,
                      SetRecord, StorageInfo)
from .seam import Calibrate, Engine, Partial, R, hits_of
from .copy import copy_set
from .tune import Tuned, check_target, chosen, needs_tune, parsed, target_only, tune


class Store(Generic[R]):
    """Durable embedding sets, one per (model, ``truncate_dim``), on one engine.

    Vectors passed in are float32 at the set's stored dimension; the store normalises
    them and applies the set's transform. Every method raises :mod:`mrlkit.errors`.
    """

    def __init__(self, engine: Engine[R], *, native_from: int | str | None = None) -> None:
        self.engine = engine
        self.caps = engine.capabilities
        # rows from which the engine's own first stage runs (plan.NEVER: never)
        self.native_from = threshold(native_from, self.caps.native_from)
        self._calibrations: dict[tuple[str, int, int, str], tuple[Int8Calibration, int]] = {}

    @property
    def location(self) -> str:
        """Where the store is, as it may be shown to anyone (no password or token)."""
        return masked(self.engine.location)

    @property
    def kind(self) -> str:
        return self.engine.kind

    @property
    def single_process(self) -> bool:
        """True when the engine locks its data to one process (Qdrant's local mode)."""
        return bool(getattr(self.engine, "single_process", False))

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Store[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sets -------------------------------------------------------------------------
    def create_set(self, name: str, model: str, truncate_dim: int | None = None, *,
                   storage: str = "float16", allow_non_mrl: bool = False,
                   index: bool = True, recall: float | None = None) -> SetInfo:
        """Create an empty set; with ``index``, build ahead what the funnel mrlkit would
        choose for a large set of this model reads first (where the engine indexes).
        ``storage`` float16 (the default) keeps half the bytes of float32 at the same
        recall@10 (docs/benchmarks.md); scores then carry float16's ~1e-3 rounding.
        ``recall``: the set's recall target (default 0.95), which its tunes keep."""
        rules.check_name(name)
        rules.check_storage(storage)
        target = None if recall is None else check_target(recall)
        spec = get_spec(model)
        dim = validate_dim(spec, truncate_dim, allow_non_mrl=allow_non_mrl)
        rec = SetRecord(name, spec.name, rules.stored_truncate(spec, dim), dim, storage,
                        allow_non_mrl,
                        datetime.now(UTC).isoformat(timespec="seconds"))
        first = choose_funnel(2**62, dim, spec.supports_mrl)[0].stages[0]
        if not self.engine.create(rec, first, index, spec.as_dict()):
            raise SetExistsError(f"embedding set {name!r} exists already in {self.location}")
        if target is not None:
            self.engine.save_plan(name, json.dumps({"target": target}))
        return self.get_set(name)

    def record(self, name: str) -> R:
        """The engine's record of set ``name`` (raises SetNotFoundError)."""
        return self.engine.record(name)

    def list_sets(self) -> list[SetInfo]:
        return sorted((r.info(self.engine.count(r)) for r in self.engine.records()),
                      key=lambda s: s.name)

    def set_names(self) -> list[str]:
        """The names of the sets, without counting their documents (a count is a scan
        of each set's rows)."""
        return sorted(r.name for r in self.engine.records())

    def get_set(self, name: str) -> SetInfo:
        rec = self.engine.record(name)
        return rec.info(self.engine.count(rec))

    def drop_set(self, name: str) -> int:
        """Remove set ``name`` and everything derived from it; returns the documents it
        held."""
        count = self.engine.count(self.engine.record(name))
        self.engine.drop(name)
        self._forget(name)
        return count

    def _forget(self, name: str) -> None:
        self._calibrations = {k: v for k, v in self._calibrations.items() if k[0] != name}

    def copy_set(self, name: str, dst: Store[Any], new_name: str | None = None, *,
                 batch: int = 10_000, progress: Callable[[int], None] | None = None) -> int:
        """Copy set ``name`` — ids, texts, metadata and stored vectors — into ``dst`` (any
        engine) as ``new_name`` (default: the same name), in atomic batches; returns the
        documents copied. Into a set that exists already (same model and dimension)
        documents are upserted, so a copy re-run after an interruption completes it."""
        return copy_set(self, name, dst, new_name, batch=batch, progress=progress)

    # --- writes -----------------------------------------------------------------------
    def add(self, name: str, ids: Sequence[str], embeddings: np.ndarray,
            texts: Sequence[str | None] | None = None,
            metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
            upsert: bool = False) -> int:
        """Add a batch atomically; with ``upsert``, existing ids are replaced. The batch
        is checked against the set as the engine reads it under its write lock."""
        flat = self.kind if self.caps.flat_metadata else None
        return self.engine.add(name, lambda rec: rules.check_batch(
            rec, ids, embeddings, texts, metadata, upsert=upsert, flat=flat))

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Delete documents by id; returns how many existed."""
        return self.engine.delete(name, rules.check_ids(ids))

    def truncate(self, name: str, dim: int, *, allow_non_mrl: bool = False) -> SetInfo:
        """Re-store a set at a smaller allowed prefix, from its own vectors: no model call."""
        def plan(rec: R) -> Rebuild:
            new_dim, truncate, allow = rules.truncation(rec, get_spec(rec.model), dim,
                                                        allow_non_mrl)
            return Rebuild(replace(rec, stored_dim=new_dim, truncate_dim=truncate,
                                   allow_non_mrl=allow, plan=target_only(rec.plan)),
                           truncate_to=new_dim)

        return self._rebuild(name, plan)

    reindex = truncate  # the old name, kept for one release

    def adapt(self, name: str, transform: Transform) -> SetInfo:
        """Apply an orthogonal :class:`~mrlkit.transform.Transform` to every stored vector
        and keep it with the set: later adds and every query are transformed alike. A
        second adapt composes with the first."""
        def plan(rec: R) -> Rebuild:
            d = rec.stored_dim
            if transform.matrix.shape != (d, d):
                raise InvalidInputError(f"a transform for this set must be {d}×{d}, not "
                                        f"{transform.matrix.shape[0]}×"
                                        f"{transform.matrix.shape[1]}")
            total = rec.transform.then(transform) if rec.transform else transform
            return Rebuild(replace(rec, transform=total, plan=target_only(rec.plan)),
                           transform=transform)

        return self._rebuild(name, plan)

    def _rebuild(self, name: str, plan: Callable[[R], Rebuild]) -> SetInfo:
        # the rebuilt record drops the measured plan (its target alone is kept, above) in
        # the same write: it was measured on vectors that are gone
        self.engine.rebuild(name, plan)
        self._forget(name)
        return self.get_set(name)

    def index(self, name: str, funnel: Funnel) -> list[str]:
        """Build ahead of the first search what ``funnel``'s first stage reads (a view,
        an HNSW index, a collection). Returns what was built."""
        rec = self.engine.record(name)
        first = Funnel(funnel.stages[:1]).check(rec.stored_dim, 1).stages[0]
        rules.check_funnel_dims(rec, get_spec(rec.model), [first.dim])
        if first.precision not in self.caps.builds:
            raise InvalidInputError(
                f"{self.kind} cannot index a {first.precision} first stage (it indexes "
                f"{', '.join(self.caps.builds)}); a {first.precision} stage "
                "runs in mrlkit over the stored vectors")
        # planned as the first stage of a funnel that reranks it (a one-stage funnel never
        # walks an index): native, the index such a search walks; else what generic reads
        p = plan(self.caps, self.engine.rows(rec), Funnel((first, Stage(rec.stored_dim))),
                 stored_dim=rec.stored_dim, threshold=self.native_from)
        return self.engine.index(rec, first, p.index, self._calibrator(rec))

    # --- reads ------------------------------------------------------------------------
    def vectors(self, name: str) -> tuple[list[str], np.ndarray]:
        """Every live document's id and stored vector (float32)."""
        return self.engine.vectors(self.engine.record(name))

    def get(self, name: str, ids: Sequence[str]) -> list[Document | None]:
        """Documents by id, None where absent."""
        str_ids = rules.check_ids(ids)
        found = self.engine.get(self.engine.record(name), str_ids)
        return [found.get(i) for i in str_ids]

    def documents(self, name: str, *, offset: int = 0, limit: int = 100) -> list[Document]:
        """A page of the set's documents, in the engine's stable order (insertion order on
        the local store, id order on pgvector and Qdrant, Chroma's own)."""
        if offset < 0 or not 0 < limit <= 100_000:
            raise InvalidInputError(f"offset must be ≥ 0 and limit 1..100,000, not "
                                    f"{offset} and {limit}")
        return self.engine.scroll(self.engine.record(name), offset, limit)

    def info(self, name: str) -> StorageInfo:
        """The storage summary: count, stored bytes and each view's bytes."""
        rec = self.engine.record(name)
        info = self.engine.storage(rec, self.engine.count(rec))
        n = self.engine.rows(rec)
        chosen, why = self._default(rec, n, 10)
        p = self._plan(rec, n, chosen, 10, None, None)
        return replace(info, default_funnel=str(chosen), funnel_reason=why,
                       search_path=p.path, path_reason=p.why,
                       tuned=parsed(rec.plan))

    def _default(self, rec: R, n: int, k: int, recall: float | None = None
                 ) -> tuple[Funnel, str]:
        """The funnel a search without one runs: the set's tuned plan while it is fresh,
        else the rule's (:func:`.tune.chosen`)."""
        mrl = get_spec(rec.model).supports_mrl or rec.transform is not None
        return chosen(rec, n, k, recall, choose_funnel(n, rec.stored_dim, mrl, k,
                                                       threshold=self.native_from))

    def tune(self, name: str, *, recall: float | None = None, k: int = 10,
             queries: np.ndarray | None = None, probes: int = 200,
             progress: Callable[[str], None] | None = None) -> Tuned:
        """Measure the cheapest plan that keeps recall@``k`` ≥ ``recall`` (default: the
        set's target, 0.95 unless it was created with another) on the set's own data
        (``queries``: your query vectors; else sampled documents) and keep it: searches
        without a funnel then run it (:mod:`.tune`)."""
        rules.check_name(name)
        return tune(self, name, recall=recall, k=k, queries=queries, probes=probes,
                    progress=progress)

    def tune_if_needed(self, name: str, *, progress: Callable[[str], None] | None = None
                       ) -> Tuned | None:
        """Tune set ``name`` at its target when it has passed the rows where its engine's
        first stage pays, or doubled since its last tune (:meth:`needs_tune`); None when
        its plan is fresh. ``EmbeddingSet.add``, ``mrlkit add`` and the server's add call
        it after a write; ``Store.add`` (the raw vector path) leaves it to the caller."""
        return self.tune(name, progress=progress) if self.needs_tune(name) else None

    def probes(self, name: str, n: int) -> np.ndarray:
        """An even sample of up to ``n`` of the set's stored vectors, as queries (an
        adapted set's undone, so that a search does not transform them twice)."""
        rec = self.engine.record(name)
        x = self.engine.sample(rec, even_rows(self.engine.rows(rec), n))
        return rec.transform.undo(x) if rec.transform is not None and len(x) else x

    def needs_tune(self, name: str) -> bool:
        """Is set ``name`` past the rows where its engine's own first stage pays, and
        untuned or doubled since it was tuned?"""
        rec = self.engine.record(name)
        return needs_tune(rec.plan, self.engine.rows(rec), self.native_from)

    def plan(self, name: str, funnel: Funnel | None = None, *, k: int = 10,
             filters: Mapping[str, Any] | None = None, adaptive: Adaptive | None = None,
             recall: float | None = None) -> Plan:
        """How a search of set ``name`` would run (the default funnel when none is
        given): native (the engine's own first stage) or generic, and why."""
        rec = self.engine.record(name)
        return self._plan(rec, self.engine.rows(rec), funnel, k,
                          rules.check_filters(filters), adaptive, recall)

    def _plan(self, rec: R, n: int, funnel: Funnel | None, k: int,
              filters: dict[str, Any] | None, adaptive: Adaptive | None,
              recall: float | None = None) -> Plan:
        if funnel is None:
            funnel = self._default(rec, n, k, recall)[0]
        else:  # the caller's prefixes obey the set's dimension rules
            rules.check_funnel_dims(rec, get_spec(rec.model), [s.dim for s in funnel.stages])
        funnel = funnel.check(rec.stored_dim, k)
        return plan(self.caps, n, funnel, stored_dim=rec.stored_dim,
                    built=self.engine.built(rec), filters=filters, adaptive=adaptive,
                    threshold=self.native_from)

    def allows(self, name: str, funnel: Funnel) -> bool:
        """Does set ``name`` take ``funnel`` (its dimensions and its prefixes)?"""
        rec = self.engine.record(name)
        try:
            funnel.check(rec.stored_dim, 10)
            rules.check_funnel_dims(rec, get_spec(rec.model), [s.dim for s in funnel.stages])
        except InvalidInputError:
            return False
        except DimensionError:
            return False
        return True

    def check(self, name: str, *, repair: bool = False) -> CheckReport:
        """Verify a set: its engine's files or tables, and that every stored vector is
        what mrlkit wrote (finite, unit norm). With ``repair``, rebuild derived data and
        remove documents whose vectors are lost (their ids are reported: add them again);
        what cannot be repaired stays in ``problems``."""
        rec = self.engine.record(name)
        report = CheckReport(name, self.location)
        if not self.engine.check(rec, report, repair):
            ids, x = self.engine.vectors(rec)
            report.checked.append(f"{len(ids):,} stored vectors: finite and unit norm")
            bad = [ids[i] for i in damaged_rows(x, rec.storage)]
            if bad:
                problem = f"{len(bad):,} stored vectors are damaged (ids {bad[:5]})"
                if repair:
                    self.engine.delete(name, bad)
                report.found(problem, "documents removed; add them again" if repair else None)
        self._forget(name)
        return report

    def calibration(self, name: str, dim: int) -> Int8Calibration:
        """The set's int8 calibration at ``dim`` (fitted on an even sample of its rows,
        refitted as the set grows: see :func:`rules.calibration_stale`)."""
        return self._calibrated(self.engine.record(name), dim)[0]

    def _calibrator(self, rec: R) -> Calibrate:
        return lambda dim: self._calibrated(rec, dim)

    def _calibrated(self, rec: R, dim: int) -> tuple[Int8Calibration, int]:
        """The one owner of int8 calibrations: the engine keeps them, the core fits them
        on an even sample of the set's rows and refits as the set grows
        (:func:`rules.calibration_stale`)."""
        key = (rec.name, dim, rec.stored_dim, rec.transform.method if rec.transform else "")
        rows = self.engine.rows(rec)
        got = self._calibrations.get(key) or self.engine.calibration(rec, dim)
        if got is None or rules.calibration_stale(got[1], rows):
            sample = self.engine.sample(rec, rules.sample_rows(rows))
            got = (rules.fit_calibration(sample, dim), rows)
            self.engine.save_calibration(rec, dim, got[0], rows)
        self._calibrations[key] = got
        return got

    def search(self, name: str, queries: np.ndarray, *, k: int = 10,
               funnel: Funnel | None = None, filters: Mapping[str, Any] | None = None,
               adaptive: Adaptive | None = None, recall: float | None = None
               ) -> SearchResult:
        """Run a funnel for query vectors at the set's stored dimension; without one,
        the set's tuned plan (for ``recall``: the cheapest measured to keep it), else the
        rule's (see :meth:`info`)."""
        if recall is not None and not 0 < recall <= 1:
            raise InvalidInputError(f"recall must be in (0, 1], not {recall}")
        rec = self.engine.record(name)
        q = rules.prepare_queries(rec, queries)
        flt = rules.check_filters(filters)
        n = self.engine.rows(rec)
        p = self._plan(rec, n, funnel, k, flt, adaptive, recall)
        if n == 0:
            return SearchResult.empty(len(q))
        part = None
        if p.stages and not self.caps.source_index:
            part = self.engine.native(rec, q, p, flt)
        if part is not None:
            return self._finish(rec, q, p, part, adaptive)
        scan = self.engine.scan(rec, flt, self._calibrator(rec))
        if flt and scan.metadata is not None:  # the filter rule, once (rules.matches)
            scan.candidates = np.flatnonzero(
                [rules.matches(m, flt) for m in scan.metadata]).astype(np.int64)
        if scan.empty:
            return SearchResult.empty(len(q))
        source = scan.source or self._source(rec, scan.matrix)
        rows, scores, timings, dims = execute(source, q, p.funnel, n_rows=scan.n_rows,
                                              live=scan.live, candidates=scan.candidates,
                                              adaptive=adaptive, dead=scan.dead,
                                              index=p.index)
        ran = "native" if timings and timings[0].method == "ann" else "generic"
        return SearchResult(hits_of(scan.documents, rows, scores), timings, dims,
                            list(scan.notes), ran, str(p.funnel))

    def explain(self, name: str, query: np.ndarray, funnel: Funnel | None = None, *,
                k: int = 10, filters: Mapping[str, Any] | None = None) -> str:
        """The engine's own plan for one query through the stages it runs (pgvector:
        PostgreSQL's ``EXPLAIN``)."""
        rec = self.engine.record(name)
        q = rules.prepare_queries(rec, query)[0]
        flt = rules.check_filters(filters)
        p = self._plan(rec, self.engine.rows(rec), funnel, k, flt, None)
        explain = getattr(self.engine, "explain", None)
        if explain is None or not p.stages:
            raise InvalidInputError(f"{self.kind} has no plan of its own to show: this "
                                    f"search runs {p.why}")
        return str(explain(rec, q, p, flt))

    def _source(self, rec: R, matrix: np.ndarray | None) -> MatrixSource:
        assert matrix is not None, "an engine's scan gives a source or a matrix"
        return MatrixSource(matrix, lambda d: self._calibrated(rec, d)[0])

    def _finish(self, rec: R, q: np.ndarray, p: Plan, part: Partial,
                adaptive: Adaptive | None) -> SearchResult:
        """The stages an engine's native search left, in mrlkit on the survivors."""
        stages = p.funnel.stages
        dims = [[s.dim for s in stages[:part.done]] for _ in q]
        rows, scores, timings = part.rows, part.scores, list(part.timings)
        if part.done < len(stages):
            rows, scores, more, more_dims = rerank(
                self._source(rec, part.matrix), q, stages[part.done:], rows, scores,
                final_k=stages[-1].keep or 10, adaptive=adaptive)
            timings += more
            dims = [a + b for a, b in zip(dims, more_dims)]
        return SearchResult(hits_of(part.documents, rows, scores), timings, dims,
                            list(part.notes), "native", str(p.funnel))


"""Texts in, hits out: an embedding set bound to its model.

:class:`EmbeddingSet` joins the flow ``text → Provider → Store → Funnel → hits``: it
embeds with the set's model at the set's stored dimension (document prompt for texts,
query prompt for queries) and hands vectors to the store.

Example::

    >>> from mrlkit import EmbeddingSet, open_store
    >>> s = EmbeddingSet(open_store("/tmp/demo"), "notes")          # doctest: +SKIP
    >>> s.add_texts(["a", "b"], ["Matryoshka dolls", "tea"])        # doctest: +SKIP
    >>> s.search("nested dolls", k=1).hits[0][0].id                 # doctest: +SKIP
    'a'
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .funnel import MAX_KEEP, Adaptive, Funnel
from .progress import Progress
from .providers import Provider, get_provider
from .registry import get_spec
from .stores import SearchResult, SetInfo, Store, Tuned
from .stores import check_filters


@dataclass
class Added:
    """What an add did: documents added (replaced ones included), documents
    skipped because they were stored already with the same text and metadata, and how
    many of the added replaced a stored document of the same id (``upsert``)."""

    added: int = 0
    skipped: int = 0
    replaced: int = 0
    tuned: Tuned | None = None  # the plan measured after the add, when the set needed one

    def __iadd__(self, other: Added) -> Added:
        self.added += other.added
        self.skipped += other.skipped
        self.replaced += other.replaced
        return self


Indexed = Added  # the old name, kept for one release


class EmbeddingSet:
    """One set of a store, with its model's provider."""

    def __init__(self, store: Store[Any], name: str, **provider_options: Any) -> None:
        self.store = store
        self.name = name
        self.info: SetInfo = store.get_set(name)
        self.spec = get_spec(self.info.model)
        self._provider_options = provider_options

    @property
    def provider(self) -> Provider:
        # quiet: our own bar covers the batches
        return get_provider(self.spec, quiet=True, **self._provider_options)

    def embed(self, texts: Sequence[str], kind: str = "query") -> np.ndarray:
        """Embed texts with the set's model at its stored dimension (``kind`` picks the
        prompt), ready for :meth:`search_vectors` or the store."""
        # the set's current dimension: a truncate may have shrunk it since __init__
        dim = self.store.get_set(self.name).stored_dim
        if kind == "document":  # kept per text: eval and advise on the same corpus reuse it
            from .cache import cached_embed

            return cached_embed(self.spec, texts, kind="document", dim=dim, whole=False,
                                quiet=True, **self._provider_options)
        return np.asarray(self.provider.embed(list(texts), kind=kind,  # type: ignore[arg-type]
                                              dim=dim))

    def add_texts(self, ids: Sequence[str], texts: Sequence[str],
                  metadata: Sequence[Mapping[str, Any] | None] | None = None, *,
                  upsert: bool = False, embed_texts: Sequence[str] | None = None,
                  tune: bool = True) -> int:
        """Embed ``texts`` (or ``embed_texts``, e.g. title + text) and add them as one
        atomic batch; with ``tune``, tuned after it when the set needs it
        (:meth:`Store.tune_if_needed`)."""
        if len(ids) != len(texts):
            raise InvalidInputError(f"{len(ids)} ids but {len(texts)} texts")
        emb = self.embed(embed_texts if embed_texts is not None else texts, "document")
        added = self.store.add(self.name, ids, emb, texts, metadata, upsert=upsert)
        if tune:
            self.store.tune_if_needed(self.name)
        return added

    def add_stream(self, records: Iterable[dict[str, Any]], *, total: int | None = None,
                   batch_size: int = 256, upsert: bool = False,
                   progress: bool = True, tune: bool = True) -> Added:
        """Embed and add ``{"id", "text", "title"?, "metadata"?}`` records in batches;
        each batch is atomic, so an interrupted run keeps every finished batch, and a
        re-run skips documents already stored with the same text and metadata (no model
        call for them): it resumes where the interrupted one stopped. With ``tune``, a
        set that has passed the rows where a first stage pays (or doubled since its last
        tune) is tuned at the end (:meth:`Store.tune_if_needed`): ``done.tuned``."""
        done = Added()
        try:
            with Progress(f"adding to {self.name}", total, enabled=progress) as bar:
                batch: list[dict[str, Any]] = []
                for rec in records:
                    batch.append(rec)
                    if len(batch) >= batch_size:
                        got = self._add_records(batch, upsert)
                        done += got
                        bar.advance(len(batch), skipped=got.skipped)
                        batch = []
                if batch:
                    got = self._add_records(batch, upsert)
                    done += got
                    bar.advance(len(batch), skipped=got.skipped)
        except KeyboardInterrupt as stop:  # every finished batch is kept: say how many
            stop.added = done  # type: ignore[attr-defined]
            raise
        if tune:
            done.tuned = self.store.tune_if_needed(self.name)
        return done

    def fresh(self, batch: list[dict[str, Any]]) -> list[tuple[dict[str, Any],
                                                               dict[str, Any], Any]]:
        """The records of ``batch`` the set does not hold with this text and metadata:
        (record, its metadata as stored — the title joins it —, the stored document or
        None). What a re-run of an interrupted job skips is the rest."""
        metas = []
        for r in batch:
            m = dict(r.get("metadata") or {})
            if r.get("title"):
                m.setdefault("title", r["title"])
            metas.append(m)
        stored = self.store.get(self.name, [str(r["id"]) for r in batch])
        return [(r, m, d) for r, m, d in zip(batch, metas, stored)
                if d is None or d.text != r["text"] or d.metadata != m]

    def _add_records(self, batch: list[dict[str, Any]], upsert: bool) -> Added:
        fresh = self.fresh(batch)
        if not fresh:
            return Added(skipped=len(batch))
        embed_texts = [f"{r['title']} {r['text']}".strip() if r.get("title") else r["text"]
                       for r, _, _ in fresh]
        added = self.add_texts([str(r["id"]) for r, _, _ in fresh],
                               [r["text"] for r, _, _ in fresh], [m for _, m, _ in fresh],
                               upsert=upsert, embed_texts=embed_texts, tune=False)
        return Added(added, len(batch) - len(fresh),
                       sum(1 for _, _, d in fresh if d is not None))

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id."""
        return self.store.delete(self.name, ids)

    def search(self, queries: str | Sequence[str], *, k: int = 10,
               funnel: Funnel | str | None = None, filters: Mapping[str, Any] | None = None,
               adaptive: Adaptive | bool | None = None,
               recall: float | None = None) -> SearchResult:
        """Embed query texts with the query prompt and search the set (without a
        funnel: the set's tuned plan, for ``recall`` if given)."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        if isinstance(funnel, str):
            funnel = Funnel.parse(funnel)
        # what can be checked is checked before the model loads (seconds for a local one)
        stored_dim = self.store.get_set(self.name).stored_dim
        if funnel is not None:
            funnel.check(stored_dim, k)
        elif not 0 < k <= MAX_KEEP:
            raise InvalidInputError(f"k must be 1..{MAX_KEEP:,}, not {k}")
        check_filters(filters)
        q = self.embed(texts, "query")
        return self.search_vectors(q, k=k, funnel=funnel, filters=filters, adaptive=adaptive,
                                   recall=recall)

    def search_vectors(self, queries: np.ndarray, *, k: int = 10,
                       funnel: Funnel | str | None = None,
                       filters: Mapping[str, Any] | None = None,
                       adaptive: Adaptive | bool | None = None,
                       recall: float | None = None) -> SearchResult:
        """Search with prepared query vectors at the set's stored dimension."""
        if isinstance(funnel, str):
            funnel = Funnel.parse(funnel)
        if adaptive is True:
            adaptive = Adaptive()
        return self.store.search(self.name, queries, k=k, funnel=funnel, filters=filters,
                                 adaptive=adaptive or None, recall=recall)

    def tune(self, queries: Sequence[str] | None = None, *, recall: float | None = None,
             k: int = 10, probes: int = 200,
             progress: Callable[[str], None] | None = None) -> Tuned:
        """Measure and keep the set's cheapest plan for ``recall`` (default: the set's
        target; :meth:`Store.tune`), on your query texts (embedded with the query
        prompt) or sampled documents."""
        q = self.embed(list(queries), "query") if queries else None
        return self.store.tune(self.name, recall=recall, k=k, queries=q, probes=probes,
                               progress=progress)

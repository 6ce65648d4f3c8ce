"""Embedding a corpus on a Ray cluster (``mrlkit add SET FILE --ray ADDRESS``; the
``[ray]`` extra). Nothing here is imported without ``--ray``.

The driver reads the corpus, skips documents the set already holds with the same text
and metadata (so a re-run after a killed driver completes the job without duplicates),
and hands the rest to Ray Data: ``map_batches`` over an actor pool, one model per actor
(loaded once, in the actor), ``--actors`` of them, ``--ray-batch-size`` texts per call. A
failed task or a dead actor is retried by Ray (``max_task_retries``, ``max_restarts``).
The embeddings stream back to the driver, which writes them in atomic batches: every
backend's writes keep their guarantees (one writer, the store core's checks) and the
workers need no access to the store — the right trade on one machine or a small
cluster, where embedding, not writing, is the bottleneck (docs/encoding.md).

Example::

    >>> add_with_ray(store, "sf", records, address="127.0.0.1:6379")   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any
from collections.abc import Iterable

import numpy as np

from .embedding_set import EmbeddingSet, Added
from .errors import InvalidInputError
from .progress import Progress


class _Embed:
    """A Ray actor: the set's model, loaded once, embedding batches of texts."""

    def __init__(self, model: str, dim: int, options: dict[str, Any]) -> None:
        from .providers import get_provider

        self.provider = get_provider(model, quiet=True, **options)
        self.dim = dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = self.provider.embed(list(batch["embed"]), kind="document", dim=self.dim)
        return {"row": batch["row"], "vector": x}


def _fresh(s: EmbeddingSet, records: Iterable[dict[str, Any]], chunk: int = 1_000
           ) -> tuple[list[tuple[dict[str, Any], dict[str, Any], Any]], int]:
    """What ``s.fresh`` keeps of ``records`` (read in chunks), and how many it skipped."""
    keep: list[tuple[dict[str, Any], dict[str, Any], Any]] = []
    seen = 0
    batch: list[dict[str, Any]] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= chunk:
            keep += s.fresh(batch)
            seen, batch = seen + len(batch), []
    if batch:
        keep += s.fresh(batch)
        seen += len(batch)
    return keep, seen - len(keep)


def add_with_ray(store: Any, name: str, records: Iterable[dict[str, Any]], *,
                   address: str, actors: int = 2, batch_size: int = 256,
                   ray_batch_size: int = 64, upsert: bool = False, total: int | None = None,
                   progress: bool = True, provider_options: dict[str, Any] | None = None
                   ) -> Added:
    """Embed ``records`` (``{"id", "text", "title"?, "metadata"?}``) on the Ray cluster at
    ``address`` ("local": a cluster of this machine, started and stopped here) and add
    them to set ``name`` in atomic batches of ``batch_size``."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InvalidInputError("--ray needs Ray: pip install 'mrlkit[ray]'") from None
    if actors < 1 or ray_batch_size < 1:
        raise InvalidInputError("--actors and --ray-batch-size must be at least 1")
    s = EmbeddingSet(store, name)
    info = s.info
    started = not ray.is_initialized()
    for logger in ("ray", "ray.data", "ray.data._internal"):  # mrlkit's bar reports progress
        logging.getLogger(logger).setLevel(logging.ERROR)
    if started:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
    fresh, skipped = _fresh(s, records)
    done = Added(skipped=skipped)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        with Progress(f"adding to {name} on Ray", total, enabled=progress) as bar:
            bar.advance(skipped)
            if fresh:
                embed = [f"{r['title']} {r['text']}".strip() if r.get("title") else r["text"]
                         for r, _, _ in fresh]
                ds = ray.data.from_items([{"row": i, "embed": t} for i, t in enumerate(embed)])
                out = ds.map_batches(
                    _Embed, fn_constructor_args=(info.model, info.stored_dim,
                                                 dict(provider_options or {})),
                    batch_size=ray_batch_size, concurrency=actors, batch_format="numpy",
                    max_restarts=2, max_task_retries=3)
                # rows arrive as actors finish them; each write is an atomic batch
                for got in out.iter_batches(batch_size=batch_size, batch_format="numpy"):
                    part = [fresh[r] for r in got["row"].tolist()]
                    added = store.add(name, [str(r["id"]) for r, _, _ in part],
                                      got["vector"], [r["text"] for r, _, _ in part],
                                      [m for _, m, _ in part], upsert=upsert)
                    done += Added(added, 0, sum(1 for _, _, d in part if d is not None))
                    bar.advance(len(part))
    finally:
        if started:
            ray.shutdown()
    return done


index_with_ray = add_with_ray  # the old name (it adds documents), kept for one release

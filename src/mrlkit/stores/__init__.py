"""Embedding sets on four engines behind one store core.

``open_store(location)`` picks the engine from the location: a directory path (the
embedded ``local`` engine), a ``postgresql://`` URL (``pgvector``), ``chroma:PATH`` /
``chroma+http://host:port`` (``chroma``), or ``qdrant:PATH`` (Qdrant's engine in-process)
/ ``qdrant+http://host:port`` (a Qdrant server) (``qdrant``). Default: ``MRLKIT_STORE``
or ``./mrlkit-data``. Every engine is wrapped in the same
:class:`~mrlkit.stores.core.Store`, which owns the rules (see docs/architecture.md).

Example::

    >>> from mrlkit.stores import open_store
    >>> store = open_store("/tmp/mrlkit-example")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..funnel import StageTiming, View
from .core import Store
from .seam import Engine
from .pg_server import start_embedded, stop_embedded
from .plan import Capabilities, Plan
from .records import (Document, Hit, SearchResult, SetInfo, SetRecord, StorageInfo,
                      ViewInfo)
from .rules import check_filters, check_ids, check_metadata, parse_filters
from .tune import SELF as SELF_SCORE, Tuned, recall_interval

__all__ = ["Capabilities", "Document", "Engine", "Hit", "Plan", "SearchResult", "SetInfo",
           "SetRecord", "StageTiming", "StorageInfo", "Store", "View", "ViewInfo",
           "check_filters", "check_ids", "check_metadata", "default_location", "open_store",
           "parse_filters", "recall_interval", "SELF_SCORE", "Tuned",
           "start_embedded", "stop_embedded"]

DEFAULT_LOCATION = "./mrlkit-data"


def default_location() -> str:
    """``MRLKIT_STORE`` if set, else ``./mrlkit-data``.

    Example::

        >>> isinstance(default_location(), str)
        True
    """
    return os.environ.get("MRLKIT_STORE") or DEFAULT_LOCATION


def open_store(location: str | os.PathLike[str] | None = None, *,
               create: bool = True, native_from: int | str | None = None) -> Store[Any]:
    """Open the store at ``location``, creating it if needed; with ``create=False`` a
    folder-based store that does not exist is an error (a mistyped path stays a typo,
    not a new empty store). ``native_from`` (default ``MRLKIT_NATIVE_FROM``, else the
    engine's own) is the row count from which a search runs on the engine's own first
    stage; ``"never"`` keeps every search in mrlkit (:mod:`mrlkit.stores.plan`)."""
    loc = str(location) if location is not None else default_location()
    scheme = loc.split("://", 1)[0] if "://" in loc else ""
    if not create and not scheme:
        _must_exist(loc)
    if scheme in ("postgresql", "postgres"):
        from .pgvector import PgvectorStore

        return PgvectorStore(loc, native_from=native_from)
    if loc.startswith(("chroma:", "chroma+http:", "chroma+https:")):
        from .chroma import ChromaStore

        return ChromaStore(loc, native_from=native_from)
    if loc.startswith(("qdrant:", "qdrant+http:", "qdrant+https:", "qdrant+local:")):
        from .qdrant import QdrantStore

        return QdrantStore(loc, native_from=native_from)
    if scheme:
        raise StoreError(f"no backend for {loc!r}: use a directory path (the embedded local "
                         "store), a postgresql:// URL, chroma:PATH or qdrant:PATH")
    from .local import LocalStore

    return LocalStore(loc, native_from=native_from)


def _must_exist(loc: str) -> None:
    kind, _, path = loc.partition(":") if loc.startswith(("chroma:", "qdrant:")) else \
        ("local", "", loc)
    folder = Path(os.path.expanduser(path))
    marker = folder / "catalog.sqlite" if kind == "local" else folder
    if not marker.exists():
        raise StoreError(f"no mrlkit store at {loc}: check --store (or MRLKIT_STORE), or "
                         "create a set there first with `mrlkit sets create`")

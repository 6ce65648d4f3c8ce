"""Store backends, one file each behind :class:`~mrlkit.stores.base.Store`.

``open_store(location)`` picks the backend from the location: a directory path (the
embedded ``local`` store), a ``postgresql://`` URL (``pgvector``), or ``chroma:PATH`` /
``chroma+http://host:port`` (``chroma``), or ``qdrant:PATH`` / ``qdrant+http://host:port``
(``qdrant``). Default: ``MRLKIT_STORE`` or
``./mrlkit-data``.

Example::

    >>> from mrlkit.stores import open_store
    >>> store = open_store("/tmp/mrlkit-example")  # doctest: +SKIP
"""

from __future__ import annotations

import os

from ..errors import StoreError
from .base import Document, Hit, SearchResult, SetInfo, StageTiming, Store, View

__all__ = ["Document", "Hit", "SearchResult", "SetInfo", "StageTiming", "Store", "View",
           "default_location", "open_store"]

DEFAULT_LOCATION = "./mrlkit-data"


def default_location() -> str:
    """``MRLKIT_STORE`` if set, else ``./mrlkit-data``.

    Example::

        >>> isinstance(default_location(), str)
        True
    """
    return os.environ.get("MRLKIT_STORE") or DEFAULT_LOCATION


def open_store(location: str | os.PathLike[str] | None = None) -> Store:
    """Open (creating if needed) the store at ``location``."""
    loc = str(location) if location is not None else default_location()
    scheme = loc.split("://", 1)[0] if "://" in loc else ""
    if scheme in ("postgresql", "postgres"):
        from .pgvector import PgvectorStore

        return PgvectorStore(loc)
    if loc.startswith(("chroma:", "chroma+http:", "chroma+https:")):
        from .chroma import ChromaStore

        return ChromaStore(loc)
    if loc.startswith(("qdrant:", "qdrant+http:", "qdrant+https:")):
        from .qdrant import QdrantStore

        return QdrantStore(loc)
    if scheme:
        raise StoreError(f"no backend for {loc!r}: use a directory path (the embedded local "
                         "store), a postgresql:// URL, chroma:PATH or qdrant:PATH")
    from .local import LocalStore

    return LocalStore(loc)

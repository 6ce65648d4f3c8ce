"""Backends the Store contract suite runs against, each in two modes: ``native`` (the
planner's threshold at 0 rows, so every search the engine can run on its own first
stage does) and ``generic`` (``never``: mrlkit runs every funnel over the stored
vectors). The one knob is ``MRLKIT_NATIVE_FROM`` (docs/architecture.md), set for the
test so that processes a test starts follow it too. Each test then asserts, for every
search it ran, the path that ran (:func:`paths`)."""

from __future__ import annotations

import pytest

from mrlkit.stores import open_store
from mrlkit.stores.core import Store


def _local(request):
    return str(request.getfixturevalue("tmp_path_factory").mktemp("local-store"))


def _pgvector(request):
    return request.getfixturevalue("pg_url")  # a fresh database on the session's server


def _chroma(request):
    pytest.importorskip("chromadb", reason="needs mrlkit[chroma]")
    return "chroma:" + str(request.getfixturevalue("tmp_path_factory").mktemp("chroma"))


def _qdrant(request):
    pytest.importorskip("qdrant_client", reason="needs mrlkit[qdrant]")
    return "qdrant:" + str(request.getfixturevalue("tmp_path_factory").mktemp("qdrant"))


BACKENDS = {"local": _local, "pgvector": _pgvector, "chroma": _chroma, "qdrant": _qdrant}
MODES = {"native": "0", "generic": "never"}
# what each engine's timings name when its own first stage ran
NATIVE_METHODS = {"ann", "sql:hnsw", "sql:exact", "chroma-hnsw", "qdrant query"}


def pytest_collection_modifyitems(config, items):
    """A test of the engine's own index (``@pytest.mark.native_only``) runs in native mode
    only: in generic mode there is no engine index to test."""
    keep, drop = [], []
    for item in items:
        generic = "-generic" in getattr(getattr(item, "callspec", None), "id", "")
        (drop if generic and item.get_closest_marker("native_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=[f"{b}-{m}" for b in sorted(BACKENDS) for m in MODES])
def location(request, monkeypatch):
    backend, mode = request.param.split("-")
    monkeypatch.setenv("MRLKIT_NATIVE_FROM", MODES[mode])
    ran: list[tuple[str, str, str]] = []
    search = Store.search

    def recorded(self, name, queries, *, k=10, funnel=None, filters=None, adaptive=None,
                 recall=None):
        res = search(self, name, queries, k=k, funnel=funnel, filters=filters,
                     adaptive=adaptive, recall=recall)
        if res.timings and not res.notes:  # (a note: the planned index could not serve)
            planned = self.plan(name, funnel, k=k, filters=filters, adaptive=adaptive,
                                recall=recall)
            ran.append((planned.path, res.path, res.timings[0].method))
        return res

    monkeypatch.setattr(Store, "search", recorded)
    request.node.mode, request.node.paths = mode, ran
    yield BACKENDS[backend](request)
    paths(request.node)


def paths(node) -> None:
    """Every search ran the path the planner chose for it and reported it: the path a
    result names is the one its first stage's method shows, and it is the plan's; in
    generic mode no search ran on the engine."""
    for planned, path, method in node.paths:
        assert path == ("native" if method in NATIVE_METHODS else "generic"), (path, method)
        assert path == planned, (planned, path, method)
    if node.mode == "generic":
        assert all(p == "generic" for _, p, _ in node.paths), node.paths


@pytest.fixture
def store(location):
    s = open_store(location)
    yield s
    s.close()

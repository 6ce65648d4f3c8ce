"""Backends the Store contract suite runs against: each entry of BACKENDS returns a fresh,
empty store location for one test."""

from __future__ import annotations

import pytest

from mrlkit.stores import open_store


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


@pytest.fixture(params=sorted(BACKENDS))
def location(request):
    return BACKENDS[request.param](request)


@pytest.fixture
def store(location):
    s = open_store(location)
    yield s
    s.close()

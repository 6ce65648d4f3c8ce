"""Backends the Store contract suite runs against. A later backend adds itself to
BACKENDS with a factory returning a fresh store location."""

from __future__ import annotations

import itertools

import pytest

from mrlkit.stores import open_store

_counter = itertools.count()


def _local(tmp_path_factory):
    return str(tmp_path_factory.mktemp("local-store"))


BACKENDS = {"local": _local}


@pytest.fixture(params=sorted(BACKENDS))
def location(request, tmp_path_factory):
    return BACKENDS[request.param](tmp_path_factory)


@pytest.fixture
def store(location):
    s = open_store(location)
    yield s
    s.close()

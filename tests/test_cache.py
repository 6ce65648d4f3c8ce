"""The embedding cache calls the model only once per (model, settings, texts)."""

from __future__ import annotations

import numpy as np

from mrlkit import cache, registry


class CountingProvider:
    def __init__(self, spec):
        self.spec = spec
        self.calls = 0

    def embed(self, texts, *, kind="document", dim=None):
        self.calls += 1
        return np.full((len(texts), dim or self.spec.native_dim), float(len(texts)), np.float32)


def test_second_call_does_not_embed(tmp_path, monkeypatch):
    monkeypatch.setenv("MRLKIT_CACHE", str(tmp_path))
    spec = registry.get_spec("nomic-embed-text")
    provider = CountingProvider(spec)
    monkeypatch.setattr(cache, "get_provider", lambda s, **kw: provider)
    a = cache.cached_embed(spec, ["x", "y"], kind="document", dim=64)
    b = cache.cached_embed(spec, ["x", "y"], kind="document", dim=64)
    np.testing.assert_array_equal(a, b)
    assert provider.calls == 1
    cache.cached_embed(spec, ["x", "y"], kind="query", dim=64)      # other prompt
    cache.cached_embed(spec, ["x", "z"], kind="document", dim=64)   # other text
    cache.cached_embed(spec, ["x", "y"], kind="document", dim=128)  # other setting
    assert provider.calls == 4

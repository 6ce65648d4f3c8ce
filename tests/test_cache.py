"""The embedding cache calls the model only once per (model, settings, texts)."""

from __future__ import annotations

import numpy as np

from mrlkit import cache, registry


class CountingProvider:
    def __init__(self, spec):
        self.spec = spec
        self.calls = 0
        self.sizes: list[int] = []

    def embed(self, texts, *, kind="document", dim=None):
        self.calls += 1
        self.sizes.append(len(texts))
        x = np.random.default_rng(len(texts)).normal(size=(len(texts), dim or self.spec.native_dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


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
    assert provider.calls == 2
    cache.cached_embed(spec, ["x", "z"], kind="document", dim=64)   # one new text
    assert provider.calls == 3 and provider.sizes[-1] == 1        # only "z" is embedded
    # another prefix is cut from the kept native vectors, as the provider cuts it
    wide = cache.cached_embed(spec, ["x", "y"], kind="document", dim=128)
    assert provider.calls == 3 and wide.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(wide, axis=1), 1.0, atol=1e-6)


def test_add_fills_the_cache_that_eval_reads(tmp_path, monkeypatch):
    """`mrlkit add` embeds a corpus once: eval and advise on the same texts (read whole,
    at the native dimension) call the model for none of them."""
    from mrlkit import EmbeddingSet, open_store

    monkeypatch.setenv("MRLKIT_CACHE", str(tmp_path / "cache"))
    spec = registry.get_spec("all-MiniLM-L6-v2")
    provider = CountingProvider(spec)
    monkeypatch.setattr(cache, "get_provider", lambda s, **kw: provider)
    store = open_store(tmp_path / "store")
    store.create_set("s", spec.name, 128, allow_non_mrl=True)
    texts = [f"document {i}" for i in range(10)]
    EmbeddingSet(store, "s").add_texts([str(i) for i in range(10)], texts)
    assert provider.calls == 1
    full = cache.cached_embed(spec, texts, kind="document")
    assert provider.calls == 1 and full.shape == (10, spec.native_dim)


def test_a_cache_that_cannot_be_written_is_a_miss_not_an_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("MRLKIT_CACHE", str(tmp_path / "file"))
    spec = registry.get_spec("nomic-embed-text")
    provider = CountingProvider(spec)
    monkeypatch.setattr(cache, "get_provider", lambda s, **kw: provider)
    assert cache.cached_embed(spec, ["x"], kind="document").shape == (1, 768)


def test_a_repeated_text_is_embedded_once_and_a_damaged_cache_is_a_miss(tmp_path,
                                                                       monkeypatch):
    import sqlite3

    monkeypatch.setenv("MRLKIT_CACHE", str(tmp_path))
    spec = registry.get_spec("nomic-embed-text")
    provider = CountingProvider(spec)
    monkeypatch.setattr(cache, "get_provider", lambda s, **kw: provider)
    x = cache.cached_embed(spec, ["a", "b", "a"], kind="document")
    assert provider.sizes == [2] and np.array_equal(x[0], x[2])
    # a row cut short and a whole-list file that is not an array: both read as misses
    (db,) = (tmp_path / "texts").glob("*.sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE v SET x = substr(x, 1, 10)")
    for f in tmp_path.glob("*.npy"):
        f.write_bytes(b"damaged")
    y = cache.cached_embed(spec, ["a", "b", "a"], kind="document")
    assert y.shape == (3, 768) and provider.sizes == [2, 2]

"""The server's micro-batcher on its own (no model, no server): fair shares of each
model call, one request's failure kept to that request, abandoned requests dropped."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
from mrlkit.server.batching import MicroBatcher  # noqa: E402


class Recorder:
    """An encoder that records each call's texts; a text 'BAD' fails its call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay  # seconds a call takes (the model's time)

    def __call__(self, model: str, kind: str, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        time.sleep(self.delay)
        if "BAD" in texts:
            raise ValueError("the model cannot embed BAD")
        return np.array([[float(len(t)), float(hash(t) % 97)] for t in texts], np.float32)


def test_a_small_request_joins_the_next_call_of_a_large_one():
    enc = Recorder(delay=0.02)

    async def main():
        b = MicroBatcher(enc, max_batch=8, max_wait_ms=1)
        big = asyncio.create_task(b.embed("m", "document", [f"big{i}" for i in range(80)]))
        await asyncio.sleep(0.01)       # the first chunks are under way
        small = await b.embed("m", "document", ["small"])
        done_early = not big.done()
        rows = await big
        await b.close()
        return small, rows, done_early

    small, rows, done_early = asyncio.run(main())
    assert done_early and small.shape == (1, 2) and rows.shape == (80, 2)
    first = next(i for i, call in enumerate(enc.calls) if "small" in call)
    assert first <= 2, enc.calls[:4]             # about one chunk, not ten
    assert all(len(c) <= 8 for c in enc.calls)   # every call within max_batch
    order = [t for c in enc.calls for t in c if t.startswith("big")]
    assert order == [f"big{i}" for i in range(80)]   # a request's texts stay in order


def test_equal_shares_and_rows_back_to_their_own_request():
    enc = Recorder()

    async def main():
        b = MicroBatcher(enc, max_batch=9, max_wait_ms=20)
        got = await asyncio.gather(*(b.embed("m", "query", [f"r{r}-{i}" for i in range(n)])
                                     for r, n in enumerate((30, 2, 30))))
        await b.close()
        return got

    got = asyncio.run(main())
    assert enc.calls[0].count("r1-0") == 1 and sum(t.startswith("r0") for t in
                                                   enc.calls[0]) <= 4
    for r, (n, rows) in enumerate(zip((30, 2, 30), got)):
        want = enc.__class__()([], "", [f"r{r}-{i}" for i in range(n)])
        assert np.array_equal(rows, want)


def test_a_bad_text_fails_only_its_own_request():
    enc = Recorder()

    async def main():
        b = MicroBatcher(enc, max_batch=64, max_wait_ms=20)
        got = await asyncio.gather(b.embed("m", "document", ["fine", "also fine"]),
                                   b.embed("m", "document", ["BAD"]),
                                   b.embed("m", "document", ["ok"]),
                                   return_exceptions=True)
        await b.close()
        return got

    good, bad, other = asyncio.run(main())
    assert isinstance(bad, ValueError)
    assert good.shape == (2, 2) and other.shape == (1, 2)

"""Dynamic batching: texts of concurrent requests encoded in one model call.

A request's texts join a queue; one worker takes the first waiting request, lets others
join for at most ``max_wait_ms`` or until ``max_batch`` texts, and runs the model on one
thread of its own, so the event loop never blocks and the model is never called from two
threads at once. Each request gets its own rows back.

Example::

    >>> b = MicroBatcher(lambda model, kind, texts: ..., max_batch=64)   # doctest: +SKIP
    >>> x = await b.embed("all-MiniLM-L6-v2", "document", ["a", "b"])    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Encode = Callable[[str, str, list[str]], np.ndarray]


@dataclass
class _Request:
    model: str
    kind: str
    texts: list[str]
    done: asyncio.Future[np.ndarray] = field(repr=False)


class MicroBatcher:
    """Concurrent ``embed`` calls, merged into model calls of up to ``max_batch`` texts."""

    def __init__(self, encode: Encode, *, max_batch: int = 64, max_wait_ms: float = 5.0,
                 observe: Callable[[int], None] | None = None) -> None:
        self.encode, self.max_batch, self.max_wait = encode, max_batch, max_wait_ms / 1000
        self.observe = observe          # called with each model call's batch size
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mrlkit-encode")
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, model: str, kind: str, texts: list[str]) -> np.ndarray:
        """float32 rows of ``texts`` (unit norm, the model's native dimension)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run())
        done: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(model, kind, texts, done))
        return await done

    def run(self, model: str, kind: str, texts: list[str]) -> np.ndarray:
        """One model call on the encoder's thread, from a thread (no batching)."""
        return self.executor.submit(self.encode, model, kind, texts).result()

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size, deadline = len(batch[0].texts), loop.time() + self.max_wait
            while size < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
                size += len(batch[-1].texts)
            groups: dict[tuple[str, str], list[_Request]] = defaultdict(list)
            for r in batch:
                groups[(r.model, r.kind)].append(r)
            for (model, kind), requests in groups.items():
                await self._encode(loop, model, kind, requests)

    async def _encode(self, loop: asyncio.AbstractEventLoop, model: str, kind: str,
                      requests: list[_Request]) -> None:
        texts = [t for r in requests for t in r.texts]
        try:
            x = await loop.run_in_executor(self.executor, self.encode, model, kind, texts)
        except Exception as exc:  # every waiting request gets the model's error
            for r in requests:
                if not r.done.done():
                    r.done.set_exception(exc)
            return
        if self.observe:
            self.observe(len(texts))
        start = 0
        for r in requests:
            if not r.done.done():  # a client that went away is skipped
                r.done.set_result(x[start:start + len(r.texts)])
            start += len(r.texts)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=True)

"""Dynamic, fair batching: texts of concurrent requests encoded in shared model calls.

Each request's texts wait in a queue. One worker builds each model call of at most
``max_batch`` texts from the waiting requests of one (model, kind): every request gets an
equal share of the call (a request with fewer texts than its share gives the rest to the
others), so a large request is split into ``max_batch`` chunks interleaved with everyone
else's and a small request waits about one chunk, not for the large one to finish. When
fewer than ``max_batch`` texts wait, the call waits at most ``max_wait_ms`` for company.
The model runs on one thread of its own, so the event loop never blocks and the model is
never called from two threads at once. A call that fails is tried again request by
request, so one request's bad input fails only that request. A request whose client went
away is dropped with its remaining chunks.

Example::

    >>> b = MicroBatcher(lambda model, kind, texts: ..., max_batch=64)   # doctest: +SKIP
    >>> x = await b.embed("all-MiniLM-L6-v2", "document", ["a", "b"])    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

Encode = Callable[[str, str, list[str]], np.ndarray]


@dataclass(eq=False)
class _Request:
    model: str
    kind: str
    texts: list[str]
    done: asyncio.Future[np.ndarray] = field(repr=False)
    sent: int = 0                                   # texts handed to the model so far
    parts: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def left(self) -> int:
        return len(self.texts) - self.sent


class MicroBatcher:
    """Concurrent ``embed`` calls, merged into fair model calls of up to ``max_batch``
    texts."""

    def __init__(self, encode: Encode, *, max_batch: int = 64, max_wait_ms: float = 5.0,
                 observe: Callable[[int], None] | None = None) -> None:
        self.encode, self.max_batch, self.max_wait = encode, max_batch, max_wait_ms / 1000
        self.observe = observe          # called with each model call's batch size
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mrlkit-encode")
        self._pending: deque[_Request] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, model: str, kind: str, texts: list[str]) -> np.ndarray:
        """float32 rows of ``texts`` (unit norm, the model's native dimension)."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
            self._worker = asyncio.create_task(self._run())
        done: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(model, kind, list(texts), done))
        self._arrived.set()
        return await done

    def run(self, model: str, kind: str, texts: list[str]) -> np.ndarray:
        """One model call on the encoder's thread, from a thread (no batching)."""
        return self.executor.submit(self.encode, model, kind, texts).result()

    async def _run(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_finished()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = loop.time() + self.max_wait
            while self._waiting() < self.max_batch and loop.time() < deadline:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - loop.time())
                except TimeoutError:
                    break
            self._drop_finished()
            if self._pending:
                await self._call(loop, self._take())

    def _drop_finished(self) -> None:
        """Requests answered, failed or abandoned (their client went away) leave."""
        if any(r.done.done() for r in self._pending):
            self._pending = deque(r for r in self._pending if not r.done.done())

    def _waiting(self) -> int:
        """Texts waiting of the (model, kind) of the oldest request."""
        head = self._pending[0]
        return sum(r.left for r in self._pending
                   if (r.model, r.kind) == (head.model, head.kind))

    def _take(self) -> list[tuple[_Request, int]]:
        """The next call: (request, texts it sends) of the oldest request's (model,
        kind), shared equally (water-filling) up to ``max_batch``; the requests served
        move to the back of the queue, so calls rotate among models and kinds too."""
        head = self._pending[0]
        same = [r for r in self._pending if (r.model, r.kind) == (head.model, head.kind)]
        share = {id(r): 0 for r in same}
        room, active = self.max_batch, same
        while room > 0 and active:
            quantum = max(1, room // len(active))
            still = []
            for r in active:
                n = min(quantum, r.left - share[id(r)], room)
                share[id(r)] += n
                room -= n
                if r.left > share[id(r)]:
                    still.append(r)
                if room == 0:
                    break
            active = still
        chosen = [(r, share[id(r)]) for r in same if share[id(r)]]
        served = {id(r) for r, _ in chosen}
        self._pending = deque([r for r in self._pending if id(r) not in served]
                              + [r for r, _ in chosen])
        return chosen

    async def _call(self, loop: asyncio.AbstractEventLoop,
                    chosen: list[tuple[_Request, int]]) -> None:
        model, kind = chosen[0][0].model, chosen[0][0].kind
        slices = [(r, r.texts[r.sent:r.sent + n]) for r, n in chosen]
        for r, n in chosen:
            r.sent += n
        texts = [t for _, part in slices for t in part]
        try:
            x = await loop.run_in_executor(self.executor, self.encode, model, kind, texts)
        except Exception as exc:
            if len(slices) == 1:
                _fail(slices[0][0], exc)
                return
            for r, part in slices:  # one request's bad text must not fail the others
                try:
                    y = await loop.run_in_executor(self.executor, self.encode, model,
                                                   kind, part)
                except Exception as one:
                    _fail(r, one)
                else:
                    _deliver(r, y)
            return
        if self.observe:
            self.observe(len(texts))
        start = 0
        for r, part in slices:
            _deliver(r, x[start:start + len(part)])
            start += len(part)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=True)


def _deliver(r: _Request, rows: np.ndarray) -> None:
    if r.done.done():  # a client that went away is skipped
        return
    r.parts.append(rows)
    if r.left == 0:
        r.done.set_result(r.parts[0] if len(r.parts) == 1 else np.concatenate(r.parts))


def _fail(r: _Request, exc: BaseException) -> None:
    if not r.done.done():
        r.done.set_exception(exc)

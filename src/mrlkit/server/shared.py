"""What the route modules share: the server's state (store, encoder, metrics), the
key check, and the request checks every route applies alike.

Example::

    >>> parse_funnel(None) is None
    True
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .. import errors
from ..funnel import Funnel
from ..providers import get_provider
from ..registry import ModelSpec, get_spec, validate_dim
from ..stores import Store
from ..text import problem
from . import schemas as s
from .batching import MicroBatcher
from .config import ServerConfig
from .guard import ApiError, Metrics

log = logging.getLogger("mrlkit.serve")
T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="An API key (`--api-key-file`, "
                    "`MRLKIT_API_KEYS`); none when the server runs without keys.")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse}
    for code in (400, 401, 403, 404, 408, 409, 413, 421, 429, 502, 503)}


class State:
    """What the routes share: the store, the encoder, the metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.batcher = MicroBatcher(self._encode, max_batch=config.limits.max_batch,
                                    max_wait_ms=config.limits.max_wait_ms,
                                    observe=self.metrics.batch.observe)
        self.store: Store[Any] | None = None
        self.ready = False
        self._calibrations: dict[tuple[str, int], Any] = {}
        # searches on a pool of their own, sized to the cores: faiss and NumPy release
        # the GIL, so they run in parallel, and a burst of searches cannot take the
        # threads that writes and set operations run on
        self.searches = ThreadPoolExecutor(config.search_threads or os.cpu_count() or 1,
                                           thread_name_prefix="mrlkit-search")

    async def search(self, call: Callable[[], T]) -> T:
        """Run ``call`` (a store search) on the search pool."""
        return await asyncio.get_running_loop().run_in_executor(self.searches, call)

    def _provider(self, model: str) -> Any:
        spec = get_spec(model)
        local = spec.provider == "sentence-transformers"
        return get_provider(spec, quiet=True,
                            **({"backend": self.config.backend} if local else {}))

    def tokens(self, model: str, kind: str, texts: list[str]) -> int:
        """Usage: the model's tokenizer's count (a local model), else words (a remote
        provider's count is its own)."""
        count = getattr(self._provider(model), "count_tokens", None)
        return int(count(texts, kind)) if count else sum(len(t.split()) for t in texts)

    def _encode(self, model: str, kind: str, texts: list[str]) -> np.ndarray:
        """One model call, on the encoder's thread: unit rows at the native dimension."""
        provider = self._provider(model)
        x = provider.embed(texts, kind=kind)
        self.metrics.embedded.inc(len(texts))
        return np.asarray(x, np.float32)

    def spec(self, model: str) -> ModelSpec:
        if model not in self.config.models:
            raise ApiError(404, f"the model {model!r} is not served here; served: "
                           f"{', '.join(self.config.models)} (GET /v1/models)",
                           "invalid_request_error", "model", "model_not_found")
        return get_spec(model)

    def calibration(self, spec: ModelSpec, dim: int) -> Any:
        """The model's reference int8 calibration at ``dim``, made on the encoder thread."""
        key = (spec.name, dim)
        if key not in self._calibrations:
            from ..embedder import Embedder

            made = self.batcher.executor.submit(lambda: Embedder(
                spec, dim, "int8", allow_non_mrl=True).calibration).result()
            self._calibrations[key] = made.calibration if made else None
        return self._calibrations[key]


class Shared:
    """The state and the two dependencies every route group uses."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state = State(config)
        self._tuning: set[str] = set()
        self._tuning_lock = threading.Lock()

    def tune_later(self, name: str) -> None:
        """Tune set ``name`` if it needs it (:meth:`Store.tune_if_needed`); a second call
        while one runs for the same set returns at once. Run after an add's answer."""
        with self._tuning_lock:
            if name in self._tuning:
                return
            self._tuning.add(name)
        try:
            tuned = self.store().tune_if_needed(name)
            if tuned is not None:
                log.info("set %s tuned: %s", name, tuned.describe())
        except Exception:  # a tune is an optimisation: the add has been answered
            log.exception("tuning set %s failed; its searches keep the planner's default",
                          name)
        finally:
            with self._tuning_lock:
                self._tuning.discard(name)

    def role(self, need: str) -> Any:
        config = self.config

        async def check(request: Request,
                        creds: HTTPAuthorizationCredentials | None = Depends(bearer)
                        ) -> None:
            if not config.keys:
                return
            got = request.scope.get("state", {}).get("mrlkit_role")  # set by the Guard
            if got is None:
                raise ApiError(401, "a valid API key is required: Authorization: Bearer KEY",
                               "invalid_request_error", code="invalid_api_key")
            if need == "write" and got != "write":
                raise ApiError(403, "this API key is read-only", "permission_error",
                               code="read_only_key")
        return Depends(check)

    def store(self) -> Store[Any]:
        if self.state.store is None:
            raise ApiError(503, "the store is not open yet", "server_error", code="not_ready")
        return self.state.store


def check_texts(texts: list[str], config: ServerConfig, most: int | None = None) -> None:
    limit = most or config.limits.inputs
    if not texts or len(texts) > limit:
        raise ApiError(400, f"give 1..{limit:,} inputs, not {len(texts):,}",
                       "invalid_request_error", "input")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ApiError(400, f"input {i} is empty", "invalid_request_error", "input")
        if len(t) > config.limits.chars:
            raise ApiError(400, f"input {i} has {len(t):,} characters; the limit is "
                           f"{config.limits.chars:,}", "invalid_request_error", "input")
        bad = problem(t)  # before batching: a bad text must fail its own request only
        if bad is not None:
            raise ApiError(400, f"input {i} holds {bad}: text must be valid Unicode "
                           "without NUL", "invalid_request_error", "input")


def dimensions(spec: ModelSpec, dim: int | None, allow_non_mrl: bool) -> int:
    if dim is not None and not spec.supports_mrl and not allow_non_mrl:
        raise ApiError(400, f"{spec.name} is not Matryoshka-trained: its prefixes lose "
                       "quality, so `dimensions` needs a server started with "
                       "--allow-non-mrl", "invalid_request_error", "dimensions",
                       "model_not_matryoshka")
    try:
        return validate_dim(spec, dim, allow_non_mrl=True)
    except errors.DimensionError as exc:  # the registry's message names what is allowed
        raise ApiError(400, str(exc), "invalid_request_error", "dimensions",
                       "invalid_dimensions") from None


def parse_funnel(text: str | None) -> Funnel | None:
    if text is None:
        return None
    try:
        return Funnel.parse(text)
    except (errors.MrlkitError, ValueError) as exc:
        raise ApiError(400, str(exc), "invalid_request_error", "funnel") from None


def encode_row(row: np.ndarray, fmt: str) -> list[float] | list[int] | str:
    if fmt == "base64":  # OpenAI's: the little-endian bytes (float32 unless precision says)
        return base64.b64encode(row.astype(row.dtype.newbyteorder("<")).tobytes()).decode()
    if row.dtype.kind == "f":
        return [float(v) for v in row.astype(np.float32)]
    return [int(v) for v in row]

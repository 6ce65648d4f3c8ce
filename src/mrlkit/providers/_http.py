"""JSON over HTTP for the remote providers: retries, backoff and one error tree.

Retries 429 and 5xx with exponential backoff, honouring ``Retry-After``; maps 400, 401,
403, 404 to typed errors that carry the server's own message.

Example::

    >>> client = JSONClient("http://127.0.0.1:11434", service="Ollama")  # doctest: +SKIP
    >>> client.post("/api/embed", {"model": "m", "input": ["x"]})       # doctest: +SKIP
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

import httpx

from ..errors import (AuthenticationError, BadRequestError, BadResponseError,
                      ModelNotFoundError, ProviderConnectionError, RateLimitError,
                      ServerError)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    return str(err or body)[:200]


class JSONClient:
    """POST JSON, get JSON back, with retries; one instance per provider."""

    def __init__(self, base_url: str, *, service: str, headers: dict[str, str] | None = None,
                 timeout: float = 60.0, max_retries: int = 5, backoff: float = 0.5,
                 max_backoff: float = 30.0) -> None:
        self.service = service
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers or {},
                                    timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        """POST ``payload`` to ``path``; return the decoded JSON body."""
        url = f"{self._client.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.post(path, json=payload)
            except httpx.TransportError as exc:
                # nothing listens there: retrying for seconds only hides a wrong address
                refused = isinstance(exc, httpx.ConnectError) and "refused" in str(exc).lower()
                if attempt < self.max_retries and not refused:
                    time.sleep(min(self.max_backoff, self.backoff * 2 ** attempt))
                    continue
                raise ProviderConnectionError(
                    f"cannot reach {self.service} at {url}: {exc}") from None
            status = response.status_code
            if status == 429 or status >= 500:
                if attempt < self.max_retries:
                    wait = _retry_after(response)
                    time.sleep(min(self.max_backoff, wait if wait is not None
                                   else self.backoff * 2 ** attempt))
                    continue
                cls = RateLimitError if status == 429 else ServerError
                raise cls(f"{self.service} answered HTTP {status} {self.max_retries + 1} "
                          f"times at {url}: {_server_message(response)}")
            if status in (401, 403):
                raise AuthenticationError(f"{self.service} refused the credentials "
                                          f"(HTTP {status}): {_server_message(response)}")
            if status == 404:
                raise ModelNotFoundError(f"{self.service} answered HTTP 404 at {url}: "
                                         f"{_server_message(response)}")
            if status >= 400:
                raise BadRequestError(f"{self.service} refused the request (HTTP {status}): "
                                      f"{_server_message(response)}")
            try:
                return response.json()
            except (ValueError, json.JSONDecodeError):
                raise BadResponseError(f"{self.service} answered with invalid JSON at {url}: "
                                       f"{response.text[:80]!r}") from None
        raise AssertionError("unreachable")  # pragma: no cover

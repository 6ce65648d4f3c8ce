"""uvicorn's HTTP protocol with what a public socket needs before any route runs: a
deadline for a connection to send its request headers (an idle or trickling socket is
closed, so sockets cannot be hoarded), and malformed HTTP answered in the same JSON error
body as every other error.

The request *body* has its own deadline in :class:`.guard.Guard`; this covers the part
uvicorn reads before the app sees anything: from the connection's start, or the end of
its previous response, to the end of the next request's headers.

Example::

    >>> cls = protocol_class(header_seconds=10)     # doctest: +SKIP
    >>> uvicorn.run(app, http=cls)                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .guard import error_body

MALFORMED = json.dumps(error_body(
    "malformed HTTP request: the request line or headers could not be parsed",
    "invalid_request_error", None, "malformed_http")).encode()


class _Deadlines:
    """Mixed into uvicorn's protocol classes (h11 and httptools keep ``cycle``,
    ``transport`` and ``loop`` alike)."""

    header_seconds = 10.0
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm()  # the next request's headers have the same deadline

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_seconds, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        """No request began in time: close (a request being served is left alone)."""
        self._header_timer = None
        if (self.cycle is None or self.cycle.response_complete) and \
                not self.transport.is_closing():
            self.transport.close()


def protocol_class(header_seconds: float) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.run(http=...)``: httptools when installed (what
    uvicorn picks itself), else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools is uvicorn[standard]'s
        return _h11(header_seconds)

    class Protocol(_Deadlines, HttpToolsProtocol):  # type: ignore[misc]
        def send_400_response(self, msg: str) -> None:
            head = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                    b"content-length: " + str(len(MALFORMED)).encode() +
                    b"\r\nconnection: close\r\n\r\n")
            self.transport.write(head + MALFORMED)
            self.transport.close()

    Protocol.header_seconds = header_seconds
    return Protocol


def _h11(header_seconds: float) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(_Deadlines, H11Protocol):  # type: ignore[misc]
        def send_400_response(self, msg: str) -> None:
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers),
                          h11.Data(data=MALFORMED), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    Protocol.header_seconds = header_seconds
    return Protocol

"""What `mrlkit serve` is started with: the store, the models, the keys, the limits.

API keys come from a file (``--api-key-file``: one key per line, optionally followed by
``read`` or ``write`` after spaces or tabs; a line starting with ``#`` is a comment) and
from ``MRLKIT_API_KEYS`` (comma-separated, ``KEY`` or ``KEY:read``). A key is one token of
8 or more printable ASCII characters (``#`` included: it is part of the key); anything
else on a line is an error naming the line, never a silently shortened key. A read key
may embed and search; a write key may also create, change and drop sets. Keys are
compared in constant time.

Example::

    >>> keys = parse_keys("k1-secret\\nk2-secret\\tread\\n# a comment")
    >>> sorted(keys.items())
    [('k1-secret', 'write'), ('k2-secret', 'read')]
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError

ROLES = ("read", "write")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Limits:
    """Each answered with a JSON error and nothing stored (see docs/serve.md)."""

    body_bytes: int = 2 * 1024 * 1024     # 413 past it (TEI's default)
    inputs: int = 2048                    # texts per /v1/embeddings request (OpenAI's)
    chars: int = 32_768                   # characters per text
    documents: int = 10_000               # documents per add
    k: int = 1_000                        # hits per query
    queries: int = 256                    # queries per search request
    in_flight: int = 64                   # requests being served per API key; 429 past it
    anonymous_in_flight: int = 16         # the same for requests without a key
    header_seconds: float = 10.0          # to send a request's headers (then closed)
    body_seconds: float = 30.0            # to send its body (then 408)
    max_batch: int = 64                   # texts per model call (dynamic batching)
    max_wait_ms: float = 5.0              # how long a model call waits for company


@dataclass
class ServerConfig:
    """Where the server listens and what it serves. Without keys it may listen on
    loopback only, and then answers only requests addressed to loopback (``Host``), so
    that a web page cannot reach it by DNS rebinding."""

    store: str | None = None
    models: list[str] = field(default_factory=lambda: ["all-MiniLM-L6-v2"])
    keys: dict[str, str] = field(default_factory=dict)   # key → role
    allow_non_mrl: bool = False
    backend: str = "torch"                               # encoder of local models
    limits: Limits = field(default_factory=Limits)
    host: str = "127.0.0.1"
    # threads searches run on (the store's reads run in parallel; the encoder has a
    # thread of its own); None: one per core
    search_threads: int | None = None

    def __post_init__(self) -> None:
        if self.search_threads is not None and not 1 <= self.search_threads <= 256:
            raise InvalidInputError(f"search threads must be 1..256, not "
                                    f"{self.search_threads}")
        if not self.keys and self.host not in LOOPBACK:
            raise InvalidInputError(
                f"no API key is configured, so the server listens on loopback only, not "
                f"{self.host}: give --api-key-file or MRLKIT_API_KEYS")

    def identify(self, token: str | None) -> tuple[int, str] | None:
        """(the key's number, its role) for ``token`` (None: no such key), checked
        against every key in constant time."""
        found = None
        given = (token or "").encode()
        for n, (key, role) in enumerate(self.keys.items()):
            if hmac.compare_digest(given, key.encode()):
                found = (n, role)
        return found

    def role(self, token: str | None) -> str | None:
        """The role of ``token`` (None: no such key)."""
        got = self.identify(token)
        return got[1] if got else None


_KEY_FORM = ("expected one key of 8 or more printable ASCII characters, optionally "
             "followed by 'read' or 'write' (separated by spaces or tabs)")


def _key(key: str, role: str, where: str) -> tuple[str, str]:
    if len(key) < 8 or not key.isascii() or not key.isprintable() or " " in key:
        raise InvalidInputError(f"{where}: {_KEY_FORM}; the key has {len(key)} "
                                "characters" + ("" if key.isascii() and key.isprintable()
                                                else " and some are not printable ASCII"))
    if role not in ROLES:
        raise InvalidInputError(f"{where}: the role must be read or write, not {role!r}")
    return key, role


def parse_keys(text: str) -> dict[str, str]:
    """Keys of a key file (see the module's docs)."""
    keys = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()  # spaces and tabs
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2:
            raise InvalidInputError(f"API key line {n}: {_KEY_FORM}; it has "
                                    f"{len(fields)} fields")
        key, role = _key(fields[0], fields[1] if len(fields) == 2 else "write",
                         f"API key line {n}")
        keys[key] = role
    return keys


def parse_env_keys(text: str) -> dict[str, str]:
    """Keys of ``MRLKIT_API_KEYS``: ``KEY`` or ``KEY:read``/``KEY:write``, by commas."""
    keys = {}
    for n, item in enumerate((k.strip() for k in text.split(",")), 1):
        if not item:
            continue
        key, sep, role = item.rpartition(":")
        if not sep or role not in ROLES:
            key, role = item, "write"
        key, role = _key(key, role, f"MRLKIT_API_KEYS entry {n}")
        keys[key] = role
    return keys


def load_keys(path: str | Path | None) -> dict[str, str]:
    """Keys from ``path`` and ``MRLKIT_API_KEYS``."""
    keys = {}
    if path:
        try:
            keys.update(parse_keys(Path(path).read_text()))
        except OSError as exc:
            raise InvalidInputError(f"cannot read the API key file {path}: "
                                    f"{exc.strerror}") from None
    keys.update(parse_env_keys(os.environ.get("MRLKIT_API_KEYS", "")))
    return keys

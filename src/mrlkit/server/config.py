"""What `mrlkit serve` is started with: the store, the models, the keys, the limits.

API keys come from a file (``--api-key-file``: one key per line, optionally followed by
``read`` or ``write``; ``#`` starts a comment) and from ``MRLKIT_API_KEYS``
(comma-separated, ``KEY`` or ``KEY:read``). A read key may embed and search; a write key
may also create, change and drop sets. Keys are compared in constant time.

Example::

    >>> keys = parse_keys("k1\\nk2 read\\n# a comment")
    >>> sorted(keys.items())
    [('k1', 'write'), ('k2', 'read')]
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InvalidInputError

ROLES = ("read", "write")


@dataclass
class Limits:
    """Each answered with a JSON error and nothing stored (see docs/serve.md)."""

    body_bytes: int = 2 * 1024 * 1024     # 413 past it (TEI's default)
    inputs: int = 2048                    # texts per /v1/embeddings request (OpenAI's)
    chars: int = 32_768                   # characters per text
    documents: int = 10_000               # documents per add
    k: int = 1_000                        # hits per query
    queries: int = 256                    # queries per search request
    in_flight: int = 64                   # requests being served; 429 past it
    max_batch: int = 64                   # texts per model call (dynamic batching)
    max_wait_ms: float = 5.0              # how long a model call waits for company


@dataclass
class ServerConfig:
    store: str | None = None
    models: list[str] = field(default_factory=lambda: ["all-MiniLM-L6-v2"])
    keys: dict[str, str] = field(default_factory=dict)   # key → role
    allow_non_mrl: bool = False
    backend: str = "torch"                               # encoder of local models
    limits: Limits = field(default_factory=Limits)

    def role(self, token: str | None) -> str | None:
        """The role of ``token`` (None: no such key), checked against every key in
        constant time."""
        found = None
        for key, role in self.keys.items():
            if hmac.compare_digest((token or "").encode(), key.encode()):
                found = role
        return found


def parse_keys(text: str) -> dict[str, str]:
    keys = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, role = line.partition(" ")
        role = role.strip() or "write"
        if role not in ROLES or len(key) < 8:
            raise InvalidInputError(f"API key line {n}: expected 'KEY [read|write]' with a "
                                    "key of 8 or more characters")
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
    env = os.environ.get("MRLKIT_API_KEYS", "")
    keys.update(parse_keys("\n".join(k.strip().replace(":", " ", 1)
                                     for k in env.split(",") if k.strip())))
    return keys

"""The one seam between text and vectors: the :class:`Provider` protocol.

A provider turns texts into unit-norm float32 vectors of a requested dimension. It knows
nothing of storage. It applies the model's prompt for the ``kind`` of text and the
model's pre-truncation transform (see :func:`mrlkit.vectors.prepare`).

Example::

    >>> from mrlkit.providers import get_provider
    >>> get_provider("all-MiniLM-L6-v2").embed(["hi"], kind="query").shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..registry import ModelSpec
from ..text import check_text

Kind = Literal["query", "document"]


@runtime_checkable
class Provider(Protocol):
    """Turns texts into vectors for one model."""

    spec: ModelSpec

    def embed(self, texts: Sequence[str], *, kind: Kind = "document",
              dim: int | None = None) -> np.ndarray:
        """Embed ``texts``: float32, shape ``(len(texts), dim or native)``, unit rows."""
        ...


def check_texts(texts: Sequence[str]) -> list[str]:
    """Refuse what no model can embed: a bare string, non-strings, empty texts, and text
that is not valid Unicode (a lone surrogate) or holds NUL (:mod:`mrlkit.text`).

    Example::

        >>> check_texts(["a", "b"])
        ['a', 'b']
    """
    if isinstance(texts, str):
        raise InvalidInputError("expected a list of texts, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidInputError(f"text {i} is {type(t).__name__}, expected str")
        if not t.strip():
            raise InvalidInputError(f"text {i} is empty; every text needs content")
        check_text(t, f"text {i}")
    return out


def with_prompts(spec: ModelSpec, texts: list[str], kind: Kind) -> list[str]:
    """Put the model's prompt for ``kind`` before each text.

    Example::

        >>> from mrlkit.registry import get_spec
        >>> with_prompts(get_spec("nomic-embed-text"), ["x"], "query")
        ['search_query: x']
    """
    prompt = spec.prompt(kind)
    return [prompt + t for t in texts] if prompt else texts


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Successive slices of ``items`` of at most ``size``.

    Example::

        >>> [len(b) for b in batches(list(range(5)), 2)]
        [2, 2, 1]
    """
    for start in range(0, len(items), size):
        yield items[start:start + size]

"""Embedding providers, one file each behind :class:`~mrlkit.providers.base.Provider`.

Example::

    >>> from mrlkit.providers import get_provider
    >>> get_provider("text-embedding-3-small").spec.native_dim
    1536
"""

from __future__ import annotations

from typing import Any

from ..registry import ModelSpec, get_spec
from .base import Kind, Provider

__all__ = ["Kind", "Provider", "get_provider"]

_cache: dict[tuple[Any, ...], Provider] = {}


_defaults: dict[str, Any] = {}


def configure(**options: Any) -> None:
    """Defaults for every provider made after this call, e.g. ``device="cuda"`` or
    ``batch_size=64`` (the CLI's ``--device`` and ``--batch-size``); ``device`` applies to
    local models only.

    Example::

        >>> configure(batch_size=64)  # doctest: +SKIP
    """
    _defaults.update({k: v for k, v in options.items() if v is not None})


def backend_of(spec: ModelSpec, options: dict[str, Any]) -> str:
    """The encoder backend a provider made with ``options`` uses (torch, onnx,
    onnx-int8; torch for remote models)."""
    if spec.provider != "sentence-transformers":
        return "torch"
    return str(options.get("backend") or _defaults.get("backend") or spec.backend)


def get_provider(model: str | ModelSpec, *, quiet: bool = False, **options: Any) -> Provider:
    """The provider for a model of the catalog; ``options`` go to its constructor
    (``host`` for Ollama, ``base_url``/``api_key`` for OpenAI, ``batch_size``...);
    ``quiet``: a local model shows no progress of its own (the caller reports it).

    Providers are cached per model and options, so a local model loads once per process.
    """
    spec = get_spec(model)
    options = {**{k: v for k, v in _defaults.items()
                  if k not in ("device", "backend") or spec.provider == "sentence-transformers"},
               **options}
    if quiet and spec.provider == "sentence-transformers":
        options.setdefault("show_progress", False)
    if spec.backend != "torch" and "backend" not in options:  # the catalog's choice
        options["backend"] = spec.backend
    key = (spec, tuple(sorted(options.items())))
    if key not in _cache:
        cls: type[Provider]
        if spec.provider == "sentence-transformers":
            from .sentence_transformers import SentenceTransformersProvider
            cls = SentenceTransformersProvider
        elif spec.provider == "ollama":
            from .ollama import OllamaProvider
            cls = OllamaProvider
        else:
            from .openai import OpenAIProvider
            cls = OpenAIProvider
        _cache[key] = cls(spec, **options)
    return _cache[key]

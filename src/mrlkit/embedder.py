"""The Python API for embedding: :class:`Embedder` and the one-call :func:`embed`.

Example::

    >>> import mrlkit
    >>> e = mrlkit.Embedder("all-MiniLM-L6-v2", dim=128, allow_non_mrl=True)  # doctest: +SKIP
    >>> e.embed_queries(["what is MRL?"]).shape                                 # doctest: +SKIP
    (1, 128)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from . import vectors
from .calibration import NamedCalibration, reference_calibration
from .providers import Kind, get_provider
from .registry import ModelSpec, get_spec, validate_dim


class Embedder:
    """Embeds texts with one model at one ``dim`` and ``precision``.

    The dimension is validated against the registry once, here. Results are unit-norm
    float32 unless a lower precision was asked. ``int8`` codes use a calibration that does
    not depend on the batch: the one given (an :class:`~mrlkit.calibration.NamedCalibration`
    or the path of its file), else the model's reference calibration at ``dim``
    (:func:`~mrlkit.calibration.reference_calibration`, made once and kept). Its name is
    ``calibration_name``: codes with the same name compare.
    """

    def __init__(self, model: str | ModelSpec = "all-MiniLM-L6-v2", dim: int | None = None,
                 precision: str = "float32", *, allow_non_mrl: bool = False,
                 calibration: NamedCalibration | str | Path | None = None,
                 **provider_options: Any) -> None:
        self.spec = get_spec(model)
        self.dim = validate_dim(self.spec, dim, allow_non_mrl=allow_non_mrl)
        self.precision = vectors.check_precision(precision)
        if isinstance(calibration, (str, Path)):
            calibration = NamedCalibration.load(calibration)
        self._calibration = calibration.check(self.spec.name, self.dim) if calibration \
            else None
        self._provider_options = provider_options
        self.provider = get_provider(self.spec, **provider_options)

    @property
    def calibration(self) -> NamedCalibration | None:
        """The int8 calibration in use (the reference one is made on first need)."""
        if self._calibration is None and self.precision == "int8":
            self._calibration = reference_calibration(self.spec, self.dim,
                                                      **self._provider_options)
        return self._calibration

    @property
    def calibration_name(self) -> str | None:
        cal = self.calibration
        return cal.name if cal else None

    def embed(self, texts: Sequence[str], *, kind: Kind = "document") -> np.ndarray:
        """Embed ``texts`` as ``kind`` ("query" or "document")."""
        out = self.provider.embed(texts, kind=kind, dim=self.dim)
        cal = self.calibration.calibration if self.precision == "int8" and \
            self.calibration else None
        return vectors.quantize(out, self.precision, cal)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents (the model's document prompt is applied)."""
        return self.embed(texts, kind="document")

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries (the model's query prompt is applied)."""
        return self.embed(texts, kind="query")


def embed(texts: Sequence[str], *, model: str | ModelSpec = "all-MiniLM-L6-v2",
          dim: int | None = None, kind: Kind = "document", precision: str = "float32",
          allow_non_mrl: bool = False, **provider_options: Any) -> np.ndarray:
    """Embed ``texts`` in one call.

    Example::

        >>> mrlkit.embed(["hello world"], dim=128, allow_non_mrl=True).shape  # doctest: +SKIP
        (1, 128)
    """
    return Embedder(model, dim, precision, allow_non_mrl=allow_non_mrl,
                    **provider_options).embed(texts, kind=kind)

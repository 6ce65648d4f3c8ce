"""int8 calibrations for embeddings outside a store: fitted once per model and dimension
on a reference sample, kept, and named, so that int8 codes do not depend on the batch
they were embedded in and codes from two calls compare.

The reference sample is 400 first paragraphs of Python standard-library docstrings
(varied prose), kept as package data so that it does not change with the Python version
or the demo; its hash is part of the calibration's name, so
a different sample never passes for the same calibration. A calibration can also be
given (a file written by an earlier run, or a set's). Inside a store, int8 views are
calibrated on the set's own rows instead (see ``mrlkit.stores.rules``).

Example::

    >>> cal = reference_calibration("all-MiniLM-L6-v2", 384)   # doctest: +SKIP
    >>> cal.name                                               # doctest: +SKIP
    'all-MiniLM-L6-v2-d384-ref1a2b3c4d'
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import vectors
from .errors import InvalidInputError
from .registry import ModelSpec, get_spec

REFERENCE_SIZE = 400  # texts; min/max per dimension over them


@dataclass(frozen=True)
class NamedCalibration:
    """An int8 calibration with the name, model and dimension it belongs to."""

    name: str
    model: str
    dim: int
    calibration: vectors.Int8Calibration
    fitted_on: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "dim": self.dim,
                "fitted_on": self.fitted_on, **self.calibration.to_dict()}

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (atomically)."""
        p = Path(path)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.as_dict()))
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> NamedCalibration:
        """Read a calibration file (one this module wrote)."""
        try:
            d = json.loads(Path(path).read_text())
            cal = vectors.Int8Calibration.from_dict(d)
            return cls(str(d["name"]), str(d["model"]), int(d["dim"]), cal,
                       int(d.get("fitted_on", 0)))
        except OSError as exc:
            raise InvalidInputError(f"cannot read calibration {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError):
            raise InvalidInputError(f"{path} is not an mrlkit int8 calibration (expected "
                                    "JSON with name, model, dim, lo and hi)") from None

    def check(self, model: str, dim: int) -> NamedCalibration:
        """This calibration, if it fits ``model`` at ``dim``; else one clear error."""
        if self.dim != dim or self.calibration.dim != dim:
            raise InvalidInputError(f"calibration {self.name} is for {self.dim} dimensions, "
                                    f"not {dim}")
        if self.model != model:
            raise InvalidInputError(f"calibration {self.name} is for {self.model}, "
                                    f"not {model}")
        return self


def reference_texts(n: int = REFERENCE_SIZE) -> list[str]:
    """The reference sample: package data (``reference_texts.txt``, one text per line),
    the same on every machine and Python version."""
    from importlib.resources import files

    lines = files("mrlkit").joinpath("reference_texts.txt").read_text("utf-8").splitlines()
    return [t for t in lines if t][:n]


def reference_calibration(model: str | ModelSpec, dim: int | None = None,
                          **provider_options: Any) -> NamedCalibration:
    """The int8 calibration of ``model`` at ``dim`` fitted on the reference sample: made
    once (embedding the sample through the embedding cache, and saying so on stderr:
    it takes a while), then read from ``calibrations/`` inside the cache
    (``MRLKIT_CACHE``)."""
    from .cache import cache_dir, cached_embed

    spec = get_spec(model)
    dim = dim or spec.native_dim
    texts = reference_texts()
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:8]
    name = f"{spec.name}-d{dim}-ref{digest}"
    path = cache_dir() / "calibrations" / f"{name}.json"
    if path.exists():
        try:
            return NamedCalibration.load(path).check(spec.name, dim)
        except InvalidInputError:
            pass  # a damaged file: fitted again below
    # queries and documents are quantised alike: fit on both when their prompts differ
    kinds = ["document"] + (["query"] if spec.query_prompt != spec.document_prompt else [])
    import sys

    sys.stderr.write(f"fitting {spec.name}'s reference int8 calibration at {dim} "
                     f"dimensions: embedding {len(texts) * len(kinds)} reference texts once "
                     f"(kept in {path})\n")
    x = np.vstack([cached_embed(spec, texts, kind=k, dim=dim,  # type: ignore[arg-type]
                                **provider_options) for k in kinds])
    named = NamedCalibration(name, spec.name, dim, vectors.Int8Calibration.fit(x), len(x))
    path.parent.mkdir(parents=True, exist_ok=True)
    named.save(path)
    return named

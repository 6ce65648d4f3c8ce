"""A sentence-transformers model's forward pass on ONNX Runtime (``backend="onnx"``) and
its dynamically quantised int8 variant (``backend="onnx-int8"``).

The whole model — transformer, pooling, normalisation, as the model itself defines them —
is exported from its own weights with ``torch.onnx.export`` on first use (no download),
then, for int8, quantised with onnxruntime's ``quantize_dynamic`` (int8 weights, per
channel, MatMul only: 0.99 mean cosine to the float model on MiniLM, where per-tensor
int8 gave 0.94). The files are kept under ``~/.cache/mrlkit/onnx`` (beside the embedding
cache; ``MRLKIT_ONNX_CACHE`` moves them), keyed by the model's files, so an export happens
once per model. Tokenisation is the model's own.

Example::

    >>> enc = OnnxEncoder(st_model, "all-MiniLM-L6-v2", folder, int8=True)  # doctest: +SKIP
    >>> enc.encode(["hello"], batch_size=32).shape                          # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from ..errors import ProviderError


def onnx_dir() -> Path:
    if os.environ.get("MRLKIT_ONNX_CACHE"):
        return Path(os.environ["MRLKIT_ONNX_CACHE"])
    emb = os.environ.get("MRLKIT_CACHE")
    return (Path(emb).parent if emb else Path.home() / ".cache" / "mrlkit") / "onnx"


def _fingerprint(folder: Path) -> str:
    """Changes when the model's files change (names, sizes, modification times)."""
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and "onnx" not in p.parts:
            st = p.stat()
            h.update(f"{p.relative_to(folder)}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


class OnnxEncoder:
    """Encodes with an ONNX export of ``model`` (a loaded SentenceTransformer)."""

    def __init__(self, model: Any, name: str, folder: str | None, *, int8: bool,
                 threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ProviderError("the onnx backends need onnxruntime: "
                                "pip install 'mrlkit[onnx]'") from None
        self.model = model
        # sentence-transformers 6 renamed tokenize to preprocess (same dict of tensors)
        self.tokenize = getattr(model, "preprocess", None) or model.tokenize
        key = _fingerprint(Path(folder)) if folder and Path(folder).is_dir() else "hub"
        self.dir = onnx_dir() / f"{name.replace('/', '_')}-{key}"
        self.inputs = [k for k, v in self.tokenize(["a"]).items() if hasattr(v, "shape")]
        path = self._quantized() if int8 else self._exported()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    def _exported(self) -> Path:
        path = self.dir / "model.onnx"
        if path.exists():
            return path
        import torch

        self.dir.mkdir(parents=True, exist_ok=True)
        model, names = self.model, self.inputs

        class Forward(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *args: Any) -> Any:
                return self.model(dict(zip(names, args)))["sentence_embedding"]

        sample = self.tokenize(["a short text", "a somewhat longer text to pad the batch"])
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        axes = {n: {0: "batch", 1: "tokens"} for n in names}
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python branches
                torch.onnx.export(Forward().eval(), tuple(sample[n] for n in names), str(tmp),
                                  input_names=names, output_names=["embedding"],
                                  dynamic_axes={**axes, "embedding": {0: "batch"}},
                                  opset_version=17, dynamo=False)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ProviderError(f"cannot export {self.dir.name} to ONNX: {exc}") from exc
        os.replace(tmp, path)  # whole or absent: a killed export leaves no half file
        return path

    def _quantized(self) -> Path:
        path = self.dir / "model-int8.onnx"
        if path.exists():
            return path
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = self._exported()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, per call
        try:
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"])
        finally:
            logging.getLogger().setLevel(quiet)
        os.replace(tmp, path)
        return path

    def encode(self, texts: Sequence[str], *, batch_size: int) -> np.ndarray:
        """Sentence embeddings as the model outputs them (normalised if it normalises)."""
        order = np.argsort([-len(t) for t in texts], kind="stable")  # less padding
        out: np.ndarray | None = None
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            feats = self.tokenize([texts[i] for i in rows])
            got = self.session.run(None, {n: feats[n].numpy() for n in self.inputs})[0]
            if out is None:
                out = np.empty((len(texts), got.shape[1]), np.float32)
            out[rows] = got
        assert out is not None
        return out

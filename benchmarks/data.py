"""Benchmark data: MRL-like generated vectors, real SciFact vectors, exact ground truth
and recall. Shared by benchmarks/search.py and benchmarks/engines.py."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mrlkit import vectors  # noqa: E402

K = 10
ROOT = Path(__file__).resolve().parents[1]


def generate(n: int, dim: int, n_queries: int, seed: int = 0):
    """Clustered vectors whose variance decays along the dimensions, like MRL embeddings.

    * ``n // 100`` cluster centres drawn from N(0, diag(s²)) with ``s_j = (1 + j/16)^-0.5``:
      the leading dimensions carry most of the spread, as Matryoshka training arranges;
    * each document = a centre + noise of the same shape at 0.7× scale;
    * each query = a random document's centre + fresh noise (a near, not identical, point).
    Rows are L2-normalised. Isotropic Gaussian data would be useless here: with no
    structure, no index (and no prefix) can find neighbours.
    """
    rng = np.random.default_rng(seed)
    scale = ((1.0 + np.arange(dim) / 16.0) ** -0.5).astype(np.float32)
    n_centres = max(10, n // 100)
    centres = rng.standard_normal((n_centres, dim), dtype=np.float32) * scale
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x[start:start + m] = (centres[rng.integers(0, n_centres, m)]
                              + 0.7 * rng.standard_normal((m, dim), dtype=np.float32) * scale)
    q = centres[rng.integers(0, n_centres, n_queries)] + \
        0.7 * rng.standard_normal((n_queries, dim), dtype=np.float32) * scale
    return vectors.normalize(x), vectors.normalize(q)


def scifact_vectors(model: str = "all-MiniLM-L6-v2"):
    """Real vectors of SciFact (corpus and test queries) from ``model`` (MiniLM, or the
    Matryoshka fine-tune in ../shared/models), or None when the dataset is absent."""
    folder = ROOT.parent / "shared" / "datasets" / "scifact"
    if not folder.is_dir():
        return None
    from mrlkit.cache import cached_embed
    from mrlkit.registry import register

    if model == "minilm-scifact-mrl":
        path = ROOT.parent / "shared" / "models" / model
        if not path.is_dir():
            return None
        spec = json.loads((path / "mrlkit.json").read_text())["spec"]
        register({**spec, "model_id": str(path)}, replace=True)
    docs = [json.loads(line) for line in open(folder / "corpus.jsonl")]
    queries = [json.loads(line) for line in open(folder / "queries.jsonl")]
    x = cached_embed(model, [(d["title"] + " " + d["text"]).strip() for d in docs],
                     kind="document")
    q = cached_embed(model, [d["text"] for d in queries], kind="query")
    return x, q


def exact_truth(x: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    out = []
    for start in range(0, len(q), 16):
        out.append(vectors.top_k(q[start:start + 16] @ x.T, k)[0])
    return np.concatenate(out)


def recall(found: list[np.ndarray] | np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(map(int, f[:K])) & set(map(int, t))) / K
                          for f, t in zip(found, truth)]))


def timed(single, batched, q: np.ndarray):
    """Per-query latencies (ms) of ``single`` and the QPS of ``batched`` over ``q``."""
    single(q[:1])  # warm-up: caches, lazy views
    lat = []
    found = []
    for i in range(len(q)):
        t0 = time.perf_counter()
        found.append(single(q[i:i + 1])[0])
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    batched(q)
    qps = len(q) / (time.perf_counter() - t0)
    return found, float(np.percentile(lat, 50)), float(np.percentile(lat, 95)), qps



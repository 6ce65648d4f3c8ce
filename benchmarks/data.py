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


def _mrl_model(model: str) -> bool:
    """Register the shared Matryoshka fine-tune (False when it is absent)."""
    from mrlkit.registry import register

    path = ROOT.parent / "shared" / "models" / model
    if not path.is_dir():
        return False
    spec = json.loads((path / "mrlkit.json").read_text())["spec"]
    register({**spec, "model_id": str(path)}, replace=True)
    return True


def real_vectors(model: str = "minilm-scifact-mrl"):
    """Real Matryoshka embeddings of real texts, all that the shared data gives:
    documents = SciFact's corpus, STS-B's sentences, Banking77's training questions;
    queries = SciFact's test queries (search queries) and 300 of Banking77's test
    questions. Embedded once with the shared MRL model and cached (MRLKIT_CACHE).
    Returns (docs, queries, query_kinds) or None when the data or the model is absent."""
    import csv

    data = ROOT.parent / "shared" / "datasets"
    if not all((data / d).is_dir() for d in ("scifact", "stsb", "banking77")) or \
            not _mrl_model(model):
        return None
    from mrlkit.cache import cached_embed

    sci = [json.loads(line) for line in open(data / "scifact" / "corpus.jsonl")]
    texts = [(d["title"] + " " + d["text"]).strip() for d in sci]
    sts: dict[str, None] = {}
    for name in ("sts-train.csv", "sts-dev.csv", "sts-test.csv"):
        for line in open(data / "stsb" / name, encoding="utf-8"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 7:
                sts.setdefault(parts[5].strip(), None)
                sts.setdefault(parts[6].strip(), None)
    with open(data / "banking77" / "train.csv", encoding="utf-8") as fh:
        bank = [r["text"] for r in csv.DictReader(fh)]
    with open(data / "banking77" / "test.csv", encoding="utf-8") as fh:
        bank_q = [r["text"] for r in csv.DictReader(fh)][::10][:300]
    docs = list(dict.fromkeys(texts + [t for t in sts if t] + bank))
    test = {line.split("\t")[0] for line in
            (data / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    sci_q = [json.loads(line) for line in open(data / "scifact" / "queries.jsonl")]
    queries = [q["text"] for q in sci_q if q["_id"] in test] + bank_q
    kinds = ["search"] * (len(queries) - len(bank_q)) + ["question"] * len(bank_q)
    x = cached_embed(model, docs, kind="document")
    q = cached_embed(model, queries, kind="query")
    return x, q, kinds


def calibrated(n: int, n_queries: int, *, alpha: float = 0.1, seed: int = 0,
               real: tuple[np.ndarray, np.ndarray] | None = None, held_out: int = 0):
    """Vectors as hard as real ones, at any size: real Matryoshka embeddings of real
    texts (:func:`real_vectors`) drawn ``n`` times (each once while ``n`` allows, then
    again), each plus noise shaped like the real vectors' own covariance (its principal
    axes, ``alpha`` × their spread); queries likewise from the real queries. The prefix
    structure (variance decaying along the dimensions, neighbours that differ only far
    down the vector) is the real one: benchmarks/calibrate.py checks the prefix-ceiling
    curve against the real vectors'. Needs the shared data and model (None without).

    ``alpha`` 0.1 is the fit (benchmarks/results/calibrate.json). With ``held_out``, a
    third array of that many queries for tuning, drawn from every third real query only,
    and the measured queries from the other real queries: what is tuned on is never what
    is measured."""
    if real is None:
        got = real_vectors()
        if got is None:
            return None
        real = got[0], got[1]
    x, q = real
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    cov = np.cov((x - mean).T)
    eigval, eigvec = np.linalg.eigh(cov)
    axes = (eigvec * np.sqrt(np.clip(eigval, 0, None))).astype(np.float32)  # dim × dim

    def draw(base: np.ndarray, m: int) -> np.ndarray:
        rows = rng.permutation(len(base))[:m] if m <= len(base) else \
            rng.integers(0, len(base), m)
        out = np.empty((m, base.shape[1]), np.float32)
        for start in range(0, m, 100_000):
            r = rows[start:start + 100_000]
            noise = rng.standard_normal((len(r), base.shape[1]), dtype=np.float32) @ axes.T
            out[start:start + len(r)] = base[r] + alpha * noise
        return vectors.normalize(out)

    if not held_out:
        return draw(x, n), draw(q, n_queries)
    tune_q, measure_q = split_queries(q)
    return draw(x, n), draw(measure_q, n_queries), draw(tune_q, held_out)


def split_queries(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(every third query, the others): queries to tune on and queries to measure."""
    every = np.arange(len(q)) % 3 == 0
    return q[every], q[~every]


def add_and_save(index, x: np.ndarray, path: str, t0: float) -> dict:
    """Add ``x`` to a faiss index in blocks of 100,000 rows (a memory map is read once),
    write it to ``path``; the build time since ``t0``."""
    import faiss

    for start in range(0, len(x), 100_000):
        index.add(np.ascontiguousarray(x[start:start + 100_000]))
    build = time.perf_counter() - t0
    faiss.write_index(index, path)
    return {"build_s": round(build, 2)}


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



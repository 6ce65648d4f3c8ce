"""The peers of benchmarks/search.py, built as their users build them, one process each.

* faiss HNSW with 8-bit scalar codes (``IndexHNSWSQ``, M = 32, efConstruction 200) under
  faiss's own full-vector rerank (``IndexRefineFlat``, ``k_factor`` candidates per hit);
* the binary-scan + rescore recipe of sentence-transformers' quantization guide:
  ``quantize_embeddings(x, "ubinary")`` in a faiss ``IndexBinaryFlat`` (Hamming scan),
  the candidates (``rescore_multiplier`` × k) rescored with the float query against
  their int8 codes (``quantize_embeddings(x, "int8")``) read from disk, as the guide's
  41M-Wikipedia demo does (the searcher binarises queries with ``np.packbits(v > 0)``,
  what ``quantize_embeddings(v, "ubinary")`` does, so as not to load torch);
* Qdrant Edge with binary quantization (kept in RAM) over its HNSW of the full vectors
  at Qdrant's defaults (m 16, ef_construct 100), searched with rescore and oversampling.

Each is swept over its settings from cheap to dear; search.py reports them all and picks
the first reaching the target recall.
"""

from __future__ import annotations

import time

import numpy as np

from data import K, add_and_save

# (efSearch, k_factor) cheap to dear
SQ8_SETTINGS = ((32, 2), (64, 2), (64, 4), (128, 4), (256, 4), (256, 8))
BINARY_MULTIPLIERS = (2, 4, 10, 20, 50)
# (hnsw_ef, oversampling) cheap to dear
QDRANT_BQ_SETTINGS = ((64, 2.0), (128, 4.0), (256, 8.0), (512, 16.0), (1024, 32.0))


def build_sq8(task: dict) -> dict:
    import faiss

    x = np.load(task["x"], mmap_mode="r")
    t0 = time.perf_counter()
    base = faiss.IndexHNSWSQ(x.shape[1], faiss.ScalarQuantizer.QT_8bit, 32,
                             faiss.METRIC_INNER_PRODUCT)
    base.hnsw.efConstruction = 200
    base.train(np.ascontiguousarray(x[:min(len(x), 100_000)]))
    index = faiss.IndexRefineFlat(base)
    return add_and_save(index, x, task["index"], t0)


def build_binary(task: dict) -> dict:
    import faiss
    from sentence_transformers.quantization import quantize_embeddings

    x = np.load(task["x"], mmap_mode="r")
    t0 = time.perf_counter()
    index = faiss.IndexBinaryFlat(x.shape[1])
    # int8 ranges calibrated on a sample, as the guide does with calibration_embeddings
    calib = np.ascontiguousarray(x[:min(len(x), 100_000)])
    codes = np.lib.format.open_memmap(task["int8"], mode="w+", dtype=np.int8, shape=x.shape)
    for start in range(0, len(x), 100_000):
        chunk = np.ascontiguousarray(x[start:start + 100_000])
        index.add(quantize_embeddings(chunk, precision="ubinary"))
        codes[start:start + len(chunk)] = quantize_embeddings(
            chunk, precision="int8", calibration_embeddings=calib)
    codes.flush()
    build = time.perf_counter() - t0
    faiss.write_index_binary(index, task["index"])
    return {"build_s": round(build, 2)}


def build_qdrant_bq(task: dict) -> dict:
    import uuid

    import qdrant_edge as qe

    x = np.load(task["x"], mmap_mode="r")
    shard = qe.EdgeShard.create(task["store"], qe.EdgeConfig(vectors=qe.EdgeVectorParams(
        size=x.shape[1], distance=qe.Distance.Cosine,
        quantization_config=qe.BinaryQuantizationConfig(always_ram=True))))
    t0 = time.perf_counter()
    for start in range(0, len(x), 1_000):
        shard.update(qe.UpdateOperation.upsert_points([
            qe.Point(str(uuid.UUID(int=i)), x[i], {"id": i})
            for i in range(start, min(len(x), start + 1_000))]))
    ingest_s = time.perf_counter() - t0
    shard.optimize()
    shard.flush()
    build = time.perf_counter() - t0
    shard.close()
    return {"ingest_vectors_per_s": round(len(x) / ingest_s), "build_s": round(build, 1)}


def searcher(task: dict):
    """(single, batch) for a query process of one peer at one setting."""
    kind = task["kind"]
    if kind == "sq8":
        import faiss

        index = faiss.read_index(task["index"])
        ef, factor = task["setting"]
        faiss.downcast_index(index.base_index).hnsw.efSearch = ef
        index.k_factor = factor

        def batch(v):
            return index.search(v, K)[1]

        return (lambda v: batch(v)[0]), batch
    if kind == "binary":
        import faiss

        index = faiss.read_index_binary(task["index"])
        codes = np.load(task["int8"], mmap_mode="r")
        keep = K * task["setting"]

        def batch(v):
            # quantize_embeddings(v, "ubinary") is np.packbits(v > 0) row by row: done
            # here without importing sentence-transformers (and torch) into the searcher
            _, cand = index.search(np.packbits(v > 0, axis=-1), keep)
            out = []
            for row, ids in zip(v, cand):
                scores = codes[np.sort(ids)].astype(np.float32) @ row
                out.append(np.sort(ids)[np.argsort(-scores)[:K]])
            return out

        return (lambda v: batch(v)[0]), batch
    if kind == "qdrant-bq":
        import qdrant_edge as qe

        from engines import shard_searcher

        ef, over = task["setting"]
        return shard_searcher(task["store"], qe.SearchParams(
            hnsw_ef=ef, quantization=qe.QuantizationSearchParams(
                ignore=False, rescore=True, oversampling=over)))
    raise ValueError(kind)

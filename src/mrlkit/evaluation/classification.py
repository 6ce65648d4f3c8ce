"""Classification and clustering retention (the seeds' "quality retention by task").

Per dimension: logistic-regression accuracy, trained on the train split and scored on
the test split; and k-means V-measure on the test split (k = number of labels).

Example::

    >>> evaluate_classification("banking77", "all-MiniLM-L6-v2")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence


from .. import vectors
from ..cache import cached_embed
from ..registry import get_spec
from .datasets import load_labelled


def evaluate_classification(folder: str, model: str, *, dims: Sequence[int] | None = None,
                            text_col: str = "text", label_col: str | None = None,
                            seed: int = 0) -> dict[str, Any]:
    """Accuracy and V-measure per dimension, with retention against native."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, v_measure_score

    spec = get_spec(model)
    data = load_labelled(folder, text_col, label_col)
    dims = sorted(set(dims or spec.default_dims()) | {spec.native_dim})
    train = cached_embed(spec.name, data.train_texts, kind="document")
    test = cached_embed(spec.name, data.test_texts, kind="document")
    n_labels = len(set(data.test_labels))
    rows = []
    for dim in dims:
        xtr, xte = vectors.truncate(train, dim), vectors.truncate(test, dim)
        clf = LogisticRegression(max_iter=2000, C=10.0)
        clf.fit(xtr, data.train_labels)
        acc = accuracy_score(data.test_labels, clf.predict(xte))
        km = KMeans(n_clusters=n_labels, n_init=3, random_state=seed).fit(xte)
        vm = v_measure_score(data.test_labels, km.labels_)
        rows.append({"dim": dim, "accuracy": round(float(acc), 4),
                     "v_measure": round(float(vm), 4),
                     "bytes_per_vector": vectors.bytes_per_vector(dim, "float32"),
                     "non_mrl_truncation": not spec.supports_mrl and dim < spec.native_dim})
    full = rows[-1]
    for r in rows:
        r["accuracy_retention"] = round(r["accuracy"] / full["accuracy"], 4)
        r["v_measure_retention"] = round(r["v_measure"] / full["v_measure"], 4)
    return {"model": spec.name, "dataset": str(folder).rstrip("/").split("/")[-1],
            "train": len(data.train_texts), "test": len(data.test_texts),
            "labels": n_labels, "results": rows}

"""How well a funnel does on *your* set, with no labels: recall@k of the funnel against
exact search, with the set's own documents as queries (a sample), and the latency of
each. This is what ``mrlkit check SET --funnel F`` prints, and what ``advise`` can use
when a corpus has no qrels.

Example::

    >>> funnel_recall(store, "notes", Funnel.parse("64:binary:200,384"))  # doctest: +SKIP
    FunnelCheck(funnel='64:binary:200,384', k=10, sample=200, recall=0.985, ...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..funnel import Funnel
from ..stores import SELF_SCORE as SELF, Store, recall_interval
from ..stores.tune import p50


@dataclass(frozen=True)
class FunnelCheck:
    """recall@k of ``funnel`` against exact search, over ``sample`` of the set's own
    documents as queries, and p50 single-query latency (ms) of both."""

    set: str
    funnel: str
    k: int
    sample: int
    recall: float
    p50_ms: float
    exact_p50_ms: float
    low: float = 0.0    # 95% confidence interval of the mean recall over the sample
    high: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def funnel_recall(store: Store[Any], name: str, funnel: Funnel, *, sample: int = 200,
                  k: int = 10, seed: int = 0) -> FunnelCheck:
    """Measure ``funnel`` on set ``name`` with an even sample of its own documents as
    queries, each held out of its own hits (``seed`` is kept for callers; the sample is
    an even spread)."""
    if sample < 1:
        raise InvalidInputError(f"--sample must be at least 1, not {sample}")
    info = store.get_set(name)
    funnel.check(info.stored_dim, k)
    if info.count == 0:
        raise InvalidInputError(f"set {name!r} is empty: nothing to check the funnel on")
    # the stored vectors as queries (an adapted set's undone: a search transforms its
    # queries, and transforming a stored vector twice measured 0.668 where searches
    # found 0.982), each excluded from its own hits as a held-out query would be
    q = store.probes(name, sample)
    exact = Funnel.exact(info.stored_dim)
    truth = _held_out(store.search(name, q, k=k + 1, funnel=exact).hits, k)
    got = _held_out(store.search(name, q, k=k + 1, funnel=funnel).hits, k)
    recalls = np.array([len(set(a) & set(b)) / max(1, len(b)) for a, b in zip(got, truth)])
    recall, low, high = recall_interval(recalls)

    def timed(f: Funnel) -> float:
        return p50(lambda row: store.search(name, row, k=k, funnel=f), q)

    return FunnelCheck(name, str(funnel), k, len(q), recall, timed(funnel), timed(exact),
                       low, high)


def _held_out(hits: list[list[Any]], k: int) -> list[list[str]]:
    """Each probe's hits without the probe itself (a hit scoring 1 against it)."""
    return [[h.id for h in hh if h.score < SELF][:k] for hh in hits]


@dataclass(frozen=True)
class SetAdvice:
    """The cheapest funnel (bytes per vector its first stage scans, then latency) whose
    recall@k against exact search on the set's own documents meets ``target``."""

    set: str
    target: float
    choice: FunnelCheck | None
    table: list[FunnelCheck]

    def as_dict(self) -> dict[str, Any]:
        return {"set": self.set, "target": self.target,
                "choice": self.choice.as_dict() if self.choice else None,
                "table": [c.as_dict() for c in self.table]}


def candidate_funnels(stored_dim: int) -> list[str]:
    """Funnels worth trying on a set: binary codes of the whole vector or a half prefix,
    and float or int8 prefixes for models whose prefixes carry meaning."""
    d = stored_dim
    out = [f"{d}:binary:200,{d}", f"{d}:binary:500,{d}", f"{d // 2}:binary:500,{d}",
           f"{d // 4}:int8:200,{d}", f"{d // 4}:float32:200,{d}", f"{d // 6}:float32:500,{d}"]
    return [f for f in dict.fromkeys(out) if int(f.split(":")[0]) >= 8]


def advise_set(store: Store[Any], name: str, *, target: float = 0.95, sample: int = 200,
               k: int = 10) -> SetAdvice:
    """Label-free advice: try :func:`candidate_funnels` on the set's own documents."""
    from .. import vectors

    if not 0 < target <= 1:
        raise InvalidInputError(f"the target is a recall such as 0.95, not {target}")
    dim = store.get_set(name).stored_dim
    # only funnels the set takes: no prefix of a model not Matryoshka-trained (unless the
    # set allows it), no prefix a Matryoshka model was not trained for
    tried = [f for f in candidate_funnels(dim) if store.allows(name, Funnel.parse(f))]
    table = [funnel_recall(store, name, Funnel.parse(f), sample=sample, k=k) for f in tried]

    def cost(c: FunnelCheck) -> tuple[int, float]:
        first = Funnel.parse(c.funnel).stages[0]
        return vectors.bytes_per_vector(first.dim, first.precision), c.p50_ms

    table.sort(key=cost)
    ok = [c for c in table if c.recall >= target]
    return SetAdvice(name, target, ok[0] if ok else None, table)

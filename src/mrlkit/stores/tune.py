"""Measure, on a set's own data, the cheapest search plan that keeps a recall target.

A recall target (default recall@10 ≥ 0.95 against exact full-vector search) is the
contract of a search. :func:`tune` measures candidate funnels — a float32 prefix (on the
engine's own index past ``native_from`` rows), a binary scan of the whole vector, a
full-vector index — from cheap to dear on probe queries: the user's own queries when
given (real queries beat documents), else an even sample of the set's stored vectors,
each searched with itself excluded (a hit scoring 1 against its probe is the probe).
The truth is an exact scan. For each kind of first stage the candidates kept grow until
the target is met; the cheapest of those winners by measured p50 latency is the plan,
saved with the set: its measured recall and 95% confidence interval, p50, the sample and
everything tried, so that a search asking another target picks from the same
measurements.

Example::

    >>> Tuned.from_json(Tuned("384", 1.0, 1.0, 1.0, 1.0, "generic", 0.95, 10, 50,
    ...                       "documents", 100, [], "exact").to_json()).funnel
    '384'
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache, partial
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..funnel import MAX_KEEP, Funnel
from ..registry import ModelSpec, get_spec
from .records import SetRecord

if TYPE_CHECKING:
    from .core import Store

TARGET = 0.95        # recall@k against exact full-vector search
PROBES = 200         # probe queries sampled from the set when none are given
SELF = 1 - 1e-5      # a hit this close to its probe is the probe itself
RESERVE = 0.99       # each kind of first stage is measured on until it keeps this too, so
                     # that a search asking 0.99 picks from measurements, not a guess
TIMED = 50           # probes timed one at a time for the p50: up to this many,
TIMED_S = 1.0        # or fewer once this many seconds have gone (at least TIMED_MIN):
TIMED_MIN = 5        # a set whose searches are slow is not timed for minutes
_KEEPS = (2, 5, 10, 20, 50, 100)  # × k candidates a first stage keeps, cheap to dear


@dataclass(frozen=True)
class Tuned:
    """A measured plan, as the set keeps it."""

    funnel: str
    recall: float
    low: float            # 95% confidence interval of the mean recall over probes
    high: float
    p50_ms: float
    path: str             # native or generic, as it ran when measured
    target: float
    k: int
    probes: int
    source: str           # "queries" (the user's) or "documents" (sampled, self excluded)
    rows: int             # the set's rows when measured
    tried: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Tuned:
        return cls(**json.loads(text))

    def stale(self, rows: int) -> bool:
        """Tuned again once the set has doubled (or halved) since."""
        return rows > 2 * max(1, self.rows) or 2 * rows < self.rows

    def best(self, target: float) -> dict[str, Any] | None:
        """The cheapest measured candidate meeting ``target`` (None: none did)."""
        ok = [t for t in self.tried if t["recall"] >= target]
        return min(ok, key=lambda t: t["p50_ms"]) if ok else None

    def describe(self) -> str:
        return (f"tuned: recall@{self.k} {self.recall:.3f} (95% CI {self.low:.3f}–"
                f"{self.high:.3f}) on {self.probes} probe {self.source}, p50 "
                f"{self.p50_ms:.2f} ms, at {self.rows:,} rows")


def parsed(plan: str | None) -> dict[str, Any] | None:
    """A set's plan as kept, None when it has none or it cannot be read (a damaged
    record, or one written by a version with other fields): the set is then untuned,
    never unsearchable."""
    if plan is None:
        return None
    try:
        got = json.loads(plan)
    except ValueError:
        return None
    return got if isinstance(got, dict) else None


@lru_cache(maxsize=64)
def measured(plan: str | None) -> Tuned | None:
    """The set's measured plan, None when it has none (untuned, only a target, or a
    plan that cannot be read). Parsed once per text: every search reads it."""
    got = parsed(plan)
    if got is None or "funnel" not in got:
        return None
    try:
        return Tuned(**got)
    except TypeError:
        return None


def target_of(plan: str | None) -> float:
    """The set's recall target: its own (``sets create --recall``, a tune), else 0.95."""
    got = (parsed(plan) or {}).get("target", TARGET)
    return float(got) if isinstance(got, (int, float)) and 0 < got <= 1 else TARGET


def target_only(plan: str | None) -> str | None:
    """What a set keeps of its plan when its vectors are rebuilt: the target alone."""
    return None if plan is None else json.dumps({"target": target_of(plan)})


def check_target(recall: float) -> float:
    if not 0 < recall <= 1:
        raise InvalidInputError(f"recall must be in (0, 1], e.g. 0.95, not {recall}")
    return float(recall)


def candidates(stored_dim: int, prefixes: Sequence[int], n: int, k: int,
               native: bool) -> list[list[Funnel]]:
    """Families of funnels (one kind of first stage each), cheap to dear within each."""
    full = stored_dim
    keeps = sorted({min(n, m * k) for m in _KEEPS if m * k < n} | ({n} if n <= 100 * k
                                                                   else set()))
    families: list[list[Funnel]] = []
    for p in prefixes:
        families.append([Funnel.parse(f"{p}:float32:{kk},{full}") for kk in keeps])
    families.append([Funnel.parse(f"{full}:binary:{kk},{full}") for kk in keeps])
    if native:  # the engine's index of the whole vector
        families.append([Funnel.parse(f"{full}:float32:{kk},{full}") for kk in keeps])
    return [f for f in families if f]


def prefixes_of(spec: ModelSpec, stored_dim: int, adapted: bool) -> list[int]:
    """The prefixes worth a first stage: trained ones (or any, for an adapted set) of
    64, 128 and 256 dims, shorter than the stored vector."""
    if not (spec.supports_mrl or adapted):
        return []
    out = []
    for d in (64, 128, 256):
        if d >= stored_dim:
            continue
        if adapted or spec.mrl_dims is None or d in spec.mrl_dims:
            out.append(d)
    return out


def recall_interval(per_query: np.ndarray) -> tuple[float, float, float]:
    """Mean recall over probe queries and its 95% confidence interval (normal).

    Example::

        >>> recall_interval(np.array([1.0, 1.0, 0.8, 1.0]))
        (0.95, 0.852, 1.0)
    """
    mean = float(per_query.mean())
    half = (1.96 * float(per_query.std(ddof=1)) / np.sqrt(len(per_query))
            if len(per_query) > 1 else 0.0)
    return (round(mean, 4), round(float(max(0.0, mean - half)), 4),
            round(float(min(1.0, mean + half)), 4))


def _recalls(found: list[list[str]], truth: list[list[str]], k: int) -> np.ndarray:
    return np.array([len(set(f[:k]) & set(t[:k])) / max(1, min(k, len(t)))
                     for f, t in zip(found, truth)], np.float64)


def tune(store: Store[Any], name: str, *, recall: float | None = None, k: int = 10,
         queries: np.ndarray | None = None, probes: int = PROBES,
         progress: Callable[[str], None] | None = None) -> Tuned:
    """Measure the plans for set ``name`` and save the cheapest that keeps ``recall``
    (default: the set's own target, else 0.95)."""
    rec = store.record(name)
    recall = check_target(target_of(rec.plan) if recall is None else recall)
    n = store.engine.rows(rec)
    if n == 0:
        raise InvalidInputError(f"set {name!r} is empty: add documents, then tune it")
    if queries is not None:
        q, source, skip = np.asarray(queries, np.float32), "queries", 0
        if q.ndim != 2 or len(q) == 0:
            raise InvalidInputError("give at least one query vector to tune on")
    else:
        q, source, skip = store.probes(name, probes), "documents", 1
    full = Funnel.exact(rec.stored_dim)

    def run(funnel: Funnel, qq: np.ndarray) -> tuple[list[list[str]], str]:
        # a set smaller than k + 1 gives all it has (and every plan keeps it all)
        res = store.search(name, qq, k=min(k + skip, n), funnel=funnel)
        hits = [[h.id for h in hh if not (skip and h.score >= SELF)][:k] for hh in res.hits]
        return hits, res.path

    truth, _ = run(full, q)
    spec = get_spec(rec.model)
    native = n >= store.native_from >= 0
    tried: list[dict[str, Any]] = []
    per_query: dict[str, np.ndarray] = {str(full): np.ones(len(q))}  # each probe's recall
    skipped: list[str] = []
    reached: int | None = None  # the shortest prefix whose family kept RESERVE
    for family in candidates(rec.stored_dim, prefixes_of(spec, rec.stored_dim,
                                                         rec.transform is not None),
                             n, k, native):
        first = family[0].stages[0]
        # a longer float first stage than one that kept RESERVE costs more per candidate
        # (and its index more to build): not tried. Binary scans are still tried.
        if reached is not None and first.precision == "float32" and first.dim > reached:
            skipped.append(f"{first.dim}-d float32")
            continue
        for funnel in family:
            found, path = run(funnel, q)
            r = per_query[str(funnel)] = _recalls(found, truth, k)
            got = round(float(r.mean()), 4)
            row: dict[str, Any] = {"funnel": str(funnel), "recall": got,
                                   "p50_ms": p50(partial(run, funnel), q), "path": path}
            tried.append(row)
            if progress:
                progress(f"{funnel}: recall@{k} {got:.3f}, p50 {row['p50_ms']} ms")
            if got >= max(recall, RESERVE):
                if first.precision == "float32" and first.dim < rec.stored_dim:
                    reached = first.dim  # prefixes come shortest first: set once
                break
    exact_row: dict[str, Any] = {"funnel": str(full), "recall": 1.0,
                                 "p50_ms": p50(partial(run, full), q),
                                 "path": "generic"}
    tried.append(exact_row)
    ok = [t for t in tried if t["recall"] >= recall]
    best = min(ok, key=lambda t: t["p50_ms"])
    mean, low, high = recall_interval(per_query[best["funnel"]])
    why = (f"the cheapest of {len(tried)} plans measured to keep recall@{k} ≥ {recall}: "
           f"{best['p50_ms']} ms p50" + ("" if best is exact_row else
                                         f" against {exact_row['p50_ms']} ms exact")
           + (f"; not tried: {', '.join(skipped)} first stages (the {reached}-d prefix "
              f"kept {max(recall, RESERVE)} already, more cheaply per candidate)"
              if skipped else ""))
    tuned = Tuned(best["funnel"], mean, low, high, best["p50_ms"], best["path"], recall, k,
                  len(q), source, n, tried, why)
    store.engine.save_plan(name, tuned.to_json())
    return tuned


def needs_tune(plan: str | None, n: int, native_from: int) -> bool:
    """A set of ``n`` rows past ``native_from`` with no plan, or one it has outgrown."""
    if native_from < 0 or n < native_from:
        return False
    tuned = measured(plan)
    return tuned is None or tuned.stale(n)


def chosen(rec: SetRecord, n: int, k: int, recall: float | None,
           rule: tuple[Funnel, str]) -> tuple[Funnel, str]:
    """The set's tuned plan while it is fresh (for ``recall``: the cheapest measured
    candidate that kept it), else ``rule`` (the planner's default), and why."""
    tuned = measured(rec.plan)
    if tuned is None:
        return rule
    if tuned.stale(n):
        return rule[0], (f"{rule[1]} (the plan tuned at {tuned.rows:,} rows is stale at "
                         f"{n:,}: run `mrlkit sets tune {rec.name}`)")
    target = tuned.target if recall is None else recall
    best = tuned.best(target)
    if best is None:
        return Funnel.exact(rec.stored_dim), (
            f"an exact scan: no plan measured kept recall@{tuned.k} ≥ {target}")
    grown = n / max(1, tuned.rows)  # a damaged plan's 0 rows must not fail the search
    funnel = scaled(Funnel.parse(best["funnel"]), k / max(1, tuned.k), grown)
    return funnel, (f"{tuned.describe()}; measured recall {best['recall']:.3f} for the "
                    f"target {target}" + (f"; candidates ×{grown:.2f} for the rows added "
                                          f"since" if grown > 1 else ""))


def scaled(funnel: Funnel, hits: float, rows: float) -> Funnel:
    """``funnel``'s candidates grown for ``hits`` × the hits it was tuned for and ``rows``
    × the rows it was measured at (never shrunk). Rows: a short first stage ranks a true
    neighbour below the wrong rows whose prefix scores beat it, and those grow with the
    set, so keeping the measured recall takes candidates in proportion (measured: a plan
    tuned at 200,000 rows kept 50 candidates and lost 0.02 of recall@10 at 320,000).

    Example::

        >>> str(scaled(Funnel.parse("64:float32:50,384"), 1, 1.5))
        '64:float32:75,384:float32'
    """
    grow = max(1.0, hits) * max(1.0, rows)
    if grow == 1.0:
        return funnel
    return Funnel(tuple(replace(s, keep=None if s.keep is None else
                                min(MAX_KEEP, math.ceil(round(s.keep * grow, 6))))
                        for s in funnel.stages))


def p50(search: Callable[[np.ndarray], object], q: np.ndarray) -> float:
    """The median latency (ms) of one-query searches: ``TIMED`` probes, or as many as
    ``TIMED_S`` seconds allow (never fewer than ``TIMED_MIN``)."""
    times: list[float] = []
    stop = time.perf_counter() + TIMED_S
    for row in q[:TIMED]:
        t0 = time.perf_counter()
        search(row[None])
        times.append((t1 := time.perf_counter()) - t0)
        if len(times) >= TIMED_MIN and t1 > stop:
            break
    return round(float(np.median(times)) * 1000, 3)

"""The one planner: how a search runs, decided once for every engine.

Each engine declares what it can do as data (:class:`Capabilities`): the first stages
its own index runs and at which precisions, whether it scores a set exactly in place,
what it runs after the first stage in the same request, the filter values it matches
exactly, the metadata it can keep, and the row count from which its own first stage
pays. From that, the set and the request, :func:`plan` decides — here and nowhere else —
whether the engine runs the first stages itself (``native``) or mrlkit runs the whole
funnel over the stored vectors (``generic``), and why. :func:`choose_funnel` is the
default funnel a search without one runs, on the same threshold.

The threshold is one knob: ``native_from`` on :func:`~mrlkit.stores.open_store`, or the
environment variable ``MRLKIT_NATIVE_FROM`` (a row count, or ``never`` for the generic
path everywhere); each engine's own value is its default.

Example::

    >>> from mrlkit.funnel import Funnel
    >>> caps = Capabilities(first_stages=("float32",), native_from=20_000)
    >>> p = plan(caps, 50_000, Funnel.parse("64:float32:50,384"), built={(64, "float32")})
    >>> p.path, p.stages, p.index
    ('native', 1, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from collections.abc import Collection, Mapping

from ..errors import InvalidInputError
from ..funnel import Adaptive, Funnel, Stage

NATIVE_FROM = 20_000  # rows: below it an exact scan is as fast as the local prefix graph
NEVER = -1            # ``native_from`` that sends every search down the generic path
ENV = "MRLKIT_NATIVE_FROM"
Later = Literal["none", "sql", "rerank"]


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, as data; the planner reads nothing else of it.

    ``first_stages``: precisions of a first stage its own index runs (on a stage it has
    built; with ``source_index``, any prefix: the index is built on first use and walked
    by mrlkit's executor through the engine's scan). ``scans``: it scores a whole set
    exactly in place (SQL), which beats reading every vector out. ``later``: what it
    runs after the first stage in the same request — ``none``, ``sql`` (every stage up to
    an int8 one), or ``rerank`` (exactly one full-vector float32 rerank, and then the
    whole funnel or nothing). ``filter_types``: metadata value types its first stage
    matches exactly as mrlkit does (true never matches 1); other filters run generic.
    ``flat_metadata``: it keeps only str, int, float and bool values. ``builds``: the
    first-stage precisions ``Store.index`` can build ahead. ``native_from``: rows from
    which its own first stage pays."""

    first_stages: tuple[str, ...] = ()
    scans: bool = False
    later: Later = "none"
    filter_types: tuple[type, ...] = ()
    flat_metadata: bool = False
    builds: tuple[str, ...] = ()
    source_index: bool = False
    native_from: int = NATIVE_FROM


@dataclass(frozen=True)
class Plan:
    """How one search runs: the engine runs the first ``stages`` stages itself (on its
    index when ``index``, else by an exact scan in place), mrlkit the rest; ``stages`` 0
    is the generic path. ``why`` says it in a user's words."""

    funnel: Funnel
    stages: int
    index: bool
    why: str

    @property
    def path(self) -> str:
        return "native" if self.stages else "generic"


def threshold(value: int | str | None, default: int) -> int:
    """The threshold in force: ``value`` when given, else ``MRLKIT_NATIVE_FROM``, else the
    engine's ``default``; ``"never"`` (or :data:`NEVER`) turns the native path off.

    Example::

        >>> threshold("never", 20_000) == NEVER, threshold(None, 10_000) > 0
        (True, True)
    """
    raw: int | str | None = value if value is not None else os.environ.get(ENV) or None
    if raw is None:
        return default
    if raw == "never" or raw == NEVER:
        return NEVER
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = -2
    if n < 0 or isinstance(raw, bool):
        where = f"{ENV}={raw!r}" if value is None else f"native_from={raw!r}"
        raise InvalidInputError(f"{where}: expected a row count ≥ 0 or 'never'")
    return n


def plan(caps: Capabilities, n: int, funnel: Funnel, *, stored_dim: int = 0,
         built: Collection[tuple[int, str]] = (), filters: Mapping[str, Any] | None = None,
         adaptive: Adaptive | None = None, threshold: int | None = None) -> Plan:
    """Decide how ``funnel`` runs on a set of ``n`` rows whose engine declares ``caps``
    and has built the first stages ``built`` ((dim, precision) pairs); ``stored_dim`` is
    the set's, which an in-engine rerank reads."""
    limit = caps.native_from if threshold is None else threshold
    first, stages = funnel.stages[0], funnel.stages

    def generic(why: str) -> Plan:
        return Plan(funnel, 0, False, f"in mrlkit over the stored vectors: {why}")

    if limit == NEVER:
        return generic("the native path is off (native_from=never)")
    big = n >= limit
    indexed = caps.source_index or (first.dim, first.precision) in built
    if first.precision not in caps.first_stages or not (indexed or caps.scans):
        return generic(f"the engine has no {first} first stage of its own")
    if filters and any(type(v) not in caps.filter_types for v in filters.values()):
        return generic("the engine does not match these filter values exactly")
    # a one-stage funnel is exact search at its dimension and precision: an index (whose
    # neighbours, and on local whose scores, are estimates) serves only a first stage
    # that a later stage reranks
    index = big and indexed and len(stages) > 1
    if not index and not caps.scans:
        return generic("a one-stage funnel is an exact search" if len(stages) == 1 else
                       f"{n:,} rows are below the {limit:,} where the engine's own first "
                       "stage pays")
    done = 1
    if caps.later == "sql" and adaptive is None:
        while done < len(stages) and stages[done].precision != "int8":
            done += 1
    elif caps.later == "rerank":
        if adaptive is not None or len(stages) > 2 or (
                len(stages) == 2 and (stages[1].precision, stages[1].dim) != (
                    "float32", stored_dim)):
            return generic("the engine runs a first stage and one full-vector rerank only")
        done = len(stages)
    how = (f"on the engine's own index of its {first} first stage" if index
           else "as an exact scan inside the engine")
    return Plan(funnel, done, index, how)


def default_funnel(n: int, stored_dim: int, supports_mrl: bool, k: int = 10, *,
                   threshold: int = NATIVE_FROM) -> Funnel:
    """A sensible funnel for a set of ``n`` rows (see :func:`choose_funnel`).

    Example::

        >>> str(default_funnel(1_000_000, 768, True))
        '64:float32:50,768:float32'
    """
    return choose_funnel(n, stored_dim, supports_mrl, k, threshold=threshold)[0]


def first_stage(stored_dim: int) -> int:
    """The prefix a large set's first stage reads: 64 dims, or a twelfth of longer
    vectors (what ``create_set`` builds ahead)."""
    return max(64, stored_dim // 12)


@lru_cache(maxsize=256)
def choose_funnel(n: int, stored_dim: int, supports_mrl: bool, k: int = 10, *,
                  threshold: int = NATIVE_FROM) -> tuple[Funnel, str]:
    """The default funnel for a set of ``n`` rows, and why (``sets info`` shows both).

    The choice follows benchmarks/search.py (docs/benchmarks.md): for a Matryoshka model
    from ``threshold`` rows (the engine's ``native_from``), an HNSW graph over a short
    prefix proposes 50 candidates (5·k) and the full vector reranks them. Smaller sets
    are scanned exactly. A model that is not Matryoshka-trained loses too much in a
    short prefix, so its first stage is an HNSW graph on the full vector. A set's tuned
    plan (:mod:`.tune`) replaces this rule while it is fresh.

    Example::

        >>> choose_funnel(1000, 384, True)[1]
        'an exact scan: 1,000 rows are below the 20,000 where a prefix graph pays'
    """
    first = first_stage(stored_dim)
    if threshold == NEVER or n < threshold:
        why = ("the native path is off (native_from=never)" if threshold == NEVER
               else f"{n:,} rows are below the {threshold:,} where a prefix graph pays")
        if not supports_mrl:
            why += "; the model is not Matryoshka-trained, so no prefix stage either"
        return Funnel.exact(stored_dim), f"an exact scan: {why}"
    keep = max(50, 5 * k)
    if not supports_mrl or stored_dim <= first:
        why = ("the model is not Matryoshka-trained, so short prefixes lose recall"
               if not supports_mrl else f"{stored_dim} dimensions are short already")
        return (Funnel((Stage(stored_dim, "float32", keep), Stage(stored_dim, "float32"))),
                f"an HNSW graph on the full {stored_dim}-d vectors proposes {keep} "
                f"candidates, their exact scores rank them ({why}): approximate, "
                f"for {n:,} rows")
    return (Funnel((Stage(first, "float32", keep), Stage(stored_dim, "float32"))),
            f"an HNSW graph on the {first}-d prefix proposes {keep} candidates, the full "
            f"{stored_dim}-d vectors rerank them: approximate, for {n:,} rows the fastest "
            "way to full-vector recall measured (docs/benchmarks.md)")

"""Every rule an embedding set obeys, written once for all engines.

Set names, ``truncate_dim`` (None = native, never 0), write batches, query preparation,
filters, the truncate prelude, int8 calibration. Engines never re-check these:
the store core (:mod:`mrlkit.stores.core`) applies them before an engine does any I/O.

Example::

    >>> check_name("papers-2024")
    'papers-2024'
"""

from __future__ import annotations

import math
import re
import json
import unicodedata
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np

from .rows import even_rows
from .. import vectors
from ..errors import InvalidInputError, ReembedRequiredError
from ..registry import ModelSpec, validate_dim
from ..text import check_text
from ..vectors import Int8Calibration
from .records import Batch, SetRecord

STORAGE_PRECISIONS = ("float32", "float16")
MAX_NAME = 128
# printable, no '/' or '\\', not '.' or '..', no leading or trailing whitespace
_NAME = re.compile(r"^(?!\.{1,2}$)(?!\s)[^/\\\x00-\x1f\x7f]{1,128}(?<!\s)$")
CALIBRATION_SAMPLE = 20_000  # rows an int8 calibration is fitted on, at most
FILTER_TYPES = (str, bool, int, float)
_MAX_INT = 2**63 - 1
# control, format (bidi overrides, zero-width), surrogate, private-use, unassigned and
# line/paragraph separators: a name printed in a terminal or a log shows what it is
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def check_name(name: object) -> str:
    """A set name, or one error saying what a name may be.

    Example::

        >>> check_name("notes") == "notes"
        True
    """
    if not isinstance(name, str) or not _NAME.match(name) or (
            not name.isascii() and any(unicodedata.category(c) in _HIDDEN for c in name)):
        raise InvalidInputError(
            f"bad set name {ascii(name)}: use 1 to {MAX_NAME} printable characters, "
            "without '/', '\\\\', control or invisible formatting characters (such as "
            "right-to-left overrides), leading or trailing spaces, and not '.' or '..'")
    return name


def check_storage(storage: str) -> str:
    if storage not in STORAGE_PRECISIONS:
        raise InvalidInputError(f"storage must be float32 or float16, not {storage!r}")
    return storage


def stored_truncate(spec: ModelSpec, dim: int) -> int | None:
    """What a set records as its ``truncate_dim``: None when it keeps the native length."""
    return None if dim == spec.native_dim else dim


# --- writes -----------------------------------------------------------------------
def check_ids(ids: Sequence[object]) -> list[str]:
    """Document ids as strings: str, or int (converted); anything else is refused.

    Example::

        >>> check_ids(["a", 7])
        ['a', '7']
    """
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (str, int, np.integer)):
            raise InvalidInputError(f"document id {i!r} is {type(i).__name__}: ids must be "
                                    "strings (or integers, converted)")
        s = str(i)
        if not s:
            raise InvalidInputError("document id '': ids must be non-empty strings")
        out.append(check_text(s, f"document id {ascii(s)}"))
    return out


def check_metadata(doc_id: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata every backend can store and filter: JSON with finite numbers, no NUL."""
    def ok(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(f"document {doc_id!r}: metadata {where} is {value}; "
                                    "only finite numbers can be stored")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
            raise InvalidInputError(f"document {doc_id!r}: metadata {where} does not fit "
                                    "in 64 bits")
        if isinstance(value, str):
            check_text(value, f"document {doc_id!r}: metadata {where}")
        if isinstance(value, Mapping):
            for k, v in value.items():
                key_ok(k, f"{where}.")
                ok(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple)):
            for n, v in enumerate(value):
                ok(v, f"{where}[{n}]")
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise InvalidInputError(f"document {doc_id!r}: metadata {where} is "
                                    f"{type(value).__name__}; use JSON values")

    def key_ok(key: Any, where: str) -> None:
        if not isinstance(key, str):
            raise InvalidInputError(f"document {doc_id!r}: metadata keys must be strings")
        check_text(key, f"document {doc_id!r}: metadata key {where}{ascii(key)}")

    if not isinstance(meta, Mapping):
        raise InvalidInputError(f"document {doc_id!r}: metadata must be a mapping")
    for key, value in meta.items():
        key_ok(key, "")
        ok(value, repr(key))
    return dict(meta)


def check_batch(rec: SetRecord, ids: Sequence[object], embeddings: np.ndarray,
                texts: Sequence[str | None] | None,
                metadata: Sequence[Mapping[str, Any] | None] | None, *,
                upsert: bool = False, flat: str | None = None) -> Batch:
    """Check a write batch before anything is written; return it prepared (transformed
    by the set's transform, unit norm). ``flat`` names an engine that keeps only flat
    metadata (str, int, float and bool values).

    Example::

        >>> rec = SetRecord("s", "m", None, 2, "float32", False, "")
        >>> check_batch(rec, ["a"], np.array([[3.0, 4.0]]), None, None).vectors.tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    name = rec.name
    str_ids = check_ids(ids)
    if not str_ids:
        raise InvalidInputError("empty batch: nothing to add")
    if len(set(str_ids)) != len(str_ids):
        seen: set[str] = set()
        dups: set[str] = set()
        for i in str_ids:
            (dups if i in seen else seen).add(i)
        dup = sorted(dups)
        raise InvalidInputError(f"duplicate ids in one batch: {dup[:5]}")
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            emb = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidInputError("embeddings must be an array of numbers (n × dim)") from None
    if emb.ndim == 1:
        emb = emb[None, :]
    if emb.ndim != 2 or emb.shape[0] != len(str_ids):
        raise InvalidInputError(f"{len(str_ids)} ids but {emb.shape[0] if emb.ndim else 0} "
                                "vectors")
    if emb.shape[1] != rec.stored_dim:
        raise InvalidInputError(f"set {name!r} expects {rec.stored_dim} dimensions, "
                                f"not {emb.shape[1]}")
    finite = np.asarray(np.isfinite(emb).all(axis=1))
    norms = _norms(emb)
    bad = np.flatnonzero(~finite | ~(norms > 0))
    if bad.size:
        row = int(bad[0])
        why = ("holds NaN or infinite values (or values beyond float32)"
               if not finite[row] else "is zero and cannot be normalised")
        raise InvalidInputError(f"document {str_ids[row]!r}: its vector {why}"
                                + (f" ({bad.size} such vectors in the batch)"
                                   if bad.size > 1 else ""))
    text_list: list[str | None] = list(texts) if texts is not None else [None] * len(str_ids)
    if len(text_list) != len(str_ids):
        raise InvalidInputError(f"{len(str_ids)} ids but {len(text_list)} texts")
    for i, t in zip(str_ids, text_list):
        if t is not None and (not isinstance(t, str) or not t.strip()):
            raise InvalidInputError(f"document {i!r} has an empty text")
        if t is not None:
            check_text(t, f"document {i!r}: its text")
    metas = list(metadata) if metadata is not None else [None] * len(str_ids)
    if len(metas) != len(str_ids):
        raise InvalidInputError(f"{len(str_ids)} ids but {len(metas)} metadata entries")
    checked = [check_metadata(i, m) if m else {} for i, m in zip(str_ids, metas)]
    for i, m in zip(str_ids, checked) if flat else ():
        for k, v in m.items():
            if not isinstance(v, (str, int, float, bool)):
                raise InvalidInputError(
                    f"document {i!r}: metadata {k!r} is {type(v).__name__}; {flat} keeps "
                    "only str, int, float and bool values")
    return Batch(name, str_ids, prepare(rec, emb), text_list, checked, upsert)


def _norms(x: np.ndarray) -> np.ndarray:
    """Row norms of float32 ``x``; rows whose squares overflow or underflow float32 are
    measured again in float64, so that they still normalise."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    odd = np.flatnonzero(~np.isfinite(norms) | (norms < 1e-18))
    if odd.size:
        fixed = np.linalg.norm(x[odd].astype(np.float64), axis=1)
        norms = norms.astype(np.float64)
        norms[odd] = fixed
    return np.asarray(norms)


def prepare(rec: SetRecord, x: np.ndarray) -> np.ndarray:
    """Unit-norm float32 rows of ``x`` (rows whose squares overflow or underflow float32
    are normalised in float64), mapped by the set's transform if any."""
    x32 = np.asarray(x, np.float32)
    if len(x32) == 1:  # one query: the common case, on every search's path
        with np.errstate(over="ignore", under="ignore"):
            n = float(np.sqrt(np.dot(x32[0], x32[0])))
        if 1e-18 < n < np.inf:
            unit = x32 / np.float32(n)
            return rec.transform.apply(unit) if rec.transform is not None else unit
    norms = _norms(x32)[:, None]
    if norms.dtype == np.float32:
        unit = np.divide(x32, norms, out=np.zeros_like(x32), where=norms > 0)
    else:
        x64 = x32.astype(np.float64)
        unit = np.divide(x64, norms, out=np.zeros_like(x64), where=norms > 0).astype(
            np.float32)
    if rec.transform is not None:
        return rec.transform.apply(unit)
    return np.asarray(unit, np.float32)


# --- reads ------------------------------------------------------------------------
def prepare_queries(rec: SetRecord, queries: np.ndarray) -> np.ndarray:
    """Query vectors ready for a funnel: float32 at the set's stored dimension,
    transformed like the set's vectors, unit norm."""
    q = vectors.as_matrix(queries, name="queries")
    if not len(q):
        raise InvalidInputError("no query vectors: pass at least one")
    if q.shape[1] != rec.stored_dim:
        raise InvalidInputError(f"set {rec.name!r} expects {rec.stored_dim}-d queries, "
                                f"not {q.shape[1]}")
    zero = np.flatnonzero(~(_norms(q) > 0))
    if zero.size:  # a zero document vector is refused; so is a zero query (no direction)
        raise InvalidInputError(f"query vector {int(zero[0])} is zero: a query needs a "
                                "direction to score by cosine")
    return prepare(rec, q)


def parse_filters(items: Sequence[str]) -> dict[str, object]:
    """``key=value`` strings → a filter dict; values that read as JSON (numbers, true,
    false, null) are typed, others stay strings.

    Example::

        >>> parse_filters(["lang=en", "year=2020"])
        {'lang': 'en', 'year': 2020}
    """
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"bad filter {item!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def check_filters(filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The filter grammar, the same on every backend: ``{key: value}`` matches documents
    whose metadata ``key`` equals ``value``, for str, int, float and bool values; several
    keys must all match. Anything else is refused.

    Example::

        >>> check_filters({"lang": "en", "year": 2020})
        {'lang': 'en', 'year': 2020}
    """
    if not filters:
        return None
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"bad filter key {key!r}: use a metadata field name")
        check_text(key, f"filter key {ascii(key)}")
        if isinstance(value, str):
            check_text(value, f"filter {ascii(key)}")
        if (not isinstance(value, FILTER_TYPES)
                or (isinstance(value, float) and not math.isfinite(value))
                or (isinstance(value, int) and abs(value) > _MAX_INT)):
            raise InvalidInputError(
                f"bad filter {key}={value!r}: a filter value must be a string, a finite "
                "number, or true/false (equality on one metadata field)")
        out[key] = value
    return out


def matches(meta: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Does a document's metadata match ``filters`` (for engines that filter in mrlkit)?
    True and 1 differ, as they do in JSON."""
    for key, want in filters.items():
        if key not in meta:
            return False
        have = meta[key]
        if isinstance(have, bool) != isinstance(want, bool) or have != want:
            return False
    return True


def check_funnel_dims(rec: SetRecord, spec: ModelSpec, dims: Sequence[int]) -> None:
    """A funnel's prefixes obey the rules a set's dimension does: a prefix of a model that
    is not Matryoshka-trained needs the set created with ``allow_non_mrl``, and a
    Matryoshka model's prefix must be one it was trained for — the same message as
    ``embed --dim``. An adapted set's prefixes are meaningful by construction."""
    if rec.transform is not None:
        return
    for dim in dims:
        if dim < rec.stored_dim:
            validate_dim(spec, dim, allow_non_mrl=rec.allow_non_mrl)


# --- truncate -------------------------------------------------------------------
def truncation(rec: SetRecord, spec: ModelSpec, dim: int, allow_non_mrl: bool
               ) -> tuple[int, int | None, bool]:
    """Check a truncation of ``rec`` to ``dim``; return (stored_dim, truncate_dim,
    allow_non_mrl) of the set it becomes."""
    if dim > rec.stored_dim:
        raise ReembedRequiredError(
            f"set {rec.name!r} stores {rec.stored_dim} dimensions; {dim} needs the texts "
            "embedded again (create a new set and index it)")
    if rec.transform is not None:
        # queries would need the transform at full length, then a truncation
        raise InvalidInputError(
            f"set {rec.name!r} is adapted ({rec.transform.method}): search its prefixes "
            f"with a funnel (e.g. 64:float32:200,{rec.stored_dim}); truncating an adapted "
            "set to a shorter prefix is not supported")
    allow = allow_non_mrl or rec.allow_non_mrl
    new_dim = validate_dim(spec, dim, allow_non_mrl=allow)
    return new_dim, stored_truncate(spec, new_dim), allow


# --- int8 calibration -------------------------------------------------------------
def calibration_stale(fitted_on: int, rows: int) -> bool:
    """Refit an int8 calibration once the set has doubled since it was fitted, until it
    was fitted on a full sample. Quantiles of a few rows do not describe the rest
    (calibrating on 2 rows then adding 2,598 dropped int8 recall@10 to 0.64); doubling
    bounds the refits to a logarithmic number, each costing one view rebuild."""
    return fitted_on < CALIBRATION_SAMPLE and rows > 2 * max(1, fitted_on)


def sample_rows(n: int) -> np.ndarray:
    """An even spread of up to ``CALIBRATION_SAMPLE`` row numbers out of ``n``."""
    return even_rows(n, CALIBRATION_SAMPLE)


def fit_calibration(sample: np.ndarray, dim: int) -> Int8Calibration:
    if not len(sample):
        raise InvalidInputError("cannot calibrate int8 on an empty set")
    return Int8Calibration.fit(vectors.truncate(np.asarray(sample, np.float32), dim))

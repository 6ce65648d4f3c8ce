"""Copying a set between any two stores (:meth:`Store.copy_set`).

Example::

    >>> copy_set.__name__
    'copy_set'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from ..errors import InvalidInputError, SetExistsError

if TYPE_CHECKING:
    from .core import Store


def copy_set(src: Store[Any], name: str, dst: Store[Any], new_name: str | None = None, *,
             batch: int = 10_000, progress: Callable[[int], None] | None = None) -> int:
    """See :meth:`Store.copy_set`."""
    rec = src.record(name)
    target = new_name or name
    if dst is src and target == name:
        raise InvalidInputError(f"set {name!r} cannot be copied into itself: give the "
                                "copy another name (`sets copy --as NAME`) or another "
                                "store")
    if rec.transform is not None:
        raise InvalidInputError(
            f"set {name!r} was adapted ({rec.transform.method}): its stored vectors are "
            "not the model's, and copying the transform is not supported; copy the set "
            "before adapting it, or re-run `mrlkit adapt` on the copy")
    try:
        dst.create_set(target, rec.model, rec.truncate_dim, storage=rec.storage,
                       allow_non_mrl=rec.allow_non_mrl)
    except SetExistsError:
        have = dst.record(target)
        if (have.model, have.stored_dim) != (rec.model, rec.stored_dim):
            raise SetExistsError(
                f"set {target!r} exists in {dst.location} with {have.model} at "
                f"{have.stored_dim} dimensions, not {rec.model} at {rec.stored_dim}"
                ) from None
    ids, x = src.vectors(name)
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        docs = src.get(name, chunk)
        dst.add(target, chunk, x[start:start + batch],
                [d.text if d else None for d in docs],
                [d.metadata if d else None for d in docs], upsert=True)
        if progress:
            progress(len(chunk))
    return len(ids)

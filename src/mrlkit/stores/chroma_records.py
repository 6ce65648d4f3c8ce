"""How the chroma engine names a set's collections and keeps its record in the
documents collection's metadata (Chroma keeps no nulls: an absent ``truncate_dim`` is
native).

Example::

    >>> _names("notes")[0].startswith("mrlkit-s-")
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

from ..transform import Transform
from .seam import FirstStaged


@dataclass(frozen=True, kw_only=True)
class ChromaRecord(FirstStaged):
    count: int = 0
    vectors_file: str | None = None  # None: full vectors in a collection (a server)


def _names(set_name: str, *, staging: bool = False) -> tuple[str, str]:
    """The set's (documents, full vectors) collections; ``staging``: where a rebuild
    writes before it swaps them in."""
    h = hashlib.sha1(set_name.encode()).hexdigest()[:20]
    return (f"mrlkit-t-{h}", f"mrlkit-g-{h}") if staging else \
        (f"mrlkit-s-{h}", f"mrlkit-f-{h}")


def _meta(rec: ChromaRecord) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "mrlkit": 1, "name": rec.name, "model": rec.model, "stored_dim": rec.stored_dim,
        "storage": rec.storage, "allow_non_mrl": rec.allow_non_mrl,
        "first_dim": rec.first_dim, "transform": rec.transform_json or "",
        "created_at": rec.created_at}
    if rec.truncate_dim is not None:  # absent = native (Chroma keeps no nulls)
        meta["truncate_dim"] = rec.truncate_dim
    if rec.vectors_file:
        meta["vectors_file"] = rec.vectors_file
    if rec.plan:
        meta["plan"] = rec.plan
    return meta


def _record(meta: Mapping[str, Any], count: int) -> ChromaRecord:
    return ChromaRecord(name=meta["name"], model=meta["model"],
                        # stores written before 0.2 kept a native truncate_dim as 0
                        truncate_dim=meta.get("truncate_dim") or None,
                        stored_dim=meta["stored_dim"], storage=meta["storage"],
                        allow_non_mrl=bool(meta["allow_non_mrl"]),
                        created_at=meta["created_at"],
                        transform=Transform.from_json(meta.get("transform") or None),
                        first_dim=meta["first_dim"], count=count,
                        vectors_file=meta.get("vectors_file"), plan=meta.get("plan") or None)

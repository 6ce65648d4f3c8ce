"""The user catalog file: models added by ``mrlkit train`` (or by hand) that every later
process knows (see :func:`mrlkit.registry.user_catalog_path`).

Example::

    >>> _toml_value([1, True, "a"])
    '[1, true, "a"]'
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from .registry import spec_from_dict, user_catalog_path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def save_to_user_catalog(spec: dict[str, Any], path: str | os.PathLike[str] | None = None
                         ) -> Path:
    """Write (or replace, by name) a model entry in the user catalog file, so that every
    later process knows it. Returns the file's path.

    Example::

        >>> save_to_user_catalog({"name": "mine", "provider": "sentence-transformers",
        ...                       "model_id": "/models/mine", "native_dim": 384})  # doctest: +SKIP
    """
    checked = spec_from_dict(dict(spec), source="save_to_user_catalog()")
    path = Path(path) if path is not None else user_catalog_path()
    entries = []
    if path.exists():
        entries = [e for e in tomllib.loads(path.read_text("utf-8")).get("model", [])
                   if e.get("name") != checked.name]
    entries.append({k: v for k, v in spec.items() if v is not None and v != ""})
    text = "# mrlkit user catalog: models added by `mrlkit train` and by hand\n"
    for entry in entries:
        text += "\n[[model]]\n" + "".join(f"{k} = {_toml_value(v)}\n"
                                          for k, v in entry.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

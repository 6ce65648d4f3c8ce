"""The model registry: what each model may be truncated to, and how to prompt it.

A model's ``supports_mrl`` and ``mrl_dimensions`` live here, once.
Built-in models come from ``catalog.toml``; users add their own from TOML files named in
``MRLKIT_CATALOG`` (separated by ``os.pathsep``) or with :func:`register`.

Example::

    >>> from mrlkit.registry import get_spec, validate_dim
    >>> validate_dim(get_spec("nomic-embed-text"), 256)
    256
"""

from __future__ import annotations

import os
import tomllib
import warnings
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .errors import CatalogError, DimensionError, NotMatryoshkaError, UnknownModelError

Transform = Literal["none", "layer_norm"]
PROVIDERS = ("sentence-transformers", "ollama", "openai")
TRANSFORMS = ("none", "layer_norm")


class NonMatryoshkaWarning(UserWarning):
    """Emitted once per model when a non-MRL model is truncated with ``allow_non_mrl``."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything mrlkit needs to know about one embedding model.

    ``mrl_dims`` is the tuple of allowed prefix lengths, or ``None`` when any dimension
    from ``min_dim`` up to ``native_dim`` is allowed (API models with free dimensions).

    Example::

        >>> ModelSpec(name="m", provider="ollama", model_id="m", native_dim=8,
        ...           supports_mrl=True, mrl_dims=(4, 8)).allowed_dims_text()
        '4, 8'
    """

    name: str
    provider: str
    model_id: str
    native_dim: int
    supports_mrl: bool = False
    mrl_dims: tuple[int, ...] | None = None
    min_dim: int = 1
    query_prompt: str = ""
    document_prompt: str = ""
    transform: Transform = "none"
    max_tokens: int | None = None
    server_side_dims: bool = False
    backend: str = "torch"     # local models: torch, onnx or onnx-int8 (docs/encoding.md)
    license: str = ""
    notes: str = ""
    source: str = field(default="built-in", compare=False)

    @property
    def any_dim(self) -> bool:
        """True when the model accepts any dimension from ``min_dim`` to native."""
        return self.supports_mrl and self.mrl_dims is None

    def allowed_dims_text(self) -> str:
        """The allowed truncation dimensions, as a person reads them."""
        if not self.supports_mrl:
            return f"{self.native_dim} only (not MRL)"
        if self.mrl_dims is None:
            return f"any from {self.min_dim} to {self.native_dim}"
        return ", ".join(str(d) for d in self.mrl_dims)

    def prompt(self, kind: str) -> str:
        """The prompt to put before a text of this ``kind`` ("query" or "document")."""
        if kind == "query":
            return self.query_prompt
        if kind == "document":
            return self.document_prompt
        raise DimensionError(f"kind must be 'query' or 'document', not {kind!r}")

    def default_dims(self) -> list[int]:
        """Dimensions an evaluation sweeps by default: the MRL list, or powers of two."""
        if self.mrl_dims is not None:
            return list(self.mrl_dims)
        start = max(self.min_dim, 32) if self.supports_mrl else 32
        dims, d = [], 1
        while d < self.native_dim:
            if d >= start:
                dims.append(d)
            d *= 2
        return dims + [self.native_dim]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (used by ``mrlkit models show`` and stores)."""
        d = asdict(self)
        d["mrl_dims"] = list(self.mrl_dims) if self.mrl_dims is not None else (
            "any" if self.supports_mrl else None)
        return d


# ---------------------------------------------------------------------------
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "provider": str, "model_id": str, "native_dim": int,
    "supports_mrl": bool, "mrl_dims": (list, str), "min_dim": int,
    "query_prompt": str, "document_prompt": str, "transform": str,
    "max_tokens": int, "server_side_dims": bool, "license": str, "notes": str,
    "backend": str,
}
BACKENDS = ("torch", "onnx", "onnx-int8")
_REQUIRED = ("name", "provider", "native_dim")


def spec_from_dict(data: dict[str, Any], source: str = "<dict>") -> ModelSpec:
    """Build and validate a :class:`ModelSpec` from a catalog entry.

    Errors name ``source`` and the offending field.

    Example::

        >>> spec_from_dict({"name": "m", "provider": "ollama", "native_dim": 8}).model_id
        'm'
    """
    where = f"{source}: model {data.get('name', '?')!r}"
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise CatalogError(f"{where}: unknown field(s) {sorted(unknown)}; "
                           f"allowed: {sorted(_FIELDS)}")
    for key in _REQUIRED:
        if key not in data:
            raise CatalogError(f"{where}: missing required field '{key}'")
    for key, value in data.items():
        expected = _FIELDS[key]
        # bool is an int subclass: refuse True where a number is expected
        if (isinstance(value, bool) and expected is int) or not isinstance(value, expected):
            names = (" or ".join(t.__name__ for t in expected)
                     if isinstance(expected, tuple) else expected.__name__)
            raise CatalogError(f"{where}: field '{key}' must be {names}, "
                               f"not {type(value).__name__} {value!r}")
    native = data["native_dim"]
    if native <= 0:
        raise CatalogError(f"{where}: field 'native_dim' must be positive, not {native}")
    if data["provider"] not in PROVIDERS:
        raise CatalogError(f"{where}: field 'provider' must be one of {', '.join(PROVIDERS)}, "
                           f"not {data['provider']!r}")
    transform = data.get("transform", "none")
    if transform not in TRANSFORMS:
        raise CatalogError(f"{where}: field 'transform' must be one of "
                           f"{', '.join(TRANSFORMS)}, not {transform!r}")
    supports = data.get("supports_mrl", False)
    raw_dims = data.get("mrl_dims")
    mrl_dims: tuple[int, ...] | None
    if raw_dims is None or raw_dims == "any":
        mrl_dims = None
        if supports and raw_dims is None:
            raise CatalogError(f"{where}: field 'mrl_dims' is required when supports_mrl "
                               "is true (a list of ints, or \"any\")")
    elif isinstance(raw_dims, str):
        raise CatalogError(f"{where}: field 'mrl_dims' must be a list of ints or \"any\", "
                           f"not {raw_dims!r}")
    else:
        if not supports:
            raise CatalogError(f"{where}: field 'mrl_dims' is given but supports_mrl is false")
        if not raw_dims or not all(isinstance(d, int) and not isinstance(d, bool)
                                   for d in raw_dims):
            raise CatalogError(f"{where}: field 'mrl_dims' must be a non-empty list of ints")
        bad = [d for d in raw_dims if not 0 < d <= native]
        if bad:
            raise CatalogError(f"{where}: field 'mrl_dims' has {bad}, outside 1..{native}")
        mrl_dims = tuple(sorted(set(raw_dims)))
        if mrl_dims[-1] != native:
            mrl_dims = mrl_dims + (native,)
    backend = data.get("backend", "torch")
    if backend not in BACKENDS or (backend != "torch"
                                   and data["provider"] != "sentence-transformers"):
        raise CatalogError(f"{where}: field 'backend' must be one of {', '.join(BACKENDS)} "
                           f"(not torch only for sentence-transformers models), not "
                           f"{backend!r}")
    min_dim = data.get("min_dim", 1)
    if not 0 < min_dim <= native:
        raise CatalogError(f"{where}: field 'min_dim' must be in 1..{native}, not {min_dim}")
    return ModelSpec(
        name=data["name"], provider=data["provider"],
        model_id=data.get("model_id", data["name"]), native_dim=native,
        supports_mrl=supports, mrl_dims=mrl_dims, min_dim=min_dim,
        query_prompt=data.get("query_prompt", ""),
        document_prompt=data.get("document_prompt", ""), transform=transform,
        max_tokens=data.get("max_tokens"), server_side_dims=data.get("server_side_dims", False),
        backend=backend, license=data.get("license", ""), notes=data.get("notes", ""),
        source=source,
    )


def _parse_catalog(text: str, source: str) -> list[ModelSpec]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from None
    entries = doc.get("model", [])
    if not isinstance(entries, list):
        raise CatalogError(f"{source}: expected [[model]] tables")
    return [spec_from_dict(e, source) for e in entries]


_catalog: dict[str, ModelSpec] | None = None
_warned_non_mrl: set[str] = set()


def user_catalog_path() -> Path:
    """Where user models are registered by ``mrlkit train`` and friends.

    The first path in ``MRLKIT_CATALOG``, else ``$XDG_CONFIG_HOME/mrlkit/catalog.toml``.

    Example::

        >>> user_catalog_path().name
        'catalog.toml'
    """
    env = os.environ.get("MRLKIT_CATALOG")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "mrlkit" / "catalog.toml"


def _load() -> dict[str, ModelSpec]:
    global _catalog
    if _catalog is None:
        text = resources.files("mrlkit").joinpath("catalog.toml").read_text("utf-8")
        catalog = {s.name: s for s in _parse_catalog(text, "built-in catalog.toml")}
        env = os.environ.get("MRLKIT_CATALOG")
        # set (even empty) → exactly those files; unset → the user catalog if it exists
        paths = ([Path(p).expanduser() for p in env.split(os.pathsep) if p]
                 if env is not None else [user_catalog_path()])
        _catalog = catalog
        for i, path in enumerate(paths):
            # the first path is where `mrlkit train` registers models: absent = empty yet
            if path.exists() or (env is not None and i > 0):
                load_catalog(path)
    return _catalog


def load_catalog(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """Add the models of a TOML catalog file; a name already known is replaced.

    Example::

        >>> load_catalog("my-models.toml")  # doctest: +SKIP
        [ModelSpec(name='my-model', ...)]
    """
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog file: {exc.strerror}") from None
    specs = _parse_catalog(text, str(path))
    catalog = _load()
    for spec in specs:
        catalog[spec.name] = spec
    return specs


def register(spec: ModelSpec | dict[str, Any], *, replace: bool = False) -> ModelSpec:
    """Add a model to this process's catalog.

    Example::

        >>> register({"name": "tiny", "provider": "ollama", "native_dim": 64,
        ...           "supports_mrl": True, "mrl_dims": [16, 32, 64]}, replace=True).mrl_dims
        (16, 32, 64)
    """
    if isinstance(spec, dict):
        spec = spec_from_dict(spec, source="register()")
    catalog = _load()
    if spec.name in catalog and not replace:
        raise CatalogError(f"model {spec.name!r} is already registered "
                           f"(from {catalog[spec.name].source}); pass replace=True")
    catalog[spec.name] = spec
    return spec


def reset_catalog() -> None:
    """Forget loaded catalogs (they are read again on next use); for tests."""
    global _catalog
    _catalog = None
    _warned_non_mrl.clear()


def list_specs() -> list[ModelSpec]:
    """Every known model, in catalog order.

    Example::

        >>> len(list_specs()) >= 12
        True
    """
    return list(_load().values())


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """The spec of a model by name.

    Example::

        >>> get_spec("all-MiniLM-L6-v2").native_dim
        384
    """
    if isinstance(name, ModelSpec):
        return name
    catalog = _load()
    try:
        return catalog[name]
    except KeyError:
        close = [n for n in catalog if n.lower() == name.lower() or name.lower() in n.lower()]
        hint = f"; did you mean {', '.join(close)}?" if close else \
            "; run `mrlkit models` to list known models"
        raise UnknownModelError(f"unknown model {name!r}{hint}") from None


def validate_dim(spec: ModelSpec | str, truncate_dim: int | None, *,
                 allow_non_mrl: bool = False) -> int:
    """Check ``truncate_dim`` against the model; return the dimension to use.

    ``None`` means native. A dimension outside the MRL list, above native, zero or negative
    is refused. A model that is not Matryoshka-trained may only be truncated with
    ``allow_non_mrl=True`` (it then warns once per model).

    Example::

        >>> validate_dim("nomic-embed-text", None)
        768
    """
    spec = get_spec(spec)
    if truncate_dim is None:
        return spec.native_dim
    if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int):
        raise DimensionError(f"dimension must be an integer, not {truncate_dim!r}")
    if truncate_dim <= 0:
        raise DimensionError(f"dimension must be positive, not {truncate_dim}")
    if truncate_dim > spec.native_dim:
        raise DimensionError(f"{spec.name} has {spec.native_dim} dimensions; "
                             f"cannot truncate to {truncate_dim}")
    if truncate_dim == spec.native_dim:
        return truncate_dim
    if not spec.supports_mrl:
        if not allow_non_mrl:
            raise NotMatryoshkaError(
                f"{spec.name} is not Matryoshka-trained: truncating it to {truncate_dim} "
                f"dimensions loses meaning. Use {spec.native_dim}, or pass allow_non_mrl "
                "(--allow-non-mrl) to measure or accept the loss")
        if spec.name not in _warned_non_mrl:
            _warned_non_mrl.add(spec.name)
            warnings.warn(f"{spec.name} is not Matryoshka-trained; truncating to "
                          f"{truncate_dim} dimensions loses quality (measure it with "
                          "`mrlkit eval`)", NonMatryoshkaWarning, stacklevel=2)
        return truncate_dim
    if spec.mrl_dims is None:
        if truncate_dim < spec.min_dim:
            raise DimensionError(f"{spec.name} accepts dimensions from {spec.min_dim} to "
                                 f"{spec.native_dim}, not {truncate_dim}")
        return truncate_dim
    if truncate_dim not in spec.mrl_dims:
        raise DimensionError(f"{spec.name} was trained for dimensions "
                             f"{spec.allowed_dims_text()}; {truncate_dim} is not one of them")
    return truncate_dim

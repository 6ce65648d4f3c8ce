"""mrlkit: Matryoshka embeddings you can trust — embed once, keep each vector once, serve
it at any prefix length and precision, search in tiers, and measure what each choice costs.

Example::

    >>> import mrlkit
    >>> mrlkit.get_spec("nomic-embed-text").mrl_dims
    (64, 128, 256, 512, 768)
"""

from .embedder import Embedder, embed
from .transform import Transform, adapt
from .embedding_set import EmbeddingSet
from .funnel import Adaptive, Funnel, Stage
from .stores import open_store
from .errors import MrlkitError
from .registry import (ModelSpec, get_spec, list_specs, load_catalog, register,
                       validate_dim)
from .vectors import Int8Calibration, PRECISIONS

__version__ = "0.1.0"

__all__ = [
    "Adaptive", "EmbeddingSet", "Funnel", "Stage", "Transform", "adapt", "open_store",
    "Embedder", "Int8Calibration", "ModelSpec", "MrlkitError", "PRECISIONS", "embed",
    "get_spec", "list_specs", "load_catalog", "register", "validate_dim",
]

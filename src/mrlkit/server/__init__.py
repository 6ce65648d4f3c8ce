"""`mrlkit serve`: an HTTP service over the public Python API (``pip install
'mrlkit[server]'``). See docs/serve.md.

Example::

    >>> from mrlkit.server import ServerConfig, create_app
    >>> app = create_app(ServerConfig(store="/tmp/mrlkit-serve"))   # doctest: +SKIP
"""

from __future__ import annotations

from .app import create_app
from .config import Limits, ServerConfig, load_keys

__all__ = ["Limits", "ServerConfig", "create_app", "load_keys"]

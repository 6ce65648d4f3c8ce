"""Where a fault test may stop a write: engines call :func:`point` at the steps the
kill -9 tests name (``after_vectors``, ``before_commit``, ``before_switch``,
``mid_switch``, ``graph_before_rename``). Nothing happens in production; a test installs
a handler in the process it means to kill.

Example::

    >>> from mrlkit.stores import faults
    >>> faults.install(lambda name: None)   # a test's handler: here, do nothing
    >>> faults.point("after_vectors")
    >>> faults.install(None)
"""

from __future__ import annotations

from collections.abc import Callable

_handler: Callable[[str], object] | None = None


def install(handler: Callable[[str], object] | None) -> None:
    """Call ``handler(name)`` at every fault point of this process (None: none)."""
    global _handler
    _handler = handler


def point(name: str) -> None:
    """A step of a write where a test may stop the process."""
    if _handler is not None:
        _handler(name)

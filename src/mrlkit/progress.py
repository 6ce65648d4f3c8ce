"""Progress of long work, one helper for every command: a Rich bar on a terminal, plain
lines with count, rate and ETA when stderr is a log (a 20-minute job in a log shows
where it is), nothing when disabled. Always on stderr: stdout carries results only.

Example::

    >>> with Progress("indexing", total=3, enabled=False) as p:
    ...     p.advance(3)
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, TextIO

PLAIN_EVERY = float(os.environ.get("MRLKIT_PROGRESS_EVERY", "5"))  # seconds between lines


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Count units of work towards ``total`` (None: unknown)."""

    def __init__(self, description: str, total: int | None = None, *, enabled: bool = True,
                 unit: str = "documents", stream: TextIO | None = None) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.skipped = 0      # units passed over (a resumed run's stored documents)
        self._printed = -1    # the count of the last plain line
        self._rich: Any = None
        self._task: Any = None
        self._t0 = self._last = 0.0

    def __enter__(self) -> Progress:
        self._t0 = self._last = time.perf_counter()
        if self.enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar,
                                       TaskProgressColumn, TextColumn, TimeRemainingColumn)

            self._rich = Bar(TextColumn("{task.description}"), BarColumn(),
                             MofNCompleteColumn(), TaskProgressColumn(),
                             TimeRemainingColumn(), console=Console(file=self.stream),
                             transient=False)
            self._rich.__enter__()
            self._task = self._rich.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1, *, description: str | None = None,
                skipped: int = 0) -> None:
        """``n`` units done, of which ``skipped`` were passed over without work: they
        count towards the total but not towards the rate (nor the ETA)."""
        self.done += n
        self.skipped += skipped
        if self._rich is not None:
            self._rich.update(self._task, advance=n, description=description or
                              self.description)
        elif self.enabled:
            now = time.perf_counter()
            if now - self._last >= PLAIN_EVERY or self.done == n:
                self._last = now
                self._line(now, description)

    def _line(self, now: float, description: str | None = None) -> None:
        elapsed = max(now - self._t0, 1e-9)
        rate = (self.done - self.skipped) / elapsed  # the work done in this run
        self._printed = self.done
        of = f"/{self.total:,}" if self.total else ""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.done < self.total:
            eta = f", ETA {_duration((self.total - self.done) / rate)}"
        passed = f" ({self.skipped:,} skipped)" if self.skipped else ""
        self.stream.write(f"{description or self.description}: {self.done:,}{of} "
                          f"{self.unit}{pct}{passed}, {rate:,.1f}/s{eta}\n")
        self.stream.flush()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.__exit__(kind, exc, tb)
        elif self.enabled and kind is None:
            now = time.perf_counter()
            if self._printed != self.done:  # the last line, once
                self._line(now)
            self.stream.write(f"{self.description}: done in {_duration(now - self._t0)}\n")
            self.stream.flush()

"""The ``mrlkit`` command line: parse, call the public API, print. No logic of its own.

One module per command group; each registers its commands on the shared ``app``.

Example::

    $ mrlkit models
    $ mrlkit embed "hello world" --model all-MiniLM-L6-v2 --dim 128 --allow-non-mrl
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from rich.markup import escape

from ..errors import MrlkitError
# each module registers its commands on ``app``; this order is the order of `--help`
from . import models, embed, sets, search, docs, evaluate, train, pg, serve, demo  # noqa: F401,E402
from ._common import app, err

__all__ = ["app", "command", "main"]


def click_command() -> object:
    """Typer's Click command of the CLI, its help tidied (:mod:`._help`)."""
    import typer

    from ._help import tidy

    return tidy(typer.main.get_command(app))


def command() -> object:
    """Run the CLI."""
    return click_command().main(prog_name="mrlkit")  # type: ignore[attr-defined]


# --- entry point ---------------------------------------------------------------
def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def main() -> None:
    """Console entry point: errors become one line on stderr and a non-zero exit (2 for
    bad input or a damaged store, 1 for anything unexpected — ``--debug`` shows its
    traceback)."""
    import os

    warnings.showwarning = _one_line_warning
    debug = "--debug" in sys.argv[1:] or bool(os.environ.get("MRLKIT_DEBUG"))
    sys.argv = [a for a in sys.argv if a != "--debug"]
    try:
        command()
    except MrlkitError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug, or a fault mrlkit does not know yet: still one line
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.print(f"[red]error:[/] unexpected {type(exc).__name__}: {escape(first)} "
                  "(run with --debug for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()

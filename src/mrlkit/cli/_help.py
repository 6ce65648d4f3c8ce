"""Help a user can read: every command's parameters get a real metavar (``NAME``,
``QUERY``, ``N``, ``KEY=VALUE``) instead of Typer's type placeholders (``{name}``,
``<str>``, ``<list[str]>``), flags show none, help texts are paragraphs (the hard line
breaks of the source joined), and brackets in them are shown, not eaten as Rich markup.

Applied once to the Click command tree Typer builds, before it runs
(:func:`tidy`). Typer has no public switch for the placeholders, so the two methods that
render them are replaced on each parameter object; ``tests/test_cli_help.py`` renders
every command's help at 80 and 200 columns and fails on any placeholder that comes back.

Example::

    >>> import typer
    >>> cmd = tidy(typer.main.get_command(app))     # doctest: +SKIP
"""

from __future__ import annotations

import re
from typing import Any

from rich.markup import escape

# metavars by parameter name; anything else is its name in capitals (or N for a number)
METAVARS = {
    "filter": "KEY=VALUE", "k": "N", "store": "LOCATION", "output": "FILE",
    "queries": "FILE", "input": "FILE", "json_out": "", "csv": "FILE", "plot": "FILE",
    "calibration": "FILE", "api_key_file": "FILE", "ids": "FILE", "dims": "D,D,…",
    "precisions": "P,P,…", "target": "R", "to": "LOCATION", "as_name": "NAME",
    "ray": "ADDRESS", "data": "FOLDER", "trained": "MODEL", "host": "ADDRESS",
    "text": "TEXT", "texts": "TEXT", "source": "PATH", "path": "PATH", "file": "FILE",
    "corpus": "FILE", "dataset": "FOLDER", "id_field": "FIELD", "text_field": "FIELD",
}


def _annotation(param: Any) -> Any:
    desc = getattr(param, "type_descriptor", None)
    return getattr(desc, "annotation", None)


def _metavar(param: Any) -> str:
    name = param.name or ""
    if name in METAVARS:
        return METAVARS[name]
    kind = _annotation(param)
    desc = getattr(param, "type_descriptor", None)
    if desc is not None and getattr(desc, "is_choice", False):
        return "|".join(str(c) for c in desc.choices or ())
    if kind is int:
        return "N"
    if kind is float:
        return "X"
    if getattr(desc, "is_path", False):
        return "PATH"
    return str(name.upper().replace("_", "-"))


def paragraphs(text: str | None) -> str | None:
    """Help text as paragraphs: single line breaks become spaces (blank lines stay),
    brackets escaped for Rich."""
    if not text:
        return text
    import inspect

    text = inspect.cleandoc(text)
    joined = re.sub(r"(?<!\n)\n(?!\n)", " ", text)
    return escape(re.sub(r"[ \t]{2,}", " ", joined))


def tidy(command: Any) -> Any:
    """Tidy ``command`` (Typer's Click command) and every subcommand in place; returns
    it. (Typer carries a Click of its own: the objects are handled by what they have.)"""
    command.help = paragraphs(command.help)
    command.short_help = paragraphs(command.short_help)
    for param in command.params:
        _tidy_param(param)
    made = command.get_help_option  # --help is made when a command runs: tidy it then

    def help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            _tidy_param(option)
        return option
    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
    return command


def _tidy_param(param: Any) -> None:
    if getattr(param, "help", None):
        param.help = paragraphs(param.help)
    if hasattr(param, "is_flag"):  # an option
        if param.is_flag or param.count or _annotation(param) is bool:
            param.metavar = ""  # a flag takes no value: show none
        elif param.metavar is None:
            param.metavar = _metavar(param)
        return
    # an argument: NAME when required, [NAME] when not, in the usage line and the panel
    meta = param.metavar or _metavar(param)
    param.metavar = meta
    many = "..." if param.nargs != 1 else ""
    usage = (meta if param.required else f"[{meta}]") + many
    param._usage_display_name = lambda: usage
    param.display_type_rich = lambda ctx=None: None

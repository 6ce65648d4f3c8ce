"""Every command's `--help`, as a user reads it at 80 and 200 columns: real metavars (no
Typer placeholder such as `<str>`, `<list[str]>` or `{name}`), a description for every
option and argument, and no word cut by the wrapping (every word of the help at 80
columns is a word of the same help at 400, where nothing wraps)."""

from __future__ import annotations

import re

import pytest

from mrlkit.cli import click_command

PLACEHOLDER = re.compile(r"<(str|int|float|bool|path|list\[[^\]]*\]|[a-z_]+ range)>|\{[a-z_]+\}")


def _paths(cmd, prefix=()):
    yield prefix, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _paths(sub, (*prefix, name))


def _id(value) -> str:
    return " ".join(value) if isinstance(value, tuple) else ""


ROOT = click_command()
COMMANDS = list(_paths(ROOT))


def _help(path, columns, monkeypatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    with pytest.raises(SystemExit) as done:
        click_command().main([*path, "--help"], prog_name="mrlkit")
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: _id(p) or "mrlkit")
def test_help_reads_as_written(path, monkeypatch, capsys):
    wide = _help(path, 400, monkeypatch, capsys)
    words = set(re.findall(r"[A-Za-z]{3,}", wide))
    for columns in (80, 200):
        text = _help(path, columns, monkeypatch, capsys)
        assert not PLACEHOLDER.search(text), (columns, PLACEHOLDER.search(text).group(0), text)
        cut = sorted(set(re.findall(r"[A-Za-z]{3,}", text)) - words)
        assert not cut, (columns, cut, text)
        assert max(len(line) for line in text.splitlines()) <= columns


@pytest.mark.parametrize("path, cmd", COMMANDS, ids=_id)
def test_every_option_and_argument_says_what_it_is(path, cmd):
    missing = [p.name for p in cmd.params if not getattr(p, "help", None)
               and not getattr(p, "hidden", False)]
    assert not missing, (" ".join(path), missing)


def test_search_help_shows_the_filter_as_key_value(monkeypatch, capsys):
    text = _help(("search",), 80, monkeypatch, capsys)
    line = next(ln for ln in text.splitlines() if "--filter" in ln)
    assert "KEY=VALUE" in line and "Metadata" in line

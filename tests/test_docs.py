"""The docs a user reads say nothing they cannot see and use no flag that does not exist:
every `mrlkit …` line in a fenced block of README.md and docs/ is checked against the
command's own options (the same ones `--help` lists)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typing import Any

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
INVISIBLE = [r"\bADR-\d+", r"\bthe issue\b", r"\bissue's\b", r"\bwhen the issue\b",
             r"\bissue #?\d+\b"]


def _blocks(page: Path, langs: tuple[str, ...] = ("", "bash", "sh", "console")) -> list[str]:
    """The fenced blocks of a page in ``langs`` (default: shell blocks), in order."""
    return [text for lang, text in _fenced(page) if lang in langs]


def _fenced(page: Path) -> list[tuple[str, str]]:
    """Every fenced block of a page: (language, text), in order."""
    blocks, current, lang = [], None, ""
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                blocks.append((lang, "\n".join(current)))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _mrlkit_lines(page: Path) -> list[str]:
    out = []
    for block in _blocks(page):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        for line in joined.splitlines():
            line = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
            found = re.search(r"(?:^|[\s(=$])mrlkit\s+(.*)", line)
            if found:
                out.append(found.group(1).rstrip(")").strip())
    return out


def _command(path: list[str]) -> tuple[Any, list[str]]:
    from mrlkit.cli import app

    cmd: Any = typer.main.get_command(app)
    used = []
    while hasattr(cmd, "commands") and path and path[0] in cmd.commands:
        used.append(path[0])
        cmd = cmd.commands[path.pop(0)]
    return cmd, used


def _options(cmd: Any) -> set[str]:
    opts = {"--help"}
    for p in cmd.params:
        opts.update(o for o in (*p.opts, *p.secondary_opts) if o.startswith("-"))
    return opts


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_a_user_cannot_see(page):
    text = page.read_text()
    for pattern in INVISIBLE:
        assert not re.search(pattern, text, flags=re.I), (page.name, pattern)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_and_flag_exists(page):
    for line in _mrlkit_lines(page):
        try:
            words = shlex.split(line.replace("$(", "").replace("~", "HOME"))
        except ValueError:
            words = line.split()
        cmd, used = _command(list(words))
        assert used or words[0].startswith("-"), f"{page.name}: unknown command in {line!r}"
        known = _options(cmd)
        root = _options(_command([])[0])
        for word in words:
            flag = word.split("=", 1)[0]
            if flag.startswith("--"):
                assert flag in known | root, f"{page.name}: `mrlkit {' '.join(used)}` has " \
                                             f"no {flag} (in {line!r})"


def test_the_pages_hold_mrlkit_commands_to_check():
    assert sum(len(_mrlkit_lines(p)) for p in PAGES) > 40

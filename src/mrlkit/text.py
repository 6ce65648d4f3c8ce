"""What counts as text in mrlkit, checked once for every path: a text, an id, a metadata
key or value, a filter, a set name holds only Unicode scalar values (no lone surrogate:
no model, database or file can encode one) and no NUL (PostgreSQL refuses it, C strings
end at it). Every backend gives the same answer because none of them is asked.

Example::

    >>> check_text("café", "text")
    'café'
    >>> check_text("a\\x00b", "metadata 'k'")
    Traceback (most recent call last):
    ...
    mrlkit.errors.InvalidInputError: metadata 'k' holds a NUL character (U+0000) at \
position 1: text must be valid Unicode without NUL
"""

from __future__ import annotations

import re

from .errors import InvalidInputError


def problem(text: str) -> str | None:
    """What makes ``text`` unusable (None: nothing), e.g. ``"a lone surrogate (U+D800)
    at position 3"``."""
    if text.isascii():
        if "\x00" in text:
            return f"a NUL character (U+0000) at position {text.index(chr(0))}"
        return None
    if "\x00" in text:
        return f"a NUL character (U+0000) at position {text.index(chr(0))}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate (U+{ord(text[exc.start]):04X}) at position {exc.start}"
    return None


def check_text(text: str, where: str) -> str:
    """``text`` itself, or an :class:`InvalidInputError` naming ``where`` it came from
    (``"input 3"``, ``"document 'a': metadata 'lang'"``) and what is wrong."""
    bad = problem(text)
    if bad is not None:
        raise InvalidInputError(f"{where} holds {bad}: text must be valid Unicode "
                                "without NUL")
    return text


_SECRET_PARAM = re.compile(r"(?i)([?&;](?:[^=&;#]*(?:pass|secret|token|key)[^=&;#]*)=)"
                           r"[^&;#]*")


def masked(location: str) -> str:
    """A store location as it may be shown to anyone: a password in ``user:pw@`` and
    every query parameter whose name holds pass, secret, token or key (``password``,
    ``sslpassword``, ``api_key``) replaced by ``***``.

    Example::

        >>> masked("postgresql://me:pw@db/search?host=/tmp&password=s3&sslmode=require")
        'postgresql://me:***@db/search?host=/tmp&password=***&sslmode=require'
    """
    out = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", location)
    return _SECRET_PARAM.sub(r"\1***", out)

"""Field checks for what the platforms post: every value chatgate takes from a body is checked for
presence, type, length and range before it becomes part of an `IncomingMessage`.

A body that does not fit raises `Invalid`, whose message is a short reason naming the field; the
webhooks answer it with 400 and log one line, no traceback. The checks are deliberately small and
explicit (no schema framework): each platform module (handlers/wechat/message.py,
handlers/feishu/message.py, handlers/afdian/webhook.py) lists the fields it reads and calls these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

INT64_MAX = 2**63 - 1
"""The largest id or number any store column or platform field may hold."""

_DIGITS = re.compile(r"[0-9]{1,19}")
"""A whole number as the platforms write it: ASCII digits only (`int()` would also take ' 1', '1_0'
and other scripts' digits)."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters other than tab and newlines: never in a name or id, refused in text too."""


class Invalid(ValueError):
    """A body that does not have the shape or the values chatgate reads: answered with 400."""


def field(fields: Mapping, name: str, *, required: bool = True):
    """The value of `name` in a parsed body, or None when absent and not `required`."""
    if name not in fields or fields[name] is None:
        if required:
            raise Invalid(f"{name}: missing")
        return None
    return fields[name]


def text(value, name: str, *, max_len: int, min_len: int = 0, pattern: re.Pattern | None = None,
         free: bool = False) -> str:
    """A string of `min_len`..`max_len` characters (matching `pattern` if given), without control
    characters unless it is `free` text (what a user wrote)."""
    if not isinstance(value, str):
        raise Invalid(f"{name}: not a string")
    if not min_len <= len(value) <= max_len:
        raise Invalid(f"{name}: length {len(value)} outside {min_len}..{max_len}")
    if not free and _CONTROL.search(value):
        raise Invalid(f"{name}: control characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise Invalid(f"{name}: unexpected characters")
    return value


def integer(value, name: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    """A whole number in `lo`..`hi`, given as an int (not a bool) or as ASCII digits."""
    if isinstance(value, str):
        if not _DIGITS.fullmatch(value):
            raise Invalid(f"{name}: not a whole number")
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{name}: not a whole number")
    if not lo <= value <= hi:
        raise Invalid(f"{name}: out of range")
    return value


def mapping(value, name: str) -> Mapping:
    """A JSON object (or XML element with children)."""
    if not isinstance(value, Mapping):
        raise Invalid(f"{name}: not an object")
    return value


def array(value, name: str, *, max_items: int) -> list:
    """A JSON array of at most `max_items` items (None counts as empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(f"{name}: not a list")
    if len(value) > max_items:
        raise Invalid(f"{name}: more than {max_items} items")
    return value

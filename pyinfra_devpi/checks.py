"""
Checks of host-data values, shared by the config (``config.py``) and the users/indexes
spec (``users_indexes/spec.py``).

Each check takes ``(where, value)`` and returns the normalised value or raises
``ConfigError``. ``where`` is how the message names the value: ``"`devpi_port`"``
for a key, ``"`devpi_indexes` ['eblume/dev']['bases']"`` for a part of one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

# C0 controls and DEL: a newline in a value pasted into a plist, a Caddyfile, a YAML
# file or a shell line starts a new statement there, so no check lets one through.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def fail(where: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"host data {where} = {value!r} is invalid: {allowed}")


def has_control(value: str) -> bool:
    return bool(_CONTROL_RE.search(value))


def string(where: str, value: Any, allowed: str) -> str:
    """A string without control characters, or the error naming what is allowed."""
    if not isinstance(value, str):
        raise fail(where, value, allowed)
    if has_control(value):
        raise fail(where, value, f"control characters (newlines, tabs, NUL) are not allowed; {allowed}")
    return value


def matches(pattern: re.Pattern, allowed: str):
    """A check that the value is a string matching ``pattern`` in full."""

    def check(where: str, value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise fail(where, value, allowed)
        return value

    return check


def text(where: str, value: Any) -> str:
    """A non-empty single-line string."""
    value = string(where, value, "use a non-empty single-line string")
    if not value.strip():
        raise fail(where, value, "use a non-empty single-line string")
    return value


def boolean(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(where, value, "use True or False")
    return value


def integer(where: str, value: Any, *, minimum: int, maximum: int, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise fail(where, value, allowed)
    return value


def url(where: str, value: Any, example: str = "https://pypi.example.org") -> str:
    """An http(s) URL with a host, as written (no control characters, no spaces)."""
    allowed = f"use an http(s) URL such as {example!r}"
    value = string(where, value, allowed)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise fail(where, value, allowed)
    return value

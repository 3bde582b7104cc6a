"""
docs/configuration.md, rendered from the keys as ``config.py`` declares them (``KEYS``):
every key in declaration order, its default, whether it may be unset, and its doc.

    uv run python -m pyinfra_devpi.config_reference > docs/configuration.md

``tests/test_config_reference.py`` fails when the file and the declarations differ.
"""

from __future__ import annotations

import json
from typing import Any

from .config import KEYS, Key

REGENERATE = "uv run python -m pyinfra_devpi.config_reference > docs/configuration.md"

INTRO = """\
Host data in the inventory: every key below is this deploy's (`devpi_*`). Every key is
checked before anything is planned; a wrong type, a control character (newline, tab,
NUL) in any value, or an unknown `devpi_*` key (in any case: `DEVPI_HOME` too) stops
the run with a message naming the key and the fix. Keys of other deploys (a Caddy
deploy's `caddy_email`) are left alone. Paths may start with `~/` (the SSH user's home
on the host). A key left out takes its default; "may be unset" means `None` is
accepted too, with the meaning the key's text gives."""


def literal(value: Any) -> str:
    """A value as it is written in an inventory (Python, double-quoted strings)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    return repr(value)


def may_be_unset(spec: Key) -> bool:
    return spec.optional or spec.default is None


def default_text(spec: Key) -> str:
    return "unset" if spec.default is None else f"`{literal(spec.default)}`"


def render_key(name: str, spec: Key) -> str:
    if spec.default is None:
        default = "Default: unset."
    else:
        unset = "may be unset (`None`)" if may_be_unset(spec) else "cannot be unset"
        default = f"Default: {default_text(spec)}; {unset}."
    return f"## `{name}`\n\n{default}\n\n{spec.doc}\n"


def render_reference(keys: dict[str, Key] = KEYS) -> str:
    """docs/configuration.md's text."""
    # GitHub's anchor of a heading "`devpi_home`" is "devpi_home".
    summary = ["| key | default |", "|---|---|"]
    summary += [f"| [`{name}`](#{name}) | {default_text(spec)} |" for name, spec in keys.items()]
    parts = [
        f"<!-- Generated from pyinfra_devpi/config.py; do not edit. Regenerate: {REGENERATE} -->\n",
        "# Configuration\n",
        INTRO + "\n",
        "\n".join(summary) + "\n",
        *(render_key(name, spec) for name, spec in keys.items()),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_reference(), end="")

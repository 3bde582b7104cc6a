"""
Host scripts kept as ``.sh`` files beside the module that runs them, so shellcheck
reads them as the POSIX sh macOS's ``/bin/sh`` (bash 3.2 in POSIX mode) runs
(``tests/test_shellcheck.py``).

A script's body is static; its values arrive as shell assignments put before it,
each quoted with ``shlex.quote``, so no value is ever spliced into the script's
text. The script names its inputs in one or more ``: "${name?}"`` lines: shellcheck
then knows them, and ``render`` refuses a value the script does not declare or a
declared one it is not given. Comment lines, blank lines and those declaration lines
are left out of the command text. (So a line of a multi-line string in a script must
not start with ``#``: values such as Python sources are passed as inputs instead.)
A line ``. ./<other>.sh`` (or ``. ../<folder>/<other>.sh``) includes that file (shell
functions shared by scripts), its inputs with it: the host runs one ``sh -c`` string, and
shellcheck follows the same line (``-x``).

A list (or tuple) value arrives as one string, its items one a line, which the script
reads with ``while IFS= read -r item; do ...; done <<EOF`` / ``$name`` / ``EOF`` (an
expansion in a here-doc is not expanded again, and ``IFS=`` / ``-r`` keep blanks and
backslashes), skipping empty lines: an empty list is an empty string. An item that holds
a newline could not be told from two, so ``render`` refuses it.

Secrets never go through here: a script reads one from a 0600 file uploaded before it.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

DECLARATION = re.compile(r'^:( "\$\{[A-Za-z_][A-Za-z0-9_]*\?\}")+$')
INPUT = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)\?\}')
INCLUDE = re.compile(r"^\. (\./|\.\./[a-z_]+/)([A-Za-z0-9_-]+\.sh)$")


@functools.cache
def _load(path: str) -> tuple[frozenset[str], str]:
    declared: set[str] = set()
    body = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        include = INCLUDE.match(stripped)
        if include:
            inputs, text = _load(str((Path(path).parent / include.group(1) / include.group(2)).resolve()))
            declared.update(inputs)
            body.append(text)
        elif DECLARATION.match(stripped):
            declared.update(INPUT.findall(stripped))
        elif stripped and not stripped.startswith("#"):
            body.append(line)
    return frozenset(declared), "\n".join(body)


def value(v) -> str:
    """An input's shell word: ``None`` and ``False`` are empty (tested with ``[ -n "$x" ]``),
    ``True`` is ``1``, a list or tuple its items one a line."""
    if v is None or v is False:
        return "''"
    if v is True:
        return "1"
    if isinstance(v, (list, tuple)):
        return shlex.quote("\n".join(str(item) for item in v))
    return shlex.quote(str(v))


def render(beside: str, name: str, title: str | None = None, functions=(), /, **values) -> str:
    """The host script ``<name>.sh`` in the directory of module file ``beside``, its
    inputs ``values`` assigned before it. ``title`` (one line) comes first, as a comment:
    what ``--diff`` shows for the command. ``functions``: one-line shell functions made
    by the caller from its own templates (a message both the controller and the host
    print), defined after the inputs."""
    path = Path(beside).with_name(f"{name}.sh")
    declared, body = _load(str(path))
    if set(values) != declared:
        raise ValueError(
            f"{path.name}: inputs given {sorted(values)} differ from those it declares {sorted(declared)}"
        )
    for key, v in values.items():
        if isinstance(v, (list, tuple)) and any("\n" in str(item) for item in v):
            raise ValueError(f"{path.name}: an item of the list {key} holds a newline, which would make it two: "
                             f"{[str(item) for item in v if chr(10) in str(item)][0]!r}")
    if title and ("\n" in title or "\r" in title):
        raise ValueError(f"{path.name}: a title is one line: {title!r}")
    head = [f"# {title}"] if title else []
    return "\n".join([*head, *(f"{k}={value(v)}" for k, v in values.items()), *functions, body])

"""
pyinfra fact ``HostTools``: where the programs the deploy runs are on the host.

A non-interactive SSH command on macOS gets ``PATH=/usr/bin:/bin:/usr/sbin:/sbin``:
Homebrew's and uv's installer directories are not on it. The deploy hands this fact
its candidate lists (``pyinfra_devpi/layout.py``: a bare name is looked up on the
session's PATH, a ``~/`` path is under the SSH user's home, anything else is an
absolute path) and the fact reports the first candidate that is an executable file.

Command output protocol (one script, always exits 0)::

    uv=<path>                    the first uv candidate found ("" when none)
    uv_version=<what it prints>  only when that is the deploy's own uv (``bootstrapped``):
                                 the first line of its ``--version``
    caddy=<path>                 the first caddy candidate found ("" when none)
    python=<path>                only when asked for an interpreter: its path ("" when none)
    python_version=<x.y.z>       what that interpreter reports ("" when it does not run)
    python_shim=true             it is macOS's /usr/bin/python3 without the Command Line Tools
    bootstrap_python=<path>      only when no uv was found, or the deploy's own uv is not of
    bootstrap_python_version=... the ``pinned`` version: the first python3 candidate that
                                 runs and has ``venv`` and ``ensurepip`` (its version)

Interpreters are started once each (``-I``, a few ms). macOS's ``/usr/bin/python3``
is run only when ``xcode-select -p`` finds a developer directory: without one it is a
shim that opens an install dialog on the console and fails.
"""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, script
from pyinfra_devpi import shell_script
from pyinfra_devpi.layout import MACOS_PYTHON_SHIM

q = shlex.quote

# What an interpreter prints about itself; the bootstrap one must also make venvs
# with pip in them (Debian splits ensurepip into python3-venv).
_VERSION = 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
_VERSION_WITH_VENV = "import venv, ensurepip; " + _VERSION


def candidate_word(candidate: str) -> str:
    """One candidate as a shell word: ``~/x`` under ``$HOME``, anything else quoted."""
    if candidate.startswith("~/"):
        return '"$HOME"/' + q(candidate[2:])
    return q(candidate)


def _words(candidates) -> str:
    return " ".join(candidate_word(c) for c in candidates)


# Shell functions (POSIX sh): ``find_tool`` and ``py_version`` (facts/find_tool.sh).
_FUNCTIONS = [shell_script.render(__file__, "find_tool", macos_python_shim=MACOS_PYTHON_SHIM)]


class HostTools(FactBase):
    """
    The first executable of each candidate list: ``uv``, ``caddy`` (paths, or ``None``);
    with ``python``, that interpreter (``{"path", "version", "shim"}``); when no uv is
    found (or the deploy's own uv is not the pinned one), the first python3 of
    ``bootstrap_python`` that can bootstrap it (``{"path", "version"}``, or ``None``);
    when the uv found is the deploy's own, ``uv_version`` (``x.y.z`` from its
    ``--version``, ``None`` when it does not say).

    + uv: uv candidates (bare names, ``~/`` paths, absolute paths)
    + caddy: caddy candidates
    + python: the interpreter ``devpi_python`` names (a path or command), or None
    + bootstrap_python: python3 candidates for bootstrapping uv
    + bootstrapped: the path of the uv the deploy bootstraps (the last uv candidate)
    + pinned: the uv version the deploy bootstraps
    """

    def command(self, uv=(), caddy=(), python=None, bootstrap_python=(), bootstrapped=None, pinned=None):
        parts = [
            *_FUNCTIONS,
            f"uv=$(find_tool {_words(uv)})",
            f"caddy=$(find_tool {_words(caddy)})",
            'printf \'uv=%s\\ncaddy=%s\\n\' "$uv" "$caddy"',
        ]
        # The deploy's own uv: its version decides whether it is bootstrapped again.
        own = "false"
        if bootstrapped:
            parts.append(
                f'if [ -n "$uv" ] && [ "$uv" = {q(bootstrapped)} ]; then '
                'uv_version=$("$uv" --version 2>/dev/null </dev/null | head -n 1); '
                'printf \'uv_version=%s\\n\' "$uv_version"; fi'
            )
            current = f'{q("uv " + pinned)}|{q("uv " + pinned + " ")}*) false ;; ' if pinned else ""
            own = (f'{{ [ "$uv" = {q(bootstrapped)} ] && '
                   f'case "$uv_version" in {current}*) true ;; esac; }}')
        if python:
            parts += [
                f"py=$(find_tool {candidate_word(python)})",
                'printf \'python=%s\\n\' "$py"',
                'if [ -n "$py" ]; then v=$(py_version "$py" ' + q(_VERSION) + "); "
                'if [ "$v" = shim ]; then echo "python_shim=true"; else printf \'python_version=%s\\n\' "$v"; fi; fi',
            ]
        if bootstrap_python:
            parts += [
                f'if [ -z "$uv" ] || {own}; then',
                f"  for c in {_words(bootstrap_python)}; do",
                '    b=$(find_tool "$c") || continue; [ -n "$b" ] || continue',
                "    v=$(py_version \"$b\" " + q(_VERSION_WITH_VENV) + ")",
                '    case "$v" in [0-9]*) printf \'bootstrap_python=%s\\nbootstrap_python_version=%s\\n\' "$b" "$v"; break ;; esac',
                "  done",
                "fi",
            ]
        return script(parts)

    def process(self, output):
        values = key_values(output)
        if "uv" not in values or "caddy" not in values:
            raise FactProcessError(f"HostTools: unexpected output: {output[:3]!r}")
        result = {
            "uv": values["uv"] or None,
            "caddy": values["caddy"] or None,
            "python": None,
            "bootstrap_python": None,
        }
        if "uv_version" in values:
            words = values["uv_version"].split()
            result["uv_version"] = (
                parse_version(words[1]) if len(words) >= 2 and words[0] == "uv" else None
            )
        if "python" in values:
            result["python"] = {
                "path": values["python"] or None,
                "version": parse_version(values.get("python_version")),
                "shim": values.get("python_shim") == "true",
            }
        if values.get("bootstrap_python"):
            result["bootstrap_python"] = {
                "path": values["bootstrap_python"],
                "version": parse_version(values.get("bootstrap_python_version")),
            }
        return result


def parse_version(text: str | None) -> str | None:
    """``x.y.z`` as an interpreter printed it, or None for anything else."""
    if not text:
        return None
    parts = text.strip().split(".")
    return text.strip() if len(parts) == 3 and all(p.isdigit() for p in parts) else None

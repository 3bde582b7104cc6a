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

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values
from pyinfra_devpi import shell_script
from pyinfra_devpi.layout import MACOS_PYTHON_SHIM

# What an interpreter prints about itself; the bootstrap one must also make venvs
# with pip in them (Debian splits ensurepip into python3-venv).
_VERSION = 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
_VERSION_WITH_VENV = "import venv, ensurepip; " + _VERSION


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
        return shell_script.render(  # facts/host_tools.sh
            __file__, "host_tools", uv_candidates=uv, caddy_candidates=caddy, python=python,
            bootstrap_python=bootstrap_python, bootstrapped=bootstrapped, pinned=pinned,
            version_code=_VERSION, version_with_venv_code=_VERSION_WITH_VENV, macos_python_shim=MACOS_PYTHON_SHIM,
        )

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

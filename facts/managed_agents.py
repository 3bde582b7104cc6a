"""
The LaunchAgents this deploy wrote (and may have to retire), found by the marker
its plist template carries, with the port of the config each one's job runs with.
"""

from __future__ import annotations

import plistlib
import re

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts.files import Damaged, decode_text
from pyinfra_devpi import shell_script
from pyinfra_devpi.layout import PLIST_SUFFIX

# The comment render.py puts in every plist and YAML config the deploy writes.
MARKER = "Managed by pyinfra-devpi"

# The port line of the YAML config the deploy writes (render_server_yaml: one option a
# line under ``devpi-server:``).
_PORT = re.compile(r"^\s+port:\s*(\d+)\s*$", re.M)


def _config_argument(arguments: list[str]) -> str | None:
    for flag, value in zip(arguments, arguments[1:]):
        if flag == "--configfile":
            return value
    return None


def _blocks(output: list[str]) -> tuple[dict, dict]:
    """The ``@file`` and ``@config`` blocks, each ``{path: text}``."""
    found: dict[str, dict] = {"file": {}, "config": {}}
    current, chunks = None, []
    for line in output:
        kind, _, path = line.partition(" ")
        if current is None and kind in ("@file", "@config") and path:
            current, chunks = (kind[1:], path), []
        elif line == "@end" and current is not None:
            found[current[0]][current[1]] = decode_text(chunks)
            current = None
        elif current is not None:
            chunks.append(line)
        elif line.strip():
            raise FactProcessError(f"ManagedAgents: unexpected line {line!r}")
    if current is not None:
        raise FactProcessError(f"ManagedAgents: unterminated block for {current[1]}")
    return found["file"], found["config"]


def _plist_damage(text: str) -> tuple[dict | None, str | None]:
    """The plist's dict, or what is wrong with it."""
    if isinstance(text, Damaged):
        return None, text.reason
    try:
        plist = plistlib.loads(text.encode("utf-8"))
    except Exception as error:  # plistlib raises several kinds
        return None, f"not a plist ({type(error).__name__}: {error})"
    if not isinstance(plist, dict) or not isinstance(plist.get("Label"), str):
        return None, "a plist without a Label"
    return plist, None


class ManagedAgents(FactBase):
    """
    Returns ``{plist path: agent}`` for every plist in ``directory`` that carries the
    deploy's marker (``{}`` when there is none). An agent is a dict: ``label``,
    ``arguments`` (its ProgramArguments), ``config`` (the file after ``--configfile``,
    or ``None``), ``config_port`` (the port that config serves when it is one the
    deploy wrote, else ``None``) and ``damaged`` (what is wrong with a plist that
    cannot be read, e.g. truncated: then ``label`` is ``None``; else ``None``).

    + directory: the LaunchAgents dir
    """

    @staticmethod
    def default():
        return {}  # no output: no plist of the deploy's there

    def command(self, directory):
        # facts/managed_agents.sh
        return shell_script.render(__file__, "managed_agents", dir=directory, marker=MARKER, suffix=PLIST_SUFFIX)

    def process(self, output):
        plists, configs = _blocks(output)
        agents = {}
        for path, text in plists.items():
            plist, damage = _plist_damage(text)
            if plist is None:
                agents[path] = {"label": None, "arguments": [], "config": None, "config_port": None,
                                "damaged": damage}
                continue
            arguments = [str(a) for a in plist.get("ProgramArguments") or []]
            config = _config_argument(arguments)
            config_text = configs.get(config) if config else None
            port = _PORT.search(config_text) if config_text and not isinstance(config_text, Damaged) else None
            agents[path] = {"label": plist["Label"], "arguments": arguments, "config": config,
                            "config_port": int(port.group(1)) if port else None, "damaged": None}
        return agents

"""
The LaunchAgents this deploy wrote (and may have to retire), found by the marker
its plist template carries.
"""

from __future__ import annotations

import plistlib
import shlex

from pyinfra.api.exceptions import FactProcessError

from facts.files import FileContents
from pyinfra_devpi.layout import PLIST_SUFFIX

# The comment render.py's plist template puts in every plist the deploy writes.
MARKER = "Managed by pyinfra-devpi"


class ManagedAgents(FileContents):
    """
    Returns ``{plist path: {"label": ..., "arguments": [...]}}`` for every plist
    in ``directory`` that carries the deploy's marker (``{}`` when there is none).
    """

    @staticmethod
    def default():
        return {}  # no output: no plist of the deploy's there

    def command(self, directory):
        return (
            f"for f in {shlex.quote(directory)}/*{PLIST_SUFFIX}; do "
            f'if [ -f "$f" ] && grep -q -F {shlex.quote(MARKER)} "$f" 2>/dev/null; then '
            'echo "@file $f"; base64 < "$f"; echo "@end"; fi; done; true'
        )

    def process(self, output):
        agents = {}
        for path, text in super().process(output).items():
            try:
                plist = plistlib.loads(text.encode("utf-8"))
            except Exception as error:  # plistlib raises several kinds
                raise FactProcessError(f"ManagedAgents: {path} is not a plist: {error}") from None
            label = plist.get("Label")
            if isinstance(label, str):
                arguments = plist.get("ProgramArguments")
                agents[path] = {"label": label, "arguments": [str(a) for a in arguments or []]}
        return agents

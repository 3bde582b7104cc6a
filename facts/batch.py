"""
Several facts' commands in one round trip.

pyinfra runs one remote command per fact; over SSH each costs a channel, a shell and
a round trip (~20-40 ms here), which is most of a no-change rerun's remote time.
``FactBatch`` runs other facts' commands one after another in a single shell, each in
its own subshell (so an ``exit`` in one cannot end the rest), and returns each one's
output lines and exit status. It does not process them: the caller
(``facts.snapshot.read_batch``) hands each output to its own fact's pure
``process()``, exactly as pyinfra would.
"""

from __future__ import annotations

import re

from pyinfra.api import FactBase, StringCommand
from pyinfra.api.exceptions import FactProcessError

# Printed after each command, on a line of its own: "<marker> <index> <exit status>".
MARKER = "@@pyinfra-devpi-fact-batch"
_MARKER_RE = re.compile(rf"^{re.escape(MARKER)} (\d+) (\d+)$")


def command_text(fact_cls: type[FactBase], kwargs: dict) -> str:
    """The shell text of ``fact_cls``'s command for ``kwargs``.

    Only facts whose command holds no secret belong in a batch: the text is
    unmasked (it runs on the host as it is).
    """
    if fact_cls.requires_command is not FactBase.requires_command:
        # pyinfra's "command not found" handling would be lost in a batch.
        raise ValueError(f"{fact_cls.__name__} declares requires_command: read it on its own")
    command = fact_cls().command(**kwargs)
    if isinstance(command, StringCommand):
        return command.get_raw_value()
    return str(command)


class FactBatch(FactBase):
    """
    Returns, for each command given, ``{"status": exit status, "lines": [stdout
    lines]}``, in order.

    + commands: shell commands (each a complete script, e.g. ``command_text(...)``)
    """

    def command(self, commands):
        parts = []
        for index, text in enumerate(commands):
            # The newline before the marker ends a last line printed without one;
            # process() drops the empty line it leaves after one that had it.
            parts.append(f"(\n{text}\n) </dev/null; printf '\\n{MARKER} {index} %s\\n' $?")
        return "\n".join(parts)

    def process(self, output):
        results: list[dict] = []
        lines: list[str] = []
        for line in output:
            match = _MARKER_RE.match(line)
            if match is None:
                lines.append(line)
                continue
            index, status = int(match.group(1)), int(match.group(2))
            if index != len(results):
                raise FactProcessError(f"FactBatch: result {index} arrived as number {len(results)}")
            if lines and lines[-1] == "":
                lines.pop()
            results.append({"status": status, "lines": lines})
            lines = []
        if any(line.strip() for line in lines):
            raise FactProcessError(f"FactBatch: output after the last command: {lines[:3]!r}")
        return results

"""
The backups the ``<label>.backup`` job made: what its status file recorded and which
good backups the backup dir holds.
"""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, print_block, script, split_blocks
from pyinfra_devpi.layout import BACKUP_MANIFEST, BACKUP_PREFIX


class Backups(FactBase):
    """
    Returns a dict: ``directory``, ``count`` (good backups kept: ``devpi-backup-*`` dirs
    with a manifest), ``names`` (oldest first), ``newest``, ``last_success`` (``time``,
    ``epoch``, ``name``, ``size`` in bytes, ``files``, ``seconds``; ``None`` when no
    backup succeeded yet), ``last_failure`` (``time``, ``epoch``, ``exit_code``,
    ``log_tail``; ``None`` when none failed), ``status_unreadable`` (the status file
    exists but is not the backup program's JSON) and ``now`` (the host's clock, epoch
    seconds: what the age of the last success is measured against).

    + status_file: the backup program's status record (``<home>/backup.status.json``)
    + directory: the backup dir
    """

    def command(self, status_file, directory):
        return script([
            f"s={shlex.quote(status_file)}; d={shlex.quote(directory)}",
            'echo "now=$(date +%s)"',
            print_block('"$s"', "status"),
            f'for b in "$d"/{BACKUP_PREFIX}*; do '
            f'if [ -f "$b"/{BACKUP_MANIFEST} ]; then echo "backup=${{b##*/}}"; fi; done',
        ])

    def process(self, output):
        plain, blocks = split_blocks(output, ("status",), "Backups")
        values = key_values(plain)
        if not values.get("now", "").isdigit():
            raise FactProcessError(f"Backups: unexpected output: {output[:3]!r}")
        names = sorted(line[len("backup="):] for line in plain if line.startswith("backup="))
        status, unreadable = {}, False
        if "status" in blocks:
            text = "\n".join(blocks["status"]).strip()
            try:
                status = json.loads(text) if text else {}
            except ValueError:
                status = None
            if not isinstance(status, dict):
                status, unreadable = {}, True
        return {
            "count": len(names),
            "names": names,
            "newest": names[-1] if names else None,
            "last_success": status.get("last_success"),
            "last_failure": status.get("last_failure"),
            "status_unreadable": unreadable,
            "now": int(values["now"]),
        }

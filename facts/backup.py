"""
The backups the ``<label>.backup`` job made: what its status file recorded and which
good backups the backup dir holds.
"""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, script, split_blocks
from facts.files import Damaged, decode_text, text_block
from pyinfra_devpi.layout import BACKUP_EXPORT_DIR, BACKUP_MANIFEST, BACKUP_PREFIX, DATAINDEX


class Backups(FactBase):
    """
    Returns a dict: ``directory``, ``count`` (good backups kept: ``devpi-backup-*`` dirs
    with a manifest), ``names`` (oldest first), ``newest``, ``last_success`` (``time``,
    ``epoch``, ``name``, ``size`` in bytes, ``files``, ``seconds``; ``None`` when no
    backup succeeded yet), ``last_failure`` (``time``, ``epoch``, ``exit_code``,
    ``log_tail``; ``None`` when none failed), ``status_unreadable`` (the status file
    exists but is not the backup program's JSON), ``status_damaged`` (what is wrong with
    it then, e.g. a byte that is not UTF-8; else ``None``) and ``now`` (the host's clock, epoch
    seconds: what the age of the last success is measured against).

    + status_file: the backup program's status record (``<home>/backup.status.json``)
    + directory: the backup dir
    """

    def command(self, status_file, directory):
        return script([
            f"s={shlex.quote(status_file)}; d={shlex.quote(directory)}",
            'echo "now=$(date +%s)"',
            text_block('"$s"', "status"),
            f'for b in "$d"/{BACKUP_PREFIX}*; do '
            f'if [ -f "$b"/{BACKUP_MANIFEST} ]; then echo "backup=${{b##*/}}"; fi; done',
        ])

    def process(self, output):
        plain, blocks = split_blocks(output, ("status",), "Backups")
        values = key_values(plain)
        if not values.get("now", "").isdigit():
            raise FactProcessError(f"Backups: unexpected output: {output[:3]!r}")
        names = sorted(line[len("backup="):] for line in plain if line.startswith("backup="))
        status, damaged = {}, None
        if "status" in blocks:
            text = decode_text(blocks["status"])
            try:
                status = json.loads(text) if text.strip() and not isinstance(text, Damaged) else {}
            except ValueError as error:
                status, damaged = None, f"not JSON ({error})"
            if isinstance(text, Damaged):
                damaged = text.reason
            elif not isinstance(status, dict):
                damaged = damaged or "not a JSON object"
            if damaged:
                status = {}
        return {
            "count": len(names),
            "names": names,
            "newest": names[-1] if names else None,
            "last_success": status.get("last_success"),
            "last_failure": status.get("last_failure"),
            "status_unreadable": damaged is not None,
            "status_damaged": damaged,
            "now": int(values["now"]),
        }


# The manifest's top-level keys the restore shows (the file list is not read).
_SUMMARY_KEYS = ("name", "created", "devpi_server", "serverversion", "file_count", "size", "include_mirrored_files")


class BackupSource(FactBase):
    """
    One backup as a restore sees it. Returns ``None`` when ``path`` is not a
    directory, else a dict: ``path`` (physical), ``has_manifest``, ``has_dataindex``
    (devpi-export's ``dataindex.json``), and the manifest's summary (``name``,
    ``created``, ``devpi_server``, ``serverversion``, ``file_count``, ``size``,
    ``include_mirrored_files``; ``None`` each when missing).

    + path: the backup's directory
    """

    def command(self, path):
        keys = "|".join(_SUMMARY_KEYS)
        return script([
            f"b={shlex.quote(path)}",
            'if [ ! -d "$b" ]; then echo "missing=true"; else',
            'echo "path=$(cd "$b" && pwd -P)"',
            f'm="$b"/{BACKUP_MANIFEST}',
            'if [ -f "$m" ]; then echo "has_manifest=true"; '
            f"grep -E '^ \"({keys})\": ' \"$m\" | sed 's/^ \"\\([a-z_]*\\)\": */summary.\\1=/; s/,$//'; fi",
            f'if [ -f "$b"/{BACKUP_EXPORT_DIR}/{DATAINDEX} ]; then echo "has_dataindex=true"; fi',
            "fi",
        ])

    def process(self, output):
        values = key_values(output)
        if values.get("missing") == "true":
            return None
        if "path" not in values:
            raise FactProcessError(f"BackupSource: unexpected output: {output[:3]!r}")
        summary = {}
        for key in _SUMMARY_KEYS:
            raw = values.get(f"summary.{key}")
            try:
                summary[key] = json.loads(raw) if raw is not None else None
            except ValueError:
                summary[key] = None
        return {
            "path": values["path"],
            "has_manifest": values.get("has_manifest") == "true",
            "has_dataindex": values.get("has_dataindex") == "true",
            **summary,
        }

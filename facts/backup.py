"""
The backups the ``<label>.backup`` job made: what its status file recorded and which
backups the backup dir really holds, as the backup program itself vouches for them.
"""

from __future__ import annotations

import base64
import json
import shlex
import zlib

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, script, split_blocks
from facts.files import Damaged, decode_text, text_block
from pyinfra_devpi import backup as bk
from pyinfra_devpi.layout import BACKUP_EXPORT_DIR, BACKUP_MANIFEST, DATAINDEX


# The backup program's text, compressed (the fact's command rides in the batch's one
# shell command, whose length the host limits), run by ``python -c``.
_PROGRAM = (
    "import base64, zlib; exec(compile(zlib.decompress(base64.b64decode('"
    + base64.b64encode(zlib.compress(bk.program_text().encode(), 9)).decode()
    + "')), 'devpi-backup.py', 'exec'))"
)


class Backups(FactBase):
    """
    Returns a dict: ``backups`` (the verified backups in the backup dir, oldest first:
    ``name``, ``created``, ``epoch``, ``size``, ``files``; ``None`` when the backup
    program could not look: no venv yet), ``count``, ``names`` and ``newest`` (of
    those), ``unverified`` (``name`` and ``reason`` of each ``devpi-backup-*`` entry the
    program cannot vouch for: it never counts or removes them), ``dir_problem`` (why the
    backup dir itself cannot be trusted, or ``None``), ``last_success`` (``time``,
    ``epoch``, ``name``, ``dir``, ``size`` in bytes, ``files``, ``seconds``, and
    ``waited_seconds`` / ``waited_for`` when it waited for a deploy), ``last_failure``
    (``time``, ``epoch``, ``exit_code``, ``log_tail``, ``refused``), ``last_skipped``
    (``time``, ``epoch``, ``reason``, ``waited_seconds``): what the status file recorded,
    ``None`` each when there is none; ``status_unreadable`` (the status file exists but
    is not the backup program's JSON), ``status_damaged`` (what is wrong with it then,
    e.g. a byte that is not UTF-8; else ``None``) and ``now`` (the host's clock, epoch seconds).

    The backup dir is looked at by the backup program's own ``--list`` (its text is
    sent with the command, run by ``python``: the live venv's): each backup's own
    entries, marker and manifest; a backup the last backup run's check of every file
    found wrong (the status file's ``unverified``) is not counted either.

    + status_file: the backup program's status record (``<home>/backup.status.json``)
    + directory: the backup dir
    + python: the Python that runs the program (the live venv's)
    """

    def command(self, status_file, directory, python):
        return script([
            f"s={shlex.quote(status_file)}; d={shlex.quote(directory)}; py={shlex.quote(python)}",
            'echo "now=$(date +%s)"',
            text_block('"$s"', "status"),
            'if [ -x "$py" ]; then "$py" -I -c ' + shlex.quote(_PROGRAM) + ' --list --dest "$d" --names '
            + " ".join(shlex.quote(n) for n in bk.NAMES) + "; else echo list=unavailable; fi",
        ])

    def process(self, output):
        plain, blocks = split_blocks(output, ("status",), "Backups")
        values = key_values(plain)
        if not values.get("now", "").isdigit():
            raise FactProcessError(f"Backups: unexpected output: {output[:3]!r}")
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
        listed = None
        if values.get("list", "unavailable") != "unavailable":
            try:
                listed = json.loads(values["list"])
            except ValueError:
                raise FactProcessError(f"Backups: the backup program's list is not JSON: {values['list'][:80]!r}")
        backups = None if listed is None else listed["backups"]
        unverified = [] if listed is None else listed["unverified"]
        # what the last backup run's check of every file found wrong still counts
        if backups is not None and isinstance(status.get("unverified"), list):
            deep = {u.get("name"): u.get("reason") for u in status["unverified"] if isinstance(u, dict)}
            unverified += [{"name": b["name"], "reason": deep[b["name"]]} for b in backups if b["name"] in deep]
            backups = [b for b in backups if b["name"] not in deep]
        names = [b["name"] for b in backups or ()]

        def record(key):
            value = status.get(key)
            return value if isinstance(value, dict) else None

        return {
            "backups": backups,
            "count": len(names),
            "names": names,
            "newest": names[-1] if names else None,
            "unverified": unverified,
            "dir_problem": None if listed is None else listed["problem"],
            "last_success": record("last_success"),
            "last_failure": record("last_failure"),
            "last_skipped": record("last_skipped"),
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

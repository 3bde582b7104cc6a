"""
What a restore reads of a backup before it changes anything: ``BackupCheck``.
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from pyinfra_devpi import backup_check
from pyinfra_devpi.layout import BACKUP_EXPORT_DIR, BACKUP_MANIFEST, BACKUP_MARKER, DATAINDEX

q = shlex.quote


@functools.cache
def program_source() -> str:
    """``backup_check.py``'s text: the host runs it with ``python -I -c``."""
    return Path(backup_check.__file__).read_text(encoding="utf-8")


def check_arguments(backup: str, uid: int) -> str:
    """``backup_check.py``'s arguments (shell words), but ``--hashes`` / ``--verify``."""
    return " ".join(q(a) for a in (backup, "--uid", str(int(uid)), "--names", BACKUP_MANIFEST,
                                   BACKUP_EXPORT_DIR, DATAINDEX, BACKUP_MARKER))


class BackupCheck(FactBase):
    """
    ``pyinfra_devpi/backup_check.py`` run on the host with the live venv's Python, sizes
    only (no file is read but the manifest and ``dataindex.json``): can the restore
    trust the backup? Returns ``None`` when there is no ``python`` to run it (no
    converged devpi), else a dict: ``path`` (physical), ``problems`` (the first few,
    each naming its path), ``problem_count``, ``files``, ``size``.

    + path: the backup's directory
    + python: the live venv's Python
    + uid: the SSH user's uid (who must own the backup)
    """

    def command(self, path, python, uid):
        return (
            f"if [ -x {q(python)} ]; then {q(python)} -I -c {q(program_source())} {check_arguments(path, uid)}; "
            "else echo no-python; fi"
        )

    def process(self, output):
        text = "\n".join(output).strip()
        if text == "no-python":
            return None
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if not isinstance(found, dict) or not isinstance(found.get("problems"), list):
            raise FactProcessError(f"BackupCheck: unexpected output: {output[:3]!r}")
        return found

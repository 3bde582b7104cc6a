"""
Scheduled backups (``devpi_backup``): the program the backup job runs, its
arguments, and how old a last good backup may be before the plan warns.

The job (``<label>.backup``, ``StartCalendarInterval``: daily at hour:minute) runs
``backup_program.py`` with the live venv's Python and ``devpi-export``; what it does
is in that file's docstring. devpi keeps running meanwhile: ``devpi-export`` reads
one snapshot of devpi's database (docs/operating.md, "Backups and restore").
"""

from __future__ import annotations

from pathlib import Path

from . import layout
from .config import DevpiConfig

PROGRAM_SOURCE = Path(__file__).resolve().parent / "backup_program.py"

# The schedule is daily: the plan warns when the last good backup is older than two
# runs' worth.
SCHEDULE_SECONDS = 24 * 3600
STALE_AFTER = 2 * SCHEDULE_SECONDS


def program_text() -> str:
    return PROGRAM_SOURCE.read_text(encoding="utf-8")


def program_arguments(config: DevpiConfig) -> list[str]:
    """What the backup job runs (its plist's ProgramArguments)."""
    paths = config.paths
    backup = config.backup
    assert backup is not None
    arguments = [
        paths.bin("python"), "-I", paths.backup_program,
        "--export", paths.bin("devpi-export"),
        "--configfile", paths.config_file,
        "--serverdir", paths.server_dir,
        "--serverversion-file", paths.serverversion,
        "--dest", config.backup_dir,
        "--keep", str(backup.keep),
        "--status", paths.backup_status,
        "--server-version", config.server_version,
        "--names", layout.BACKUP_PREFIX, layout.BACKUP_MANIFEST, layout.BACKUP_EXPORT_DIR,
        layout.TRANSIENT_SUFFIX,
    ]
    if backup.mirrored_files:
        arguments.append("--include-mirrored-files")
    return arguments


def _age(seconds: int) -> str:
    hours = seconds // 3600
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h {seconds % 3600 // 60} min"


def staleness(found: dict | None, backup_dir: str) -> str | None:
    """The plan's warning about the backups found (the ``Backups`` fact), or None.

    Warns when the last good backup is older than twice the schedule, or when backups
    have failed and none ever succeeded. A job that has not run yet is not warned about.
    """
    if found is None:
        return None
    success, failure = found.get("last_success"), found.get("last_failure")
    now = found["now"]
    failed = ""
    if failure:
        tail = "; ".join((failure.get("log_tail") or [])[-3:])
        failed = f"; the last backup failed at {failure.get('time')} (exit {failure.get('exit_code')}): {tail}"
    if success is None:
        return f"no backup of devpi has succeeded yet (backup dir {backup_dir}){failed}" if failure else None
    age = now - int(success.get("epoch") or 0)
    if age > STALE_AFTER:
        return (
            f"the last good backup of devpi is {_age(age)} old ({success.get('name')}, "
            f"{success.get('time')}), older than twice the daily schedule{failed}"
        )
    return None

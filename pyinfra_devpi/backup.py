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

from . import layout, shell_script
from .config import DevpiConfig
from .deploy_lock import LOCK_EXIT

PROGRAM_SOURCE = Path(__file__).resolve().parent / "backup_program.py"

# The schedule is daily: the plan warns when the newest verified backup is older than
# two runs' worth.
SCHEDULE_SECONDS = 24 * 3600
STALE_AFTER = 2 * SCHEDULE_SECONDS
# How long a scheduled backup waits for a deploy that holds the deploy lock (a
# restore, a database upgrade) before it skips this day's backup.
LOCK_WAIT = 3600

# The entries not vouched for that the plan and the status name one by one.
NOTES_SHOWN = 3

# The names the program gets as ``--names`` (it runs without this package).
NAMES = (layout.BACKUP_PREFIX, layout.BACKUP_MANIFEST, layout.BACKUP_EXPORT_DIR, layout.TRANSIENT_SUFFIX,
         layout.BACKUP_MARKER)


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
        "--deploy-lock", paths.deploy_lock.lock,
        "--backup-lock", paths.backup_lock,
        "--lock-wait", str(LOCK_WAIT),
        "--names", *NAMES,
    ]
    if backup.mirrored_files:
        arguments.append("--include-mirrored-files")
    return arguments


def _age(seconds: int) -> str:
    hours = seconds // 3600
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h {seconds % 3600 // 60} min"


def _newer(record: dict | None, than: int | None) -> bool:
    return bool(record) and (than is None or int(record.get("epoch") or 0) > than)


def problems(found: dict | None, backup_dir: str) -> list[str]:
    """What makes the backups untrustworthy (the status fails on it): a backup dir
    another user can write, where the program refuses to back up or prune."""
    if not found or not found.get("dir_problem"):
        return []
    return [
        f"the backup dir cannot be trusted ({found['dir_problem']}): the backup program refuses to write or "
        f"prune backups there and nothing in it counts as a backup; make {backup_dir} the SSH user's own and "
        "writable by nobody else (chmod go-w), or set devpi_backup's dir to such a directory"
    ]


def staleness(found: dict | None, backup_dir: str) -> str | None:
    """The warning about the backups found (the ``Backups`` fact), or None.

    Counts only the verified backups in the backup dir (``found["backups"]``), not the
    last success recorded: a backup pruned, removed or left in a previous dir is not
    one. Warns when the newest is older than twice the schedule, or when there is none
    though the job has run. A job that has not run yet is not warned about.
    """
    if found is None or found.get("backups") is None:
        return None
    newest = found["backups"][-1] if found["backups"] else None
    newest_epoch = newest.get("epoch") if newest else None
    success, failure, skipped = found.get("last_success"), found.get("last_failure"), found.get("last_skipped")
    since = ""
    if _newer(failure, newest_epoch):
        tail = "; ".join((failure.get("log_tail") or [])[-3:])
        since += f"; the last backup failed at {failure.get('time')} (exit {failure.get('exit_code')}): {tail}"
    if _newer(skipped, newest_epoch):
        since += f"; the backup at {skipped.get('time')} was skipped: {skipped.get('reason')}"
    if newest is None:
        if not (success or failure or skipped):
            return None
        elsewhere = ""
        if success and success.get("name"):
            elsewhere = (f"; the last recorded success, {success['name']} ({success.get('time')}), is not a "
                         f"verified backup in {backup_dir}")
        return f"no verified backup of devpi in {backup_dir}{elsewhere}{since}"
    age = found["now"] - int(newest_epoch or 0)
    if age > STALE_AFTER:
        return (
            f"the newest verified backup of devpi is {_age(age)} old ({newest['name']}, "
            f"{newest.get('created')}), older than twice the daily schedule{since}"
        )
    return None


def notes(found: dict | None) -> list[str]:
    """Warnings about what the backup dir holds besides verified backups."""
    entries = (found or {}).get("unverified") or []
    shown = [f"{entry['name']} in the backup dir is not counted (the backup program cannot vouch for it and "
             f"never removes it): {entry['reason']}" for entry in entries[:NOTES_SHOWN]]
    if len(entries) > NOTES_SHOWN:
        shown.append(f"and {len(entries) - NOTES_SHOWN} more entries in the backup dir are not counted "
                     "(the Backups fact lists them all)")
    return shown


def warnings(found: dict | None, backup_dir: str) -> list[str]:
    """The staleness warning (which names a skip since the newest backup), or a skip
    since the newest backup on its own, then the entries not vouched for."""
    stale = staleness(found, backup_dir)
    said = [stale] if stale else []
    skipped = (found or {}).get("last_skipped")
    newest = ((found or {}).get("backups") or [{}])[-1].get("epoch")
    if not stale and found and found.get("backups") is not None and _newer(skipped, newest):
        said.append(f"the scheduled backup at {skipped.get('time')} was skipped: {skipped.get('reason')}")
    return [*said, *notes(found)]


def wait_for_backup(config: DevpiConfig) -> str:
    """The command a restore or a database upgrade runs before it touches the server
    dir or a backup (under the deploy lock, which keeps a new backup from starting):
    wait, up to ``devpi_lock_wait``, while a scheduled backup holds its lock, else fail
    having changed nothing. The script is ``backup_wait.sh``."""
    paths = config.paths
    return shell_script.render(
        __file__, "backup_wait", f"wait while a scheduled backup runs ({paths.backup_lock})",
        lock=paths.backup_lock, owner_file=paths.backup_lock_owner, wait=int(config.lock_wait),
        lock_exit=LOCK_EXIT, log=paths.backup_log,
    )

"""
Scheduled backups (``devpi_backup``): the backup program on the host, and what the
backup job has done (the ``Backups`` fact, for the plan's warning).

The job itself is a LaunchAgent like devpi's (``operations/launchd.py``: ``agent`` with
``keep_running=False`` while ``devpi_backup`` is set, ``absent`` once it is unset).
"""

from __future__ import annotations

from pyinfra import host

from facts.backup import Backups
from facts.snapshot import FactRead, read
from pyinfra_devpi import backup as bk
from pyinfra_devpi.config import DevpiConfig

from . import launchd
from .announce import log_once, operation
from .textfile import replace_damaged, write_text


def backups_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(Backups, status_file=config.paths.backup_status, directory=config.backup_dir,
                       python=config.paths.bin("python"))


def reads(config: DevpiConfig, domain: str) -> list:
    """What the backup job's operations read: the job and its plist (set or not: an
    unset ``devpi_backup`` removes them), the program and the backups when set."""
    paths = config.paths
    job = launchd.reads(paths.backup_label, domain, paths.backup_plist_file)
    if config.backup is None:
        return job
    return [*job, paths.backup_program, backups_read(config)]


def found(config: DevpiConfig) -> dict | None:
    """The ``Backups`` fact as the run found it (None when backups are not configured)."""
    return read(host, backups_read(config)) if config.backup is not None else None


def warn_if_stale(config: DevpiConfig) -> None:
    """The plan warns when the newest verified backup in the backup dir is older than
    twice the schedule (or there is none), when the dir cannot be trusted, and about
    each entry there the backup program cannot vouch for."""
    backups = found(config)
    for message in [*bk.problems(backups, config.backup_dir), *bk.warnings(backups, config.backup_dir)]:
        log_once(f"{message}; see {config.paths.backup_log}")


@operation
def program(config: DevpiConfig):
    """The backup program the job runs (``<home>/bin/devpi-backup.py``); its status
    record replaced when it is damaged."""
    commands = list(write_text(config.paths.backup_program, bk.program_text(), mode="755"))
    damaged = (found(config) or {}).get("status_damaged")
    if damaged:
        # Its record is lost either way: an empty one, which the next backup fills.
        commands += replace_damaged(config.paths.backup_status, damaged, "{}\n")
    if not commands:
        host.noop(f"{config.paths.backup_program} is up to date")
    yield from commands

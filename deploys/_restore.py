"""
The packaged restore: ``pyinfra INVENTORY deploys/devpi_restore.py --data
devpi_restore_from=<backup>``, only on explicit request.

``devpi_restore_from`` is a backup's name (``devpi-backup-<stamp>``, looked up in the
backup dir: ``devpi_backup``'s ``dir``, else ``<devpi_home>/backups``) or its path
(absolute, or ``~/...``). The host must hold a converged devpi (its venv, config and
plist: run ``deploys/devpi.py`` first). Every check that can refuse the restore runs
while pyinfra plans, the backup's too (``BackupCheck``: the SSH user's own plain files,
exactly as its manifest lists them), so a refused restore changes nothing; the steps
are ``operations/restore.py``'s, the health gate (and the rollback) among them.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy

from facts.launchd import LaunchdSession
from facts.snapshot import FactRead, file_content, prefetch, read
from operations import deploy_lock, devpi, launchd, restore
from pyinfra_devpi import checks
from pyinfra_devpi.config import DevpiConfig, build_config
from pyinfra_devpi.errors import ConfigError, DeployError
from pyinfra_devpi.launchd_scope import job_place
from pyinfra_devpi.layout import BACKUP_EXPORT_DIR, BACKUP_MANIFEST, DATAINDEX

RESTORE_KEY = "devpi_restore_from"
USAGE = f"pyinfra INVENTORY deploys/devpi_restore.py --data {RESTORE_KEY}=<backup name or path>"


def backup_path(config: DevpiConfig, value, user_home: str) -> str:
    """Where the backup named by ``devpi_restore_from`` is on the host."""
    where = f"`{RESTORE_KEY}`"
    allowed = "use a backup's name (devpi-backup-<stamp>, in the backup dir) or its absolute path"
    value = checks.string(where, value, allowed).strip().rstrip("/")
    if not value or value in (".", ".."):
        raise checks.fail(where, value, allowed)
    if value.startswith("~/"):
        return user_home.rstrip("/") + value[1:]
    if value.startswith("/"):
        if "/../" in value + "/":
            raise checks.fail(where, value, "paths cannot contain '..'")
        return value
    if "/" in value:
        raise checks.fail(where, value, allowed)
    return f"{config.backup_dir}/{value}"


def check_trust(path: str, checked: dict | None) -> None:
    """Refuse a backup ``backup_check.py`` found problems with, naming each path."""
    if checked is None:
        return  # no venv: the converged-devpi check says so
    problems = checked["problems"]
    if problems:
        more = checked.get("problem_count", len(problems)) - len(problems)
        listed = "\n  ".join(problems) + (f"\n  ... and {more} more" if more > 0 else "")
        raise DeployError(
            f"refusing to restore {checked.get('path') or path}: a restore imports only the SSH user's own "
            "plain files (no symlink, device or FIFO; not writable by group or others), exactly as the "
            f"backup's manifest lists them; nothing was changed:\n  {listed}"
        )


def check_source(path: str, found: dict | None) -> None:
    if found is None:
        raise DeployError(f"there is no backup at {path}: name one of the backup dir's devpi-backup-* dirs, "
                          f"or give its path ({USAGE})")
    if not found["has_manifest"]:
        raise DeployError(f"{path} has no {BACKUP_MANIFEST}: it is not a finished backup of this deploy")
    if not found["has_dataindex"]:
        raise DeployError(f"{path}/{BACKUP_EXPORT_DIR} has no {DATAINDEX}: not a devpi-export dump")


@deploy("devpi restore")
def devpi_restore():
    """Restore devpi's server dir from a backup, keeping the one it replaces."""
    session = read(host, FactRead.of(LaunchdSession))
    if not session["launchctl"]:
        raise DeployError(f"launchd is not available on {host.name}: this restore needs the macOS host "
                          "deploys/devpi.py converged")
    data = dict(host.data.dict())
    source = data.pop(RESTORE_KEY, None)
    if source is None:
        raise ConfigError(f"say which backup to restore: {USAGE}")
    config = build_config(data, session["home"])
    place = job_place(config, session)
    domain = place.domain
    paths = config.paths
    path = backup_path(config, source, session["home"])

    prefetch(host, [
        *deploy_lock.reads(config),
        devpi.server_dir_read(config),
        devpi.venv_read(config),
        launchd.job_read(config.label, domain),
        paths.plist_file,
        *restore.reads(config, path, session["uid"]),
    ])
    deploy_lock.begin(config)
    found = read(host, restore.source_read(path))
    check_source(path, found)
    if read(host, devpi.venv_read(config)) is None or file_content(host, paths.plist_file) is None:
        raise DeployError(f"{host.name} has no converged devpi ({paths.venv}, {paths.plist_file}): "
                          "run deploys/devpi.py first, then restore")
    checked = read(host, restore.check_read(config, path, session["uid"]))
    check_trust(path, checked)
    physical = checked["path"]
    host.log(
        f"restoring {physical} ({found.get('created')}, {found.get('file_count')} files, "
        f"{found.get('size')} bytes, devpi-server {found.get('devpi_server')}) into {paths.server_dir}; "
        f"the current server dir is kept as {paths.server_dir}.before-restore-<time>",
        logger.info,
    )
    job = read(host, launchd.job_read(config.label, domain))
    restore_op = restore.server_dir(name="Restore the server dir from " + physical, config=config,
                                    backup=physical, uid=session["uid"], domain=domain, job=job, sudo=place.sudo)
    deploy_lock.release(name="Release the deploy lock", config=config, after=[restore_op])


"""
The packaged uninstall (``deploys/devpi_uninstall.py``): devpi taken off a host.

Boots the job out (in every launchd domain: the SSH user's two and the system domain, so
either ``devpi_launchd_scope``) and removes its plists, removes the Caddy
site block (restarting Caddy the configured way), and runs its extra steps (``STEPS``:
the backup job's removal). Everything devpi keeps (the
server dir, the venvs, the config, the secret, the logs) stays where it is, and the run
says what and where, unless ``devpi_uninstall_purge`` is set: then those exact paths
(``Layout.removable``) are removed, each named in the plan, and devpi_home too once
nothing else is left in it. A deploy afterwards brings devpi back on the kept data.

Two remote commands to plan, as for the deploy (the session, then one fact batch); the
deploy lock is taken by the first change, and a second uninstall changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from pyinfra import host, logger
from pyinfra.api import deploy

from facts.launchd import LaunchdSession
from facts.snapshot import FactRead, prefetch, read
from operations import deploy_lock
from operations import uninstall as ops
from pyinfra_devpi.config import DevpiConfig, build_config
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.launchd_scope import JobPlace, job_place
from pyinfra_devpi.render import render_caddy_removed


@dataclasses.dataclass(frozen=True)
class Step:
    """An extra part of the uninstall (after the Caddy block, before a purge):
    ``reads(config, place)`` (prefetched with the rest; ``place``: the run's
    ``JobPlace``, whose ``domain`` is the jobs' domain), ``run(config, place)`` (calls its
    operations, returns their results, which the lock's release waits for) and
    ``kept(config)`` (``(what, path)`` it leaves, named in the report)."""

    name: str
    reads: Callable[[DevpiConfig, JobPlace], list]
    run: Callable[[DevpiConfig, JobPlace], list]
    kept: Callable[[DevpiConfig], list] = lambda config: []


def _backup_plists(config: DevpiConfig) -> tuple[str, str]:
    return (config.paths.agent_backup_plist_file, config.paths.daemon_backup_plist_file)


def _backup_job_reads(config: DevpiConfig, place: JobPlace) -> list:
    return ops.job_reads(config.paths.backup_label, place, _backup_plists(config))


def _backup_job_removal(config: DevpiConfig, place: JobPlace) -> list:
    paths = config.paths
    return [ops.job(name=f"Boot out and remove the job {paths.backup_label}", label=paths.backup_label,
                    place=place, plists=_backup_plists(config), daemon_plists=(paths.daemon_backup_plist_file,))]


def _backups_kept(config: DevpiConfig) -> list:
    # Backups are the copy of last resort: even a purge leaves them.
    return [("backups", config.backup_dir)] if config.backup is not None else []


# The scheduled backup job (devpi_backup) goes with devpi; its backups stay.
BACKUP_JOB = Step("the backup job", _backup_job_reads, _backup_job_removal, _backups_kept)

STEPS: list[Step] = [BACKUP_JOB]


def _size(found: dict) -> str:
    kib = found.get("kib")
    if kib is None:
        return found["kind"]
    return f"{found['kind']}, {kib / 1024:.1f} MiB" if kib >= 1024 else f"{found['kind']}, {kib} KiB"


def kept_by_steps(config: DevpiConfig) -> tuple:
    """What the extra steps keep, ``(what, path)``: the purge removes nothing that holds it."""
    return tuple(kept for step in STEPS for kept in step.kept(config))


def describe_leftovers(config: DevpiConfig, found: dict, plan: tuple[list, list] | None = None) -> list[str]:
    """What the uninstall keeps (or, with the purge, removes), each with its path;
    ``plan``: the purge's (``ops.purge_plan``), which the purge itself carries out."""
    present = [(what, path, found[path]) for what, path in config.paths.removable(config.log_backups) if found.get(path)]
    if not present:
        return [f"nothing of devpi's is left in {config.paths.home} or {config.paths.log_dir}"]
    if not config.uninstall_purge or plan is None:
        head = "kept (a deploy brings devpi back on them; devpi_uninstall_purge = True removes them)"
        return [f"{head}:"] + [f"  {what}: {path} ({_size(info)})" for what, path, info in present]
    remove, keep = plan
    lines = ["devpi_uninstall_purge is set: removes:"]
    lines += [f"  {what}: {path} ({_size(found[path])})" for what, path in remove]
    if keep:
        lines.append("and keeps:")
        lines += [f"  {what}: {path} (kept: {why})" for what, path, why in keep]
    return lines


@deploy("devpi uninstall")
def devpi_uninstall():
    """Take devpi off the host; keep its data unless ``devpi_uninstall_purge``."""
    session = read(host, FactRead.of(LaunchdSession))
    if not session["launchctl"]:
        raise DeployError(f"launchd is not available on {host.name} (no launchctl on the SSH user's PATH)")
    config = build_config(host.data.dict(), session["home"])
    place = job_place(config, session)
    kept = kept_by_steps(config)
    prefetch(host, [
        *deploy_lock.reads(config),
        *ops.reads(config, place, kept),
        *(r for step in STEPS for r in step.reads(config, place)),
    ])
    # Refused before any change when devpi_home lands on the SSH user's home.
    plan = ops.purge_plan(config, kept) if config.uninstall_purge else None
    deploy_lock.begin(config)
    for line in describe_leftovers(config, read(host, ops.paths_read(config)), plan):
        host.log(line, logger.info)
    for step in STEPS:
        for what, path in step.kept(config):
            host.log(f"  {what}: {path} (kept by {step.name})", logger.info)

    changes = [
        ops.job(name=f"Boot out and remove the job {config.label}", label=config.label, place=place,
                plists=(config.paths.agent_plist_file, config.paths.daemon_plist_file),
                daemon_plists=(config.paths.daemon_plist_file,)),
        # Caddy's own job, wherever it is loaded (`brew services`, as the SSH user or with sudo).
        ops.caddy_block(name="Remove the Caddy site block for devpi", config=config, place=place,
                        removed=render_caddy_removed(config)),
    ]
    for step in STEPS:
        changes += step.run(config, place)
    purge_op = None
    if config.uninstall_purge:
        purge_op = ops.purge(name="Purge devpi's data, venvs, config and logs", config=config, kept=kept)
        changes.append(purge_op)
    deploy_lock.release(name="Release the deploy lock", config=config, after=changes)
    if purge_op is not None:
        ops.home(name=f"Remove {config.paths.home} if nothing else is in it", config=config, after=[purge_op])

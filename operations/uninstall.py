"""
Take devpi off a host (``deploys/devpi_uninstall.py``): the job booted out and its plist
removed, the Caddy site block removed (Caddy restarted the configured way), and, only
with ``devpi_uninstall_purge``, what the deploy left in devpi_home and the log dir.

Each operation reads what the deploy's fact batch read (``reads``) and yields nothing
when its part is already gone, so a second uninstall changes nothing.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger

from facts.files import PathsFound
from facts.managed_agents import MARKER
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.snapshot import FactRead, file_content, read

from .announce import operation
from .caddy import restart_command
from .launchd import job_read
from .retire import bootout_and_wait, other_domain
from .textfile import write_text

q = shlex.quote


def paths_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(PathsFound, paths=tuple(path for _, path in config.paths.removable(config.log_backups)))


def reads(config: DevpiConfig, domain: str) -> list:
    """What the uninstall reads from the host."""
    paths = config.paths
    return [
        job_read(config.label, domain),
        job_read(config.label, other_domain(domain)),
        paths.plist_file,
        paths.caddy_site_file,
        paths.caddy_restart_pending,
        paths_read(config),
    ]


@operation
def job(config: DevpiConfig, domain: str):
    """Boot the job out (in both launchd domains: the deploy's and the other) and wait until
    launchd lets it go; then remove its plist, so it does not load at the next login."""
    paths = config.paths
    commands = []
    for where in (domain, other_domain(domain)):
        loaded = read(host, job_read(config.label, where))
        if loaded and loaded.get("loaded"):
            commands.append(bootout_and_wait(f"{where}/{config.label}"))
    if file_content(host, paths.plist_file) is not None:
        commands.append(f"rm -f {q(paths.plist_file)}")
    if not commands:
        host.noop(f"{config.label} is not loaded and {paths.plist_file} does not exist")
    yield from commands


@operation
def caddy_block(config: DevpiConfig, domain: str, removed: str):
    """Replace the deploy's Caddy site block with ``removed`` (a file that serves nothing:
    a Caddyfile may import the site file by name, and Caddy refuses to start on an import
    of a missing file) and restart Caddy the configured way. A file without the deploy's
    marker is not the deploy's: left alone. A restart that fails is retried by the next
    uninstall (the marker in devpi_home stays until one succeeds)."""
    paths = config.paths
    block = file_content(host, paths.caddy_site_file)
    pending = file_content(host, paths.caddy_restart_pending) is not None
    ours = block is not None and MARKER in block and block != removed
    if block is not None and MARKER not in block:
        logger.warning(f"{host.print_prefix}{paths.caddy_site_file} was not written by this deploy: left alone")
    if not ours and not pending:
        host.noop(f"no Caddy site block for devpi at {paths.caddy_site_file}")
        return
    marker = q(paths.caddy_restart_pending)
    commands = []
    if ours:
        # Marked before the block goes, in devpi_home (kept unless purged after this).
        commands.append(f"if [ -d {q(paths.home)} ]; then : > {marker}; fi")
        commands += list(write_text(paths.caddy_site_file, removed))
    if config.caddy_restart:
        commands.append(f"( {restart_command(config.caddy_restart, domain)} ) && rm -f {marker}")
    else:
        logger.warning(f"{host.print_prefix}devpi_caddy_restart is unset: reload Caddy so it drops {paths.caddy_site_file}")
        commands.append(f"rm -f {marker}")
    yield from commands


@operation
def purge(config: DevpiConfig):
    """Remove, by name, what the deploy left in devpi_home and the log dir (only with
    ``devpi_uninstall_purge``). A symlink (e.g. a server dir pointing elsewhere) is
    removed as a link: what it points at stays."""
    found = read(host, paths_read(config))
    commands = [f"rm -rf {q(path)}" for _, path in config.paths.removable(config.log_backups) if found.get(path)]
    if not commands:
        host.noop("nothing of devpi's is left to purge")
    yield from commands


@operation(guarded=False)
def home(config: DevpiConfig, after=()):
    """After a purge (and the deploy lock's release): remove devpi_home if nothing but the
    deploy's serial file is left in it; anything else in it keeps it."""
    from .triggers import any_changed

    if not any_changed(after):
        host.noop("nothing was purged")
        return
    lock = config.paths.deploy_lock
    yield (
        f"h={q(config.paths.home)}; if [ -d \"$h\" ] && [ -z \"$(ls -A \"$h\" | grep -v -x -F "
        f"{q(lock.serial.rsplit('/', 1)[1])})\" ]; then rm -f {q(lock.serial)} && rmdir \"$h\"; fi"
    )

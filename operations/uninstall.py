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

from facts.files import PathsFound, RealPaths
from facts.managed_agents import MARKER
from facts.snapshot import FactRead, file_content, read
from pyinfra_devpi import real_paths
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.launchd_scope import JobPlace

from .announce import operation
from . import caddy
from .preflight import real_paths_read
from .launchd import job_read, removal_commands
from .textfile import write_text

q = shlex.quote


def paths_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(PathsFound, paths=tuple(path for _, path in config.paths.removable(config.log_backups)))


def real_read(config: DevpiConfig, kept=()) -> FactRead:
    """Where devpi_home, each removable path and its directory, and what the uninstall
    keeps (``kept``: ``(what, path)``) land on the host."""
    return FactRead.of(RealPaths, paths=real_paths.purge_read_paths(config, list(kept)))


def purge_plan(config: DevpiConfig, kept=()) -> tuple[list, list]:
    """The one list of what the purge removes and what it keeps, and why
    (``real_paths.purge_plan``): the report and the purge both use it. Refused (a
    ``DeployError``) when devpi_home lands on or above the SSH user's home."""
    resolved = read(host, real_read(config, kept))
    problem = real_paths.home_problem(config, resolved)
    if problem:
        raise DeployError(f"{host.name}: the purge is refused, nothing was changed: {problem}")
    return real_paths.purge_plan(config, read(host, paths_read(config)), resolved, list(kept))


def job_reads(label: str, place: JobPlace, plists: tuple[str, ...]) -> list:
    """What ``job`` reads for ``label``: the job in every domain, and its plists."""
    return [*(job_read(label, where) for where in place.everywhere), *plists]


def reads(config: DevpiConfig, place: JobPlace, kept=()) -> list:
    """What the uninstall reads from the host (Caddy's label where it may be loaded, for
    its restart; ``kept``: what its steps keep, for the purge)."""
    paths = config.paths
    return [
        real_read(config, kept),
        *job_reads(config.label, place, (paths.agent_plist_file, paths.daemon_plist_file)),
        paths.caddy_site_file,
        paths.caddy_restart_pending,
        real_paths_read(config),
        *caddy.job_reads(config.caddy_restart, place),
        paths_read(config),
    ]


@operation
def job(label: str, place: JobPlace, plists: tuple[str, ...], daemon_plists: tuple[str, ...] = ()):
    """Boot the job ``label`` out in every domain it is loaded in (the SSH user's and the
    system domain: either scope) and wait until launchd lets it go; then remove its plists
    (a LaunchAgent's and a LaunchDaemon's), so it does not load at the next login or boot.
    The system domain and ``daemon_plists`` are changed as root (``sudo -n`` unless the
    SSH user is root)."""
    commands = removal_commands(
        label,
        [(where, place.prefix(where)) for where in place.everywhere],
        [(path, place.as_root if path in daemon_plists else "") for path in plists],
    )
    if not commands:
        host.noop(f"{label} is not loaded and {' / '.join(plists)} do not exist")
    yield from commands


@operation
def caddy_block(config: DevpiConfig, place: JobPlace, removed: str):
    """Replace the deploy's Caddy site block with ``removed`` (a file that serves nothing:
    a Caddyfile may import the site file by name, and Caddy refuses to start on an import
    of a missing file) and restart Caddy the configured way. A file without the deploy's
    marker is not the deploy's: left alone. A restart that fails is retried by the next
    uninstall (the marker in devpi_home stays until one succeeds). A label is restarted
    where Caddy's job is loaded, as the deploy does (``caddy.restart_where_it_runs``)."""
    paths = config.paths
    block = file_content(host, paths.caddy_site_file)
    pending = file_content(host, paths.caddy_restart_pending) is not None
    # Where the host resolves it: through a symlinked dir it may be one of the deploy's own
    # files (its YAML config carries the marker too), never to be replaced by this.
    misplaced = [p for p in real_paths.problems(config, read(host, real_paths_read(config)))
                 if p.startswith("paths: `devpi_caddy_site_file`")]
    ours = block is not None and MARKER in block and block != removed and not misplaced
    if misplaced:
        logger.warning(f"{host.print_prefix}{misplaced[0].removeprefix('paths: ')}: left alone")
    elif block is not None and MARKER not in block:
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
        commands.append(f"( {caddy.restart_where_it_runs(config.caddy_restart, place)} ) && rm -f {marker}")
    else:
        logger.warning(f"{host.print_prefix}devpi_caddy_restart is unset: reload Caddy so it drops {paths.caddy_site_file}")
        commands.append(f"rm -f {marker}")
    yield from commands


@operation
def purge(config: DevpiConfig, kept=()):
    """Remove, by name, what the deploy left in devpi_home and the log dir (only with
    ``devpi_uninstall_purge``), as ``purge_plan`` lists it: nothing through a link out
    of devpi_home, nothing that holds what the uninstall keeps (``kept``). A symlink
    (e.g. a server dir pointing elsewhere) is removed as a link: what it points at stays."""
    remove, _ = purge_plan(config, kept)
    commands = [f"rm -rf {q(path)}" for _, path in remove]
    if not commands:
        host.noop("nothing of devpi's is left to purge")
        return
    # Rotated copies of devpi's log beyond today's devpi_log_backups (``<log>.<n>``, left
    # from a time the count was larger): named by the log, numbered, so devpi's.
    commands.append(
        f"log={q(config.paths.server_log)}; "
        'for f in "$log".[0-9]*; do case "${f##*.}" in *[!0-9]*) ;; *) rm -f "$f" ;; esac; done'
    )
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
        # The backup program's directory, once the purge emptied it (anything else in it keeps it).
        f"rmdir {q(config.paths.bin_dir)} 2>/dev/null; "
        f"h={q(config.paths.home)}; if [ -d \"$h\" ] && [ -z \"$(ls -A \"$h\" | grep -v -x -F "
        f"{q(lock.serial.rsplit('/', 1)[1])})\" ]; then rm -f {q(lock.serial)} && rmdir \"$h\"; fi"
    )

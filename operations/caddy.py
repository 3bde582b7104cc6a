"""
The Caddy site block that fronts devpi, and making Caddy pick it up.

Caddy itself is managed elsewhere; the deploy owns one site file that the main
Caddyfile imports. A changed block is validated before it replaces the old one,
then Caddy is restarted the configured way. An unchanged block restarts nothing,
unless an earlier run moved a block into place and its restart failed: a marker
file says so until a restart succeeds, so the next run restarts Caddy again.

The block's step runs before devpi's job is (re)loaded (its hold covers devpi's
restart), so its failure must not keep devpi down: the deploy runs it with
``_ignore_errors`` and ends the run with ``picked_up``, which fails it then.

A restart by launchd label kickstarts Caddy's job where it is loaded: ``brew services
start caddy`` makes a LaunchAgent in the SSH user's GUI domain, ``sudo brew services
start caddy`` a LaunchDaemon in ``system``, and a headless Mac's own agents live in
``user/<uid>`` (../shared/MACOS.md). The label is looked up in the SSH user's domain,
their other agent domain and ``system`` (``launchctl print`` needs no root there), read
with the rest of the plan's facts.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger

from facts.launchd import LaunchdJob
from facts.managed_agents import MARKER
from facts.snapshot import FactRead, file_content, read
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.launchd_scope import JobPlace
from pyinfra_devpi.preflight import caddy_job_domain

from .announce import operation
from .triggers import failed
from .textfile import write_text

q = shlex.quote


def validate_command(caddy_bin: str | None) -> str:
    """``caddy adapt --validate`` on the new block, when a caddy binary is found."""
    if caddy_bin:
        finder = f"c={q(caddy_bin)}"
    else:
        # Caddy may not be on a non-login PATH; without it the block is not validated.
        finder = "c=$(command -v caddy || true)"
    return (
        f'{{ {finder}; if [ -z "$c" ]; then true; else '
        'out=$("$c" adapt --adapter caddyfile --validate --config {new} 2>&1 >/dev/null) '
        '|| { echo "Caddy rejects the new site block:" >&2; echo "$out" >&2; false; }; fi; }'
    )


def reads(path: str, pending_marker: str, restart: dict | None = None, place: JobPlace | None = None) -> list:
    """What ``site`` reads from the host: the site file as it is, the marker of a
    restart that has not happened yet, and (for a restart by label) Caddy's job in each
    domain it may be loaded in."""
    return [path, pending_marker, *job_reads(restart, place)]


def job_reads(restart: dict | None, place: JobPlace | None) -> list:
    """The ``LaunchdJob`` reads of Caddy's label; none unless the restart is a label."""
    if not restart or "label" not in restart or place is None:
        return []
    return [FactRead.of(LaunchdJob, label=restart["label"], domain=d) for d in place.lookup_order]


def found_jobs(restart: dict | None, place: JobPlace) -> dict:
    """``{domain: LaunchdJob}`` for Caddy's label in each domain looked in (empty unless
    the restart is a label)."""
    return {dict(r.arguments)["domain"]: read(host, r) for r in job_reads(restart, place)}


def restart_where_it_runs(restart: dict, place: JobPlace) -> str:
    """The command that restarts Caddy: its label kickstarted where it is loaded (read by
    ``job_reads``; the SSH user's domain when nowhere: the preflight refuses a run that
    would restart it then), or the configured command. The deploy's and the uninstall's."""
    if "label" not in restart:
        return restart_command(restart, "")
    domain = caddy_job_domain(found_jobs(restart, place)) or place.agent_domain
    return restart_command(restart, domain, place.prefix(domain))


def restart_command(restart: dict, domain: str, sudo: str = "") -> str:
    """The shell command that restarts Caddy: ``kickstart -k`` of its label in ``domain``
    (``sudo``: the prefix that changes that domain, e.g. ``sudo -n `` for ``system``), or
    the configured command."""
    if "label" in restart:
        return f"{sudo}launchctl kickstart -k {q(domain + '/' + restart['label'])}"
    return restart["command"]


@operation
def site(
    path: str,
    content: str,
    restart: dict | None,
    place: JobPlace,
    pending_marker: str,
    caddy_bin: str | None = None,
    adopt: bool = False,
):
    """
    Write Caddy's site block for devpi and restart Caddy when it changed.

    + path: the site file (imported by the main Caddyfile)
    + content: the rendered block
    + restart: ``{"label": <Caddy's launchd label>}`` (kickstart -k) or
      ``{"command": <shell command>}``; None to leave reloading to the operator
    + place: where this run's jobs live (the SSH user's uid and domain): Caddy's label is
      looked up in their domains and ``system`` (``JobPlace.lookup_order``)
    + pending_marker: a file that exists while a moved-in block awaits a restart
    + caddy_bin: the caddy binary used to validate the block (default: PATH)
    + adopt: replace a site file the deploy did not write (``devpi_caddy_adopt_site_file``)

    A site file without the deploy's marker is the operator's: never replaced unless
    ``adopt``, and its content never shown (no diff); the preflight refuses such a run first.
    """
    current = file_content(host, path)
    if current is not None and MARKER not in current:
        if not adopt:
            raise DeployError(f"{host.name}: {path} was not written by this deploy: not replaced "
                              "(devpi_caddy_site_file; devpi_caddy_adopt_site_file = True replaces it)")
        host.log(f"Replacing {path}, which this deploy did not write (devpi_caddy_adopt_site_file): its content "
                 "is not shown", logger.info)
        current = None
    commands = list(write_text(path, content, before_move=validate_command(caddy_bin), current=current))
    pending = file_content(host, pending_marker) is not None
    found_jobs(restart, place)  # read (prefetched) whether or not Caddy restarts
    if not restart:
        if commands:
            logger.warning(f"{host.print_prefix}devpi_caddy_restart is unset: reload Caddy to pick up {path}")
            yield from commands
        else:
            host.noop(f"{path} is up to date")
        return
    if not commands and not pending:
        host.noop(f"{path} is up to date")
        return
    if not commands:
        host.log("Caddy's restart failed after the block last changed: restarting it again", logger.info)
    marker = q(pending_marker)
    if commands:
        # Recorded before the block moves in: a run killed after the move, or a
        # restart that fails, leaves it, and the next run restarts Caddy.
        yield f": > {marker}"
    yield from commands
    yield f"( {restart_where_it_runs(restart, place)} ) && rm -f {marker}"


def not_picked_up_message(site_step: str, devpi_url: str) -> str:
    return (
        f'Caddy is not serving devpi\'s new site block: the step "{site_step}" failed (its error is '
        f"above). The run went on without it and converged devpi ({devpi_url}). Fix the cause "
        "(devpi_caddy_restart, devpi_caddy_bin, Caddy itself) and rerun: the next run puts the block in "
        "place and restarts Caddy again."
    )


@operation(guarded=False)
def picked_up(site, message: str):
    """
    Fail the run when the Caddy block's step failed earlier in it.

    + site: the ``site`` operation (run with ``_ignore_errors``)
    + message: what to say: what failed, that devpi was converged, what to fix

    Added to a run only when ``site`` has something to do. Before execution (``--dry``)
    there is nothing to check; during it, the step's own result decides.
    """
    if not failed(site):
        host.noop("Caddy's site block step did not fail")
        return
    yield f"echo {q(message)} >&2; exit 1"

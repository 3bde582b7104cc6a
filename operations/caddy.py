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
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger

from pyinfra_devpi.snapshot import file_content

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


def reads(path: str, pending_marker: str) -> list:
    """What ``site`` reads from the host: the site file as it is, and the marker of a
    restart that has not happened yet."""
    return [path, pending_marker]


def restart_command(restart: dict, domain: str) -> str:
    if "label" in restart:
        return f"launchctl kickstart -k {q(domain + '/' + restart['label'])}"
    return restart["command"]


@operation
def site(
    path: str,
    content: str,
    restart: dict | None,
    domain: str,
    pending_marker: str,
    caddy_bin: str | None = None,
):
    """
    Write Caddy's site block for devpi and restart Caddy when it changed.

    + path: the site file (imported by the main Caddyfile)
    + content: the rendered block
    + restart: ``{"label": <Caddy's launchd label>}`` (kickstart -k) or
      ``{"command": <shell command>}``; None to leave reloading to the operator
    + domain: the launchd domain of Caddy's job (for a label)
    + pending_marker: a file that exists while a moved-in block awaits a restart
    + caddy_bin: the caddy binary used to validate the block (default: PATH)
    """
    commands = list(write_text(path, content, before_move=validate_command(caddy_bin)))
    pending = file_content(host, pending_marker) is not None
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
    yield f"( {restart_command(restart, domain)} ) && rm -f {marker}"


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

"""
pyinfra fact ``HostReadiness``: what the preflight needs to know about the host
besides its tools (``facts/host_tools.py``).

* whether the launchd domain answers this SSH session (``launchctl print <domain>``:
  ``gui/<uid>`` exists only while the user is logged in at the console);
* the free space of the file system that will hold ``devpi_home`` (``df -k`` of the
  nearest directory that exists: BSD and GNU ``df`` alike);
* the numeric owner of each path asked about (``ls -lnd``: BSD and GNU alike), and
  the SSH user's uid;
* whether the SSH user may run commands as root without a password (``sudo -n true``),
  asked only when the run may need root (a LaunchDaemon: ``root``, or one of ``root_if``
  exists, e.g. the LaunchDaemon's plist a switch back to a LaunchAgent removes) and the
  user is not root. ``-n``: sudo fails at once instead of prompting.

Command output protocol (one script, always exits 0)::

    uid=<uid>
    user=<user name>
    domain=<domain>
    domain_status=<exit status of launchctl print, or "none" without launchctl>
    df_path=<the directory df was asked about>
    @df / <df -k output> / @end
    owner=<uid> <path>           one line per asked path that exists
    sudo_status=<exit status of sudo -n true | missing (no sudo) | none (not asked)>
    sudo_error=<the first line sudo printed>
"""

from __future__ import annotations

import re

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, split_blocks
from pyinfra_devpi import shell_script

# A df line: file system (may hold spaces), size, used, available, capacity, then (macOS)
# optionally inode counts and their percentage, then the mount point.
_DF_RE = re.compile(
    r"^(?P<fs>.+?)\s+(?P<size>\d+)\s+(?P<used>\d+)\s+(?P<avail>-?\d+)\s+(?P<cap>\d+%|-)"
    r"\s+(?:\d+\s+\d+\s+(?:\d+%|-)\s+)?(?P<mount>/.*)$"
)


def parse_df(lines: list[str]) -> int | None:
    """Available KiB from ``df -k`` output (header, then one file system, which GNU df
    of old may wrap onto a second line), or None when it does not read as df output."""
    body = " ".join(line.strip() for line in lines[1:] if line.strip())
    match = _DF_RE.match(body)
    if match is None:
        return None
    return max(int(match.group("avail")), 0)


class HostReadiness(FactBase):
    """
    Returns ``uid``, ``user``, ``domain``, ``domain_ok`` (``launchctl print <domain>`` exited 0;
    ``None`` without launchctl), ``domain_status``, ``df_path``, ``free_kb`` (``None`` when
    df could not be read) and ``owners`` (``{path: uid}`` for the asked paths that exist).

    + domain: the launchd domain the deploy will use (``gui/<uid>``, ``user/<uid>``)
    + path: the directory whose file system must have room (``devpi_home``)
    + owned: paths whose owner must be the SSH user
    + root: the run needs root (a LaunchDaemon): ask sudo
    + root_if: ask sudo when one of these paths exists
    """

    def command(self, domain, path, owned=(), root=False, root_if=()):
        return shell_script.render(  # facts/host_readiness.sh
            __file__, "host_readiness", domain=domain, path=path, owned=owned, root=root, root_if=root_if,
        )

    def process(self, output):
        plain, blocks = split_blocks(output, ("df",), "HostReadiness")
        values = key_values(plain)
        if "domain_status" not in values or "uid" not in values:
            raise FactProcessError(f"HostReadiness: unexpected output: {output[:3]!r}")
        status = values["domain_status"]
        owners = {}
        for line in plain:
            if line.startswith("owner="):
                uid, _, owned_path = line[len("owner="):].partition(" ")
                if uid.isdigit():
                    owners[owned_path] = int(uid)
        sudo = values.get("sudo_status", "none")
        return {
            # True / False: sudo -n works / does not; "missing": no sudo; None: not asked.
            "sudo_ok": None if sudo == "none" else "missing" if sudo == "missing" else sudo == "0",
            "sudo_error": values.get("sudo_error") or None,
            "uid": int(values["uid"]) if values["uid"].isdigit() else None,
            "user": values.get("user") or None,
            "domain": values.get("domain"),
            "domain_ok": None if not status.isdigit() else status == "0",
            "domain_status": int(status) if status.isdigit() else None,
            "df_path": values.get("df_path"),
            "free_kb": parse_df(blocks.get("df", [])),
            "owners": owners,
        }

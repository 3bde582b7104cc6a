"""
pyinfra fact ``DeployLock``: who holds the deploy lock of a devpi home, if anyone
(``pyinfra_devpi/deploy_lock.py`` describes the lock).

Read first in the deploy's fact batch, with ``wait``: while another live run holds the
lock the command waits (up to ``wait`` seconds, polling each second), so the facts read
after it show the host as that run left it.
"""

from __future__ import annotations

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values
from pyinfra_devpi.deploy_lock import state_script
from pyinfra_devpi.layout import LockPaths

STATES = ("free", "held", "stale")


class DeployLock(FactBase):
    """
    Returns ``{"state": "free" | "held" | "stale", "serial": <token of the last run
    that took the lock, or ''>, "owner": {run, pid, started, host, since, by} or None}``.

    + home: the devpi home (``devpi_home``, absolute)
    + wait: seconds to wait while another live run holds the lock (default 0)
    """

    def command(self, home: str, wait: int | str = 0) -> str:
        return state_script(LockPaths(home), int(wait))

    def process(self, output):
        values = key_values(output)
        state = values.get("state")
        if state not in STATES or "serial" not in values:
            raise FactProcessError(f"DeployLock: unexpected output {output[:3]!r}")
        owner = {k[len("owner_"):]: v for k, v in values.items() if k.startswith("owner_")}
        return {"state": state, "serial": values["serial"], "owner": owner or None}


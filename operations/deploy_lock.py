"""
The deploy lock around a run's changes: one deploy at a time changes a host.

The lock itself (its files, its scripts, why it is built this way) is described in
``pyinfra_devpi/deploy_lock.py``. Here it is wired into a run:

* ``reads``: the ``DeployLock`` fact, read first in the deploy's fact batch (it waits
  while another live run holds the lock, so the facts after it are read from the host
  as that run left it);
* ``begin``: called by the deploy after the prefetch; refuses the run if another run
  still holds the lock, and makes every operation that changes something run the
  acquiring script first (``announce.guard_changes``): the first one takes the lock,
  the others find it theirs. A no-change rerun runs none of them;
* ``release``: the deploy's last operation, run when anything changed; when an
  operation fails, a state callback releases the lock before pyinfra stops the host.
"""

from __future__ import annotations

import os

from pyinfra import host, logger, state
from pyinfra.api import StringCommand
from pyinfra.api.state import BaseStateCallback

from facts.deploy_lock import DeployLock
from facts.snapshot import FactRead, read
from pyinfra_devpi import deploy_lock as lock
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.errors import DeployError

from .announce import guard_changes, operation
from .triggers import any_changed

# This run's token (one per pyinfra process): what the lock's owner file and the
# serial say of this run.
TOKEN = lock.run_token()

_RELEASE_ATTR = "_pyinfra_devpi_release_lock"
_CALLBACK_ATTR = "_pyinfra_devpi_lock_callback"


def lock_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(DeployLock, home=config.paths.home, wait=config.lock_wait)


def reads(config: DevpiConfig) -> list:
    """What the lock reads from the host; first in the batch (see the module doc)."""
    return [lock_read(config)]


def begin(config: DevpiConfig) -> None:
    """Refuse the run while another run holds the lock; guard every change after this."""
    found = read(host, lock_read(config))
    paths = config.paths.deploy_lock
    if found["state"] == "held":
        raise DeployError(lock.held_message(paths, found["owner"] or {}, config.lock_wait))
    if found["state"] == "stale":
        owner = found["owner"] or {}
        host.log(
            f"{paths.lock} is left by a deploy that is no longer running (run {owner.get('run')}, "
            f"process {owner.get('pid')} on {owner.get('host')}): this run's first change takes it over",
            logger.warning,
        )
    guard_changes(
        host,
        [lock.acquire_script(paths, TOKEN, found["serial"], config.lock_wait, os.getpid(), lock.run_by())],
    )
    setattr(host, _RELEASE_ATTR, lock.release_script(paths, TOKEN))
    _release_on_error()


@operation(guarded=False)
def release(config: DevpiConfig, after=()):
    """Release the deploy lock, when any of ``after`` changed something (and so took it)."""
    if not any_changed(after):
        host.noop("nothing changed: no deploy lock was taken")
        return
    yield lock.release_script(config.paths.deploy_lock, TOKEN)


class _ReleaseOnError(BaseStateCallback):
    """pyinfra stops a host at its first failed operation, so ``release`` never runs:
    release the lock then. (If even that fails, the lock is stale once the run's
    connection is gone, and the next run takes it over.) An error the operation
    ignores (``_ignore_errors``: the Caddy block's step) does not stop the host: the
    run goes on under the lock."""

    @staticmethod
    def operation_host_error(state, host, op_hash, retry_count=0, max_retries=0):
        script = getattr(host, _RELEASE_ATTR, None)
        if not script or _ignores_errors(state, host, op_hash):
            return
        try:
            host.run_shell_command(StringCommand(script))
        except Exception as error:  # noqa: BLE001 - never mask the operation's own error
            logger.warning(f"{host.print_prefix}could not release the deploy lock: {error}")


def _ignores_errors(state, host, op_hash) -> bool:
    try:
        return bool(state.get_op_data_for_host(host, op_hash).global_arguments.get("_ignore_errors"))
    except (KeyError, AttributeError):
        return False


def _release_on_error() -> None:
    if getattr(state, _CALLBACK_ATTR, False) or not hasattr(state, "add_callback_handler"):
        return
    state.add_callback_handler(_ReleaseOnError())
    setattr(state, _CALLBACK_ATTR, True)

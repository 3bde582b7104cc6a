"""
A devpi replica on the host: the primary's secret copied over (by the controller, from
the primary's SSH connection), the replica's one-time init, and the wait for it to
replicate after a (re)start. The decisions are ``pyinfra_devpi/replica.py``'s.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand

from facts.replica import PrimaryView, SecretDigest, read_primary_secret
from facts.snapshot import FactRead, read
from pyinfra_devpi import layout, replica, shell_script
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.layout import transient

from .announce import ProgressCommand, log_once, operation
from .devpi import needs_init, server_dir
from .textfile import create_private
from .triggers import any_changed

q = shlex.quote


def secret_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(SecretDigest, path=config.paths.secret_file)


def reads(config: DevpiConfig) -> list:
    """What this module's operations read from the host."""
    return [secret_read(config)]


def upload_primary_secret(state, host, primary_name: str, staged: str) -> bool:
    """Copy the primary's secret file into the replica's (empty, 0600) staged file."""
    try:
        secret = read_primary_secret(state.inventory.get_host(primary_name))
    except DeployError as error:
        host.log(str(error), logger.error)
        return False
    return bool(host.put_file(BytesIO(secret), staged))


def plan_secret(config: DevpiConfig, replication: replica.Replication, primary: PrimaryView | None) -> str:
    """While pyinfra plans (the operation's own body runs only at execution with ``-y``):
    ``replica.KEEP`` or ``replica.WRITE`` the primary's secret on this replica, or a
    ``DeployError`` before any change.

    + primary: the primary as the plan read it over its SSH connection (None: named by URL)
    """
    paths = config.paths
    found = read(host, secret_read(config))
    reachable = primary is not None and primary.reachable
    action = replica.secret_action(config, found, primary.secret_digest if reachable else None, reachable)
    if action == replica.KEEP:
        if found is not None and not reachable:
            what = primary.reason if primary is not None else f"the primary is named by URL ({replication.primary_url})"
            log_once(f"the replica's secret file {paths.secret_file} was not compared with its primary's: {what}")
        return action
    if replication.primary_host is None:
        raise DeployError(
            f"the replica needs its primary's secret file at {paths.secret_file}, and its primary is named by URL "
            f"({replication.primary_url}), so the deploy cannot read it: name the primary by its inventory host "
            "(devpi_primary), or put a copy of the primary's secret file there (mode 0600) and rerun",
        )
    if not reachable:
        raise DeployError(f"the replica needs its primary's secret file, and {primary.reason}: "
                          "run the deploy with the primary in the inventory and reachable")
    return action


@operation
def secret(config: DevpiConfig, replication: replica.Replication, action: str):
    """
    The replica's secret file: byte-identical to its primary's (devpi signs the
    replication tokens with it), 0600 from its first byte, never printed.

    + replication: this host's part (a replica)
    + action: ``plan_secret``'s
    """
    paths = config.paths
    if action == replica.KEEP:
        host.noop(f"the replica's secret file {paths.secret_file} is its primary's")
        return
    if state.config.DIFF:
        host.log(f"Will write {paths.secret_file}: {replication.primary_host}'s secret file (not shown)", logger.info)
    staged = transient(paths.secret_file)
    # devpi refuses a secret file whose directory is group/world writable.
    yield f"(umask 077; mkdir -p {q(paths.home)}) && chmod 700 {q(paths.home)} && {create_private(staged)}"
    yield FunctionCommand(upload_primary_secret, (replication.primary_host, staged), {})
    yield f"chmod 600 {q(staged)} && mv -f {q(staged)} {q(paths.secret_file)}"


def init_script(config: DevpiConfig, primary_url: str) -> str:
    """devpi-init of a replica (``operations/replica_init.sh``)."""
    paths = config.paths
    return shell_script.render(
        __file__, "replica_init",
        "devpi-init of a replica into a transient dir beside the server dir, checked, then renamed into place",
        server_dir=paths.server_dir, devpi_init=paths.bin("devpi-init"), config_file=paths.config_file,
        primary_url=primary_url, transient_suffix=layout.TRANSIENT_SUFFIX,
        serverversion_name=layout.SERVERVERSION, nodeinfo_name=layout.NODEINFO, sqlite_name=layout.SQLITE,
    )


@operation
def init(config: DevpiConfig, replication: replica.Replication):
    """Initialise a missing or empty server dir as a replica of its primary, once."""
    if not needs_init(server_dir(config)):
        host.noop(f"{config.paths.server_dir} is initialised")
        return
    yield ProgressCommand(init_script(config, replication.primary_url))


def in_sync_command(config: DevpiConfig, replication: replica.Replication) -> str:
    return " ".join((
        q(config.paths.bin("python")), "-I", "-c", q(replica.IN_SYNC_PROGRAM),
        q(config.local_url), str(int(config.health_timeout)), q(replication.primary_url),
    ))


@operation
def in_sync(config: DevpiConfig, replication: replica.Replication, after=()):
    """
    After the replica was (re)started, wait (bounded by devpi_health_timeout) until it
    replicates: its primary has answered its token (devpi's ``primary-serial`` is known),
    not necessarily caught up. A replica the primary does not answer (a secret other than
    the primary's, a primary down or without ``role: primary``) fails this host, named.

    + after: the operations that may have (re)started it or changed its secret
    """
    if not any_changed(after):
        host.noop("the replica was not (re)started")
        return
    yield ProgressCommand(in_sync_command(config, replication))

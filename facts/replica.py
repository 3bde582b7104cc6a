"""
Reading what replication needs: a replica's secret file by its digest (``SecretDigest``,
in the batch), and its primary's secret file and ``.nodeinfo`` over the primary's own
SSH connection (SFTP into the controller's memory: never a command whose output pyinfra
logs, never a fact).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from pyinfra_devpi import replica
from pyinfra_devpi.config import build_config
from pyinfra_devpi.errors import ConfigError, DeployError


class SecretDigest(FactBase):
    """
    The sha256 (hex) of the secret file at ``path``, or None when there is none. The
    secret itself never leaves the host.
    """

    def command(self, path: str) -> str:
        f = shlex.quote(path)
        # shasum is macOS's (and perl's on Linux); -a 256 is sha256.
        return f"if [ -f {f} ]; then shasum -a 256 < {f} | cut -c1-64; else echo missing; fi"

    def process(self, output):
        lines = [line.strip() for line in output if line.strip()]
        if lines == ["missing"]:
            return None
        if len(lines) != 1 or len(lines[0]) != 64:
            raise FactProcessError(f"unexpected shasum output: {len(lines)} line(s)")
        return lines[0]


@dataclass(frozen=True)
class PrimaryView:
    """The primary as its replica's plan sees it. ``reachable``: its SSH connection is
    open (else ``reason`` says why); ``secret_file``: where its secret is;
    ``secret_digest``: the secret file's sha256 (None: no file yet); ``uuid``: its
    ``.nodeinfo`` uuid (None: not initialised yet)."""

    name: str
    reachable: bool
    secret_file: str | None = None
    secret_digest: str | None = None
    uuid: str | None = None
    reason: str = ""


def _sftp(primary_host):
    """An SFTP session on the primary's open pyinfra SSH connection, or None."""
    from pyinfra.connectors.ssh import SSHConnector

    connector = primary_host.connector
    if not isinstance(connector, SSHConnector):
        return None
    client = getattr(connector, "client", None)
    transport = client.get_transport() if client is not None else None
    if transport is None or not transport.is_active():
        return None
    return client.open_sftp()


def _read(sftp, path: str) -> bytes | None:
    try:
        with sftp.open(path, "rb") as remote:
            return remote.read()
    except FileNotFoundError:
        return None


def primary_config(primary_host, sftp):
    """The primary's config, built from its host data and its SFTP home."""
    try:
        return build_config(primary_host.data.dict(), sftp.normalize("."))
    except ConfigError as error:
        raise DeployError(f"the primary {primary_host.name}'s host data is invalid: {error}") from None


def read_primary(primary_host) -> PrimaryView:
    """What the replica's plan needs from its primary: the secret's digest (the secret
    is read into memory and dropped) and the uuid."""
    sftp = _sftp(primary_host)
    if sftp is None:
        return PrimaryView(primary_host.name, False, reason=f"no open SSH connection to {primary_host.name}")
    try:
        config = primary_config(primary_host, sftp)
        secret = _read(sftp, config.paths.secret_file)
        nodeinfo = _read(sftp, config.paths.nodeinfo)
    finally:
        sftp.close()
    uuid = None
    if nodeinfo:
        try:
            uuid = json.loads(nodeinfo).get("uuid")
        except (ValueError, AttributeError):
            uuid = None
    return PrimaryView(
        primary_host.name, True, secret_file=config.paths.secret_file,
        secret_digest=replica.digest(secret) if secret is not None else None, uuid=uuid,
    )


def read_primary_secret(primary_host) -> bytes:
    """The primary's secret file's bytes (at execution: the primary may have made it in
    this run), or ``DeployError``."""
    sftp = _sftp(primary_host)
    if sftp is None:
        raise DeployError(f"cannot read the primary's secret: no open SSH connection to {primary_host.name}")
    try:
        config = primary_config(primary_host, sftp)
        secret = _read(sftp, config.paths.secret_file)
    finally:
        sftp.close()
    if not secret:
        raise DeployError(f"the primary {primary_host.name} has no secret file {config.paths.secret_file}")
    return secret

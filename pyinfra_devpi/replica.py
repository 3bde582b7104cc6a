"""
devpi replication across the hosts of one inventory: who is whose primary, the URL a
replica follows, what each node's devpi-server config says, and every refusal.

Pure model: it takes host data (every inventory host's, by name) and the facts as
values. How a primary knows it has replicas: a host of the inventory whose
``devpi_role`` is ``replica`` names it as its ``devpi_primary`` (so a primary runs
with devpi's ``role: primary``, which devpi does not keep in ``.nodeinfo``, exactly
while the inventory holds one of its replicas). A primary whose replicas live outside
the inventory (a replica naming it by URL) sets ``devpi_server_options = {"role":
"primary"}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
from dataclasses import dataclass
from typing import Any

from .config import DEFAULT_SERVER_OPTIONS
from .errors import ConfigError, DeployError
from .layout import NODEINFO

PRIMARY = "primary"
REPLICA = "replica"
STANDALONE = "standalone"


@dataclass(frozen=True)
class Replication:
    """This host's part: ``role`` is devpi's (``standalone``, ``primary`` or
    ``replica``); a replica's ``primary_url`` and, when its primary is an inventory
    host, ``primary_host``; a primary's ``replicas`` (inventory host names)."""

    role: str = STANDALONE
    primary_url: str | None = None
    primary_host: str | None = None
    replicas: tuple[str, ...] = ()

    @property
    def is_replica(self) -> bool:
        return self.role == REPLICA


def public_url(name: str, data: dict[str, Any]) -> str:
    """The URL replicas reach inventory host ``name``'s devpi at: its
    ``devpi_outside_url``, else its Caddy site address (``https://`` added to a bare
    host name, as Caddy serves it)."""
    url = data.get("devpi_outside_url")
    if isinstance(url, str) and url:
        return url.rstrip("/")
    address = data.get("devpi_caddy_site_address")
    if isinstance(address, str) and address.startswith(("http://", "https://")):
        return address.rstrip("/")
    if isinstance(address, str) and address and not address.startswith(":"):
        return "https://" + address.rstrip("/")
    raise ConfigError(
        f"host data `devpi_primary` = {name!r}: the URL of its devpi cannot be derived from that host's data "
        f"(no devpi_outside_url, and its devpi_caddy_site_address {address!r} names no host): set "
        f"devpi_outside_url on {name}, or set devpi_primary to the primary's URL",
    )


# The primary derives the replicas' tokens' key from the secret file with these costs,
# and so does each replica: one differing value and every replication request gets 403.
ARGON2_OPTIONS = ("argon2-memory-cost", "argon2-time-cost", "argon2-parallelism")


def argon2_costs(data: dict[str, Any]) -> dict[str, Any]:
    """The argon2 costs a host's devpi runs with: the deploy's defaults, overridden by its
    ``devpi_server_options``."""
    options = data.get("devpi_server_options")
    options = options if isinstance(options, dict) else {}
    return {name: options.get(name, DEFAULT_SERVER_OPTIONS[name]) for name in ARGON2_OPTIONS}


def check_argon2_costs(name: str, primary: str, inventory: dict[str, dict[str, Any]]) -> None:
    mine, theirs = argon2_costs(inventory[name]), argon2_costs(inventory[primary])
    differ = [option for option in ARGON2_OPTIONS if mine[option] != theirs[option]]
    if differ:
        shown = ", ".join(f"{option} {mine[option]!r} here, {theirs[option]!r} on {primary}" for option in differ)
        raise ConfigError(
            f"host data `devpi_server_options` sets argon2 costs that differ from its primary's ({shown}): devpi "
            "derives the replication tokens' key with them, so the primary would refuse every request of this "
            f"replica (403). Set the same {', '.join(differ)} on both hosts, or on neither",
        )


def topology(name: str, inventory: dict[str, dict[str, Any]]) -> Replication:
    """Host ``name``'s part in the inventory's replication (``inventory``: every host's
    data by name); a bad combination raises ``ConfigError`` naming the key and the fix."""
    data = inventory.get(name, {})
    role = data.get("devpi_role", PRIMARY)
    if role == REPLICA and data.get("devpi_caddy_read_upstreams"):
        raise ConfigError(
            "host data `devpi_caddy_read_upstreams` is set on a replica: the front that spreads reads is the "
            "primary's Caddy (writes must reach the primary). Move the list to the primary's host data",
        )
    if role == REPLICA and data.get("devpi_backup") is not None:
        raise ConfigError(
            "host data `devpi_backup` is set on a replica: its data is its primary's, and devpi-export of a "
            "replica works only while it is in sync. Back up the primary (devpi_backup in its host data) and "
            "unset devpi_backup here (set it to None where group data sets it for every host)",
        )
    if role == REPLICA:
        primary = data.get("devpi_primary")
        if not isinstance(primary, str) or not primary:
            raise ConfigError(
                "host data `devpi_role` is 'replica' but `devpi_primary` is unset: set devpi_primary to the "
                "primary's inventory host name or its URL",
            )
        if "://" in primary:
            return Replication(REPLICA, primary_url=primary.rstrip("/"))
        if primary == name:
            raise ConfigError(
                f"host data `devpi_primary` = {primary!r} names this host itself: a replica follows another "
                "host; set devpi_primary to the primary's host name, or devpi_role = 'primary'",
            )
        if primary not in inventory:
            known = ", ".join(sorted(n for n in inventory if n != name)) or "none"
            raise ConfigError(
                f"host data `devpi_primary` = {primary!r} is no host of this inventory (hosts: {known}): use "
                "the primary's inventory host name, or its URL (e.g. 'https://pypi.example.org')",
            )
        if inventory[primary].get("devpi_role", PRIMARY) == REPLICA:
            raise ConfigError(
                f"host data `devpi_primary` = {primary!r} is itself a replica: point devpi_primary at the "
                "primary it follows",
            )
        check_argon2_costs(name, primary, inventory)
        return Replication(REPLICA, primary_url=public_url(primary, inventory[primary]), primary_host=primary)
    replicas = tuple(sorted(
        other for other, other_data in inventory.items()
        if other != name and other_data.get("devpi_role") == REPLICA and other_data.get("devpi_primary") == name
    ))
    return Replication(PRIMARY if replicas else STANDALONE, replicas=replicas)


def server_options(config, replication: Replication) -> dict[str, Any]:
    """The devpi-server options replication adds to ``config``'s: ``role: primary`` on a
    primary with replicas; ``role: replica``, ``primary-url`` and the replica's own
    ``outside-url`` on a replica."""
    if replication.role == PRIMARY:
        return {"role": PRIMARY}
    if replication.role == REPLICA:
        own = config.outside_url or (
            config.site_address if config.site_address.startswith(("http://", "https://")) else None)
        return {"role": REPLICA, "primary-url": replication.primary_url,
                **({"outside-url": own} if own else {})}
    return {}


def with_replication(config, replication: Replication):
    """``config`` with replication's devpi-server options (rendered into the YAML config
    and read by the Caddy block: a primary's passes ``/+changelog``)."""
    extra = server_options(config, replication)
    if not extra:
        return config
    return dataclasses.replace(config, server_options={**config.server_options, **extra})


def digest(secret: bytes) -> str:
    """What the deploy compares secrets by (never the secrets themselves)."""
    return hashlib.sha256(secret).hexdigest()


# What the replica's secret step does.
KEEP, WRITE = "keep", "write"


def secret_action(config, replica_digest: str | None, primary_digest: str | None, primary_reachable: bool) -> str:
    """``KEEP`` or ``WRITE`` the primary's secret on this replica, or a ``DeployError``.

    ``replica_digest``: the replica's secret file's sha256 (None: no file);
    ``primary_digest``: the primary's (None: no file yet, e.g. a primary this run
    initialises, or not read: ``primary_reachable`` False)."""
    path = config.paths.secret_file
    if replica_digest is None:
        return WRITE
    if primary_digest == replica_digest:
        return KEEP
    if not primary_reachable and not config.replica_secret_rotate:
        return KEEP  # not compared; said by the caller
    if config.replica_secret_rotate:
        return WRITE
    why = ("differs from its primary's" if primary_digest is not None
           else "cannot be its primary's: the primary has no secret file yet")
    raise DeployError(
        f"the replica's secret file {path} {why} (compared by sha256): with it, the primary refuses "
        "its replication requests (403) and the replica would stay at serial -1. Nothing was changed. To "
        "replace it with the primary's (the replica restarts; its logins are signed anew), rerun with "
        "`--data devpi_replica_secret_rotate=true` (or set devpi_replica_secret_rotate = True for this host)",
    )


def check_server_dir(config, replication: Replication, server_dir: dict, primary_uuid: str | None) -> None:
    """Refuse a server dir of another role: a replica's on a primary/standalone host, a
    primary's or standalone's on a replica host, or a replica's pinned to another
    primary's uuid (devpi would refuse it for good after its first sync)."""
    nodeinfo = server_dir.get("nodeinfo") or {}
    if not server_dir.get("initialised") or not isinstance(nodeinfo, dict):
        return
    path = config.paths.server_dir
    aside = f"mv {shlex.quote(path)} {shlex.quote(path + '.before-replica')}"
    found = nodeinfo.get("role") or STANDALONE
    if found == "master":
        found = PRIMARY
    if replication.is_replica and found != REPLICA:
        raise DeployError(
            f"{path} is a {found} devpi's server dir ({NODEINFO} role {found!r}), and this host is a replica: a "
            "replica starts from an empty server dir and never replaces data. Nothing was changed. Way out: "
            f"if its data is not needed (the primary holds it), move it aside ({aside}) and rerun; or set "
            "devpi_role = 'primary' for this host",
        )
    if not replication.is_replica and found == REPLICA:
        raise DeployError(
            f"{path} is a replica's server dir ({NODEINFO} role 'replica', following "
            f"{nodeinfo.get('masterurl')!r}), and this host is not configured as one: nothing was changed. Way "
            "out: set devpi_role = 'replica' and devpi_primary; or, to make it a primary, export it "
            "(devpi-export) while it is in sync and import it into an empty server dir",
        )
    pinned = nodeinfo.get("primary-uuid") or nodeinfo.get("master-uuid")
    if replication.is_replica and pinned and primary_uuid and pinned != primary_uuid:
        raise DeployError(
            f"{path} is a replica of another primary (uuid {pinned}; {replication.primary_url} is {primary_uuid}): "
            "devpi refuses it for good. Nothing was changed. Way out: move it aside "
            f"({aside}) and rerun: the deploy initialises a new replica, which copies the primary's data",
        )


# The program a replica's host runs (the venv's Python, standard library only) after a
# (re)start: wait until the replica replicates from its primary.
IN_SYNC_PROGRAM = r"""
import json, sys, time, urllib.request
url, timeout, primary = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deadline, status = time.monotonic() + timeout, {}
while time.monotonic() < deadline:
    try:
        request = urllib.request.Request(url + "/+status", headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            status = json.load(answer).get("result", {})
    except Exception as error:
        status = {"error": str(error)}
    # The primary's serial is known once the primary has answered the replica's token: it
    # replicates (a large primary may take longer to catch up than this wait).
    serial, theirs = status.get("serial", -1), status.get("primary-serial")
    if isinstance(serial, int) and serial >= 0 and theirs is not None:
        print("replicating from %s: serial %d of %d" % (primary, serial, theirs))
        sys.exit(0)
    time.sleep(0.2)
errors = status.get("replication-errors") or {}
print("the replica has not replicated from its primary %s in %d s: its serial is %s (the primary's: %s)."
      % (primary, timeout, status.get("serial"), status.get("primary-serial")), file=sys.stderr)
print("A serial that stays at -1 is what a secret file other than the primary's gives (the primary "
      "answers 403 to its token: rerun with devpi_replica_secret_rotate = True to copy the primary's), or "
      "a primary that does not answer at that URL, or that runs without role: primary.", file=sys.stderr)
if status.get("error"):
    print("its /+status did not answer: %s" % status["error"], file=sys.stderr)
for key, value in list(errors.items())[:3]:
    print("replication error %s: %s" % (key, value), file=sys.stderr)
sys.exit(1)
"""

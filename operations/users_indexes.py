"""
devpi's users and indexes (``devpi_users`` / ``devpi_indexes``), through its REST API.

While pyinfra plans (``prepare``, called by the deploy), the ``UsersIndexes`` fact
against the declared specs gives the actions; a change that needs a decision the
data does not make is refused, and the secrets the actions need (root's password to
log in, the hashes of the users' passwords) are read then, and only then, so a bad
reference stops the run before anything changes. A rerun where nothing differs
reads the fact and nothing else.

When devpi does not answer while pyinfra plans, an initialised server is not taken
for a fresh one: the comparison waits for execution, after the health wait (a rerun
that only restores a stopped service needs no secret at all). Only a server dir
that this run initialises is planned against what devpi-init leaves.

The operation applies the plan from the controller (``plan.apply``), talking to
devpi's loopback port through the SSH connection (``pyinfra_devpi.tunnel``): no
secret reaches the host. The password markers it records (no secret in them) are
then written to the state file on the host through a transient name.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand

from facts.snapshot import FactRead, read
from facts.users_indexes import UsersIndexes
from pyinfra_devpi import search
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.layout import transient
from pyinfra_devpi.run_secrets import hash_once, is_dry_run, resolve_once
from pyinfra_devpi.secrets import SecretError
from pyinfra_devpi.tunnel import json_requester
from pyinfra_devpi.users_indexes.plan import (
    AFTER_INIT, LOCAL_ONLY, ApplyError, PlanError, apply, describe, markers_file, plan,
)

from .announce import log_once, operation

q = shlex.quote


def desired_users(config: DevpiConfig) -> dict:
    """The declared users, JSON-able: a password is its reference, as text."""
    return {
        name: {**spec, "password": str(spec["password"]) if spec["password"] else None}
        for name, spec in config.users.items()
    }


def _users_indexes_read(config: DevpiConfig) -> FactRead:
    return FactRead.of(UsersIndexes, url=config.local_url, state_file=config.paths.users_state_file)


def reads(config: DevpiConfig) -> list:
    """What ``prepare`` and ``users_indexes`` read: nothing when the data declares no
    users and no indexes (nothing to compare, so nothing to ask devpi)."""
    if not config.users and not config.indexes:
        return []
    return [_users_indexes_read(config)]


def current(config: DevpiConfig) -> dict | None:
    return read(host, _users_indexes_read(config))


def found_indexes(config: DevpiConfig, fresh: bool = False) -> dict | None:
    """devpi's indexes as this run starts from: what devpi-init leaves for a server dir
    the run initialises, devpi's answer otherwise (None: devpi did not answer)."""
    if fresh:
        return dict(AFTER_INIT["indexes"])
    facts = current(config) if reads(config) else None
    return None if facts is None else facts["indexes"]


def planned(config: DevpiConfig, fresh: bool = False) -> list[dict] | None:
    """The actions for this host (``PlanError`` when the data must decide first);
    ``None`` when devpi did not answer and the server is not ``fresh`` (to be
    initialised by this run): then only devpi, once up, can say."""
    if not reads(config):
        return []
    # A server dir this run initialises starts as devpi-init leaves it, whatever
    # answers on the port now (e.g. the old devpi, when devpi_home moved).
    facts = None if fresh else current(config)
    if facts is None and not fresh:
        return None
    markers = facts.get("passwords") if facts else None
    return plan(desired_users(config), config.indexes, facts, markers)


def _needs_login(actions) -> bool:
    return any(a["op"] not in LOCAL_ONLY for a in actions)


def _check_root_password(config: DevpiConfig) -> None:
    if config.root_password is None:
        raise PlanError(
            "changing devpi's users and indexes needs a login as root, and host data "
            "`devpi_root_password` is unset: set it to root's password reference, e.g. "
            "'op://vault/devpi/root password'",
        )


class RunSecrets:
    """``plan.Secrets`` for this run: each reference resolved (and hashed) once."""

    def __init__(self, config: DevpiConfig):
        self.config = config

    def root_password(self) -> str:
        _check_root_password(self.config)
        return resolve_once(host, self.config.root_password, "devpi_root_password")

    def password_hash(self, user: str) -> str:
        return hash_once(host, self.config.users[user]["password"], "devpi_users")


def prepare(config: DevpiConfig, fresh: bool = False) -> None:
    """While pyinfra plans: show the actions, refuse impossible ones, read the secrets.

    Raises ``PlanError`` (the deploy turns it into a DeployError) or the secret
    reference's own error, before anything runs on the host.
    """
    actions = planned(config, fresh)
    if actions is None:
        host.log(
            f"devpi does not answer on {config.local_url}: its users and indexes are compared "
            "once it is up (after the health wait)",
            logger.info,
        )
        return
    if actions and fresh:
        host.log("devpi is initialised by this run: planning against what devpi-init leaves", logger.info)
    for action in actions:
        host.log(f"Will {describe(action)}", logger.info)
    if not _needs_login(actions):
        return
    _check_root_password(config)
    users = [a["name"] for a in actions if a["op"] in ("create_user", "set_password")]
    if is_dry_run():
        host.log(f"Will read devpi_root_password ({config.root_password}) when applied", logger.info)
        for name in users:
            host.log(f"Will read devpi_users['{name}']['password'] ({config.users[name]['password']}) when applied",
                     logger.info)
        return
    secrets = RunSecrets(config)
    secrets.root_password()
    for name in users:
        secrets.password_hash(name)


def refuse_unflagged_mirrors(current: dict, actions: list) -> None:
    """While devpi runs with Whoosh: refuse a plan that leaves a mirror loading its
    upstream's whole project list (Whoosh would index it at once). A mirror that was
    already unflagged (made by hand) is not this plan's doing: devpi indexes it anyway,
    and refusing would stop every later run (the plan warns about it instead)."""
    already = set(search.unflagged_mirrors(current["indexes"]))
    unflagged = [name for name in search.unflagged_mirrors(search.indexes_after(current["indexes"], actions))
                 if name not in already]
    if unflagged:
        raise ApplyError(
            f"devpi runs with devpi-web's Whoosh search, and these changes would leave {', '.join(unflagged)} "
            "loading its upstream's whole project list, which Whoosh would index (tens of CPU-minutes, "
            "more than a GB): nothing was changed. Run the deploy again (it turns search off before such a "
            "change), or keep mirror_no_project_list True",
        )


def apply_through_connection(state, host, config: DevpiConfig, markers: dict, whoosh: bool = False) -> bool:
    """Apply the users/indexes plan to devpi's API through the SSH connection.

    Runs on the controller while pyinfra executes, then records the password markers
    on the host. ``whoosh``: devpi runs with Whoosh (``refuse_unflagged_mirrors``)."""
    request = json_requester(host, config.local_address, config.port, timeout=max(30, config.health_timeout))
    recorded = dict(markers)
    ok = True
    try:
        apply(
            request, desired_users(config), config.indexes, markers, RunSecrets(config),
            timeout=config.health_timeout, what=config.local_url,
            out=lambda line: host.log(f"devpi: {line}", logger.info),
            check=refuse_unflagged_mirrors if whoosh else None,
        )
    except (ApplyError, PlanError, SecretError, OSError) as error:
        host.log_styled(f"devpi users and indexes: {error}", fg="red", log_func=logger.error)
        ok = False
    # What was done is recorded even when a later action failed.
    if markers != recorded:
        ok = _record(host, config, markers) and ok
    return ok


def _record(host, config: DevpiConfig, markers: dict) -> bool:
    path = config.paths.users_state_file
    new = transient(path)
    if not host.put_file(BytesIO(markers_file(markers).encode("utf-8")), new):
        return False
    status, _ = host.run_shell_command(
        StringCommand(f"chmod 600 {q(new)} && mv -f {q(new)} {q(path)}"), print_output=False,
    )
    return status


@operation
def users_indexes(config: DevpiConfig, fresh: bool = False, whoosh: bool = False):
    """
    Create, patch or delete devpi users and indexes so devpi holds what the data declares.

    + config: the validated deploy config (``users``, ``indexes``, the local URL)
    + fresh: the server dir is initialised by this run (devpi cannot answer yet)
    + whoosh: devpi runs with Whoosh by then: a change that would leave a mirror
      without ``mirror_no_project_list`` is refused
    """
    damaged = (current(config) or {}).get("state_damaged") if reads(config) and not fresh else None
    if damaged:
        log_once(f"{config.paths.users_state_file} is damaged ({damaged}): the password references it records "
                 "are unknown, so the passwords are set again and the file replaced")
    actions = planned(config, fresh)
    if actions == []:
        host.noop("devpi holds the declared users and indexes")
        return
    facts = None if fresh else current(config)
    markers = dict((facts or {}).get("passwords") or {})
    yield FunctionCommand(apply_through_connection, (config, markers), {"whoosh": whoosh})

"""
devpi's users and indexes (``devpi_users`` / ``devpi_indexes``), through its REST API.

The plan is made while pyinfra plans (``prepare``, called by the deploy): the
``UsersIndexes`` fact against the declared specs gives the actions; a change that
needs a decision the data does not make is refused; the passwords the actions need
(root's to log in, the hashes of the users' passwords) are read then, and only then.
A rerun where nothing differs reads the fact and nothing else.

The operation applies the plan in one remote command: the devpi venv's Python runs
``pyinfra_devpi/users_indexes/plan.py`` (uploaded beside a 0600 payload file in the 0700
devpi home). The payload, secrets included, is read into the environment and the
file removed before the script starts; the script removes the secrets from its own
environment at once, plans again against what devpi holds by then (so a server that
was down while pyinfra planned is handled) and applies. No secret is in argv, in the
output or in a file left behind.
"""

from __future__ import annotations

import json
import shlex
from io import BytesIO
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand
from pyinfra.api.hiddenvalue import HiddenValue

from facts.users_indexes import UsersIndexes
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.layout import transient
from pyinfra_devpi.run_secrets import hash_once, resolve_once
from pyinfra_devpi.snapshot import FactRead, read
from pyinfra_devpi.users_indexes import plan as plan_module
from pyinfra_devpi.users_indexes.plan import LOCAL_ONLY, PAYLOAD_ENV, PlanError, describe, plan

from .announce import operation

q = shlex.quote

PRIVATE_DIR = "drwx------"
SCRIPT_SOURCE = Path(plan_module.__file__).read_text(encoding="utf-8")


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


def planned(config: DevpiConfig) -> list[dict]:
    """The actions for this host (``PlanError`` when the data must decide first)."""
    if not reads(config):
        return []
    facts = current(config)
    markers = facts.get("passwords") if facts else None
    return plan(desired_users(config), config.indexes, facts, markers)


def prepare(config: DevpiConfig) -> HiddenValue | None:
    """While pyinfra plans: show the actions, refuse impossible ones, read the secrets.

    Returns the secrets the actions need (a ``HiddenValue`` holding JSON), or None
    when they need none. Raises ``PlanError`` (the deploy turns it into a DeployError)
    or the secret reference's own error, before anything runs on the host.
    """
    actions = planned(config)
    if actions and current(config) is None:
        host.log(
            f"devpi does not answer on {config.local_url} yet: planning against a freshly "
            "initialised server (the changes are re-planned against devpi once it is up)",
            logger.info,
        )
    for action in actions:
        host.log(f"Will {describe(action)}", logger.info)
    if all(a["op"] in LOCAL_ONLY for a in actions):
        return None
    if config.root_password is None:
        raise PlanError(
            "changing devpi's users and indexes needs a login as root, and host data "
            "`devpi_root_password` is unset: set it to root's password reference, e.g. "
            "'op://vault/devpi/root password'",
        )
    hashes = {}
    for action in actions:
        if action["op"] in ("create_user", "set_password"):
            ref = config.users[action["name"]]["password"]
            hashes[action["name"]] = hash_once(host, ref, "devpi_users")
    secrets = {
        "root_password": resolve_once(host, config.root_password, "devpi_root_password"),
        "hashes": hashes,
    }
    return HiddenValue(json.dumps(secrets))


def apply_command(config: DevpiConfig, payload_file: str, script_file: str) -> str:
    return (
        f"f={q(payload_file)}; chmod 600 \"$f\"; "
        f'{PAYLOAD_ENV}=$(cat "$f"); rm -f "$f"; export {PAYLOAD_ENV}; '
        f"{q(config.paths.bin('python'))} -I {q(script_file)}; rc=$?; "
        f"rm -f {q(script_file)}; exit $rc"
    )


@operation
def users_indexes(config: DevpiConfig, secrets: HiddenValue | None = None):
    """
    Create, patch or delete devpi users and indexes so devpi holds what the data declares.

    + config: the validated deploy config (``users``, ``indexes``, the local URL)
    + secrets: what ``prepare`` returned for this run
    """
    actions = planned(config)
    if not actions:
        host.noop("devpi holds the declared users and indexes")
        return
    paths = config.paths
    payload = {
        "url": config.local_url,
        "timeout": config.health_timeout,
        "state_file": paths.users_state_file,
        "state_file_transient": transient(paths.users_state_file),
        "users": desired_users(config),
        "indexes": config.indexes,
        "secrets": None,
    }
    # Before execution (--dry, change detection) there is nothing to upload.
    if state.is_executing and secrets is not None:
        payload["secrets"] = json.loads(secrets.unmask())
    payload_file = paths.api_payload
    script_file = paths.api_script
    facts = current(config)
    if not facts or facts.get("state_dir_mode") != PRIVATE_DIR:
        # SFTP creates the payload file with the default umask: only the owner may
        # see into the directory before the secrets land in it.
        yield f"chmod 700 {q(paths.home)}"
    yield FileUploadCommand(BytesIO(SCRIPT_SOURCE.encode("utf-8")), script_file)
    yield FileUploadCommand(BytesIO(json.dumps(payload).encode("utf-8")), payload_file)
    yield apply_command(config, payload_file, script_file)

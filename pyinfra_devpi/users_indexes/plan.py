"""
Declared devpi users and indexes → the REST calls that make devpi hold them.

Both halves run on the controller:

- while pyinfra plans, ``plan`` turns the declared specs and the host's current state
  (the ``UsersIndexes`` fact) into actions, so ``--dry`` can show them and the deploy
  can refuse an impossible change before anything runs;
- while it executes, ``apply`` reads devpi's state again (so a server that was not up
  while pyinfra planned, or changed since, is handled the same way), plans with the
  same function, logs in as root and makes the REST calls. It talks to devpi's
  loopback port through the SSH connection (``pyinfra_devpi.tunnel``): no secret is
  ever written to the host, nor put in a process's argv or environment there.

Passwords: devpi keeps only hashes, so a changed password cannot be seen from the
outside. The deploy records, per user, which password reference (and
``password_version``) it last set in a state file on the target (no secret in it);
a password is set when the user is created or when that marker differs. An
existing user without a marker is adopted: the marker is recorded and the password
is left alone. Nothing here prints a secret.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from typing import Callable, Protocol

# root/pypi as devpi-init makes it (devpi-server 6.x ``_pypi_ixconfig_default``). The
# deploy runs devpi-init with ``--no-root-pypi`` and creates root/pypi itself, over the
# REST API, with these settings under the declared ones (``mirror_no_project_list``
# among them, see spec.py): created with the flag, the mirror never fetches PyPI's
# whole project list, not even at devpi's first start.
ROOT_PYPI = "root/pypi"
ROOT_PYPI_INIT = {
    "type": "mirror",
    "volatile": False,
    "title": "PyPI",
    "mirror_url": "https://pypi.org/simple/",
    "mirror_web_url_fmt": "https://pypi.org/project/{name}/",
}

# What ``devpi-init --no-root-pypi`` leaves behind: the plan's starting point when the
# server was not up while pyinfra planned (a first converge).
AFTER_INIT = {
    "users": {"root": {"username": "root"}},
    "indexes": {},
}


def creation_body(name: str, spec: dict) -> dict:
    """The JSON that creates a declared index: its type and declared settings, over
    devpi-init's own settings when it is root/pypi as a mirror."""
    defaults = ROOT_PYPI_INIT if name == ROOT_PYPI and spec["type"] == ROOT_PYPI_INIT["type"] else {}
    return {**defaults, "type": spec["type"], **spec["config"]}


# Actions that need no login (they only touch the deploy's own state file).
LOCAL_ONLY = ("record_password",)


class PlanError(Exception):
    """The declared state cannot be reached from the current one without a decision."""


def split_userlist(result: dict) -> dict:
    """devpi's ``GET /`` result (``{user: userconfig}``) → ``{"users", "indexes"}``.

    ``users`` keeps each user's public config without its indexes; ``indexes`` maps
    ``user/index`` to the index config.
    """
    users: dict = {}
    indexes: dict = {}
    for name, userconfig in sorted(result.items()):
        userconfig = dict(userconfig or {})
        for index, ixconfig in sorted((userconfig.pop("indexes", None) or {}).items()):
            indexes[f"{name}/{index}"] = ixconfig
        users[name] = userconfig
    return {"users": users, "indexes": indexes}


def password_marker(spec: dict) -> dict | None:
    """What the state file records for a user whose password the deploy manages."""
    if not spec.get("password"):
        return None
    return {"password": spec["password"], "version": spec.get("password_version", 0)}


def _order(names, deps) -> list[str]:
    """``names`` sorted so that each comes after the ones it depends on (ties by name)."""
    names = set(names)
    out: list[str] = []
    seen: set[str] = set()

    def visit(name, trail=()):
        if name in seen or name not in names:
            return
        if name in trail:
            raise PlanError(f"the bases form a cycle through {name!r}")
        for dep in sorted(deps(name)):
            visit(dep, (*trail, name))
        seen.add(name)
        out.append(name)

    for name in sorted(names):
        visit(name)
    return out


def plan(users: dict, indexes: dict, current: dict | None, markers: dict | None = None) -> list[dict]:
    """The actions, in order, that make devpi hold the declared users and indexes.

    ``users``: ``{name: {"state", "email", "password" (the reference as text, or None),
    "password_version"}}``; ``indexes``: ``{"user/index": {"state": "present", "type",
    "config"} | {"state": "absent", "volatile"}}``; ``current``: ``{"users",
    "indexes"}`` as ``split_userlist`` returns them, or None when the server did not
    answer (then devpi-init's state is assumed); ``markers``: ``{user: marker}`` from
    the state file.

    Each action is a dict with ``op`` (``create_user``, ``patch_user``, ``set_password``,
    ``record_password``, ``create_index``, ``patch_index``, ``delete_index``,
    ``delete_user``) and ``name``, plus ``body`` (the JSON devpi gets), ``was`` (the
    old values of a patch) and ``marker`` / ``make_volatile`` where they apply.
    Raises ``PlanError`` when the change needs a decision the data does not make.
    """
    current = AFTER_INIT if current is None else current
    markers = markers or {}
    have_users = current["users"]
    have_indexes = current["indexes"]
    actions: list[dict] = []

    for name in sorted(users):
        spec = users[name]
        if spec["state"] != "present":
            continue
        marker = password_marker(spec)
        if name not in have_users:
            if marker is None:
                raise PlanError(
                    f"devpi has no user {name!r} and `devpi_users` gives it no password: add "
                    f"'password': 'op://vault/item/field' (or 'env:NAME' / 'file:PATH') to {name!r}",
                )
            body = {"email": spec["email"]} if spec.get("email") else {}
            actions.append({"op": "create_user", "name": name, "body": body, "marker": marker})
            continue
        if spec.get("email") and have_users[name].get("email") != spec["email"]:
            actions.append({
                "op": "patch_user", "name": name, "body": {"email": spec["email"]},
                "was": {"email": have_users[name].get("email")},
            })
        if marker is not None:
            recorded = markers.get(name)
            if recorded is None:
                actions.append({"op": "record_password", "name": name, "marker": marker})
            elif recorded != marker:
                actions.append({"op": "set_password", "name": name, "marker": marker})

    present = [n for n, s in indexes.items() if s["state"] == "present"]
    for name in _order(present, lambda n: indexes[n]["config"].get("bases", ())):
        spec = indexes[name]
        have = have_indexes.get(name)
        if have is None:
            actions.append({"op": "create_index", "name": name, "body": creation_body(name, spec)})
            continue
        if have.get("type", "stage") != spec["type"]:
            raise PlanError(
                f"index {name!r} is a {have.get('type')!r} index on the server but "
                f"`devpi_indexes` declares type {spec['type']!r}: devpi cannot change an index's "
                "type; declare the index absent (deleting it) and recreate it under its new type",
            )
        changes = {k: v for k, v in spec["config"].items() if _json(have.get(k)) != _json(v)}
        if changes:
            actions.append({
                "op": "patch_index", "name": name, "body": changes,
                "was": {k: have.get(k) for k in changes},
            })

    absent = [n for n, s in indexes.items() if s["state"] == "absent" and n in have_indexes]
    # An index goes before the indexes it uses as bases.
    users_of = lambda n: [o for o in absent if n in (have_indexes[o].get("bases") or ())]  # noqa: E731
    deleted = set()
    for name in _order(absent, users_of):
        volatile = bool(have_indexes[name].get("volatile", True))
        if not volatile and not indexes[name].get("volatile"):
            raise PlanError(
                f"index {name!r} is non-volatile (devpi's guard against deleting releases) and "
                f"`devpi_indexes` declares it absent: add 'volatile': True to its spec to delete "
                "it anyway, with every release in it",
            )
        actions.append({"op": "delete_index", "name": name, "make_volatile": not volatile})
        deleted.add(name)

    for name in sorted(users):
        if users[name]["state"] != "absent" or name not in have_users:
            continue
        blocking = sorted(
            ix for ix, config in have_indexes.items()
            if ix.split("/")[0] == name and ix not in deleted and not config.get("volatile", True)
        )
        if blocking:
            raise PlanError(
                f"user {name!r} is declared absent but owns non-volatile index(es) "
                f"{', '.join(blocking)}: declare them in `devpi_indexes` as "
                "{'state': 'absent', 'volatile': True} to delete them with the user",
            )
        actions.append({"op": "delete_user", "name": name})
    return actions


def _json(value):
    """Compare as JSON does (a tuple and a list with the same items are equal)."""
    return json.dumps(value, sort_keys=True)


def describe(action: dict) -> str:
    """One line for the operator; never holds a secret."""
    op, name = action["op"], action["name"]
    if op == "create_user":
        email = action["body"].get("email")
        return f"create user {name}" + (f" (email {email})" if email else "") + " with its password"
    if op == "patch_user":
        return f"set user {name}'s " + ", ".join(
            f"{k} to {v!r} (was {action['was'][k]!r})" for k, v in action["body"].items()
        )
    if op == "set_password":
        return f"set user {name}'s password (its reference or password_version changed)"
    if op == "record_password":
        return (
            f"adopt user {name}: record its password reference, leave its password as it is "
            "(raise password_version to set it)"
        )
    if op == "create_index":
        settings = ", ".join(f"{k}={v!r}" for k, v in action["body"].items())
        return f"create index {name} ({settings})"
    if op == "patch_index":
        return f"set index {name}'s " + ", ".join(
            f"{k} to {v!r} (was {action['was'][k]!r})" for k, v in action["body"].items()
        )
    if op == "delete_index":
        extra = " (making it volatile first)" if action.get("make_volatile") else ""
        return f"delete index {name}{extra} with every release in it"
    if op == "delete_user":
        return f"delete user {name} with its indexes"
    raise ValueError(op)


# --------------------------------------------------------------------------- applying


class ApplyError(Exception):
    pass


# ``request(method, path, body=None, auth=None) -> (status, JSON answer as a dict)``:
# one HTTP request to devpi (pyinfra_devpi.tunnel makes one over the SSH connection).
Request = Callable[..., "tuple[int, dict]"]


class Secrets(Protocol):
    """Where ``apply`` gets a secret, at the moment it needs it (read at most once)."""

    def root_password(self) -> str: ...

    def password_hash(self, user: str) -> str: ...


def read_current(request: Request, timeout: float, what: str) -> dict:
    """``GET /`` as JSON, waiting (bounded) for the server to answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, answer = request("GET", "/")
        except OSError as error:
            status, answer = None, {"message": str(error)}
        if status == 200 and isinstance(answer.get("result"), dict):
            return split_userlist(answer["result"])
        if time.monotonic() >= deadline:
            raise ApplyError(
                f"devpi did not answer GET {what}/ with its users within {timeout:.0f}s "
                f"(last: {status or answer.get('message')}); check that the service runs",
            )
        time.sleep(0.5)


def _path(name: str) -> str:
    return "/" + "/".join(urllib.parse.quote(part, safe="@") for part in name.split("/"))


def apply(
    request: Request,
    users: dict,
    indexes: dict,
    markers: dict,
    secrets: Secrets,
    *,
    timeout: float = 60,
    what: str = "devpi",
    out: Callable[[str], None] = print,
    check: Callable[[dict, list], None] | None = None,
) -> dict:
    """Make devpi hold the declared users and indexes.

    ``markers`` (the password markers recorded on the host) is updated in place as
    each action succeeds, so a caller can record what was done even when a later
    action fails. ``out`` gets one line per action done (never a secret). Raises
    ``ApplyError`` or ``PlanError``. ``check(current, actions)`` may refuse the plan
    (raising ``ApplyError``) before any call is made.
    """
    current = read_current(request, timeout, what)
    actions = plan(users, indexes, current, markers)
    if check is not None:
        check(current, actions)

    auth = None
    if any(a["op"] not in LOCAL_ONLY for a in actions):
        status, answer = request("POST", "/+login", {"user": "root", "password": secrets.root_password()})
        token = (answer.get("result") or {}).get("password")
        if status != 200 or not token:
            raise ApplyError(
                f"devpi refused root's login ({status}: {answer.get('message', '')}): "
                "`devpi_root_password` does not hold root's current password",
            )
        auth = base64.b64encode(f"root:{token}".encode()).decode("ascii")

    def call(method, name, body=None, ok=(200, 201)):
        status, answer = request(method, _path(name), body, auth)
        if status not in ok:
            raise ApplyError(f"devpi answered {status} to {method} {_path(name)}: {answer.get('message', '')}")

    for action in actions:
        op, name = action["op"], action["name"]
        if op == "create_user":
            call("PUT", name, {"password": None, "pwhash": secrets.password_hash(name), **action["body"]})
        elif op == "patch_user":
            call("PATCH", name, action["body"])
        elif op == "set_password":
            call("PATCH", name, {"pwhash": secrets.password_hash(name)})
        elif op == "create_index":
            call("PUT", name, action["body"])
        elif op == "patch_index":
            call("PATCH", name, action["body"])
        elif op == "delete_index":
            if action.get("make_volatile"):
                call("PATCH", name, {"volatile": True})
            call("DELETE", name)
        elif op == "delete_user":
            call("DELETE", name)
        if op in ("create_user", "set_password", "record_password"):
            markers[name] = action["marker"]
        elif op == "delete_user":
            markers.pop(name, None)
        out(describe(action))
    return markers


def markers_file(markers: dict) -> str:
    """The state file's content: the password references set, per user (no secret)."""
    return json.dumps({"users": dict(sorted(markers.items()))}, sort_keys=True) + "\n"

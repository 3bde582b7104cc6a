"""
Declared devpi users and indexes → the REST calls that make devpi hold them.

Standard library only, and used in two places:

- on the controller, ``plan`` turns the declared specs and the host's current state
  (the ``UsersIndexes`` fact) into actions, so ``--dry`` can show them and the deploy
  can refuse an impossible change before anything runs;
- on the target, this file is run by the devpi venv's Python (``main``): it reads
  devpi's state again over loopback, plans with the same function (so a server that
  was not up while pyinfra planned, or changed since, is handled the same way), logs
  in as root and applies the actions.

Passwords: devpi keeps only hashes, so a changed password cannot be seen from the
outside. The deploy records, per user, which password reference (and
``password_version``) it last set in a state file on the target (no secret in it);
a password is set when the user is created or when that marker differs. An
existing user without a marker is adopted: the marker is recorded and the password
is left alone. The secrets (root's password for the login, argon2 hashes of user
passwords) arrive in an environment variable that is removed from the process
environment before anything else runs; nothing here prints them.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PAYLOAD_ENV = "PYINFRA_DEVPI_API_PAYLOAD"

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


# --------------------------------------------------------------------------- on the target


class ApplyError(Exception):
    pass


def _request(url: str, method: str, path: str, body=None, auth: str | None = None, timeout=120):
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if auth:
        request.add_header("X-Devpi-Auth", auth)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        answer = {}
    return status, answer if isinstance(answer, dict) else {}


def read_current(url: str, timeout: float) -> dict:
    """``GET /`` as JSON, waiting (bounded) for the server to answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status, answer = _request(url, "GET", "/", timeout=10)
        except OSError as error:
            status, answer = None, {"message": str(error)}
        if status == 200 and isinstance(answer.get("result"), dict):
            return split_userlist(answer["result"])
        if time.monotonic() >= deadline:
            raise ApplyError(
                f"devpi did not answer GET {url}/ with its users within {timeout:.0f}s "
                f"(last: {status or answer.get('message')}); check that the service runs",
            )
        time.sleep(0.5)


def read_markers(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError as error:
        raise ApplyError(f"{path} is not valid JSON ({error}); remove it to re-adopt the users") from None
    return dict(data.get("users") or {})


def write_markers(path: str, new: str, markers: dict) -> None:
    """Write the state file through ``new`` (its transient name) and one rename."""
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"users": dict(sorted(markers.items()))}, handle, sort_keys=True)
        handle.write("\n")
    os.replace(new, path)


def _path(name: str) -> str:
    return "/" + "/".join(urllib.parse.quote(part, safe="@") for part in name.split("/"))


def apply(payload: dict, out=sys.stdout) -> None:
    url = payload["url"].rstrip("/")
    current = read_current(url, payload.get("timeout", 60))
    markers = read_markers(payload["state_file"])
    actions = plan(payload["users"], payload["indexes"], current, markers)
    secrets = payload.get("secrets") or {}
    hashes = secrets.get("hashes") or {}

    auth = None
    if any(a["op"] not in LOCAL_ONLY for a in actions):
        if not secrets.get("root_password"):
            raise ApplyError(
                "devpi changed since pyinfra planned (a change now needs root's login, which was "
                "not planned): rerun the deploy",
            )
        status, answer = _request(url, "POST", "/+login", {"user": "root", "password": secrets["root_password"]})
        token = (answer.get("result") or {}).get("password")
        if status != 200 or not token:
            raise ApplyError(
                f"devpi refused root's login ({status}: {answer.get('message', '')}): "
                "`devpi_root_password` does not hold root's current password",
            )
        auth = base64.b64encode(f"root:{token}".encode()).decode("ascii")

    def call(method, name, body=None, ok=(200, 201)):
        status, answer = _request(url, method, _path(name), body, auth)
        if status not in ok:
            raise ApplyError(f"devpi answered {status} to {method} {_path(name)}: {answer.get('message', '')}")

    for action in actions:
        op, name = action["op"], action["name"]
        if op in ("create_user", "set_password") and name not in hashes:
            raise ApplyError(
                f"devpi changed since pyinfra planned (user {name!r} now needs its password): "
                "rerun the deploy",
            )
        if op == "create_user":
            call("PUT", name, {"password": None, "pwhash": hashes[name], **action["body"]})
        elif op == "patch_user":
            call("PATCH", name, action["body"])
        elif op == "set_password":
            call("PATCH", name, {"pwhash": hashes[name]})
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
            write_markers(payload["state_file"], payload["state_file_transient"], markers)
        elif op == "delete_user" and name in markers:
            del markers[name]
            write_markers(payload["state_file"], payload["state_file_transient"], markers)
        out.write(describe(action) + "\n")
        out.flush()


def main() -> int:
    raw = os.environ.pop(PAYLOAD_ENV, None)
    if not raw:
        sys.stderr.write(f"{PAYLOAD_ENV} is unset: this script is run by the pyinfra deploy\n")
        return 2
    try:
        apply(json.loads(raw))
    except (ApplyError, PlanError) as error:
        sys.stderr.write(f"{error}\n")
        return 1
    except OSError as error:  # the connection dropped half-way
        sys.stderr.write(f"talking to devpi failed: {error}; rerun the deploy to finish\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Validation of ``devpi_users`` and ``devpi_indexes``: the users and indexes devpi should hold.

Host data shape (both optional)::

    "devpi_users": {
        "eblume": {"email": "me@example.org", "password": "op://vault/devpi/eblume password"},
    },
    "devpi_indexes": {
        "eblume/dev": {"bases": ["root/pypi"]},
        "root/pypi": {"mirror_cache_expiry": 3600},
    },

Only the keys a spec names are managed: a key left out keeps whatever devpi holds
(its default on creation). A user or index left out of the data is never touched;
``"state": "absent"`` deletes it. ``root/pypi`` is always declared and gets
``mirror_no_project_list: True`` unless the data says otherwise: the full PyPI
project list is what drives devpi-web's indexing memory. devpi-init runs without
``root/pypi``; the plan creates it with devpi-init's own settings under the declared
ones (``plan.ROOT_PYPI_INIT``), so it has the flag from its first moment.

The checks here run while the config is built, before anything is planned; what
depends on the server's current state (a type change, a non-volatile index to
delete) is checked by the plan (``plan.plan``), still before any change.
"""

from __future__ import annotations

import re
from typing import Any

from .. import checks
from ..errors import ConfigError
from ..secrets import parse_secret_ref

# Stricter than devpi (which blocks every ASCII symbol but "-.@_"): a leading
# letter or digit keeps names clear of devpi's "+" routes and of shell quoting.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
ACL_RE = re.compile(r"^[^\s,]+$")

ROOT_PYPI = "root/pypi"
ROOT_PYPI_DEFAULTS = {"mirror_no_project_list": True}

USER_KEYS = ("state", "email", "password", "password_version")
STATES = ("present", "absent")
TYPES = ("stage", "mirror")


def _fail(key: str, where: str, value: Any, allowed: str) -> ConfigError:
    return checks.fail(_where(key, where), value, allowed)


def _where(key: str, where: str) -> str:
    """``key`` is the key as messages name it (``"`devpi_users`"``), ``where`` a part of it."""
    return f"{key} {where}" if where else key


def _name(key: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ConfigError(
            f"host data {key} has a malformed {what} name {value!r}: use letters, digits "
            "and '-', '_', '.', '@', starting with a letter or digit",
        )
    return value


def _index_name(key: str, value: Any) -> str:
    if (
        not isinstance(value, str)
        or value.count("/") != 1
        or not all(NAME_RE.fullmatch(part) for part in value.split("/"))
    ):
        raise ConfigError(
            f"host data {key} has a malformed index name {value!r}: use 'user/index' "
            "(each part letters, digits and '-', '_', '.', '@', starting with a letter or "
            "digit), e.g. 'eblume/dev'",
        )
    return value


def _bool(key, where, value):
    return checks.boolean(_where(key, where), value)


def _text(key, where, value):
    return checks.text(_where(key, where), value)


def _url(key, where, value):
    return checks.url(_where(key, where), value, "https://pypi.org/simple/")


def _non_negative_int(key, where, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(key, where, value, "use a non-negative integer (seconds)")
    return value


def _acl(key, where, value):
    """devpi's ``ensure_acl_list``: a list of principals, the special ones upper-cased."""
    if not isinstance(value, list) or not all(isinstance(v, str) and ACL_RE.fullmatch(v) for v in value):
        raise _fail(
            key, where, value,
            "use a list of user names or ':ANONYMOUS:' / ':AUTHENTICATED:', e.g. ['eblume']",
        )
    return [v.upper() if v.upper() in (":ANONYMOUS:", ":AUTHENTICATED:") else v for v in value]


def _whitelist(key, where, value):
    """devpi's ``normalize_whitelist_name``: PEP 503 names, or '*'."""
    if not isinstance(value, list) or not all(isinstance(v, str) and ACL_RE.fullmatch(v) for v in value):
        raise _fail(key, where, value, "use a list of project names, or ['*']")
    return [v if v == "*" else re.sub(r"[-_.]+", "-", v).lower() for v in value]


def _inheritance(key, where, value):
    if not isinstance(value, str) or value.lower() not in ("intersection", "union"):
        raise _fail(key, where, value, "use 'intersection' or 'union'")
    return value.lower()


def _bases(key, where, value):
    if not isinstance(value, list):
        raise _fail(key, where, value, "use a list of 'user/index' names, e.g. ['root/pypi']")
    bases = [_index_name(key, base) for base in value]
    if len(set(bases)) != len(bases):
        raise _fail(key, where, value, "name each base once")
    return bases


# Every index key the deploy manages, with its check; by index type.
COMMON_INDEX_KEYS = {
    "volatile": _bool,
    "title": _text,
    "description": _text,
}
STAGE_KEYS = {
    "bases": _bases,
    "acl_upload": _acl,
    "acl_toxresult_upload": _acl,
    "mirror_whitelist": _whitelist,
    "mirror_whitelist_inheritance": _inheritance,
}
MIRROR_KEYS = {
    "mirror_url": _url,
    "mirror_no_project_list": _bool,
    "mirror_cache_expiry": _non_negative_int,
    "mirror_use_external_urls": _bool,
    "mirror_ignore_serial_header": _bool,
    "mirror_provides_core_metadata": _bool,
    "mirror_web_url_fmt": _text,
}
INDEX_KEYS = {"stage": {**COMMON_INDEX_KEYS, **STAGE_KEYS}, "mirror": {**COMMON_INDEX_KEYS, **MIRROR_KEYS}}


def _state(key, where, spec):
    state = spec.get("state", "present")
    if state not in STATES:
        raise _fail(key, f"{where}['state']", state, "use 'present' or 'absent'")
    return state


def _unknown(key, where, spec, allowed):
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise ConfigError(
            f"host data {key} {where} has unknown key(s) {', '.join(unknown)}: "
            f"use {', '.join(sorted(allowed))}",
        )


def check_users(key: str, value: Any) -> dict[str, dict]:
    """``{name: {"state", "email", "password" (a SecretRef or None), "password_version"}}``."""
    if not isinstance(value, dict):
        raise _fail(key, "", value, "use a mapping of user names to specs, e.g. {'eblume': {...}}")
    users = {}
    for name, spec in value.items():
        _name(key, name, "user")
        where = f"[{name!r}]"
        if name == "root":
            raise ConfigError(
                f"host data {key} declares 'root': root is made by devpi-init with "
                "`devpi_root_password`; leave it out of `devpi_users`",
            )
        if not isinstance(spec, dict):
            raise _fail(key, where, spec, "use a mapping such as {'password': 'op://vault/item/field'}")
        state = _state(key, where, spec)
        if state == "absent":
            _unknown(key, where, spec, ("state",))
            users[name] = {"state": "absent", "email": None, "password": None, "password_version": 0}
            continue
        _unknown(key, where, spec, USER_KEYS)
        email = spec.get("email")
        if email is not None and (not isinstance(email, str) or "@" not in email or _has_space(email)):
            raise _fail(key, f"{where}['email']", email, "use an email address such as 'me@example.org'")
        password = spec.get("password")
        if password is not None:
            try:
                password = parse_secret_ref(password)
            except ValueError as e:
                raise ConfigError(f"host data {key} {where}['password'] is invalid: {e}") from None
        version = spec.get("password_version", 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise _fail(
                key, f"{where}['password_version']", version,
                "use a non-negative integer; raise it to push a rotated password",
            )
        users[name] = {"state": "present", "email": email, "password": password, "password_version": version}
    return users


def _has_space(text: str) -> bool:
    return any(c.isspace() for c in text)


def check_indexes(key: str, value: Any) -> dict[str, dict]:
    """``{"user/index": {"state": "present", "type", "config": {...}} | {"state": "absent", "volatile"}}``.

    ``root/pypi`` is added (or completed) with ``mirror_no_project_list: True``.
    """
    if not isinstance(value, dict):
        raise _fail(key, "", value, "use a mapping of 'user/index' names to specs, e.g. {'eblume/dev': {...}}")
    indexes: dict[str, dict] = {}
    for name, spec in value.items():
        _index_name(key, name)
        where = f"[{name!r}]"
        if not isinstance(spec, dict):
            raise _fail(key, where, spec, "use a mapping such as {'bases': ['root/pypi']}")
        state = _state(key, where, spec)
        if state == "absent":
            _unknown(key, where, spec, ("state", "volatile"))
            volatile = spec.get("volatile")
            if volatile is not None and volatile is not True:
                raise _fail(
                    key, f"{where}['volatile']", volatile,
                    "only True is meaningful with 'absent' (it allows deleting a non-volatile index)",
                )
            indexes[name] = {"state": "absent", "volatile": volatile is True}
            continue
        index_type = spec.get("type", "mirror" if name == ROOT_PYPI else "stage")
        if index_type not in TYPES:
            raise _fail(key, f"{where}['type']", index_type, "use 'stage' or 'mirror'")
        allowed = INDEX_KEYS[index_type]
        unknown = sorted(str(k) for k in spec if k not in allowed and k not in ("state", "type"))
        if unknown:
            other = "mirror" if index_type == "stage" else "stage"
            hint = [k for k in unknown if k in INDEX_KEYS[other]]
            raise ConfigError(
                f"host data {key} {where} has unknown key(s) {', '.join(unknown)} for a "
                f"{index_type} index"
                + (f" ({', '.join(hint)}: {other} indexes only)" if hint else "")
                + f": use {', '.join(sorted(('state', 'type', *allowed)))}",
            )
        config = {k: allowed[k](key, f"{where}[{k!r}]", spec[k]) for k in sorted(spec) if k in allowed}
        if name == ROOT_PYPI:
            for k, v in ROOT_PYPI_DEFAULTS.items():
                if index_type == "mirror":
                    config.setdefault(k, v)
        elif index_type == "mirror" and "mirror_url" not in config:
            raise ConfigError(
                f"host data {key} {where} is a mirror without 'mirror_url': add the upstream's "
                "simple index, e.g. 'https://pypi.org/simple/'",
            )
        if name in config.get("bases", ()):
            raise _fail(key, f"{where}['bases']", spec["bases"], "an index cannot be its own base")
        indexes[name] = {"state": "present", "type": index_type, "config": config}
    if ROOT_PYPI not in indexes:
        indexes[ROOT_PYPI] = {"state": "present", "type": "mirror", "config": dict(ROOT_PYPI_DEFAULTS)}
    return dict(sorted(indexes.items()))


def check_together(users: dict[str, dict], indexes: dict[str, dict], key: str = "`devpi_indexes`") -> None:
    """What one key cannot check alone: owners, bases, cycles."""
    present = {n for n, s in indexes.items() if s["state"] == "present"}
    for name, spec in indexes.items():
        owner = name.split("/")[0]
        if spec["state"] != "present":
            continue
        if owner != "root":
            declared = users.get(owner)
            if declared is None:
                raise ConfigError(
                    f"host data {key} declares {name!r} but its user {owner!r} is not in "
                    f"`devpi_users`: add {owner!r} to `devpi_users` (or use an index of 'root')",
                )
            if declared["state"] == "absent":
                raise ConfigError(
                    f"host data {key} declares {name!r} present but `devpi_users` says "
                    f"{owner!r} is absent: declare the index absent too, or keep the user",
                )
        for base in spec["config"].get("bases", ()):
            if base not in present:
                why = "declared absent" if base in indexes else "not declared"
                raise ConfigError(
                    f"host data {key} [{name!r}] has unknown base {base!r} ({why}): bases must "
                    f"be indexes declared in {key} (or 'root/pypi'), e.g. ['root/pypi']",
                )
    cycle = find_cycle({n: indexes[n]["config"].get("bases", []) for n in present})
    if cycle:
        raise ConfigError(
            f"host data {key} has a cycle of bases: {' -> '.join(cycle)}; remove one of them",
        )


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in ``{node: [dependency, ...]}`` as a path that ends where it starts, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        path: list[str] = []
        on_path: set[str] = set()

        def visit(node: str) -> list[str] | None:
            if node in on_path:
                return [*path[path.index(node) :], node]
            if node in done or node not in graph:
                return None
            path.append(node)
            on_path.add(node)
            for dep in graph[node]:
                found = visit(dep)
                if found:
                    return found
            path.pop()
            on_path.discard(node)
            done.add(node)
            return None

        found = visit(start)
        if found:
            return found
    return None

"""
The deploy's configuration: one typed, validated object built from host data.

Every host-data key the deploy reads is declared once in ``KEYS`` below, with its
default, its check and a hint telling the operator how to fix a bad value. Anything
else starting with ``devpi_`` or ``caddy_`` is an error, so a typo can never fall back
silently to a default.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Callable
from urllib.parse import urlsplit

from pyinfra.api.exceptions import PyinfraError

from .prewarm import check_index, prewarm_projects
from .indexes import check_indexes, check_together, check_users
from .secrets import SecretRef, parse_secret_ref

# The pinned releases: a bump is a change here (or in host data) and a new lock file.
DEVPI_SERVER_VERSION = "6.20.3"
DEVPI_WEB_VERSION = "5.1.1"

# Database version that every devpi-server 6.x writes to ``.serverversion``.
SERVER_DB_VERSION = "4"

# devpi-server options the deploy renders into the YAML config unless the operator
# overrides them. Why each one:
# - indexer-backend null: devpi-web's Whoosh indexing of PyPI's ~930k names costs
#   ~30 CPU-minutes and >1 GB of RSS, and restarts after every restart.
# - request-timeout: devpi's 5 s default is shorter than a cold mirror fetch.
# - argon2 costs: devpi's defaults (512 MiB, t=16, p=8) spend 5-10 s and ~580 MB at
#   every start deriving a key from the secret file. The secret is 32 random bytes,
#   so stretching adds nothing; replicas must use the same values.
DEFAULT_SERVER_OPTIONS: dict[str, Any] = {
    "indexer-backend": "null",
    "request-timeout": 30,
    "argon2-memory-cost": 8192,
    "argon2-time-cost": 2,
    "argon2-parallelism": 1,
}

# devpi-server options the operator may set through ``devpi_server_options``; the
# value is the Python type devpi parses the option as. Paths, host and port have
# keys of their own and are not accepted here.
SERVER_OPTION_TYPES: dict[str, type] = {
    "threads": int,
    "keyfs-cache-size": int,
    "mirror-cache-expiry": int,
    "max-request-body-size": int,
    "request-timeout": int,
    "connection-limit": int,
    "indexer-backend": str,
    "argon2-memory-cost": int,
    "argon2-time-cost": int,
    "argon2-parallelism": int,
    "offline-mode": bool,
    "replica-max-retries": int,
    "proxy-timeout": int,
    "restrict-modify": str,
    "role": str,
    "primary-url": str,
    "theme": str,
    "documentation-path": str,
    "file-replication-threads": int,
    "hard-links": bool,
    "debug": bool,
}

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
VERSION_RE = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
DOMAIN_RE = re.compile(r"^(gui|user)/\d+$")
LOG_NAME_RE = re.compile(r"^[^/\0]+$")
SIZE_RE = re.compile(r"^[1-9][0-9]*(KB|MB|GB)?$")
PROCESS_TYPES = ("Standard", "Background", "Adaptive", "Interactive")


class ConfigError(PyinfraError):
    """A host-data value the deploy cannot use; raised before anything is planned."""


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"host data `{key}` = {value!r} is invalid: {allowed}")


# Checks: each takes (key, value) and returns the normalised value or raises.


def _version(key, value):
    if not isinstance(value, str) or not VERSION_RE.match(value):
        raise _fail(key, value, "use an exact PEP 440 release such as '6.20.3'")
    return value


def _port(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _fail(key, value, "use an integer port between 1 and 65535")
    return value


def _bool(key, value):
    if not isinstance(value, bool):
        raise _fail(key, value, "use True or False")
    return value


def _positive_int(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(key, value, "use a positive integer")
    return value


def _host(key, value):
    try:
        ipaddress.ip_address(value)
    except (TypeError, ValueError):
        if not isinstance(value, str) or value != "localhost":
            raise _fail(key, value, "use an IP address such as '127.0.0.1' (or 'localhost')")
    return value


def _label(key, value):
    if not isinstance(value, str) or not LABEL_RE.match(value):
        raise _fail(key, value, "use a reverse-DNS launchd label such as 'net.devpi'")
    return value


def _path(key, value):
    """An absolute path, or one relative to the SSH user's home (``~/...``)."""
    if not isinstance(value, str) or not (value.startswith("/") or value.startswith("~/")):
        raise _fail(key, value, "use an absolute path or one starting with '~/'")
    if "\0" in value or "\n" in value:
        raise _fail(key, value, "paths cannot contain NUL or newline characters")
    return value.rstrip("/") or "/"


def _log_name(key, value):
    if not isinstance(value, str) or not LOG_NAME_RE.match(value) or value in (".", ".."):
        raise _fail(key, value, "use a plain file name such as 'devpi.err.log'")
    return value


def _url(key, value):
    if not isinstance(value, str):
        raise _fail(key, value, "use an http(s) URL such as 'https://pypi.example.org'")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(key, value, "use an http(s) URL such as 'https://pypi.example.org'")
    return value.rstrip("/")


def _optional(check):
    def inner(key, value):
        return None if value is None else check(key, value)

    return inner


def _command_name(key, value):
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise _fail(key, value, "use a command name on the target's PATH or an absolute path")
    return value


def _domain(key, value):
    if value is None:
        return None
    if not isinstance(value, str) or not DOMAIN_RE.match(value):
        raise _fail(key, value, "use 'gui/<uid>' or 'user/<uid>', or leave unset to auto-detect")
    return value


def _process_type(key, value):
    if value not in PROCESS_TYPES:
        raise _fail(key, value, f"use one of {', '.join(PROCESS_TYPES)}")
    return value


def _prewarm(key, value):
    try:
        return prewarm_projects(value)
    except ValueError as e:
        raise ConfigError(f"host data `{key}` is invalid: {e}") from None


def _prewarm_index(key, value):
    try:
        return check_index(value)
    except ValueError as e:
        raise _fail(key, value, str(e)) from None


def _secret(key, value):
    if value is None:
        return None
    try:
        return parse_secret_ref(value)
    except ValueError as e:
        raise ConfigError(f"host data `{key}` is invalid: {e}") from None


def _size(key, value):
    if not isinstance(value, str) or not SIZE_RE.match(value):
        raise _fail(key, value, "use a size such as '200MB' (units: KB, MB, GB)")
    return value


def _site_address(key, value):
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "{}\n\"'"):
        raise _fail(key, value, "use a Caddy site address such as 'pypi.example.org' or ':8080'")
    return value


def _caddy_restart(key, value):
    """A launchd label (kickstart) or ``{'command': '...'}``."""
    if value is None:
        return None
    if isinstance(value, str) and LABEL_RE.match(value):
        return {"label": value}
    if isinstance(value, dict) and set(value) == {"command"} and isinstance(value["command"], str):
        if value["command"].strip():
            return {"command": value["command"]}
    raise _fail(
        key,
        value,
        "use Caddy's launchd label (e.g. 'mcquack.eblume.caddy') or {'command': 'caddy reload ...'}",
    )


def _server_options(key, value):
    if not isinstance(value, dict):
        raise _fail(key, value, "use a mapping of devpi-server option names to values")
    out = {}
    for name, option in value.items():
        wanted = SERVER_OPTION_TYPES.get(name)
        if wanted is None:
            raise ConfigError(
                f"host data `{key}` has unknown devpi-server option {name!r}: "
                f"use one of {', '.join(sorted(SERVER_OPTION_TYPES))} "
                "(host, port and paths have their own devpi_* keys)",
            )
        ok = isinstance(option, wanted) and not (wanted is int and isinstance(option, bool))
        if name == "indexer-backend" and option is None:
            option, ok = "null", True
        if not ok or (isinstance(option, str) and ("\n" in option or not option.strip())):
            raise ConfigError(
                f"host data `{key}` option {name!r} = {option!r} is invalid: "
                f"use a {wanted.__name__}",
            )
        out[name] = option
    return out


@dataclass(frozen=True)
class Key:
    default: Any
    check: Callable[[str, Any], Any]


# The configuration reference: every key, its default and its check, in one place.
# Defaults that are paths may start with "~/" (the SSH user's home on the target).
KEYS: dict[str, Key] = {
    "devpi_server_version": Key(DEVPI_SERVER_VERSION, _version),
    "devpi_web_version": Key(DEVPI_WEB_VERSION, _version),
    "devpi_home": Key("~/devpi", _path),
    "devpi_host": Key("127.0.0.1", _host),
    "devpi_port": Key(3141, _port),
    "devpi_allow_remote_bind": Key(False, _bool),
    "devpi_outside_url": Key(None, _optional(_url)),
    "devpi_label": Key("net.devpi", _label),
    "devpi_log_dir": Key("~/Library/Logs", _path),
    "devpi_launch_agents_dir": Key("~/Library/LaunchAgents", _path),
    "devpi_out_log": Key(None, _optional(_log_name)),
    "devpi_err_log": Key(None, _optional(_log_name)),
    "devpi_root_password": Key(None, _secret),
    "devpi_index_url": Key(None, _optional(_url)),
    "devpi_python": Key("python3", _command_name),
    "devpi_uv": Key("uv", _command_name),
    "devpi_server_options": Key({}, _server_options),
    "devpi_launchd_domain": Key(None, _domain),
    "devpi_process_type": Key("Standard", _process_type),
    "devpi_throttle_interval": Key(10, _positive_int),
    "devpi_health_timeout": Key(60, _positive_int),
    # Users and indexes devpi should hold (pyinfra_devpi/indexes.py); root/pypi
    # always gets mirror_no_project_list=True unless the data says otherwise.
    "devpi_users": Key({}, check_users),
    "devpi_indexes": Key({}, check_indexes),
    "devpi_caddy_site_file": Key("~/.config/caddy/sites/devpi.caddy", _path),
    "devpi_caddy_site_address": Key(None, _site_address),
    "devpi_caddy_restart": Key(None, _caddy_restart),
    "devpi_caddy_serve_files": Key(True, _bool),
    "devpi_caddy_max_body_size": Key("200MB", _size),
    "devpi_caddy_bin": Key(None, _optional(_command_name)),
    # Mirror warming (docs/cold-mirror-race.md): project names, or the path of a
    # requirements/lock file on the controller; fetched through <index> after a converge.
    "devpi_prewarm": Key(None, _prewarm),
    "devpi_prewarm_index": Key("root/pypi", _prewarm_index),
}

PREFIXES = ("devpi_",)


@dataclass(frozen=True)
class DevpiConfig:
    """The validated configuration, with every path absolute."""

    server_version: str
    web_version: str
    home: str
    host: str
    port: int
    outside_url: str | None
    label: str
    log_dir: str
    launch_agents_dir: str
    out_log: str
    err_log: str
    root_password: SecretRef | None
    index_url: str | None
    python: str
    uv: str
    server_options: dict[str, Any]
    launchd_domain: str | None
    process_type: str
    throttle_interval: int
    health_timeout: int
    caddy_site_file: str
    caddy_site_address: str | None
    caddy_restart: dict | None
    caddy_serve_files: bool
    caddy_max_body_size: str
    caddy_bin: str | None
    extra: dict = field(default_factory=dict)
    users: dict = field(default_factory=dict)
    indexes: dict = field(default_factory=dict)
    prewarm: tuple[str, ...] = ()
    prewarm_index: str = "root/pypi"

    @property
    def venv(self) -> str:
        return f"{self.home}/venv"

    @property
    def venvs_dir(self) -> str:
        return f"{self.home}/venvs"

    @property
    def venv_name(self) -> str:
        return f"devpi-server-{self.server_version}-web-{self.web_version}"

    @property
    def server_dir(self) -> str:
        return f"{self.home}/server-dir"

    @property
    def config_file(self) -> str:
        return f"{self.home}/devpi-server.yml"

    @property
    def secret_file(self) -> str:
        return f"{self.home}/secret"

    @property
    def plist_file(self) -> str:
        return f"{self.launch_agents_dir}/{self.label}.plist"

    @property
    def out_log_path(self) -> str:
        return f"{self.log_dir}/{self.out_log}"

    @property
    def err_log_path(self) -> str:
        return f"{self.log_dir}/{self.err_log}"

    @property
    def local_url(self) -> str:
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        elif host in ("0.0.0.0", "localhost"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def user_home(self) -> str:
        return self.extra["user_home"]

    @property
    def site_address(self) -> str:
        if self.caddy_site_address:
            return self.caddy_site_address
        if self.outside_url:
            return self.outside_url
        raise ConfigError(
            "host data `devpi_caddy_site_address` is required when `devpi_outside_url` is unset: "
            "set `devpi_outside_url` (e.g. 'https://pypi.example.org') or `devpi_caddy_site_address`",
        )

    @property
    def server_yaml_options(self) -> dict[str, Any]:
        """Everything that goes under ``devpi-server:`` in the YAML config, sorted."""
        options = dict(DEFAULT_SERVER_OPTIONS)
        options.update(self.server_options)
        options.update(
            {
                "host": self.host,
                "port": self.port,
                "serverdir": self.server_dir,
                "secretfile": self.secret_file,
            },
        )
        return dict(sorted(options.items()))


def unknown_keys(data: dict[str, Any]) -> list[str]:
    return sorted(k for k in data if k.startswith(PREFIXES) and k not in KEYS)


def build_config(data: dict[str, Any], user_home: str) -> DevpiConfig:
    """Validate host data and build the config; raises ``ConfigError`` naming the key."""
    unknown = unknown_keys(data)
    if unknown:
        raise ConfigError(
            f"unknown host data key(s): {', '.join(unknown)}; "
            f"known keys are: {', '.join(sorted(KEYS))}",
        )

    if not isinstance(user_home, str) or not user_home.startswith("/"):
        raise ConfigError(f"could not determine the SSH user's home on the target (got {user_home!r})")
    user_home = user_home.rstrip("/") or "/"

    values: dict[str, Any] = {}
    for key, spec in KEYS.items():
        raw = data.get(key, spec.default)
        values[key] = spec.check(key, raw)

    check_together(values["devpi_users"], values["devpi_indexes"])

    def expand(path: str) -> str:
        return f"{user_home}{path[1:]}" if path.startswith("~/") else path

    for key in ("devpi_home", "devpi_log_dir", "devpi_launch_agents_dir", "devpi_caddy_site_file"):
        values[key] = expand(values[key])
        if ".." in PurePosixPath(values[key]).parts:
            raise _fail(key, data.get(key), "paths cannot contain '..'")

    host = values["devpi_host"]
    if not values["devpi_allow_remote_bind"] and not _is_loopback(host):
        raise ConfigError(
            f"host data `devpi_host` = {host!r} is not a loopback address: devpi would be "
            "reachable from the network. Use '127.0.0.1', or set "
            "`devpi_allow_remote_bind = True` to opt out deliberately",
        )

    label = values["devpi_label"]
    config = DevpiConfig(
        server_version=values["devpi_server_version"],
        web_version=values["devpi_web_version"],
        home=values["devpi_home"],
        host=host,
        port=values["devpi_port"],
        outside_url=values["devpi_outside_url"],
        label=label,
        log_dir=values["devpi_log_dir"],
        launch_agents_dir=values["devpi_launch_agents_dir"],
        out_log=values["devpi_out_log"] or f"{label}.out.log",
        err_log=values["devpi_err_log"] or f"{label}.err.log",
        root_password=values["devpi_root_password"],
        index_url=values["devpi_index_url"],
        python=values["devpi_python"],
        uv=values["devpi_uv"],
        server_options=values["devpi_server_options"],
        launchd_domain=values["devpi_launchd_domain"],
        process_type=values["devpi_process_type"],
        throttle_interval=values["devpi_throttle_interval"],
        health_timeout=values["devpi_health_timeout"],
        caddy_site_file=values["devpi_caddy_site_file"],
        caddy_site_address=values["devpi_caddy_site_address"],
        caddy_restart=values["devpi_caddy_restart"],
        caddy_serve_files=values["devpi_caddy_serve_files"],
        caddy_max_body_size=values["devpi_caddy_max_body_size"],
        caddy_bin=values["devpi_caddy_bin"],
        prewarm=values["devpi_prewarm"],
        prewarm_index=values["devpi_prewarm_index"],
        extra={"user_home": user_home},
        users=values["devpi_users"],
        indexes=values["devpi_indexes"],
    )
    config.site_address  # noqa: B018 - raises ConfigError early when neither is set
    if config.err_log_path == config.out_log_path:
        raise _fail("devpi_err_log", config.err_log, "use a file name different from devpi_out_log")
    return config


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    return ipaddress.ip_address(host).is_loopback

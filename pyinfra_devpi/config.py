"""
The deploy's configuration: one typed, validated object built from host data.

Every host-data key is declared once, as a field of ``DevpiConfig``: its name in host
data, its default and its check sit together (``key(...)``); ``KEYS`` and
``build_config`` are derived from those declarations. Only ``devpi_*`` keys are this
deploy's: an unknown one is an error (a typo never falls back to a default), other
deploys' keys (a Caddy deploy's ``caddy_email``) pass untouched.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath
from typing import Any, Callable

from . import checks, layout, real_paths
from .checks import fail
from .errors import ConfigError
from .layout import Layout
from .prewarm import check_index, prewarm_projects
from .secrets import SecretRef, parse_secret_ref
from .users_indexes.spec import check_indexes, check_together, check_users

# The pinned releases: a bump is a change here (or in host data) and a new lock file.
DEVPI_SERVER_VERSION = "6.20.3"
DEVPI_WEB_VERSION = "5.1.1"

# The Python devpi's venv runs on. devpi-server 6.20.3 and devpi-web 5.1.1 declare
# Requires-Python >=3.9, but their locked tree (locks/devpi-6.20.3-5.1.1.txt) needs
# 3.11: zope-interface 8.7, platformdirs 4.14.8 and pycparser 3.12 declare >=3.11.
# The default is a version request that uv answers with a 3.12 it finds (its own
# managed ones, or one on the session's PATH) or downloads; an interpreter older than
# the minimum is refused before any change.
PYTHON_MINIMUM = (3, 11)
DEFAULT_PYTHON = "3.12"

# uv pip-installed from PyPI into ``<devpi_home>/tools`` when the host has no uv
# (hashes of every wheel in locks/uv-<version>.txt).
UV_BOOTSTRAP_VERSION = "0.13.9"

# Database version that every devpi-server 6.x writes to ``.serverversion``.
SERVER_DB_VERSION = "4"

# devpi-server options the deploy renders into the YAML config unless the operator
# overrides them. Why each one:
# (devpi-web's ``indexer-backend`` is not among them: ``devpi_search`` chooses it, and
# the deploy names Whoosh only once no mirror loads its upstream's whole project list;
# pyinfra_devpi/search.py.)
# - request-timeout: devpi's 5 s default is shorter than a cold mirror fetch.
# - argon2 costs: devpi's defaults (512 MiB, t=16, p=8) spend 5-10 s and ~580 MB at
#   every start deriving a key from the secret file. The secret is 32 random bytes,
#   so stretching adds nothing; replicas must use the same values.
# - restrict-modify root: devpi's default lets anyone who reaches it create users and
#   indexes (an anonymous ``PUT /<name>`` answers 201); the deploy manages them as root.
DEFAULT_SERVER_OPTIONS: dict[str, Any] = {
    "restrict-modify": "root",
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

PREFIX = "devpi_"
PYTHON_REQUEST_RE = re.compile(r"^3\.(\d+)(\.\d+)?$")
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
VERSION_RE = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")
DOMAIN_RE = re.compile(r"^(gui|user)/\d+$")
SIZE_RE = re.compile(r"^[1-9][0-9]*(KB|MB|GB)?$")
STATUS_FORMATS = ("table", "json")
# devpi_role: a primary (standalone unless a replica names it) or a replica of one.
ROLES = ("primary", "replica")
PROCESS_TYPES = ("Standard", "Background", "Adaptive", "Interactive")
LAUNCHD_SCOPES = (layout.AGENT_SCOPE, layout.DAEMON_SCOPE)
# devpi's log bound (``devpi_log_max_bytes`` per file, ``devpi_log_backups`` rotated
# copies): 10 MiB x (1 + 4) = at most ~50 MB on disk. A request writes ~2 lines
# (~200 bytes), so 10 MiB holds ~50,000 requests.
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 4
MIN_LOG_BYTES = 4096
MAX_LOG_BYTES = 2**40
# Generous but finite: a value near 2**63 would wrap in the host's shell arithmetic.
MAX_SECONDS = 24 * 3600


# Checks: each takes (where, value) and returns the normalised value or raises.


_version = checks.matches(VERSION_RE, "use an exact PEP 440 release such as '6.20.3'")


def _port(where, value):
    return checks.integer(where, value, minimum=1, maximum=65535, allowed="use an integer port between 1 and 65535")


def _seconds(where, value):
    return checks.integer(
        where, value, minimum=1, maximum=MAX_SECONDS, allowed=f"use a whole number of seconds from 1 to {MAX_SECONDS}"
    )


def _wait_seconds(where, value):
    return checks.integer(
        where, value, minimum=0, maximum=MAX_SECONDS, allowed=f"use a whole number of seconds from 0 to {MAX_SECONDS}"
    )


# Longer than any restart the deploy makes; beyond it a client had better get its 502.
MAX_UPSTREAM_WAIT = 300


def _upstream_wait(where, value):
    return checks.integer(
        where, value, minimum=0, maximum=MAX_UPSTREAM_WAIT,
        allowed=f"use a whole number of seconds from 0 (no waiting) to {MAX_UPSTREAM_WAIT}",
    )


def _host(where, value):
    try:
        ipaddress.ip_address(value)
    except (TypeError, ValueError):
        if value != "localhost":
            raise fail(where, value, "use an IP address such as '127.0.0.1' (or 'localhost')") from None
    return value


# A file name (one path component) holds at most 255 bytes on APFS and ext4 alike.
NAME_MAX = 255
# The longest file name made from the label: the backup job's plist staged beside its place.
LONGEST_LABEL_SUFFIX = layout.BACKUP_LABEL_SUFFIX + layout.PLIST_SUFFIX + layout.TRANSIENT_SUFFIX
# devpi's rotated copies of its log: ``<log>.<n>``, n up to the largest devpi_log_backups.
LOG_COPY_SUFFIX = ".100"
# Characters devpi-init and SQLite read in a server dir's path (SQLite opens its database
# by URI: ``#`` and ``?`` end the path there, ``%`` starts an escape), so devpi would write
# its database somewhere else than devpi_home.
SPECIAL_IN_HOME = "#?%"


def _fits(where, value, name: str, allowed: str):
    """A file name the deploy makes (``name``, from ``value``) fits in one path component."""
    size = len(name.encode("utf-8"))
    if size > NAME_MAX:
        raise fail(where, value, f"it makes the file name {name[:40]!r}... of {size} bytes, longer than the "
                                 f"{NAME_MAX} bytes a file name can have; {allowed}")


def _label(where, value):
    allowed = "use a reverse-DNS launchd label such as 'net.devpi'"
    value = checks.matches(LABEL_RE, allowed)(where, value)
    _fits(where, value, value + LONGEST_LABEL_SUFFIX, allowed)
    return value


def _path(where, value):
    """An absolute path, or one relative to the SSH user's home (``~/...``); expanded later."""
    allowed = "use an absolute path or one starting with '~/'"
    value = checks.string(where, value, allowed)
    if not (value.startswith("/") or value.startswith("~/")):
        raise fail(where, value, allowed)
    if ".." in PurePosixPath(value).parts:
        raise fail(where, value, "paths cannot contain '..'")
    for part in PurePosixPath(value).parts:
        # (the last may get the transient suffix while the deploy writes it)
        _fits(where, value, part + layout.TRANSIENT_SUFFIX, "use shorter directory and file names")
    value = value.rstrip("/")
    return "~/" if value == "~" else value or "/"


def _log_name(where, value):
    allowed = "use a plain file name such as 'devpi.err.log'"
    value = checks.string(where, value, allowed)
    if not value or "/" in value or value in (".", ".."):
        raise fail(where, value, allowed)
    _fits(where, value, value + LOG_COPY_SUFFIX, allowed)
    return value


def _home(where, value):
    value = _path(where, value)
    special = sorted({c for c in value if c in SPECIAL_IN_HOME})
    if special:
        raise fail(
            where, value,
            f"{' and '.join(repr(c) for c in special)} in devpi_home would make devpi-init and SQLite (which "
            "open the database by URI, where '#' and '?' end the path and '%' starts an escape) write the "
            "database outside it; use a path without '#', '?' or '%', such as '~/devpi'",
        )
    return value


def _url(where, value):
    return checks.url(where, value).rstrip("/")


def _optional(check):
    def inner(where, value):
        return None if value is None else check(where, value)

    return inner


def _command_name(where, value):
    allowed = "use a command name on the target's PATH or an absolute path"
    value = checks.string(where, value, allowed)
    if not value.strip():
        raise fail(where, value, allowed)
    return value


def python_request(value: str) -> tuple[int, int] | None:
    """``(3, minor)`` when ``devpi_python`` is a version request for uv ("3.12"), else None
    (an interpreter's path or command name, probed on the host)."""
    match = PYTHON_REQUEST_RE.fullmatch(value)
    return (3, int(match.group(1))) if match else None


def python_name(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _python(where, value):
    allowed = (
        f"use a Python version uv finds or downloads, such as {DEFAULT_PYTHON!r}, an interpreter's "
        "absolute path, or a command name on the SSH session's PATH"
    )
    value = checks.string(where, value, allowed)
    if not value.strip():
        raise fail(where, value, allowed)
    request = python_request(value)
    if request is not None and request < PYTHON_MINIMUM:
        raise fail(
            where, value,
            f"devpi-server {DEVPI_SERVER_VERSION} with its locked dependencies needs Python "
            f"{python_name(PYTHON_MINIMUM)} or newer; use e.g. {DEFAULT_PYTHON!r}",
        )
    return value


_domain = checks.matches(DOMAIN_RE, "use 'gui/<uid>' or 'user/<uid>', or leave unset to auto-detect")


def _scope(where, value):
    if value not in LAUNCHD_SCOPES:
        raise fail(
            where, value,
            "use 'agent' (a LaunchAgent: runs while the SSH user is logged in at the console, or "
            "with auto-login) or 'daemon' (a LaunchDaemon that starts at boot without a login, run "
            "as the SSH user; installed with sudo -n)",
        )
    return value


def _process_type(where, value):
    if value not in PROCESS_TYPES:
        raise fail(where, value, f"use one of {', '.join(PROCESS_TYPES)}")
    return value


def _prewarm(where, value):
    try:
        return prewarm_projects(value)
    except ValueError as e:
        raise ConfigError(f"host data {where} is invalid: {e}") from None


def _prewarm_index(where, value):
    try:
        return check_index(value)
    except ValueError as e:
        raise fail(where, value, str(e)) from None


def _secret(where, value):
    try:
        return parse_secret_ref(value)
    except ValueError as e:
        raise ConfigError(f"host data {where} is invalid: {e}") from None


def _role(where, value):
    if value not in ROLES:
        raise fail(where, value, f"use one of {', '.join(ROLES)}")
    return value


def _primary(where, value):
    """An inventory host name, or the primary's URL (``http://`` / ``https://``)."""
    allowed = "use the primary's inventory host name or its URL, such as 'https://pypi.example.org'"
    value = checks.string(where, value, allowed)
    if not value.strip() or value != value.strip():
        raise fail(where, value, allowed)
    if "://" in value:
        url = checks.url(where, value).rstrip("/")
        if "@" in url.split("://", 1)[1].split("/", 1)[0]:
            raise fail(where, value, "devpi refuses credentials in the primary URL: use it without user:password@")
        return url
    return value


def _status_format(where, value):
    if value not in STATUS_FORMATS:
        raise fail(where, value, f"use one of {', '.join(STATUS_FORMATS)}")
    return value


def _log_bytes(where, value):
    return checks.integer(
        where, value, minimum=MIN_LOG_BYTES, maximum=MAX_LOG_BYTES,
        allowed=f"use a number of bytes from {MIN_LOG_BYTES} to {MAX_LOG_BYTES}, e.g. 10485760 (10 MiB)",
    )


def _log_backups(where, value):
    # RotatingFileHandler never rotates with 0 backups: the file would grow forever.
    return checks.integer(where, value, minimum=1, maximum=100, allowed="use a whole number from 1 to 100")


_size = checks.matches(SIZE_RE, "use a size such as '200MB' (units: KB, MB, GB)")


def _site_address(where, value):
    allowed = "use a Caddy site address such as 'pypi.example.org' or ':8080'"
    value = checks.string(where, value, allowed)
    # Whitespace would split it into two addresses, '#' starts a comment, braces,
    # quotes and backslashes are Caddyfile syntax.
    if not value or any(c.isspace() or c in "{}\"'`#\\" for c in value):
        raise fail(where, value, allowed)
    return value


# A read backend's host: an IP address or a DNS name, written out (no empty host, which
# Caddy would read as "every interface", and no unspecified address such as 0.0.0.0).
HOST_NAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
READ_UPSTREAM_RE = re.compile(r"^(?:http://)?(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>[0-9]{1,5})/?$")


def _read_upstream(where, value) -> str:
    """One read backend, ``host:port`` or ``http://host:port``, as Caddy dials it (``host:port``)."""
    allowed = ("use a list of the replicas' devpi addresses as 'host:port' or 'http://host:port' "
               "(e.g. '10.0.0.12:3141'; plain HTTP: Caddy dials every backend of one block the same way)")
    value = checks.string(where, value, allowed)
    match = READ_UPSTREAM_RE.fullmatch(value)
    if not match:
        raise fail(where, value, allowed)
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise fail(where, value, f"the port must be from 1 to 65535; {allowed}")
    host = match["ip6"] or match["host"]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not HOST_NAME_RE.fullmatch(host):
            raise fail(where, value, allowed) from None
        return f"{host}:{port}"
    if address.is_unspecified:
        raise fail(where, value, f"{host} is every interface, not a backend; {allowed}")
    return f"[{host}]:{port}" if address.version == 6 else f"{host}:{port}"


def _read_upstreams(where, value) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise fail(where, value, "use a list of 'host:port' addresses, such as ['10.0.0.12:3141']")
    upstreams = tuple(_read_upstream(f"{where} [{index}]", item) for index, item in enumerate(value))
    duplicates = sorted({u for u in upstreams if upstreams.count(u) > 1})
    if duplicates:
        raise fail(where, value, f"{', '.join(duplicates)} is listed twice; list each replica once")
    return upstreams


def _caddy_restart(where, value):
    """A launchd label (kickstart) or ``{'command': '...'}``."""
    if isinstance(value, str) and LABEL_RE.fullmatch(value):
        return {"label": value}
    if isinstance(value, dict) and set(value) == {"command"} and isinstance(value["command"], str):
        command = value["command"]
        if command.strip() and not checks.has_control(command):
            return {"command": command}
    raise fail(
        where,
        value,
        "use Caddy's launchd label (e.g. 'homebrew.mxcl.caddy': kickstarted where it is loaded) or "
        f"{layout.CADDY_RELOAD_EXAMPLE} (one line; a graceful reload)",
    )


def _server_options(where, value):
    if not isinstance(value, dict):
        raise fail(where, value, "use a mapping of devpi-server option names to values")
    out = {}
    for name, option in value.items():
        wanted = SERVER_OPTION_TYPES.get(name)
        if name == "indexer-backend":
            raise ConfigError(
                f"host data {where} sets 'indexer-backend': devpi-web's search is chosen by "
                "`devpi_search` (True: Whoosh, switched on once every mirror has "
                "mirror_no_project_list; False: the null backend, no search); remove the option",
            )
        if wanted is None:
            raise ConfigError(
                f"host data {where} has unknown devpi-server option {name!r}: "
                f"use one of {', '.join(sorted(SERVER_OPTION_TYPES))} "
                "(host, port and paths have their own devpi_* keys)",
            )
        ok = isinstance(option, wanted) and not (wanted is int and isinstance(option, bool))
        if ok and isinstance(option, str):
            ok = bool(option.strip()) and not checks.has_control(option)
        if ok and wanted is int and name == "threads":
            ok = option >= 1  # devpi with no worker thread accepts connections and never answers
        if not ok:
            raise ConfigError(
                f"host data {where} option {name!r} = {option!r} is invalid: "
                f"use a {'positive ' if name == 'threads' else ''}{wanted.__name__} on one line",
            )
        out[name] = option
    return out


@dataclass(frozen=True)
class BackupConfig:
    """``devpi_backup``: when the backup job runs (daily, host's local time), how many
    good backups it keeps, where it writes them (None: ``<devpi_home>/backups``), and
    whether the mirrors' cached files go in too."""

    hour: int
    minute: int
    keep: int
    dir: str | None
    mirrored_files: bool


BACKUP_KEYS = ("hour", "minute", "keep", "dir", "mirrored_files")
MAX_BACKUPS_KEPT = 1000


def _backup(where, value):
    """``{"hour": 3, "minute": 17, "keep": 14, "dir": "~/devpi/backups", "mirrored_files": False}``;
    hour and minute are required, the rest default."""
    example = '{"hour": 3, "minute": 17, "keep": 14}'
    if not isinstance(value, dict):
        raise fail(where, value, f"use a mapping such as {example}, or leave it unset for no backups")
    unknown = sorted(str(k) for k in value if k not in BACKUP_KEYS)
    if unknown:
        raise ConfigError(
            f"host data {where} has unknown key(s) {', '.join(unknown)}: use {', '.join(BACKUP_KEYS)}",
        )
    for required in ("hour", "minute"):
        if required not in value:
            raise ConfigError(f"host data {where} needs {required!r}: e.g. {example} (daily at 03:17)")
    hour = checks.integer(f"{where} ['hour']", value["hour"], minimum=0, maximum=23,
                          allowed="use an hour from 0 to 23 (the host's local time)")
    minute = checks.integer(f"{where} ['minute']", value["minute"], minimum=0, maximum=59,
                            allowed="use a minute from 0 to 59")
    keep = checks.integer(f"{where} ['keep']", value.get("keep", 14), minimum=1, maximum=MAX_BACKUPS_KEPT,
                          allowed=f"use how many good backups to keep, from 1 to {MAX_BACKUPS_KEPT}")
    directory = value.get("dir")
    if directory is not None:
        directory = _path(f"{where} ['dir']", directory)
    mirrored = checks.boolean(f"{where} ['mirrored_files']", value.get("mirrored_files", False))
    return BackupConfig(hour=hour, minute=minute, keep=keep, dir=directory, mirrored_files=mirrored)


def key(name: str, default: Any, check: Callable[[str, Any], Any], *, doc: str, optional: bool = False):
    """Declare a config field: its host-data key, its default, its check and its doc.

    ``optional``: ``None`` is accepted (and left as ``None``) without calling the check.
    ``doc``: what the key is for, what its default means and what it accepts, as
    docs/configuration.md shows it (Markdown; ``pyinfra_devpi/config_reference.py``).
    """
    return field(metadata={
        "key": name, "default": default, "check": _optional(check) if optional else check,
        "optional": optional, "doc": doc,
    })


def _code_list(values) -> str:
    return ", ".join(f"`{value}`" for value in values)


@dataclass(frozen=True)
class DevpiConfig:
    """The validated configuration; every path absolute. The configuration reference."""

    server_version: str = key(
        "devpi_server_version", DEVPI_SERVER_VERSION, _version,
        doc="The devpi-server release in devpi's venv: an exact PEP 440 version. A bump is a config "
            "change: the new venv is built beside the live one (from `locks/devpi-<server>-<web>.txt` "
            "when that lock exists), and the live one stays if anything fails.",
    )
    web_version: str = key(
        "devpi_web_version", DEVPI_WEB_VERSION, _version,
        doc="The devpi-web release installed beside devpi-server: an exact PEP 440 version.",
    )
    home: str = key(
        "devpi_home", layout.DEFAULT_HOME, _home,
        doc="devpi's directory on the host: its venvs, server dir, YAML config and secret live in it. The "
            "deploy makes it 0700 and prunes venvs in it, so it must be a directory of its own (not the SSH "
            "user's home, nor a link to it), without `#`, `?` or `%` (devpi's SQLite database is opened by URI).",
    )
    host: str = key(
        "devpi_host", "127.0.0.1", _host,
        doc="The address devpi-server binds: an IP address or `localhost`. One that is not a loopback "
            "address is refused unless `devpi_allow_remote_bind` is `True`.",
    )
    port: int = key("devpi_port", 3141, _port, doc="devpi-server's port (1-65535), which Caddy proxies to.")
    allow_remote_bind: bool = key(
        "devpi_allow_remote_bind", False, checks.boolean,
        doc="`True` lets `devpi_host` be an address that is not a loopback one, making devpi reachable "
            "from the network past Caddy: the explicit opt-out of loopback.",
    )
    # operations/server_dir.py moves the data.
    allow_export_import: bool = key(
        "devpi_allow_export_import", False, checks.boolean,
        doc="`True`: a devpi-server whose database version differs from the server dir's moves the data "
            "over with `devpi-export` / `devpi-import`; `False`: such a run is refused before any change. "
            "Usually given for one run: `--data devpi_allow_export_import=true`.",
    )
    outside_url: str | None = key(
        "devpi_outside_url", None, _url, optional=True,
        doc="The public URL, such as `\"https://pypi.example.org\"`: Caddy sends it to devpi as "
            "`X-Outside-Url`, and it is the Caddy site address unless `devpi_caddy_site_address` is set. "
            "Unset: `devpi_caddy_site_address` is required.",
    )
    label: str = key(
        "devpi_label", "net.devpi", _label,
        doc="The launchd job's label, reverse DNS: the plist is `<label>.plist` in "
            "`devpi_launch_agents_dir` (a LaunchDaemon's in `devpi_launch_daemons_dir`), the backup job "
            "is `<label>.backup`, and the log files are named after it unless set.",
    )
    log_dir: str = key(
        "devpi_log_dir", layout.DEFAULT_LOG_DIR, _path,
        doc="The directory of devpi's log files (`devpi_out_log`, `devpi_err_log`, `devpi_server_log`) "
            "and of the backup job's.",
    )
    launch_agents_dir: str = key(
        "devpi_launch_agents_dir", layout.DEFAULT_LAUNCH_AGENTS_DIR, _path,
        doc="Where a LaunchAgent's plist goes (tests point it into a temp dir).",
    )
    out_log: str | None = key(
        "devpi_out_log", None, _log_name, optional=True,
        doc="The file name, in `devpi_log_dir`, of devpi's stdout as launchd writes it (what bypasses "
            "devpi's logging). Unset: `<label>.out.log`.",
    )
    err_log: str | None = key(
        "devpi_err_log", None, _log_name, optional=True,
        doc="The file name, in `devpi_log_dir`, of devpi's stderr as launchd writes it (a traceback "
            "before devpi's logging is set up). Unset: `<label>.err.log`; it must differ from `devpi_out_log`.",
    )
    server_log: str | None = key(
        "devpi_server_log", None, _log_name, optional=True,
        doc="The file name, in `devpi_log_dir`, of devpi's own log (every request), rotated by devpi "
            "itself. Unset: `<label>.log`; it must differ from both launchd logs.",
    )
    log_max_bytes: int = key(
        "devpi_log_max_bytes", DEFAULT_LOG_MAX_BYTES, _log_bytes,
        doc=f"The size at which devpi rotates its own log, in bytes (at least {MIN_LOG_BYTES}); "
            "the default, 10 MiB, holds ~50,000 requests. A change restarts devpi.",
    )
    log_backups: int = key(
        "devpi_log_backups", DEFAULT_LOG_BACKUPS, _log_backups,
        doc="How many rotated copies of its own log devpi keeps (1-100): with the defaults at most ~50 MB "
            "on disk. A change restarts devpi.",
    )
    root_password: SecretRef | None = key(
        "devpi_root_password", None, _secret, optional=True,
        doc="A reference to devpi's root password, never the password itself: `op://vault/item/field` "
            "(`op read` on your machine), `env:NAME` or `file:PATH` (on your machine). Read only when "
            "needed: to initialise a new server dir (unset, that is refused) or to change users and indexes.",
    )
    index_url: str | None = key(
        "devpi_index_url", None, _url, optional=True,
        doc="The package index the venv's packages come from (an http(s) URL). Unset: uv's default.",
    )
    python: str = key(
        "devpi_python", DEFAULT_PYTHON, _python,
        doc="The Python of devpi's venv (uv's `--python`): a version that uv finds or downloads, an "
            "interpreter's absolute path, or a command name on the SSH session's PATH (probed on the "
            f"host). Below {python_name(PYTHON_MINIMUM)} is refused: the locked dependencies need it.",
    )
    uv: str | None = key(
        "devpi_uv", None, _command_name, optional=True,
        doc="uv's path on the host, or a command name on the SSH session's PATH. Unset: the first of "
            f"{_code_list(layout.UV_CANDIDATES)} found, else uv {UV_BOOTSTRAP_VERSION} bootstrapped from "
            "PyPI into `<home>/tools` (where later runs find it).",
    )
    server_options: dict = key(
        "devpi_server_options", {}, _server_options,
        doc="devpi-server options for its YAML config, such as `{\"threads\": 8}`, over the deploy's own "
            f"({', '.join(f'`{name}: {value}`' for name, value in DEFAULT_SERVER_OPTIONS.items())}). "
            f"Accepted: {_code_list(sorted(SERVER_OPTION_TYPES))}; host, port and paths have keys of "
            "their own, and `indexer-backend` is `devpi_search`'s.",
    )
    # Whoosh is written into the config only once no mirror loads its upstream's whole
    # project list (pyinfra_devpi/search.py).
    search: bool = key(
        "devpi_search", True, checks.boolean,
        doc="devpi-web's search. `True`: Whoosh, switched on once no mirror loads its upstream's whole "
            "project list (`mirror_no_project_list`); `False`: the null backend, no search.",
    )
    launchd_domain: str | None = key(
        "devpi_launchd_domain", None, _domain, optional=True,
        doc="A LaunchAgent's domain: `gui/<uid>` or `user/<uid>`. Unset: detected from the SSH "
            "session. Refused with `devpi_launchd_scope = \"daemon\"`.",
    )
    launchd_scope: str = key(
        "devpi_launchd_scope", layout.AGENT_SCOPE, _scope,
        doc="`\"agent\"`: a LaunchAgent of the SSH user in `gui/<uid>` or `user/<uid>` (runs while they "
            "are logged in at the console, or with auto-login); `\"daemon\"`: a LaunchDaemon in the "
            "system domain run as the SSH user, started at boot without a login, installed through "
            "`sudo -n` (passwordless sudo).",
    )
    launch_daemons_dir: str = key(
        "devpi_launch_daemons_dir", layout.DEFAULT_LAUNCH_DAEMONS_DIR, _path,
        doc="Where a LaunchDaemon's plist goes (`devpi_launchd_scope = \"daemon\"`; written through "
            "`sudo -n`; tests point it elsewhere).",
    )
    process_type: str = key(
        "devpi_process_type", "Standard", _process_type,
        doc=f"launchd's `ProcessType` for devpi's job: one of {_code_list(PROCESS_TYPES)} "
            "(without one launchd may throttle devpi's CPU and I/O).",
    )
    throttle_interval: int = key(
        "devpi_throttle_interval", 10, _seconds,
        doc=f"launchd's `ThrottleInterval`: seconds between KeepAlive respawns of devpi (1 to {MAX_SECONDS}).",
    )
    health_timeout: int = key(
        "devpi_health_timeout", 60, _seconds,
        doc=f"Seconds to wait for devpi's `GET /+api` to answer after a (re)start (1 to {MAX_SECONDS}); a "
            "new release that does not answer in time is rolled back, and the run fails.",
    )
    # pyinfra_devpi/deploy_lock.py
    lock_wait: int = key(
        "devpi_lock_wait", 300, _wait_seconds,
        doc="Seconds a run waits for another deploy's lock on the host before it stops, changing "
            f"nothing (0: do not wait; at most {MAX_SECONDS}).",
    )
    # users_indexes/spec.py
    users: dict = key(
        "devpi_users", {}, check_users,
        doc="The users devpi should hold: `{name: {\"email\", \"password\", \"password_version\", "
            "\"state\"}}`, each `password` a reference like `devpi_root_password`'s. Only the keys a "
            "spec names are managed; a user left out is never deleted (`\"state\": \"absent\"` does that).",
    )
    indexes: dict = key(
        "devpi_indexes", {}, check_indexes,
        doc="The indexes devpi should hold: `{\"user/index\": {\"type\", \"bases\", \"volatile\", "
            "\"acl_upload\", \"mirror_url\", ..., \"state\"}}`. `root/pypi` always gets "
            "`mirror_no_project_list: True` unless declared otherwise; an index left out is never deleted.",
    )
    caddy_site_file: str = key(
        "devpi_caddy_site_file", layout.DEFAULT_CADDY_SITE_FILE, _path,
        doc="Where the deploy writes its Caddy site block; import it from your Caddyfile. It must not be "
            "a file the deploy owns for devpi, nor inside `devpi_home`, as the host resolves it (symlinks "
            "followed, case folded where the file system folds it); a file there the deploy did not write is "
            "refused unless `devpi_caddy_adopt_site_file` is `True`.",
    )
    caddy_adopt_site_file: bool = key(
        "devpi_caddy_adopt_site_file", False, checks.boolean,
        doc="`True`: replace a `devpi_caddy_site_file` this deploy did not write (no \"Managed by "
            "pyinfra-devpi\" line: e.g. the Ansible role's block, or a placeholder made so Caddy starts); "
            "its content is never shown. `False`: such a file is refused before any change. Once the deploy "
            "has written the file, this no longer matters.",
    )
    caddy_site_address: str | None = key(
        "devpi_caddy_site_address", None, _site_address, optional=True,
        doc="What the Caddy block answers to, such as `\"pypi.example.org\"` or "
            "`\"http://127.0.0.1:8141\"`. Unset: `devpi_outside_url`.",
    )
    caddy_restart: dict | None = key(
        "devpi_caddy_restart", None, _caddy_restart, optional=True,
        doc="How Caddy is restarted when the block changes: Caddy's launchd label (`kickstart -k` in "
            "the domain where it is loaded: the SSH user's, their other agent domain, or `system` "
            "through `sudo -n`), or `{\"command\": \"...\"}`, one line run in the SSH session (e.g. "
            "`caddy reload --config <Caddyfile>`, which keeps Caddy's port open and needs its admin "
            "endpoint). Unset: the deploy warns that Caddy must be reloaded.",
    )
    caddy_serve_files: bool = key(
        "devpi_caddy_serve_files", True, checks.boolean,
        doc="`True`: Caddy answers `GET`/`HEAD` of `/+f/...` straight from the server dir's "
            f"`{layout.FILES_DIR}` when the file exists, with devpi's headers; `False`: devpi answers every "
            "request.",
    )
    caddy_max_body_size: str = key(
        "devpi_caddy_max_body_size", "200MB", _size,
        doc="The largest request body Caddy passes on (the upload limit): a size such as `\"200MB\"` "
            "(units KB, MB, GB).",
    )
    caddy_upstream_wait: int = key(
        "devpi_caddy_upstream_wait", 10, _upstream_wait,
        doc="Seconds Caddy holds a request while devpi's port refuses connections (devpi restarting), "
            f"dialling again every 100 ms, before it answers 502 (0: 502 at once; at most {MAX_UPSTREAM_WAIT}).",
    )
    caddy_read_upstreams: tuple = key(
        "devpi_caddy_read_upstreams", (), _read_upstreams,
        doc="On the front host (the primary): devpi replicas that serve reads beside the primary, as "
            "`host:port` or `http://host:port` (e.g. `[\"10.0.0.12:3141\"]`). Caddy spreads `GET`/`HEAD` "
            "over the primary and these in turn, checks each on devpi-web's `/+status` every second and leaves "
            "out one that does not answer, or a replica whose own status is not ok (behind its primary); "
            "with none left, reads go to any replica that answers. Logins, uploads and other writes, and "
            "`/+changelog`, go to the primary only. Empty: the primary answers everything. See docs/replicas.md.",
    )
    caddy_bin: str | None = key(
        "devpi_caddy_bin", None, _command_name, optional=True,
        doc="Caddy's path on the host (or a command name), used to validate the block before it replaces "
            f"the old one. Unset: the first of {_code_list(layout.CADDY_CANDIDATES)} found.",
    )
    # Why: docs/cold-mirror-race.md.
    prewarm: tuple = key(
        "devpi_prewarm", None, _prewarm,
        doc="Projects to fetch through the mirror after a converge, so clients find them warm: a list of "
            "project names, or the path (on your machine) of a requirements file, `uv.lock` or "
            "`pylock.toml`. Unset: nothing is warmed.",
    )
    prewarm_index: str = key(
        "devpi_prewarm_index", "root/pypi", _prewarm_index,
        doc="The mirror index (`user/index`) that `devpi_prewarm` warms.",
    )
    status_format: str = key(
        "devpi_status_format", "table", _status_format,
        doc="`deploys/status.py`'s output: `table` for people, or `json`, one JSON object per host, for "
            "machines (`--data devpi_status_format=json`).",
    )
    uninstall_purge: bool = key(
        "devpi_uninstall_purge", False, checks.boolean,
        doc="`True`: `deploys/devpi_uninstall.py` also removes devpi's data, venvs, config and logs; "
            "`False`: it keeps them. Backups stay either way.",
    )
    # pyinfra_devpi/backup.py
    backup: BackupConfig | None = key(
        "devpi_backup", None, _backup, optional=True,
        doc="A daily backup job: `{\"hour\": 3, \"minute\": 17, \"keep\": 14, \"dir\": \"~/devpi/backups\", "
            "\"mirrored_files\": False}`. `hour` and `minute` (the host's local time) are required; `keep` "
            f"(1 to {MAX_BACKUPS_KEPT}) defaults to 14, `dir` to `<home>/backups` (not inside the server "
            "dir), `mirrored_files` (the mirrors' cached files too) to `False`. Unset: no backup job.",
    )
    remove_orphaned_index: bool = key(
        "devpi_remove_orphaned_index", False, checks.boolean,
        doc=f"`True`: remove the server dir's Whoosh search index `{layout.WHOOSH_INDEX_DIR}` (e.g. left by "
            "the Ansible role) when devpi runs without Whoosh; `False`: it is only reported, with its size.",
    )

    # pyinfra_devpi/replica.py
    role: str = key(
        "devpi_role", "primary", _role,
        doc="`\"primary\"`: this host's devpi holds the data (run with devpi's `role: primary` when a "
            "host of the inventory names it as its `devpi_primary`, else standalone); `\"replica\"`: a "
            "devpi replica that follows `devpi_primary`'s change log, serves reads itself and relays "
            "writes to its primary (docs/replicas.md).",
    )
    primary: str | None = key(
        "devpi_primary", None, _primary, optional=True,
        doc="A replica's primary (required with `devpi_role = \"replica\"`, refused otherwise): an "
            "inventory host name (its URL is that host's `devpi_outside_url`, or its Caddy site address) or "
            "an explicit `https://` / `http://` URL. The primary's secret file is copied to the replica by "
            "the controller, over the primary's SSH connection.",
    )
    replica_secret_rotate: bool = key(
        "devpi_replica_secret_rotate", False, checks.boolean,
        doc="`True`: a replica whose secret file differs from its primary's gets the primary's (and is "
            "restarted). `False`: such a replica is refused before any change, naming this key: changing a "
            "replica's secret is an explicit act.",
    )

    @functools.cached_property
    def paths(self) -> Layout:
        return Layout(
            home=self.home,
            log_dir=self.log_dir,
            launch_agents_dir=self.launch_agents_dir,
            launch_daemons_dir=self.launch_daemons_dir,
            scope=self.launchd_scope,
            label=self.label,
            out_log_name=self.out_log or f"{self.label}.out.log",
            err_log_name=self.err_log or f"{self.label}.err.log",
            server_log_name=self.server_log or f"{self.label}.log",
            caddy_site_file=self.caddy_site_file,
        )

    @property
    def backup_dir(self) -> str:
        """Where backups go (and where a restore looks for a backup named without a path)."""
        if self.backup is not None and self.backup.dir is not None:
            return self.backup.dir
        return self.paths.default_backup_dir

    @property
    def venv_name(self) -> str:
        return layout.venv_name(self.server_version, self.web_version)

    @property
    def local_address(self) -> str:
        """The address devpi answers on, as the host reaches it (a wildcard bind is
        reached on the IPv4 loopback)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "localhost") else self.host

    @property
    def local_url(self) -> str:
        address = self.local_address
        return f"http://[{address}]:{self.port}" if ":" in address else f"http://{address}:{self.port}"

    @property
    def site_address(self) -> str:
        # Both are checked by build_config: one of them is set.
        return self.caddy_site_address or self.outside_url

    def server_yaml_options(self, indexer_backend: str) -> dict[str, Any]:
        """Everything that goes under ``devpi-server:`` in the YAML config, sorted;
        ``indexer_backend`` as the run decided it (``search.decide``)."""
        options = dict(DEFAULT_SERVER_OPTIONS)
        options["indexer-backend"] = indexer_backend
        options.update(self.server_options)
        options.update(
            {
                "host": self.host,
                "port": self.port,
                "serverdir": self.paths.server_dir,
                "secretfile": self.paths.secret_file,
                "logger-cfg": self.paths.logging_config,
            },
        )
        return dict(sorted(options.items()))


@dataclass(frozen=True)
class Key:
    """One host-data key as declared on ``DevpiConfig``."""

    field: str
    default: Any
    check: Callable[[str, Any], Any]
    optional: bool
    doc: str


# The configuration reference, by host-data key, derived from the declarations above.
KEYS: dict[str, Key] = {
    f.metadata["key"]: Key(
        f.name, f.metadata["default"], f.metadata["check"], optional=f.metadata["optional"], doc=f.metadata["doc"],
    )
    for f in fields(DevpiConfig)
}


# Keys of this deploy before every key got the devpi_ prefix (other deploys' caddy_* keys
# pass untouched): one of them without its new name set is refused with the new name.
RENAMED_KEYS = {
    name: f"devpi_{name}"
    for name in ("caddy_site_file", "caddy_site_address", "caddy_restart", "caddy_serve_files",
                 "caddy_max_body_size", "caddy_bin")
}


def renamed_keys(data: dict[str, Any]) -> list[str]:
    """Old names of this deploy's keys set in ``data`` whose new names are not."""
    return sorted(old for old, new in RENAMED_KEYS.items() if old in data and new not in data)


def unknown_keys(data: dict[str, Any]) -> list[str]:
    """This deploy's keys (``devpi_*``, in any case) that it does not know."""
    return sorted(k for k in data if isinstance(k, str) and k.lower().startswith(PREFIX) and k not in KEYS)


def build_config(data: dict[str, Any], user_home: str) -> DevpiConfig:
    """Validate host data and build the config; raises ``ConfigError`` naming the key."""
    unknown = unknown_keys(data)
    if unknown:
        raise ConfigError(
            f"unknown host data key(s): {', '.join(unknown)}; "
            f"known keys are: {', '.join(sorted(KEYS))}",
        )
    renamed = renamed_keys(data)
    if renamed:
        raise ConfigError(
            "host data "
            + ", ".join(f"`{old}` is now `{RENAMED_KEYS[old]}`" for old in renamed)
            + ": rename it (the old name is not read); if it is another deploy's key, set the new one too",
        )

    if not isinstance(user_home, str) or not user_home.startswith("/") or checks.has_control(user_home):
        raise ConfigError(f"could not determine the SSH user's home on the target (got {user_home!r})")
    user_home = user_home.rstrip("/") or "/"

    values: dict[str, Any] = {}
    for name, spec in KEYS.items():
        value = spec.check(f"`{name}`", data.get(name, spec.default))
        if spec.check in (_path, _home) and value.startswith("~/"):
            value = _expand(value, user_home)
        values[spec.field] = value
    backup = values["backup"]
    if backup is not None and backup.dir is not None and backup.dir.startswith("~/"):
        values["backup"] = dataclasses.replace(backup, dir=_expand(backup.dir, user_home))

    check_together(values["users"], values["indexes"])

    if values["home"] in (user_home, "/"):
        # The deploy owns its home: it makes it 0700 and prunes venvs in it.
        raise fail("`devpi_home`", data.get("devpi_home"), f"use a directory of its own, such as {layout.DEFAULT_HOME!r}")

    host = values["host"]
    if not values["allow_remote_bind"] and not _is_loopback(host):
        raise ConfigError(
            f"host data `devpi_host` = {host!r} is not a loopback address: devpi would be "
            "reachable from the network. Use '127.0.0.1', or set "
            "`devpi_allow_remote_bind = True` to opt out deliberately",
        )
    if not values["caddy_site_address"]:
        if not values["outside_url"]:
            raise ConfigError(
                "host data `devpi_caddy_site_address` is required when `devpi_outside_url` is unset: "
                "set `devpi_outside_url` (e.g. 'https://pypi.example.org') or `devpi_caddy_site_address`",
            )
        # The public URL is then the block's address: it must be one Caddyfile token.
        _site_address("`devpi_outside_url` (the Caddy site address unless `devpi_caddy_site_address` is set)",
                      values["outside_url"])

    _check_role(values)

    if values["launchd_scope"] == layout.DAEMON_SCOPE and values["launchd_domain"] is not None:
        raise ConfigError(
            f"host data `devpi_launchd_domain` = {values['launchd_domain']!r} names a LaunchAgent's domain, "
            "but `devpi_launchd_scope` is 'daemon' (the job loads into the system domain): unset "
            "devpi_launchd_domain, or set devpi_launchd_scope = 'agent'",
        )

    config = DevpiConfig(**values)
    paths = config.paths
    if paths.err_log == paths.out_log:
        raise fail("`devpi_err_log`", paths.err_log_name, "use a file name different from devpi_out_log")
    if paths.server_log in (paths.out_log, paths.err_log):
        raise fail("`devpi_server_log`", paths.server_log_name,
                   "use a file name different from devpi_out_log and devpi_err_log (launchd holds those open)")
    logs = {"`devpi_out_log`": paths.out_log, "`devpi_err_log`": paths.err_log,
            "`devpi_server_log`": paths.server_log}
    for where, log in logs.items():
        if log == paths.backup_log:
            raise fail(where, log.rsplit("/", 1)[1],
                       "that is the backup job's log (<label>.backup.log); use a file name of its own")
    _check_site_file(paths)
    primary_upstream = config.local_url.removeprefix("http://")
    if primary_upstream in config.caddy_read_upstreams:
        raise fail("`devpi_caddy_read_upstreams`", list(config.caddy_read_upstreams),
                   f"{primary_upstream} is this host's own devpi (always a backend); list only the replicas")
    if config.backup is not None:
        _check_backup_dir(config)
    # Compared as written here; as the host resolves them in the preflight.
    problems = real_paths.problems(config, None, user_home)
    if problems:
        raise ConfigError(f"host data: {problems[0].removeprefix('paths: ')}")
    return config


def _check_role(values: dict[str, Any]) -> None:
    """devpi_role, devpi_primary and devpi_server_options agree (the inventory-wide
    checks, such as a primary naming an unknown host, are ``replica.topology``'s)."""
    options = values["server_options"]
    if values["role"] == "replica":
        if values["primary"] is None:
            raise ConfigError(
                "host data `devpi_role` is 'replica' but `devpi_primary` is unset: set devpi_primary to the "
                "primary's inventory host name or its URL (e.g. 'https://pypi.example.org')",
            )
        if options.get("role") not in (None, "replica"):
            raise ConfigError(
                f"host data `devpi_server_options` sets role {options['role']!r} but `devpi_role` is 'replica': "
                "remove role from devpi_server_options",
            )
    elif values["primary"] is not None:
        raise ConfigError(
            f"host data `devpi_primary` = {values['primary']!r} is a replica's setting but `devpi_role` is "
            "'primary': set devpi_role = 'replica', or remove devpi_primary",
        )
    elif options.get("role") == "replica" or "primary-url" in options:
        raise ConfigError(
            "host data `devpi_server_options` makes this devpi a replica (role/primary-url): set "
            "devpi_role = 'replica' and devpi_primary instead, and remove them from devpi_server_options",
        )


def _expand(path: str, user_home: str) -> str:
    """``~/...`` in the SSH user's home."""
    return f"{user_home}{path[1:]}".rstrip("/") or "/"


def _check_backup_dir(config: DevpiConfig) -> None:
    """Backups must not land in the server dir (a backup of a backup, every night) nor
    on a file the deploy owns."""
    directory = PurePosixPath(config.backup_dir)
    server_dir = PurePosixPath(config.paths.server_dir)
    owned = {PurePosixPath(path) for path in config.paths.managed().values()}
    if server_dir in (directory, *directory.parents) or directory in owned or directory == PurePosixPath(config.home):
        raise fail(
            "`devpi_backup` ['dir']", config.backup_dir,
            f"use a directory of its own outside the server dir, such as {config.paths.default_backup_dir!r} "
            "(or, better, one on another disk)",
        )


def _check_site_file(paths: Layout) -> None:
    """The Caddy block must not land on a file the deploy owns for devpi, nor in its home."""
    site = PurePosixPath(paths.caddy_site_file)
    owned = {PurePosixPath(path): what for what, path in paths.managed().items() if what != "Caddy site block"}
    clash = owned.get(site) or ("devpi home" if PurePosixPath(paths.home) in (site, *site.parents) else None)
    if clash:
        raise fail(
            "`devpi_caddy_site_file`",
            paths.caddy_site_file,
            f"it would overwrite the {clash}; use a path in Caddy's config, "
            f"such as {layout.DEFAULT_CADDY_SITE_FILE!r}",
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    return ipaddress.ip_address(host).is_loopback

"""
Render the three files the deploy owns on the host from the validated config.

Every decision (which values, quoting, order) is made here; the templates only lay
the values out. The same config always renders the same bytes, so a rerun compares
equal and changes nothing.
"""

from __future__ import annotations

import json
import mimetypes
import plistlib
import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .config import DevpiConfig

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

# launchd loads a LaunchAgent only in the session types listed: Aqua for the GUI
# login session (gui/<uid>), Background for user/<uid> (e.g. logged in over SSH only).
# An agent-only key (launchd.plist(5)): a LaunchDaemon gets none (its session is the
# system's), and UserName / GroupName instead: launchd starts it as that user
# (initgroups, setgid, setuid) with HOME, USER, LOGNAME and SHELL from their record.
SESSION_TYPES = ("Aqua", "Background")


def _environment(autoescape: bool) -> Environment:
    return Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=autoescape,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def _finish(text: str) -> str:
    return text.rstrip("\n") + "\n"


def program_arguments(config: DevpiConfig) -> list[str]:
    return [config.paths.bin("devpi-server"), "--configfile", config.paths.config_file]


# Both jobs' environment: launchd starts jobs with a bare one; a UTF-8 locale keeps
# devpi's file handling independent of the login shell's settings.
JOB_ENVIRONMENT = [("LANG", "en_US.UTF-8"), ("PYTHONUNBUFFERED", "1")]


def render_plist(config: DevpiConfig, run_as: tuple[str, str] | None = None) -> str:
    """The job's plist: a LaunchAgent, or with ``run_as`` (user, group) a LaunchDaemon
    run as that user; started at load and kept alive (restarted after a failure)."""
    return job_plist(
        config.paths.home, run_as,
        label=config.label,
        program_arguments=program_arguments(config),
        when={"RunAtLoad": True, "KeepAlive": {"SuccessfulExit": False},
              "ThrottleInterval": config.throttle_interval},
        process_type=config.process_type,
        stdout_path=config.paths.out_log,
        stderr_path=config.paths.err_log,
    )


MANAGED = "<!-- Managed by pyinfra-devpi: changes made here are replaced on the next deploy. -->"
# plistlib escapes &, < and >; quotes are escaped too, as the deploy always wrote them,
# so a plist already on a host compares equal (an XML reader sees the same text).
_TEXT_ELEMENT = re.compile(r"^(\t*<(?:string|key)>)(.*)(</(?:string|key)>)$", re.M)


def job_plist(working_directory: str, run_as: tuple[str, str] | None, *, label: str,
              program_arguments: list[str], when: dict, process_type: str, stdout_path: str,
              stderr_path: str) -> str:
    """A launchd job's plist, written by ``plistlib``: the one layout of both jobs (devpi's
    and the backup's). ``when``: the keys that say when launchd runs it; ``run_as`` None
    for a LaunchAgent, else a LaunchDaemon's (user, group)."""
    job = {
        "Label": label,
        "ProgramArguments": list(program_arguments),
        "WorkingDirectory": working_directory,
        "EnvironmentVariables": dict(JOB_ENVIRONMENT),
    }
    if run_as is None:
        job["LimitLoadToSessionType"] = list(SESSION_TYPES)
    else:
        job["UserName"], job["GroupName"] = run_as
    job.update(when)
    job.update({"ProcessType": process_type, "StandardOutPath": stdout_path, "StandardErrorPath": stderr_path})
    text = plistlib.dumps(job, sort_keys=False).decode()
    text = _TEXT_ELEMENT.sub(
        lambda m: m.group(1) + m.group(2).replace('"', "&#34;").replace("'", "&#39;") + m.group(3), text)
    head, _, rest = text.partition("<plist ")
    return f"{head}{MANAGED}\n<plist {rest}"


# devpi's own log line format (devpi_server/log.py).
LOG_FORMAT = "%(asctime)s %(levelname)-5.5s %(message)s"


def render_logging_config(config: DevpiConfig) -> str:
    """devpi's ``--logger-cfg`` (a ``logging.config.dictConfig``, read as JSON by its
    ``.json`` name): everything devpi logs goes to ``server_log`` through a
    ``RotatingFileHandler`` that keeps it under ``devpi_log_max_bytes``, with
    ``devpi_log_backups`` rotated copies. devpi rotates its own file, so the handle
    launchd keeps open (stdout/stderr) is not involved: those catch only what bypasses
    logging, such as a traceback before logging is set up. Loggers devpi made before
    this config is read keep working (``disable_existing_loggers``: false)."""
    level = "DEBUG" if config.server_options.get("debug") else "INFO"
    document = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"devpi": {"format": LOG_FORMAT}},
        "handlers": {
            "rotating": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": config.paths.server_log,
                "maxBytes": config.log_max_bytes,
                "backupCount": config.log_backups,
                "encoding": "utf-8",
                "formatter": "devpi",
            },
        },
        "root": {"level": level, "handlers": ["rotating"]},
    }
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
# The backup job works in the background: launchd may throttle its CPU and IO, so it
# competes less with devpi answering requests.
BACKUP_PROCESS_TYPE = "Background"


def render_backup_plist(config: DevpiConfig, run_as: tuple[str, str] | None = None) -> str:
    """The backup job's plist: daily at ``devpi_backup``'s hour and minute (the host's
    local time); no RunAtLoad, no KeepAlive: it runs when the calendar (or a
    ``launchctl kickstart``) says so, once."""
    from .backup import program_arguments as backup_arguments

    backup = config.backup
    if backup is None:
        raise ValueError("devpi_backup is unset: there is no backup job")
    return job_plist(
        config.paths.home, run_as,
        label=config.paths.backup_label,
        program_arguments=backup_arguments(config),
        when={"StartCalendarInterval": {"Hour": backup.hour, "Minute": backup.minute}},
        process_type=BACKUP_PROCESS_TYPE,
        stdout_path=config.paths.backup_log,
        stderr_path=config.paths.backup_log,
    )


def yaml_scalar(value: object) -> str:
    """A YAML scalar devpi's strictyaml parser reads back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return yaml_double_quoted(str(value))


def yaml_double_quoted(text: str) -> str:
    """A double-quoted YAML scalar in plain ASCII, so devpi reads it back the same
    whatever the host's locale. (JSON's escapes are not enough: JSON writes a
    character beyond U+FFFF as a surrogate pair, which YAML reads as two lone
    surrogates; YAML's own escape for it is ``\\UXXXXXXXX``.)"""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def render_server_yaml(config: DevpiConfig, indexer_backend: str) -> str:
    """devpi-server's YAML config; ``indexer_backend`` (devpi-web's search) as the run
    decided it (``pyinfra_devpi.search.decide``)."""
    template = _environment(autoescape=False).get_template("devpi-server.yml.j2")
    options = [(name, yaml_scalar(value)) for name, value in config.server_yaml_options(indexer_backend).items()]
    return _finish(template.render(options=options))


_CADDY_BARE_TOKEN = re.compile(r"^[^\s\"'{}#`\\]+$")


def caddy_token(value: str) -> str:
    """Quote a Caddyfile token when it holds spaces or characters Caddy treats specially."""
    if _CADDY_BARE_TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Release files are immutable (a version's file never changes under its name), so
# Caddy's answers from ``+files`` carry a year-long cache lifetime, as devpi's nginx
# template does with ``expires max`` (devpi itself sends ``max-age=365000000,
# immutable, public``).
RELEASE_FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"

# The release-file suffixes PyPI and devpi know. devpi answers ``/+f/`` with
# ``mimetypes.guess_type(name)[0]`` or ``application/octet-stream`` (devpi-server's
# ``gethttpheaders``), so Caddy answers the same for the same file: a wheel is
# ``application/octet-stream`` (Caddy's own guess would be none, or ``application/zip``
# from the host's mime.types), an sdist ``application/x-tar``. Python's built-in table
# (``MimeTypes()`` reads no system file) makes the table the same on every controller.
RELEASE_FILE_SUFFIXES = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip", ".egg", ".exe", ".msi")
DEFAULT_RELEASE_FILE_TYPE = "application/octet-stream"


def release_file_types() -> list[tuple[str, str]]:
    """``(regular expression on the path, Content-Type)`` for each type devpi sends other
    than the default, longest suffixes first."""
    table = mimetypes.MimeTypes()
    by_type: dict[str, list[str]] = {}
    for suffix in RELEASE_FILE_SUFFIXES:
        content_type = table.guess_type("x" + suffix)[0] or DEFAULT_RELEASE_FILE_TYPE
        if content_type != DEFAULT_RELEASE_FILE_TYPE:
            # "[.]", not "\\.": a Caddyfile token keeps a backslash as it is only unquoted.
            by_type.setdefault(content_type, []).append(suffix.replace(".", "[.]"))
    return [(f"~({'|'.join(suffixes)})$", content_type) for content_type, suffixes in sorted(by_type.items())]


def render_caddy_removed(config: DevpiConfig) -> str:
    """What the uninstall leaves at the site file instead of the block: nothing Caddy
    serves, but still a file, so a Caddyfile that imports it by name keeps loading."""
    template = _environment(autoescape=False).get_template("devpi-removed.caddy.j2")
    return _finish(template.render(site_file=config.paths.caddy_site_file))


# How often Caddy dials devpi again while holding a request (devpi_caddy_upstream_wait):
# Caddy's default (250 ms) would add up to that much to each held request once devpi
# answers again; a refused dial on loopback costs nothing.
CADDY_UPSTREAM_RETRY_INTERVAL = "100ms"


# Reads spread over the primary and its replicas (devpi_caddy_read_upstreams).
# Each backend in turn: round_robin asks the next one on a retry, so a retried read lands
# on another backend (random could pick the same one again).
READ_LB_POLICY = "round_robin"
# Active checks on devpi-web's status page: a backend that stops or hangs is left out
# within an interval plus a timeout, and so is a replica whose status badge is not "ok"
# (devpi's own rule: no update from its primary for a minute, behind it for five, still
# on its first sync, replication errors). The primary ("MASTER" on that page) stays in
# while it answers: the badge's other warnings (search indexing) do not stop its reads.
# Short: a read held while every backend restarts goes through at the next passing check.
READ_HEALTH_URI = "/+status"
READ_HEALTH_ACCEPT = "text/html"
READ_HEALTH_BODY = '<a class="statusbadge ok"|<td>MASTER</td>'
READ_HEALTH_INTERVAL = "1s"
READ_HEALTH_TIMEOUT = "2s"
# Passive: a backend whose dial or round trip failed is left out this long (then active
# checks decide), so the next reads go to the others at once.
READ_FAIL_DURATION = "1s"
# A replica answers 500 to a GET of a release file it is still fetching from its primary
# (devpi 6.20.3; the file arrives within ~50 ms): that answer is retried on the next
# backend. Caddy 2.11 retries on a response when a lb_retry_match expression names
# {rp.status_code} (caddyserver/caddy#7569); the request matcher (method GET HEAD) keeps
# retries after a failed round trip to the reads, which are safe to repeat.
READ_RETRY_ON_STATUS = "`{rp.status_code} == 500 && path('*/+f/*')`"
# Writes, logins and the replication feed: only the primary takes them (a replica
# relays writes too, but answers only once its copy has the new serial).
PRIMARY_ONLY_PATHS = ("/+login", "/+changelog*")


def render_caddy_site(config: DevpiConfig) -> str:
    template = _environment(autoescape=False).get_template("devpi.caddy.j2")
    # Caddy sets (replaces) the header, so a client cannot choose the URLs devpi
    # writes into its pages; without a configured public URL, use the request's own.
    outside_url = config.outside_url or "{http.request.scheme}://{http.request.hostport}"
    replication = config.server_options.get("role") in ("primary", "master")
    return _finish(
        template.render(
            address=config.site_address,
            max_body_size=config.caddy_max_body_size,
            block_changelog=not replication,
            files_root=caddy_token(config.paths.files_dir) if config.caddy_serve_files else None,
            file_types=[(caddy_token(pattern), caddy_token(kind)) for pattern, kind in release_file_types()],
            default_file_type=caddy_token(DEFAULT_RELEASE_FILE_TYPE),
            cache_control=caddy_token(RELEASE_FILE_CACHE_CONTROL),
            upstream=config.local_url.removeprefix("http://"),
            outside_url=caddy_token(outside_url),
            upstream_wait=f"{config.caddy_upstream_wait}s" if config.caddy_upstream_wait else None,
            upstream_retry_interval=CADDY_UPSTREAM_RETRY_INTERVAL,
            read_upstreams=list(config.caddy_read_upstreams),
            # Without a hold, a 500 is still retried once on each other backend.
            read_retries=len(config.caddy_read_upstreams),
            read_lb_policy=READ_LB_POLICY,
            read_health_uri=caddy_token(READ_HEALTH_URI),
            read_health_accept=caddy_token(READ_HEALTH_ACCEPT),
            read_health_body=caddy_token(READ_HEALTH_BODY),
            # The fallback asks each replica once.
            stale_read_retries=len(config.caddy_read_upstreams) - 1,
            read_health_interval=READ_HEALTH_INTERVAL,
            read_health_timeout=READ_HEALTH_TIMEOUT,
            read_fail_duration=READ_FAIL_DURATION,
            read_retry_on_status=READ_RETRY_ON_STATUS,
            primary_only_paths=" ".join(PRIMARY_ONLY_PATHS),
        ),
    )

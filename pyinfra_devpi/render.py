"""
Render the three files the deploy owns on the host from the validated config.

Every decision (which values, quoting, order) is made here; the templates only lay
the values out. The same config always renders the same bytes, so a rerun compares
equal and changes nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .config import DevpiConfig

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

# launchd loads a LaunchAgent only in the session types listed: Aqua for the GUI
# login session (gui/<uid>), Background for user/<uid> (e.g. logged in over SSH only).
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


def render_plist(config: DevpiConfig) -> str:
    """The LaunchAgent plist; values are XML-escaped by the template's autoescape."""
    template = _environment(autoescape=True).get_template("devpi.plist.j2")
    return _finish(
        template.render(
            label=config.label,
            program_arguments=program_arguments(config),
            working_directory=config.paths.home,
            # launchd starts jobs with a bare environment; a UTF-8 locale keeps
            # devpi's file handling independent of the login shell's settings.
            environment=[("LANG", "en_US.UTF-8"), ("PYTHONUNBUFFERED", "1")],
            session_types=SESSION_TYPES,
            throttle_interval=config.throttle_interval,
            process_type=config.process_type,
            stdout_path=config.paths.out_log,
            stderr_path=config.paths.err_log,
        ),
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
            upstream=config.local_url.removeprefix("http://"),
            outside_url=caddy_token(outside_url),
        ),
    )

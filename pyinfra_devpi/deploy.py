"""
The packaged deploy: host data → validated config → facts → operations.

Everything that can refuse the run (bad host data, no launchd, a server dir the
pinned devpi must not touch, a secret that cannot be read) is checked here, while
pyinfra plans, so a refused run changes nothing on the host.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from facts.launchd import LaunchdSession
from operations import caddy, devpi, launchd, preflight, prewarm, users_indexes
from operations.textfile import text_differs
from pyinfra_devpi.config import SERVER_DB_VERSION, UV_BOOTSTRAP_VERSION, DevpiConfig, build_config
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.layout import NODEINFO
from pyinfra_devpi.preflight import Needs, with_tools
from pyinfra_devpi.render import render_caddy_site, render_plist, render_server_yaml
from pyinfra_devpi.run_secrets import resolve_once
from pyinfra_devpi.secrets import hash_password
from pyinfra_devpi.snapshot import FactRead, prefetch, read
from pyinfra_devpi.users_indexes.plan import PlanError

LOCKS_DIR = Path(__file__).resolve().parent.parent / "locks"

# devpi-server major release → the database version it reads and writes.
DB_VERSIONS = {"6": SERVER_DB_VERSION}


def lock_path(config: DevpiConfig) -> Path:
    return LOCKS_DIR / f"devpi-{config.server_version}-{config.web_version}.txt"


def read_lock(config: DevpiConfig) -> str | None:
    path = lock_path(config)
    return path.read_text(encoding="utf-8") if path.is_file() else None


def read_uv_lock() -> str:
    """The hashed requirement for bootstrapping uv (every wheel of the pinned release)."""
    return (LOCKS_DIR / f"uv-{UV_BOOTSTRAP_VERSION}.txt").read_text(encoding="utf-8")


def check_server_dir(config: DevpiConfig, server_dir: dict) -> None:
    """Refuse server dirs that the pinned devpi must not initialise or open."""
    if not server_dir["exists"]:
        return
    path = config.paths.server_dir
    if not server_dir["is_dir"]:
        raise DeployError(f"{path} exists but is not a directory: move it away or set devpi_home")
    if server_dir["has_data"] and not server_dir["initialised"]:
        raise DeployError(
            f"{path} holds data but no {NODEINFO} (devpi's initialised marker): refusing to "
            "initialise over it or to start devpi on it. If it is a devpi server dir from "
            "elsewhere, export it with devpi-export and import it with devpi-import; otherwise "
            "empty the directory or point devpi_home elsewhere",
        )
    found = server_dir["serverversion"]
    wanted = DB_VERSIONS.get(config.server_version.split(".")[0])
    if found is not None and wanted is not None and found != wanted:
        raise DeployError(
            f"{config.paths.serverversion} is {found!r} but devpi-server {config.server_version} "
            f"uses database version {wanted!r}: refusing to start it on that dir. Export the "
            "data with the devpi-server that wrote it (devpi-export) and import it into a new "
            "server dir with this one (devpi-import)",
        )


def root_password_hash(config: DevpiConfig) -> HiddenValue:
    if config.root_password is None:
        raise DeployError(
            f"{config.paths.server_dir} is not initialised and host data `devpi_root_password` is "
            "unset: set it to a reference such as 'op://vault/devpi/root password', "
            "'env:DEVPI_ROOT_PASSWORD' or 'file:~/.devpi-root-password'",
        )
    # Read once per run: logging in for devpi_users/devpi_indexes needs it again.
    return HiddenValue(hash_password(resolve_once(host, config.root_password, "devpi_root_password")))


@deploy("devpi")
def devpi_service():
    """Converge devpi-server + devpi-web as a LaunchAgent behind a Caddy site block."""
    session = read(host, FactRead.of(LaunchdSession))
    if not session["launchctl"]:
        raise DeployError(
            f"launchd is not available on {host.name} (no launchctl on the SSH user's PATH): "
            "this deploy runs devpi as a macOS LaunchAgent and needs a macOS host",
        )
    config = build_config(host.data.dict(), session["home"])
    domain = config.launchd_domain or session["domain"]
    paths = config.paths

    # Everything the plan reads from the host, in one round trip: each operation
    # module says what its operations read, and they read it from this snapshot.
    prefetch(
        host,
        [
            *preflight.reads(config, domain),
            *devpi.reads(config),
            *launchd.reads(config.label, domain, paths.plist_file),
            *caddy.reads(paths.caddy_site_file, paths.caddy_restart_pending),
            *users_indexes.reads(config),
            *prewarm.reads(config),
        ],
    )
    caddy_site = render_caddy_site(config)
    # The preflight: everything this run needs from the host, or one message listing
    # what is missing; then the operations run with the tools as found on the host.
    needs = Needs(
        venv=not devpi.venv_is_current(config, read(host, devpi.venv_read(config))),
        caddy_block=text_differs(paths.caddy_site_file, caddy_site),
    )
    tools = preflight.ready(config, domain, needs)
    config = with_tools(config, tools)
    server_dir = devpi.server_dir(config)
    check_server_dir(config, server_dir)
    fresh = devpi.needs_init(server_dir)
    # The password is read (1Password may prompt) only when init will run.
    password_hash = root_password_hash(config) if fresh else None

    if tools.uv_source == "bootstrap":
        preflight.uv_bootstrap(name="Bootstrap uv", config=config, tools=tools, lock=read_uv_lock())
    venv_op = devpi.venv(name="Install devpi venv", config=config, lock=read_lock(config))
    config_op = devpi.server_config(
        name="Write devpi-server config", config=config, content=render_server_yaml(config)
    )
    devpi.secret(name="Create devpi secret file", config=config)
    devpi.init(name="Initialise devpi server dir", config=config, password_hash=password_hash)
    agent_op = launchd.agent(
        name="LaunchAgent " + config.label,
        label=config.label,
        plist=render_plist(config),
        plist_path=paths.plist_file,
        domain=domain,
        restart_after=[venv_op, config_op],
        directories=[paths.log_dir],
    )
    devpi.wait_healthy(name="Wait for devpi to answer", config=config, after=[agent_op])
    caddy.site(
        name="Caddy site block for devpi",
        path=paths.caddy_site_file,
        content=caddy_site,
        restart=config.caddy_restart,
        domain=domain,
        pending_marker=paths.caddy_restart_pending,
        caddy_bin=config.caddy_bin,
    )
    # devpi_users / devpi_indexes: planned (refused, passwords read) now, applied once
    # devpi is up (waited for above), over its REST API through the SSH connection.
    try:
        users_indexes.prepare(config, fresh=fresh)
    except PlanError as error:
        raise DeployError(f"{host.name}: {error}") from None
    users_indexes.users_indexes(name="devpi users and indexes", config=config, fresh=fresh)
    # Last: devpi is up (waited for above). Only when the list or the mirror changed.
    # The mirror's declared settings are part of the marker: changing them warms again.
    prewarm.projects(
        name="Warm the mirror for devpi_prewarm",
        config=config,
        server_dir=server_dir,
        mirror=config.indexes.get(config.prewarm_index),
    )

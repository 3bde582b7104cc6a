"""
The packaged deploy: host data → validated config → facts → operations.

Everything that can refuse the run (bad host data, no launchd, a server dir the
pinned devpi must not touch, a secret that cannot be read) is checked here, while
pyinfra plans, so a refused run changes nothing on the host.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.hiddenvalue import HiddenValue

from facts.launchd import LaunchdSession
from operations import backup, caddy, deploy_lock, devpi, launchd, preflight, prewarm, retire, search, users_indexes
from operations import server_dir as server_dir_ops
from operations.textfile import text_differs
from pyinfra_devpi import search as search_plan
from pyinfra_devpi.config import SERVER_DB_VERSION, UV_BOOTSTRAP_VERSION, DevpiConfig, build_config
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.launchd_scope import job_place
from pyinfra_devpi.layout import NODEINFO, SERVERVERSION, SQLITE
from pyinfra_devpi.preflight import Needs, reboot_warning, with_tools
from pyinfra_devpi.render import (
    render_backup_plist, render_caddy_site, render_logging_config, render_plist, render_server_yaml,
)
from pyinfra_devpi.run_secrets import hash_once, is_dry_run
from pyinfra_devpi.snapshot import FactRead, file_content, prefetch, read
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


def check_server_dir(config: DevpiConfig, server_dir: dict, venv_build: bool = True,
                     live_venv: dict | None = None) -> None:
    """Refuse server dirs that the pinned devpi must not initialise or open.

    A missing or empty dir is initialised; a complete one (devpi-init finished) is
    used; anything else is refused, named for what it is, and never deleted. A
    ``.serverversion`` of another database version is refused unless
    ``devpi_allow_export_import`` is set and a new venv is built (``venv_build``):
    the upgrade exports with the live venv and imports with the new one. A dir the
    deploy has not managed yet (brought over from elsewhere) must belong to the SSH
    user and be writable by nobody else (``check_brought_over``).
    """
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
    if server_dir["initialised"] and not server_dir["has_database"]:
        raise DeployError(
            f"{path} is a half-initialised devpi server dir: it holds devpi's {NODEINFO} but no "
            f"database ({SQLITE}), which is what a devpi-init stopped part way leaves (devpi would "
            "not start on it, or would start with no users, not even root). Refusing to use it; "
            "nothing is deleted automatically. To recover, move it aside (e.g. "
            f"mv {shlex.quote(path)} {shlex.quote(path + '.broken')}) and rerun: the deploy then "
            "initialises a new server dir",
        )
    major = config.server_version.split(".")[0]
    wanted = planned_db_version(config, venv_build, live_venv)
    if server_dir["has_serverversion"] and server_dir["serverversion"] is None:
        restore = (
            f"if devpi-server {major}.x wrote it, put its database version ({wanted}) back "
            "into that file; otherwise " if wanted else ""
        )
        raise DeployError(
            f"{config.paths.serverversion} is empty, so the database version of {path} is "
            "unknown: refusing to start devpi on it; nothing is deleted automatically. To "
            f"recover: {restore}move the dir aside and rerun to initialise a new one (and "
            "import its data with devpi-import)",
        )
    found = server_dir["serverversion"]
    if found is not None and wanted is not None and found != wanted:
        if not config.allow_export_import:
            raise DeployError(
                f"{config.paths.serverversion} is {found!r} but devpi-server {config.server_version} "
                f"uses database version {wanted!r}: refusing to start it on that dir; nothing was "
                f"changed. {devpi.opt_in_hint()}",
            )
        if not venv_build:
            raise DeployError(
                f"{config.paths.serverversion} is {found!r} but devpi-server {config.server_version} "
                f"(the live venv) uses database version {wanted!r}: devpi_allow_export_import exports "
                "with the live venv while a new one is built, and no venv is built here. Export the "
                "data with the devpi-server that wrote it (devpi-export) and import it into an empty "
                "server dir with this one (devpi-import)",
            )
    check_brought_over(config, server_dir)
    if server_dir["has_data"] and not server_dir["complete"]:
        raise DeployError(
            f"{path} is not a complete devpi server dir (it lacks {SERVERVERSION}): refusing to "
            "start devpi on it; nothing is deleted automatically. Move it aside and rerun to "
            "initialise a new one, or import its data with devpi-import",
        )


def planned_db_version(config: DevpiConfig, venv_build: bool, live_venv: dict | None) -> str | None:
    """The database version the pinned devpi will use, as far as the plan can know: the
    live venv's own (``VenvVersions`` reads it from its source) when the venv stays, or
    when the new one is of the same major release (the table's own rule); otherwise
    the release table's. The venv build checks the new venv's own, and refuses (or,
    with the opt-in, upgrades) on a difference the plan could not see."""
    major = config.server_version.split(".")[0]
    live = live_venv or {}
    live_db = live.get("database_version")
    same_major = (live.get("devpi-server") or "").split(".")[0] == major
    if live_db and (not venv_build or same_major):
        return live_db
    return DB_VERSIONS.get(major)


def check_brought_over(config: DevpiConfig, server_dir: dict) -> None:
    """A server dir this deploy has not managed yet (the ``ServerDir`` fact reports
    owners and modes only then): every entry the SSH user's, none group/world-writable
    (devpi's data, and its users' password hashes, would be open to other users)."""
    if not server_dir["has_data"]:
        return  # an empty dir is replaced by devpi-init's, whatever its mode
    path = config.paths.server_dir
    foreign = server_dir.get("foreign_owned") or {}
    if foreign.get("count"):
        raise DeployError(
            f"{path} was brought over from elsewhere and {foreign['count']} of its entries (e.g. "
            f"{foreign['first']}) belong to another user than the SSH user, who runs devpi: nothing was "
            f"changed. Fix: chown -R \"$(id -un)\" {shlex.quote(path)} (as root, on the host)",
        )
    writable = server_dir.get("writable_by_others") or {}
    if writable.get("count"):
        raise DeployError(
            f"{path} was brought over from elsewhere and {writable['count']} of its entries (e.g. "
            f"{writable['first']}) are group- or world-writable: nothing was changed. Fix: chmod -R "
            f"go-w {shlex.quote(path)}",
        )


def root_password_hash(config: DevpiConfig) -> HiddenValue:
    """The hash ``devpi-init`` gets, made from the secret read once per run (logging in
    for devpi_users/devpi_indexes needs the password again)."""
    return HiddenValue(hash_once(host, config.root_password, "devpi_root_password"))


def plan_init_secret(config: DevpiConfig):
    """While pyinfra plans a run that initialises the server dir: refuse a missing
    reference; read the secret now (a real run: an unreadable one stops it before any
    change) or say it will be read (a dry run reads none). Returns what ``devpi.init``
    calls for the hash when it executes."""
    if config.root_password is None:
        raise DeployError(
            f"{config.paths.server_dir} is not initialised and host data `devpi_root_password` is "
            "unset: set it to a reference such as 'op://vault/devpi/root password', "
            "'env:DEVPI_ROOT_PASSWORD' or 'file:~/.devpi-root-password'",
        )
    if is_dry_run():
        host.log(f"Will read devpi_root_password ({config.root_password}) when applied, to initialise "
                 f"{config.paths.server_dir}", logger.info)
    else:
        root_password_hash(config)
    return lambda: root_password_hash(config)


@deploy("devpi")
def devpi_service():
    """Converge devpi-server + devpi-web as a LaunchAgent (or a LaunchDaemon run as the SSH
    user: ``devpi_launchd_scope``) behind a Caddy site block."""
    session = read(host, FactRead.of(LaunchdSession))
    if not session["launchctl"]:
        raise DeployError(
            f"launchd is not available on {host.name} (no launchctl on the SSH user's PATH): "
            "this deploy runs devpi as a macOS LaunchAgent and needs a macOS host",
        )
    config = build_config(host.data.dict(), session["home"])
    # Where the jobs live: the SSH user's domain (a LaunchAgent) or the system domain (a
    # LaunchDaemon, changed through sudo -n unless the SSH user is root).
    place = job_place(config, session)
    domain = place.domain
    paths = config.paths
    # A LaunchAgent in user/<uid> (a headless Mac) is not loaded again at boot.
    reboot = reboot_warning(place)
    if reboot:
        logger.warning(f"{host.print_prefix}{reboot}")

    # Everything the plan reads from the host, in one round trip: each operation
    # module says what its operations read, and they read it from this snapshot.
    # The deploy lock first: while another deploy changes the host it waits, so the
    # rest is read from the host as that deploy left it.
    prefetch(
        host,
        [
            *deploy_lock.reads(config),
            *preflight.reads(config, domain, place),
            *devpi.reads(config),
            *retire.reads((config.label, paths.backup_label), place, paths.launch_agents_dir,
                          paths.other_scope_plists),
            *launchd.reads(config.label, domain, paths.plist_file),
            *caddy.reads(paths.caddy_site_file, paths.caddy_restart_pending, config.caddy_restart, place),
            *users_indexes.reads(config),
            *prewarm.reads(config),
            *backup.reads(config, domain),
        ],
    )
    # Refuses the run while another deploy holds the lock; from here on, every
    # operation that changes something takes (or checks) the lock first.
    deploy_lock.begin(config)
    caddy_site = render_caddy_site(config)
    # The preflight: everything this run needs from the host, or one message listing
    # what is missing; then the operations run with the tools as found on the host.
    live_venv = read(host, devpi.venv_read(config))
    # Root (sudo -n) for a LaunchDaemon, or for the one a switch back to the agent retires.
    daemon_leftovers = not place.daemon and any(
        file_content(host, p) is not None for p in (paths.daemon_plist_file, paths.daemon_backup_plist_file)
    )
    caddy_block = text_differs(paths.caddy_site_file, caddy_site)
    needs = Needs(
        venv=not devpi.venv_is_current(config, live_venv),
        caddy_block=caddy_block,
        root=place.needs_sudo or (daemon_leftovers and place.uid != 0),
        caddy_restart=bool(config.caddy_restart) and (
            caddy_block or file_content(host, paths.caddy_restart_pending) is not None),
    )
    tools = preflight.ready(config, domain, needs, place)
    config = with_tools(config, tools)
    server_dir = devpi.server_dir(config)
    check_server_dir(config, server_dir, venv_build=needs.venv, live_venv=live_venv)
    fresh = devpi.needs_init(server_dir)
    # The password is read (1Password may prompt) only when init will run.
    password_hash = plan_init_secret(config) if fresh else None

    bootstrap_op = None
    if tools.uv_source in preflight.BOOTSTRAPPING:
        bootstrap_op = preflight.uv_bootstrap(name="Bootstrap uv", config=config, tools=tools, lock=read_uv_lock())
    # devpi-web's search: Whoosh only once no mirror loads its upstream's whole
    # project list (pyinfra_devpi/search.py); else null, and maybe Whoosh after the
    # users/indexes step has flagged the mirrors.
    try:
        searching = search_plan.decide(
            config.search,
            users_indexes.found_indexes(config, fresh),
            users_indexes.planned(config, fresh),
            search_plan.backend_in(file_content(host, paths.config_file)),
        )
    except PlanError as error:
        raise DeployError(f"{host.name}: {error}") from None
    if searching.message:
        host.log(searching.message, logger.warning if searching.warn else logger.info)
    server_yaml = render_server_yaml(config, searching.backend)

    venv_op = devpi.venv(name="Install devpi venv", config=config, lock=read_lock(config))
    # With devpi_allow_export_import: a new devpi with another database version gets
    # the data through devpi-export / devpi-import (its venv is swapped in there).
    upgrade_op = server_dir_ops.upgrade(
        name="Move the server dir to the new database version", config=config, domain=domain, sudo=place.sudo,
        venv_op=venv_op, server_db_version=server_dir["serverversion"],
        wanted_db_version=planned_db_version(config, needs.venv, live_venv),
    )
    # A server dir brought over from elsewhere: devpi-fsck with the new venv before
    # devpi first starts on it.
    adopt_op = server_dir_ops.adopt(name="Check the server dir brought over (devpi-fsck)", config=config)
    # Before the YAML config that names it: devpi reads it at start-up.
    logging_op = devpi.logging_config(
        name="Write devpi's logging config", config=config, content=render_logging_config(config)
    )
    config_op = devpi.server_config(
        name="Write devpi-server config", config=config, content=server_yaml
    )
    secret_op = devpi.secret(name="Create devpi secret file", config=config)
    init_op = devpi.init(name="Initialise devpi server dir", config=config, password_hash=password_hash)
    # Before devpi's job is (re)loaded or restarted: the block holds requests while
    # devpi's port is closed (devpi_caddy_upstream_wait), so with it in place first, a
    # restart below (a takeover, an upgrade, a config change) fails no request that
    # comes through Caddy. It needs nothing from the running devpi.
    caddy_step = "Caddy site block for devpi"
    caddy_op = caddy.site(
        name=caddy_step,
        path=paths.caddy_site_file,
        content=caddy_site,
        restart=config.caddy_restart,
        # Caddy's label is kickstarted where it is loaded: the SSH user's domains or system.
        place=place,
        pending_marker=paths.caddy_restart_pending,
        caddy_bin=config.caddy_bin,
        # Its failure (a wrong devpi_caddy_restart) must not keep devpi down: the run
        # goes on to devpi's job and fails at its end (caddy.picked_up).
        _ignore_errors=True,
    )
    # Before the job is (re)loaded: an old job would keep devpi's port.
    retire_op = retire.old_agents(
        name="Retire this devpi's job under another label, domain or scope",
        label=config.label,
        place=place,
        plist_path=paths.plist_file,
        config_file=paths.config_file,
        agents_dir=paths.launch_agents_dir,
        keep=(paths.backup_label,),
        other_plists=paths.other_scope_plists,
        leave=(config.label,),
    )
    kind = "LaunchDaemon " if place.daemon else "LaunchAgent "
    # A LaunchDaemon's plist is root's (written through sudo -n); its logs are made the
    # SSH user's before launchd (root) would create them.
    job_files = dict(root_owned=place.daemon, sudo=place.sudo)
    agent_op = launchd.agent(
        name=kind + config.label,
        label=config.label,
        plist=render_plist(config, place.run_as),
        plist_path=paths.plist_file,
        domain=domain,
        restart_after=[venv_op, logging_op, config_op],
        directories=[paths.log_dir],
        staged=paths.staged(paths.plist_file),
        log_files=(paths.out_log, paths.err_log) if place.daemon else (),
        # devpi's label loaded in another domain (the Ansible role's `launchctl load`,
        # the other scope) holds the port: booted out by the same command that loads
        # this job, after its plist is written, so the port is closed only for the switch.
        displace=retire.loaded_elsewhere(config.label, place),
        **job_files,
    )
    health_op = devpi.wait_healthy(
        name="Wait for devpi to answer", config=config, after=[agent_op], new_venv=[venv_op],
        target=f"{domain}/{config.label}", sudo=place.sudo,
    )
    # After the health wait: the devpi that answers runs this config's indexer. An index
    # the run's final indexer uses (Whoosh, maybe switched on below) is not orphaned.
    index_op = devpi.orphaned_index(
        name="Orphaned Whoosh search index", config=config,
        indexer_backend=search_plan.WHOOSH if searching.switch_on else searching.backend,
    )
    # Scheduled backups: a second LaunchAgent that launchd starts daily (never started
    # by the deploy), or none once devpi_backup is unset (its backups stay).
    if config.backup is not None:
        backup.warn_if_stale(config)
        backup_ops = [
            backup.program(name="Backup program", config=config),
            launchd.agent(
                name=kind + paths.backup_label,
                label=paths.backup_label,
                plist=render_backup_plist(config, place.run_as),
                plist_path=paths.backup_plist_file,
                domain=domain,
                directories=[paths.log_dir],
                keep_running=False,
                staged=paths.staged(paths.backup_plist_file),
                log_files=(paths.backup_log,) if place.daemon else (),
                **job_files,
            ),
        ]
    else:
        backup_ops = [
            launchd.absent(
                name="No " + kind + paths.backup_label,
                label=paths.backup_label,
                domain=domain,
                plist_path=paths.backup_plist_file,
                sudo=place.sudo,
            ),
        ]
    # devpi_users / devpi_indexes: planned (refused, passwords read) now, applied once
    # devpi is up (waited for above), over its REST API through the SSH connection.
    try:
        users_indexes.prepare(config, fresh=fresh)
    except PlanError as error:
        raise DeployError(f"{host.name}: {error}") from None
    api_op = users_indexes.users_indexes(
        name="devpi users and indexes", config=config, fresh=fresh, whoosh=searching.backend == search_plan.WHOOSH,
    )
    search_op = search.switch_on(
        name="Switch devpi-web search on (Whoosh)",
        config=config,
        plan=searching,
        content=render_server_yaml(config, search_plan.WHOOSH),
        written=server_yaml,
        target=f"{domain}/{config.label}",
        sudo=place.sudo,
    )
    # devpi runs with its final indexer now: devpi-web's index is made here, from one
    # thread, not by the first upload (operations/search.py).
    create_index_op = search.create_index(
        name="Create devpi-web's search index",
        config=config,
        whoosh=searching.backend == search_plan.WHOOSH or searching.switch_on,
        exists=server_dir["whoosh_project_index"],
    )
    # Last: devpi is up (waited for above). Only when the list or the mirror changed.
    # The mirror's declared settings are part of the marker: changing them warms again.
    prewarm_op = prewarm.projects(
        name="Warm the mirror for devpi_prewarm",
        config=config,
        server_dir=server_dir,
        mirror=config.indexes.get(config.prewarm_index),
    )
    # The Caddy block's step did not stop the run when it failed: the run fails here,
    # after devpi was converged. Only in a run where that step has something to do.
    if caddy_op.will_change:
        caddy.picked_up(
            name="Check that Caddy picked up the site block", site=caddy_op,
            message=caddy.not_picked_up_message(caddy_step, config.local_url),
        )
    # Any change took the deploy lock: give it back.
    deploy_lock.release(
        name="Release the deploy lock",
        config=config,
        after=[op for op in (bootstrap_op, venv_op, upgrade_op, adopt_op, logging_op, config_op, secret_op, init_op,
                            retire_op, agent_op, health_op, index_op, *backup_ops, caddy_op, api_op, search_op,
                            create_index_op, prewarm_op)
               if op is not None],
    )

"""
The packaged deploy: host data → validated config → facts → operations.

The converge is ``STEPS``, a list of named steps, each saying what it reads from the host
(prefetched for all of them in one round trip) and planning its operations in order.
Everything that can refuse the run (bad host data, no launchd, a server dir the
pinned devpi must not touch, a secret that cannot be read) is checked here, while
pyinfra plans, so a refused run changes nothing on the host.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pyinfra import host, logger, state
from pyinfra.api import deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.hiddenvalue import HiddenValue

from facts.launchd import LaunchdSession
from facts.replica import PrimaryView, read_primary
from facts.snapshot import FactRead, file_content, prefetch, read
from operations import backup, caddy, deploy_lock, devpi, launchd, preflight, prewarm, replica, retire, search, users_indexes
from operations import server_dir as server_dir_ops
from operations.textfile import text_differs
from pyinfra_devpi import replica as replica_plan
from pyinfra_devpi import search as search_plan
from pyinfra_devpi import smoke
from pyinfra_devpi.config import SERVER_DB_VERSION, UV_BOOTSTRAP_VERSION, DevpiConfig, build_config
from pyinfra_devpi.errors import DeployError
from pyinfra_devpi.launchd_scope import JobPlace, job_place
from pyinfra_devpi.layout import NODEINFO, SERVERVERSION, SQLITE
from pyinfra_devpi.preflight import Needs, reboot_warning, with_tools
from pyinfra_devpi.render import (
    render_backup_plist, render_caddy_site, render_logging_config, render_plist, render_server_yaml,
)
from pyinfra_devpi.run_secrets import hash_once, is_dry_run
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


def devpi_files_damaged(path: str, damaged: dict) -> str:
    """The refusal for a server dir whose own devpi files (``.nodeinfo``,
    ``.serverversion``) devpi cannot read: the deploy never writes them."""
    files = "; ".join(f"{path}/{name} is damaged: {reason}" for name, reason in sorted(damaged.items()))
    return (
        f"{files}. devpi cannot start on this server dir, and these are devpi's own files: the deploy never "
        "replaces them, and nothing was changed. Way out: put back a good copy of the file (e.g. from a "
        f"backup of the disk), or move the dir aside (mv {shlex.quote(path)} {shlex.quote(path + '.broken')}) "
        "and rerun: the deploy initialises a new one, into which a backup can be restored "
        "(deploys/devpi_restore.py --data devpi_restore_from=<backup>)"
    )


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
    if server_dir.get("damaged"):
        raise DeployError(devpi_files_damaged(path, server_dir["damaged"]))
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


@dataclass
class Converge:
    """One host's converge as its steps build it: what the run found and decided so far,
    and the operations planned so far by key (the later steps chain on them).

    ``call(key, operation, **kwargs)`` plans an operation and returns its result: pyinfra's
    own call in a deploy; the prepared-host tests pass one that runs it under their facts.
    """

    config: DevpiConfig
    place: JobPlace
    call: Callable = lambda key, operation, **kwargs: operation(**kwargs)
    # This host's part in the inventory's replication, and a replica's primary as read.
    replication: replica_plan.Replication = field(default_factory=replica_plan.Replication)
    primary: PrimaryView | None = None
    # Set by the preflight step.
    caddy_site: str = ""
    live_venv: dict | None = None
    needs: Needs | None = None
    server_dir: dict | None = None
    fresh: bool = False
    password_hash: Callable | None = None
    searching: search_plan.SearchPlan | None = None
    server_yaml: str = ""
    # Set by the launchd job step.
    recheck: smoke.Recheck | None = None
    ops: dict = field(default_factory=dict)
    # Every operation planned, in order: the lock's release waits on them all.
    planned: list = field(default_factory=list)

    @property
    def paths(self):
        return self.config.paths

    @property
    def domain(self) -> str:
        return self.place.domain

    def op(self, key: str, operation, **kwargs):
        self.ops[key] = self.call(key, operation, **kwargs)
        self.planned.append(self.ops[key])
        return self.ops[key]


@dataclass(frozen=True)
class Step:
    """One named step of the converge: ``reads(c)`` is what its ``run(c)`` reads from the
    host (all steps' reads are prefetched in one round trip before the first runs);
    ``run(c)`` decides and plans its operations through ``c.op``."""

    name: str
    reads: Callable[[Converge], list]
    run: Callable[[Converge], None]


def nothing(c: Converge) -> list:
    return []


# ---------------------------------------------------------------------------- the steps


def lock_reads(c: Converge) -> list:
    # First in the batch: while another deploy changes the host it waits, so the rest
    # is read from the host as that deploy left it.
    return deploy_lock.reads(c.config)


def lock(c: Converge) -> None:
    # Refuses the run while another deploy holds the lock; from here on, every
    # operation that changes something takes (or checks) the lock first.
    deploy_lock.begin(c.config)


def preflight_reads(c: Converge) -> list:
    paths = c.paths
    daemon_leftovers = () if c.place.daemon else (paths.daemon_plist_file, paths.daemon_backup_plist_file)
    return [
        *preflight.reads(c.config, c.domain, c.place),
        *devpi.reads(c.config),
        paths.caddy_site_file,
        paths.caddy_restart_pending,
        *daemon_leftovers,
        *users_indexes.reads(c.config),
        *search.reads(c.config),
    ]


def preflight_step(c: Converge) -> None:
    """Everything this run needs from the host (or one message listing what is missing),
    and every refusal, before any change; the later steps get the tools as found."""
    config, paths, place = c.config, c.paths, c.place
    c.caddy_site = render_caddy_site(config)
    c.live_venv = read(host, devpi.venv_read(config))
    # Root (sudo -n) for a LaunchDaemon, or for the one a switch back to the agent retires.
    daemon_leftovers = not place.daemon and any(
        file_content(host, p) is not None for p in (paths.daemon_plist_file, paths.daemon_backup_plist_file)
    )
    caddy_block = text_differs(paths.caddy_site_file, c.caddy_site)
    c.needs = Needs(
        venv=not devpi.venv_is_current(config, c.live_venv),
        caddy_block=caddy_block,
        root=place.needs_sudo or (daemon_leftovers and place.uid != 0),
        caddy_restart=bool(config.caddy_restart) and (
            caddy_block or file_content(host, paths.caddy_restart_pending) is not None),
    )
    tools = preflight.ready(config, c.domain, c.needs, place)
    c.config = config = with_tools(config, tools)
    c.server_dir = devpi.server_dir(config)
    check_server_dir(config, c.server_dir, venv_build=c.needs.venv, live_venv=c.live_venv)
    replica_plan.check_server_dir(config, c.replication, c.server_dir, c.primary.uuid if c.primary else None)
    c.fresh = devpi.needs_init(c.server_dir)
    # The password is read (1Password may prompt) only when init will run; a replica's
    # users are its primary's.
    c.password_hash = plan_init_secret(config) if c.fresh and not c.replication.is_replica else None
    if tools.uv_source in preflight.BOOTSTRAPPING:
        c.op("bootstrap", preflight.uv_bootstrap, name="Bootstrap uv", config=config, tools=tools,
             lock=read_uv_lock())
    # devpi-web's search: Whoosh only once no mirror loads its upstream's whole
    # project list (pyinfra_devpi/search.py); else null, and maybe Whoosh after the
    # users/indexes step has flagged the mirrors (decided then when devpi is down now).
    if c.replication.is_replica:
        # A replica's indexes are its primary's: no users/indexes step, no Whoosh switch.
        c.searching = search_plan.SearchPlan(search_plan.NULL)
        c.server_yaml = render_server_yaml(config, c.searching.backend)
        return
    try:
        c.searching = search_plan.decide(
            config.search,
            search.found_indexes(config, c.fresh),
            users_indexes.planned(config, c.fresh),
            search_plan.backend_in(file_content(host, paths.config_file)),
        )
    except PlanError as error:
        raise DeployError(f"{host.name}: {error}") from None
    if c.searching.message:
        host.log(c.searching.message, logger.warning if c.searching.warn else logger.info)
    c.server_yaml = render_server_yaml(config, c.searching.backend)


def venv_build(c: Converge) -> None:
    c.op("venv build", devpi.venv, name="Install devpi venv", config=c.config, lock=read_lock(c.config))


def server_dir(c: Converge) -> None:
    # With devpi_allow_export_import: a new devpi with another database version gets
    # the data through devpi-export / devpi-import (its venv is swapped in there).
    c.op(
        "upgrade", server_dir_ops.upgrade,
        name="Move the server dir to the new database version", config=c.config, domain=c.domain,
        sudo=c.place.sudo, venv_op=c.ops["venv build"], server_db_version=c.server_dir["serverversion"],
        wanted_db_version=planned_db_version(c.config, c.needs.venv, c.live_venv),
    )
    # A server dir brought over from elsewhere: devpi-fsck with the new venv before
    # devpi first starts on it.
    c.op("adopt", server_dir_ops.adopt, name="Check the server dir brought over (devpi-fsck)", config=c.config)


def config_files(c: Converge) -> None:
    # The logging config before the YAML config that names it: devpi reads it at start-up.
    c.op("logging", devpi.logging_config, name="Write devpi's logging config", config=c.config,
         content=render_logging_config(c.config))
    c.op("config", devpi.server_config, name="Write devpi-server config", config=c.config, content=c.server_yaml)
    if not c.replication.is_replica:
        c.op("secret", devpi.secret, name="Create devpi secret file", config=c.config)
    else:
        # Below the primary's own secret step: pyinfra runs operations in code order across
        # hosts, so a primary this run initialises has made its secret by then.
        c.op("secret", replica.secret, name="The primary's secret file on the replica", config=c.config,
             replication=c.replication, action=replica.plan_secret(c.config, c.replication, c.primary))


def init(c: Converge) -> None:
    if c.replication.is_replica:
        c.op("init", replica.init, name="Initialise devpi replica server dir", config=c.config,
             replication=c.replication)
        return
    c.op("init", devpi.init, name="Initialise devpi server dir", config=c.config, password_hash=c.password_hash)


CADDY_STEP = "Caddy site block for devpi"


def caddy_reads(c: Converge) -> list:
    return caddy.reads(c.paths.caddy_site_file, c.paths.caddy_restart_pending, c.config.caddy_restart, c.place)


def caddy_site(c: Converge) -> None:
    # Before devpi's job is (re)loaded or restarted: the block holds requests while
    # devpi's port is closed (devpi_caddy_upstream_wait), so with it in place first, a
    # restart below (a takeover, an upgrade, a config change) fails no request that
    # comes through Caddy. It needs nothing from the running devpi.
    c.op(
        "caddy", caddy.site,
        name=CADDY_STEP,
        path=c.paths.caddy_site_file,
        content=c.caddy_site,
        restart=c.config.caddy_restart,
        # Caddy's label is kickstarted where it is loaded: the SSH user's domains or system.
        place=c.place,
        pending_marker=c.paths.caddy_restart_pending,
        caddy_bin=c.config.caddy_bin,
        adopt=c.config.caddy_adopt_site_file,
        # Its failure (a wrong devpi_caddy_restart) must not keep devpi down: the run
        # goes on to devpi's job and fails at its end (the "Caddy picked up" step).
        _ignore_errors=True,
    )


@dataclass(frozen=True)
class Unless:
    """``meta``'s change, for a restart, unless ``started`` changed: the upgrade across
    database versions swaps the new venv in and starts devpi on it itself, so the venv
    build's change needs no second restart. Before execution, ``meta``'s alone (the plan
    cannot know whether the upgrade will find anything to move)."""

    meta: object
    started: object

    def is_complete(self) -> bool:
        return self.meta.is_complete()

    def did_change(self) -> bool:
        return self.meta.did_change() and not (self.started.is_complete() and self.started.did_change())

    @property
    def will_change(self) -> bool:
        return self.meta.will_change


def kind(c: Converge) -> str:
    return "LaunchDaemon " if c.place.daemon else "LaunchAgent "


def load_job(c: Converge, key: str, label: str, plist: str, plist_path: str, log_files: tuple, **options):
    """One of the deploy's jobs (devpi's, the backup's) loaded from its plist. A
    LaunchDaemon's plist is root's (written through sudo -n); its logs are made the SSH
    user's before launchd (root) would create them."""
    return c.op(
        key, launchd.agent,
        name=kind(c) + label,
        label=label,
        plist=plist,
        plist_path=plist_path,
        domain=c.domain,
        directories=[c.paths.log_dir],
        staged=c.paths.staged(plist_path),
        log_files=log_files if c.place.daemon else (),
        root_owned=c.place.daemon,
        sudo=c.place.sudo,
        **options,
    )


def daemons_dir(c: Converge) -> str | None:
    """Where a LaunchDaemon of this devpi under an old label would be (none for a LaunchAgent)."""
    return c.paths.launch_daemons_dir if c.place.daemon else None


def job_reads(c: Converge) -> list:
    paths = c.paths
    return [
        *retire.reads((c.config.label, paths.backup_label), c.place, paths.launch_agents_dir,
                      paths.other_scope_plists, daemons_dir(c)),
        *launchd.reads(c.config.label, c.domain, paths.plist_file),
        paths.smoke_result, paths.venv_previous,
    ]


@dataclass(frozen=True)
class Known:
    """A restart the plan already knows it needs (no operation's change), as a trigger."""

    will_change: bool

    def is_complete(self) -> bool:
        return False


def launchd_job(c: Converge) -> None:
    config, paths, place = c.config, c.paths, c.place
    # The live venv no gate has passed (a run stopped after the swap), or a devpi whose
    # last smoke check failed: restarted and gated again. A new venv this run is gated anyway.
    record, previous = file_content(host, paths.smoke_result), file_content(host, paths.venv_previous)
    if not c.needs.venv and c.live_venv:
        c.recheck = smoke.recheck(record, c.live_venv.get("path"), previous)
        if c.recheck:
            host.log(c.recheck.reason, logger.warning)
    # Before the job is (re)loaded: an old job would keep devpi's port.
    c.op(
        "retire", retire.old_agents,
        name="Retire this devpi's job under another label, domain or scope",
        label=config.label,
        place=place,
        plist_path=paths.plist_file,
        config_file=paths.config_file,
        port=config.port,
        agents_dir=paths.launch_agents_dir,
        keep=(paths.backup_label,),
        other_plists=paths.other_scope_plists,
        leave=(config.label,),
        daemons_dir=daemons_dir(c),
    )
    load_job(
        c, "agent", config.label, render_plist(config, place.run_as), paths.plist_file, (paths.out_log, paths.err_log),
        restart_after=[Unless(c.ops["venv build"], started=c.ops["upgrade"]), c.ops["logging"], c.ops["config"],
                       *([c.ops["secret"]] if c.replication.is_replica else []), Known(c.recheck is not None)],
        # devpi's label loaded in another domain (the Ansible role's `launchctl load`,
        # the other scope) holds the port: booted out by the same command that loads
        # this job, after its plist is written, so the port is closed only for the switch.
        displace=retire.loaded_elsewhere(config.label, place),
    )


def health(c: Converge) -> None:
    # After the upgrade's own start too: the gate's smoke check runs on the new dir.
    c.op("health", devpi.wait_healthy, name="Wait for devpi to answer", config=c.config,
         after=[c.ops["agent"], c.ops["upgrade"]], new_venv=[c.ops["venv build"]],
         target=c.place.target(c.config.label), sudo=c.place.sudo, recheck=c.recheck)
    if c.replication.is_replica:
        c.op("in sync", replica.in_sync, name="Wait for the replica to replicate", config=c.config,
             replication=c.replication, after=[c.ops["agent"], c.ops["secret"]])
    # After the health wait: the devpi that answers runs this config's indexer. An index
    # the run's final indexer uses (Whoosh, maybe switched on later) is not orphaned.
    later = c.searching.switch_on or c.searching.deferred
    c.op("index", devpi.orphaned_index, name="Orphaned Whoosh search index", config=c.config,
         indexer_backend=search_plan.WHOOSH if later else c.searching.backend)


def backup_reads(c: Converge) -> list:
    return backup.reads(c.config, c.domain)


def backup_job(c: Converge) -> None:
    """Scheduled backups: a second job that launchd starts daily (never started by the
    deploy), or none once devpi_backup is unset (its backups stay)."""
    config, paths, place = c.config, c.paths, c.place
    if config.backup is None:
        c.op("backup job", launchd.absent, name="No " + kind(c) + paths.backup_label, label=paths.backup_label,
             domain=c.domain, plist_path=paths.backup_plist_file, sudo=place.sudo)
        return
    backup.warn_if_stale(config)
    c.op("backup program", backup.program, name="Backup program", config=config)
    load_job(c, "backup job", paths.backup_label, render_backup_plist(config, place.run_as), paths.backup_plist_file,
             (paths.backup_log,), keep_running=False)


def users_and_indexes_reads(c: Converge) -> list:
    return users_indexes.reads(c.config)


def users_and_indexes(c: Converge) -> None:
    if c.replication.is_replica:
        if c.config.users or c.config.indexes:
            host.log("devpi_users / devpi_indexes are left to the primary: a replica's are its primary's",
                     logger.info)
        return
    # devpi_users / devpi_indexes: planned (refused, passwords read) now, applied once
    # devpi is up (waited for above), over its REST API through the SSH connection.
    try:
        users_indexes.prepare(c.config, fresh=c.fresh)
    except PlanError as error:
        raise DeployError(f"{host.name}: {error}") from None
    c.op("users and indexes", users_indexes.users_indexes, name="devpi users and indexes", config=c.config,
         fresh=c.fresh, whoosh=c.searching.backend == search_plan.WHOOSH)


def search_step(c: Converge) -> None:
    c.op(
        "search", search.switch_on,
        name="Switch devpi-web search on (Whoosh)",
        config=c.config,
        plan=c.searching,
        content=render_server_yaml(c.config, search_plan.WHOOSH),
        written=c.server_yaml,
        target=c.place.target(c.config.label),
        sudo=c.place.sudo,
    )
    # devpi runs with its final indexer now: devpi-web's index is made here, from one
    # thread, not by the first upload (operations/search.py).
    c.op(
        "search index", search.create_index,
        name="Create devpi-web's search index",
        config=c.config,
        whoosh=c.searching.backend == search_plan.WHOOSH or c.searching.switch_on,
        exists=c.server_dir["whoosh_project_index"],
    )


def prewarm_reads(c: Converge) -> list:
    return prewarm.reads(c.config)


def prewarm_step(c: Converge) -> None:
    # Last: devpi is up (waited for above). Only when the list or the mirror changed.
    # The mirror's declared settings are part of the marker: changing them warms again.
    c.op("prewarm", prewarm.projects, name="Warm the mirror for devpi_prewarm", config=c.config,
         server_dir=c.server_dir, mirror=c.config.indexes.get(c.config.prewarm_index))


def caddy_picked_up(c: Converge) -> None:
    # The Caddy block's step did not stop the run when it failed: the run fails here,
    # after devpi was converged. Only in a run where that step has something to do.
    if c.ops["caddy"].will_change:
        c.op("caddy picked up", caddy.picked_up, name="Check that Caddy picked up the site block",
             site=c.ops["caddy"], message=caddy.not_picked_up_message(CADDY_STEP, c.config.local_url))


def release(c: Converge) -> None:
    # Any change took the deploy lock: give it back once every operation planned
    # before this one has run.
    c.op("release", deploy_lock.release, name="Release the deploy lock", config=c.config,
         after=list(c.planned))


STEPS = (
    Step("lock", lock_reads, lock),
    Step("preflight", preflight_reads, preflight_step),
    Step("venv build", lambda c: [devpi.venv_read(c.config)], venv_build),
    Step("server dir", lambda c: [devpi.server_dir_read(c.config)], server_dir),
    Step("config files", lambda c: [c.paths.logging_config, c.paths.config_file, devpi.server_dir_read(c.config),
                                    *(replica.reads(c.config) if c.replication.is_replica else [])],
         config_files),
    Step("init", lambda c: [devpi.server_dir_read(c.config)], init),
    Step("caddy", caddy_reads, caddy_site),
    Step("launchd job", job_reads, launchd_job),
    Step("health", lambda c: [devpi.server_dir_read(c.config)], health),
    Step("backup", backup_reads, backup_job),
    Step("users and indexes", users_and_indexes_reads, users_and_indexes),
    Step("search", nothing, search_step),
    Step("prewarm", prewarm_reads, prewarm_step),
    Step("caddy picked up", nothing, caddy_picked_up),
    Step("release", nothing, release),
)


def run_steps(c: Converge, steps=STEPS) -> None:
    """Prefetch what ``steps`` read in one round trip, then run them in order."""
    prefetch(host, [r for step in steps for r in step.reads(c)])
    for step in steps:
        step.run(c)


@deploy("devpi")
def devpi_service():
    """Converge devpi-server + devpi-web as a LaunchAgent (or a LaunchDaemon run as the SSH
    user: ``devpi_launchd_scope``) behind a Caddy site block: the ``STEPS`` in order."""
    session = read(host, FactRead.of(LaunchdSession))
    if not session["launchctl"]:
        raise DeployError(
            f"launchd is not available on {host.name} (no launchctl on the SSH user's PATH): "
            "this deploy runs devpi as a macOS LaunchAgent and needs a macOS host",
        )
    inventory = {other.name: other.data.dict() for other in host.inventory}
    if len(inventory) == 1:
        converge(session, inventory)
        return
    # One host failing fails that host alone: the others converge, and pyinfra names it.
    try:
        converge(session, inventory)
    except PyinfraError as error:
        host.log(str(error), logger.error)
        state.fail_hosts({host})


def converge(session: dict, inventory: dict) -> None:
    """Build this host's config (with its part in the inventory's replication) and run
    the steps."""
    replication = replica_plan.topology(host.name, inventory)
    config = replica_plan.with_replication(build_config(host.data.dict(), session["home"]), replication)
    # A replica's primary, read over its own SSH connection (its secret by digest, its uuid).
    primary = None
    if replication.primary_host is not None:
        primary = read_primary(host.inventory.get_host(replication.primary_host))
    # Where the jobs live: the SSH user's domain (a LaunchAgent) or the system domain (a
    # LaunchDaemon, changed through sudo -n unless the SSH user is root).
    place = job_place(config, session)
    # A LaunchAgent in user/<uid> (a headless Mac) is not loaded again at boot.
    reboot = reboot_warning(place)
    if reboot:
        logger.warning(f"{host.print_prefix}{reboot}")
    run_steps(Converge(config, place, replication=replication, primary=primary))

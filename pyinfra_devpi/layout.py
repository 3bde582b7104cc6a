"""
Where everything the deploy owns lives on the host: every path and file name,
derived here and nowhere else.

The config builds one ``Layout`` (``config.paths``) from the operator's directories
(``devpi_home``, ``devpi_log_dir``, ``devpi_launch_agents_dir`` or
``devpi_launch_daemons_dir`` as ``devpi_launchd_scope`` says, the label, the
log names and ``devpi_caddy_site_file``); operations, facts and scripts ask it for
paths instead of assembling them. ``tests/test_layout.py`` greps the product code
for the literals below so a new path cannot be written anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

# Defaults of the directory keys (``~/`` is the SSH user's home on the host).
DEFAULT_HOME = "~/devpi"
DEFAULT_LOG_DIR = "~/Library/Logs"
DEFAULT_LAUNCH_AGENTS_DIR = "~/Library/LaunchAgents"
# Where a LaunchDaemon's plist lives (``devpi_launchd_scope = "daemon"``): the system's
# dir, owned by root; the deploy writes there only through ``sudo -n``.
DEFAULT_LAUNCH_DAEMONS_DIR = "/Library/LaunchDaemons"
DEFAULT_CADDY_SITE_FILE = "~/.config/caddy/sites/devpi.caddy"

# devpi's own files in a server dir (devpi-server's source), in the order devpi-init
# writes them: ``.serverversion`` (the database version), ``.nodeinfo`` (role, uuid),
# ``.sqlite`` (the database, devpi's default ``sqlite`` storage); ``+files`` holds the
# release files Caddy may serve directly. A dir with all three is complete.
NODEINFO = ".nodeinfo"
SERVERVERSION = ".serverversion"
SQLITE = ".sqlite"
FILES_DIR = "+files"
# devpi-web's Whoosh search index, where its default indexer keeps it (devpi-web's
# whoosh_index.py: ``<server dir>/.indices`` unless ``indexer-backend`` names a path).
WHOOSH_INDEX_DIR = ".indices"

# A file the deploy writes goes to ``<path>.pyinfra-new`` first and is renamed into
# place, so launchd, devpi and Caddy never read a half-written file; so does a new
# server dir (devpi-init writes into ``server-dir.pyinfra-new``).
TRANSIENT_SUFFIX = ".pyinfra-new"

# An upgrade across database versions (operations/server_dir.py) exports into
# ``<server dir>.export.pyinfra-new``, imports into ``<server dir>.pyinfra-new`` and
# keeps the server dir it replaced as ``<server dir>.before-db<old version>-<stamp>``;
# a new dir that failed after the swap is kept as ``<server dir>.failed-db<version>-<stamp>``.
EXPORT_SUFFIX = ".export"
KEPT_INFIX = ".before-db"
FAILED_INFIX = ".failed-db"
# The log of the new server dir's check on a spare port, in the export dir.
CHECK_LOG = "check.log"

# Every venv the deploy builds is named ``devpi-server-<v>-web-<v>-<timestamp>-<pid>``
# under ``venvs/`` (the pid of the building shell: two builds never share a directory,
# even in the same second); older ones are pruned by this prefix. While it is built, a
# venv has a ``<venv>.building`` file beside it naming its builder (pid, start time,
# host): the prune leaves a venv alone while its builder runs. A venv found where the
# live link belongs (made by hand) is moved aside under ``pre-existing-<timestamp>-<pid>``.
VENV_PREFIX = "devpi-"
PRE_EXISTING_PREFIX = "pre-existing-"
BUILDING_SUFFIX = ".building"
# A shell word (expanded by the host) that makes a new venv's name unique.
VENV_STAMP_SHELL = '"$(date +%Y%m%d%H%M%S)-$$"'

# The deploy lock (``pyinfra_devpi/deploy_lock.py``) in devpi_home: a directory made
# with ``mkdir`` (atomic) holding ``owner``; ``.takeover`` guards the removal of a
# stale lock; ``serial`` holds the token of the last run that took the lock.
DEPLOY_LOCK = ".pyinfra-deploy.lock"
DEPLOY_LOCK_OWNER = "owner"
DEPLOY_LOCK_TAKEOVER = ".pyinfra-deploy.lock.takeover"
DEPLOY_SERIAL = ".pyinfra-deploy.serial"


# A job's plist is ``<label>.plist`` in the LaunchAgents dir (scope "agent") or the
# LaunchDaemons dir (scope "daemon"). A LaunchDaemon's plist is staged in devpi_home
# (``<home>/<label>.plist.pyinfra-new``: the SSH user cannot write the root-owned dir)
# and copied into place as root through ``<plist>.pyinfra-new``.
PLIST_SUFFIX = ".plist"
AGENT_SCOPE = "agent"
DAEMON_SCOPE = "daemon"

# Backups (``devpi_backup``, pyinfra_devpi/backup.py): a second LaunchAgent,
# ``<label>.backup``, runs the backup program (``<home>/bin/devpi-backup.py``, run by
# the live venv's Python) which writes ``devpi-backup-<UTC stamp>`` directories, each
# with ``manifest.json``, into the backup dir (default ``<home>/backups``); a backup is
# written under ``.devpi-backup-<stamp>-<pid>.pyinfra-new`` there first and renamed
# into place. Its last success and failure go to ``<home>/backup.status.json``. Each
# backup holds the program's marker (its name and the manifest's sha256): the prune
# removes only backups with it. ``.pyinfra-backup.lock`` in devpi_home exists while a
# backup runs (a restore and an upgrade wait for it).
DEFAULT_BACKUP_DIR_NAME = "backups"
BACKUP_MARKER = "backup.pyinfra.json"
BACKUP_LOCK = ".pyinfra-backup.lock"
BACKUP_LABEL_SUFFIX = ".backup"
BACKUP_PREFIX = "devpi-backup-"
BACKUP_MANIFEST = "manifest.json"
BACKUP_EXPORT_DIR = "export"
# What devpi-export writes at the top of its dump: users, indexes, file list.
DATAINDEX = "dataindex.json"
# A restore imports into ``<server dir>.restoring.pyinfra-new``, and keeps the dir it
# replaces as ``<server dir>.before-restore-<stamp>``; a restored dir that fails the
# health gate is put aside as ``<server dir>.failed-restore-<stamp>``.
RESTORING_SUFFIX = ".restoring" + TRANSIENT_SUFFIX
BEFORE_RESTORE_SUFFIX = ".before-restore-"
FAILED_RESTORE_SUFFIX = ".failed-restore-"

# Where a Mac keeps the tools the deploy runs. A non-interactive SSH command on macOS
# gets PATH=/usr/bin:/bin:/usr/sbin:/sbin: Homebrew's bin (``/opt/homebrew/bin`` on
# Apple silicon, ``/usr/local/bin`` on Intel) and uv's installer dir (``~/.local/bin``,
# formerly ``~/.cargo/bin``) are not on it. Each list is searched in order: a bare name
# on the session's PATH (an operator's sshd ``SetEnv`` or ``~/.ssh/environment`` wins),
# then these places; ``~/`` is the SSH user's home. ``devpi_uv`` / ``devpi_caddy_bin``
# replace the list; uv bootstrapped by the deploy (``Layout.bootstrap_uv``) is last.
UV_CANDIDATES = ("uv", "~/.local/bin/uv", "~/.cargo/bin/uv", "/opt/homebrew/bin/uv", "/usr/local/bin/uv")
CADDY_CANDIDATES = ("caddy", "/opt/homebrew/bin/caddy", "/usr/local/bin/caddy")
# The graceful restart named in errors and docs (Homebrew's Caddy; needs its admin endpoint).
CADDY_RELOAD_EXAMPLE = "{'command': '/opt/homebrew/bin/caddy reload --config <your Caddyfile>'}"
# The python3 that bootstraps uv from PyPI when uv is nowhere (any Python 3.8+ can
# pip-install uv's wheel): Homebrew's, else the session's (macOS: the Command Line Tools').
BOOTSTRAP_PYTHON_CANDIDATES = ("/opt/homebrew/bin/python3", "/usr/local/bin/python3", "python3")
# macOS's /usr/bin/python3 is a shim: without the Command Line Tools it opens an install
# dialog and fails, so it is run only when ``xcode-select -p`` finds a developer dir.
MACOS_PYTHON_SHIM = "/usr/bin/python3"


def transient(path: str) -> str:
    """Where a new version of ``path`` is written before it replaces ``path``."""
    return path + TRANSIENT_SUFFIX


def kept_server_dir(server_dir: str, db_version: str) -> str:
    """Where an upgrade keeps the server dir it replaced (shell words: ``server_dir`` and
    ``db_version`` may be quoted shell variables; the stamp is expanded by the host)."""
    return f"{server_dir}{KEPT_INFIX}{db_version}-{VENV_STAMP_SHELL}"


def failed_server_dir(server_dir: str, db_version: str) -> str:
    """Where an upgrade keeps a new server dir whose devpi failed after the swap."""
    return f"{server_dir}{FAILED_INFIX}{db_version}-{VENV_STAMP_SHELL}"


def export_dir(server_dir: str) -> str:
    """Where an upgrade's devpi-export writes (removed once imported)."""
    return transient(f"{server_dir}{EXPORT_SUFFIX}")


def venv_bin(venv: str, name: str) -> str:
    """A program in a venv; ``venv`` may be a quoted shell variable such as ``"$new"``."""
    return f"{venv}/bin/{name}"


def venv_name(server_version: str, web_version: str) -> str:
    return f"{VENV_PREFIX}server-{server_version}-web-{web_version}"


class _Under:
    """A path named ``name`` (or by the layout's attribute ``named_by``, plus
    ``suffix``) in another path of the same layout (``base``): one line per path
    below, so each is written once and reads as what it is."""

    def __init__(self, base: str, name: str = "", *, named_by: str = "", suffix: str = ""):
        self.base, self.name, self.named_by, self.suffix = base, name, named_by, suffix

    def __get__(self, layout, owner=None):
        if layout is None:
            return self
        name = getattr(layout, self.named_by) if self.named_by else self.name
        return f"{getattr(layout, self.base)}/{name}{self.suffix}"


@dataclass(frozen=True)
class LockPaths:
    """The deploy lock's paths in devpi_home (``pyinfra_devpi/deploy_lock.py``)."""

    home: str

    lock = _Under("home", DEPLOY_LOCK)  # exists while a deploy changes this host
    owner = _Under("lock", DEPLOY_LOCK_OWNER)
    takeover = _Under("home", DEPLOY_LOCK_TAKEOVER)
    serial = _Under("home", DEPLOY_SERIAL)


@dataclass(frozen=True)
class Layout:
    """Every path on the host, absolute (``~/`` already expanded)."""

    home: str
    log_dir: str
    launch_agents_dir: str
    label: str
    out_log_name: str
    err_log_name: str
    server_log_name: str
    caddy_site_file: str
    launch_daemons_dir: str = DEFAULT_LAUNCH_DAEMONS_DIR
    scope: str = AGENT_SCOPE  # "agent" | "daemon": where the plists are

    # devpi_home ------------------------------------------------------------
    venv = _Under("home", "venv")  # the live venv: a symlink to one of venvs_dir's
    venvs_dir = _Under("home", "venvs")
    # The venv the live link pointed at before the last swap: where a failed
    # upgrade rolls back to (written by the venv build, read by the health gate).
    venv_previous = _Under("home", "venv.previous")
    # Written by a venv build whose devpi uses another database version than the server
    # dir (with devpi_allow_export_import): the new venv, not yet live; read by the upgrade.
    upgrade_pending = _Under("home", "upgrade" + TRANSIENT_SUFFIX)
    # devpi-export's and devpi-import's output of the last upgrade (kept for reading).
    upgrade_log = _Under("home", "upgrade.log")
    server_dir = _Under("home", "server-dir")
    nodeinfo = _Under("server_dir", NODEINFO)
    serverversion = _Under("server_dir", SERVERVERSION)
    files_dir = _Under("server_dir", FILES_DIR)
    whoosh_index = _Under("server_dir", WHOOSH_INDEX_DIR)
    config_file = _Under("home", "devpi-server.yml")
    # devpi's logging (``--logger-cfg``, named in the YAML config): a dictConfig whose
    # rotating handler keeps ``server_log`` and its numbered backups within the bound.
    logging_config = _Under("home", "devpi-logging.json")
    secret_file = _Under("home", "secret")
    # The 0600 file that carries root's password hash to devpi-init, removed at once.
    root_hash_upload = _Under("home", ".root-passwd-hash.pyinfra")
    # The deploy's record of the password references it set (no secret in it).
    users_state_file = _Under("home", "users.pyinfra.json")
    prewarm_marker = _Under("home", "prewarm.state")
    # The health gate's last smoke check (real requests after /+api answered), as JSON.
    smoke_result = _Under("home", "smoke.pyinfra.json")
    # Exists while a changed Caddy block waits for a successful Caddy restart (here,
    # not beside the block: Caddy may import every file in its sites dir).
    caddy_restart_pending = _Under("home", "caddy-restart.pending")
    # Tools the deploy installs for itself: uv, when the host has none. Only the uv
    # binary of the scratch venv it is pip-installed into is kept.
    tools_dir = _Under("home", "tools")
    bootstrap_uv = _Under("tools_dir", "bin/uv")  # the last of the uv candidates
    uv_build_venv = _Under("tools_dir", "uv-venv" + TRANSIENT_SUFFIX)
    # Backups: the program the backup job runs, its status record, the default dir.
    backup_program = _Under("home", "bin/devpi-backup.py")
    # The backup program's directory: a purge removes it once it is empty.
    bin_dir = _Under("home", "bin")
    backup_status = _Under("home", "backup.status.json")
    backup_lock = _Under("home", BACKUP_LOCK)
    backup_lock_owner = _Under("backup_lock", DEPLOY_LOCK_OWNER)
    default_backup_dir = _Under("home", DEFAULT_BACKUP_DIR_NAME)
    # A restore's new server dir while it is imported and checked.
    # The log of a restore's trial devpi (the restored dir on a spare port).
    restore_trial_log = _Under("home", "restore-trial.log")

    @property
    def restoring_dir(self) -> str:
        return self.server_dir + RESTORING_SUFFIX

    @property
    def backup_label(self) -> str:
        return self.label + BACKUP_LABEL_SUFFIX

    @property
    def venv_prune_glob(self) -> str:
        """The shell glob (after a quoted ``venvs_dir``) matching the deploy's venvs."""
        return f"{VENV_PREFIX}*"

    @property
    def deploy_lock(self) -> LockPaths:
        return LockPaths(self.home)

    def lock_upload(self, name: str) -> str:
        """Where the requirements lock for venv ``name`` is uploaded."""
        return f"{self.venvs_dir}/{name}.lock.txt"

    def bin(self, name: str) -> str:
        """A program in the live venv."""
        return venv_bin(self.venv, name)

    def uv_lock_upload(self, version: str) -> str:
        """Where the hashed requirement for bootstrapping uv ``version`` is uploaded."""
        return f"{self.tools_dir}/uv-{version}.lock.txt"

    @property
    def uv_lock_glob(self) -> str:
        """The shell glob (after a quoted ``tools_dir``) matching every bootstrap requirement."""
        return "uv-*.lock.txt"

    # launchd ------------------------------------------------------------------
    # The plists of both scopes: the deploy writes its scope's, and retires the other's.
    agent_plist_file = _Under("launch_agents_dir", named_by="label", suffix=PLIST_SUFFIX)
    daemon_plist_file = _Under("launch_daemons_dir", named_by="label", suffix=PLIST_SUFFIX)
    agent_backup_plist_file = _Under("launch_agents_dir", named_by="backup_label", suffix=PLIST_SUFFIX)
    daemon_backup_plist_file = _Under("launch_daemons_dir", named_by="backup_label", suffix=PLIST_SUFFIX)

    @property
    def daemon(self) -> bool:
        return self.scope == DAEMON_SCOPE

    @property
    def plist_file(self) -> str:
        return self.daemon_plist_file if self.daemon else self.agent_plist_file

    @property
    def backup_plist_file(self) -> str:
        return self.daemon_backup_plist_file if self.daemon else self.agent_backup_plist_file

    @property
    def other_scope_plists(self) -> tuple[str, str]:
        """The main and backup plists of the scope not in use (retired when found)."""
        if self.daemon:
            return (self.agent_plist_file, self.agent_backup_plist_file)
        return (self.daemon_plist_file, self.daemon_backup_plist_file)

    def staged(self, plist: str) -> str:
        """Where a root-owned plist's new content is uploaded first (in devpi_home, the
        SSH user's), before it is copied into place as root."""
        return f"{self.home}/{plist.rsplit('/', 1)[-1]}{TRANSIENT_SUFFIX}"

    out_log = _Under("log_dir", named_by="out_log_name")
    err_log = _Under("log_dir", named_by="err_log_name")
    # Everything devpi logs (each request), rotated by devpi's own handler: launchd
    # keeps out_log/err_log open, so renaming those would not rotate them.
    server_log = _Under("log_dir", named_by="server_log_name")

    def server_log_backups(self, count: int) -> list[str]:
        """The rotated copies of ``server_log`` (``RotatingFileHandler``: ``<log>.1`` …)."""
        return [f"{self.server_log}.{n}" for n in range(1, count + 1)]

    def removable(self, log_backups: int) -> list[tuple[str, str]]:
        """What the deploy left in devpi_home and the log dir, by what it is, in the order
        a purge removes it (the uninstall keeps all of it unless told to purge). Only these
        exact paths: nothing else in devpi_home or the log dir is the deploy's."""
        return [
            ("server dir (devpi's data: uploads, users, indexes, the mirror's cache)", self.server_dir),
            ("live venv link", self.venv),
            ("venvs", self.venvs_dir),
            ("record of the previous venv", self.venv_previous),
            ("devpi-server config", self.config_file),
            ("logging config", self.logging_config),
            ("secret file (signs logins)", self.secret_file),
            ("record of the users' password references", self.users_state_file),
            ("prewarm marker", self.prewarm_marker),
            ("record of the last smoke check", self.smoke_result),
            ("Caddy restart marker", self.caddy_restart_pending),
            ("tools (uv the deploy bootstrapped)", self.tools_dir),
            ("backup program", self.backup_program),
            ("record of the last backups", self.backup_status),
            ("backup lock (there while a backup runs, or left by a killed one)", self.backup_lock),
            ("log of the last restore's trial devpi", self.restore_trial_log),
            ("stdout log", self.out_log),
            ("stderr log", self.err_log),
            ("devpi's log", self.server_log),
            ("backup job's log", self.backup_log),
            *((f"devpi's log, rotated copy {n}", path) for n, path in enumerate(self.server_log_backups(log_backups), 1)),
        ]

    def pruned(self) -> list[tuple[str, str]]:
        """The dirs whose content the deploy removes, by what they are (nothing of the
        operator's may be configured inside them: ``pyinfra_devpi/real_paths.py``)."""
        return [("venvs", self.venvs_dir), ("live venv", self.venv), ("tools", self.tools_dir),
                ("server dir", self.server_dir)]

    # The backup job's log (stdout and stderr); its plist is beside the main one (above).
    backup_log = _Under("log_dir", named_by="backup_label", suffix=".log")

    def managed(self) -> dict[str, str]:
        """The files the deploy writes, by what they are (for messages and checks)."""
        return {
            "venv": self.venv,
            "server dir": self.server_dir,
            "config": self.config_file,
            "secret": self.secret_file,
            "plist": self.plist_file,
            "out log": self.out_log,
            "err log": self.err_log,
            "server log": self.server_log,
            "logging config": self.logging_config,
            "Caddy site block": self.caddy_site_file,
        }

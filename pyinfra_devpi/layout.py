"""
Where everything the deploy owns lives on the host: every path and file name,
derived here and nowhere else.

The config builds one ``Layout`` (``config.paths``) from the operator's directories
(``devpi_home``, ``devpi_log_dir``, ``devpi_launch_agents_dir``, the label, the
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
DEFAULT_CADDY_SITE_FILE = "~/.config/caddy/sites/devpi.caddy"

# devpi's own files in a server dir (devpi-server's source): ``.nodeinfo`` is written
# by devpi-init (its "initialised" marker), ``.serverversion`` holds the database
# version, ``+files`` the release files Caddy may serve directly.
NODEINFO = ".nodeinfo"
SERVERVERSION = ".serverversion"
FILES_DIR = "+files"

# A file the deploy writes goes to ``<path>.pyinfra-new`` first and is renamed into
# place, so launchd, devpi and Caddy never read a half-written file.
TRANSIENT_SUFFIX = ".pyinfra-new"

# Every venv the deploy builds is named ``devpi-server-<v>-web-<v>-<timestamp>`` under
# ``venvs/``; older ones are pruned by this prefix. A venv found where the live link
# belongs (made by hand) is moved aside under ``pre-existing-<timestamp>``.
VENV_PREFIX = "devpi-"
PRE_EXISTING_PREFIX = "pre-existing-"

# Where a Mac keeps the tools the deploy runs. A non-interactive SSH command on macOS
# gets PATH=/usr/bin:/bin:/usr/sbin:/sbin: Homebrew's bin (``/opt/homebrew/bin`` on
# Apple silicon, ``/usr/local/bin`` on Intel) and uv's installer dir (``~/.local/bin``,
# formerly ``~/.cargo/bin``) are not on it. Each list is searched in order: a bare name
# on the session's PATH (an operator's sshd ``SetEnv`` or ``~/.ssh/environment`` wins),
# then these places; ``~/`` is the SSH user's home. ``devpi_uv`` / ``devpi_caddy_bin``
# replace the list; uv bootstrapped by the deploy (``Layout.bootstrap_uv``) is last.
UV_CANDIDATES = ("uv", "~/.local/bin/uv", "~/.cargo/bin/uv", "/opt/homebrew/bin/uv", "/usr/local/bin/uv")
CADDY_CANDIDATES = ("caddy", "/opt/homebrew/bin/caddy", "/usr/local/bin/caddy")
# The python3 that bootstraps uv from PyPI when uv is nowhere (any Python 3.8+ can
# pip-install uv's wheel): Homebrew's, else the session's (macOS: the Command Line Tools').
BOOTSTRAP_PYTHON_CANDIDATES = ("/opt/homebrew/bin/python3", "/usr/local/bin/python3", "python3")
# macOS's /usr/bin/python3 is a shim: without the Command Line Tools it opens an install
# dialog and fails, so it is run only when ``xcode-select -p`` finds a developer dir.
MACOS_PYTHON_SHIM = "/usr/bin/python3"


def transient(path: str) -> str:
    """Where a new version of ``path`` is written before it replaces ``path``."""
    return path + TRANSIENT_SUFFIX


def venv_bin(venv: str, name: str) -> str:
    """A program in a venv; ``venv`` may be a quoted shell variable such as ``"$new"``."""
    return f"{venv}/bin/{name}"


def venv_name(server_version: str, web_version: str) -> str:
    return f"{VENV_PREFIX}server-{server_version}-web-{web_version}"


@dataclass(frozen=True)
class Layout:
    """Every path on the host, absolute (``~/`` already expanded)."""

    home: str
    log_dir: str
    launch_agents_dir: str
    label: str
    out_log_name: str
    err_log_name: str
    caddy_site_file: str

    # devpi_home ------------------------------------------------------------
    @property
    def venv(self) -> str:
        """The live venv: a symlink to one of ``venvs_dir``'s venvs."""
        return f"{self.home}/venv"

    @property
    def venvs_dir(self) -> str:
        return f"{self.home}/venvs"

    @property
    def venv_prune_glob(self) -> str:
        """The shell glob (after a quoted ``venvs_dir``) matching the deploy's venvs."""
        return f"{VENV_PREFIX}*"

    def lock_upload(self, name: str) -> str:
        """Where the requirements lock for venv ``name`` is uploaded."""
        return f"{self.venvs_dir}/{name}.lock.txt"

    def bin(self, name: str) -> str:
        """A program in the live venv."""
        return venv_bin(self.venv, name)

    @property
    def server_dir(self) -> str:
        return f"{self.home}/server-dir"

    @property
    def nodeinfo(self) -> str:
        return f"{self.server_dir}/{NODEINFO}"

    @property
    def serverversion(self) -> str:
        return f"{self.server_dir}/{SERVERVERSION}"

    @property
    def files_dir(self) -> str:
        return f"{self.server_dir}/{FILES_DIR}"

    @property
    def config_file(self) -> str:
        return f"{self.home}/devpi-server.yml"

    @property
    def secret_file(self) -> str:
        return f"{self.home}/secret"

    @property
    def root_hash_upload(self) -> str:
        """The 0600 file that carries root's password hash to devpi-init, removed at once."""
        return f"{self.home}/.root-passwd-hash.pyinfra"

    @property
    def users_state_file(self) -> str:
        """The deploy's record of the password references it set (no secret in it)."""
        return f"{self.home}/users.pyinfra.json"

    @property
    def api_payload(self) -> str:
        return f"{self.home}/.pyinfra-devpi-api.json"

    @property
    def api_script(self) -> str:
        return f"{self.home}/.pyinfra-devpi-api.py"

    @property
    def prewarm_marker(self) -> str:
        return f"{self.home}/prewarm.state"

    @property
    def tools_dir(self) -> str:
        """Tools the deploy installs for itself: uv, when the host has none."""
        return f"{self.home}/tools"

    @property
    def bootstrap_uv(self) -> str:
        """Where the deploy bootstraps uv (the last of the uv candidates)."""
        return f"{self.tools_dir}/bin/uv"

    @property
    def uv_build_venv(self) -> str:
        """The scratch venv uv is pip-installed into; only its ``uv`` binary is kept."""
        return transient(f"{self.tools_dir}/uv-venv")

    def uv_lock_upload(self, version: str) -> str:
        """Where the hashed requirement for bootstrapping uv ``version`` is uploaded."""
        return f"{self.tools_dir}/uv-{version}.lock.txt"

    @property
    def caddy_restart_pending(self) -> str:
        """Exists while a changed Caddy block waits for a successful Caddy restart
        (here, not beside the block: Caddy may import every file in its sites dir)."""
        return f"{self.home}/caddy-restart.pending"

    # launchd ------------------------------------------------------------------
    @property
    def plist_file(self) -> str:
        return f"{self.launch_agents_dir}/{self.label}.plist"

    @property
    def out_log(self) -> str:
        return f"{self.log_dir}/{self.out_log_name}"

    @property
    def err_log(self) -> str:
        return f"{self.log_dir}/{self.err_log_name}"

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
            "Caddy site block": self.caddy_site_file,
        }

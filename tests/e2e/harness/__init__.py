"""Building blocks of the end-to-end harness (the fixtures live in ``conftest.py``).

Everything here is plain functions and small classes so that tests, benchmarks and
ad-hoc debugging sessions can use them without pytest fixtures. One module a part:

* ``common``: paths (``REPO``, the doubles, the venv's ``pyinfra`` / ``caddy``),
  :class:`HarnessError`, :func:`fail_missing`, the one wait loop :func:`wait_until`
  and :func:`simultaneous` (n threads released at once).
* ``tools``: :func:`find_tools` / :class:`ToolPaths`, the controller's uv and python3
  outside the project venv.
* ``network``: :func:`free_port`, :func:`port_open`, :func:`wait_for_port`,
  :func:`listening_addresses`, and the one HTTP helper :func:`http` (no proxy, never
  raises on an HTTP error status) with :func:`http_ok`.
* ``processes``: :func:`spawn` (a daemon in its own session, logging to a file),
  :func:`stop_process` / :func:`wait_gone` (by PID, never by name),
  :func:`proc_memory`, :func:`cpu_seconds`, :func:`cmdline`.
* ``sshd``: :func:`start_sshd` / :class:`SshServer`, a private ``sshd`` on 127.0.0.1 with
  key-only auth, its own host key, a pre-filled ``known_hosts`` and a session
  environment (:func:`build_session_env`, written as ``SetEnv``) whose ``PATH`` is
  exactly a Mac's (``/usr/bin:/bin:/usr/sbin:/sbin``).
* ``mac``: a Mac's SSH session stood in for: sshd in a private mount namespace where
  ``/bin/launchctl`` is the launchctl double and ``/opt/homebrew/bin/caddy`` is Caddy
  (:func:`namespace_argv`), uv in the session HOME's ``~/.local/bin``
  (:func:`install_user_tools`); a headless Mac's console, someone else's
  (:data:`HEADLESS_CONSOLE_OWNER`).
* ``runner``: :func:`write_inventory`, :func:`run_pyinfra`, :class:`PyinfraResult`: drive
  the real pyinfra CLI over that sshd; :func:`count_remote_commands` /
  :func:`remote_commands`: count what a run executed.
* ``upstream``: :func:`build_wheel`, :func:`rebuild_wheel` (a real wheel as another
  version, edited), :func:`wheels_of_lock`, :func:`start_upstream` / :class:`Upstream`: a static
  PEP 503 index of self-built wheels served by ``python3 -m http.server``.
* ``op``: :class:`FakeOp`, the controller-side ``op`` double (``tests/e2e/fakes/op``).
* ``launchd``: :class:`LaunchdDouble`, :func:`launchd_shutdown`, :func:`start_caddy_job`:
  the ``tests/fakes/launchctl`` double and a Caddy LaunchAgent running under it.
* ``logs``: :func:`tail`, :func:`collect_logs` for failure reports.
* ``ansible``: :func:`install_ansible_devpi` / :class:`AnsibleDevpi`, :func:`populate`,
  :func:`write_proxy_block`: a devpi as the Ansible role this deploy replaces left it.

Nothing here is ever skipped: a missing tool fails with a message saying that
``.ci/run`` should install it.
"""

from __future__ import annotations

from .ansible import AnsibleDevpi, install_ansible_devpi, populate, write_proxy_block
from .common import (
    CADDY_BIN,
    CI_HINT,
    CONTROLLER_FAKES_DIR,
    E2E_DIR,
    LAUNCHCTL_DOUBLE,
    LOOPBACK,
    OP_DOUBLE,
    PYINFRA_BIN,
    REMOTE_FAKES_DIR,
    REPO,
    SSH_BIN,
    SSH_KEYGEN_BIN,
    SSHD_BIN,
    VENV_BIN,
    HarnessError,
    fail_missing,
    require_executable,
    simultaneous,
    wait_until,
)
from .launchd import (
    CADDY_PLACEHOLDER_BODY,
    CaddyJob,
    LaunchdDouble,
    launchd_shutdown,
    start_caddy_job,
    write_caddyfile,
)
from .logs import collect_logs, tail
from .mac import HEADLESS_CONSOLE_OWNER, HOMEBREW_BIN, MAC_LAUNCHCTL, MAC_SSH_PATH, UV_INSTALLER_DIR, install_user_tools, namespace_argv
from .network import Poller, free_port, http, http_ok, listening_addresses, port_open, wait_for_port
from .op import FakeOp
from .processes import alive, cmdline, cpu_seconds, proc_memory, spawn, stop_process, wait_gone
from .runner import (
    DEBUG_COMMAND_RE,
    PyinfraResult,
    count_remote_commands,
    pyinfra_env,
    remote_commands,
    run_pyinfra,
    write_inventory,
)
from .sshd import PASSTHROUGH_ENV, SshServer, build_session_env, sshd_setenv_line, start_sshd
from .tools import ToolPaths, controller_python, find_tools, path_without_venv, resolve_controller_tool
from .upstream import (
    DEFAULT_UPSTREAM_PROJECTS,
    Upstream,
    WheelInfo,
    add_unstartable_devpi,
    build_wheel,
    normalize_name,
    rebuild_wheel,
    start_upstream,
    wheels_of_lock,
)

__all__ = [
    "AnsibleDevpi", "install_ansible_devpi", "populate", "write_proxy_block",
    "CADDY_BIN", "CADDY_PLACEHOLDER_BODY", "CI_HINT", "CONTROLLER_FAKES_DIR", "DEBUG_COMMAND_RE",
    "DEFAULT_UPSTREAM_PROJECTS", "E2E_DIR", "HEADLESS_CONSOLE_OWNER", "HOMEBREW_BIN", "LAUNCHCTL_DOUBLE", "LOOPBACK",
    "MAC_LAUNCHCTL", "MAC_SSH_PATH", "UV_INSTALLER_DIR", "install_user_tools", "namespace_argv", "OP_DOUBLE", "PASSTHROUGH_ENV",
    "PYINFRA_BIN", "REMOTE_FAKES_DIR", "REPO", "SSHD_BIN", "SSH_BIN", "SSH_KEYGEN_BIN", "VENV_BIN",
    "CaddyJob", "FakeOp", "HarnessError", "LaunchdDouble", "PyinfraResult", "SshServer", "ToolPaths",
    "Upstream", "WheelInfo",
    "alive", "build_session_env", "build_wheel", "cmdline", "collect_logs", "controller_python",
    "Poller", "count_remote_commands", "cpu_seconds", "fail_missing", "find_tools", "free_port", "http", "http_ok",
    "launchd_shutdown", "listening_addresses", "normalize_name", "path_without_venv", "port_open",
    "proc_memory", "pyinfra_env", "remote_commands", "require_executable", "resolve_controller_tool",
    "run_pyinfra", "simultaneous", "spawn", "sshd_setenv_line", "start_caddy_job", "start_sshd", "start_upstream", "rebuild_wheel", "wheels_of_lock", "add_unstartable_devpi",
    "stop_process", "tail", "wait_for_port", "wait_gone", "wait_until", "write_caddyfile", "write_inventory",
]

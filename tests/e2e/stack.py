"""A deployed devpi behind Caddy, built from the harness parts (see ``harness.py``).

Used by ``test_mirror_behaviour.py`` (with the session fixtures) and by ``bench/`` (with
the same parts started by hand), so both measure the stack the deploy really builds:
the real pyinfra CLI over the private sshd, the launchctl double running devpi and
Caddy, the hermetic upstream as the mirrors' upstream. Importable without pytest
fixtures; nothing here listens anywhere but 127.0.0.1.

* :class:`DeployedStack` / :func:`start_stack`: a home under ``root``, a Caddy job, the
  deploy converged with ``host_data``; ``converge(**overrides)`` reruns it.
* :class:`DevpiApi`: login, mirror indexes, simple pages, concurrent first requests.
* :func:`proc_memory`, :func:`cpu_seconds`: a process's RSS / peak RSS and CPU time.
* :func:`client_env`, :func:`make_venv`, :func:`install`: pip / uv clients with no cache,
  no config and no inherited index settings.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterable

from . import harness
from .harness import LOOPBACK, CaddyJob, LaunchdDouble, PyinfraResult, SshServer, Upstream

ROOT_PASSWORD_ENV = "DEVPI_STACK_ROOT_PASSWORD"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_counter = itertools.count(1)


# --------------------------------------------------------------------------- HTTP


def http(method: str, url: str, *, data: Any = None, headers: dict | None = None, timeout: float = 60):
    """(status, headers, body) without any proxy; never raises on HTTP errors."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, method=method, data=body, headers=dict(headers or {}))
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def links_of(html: bytes | str) -> list[str]:
    parser = _Links()
    parser.feed(html.decode("utf-8", "replace") if isinstance(html, bytes) else html)
    return parser.hrefs


@dataclasses.dataclass
class DevpiApi:
    """devpi's JSON API as root, and simple-page reads through any base URL."""

    url: str
    password: str
    user: str = "root"
    _auth: dict | None = None

    def auth(self) -> dict:
        if self._auth is None:
            status, _, body = http("POST", f"{self.url}/+login", data={"user": self.user, "password": self.password},
                                   headers={"Accept": "application/json"})
            if status != 200:
                raise harness.HarnessError(f"devpi login as {self.user} -> {status}: {body[:300]!r}")
            token = json.loads(body)["result"]["password"]
            self._auth = {"X-Devpi-Auth": base64.b64encode(f"{self.user}:{token}".encode()).decode()}
        return self._auth

    def put_mirror(self, index: str, mirror_url: str, **options: Any) -> str:
        """Create ``root/<index>`` as a mirror of ``mirror_url``; returns ``root/<index>``."""
        config = {"type": "mirror", "mirror_url": mirror_url, **options}
        status, _, body = http("PUT", f"{self.url}/{self.user}/{index}", data=config,
                               headers={"Accept": "application/json", **self.auth()})
        if status not in (200, 201):
            raise harness.HarnessError(f"PUT {self.user}/{index} -> {status}: {body[:300]!r}")
        return f"{self.user}/{index}"

    def new_mirror(self, mirror_url: str, prefix: str = "cold", **options: Any) -> str:
        """A fresh (cold) mirror index with a unique name."""
        return self.put_mirror(f"{prefix}-{os.getpid()}-{next(_counter)}-{int(time.time() * 1000) % 10**8}",
                               mirror_url, **options)

    def index_config(self, index: str) -> dict:
        status, _, body = http("GET", f"{self.url}/{index}", headers={"Accept": "application/json"})
        if status != 200:
            raise harness.HarnessError(f"GET {index} -> {status}")
        return json.loads(body)["result"]


def simple_page(base: str, index: str, project: str, *, timeout: float = 60) -> tuple[int, list[str]]:
    """``GET <base>/<index>/+simple/<project>/``: (status, file links)."""
    status, _, body = http("GET", f"{base}/{index}/+simple/{project}/", headers={"Accept": "text/html"},
                           timeout=timeout)
    return status, links_of(body) if status == 200 else []


def simultaneous(n: int, func) -> list:
    """Call ``func(i)`` from ``n`` threads released at the same moment; results in thread
    order (an exception is returned in its slot, not raised)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = func(i)
        except Exception as error:  # noqa: BLE001 - reported to the caller
            results[i] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --------------------------------------------------------------------------- processes


def proc_memory(pid: int) -> dict[str, int | None]:
    """``rss_kb`` and ``peak_rss_kb`` (Linux VmHWM: the high-water mark since the process
    started; ``None`` where the OS does not keep one, e.g. macOS)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        values = dict(re.findall(r"^(\w+):\s+(\d+) kB$", status.read_text(), re.M))
        return {"rss_kb": int(values["VmRSS"]), "peak_rss_kb": int(values["VmHWM"])}
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True)
    return {"rss_kb": int(out.stdout.strip()), "peak_rss_kb": None}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    out = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True, text=True, check=True)
    parts = [float(p) for p in re.split(r"[:-]", out.stdout.strip())]
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def cmdline(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/cmdline")
    if path.exists():
        return [a for a in path.read_bytes().decode(errors="replace").split("\0") if a]
    out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=True)
    return out.stdout.split()


# --------------------------------------------------------------------------- clients


def client_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The controller's environment minus every uv/pip setting (index URLs, find-links,
    caches, config files), so a client sees only the index it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV"))}
    env.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PIP_CONFIG_FILE": os.devnull})
    env.update(extra or {})
    return env


def make_venv(uv: Path, python: Path, path: Path, *, seed: bool = False) -> Path:
    """A fresh venv (``seed``: with pip in it, for pip clients); returns its python."""
    if path.exists():
        shutil.rmtree(path)
    argv = [str(uv), "venv", "--no-config", "--quiet", "--python", str(python)]
    if seed:
        argv.append("--seed")
    # --seed installs pip from uv's own bundled wheels / cache: never from our indexes
    subprocess.run([*argv, str(path)], check=True, capture_output=True, env=client_env(), timeout=300)
    return path / "bin" / "python"


def install(client: str, uv: Path, venv_python: Path, index_url: str, requirements: Iterable[str],
            *, timeout: float = 600) -> subprocess.CompletedProcess:
    """``uv pip install`` or ``pip install`` with caches off, from ``index_url`` only."""
    reqs = list(requirements)
    if client == "uv":
        argv = [str(uv), "pip", "install", "--no-config", "--no-cache", "--quiet",
                "--python", str(venv_python), "--index-url", index_url, *reqs]
    elif client == "pip":
        argv = [str(venv_python), "-m", "pip", "install", "--no-cache-dir", "--quiet", "--isolated",
                "--index-url", index_url, *reqs]
    else:
        raise ValueError(client)
    return subprocess.run(argv, capture_output=True, text=True, env=client_env(), timeout=timeout)


# --------------------------------------------------------------------------- the deployed stack


@dataclasses.dataclass
class DeployedStack:
    sshd: SshServer
    launchd: LaunchdDouble
    upstream: Upstream
    root: Path
    name: str
    devpi_port: int
    caddy: CaddyJob
    password: str = "stack-root-Pa55"
    host_data: dict = dataclasses.field(default_factory=dict)
    last: PyinfraResult | None = None

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def devpi_home(self) -> Path:
        return self.home / "devpi"

    @property
    def server_dir(self) -> Path:
        return self.devpi_home / "server-dir"

    @property
    def label(self) -> str:
        return f"test.devpi.{self.name}"

    @property
    def caddy_label(self) -> str:
        return f"test.caddy.{self.name}"

    @property
    def site_file(self) -> Path:
        return self.home / ".config/caddy/sites/devpi.caddy"

    @property
    def plist(self) -> Path:
        return self.home / "Library/LaunchAgents" / f"{self.label}.plist"

    @property
    def err_log(self) -> Path:
        return self.home / "Library/Logs" / f"{self.label}.err.log"

    @property
    def devpi_url(self) -> str:
        return f"http://{LOOPBACK}:{self.devpi_port}"

    @property
    def caddy_url(self) -> str:
        return self.caddy.url

    @functools.cached_property
    def api(self) -> DevpiApi:
        """One client per stack: it logs in once (each devpi login costs an argon2
        verification: ~0.1 s of CPU and 64 MiB of memory, see bench/)."""
        return DevpiApi(self.devpi_url, self.password)

    def data(self, **overrides: Any) -> dict:
        home = self.home
        data = {
            "devpi_home": home / "devpi",
            "devpi_log_dir": home / "Library/Logs",
            "devpi_launch_agents_dir": home / "Library/LaunchAgents",
            "devpi_label": self.label,
            "devpi_port": self.devpi_port,
            "devpi_root_password": f"env:{ROOT_PASSWORD_ENV}",
            "devpi_caddy_site_file": self.site_file,
            "devpi_caddy_site_address": self.caddy.url,
            "devpi_caddy_restart": self.caddy_label,
            "devpi_caddy_bin": harness.CADDY_BIN,
        }
        data.update(self.host_data)
        data.update(overrides)
        return data

    def inventory(self, **overrides: Any) -> Path:
        return harness.write_inventory(self.root / "inventory.py", self.data(**overrides), sshd=self.sshd)

    @property
    def env_extra(self) -> dict[str, str]:
        return {ROOT_PASSWORD_ENV: self.password}

    def converge(self, *args: str, check: bool = True, **overrides: Any) -> PyinfraResult:
        """Run the deploy (``deploys/devpi.py``) with the stack's data plus ``overrides``."""
        self.last = harness.run_pyinfra(
            self.inventory(**overrides), "deploys/devpi.py", *args, check=check, env_extra=self.env_extra,
        )
        return self.last

    def pid(self) -> int | None:
        return self.launchd.pid(self.label)

    def wait_healthy(self, timeout: float = 120) -> int:
        """Wait for ``/+api`` = 200; returns devpi's pid."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pid()
            try:
                if pid and harness.http_get(self.devpi_url + "/+api", timeout=2)[0] == 200:
                    return pid
            except OSError:
                pass
            time.sleep(0.05)
        raise harness.HarnessError(f"devpi not healthy after {timeout}s\n{harness.tail(self.err_log)}")

    def wait_caddy(self, timeout: float = 30) -> None:
        """Wait until Caddy answers with the deploy's block (devpi's ``/+api`` through it)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = http("GET", self.caddy_url + "/+api", timeout=2)[0]
                if last == 200:
                    return
            except OSError as error:
                last = error
            time.sleep(0.05)
        raise harness.HarnessError(f"Caddy at {self.caddy_url} did not proxy /+api (last: {last!r})")

    def stop_devpi(self, timeout: float = 30) -> None:
        """``launchctl bootout`` the job and wait until nothing listens on its port."""
        self.launchd.bootout(self.label)
        deadline = time.monotonic() + timeout
        while harness.port_open(self.devpi_port):
            if time.monotonic() > deadline:
                raise harness.HarnessError(f"devpi still listening on {self.devpi_port} after bootout")
            time.sleep(0.05)

    def stop(self) -> None:
        self.launchd.bootout(self.label)
        self.launchd.bootout(self.caddy_label)


def start_stack(sshd: SshServer, launchd: LaunchdDouble, upstream: Upstream, root: Path, name: str,
                converge: bool = True, **host_data: Any) -> DeployedStack:
    """A home under ``root``, Caddy as LaunchAgent ``test.caddy.<name>`` (placeholder site),
    then (unless ``converge=False``) the deploy converged onto it; devpi answers on a free
    loopback port."""
    home = root / "home"
    for sub in ("Library/Logs", "Library/LaunchAgents", ".config/caddy/sites"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    site_file = home / ".config/caddy/sites/devpi.caddy"
    caddy = harness.start_caddy_job(
        launchd, caddyfile=root / "caddy" / "Caddyfile", port=harness.free_port(), site_file=site_file,
        work_dir=root / "caddy", label=f"test.caddy.{name}",
    )
    stack = DeployedStack(sshd=sshd, launchd=launchd, upstream=upstream, root=root, name=name,
                          devpi_port=harness.free_port(), caddy=caddy, host_data=dict(host_data))
    try:
        if converge:
            stack.converge()
    except BaseException:
        stack.stop()
        raise
    return stack

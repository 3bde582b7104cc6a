"""A deployed devpi (behind Caddy), built from the harness parts: the one way the
end-to-end tests and bench/ build a deployed host.

:func:`start_stack` gives a :class:`DeployedStack`: a home under ``root``, optionally a
Caddy LaunchAgent (placeholder site) for the deploy to configure, the ``op`` double for
secrets, the host's inventory data, and (unless ``deploy=False``) the deploy converged
onto it with the real pyinfra CLI over the private sshd; devpi then runs under the
launchctl double on a free loopback port. Used by ``test_scenarios.py``,
``test_users_indexes.py`` and ``test_mirror_behaviour.py`` (with the session fixtures)
and by ``bench/`` (with the same parts started by hand). Importable without pytest
fixtures; nothing here listens anywhere but 127.0.0.1.

The host's data lives in ``stack.data`` (``update(**changes)`` changes it for every later
run); ``deploy(*args, **overrides)`` runs ``deploys/devpi.py`` with ``overrides`` for that
run only, through a one-off inventory that leaves the host's own as it was. A module that
shares one deployed host among its tests calls ``reset()`` between them: the first
converge's data again, converged.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

from tests.deploy_scenarios import HostPaths

from . import devpi_client
from .devpi_client import DevpiApi
from .harness import (
    LOOPBACK,
    CaddyJob,
    FakeOp,
    LaunchdDouble,
    PyinfraResult,
    SshServer,
    Upstream,
    controller_python,
    free_port,
    http_ok,
    port_open,
    run_pyinfra,
    start_caddy_job,
    tail,
    wait_until,
    write_inventory,
)

#: The deploy reads the root password from this variable unless ``devpi_root_password``
#: names another source (an ``op://`` reference is answered by ``stack.op``).
ROOT_PASSWORD_ENV = "DEVPI_STACK_ROOT_PASSWORD"
DEFAULT_PASSWORD = "stack-root-Pa55"
HOME_DIRS = ("Library/Logs", "Library/LaunchAgents", ".config/caddy/sites")


@dataclasses.dataclass
class DeployedStack(HostPaths):
    """One deployed host (see the module docstring); labels ``e2e.<name>.devpi`` and
    ``e2e.<name>.caddy``."""

    sshd: SshServer
    launchd: LaunchdDouble
    upstream: Upstream
    root: Path
    name: str
    op: FakeOp
    #: The host's inventory data (``Path`` values allowed); see :meth:`update`.
    data: dict
    #: The Caddy job the deploy configures, or None (then no Caddy is restarted).
    caddy: CaddyJob | None = None
    #: The data of the first converge: what :meth:`reset` goes back to.
    initial_data: dict = dataclasses.field(default_factory=dict)
    #: Converged with ``data`` and not yet used by a test (set by ``SharedHost.get``):
    #: :meth:`reset` has nothing to do.
    untouched: bool = False

    # -- where things are (the rest: HostPaths)
    @property
    def site_file(self) -> Path:
        return self.home / ".config/caddy/sites/devpi.caddy"

    @property
    def server_log(self) -> Path:
        """devpi's own log (every request), written through its rotating handler."""
        return self.log_dir / f"{self.label}.log"

    @property
    def label(self) -> str:
        return f"e2e.{self.name}.devpi"

    @property
    def caddy_label(self) -> str:
        return f"e2e.{self.name}.caddy"

    @property
    def devpi_port(self) -> int:
        return self.data["devpi_port"]

    @property
    def devpi_url(self) -> str:
        return f"http://{LOOPBACK}:{self.devpi_port}"

    @property
    def caddy_url(self) -> str:
        if self.caddy is None:
            raise AttributeError(f"stack {self.name} runs no Caddy")
        return self.caddy.url

    # -- devpi's users
    @property
    def password(self) -> str:
        """root's password (``op`` answers it for an ``op://`` reference, the environment
        for the default ``env:`` one)."""
        return self.op.password

    @property
    def root_auth(self) -> tuple[str, str]:
        return ("root", self.password)

    @functools.cached_property
    def api(self) -> DevpiApi:
        """One root client per stack: it logs in once."""
        return DevpiApi(self.devpi_url, self.password)

    def state(self) -> dict:
        """devpi's users and indexes (``GET /``)."""
        return devpi_client.state(self.devpi_url)

    def login(self, user: str, password: str) -> int:
        return devpi_client.login(self.devpi_url, user, password)

    # -- inventory and pyinfra
    @property
    def env_extra(self) -> dict[str, str]:
        """The pyinfra controller's extra environment: the ``op`` double and the root
        password variable."""
        return {**self.op.env, ROOT_PASSWORD_ENV: self.password}

    def update(self, **changes: Any) -> None:
        """Change the host's data for every later run (a value of None removes a key)."""
        self.data.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del self.data[key]

    def write_inventory(self, path: Path | None = None, **overrides: Any) -> Path:
        """Write the host's data plus ``overrides`` (None removes a key) as an inventory.
        Without ``path`` and ``overrides`` that is the host's own ``inventory.py``; with
        overrides and no ``path``, a one-off ``inventory-once.py`` (the host's own stays
        as it was)."""
        if path is None:
            path = self.root / ("inventory-once.py" if overrides else "inventory.py")
        data = {k: v for k, v in {**self.data, **overrides}.items() if v is not None}
        return write_inventory(path, data, sshd=self.sshd)

    def pyinfra(self, *args: str, inventory: Path | None = None, check: bool = True) -> PyinfraResult:
        """Run ``pyinfra INVENTORY *args`` (by default the host's own inventory, freshly
        written) with the stack's controller environment."""
        inventory = inventory or self.write_inventory()
        return run_pyinfra(inventory, *args, check=check, env_extra=self.env_extra)

    def deploy(self, *args: str, check: bool = True, **overrides: Any) -> PyinfraResult:
        """Run the deploy (``deploys/devpi.py``) with the host's data plus ``overrides``
        (for this run only)."""
        return self.pyinfra("deploys/devpi.py", *args, inventory=self.write_inventory(**overrides), check=check)

    def fact(self, *args: str) -> Any:
        """``pyinfra INVENTORY fact *args --json``: the one host's value of the one fact."""
        (by_host,) = self.pyinfra("fact", *args, "--json").json().values()
        (value,) = by_host.values()
        return value

    # -- the running job
    def pid(self) -> int | None:
        return self.launchd.pid(self.label)

    def printed(self) -> str:
        """``launchctl print`` of devpi's job."""
        return self.launchd.print(self.label).stdout

    def venv_target(self) -> str:
        """Where the deploy's ``venv`` link points (the active versioned venv)."""
        return os.readlink(self.devpi_home / "venv")

    def api_ok(self, base_url: str | None = None, timeout: float = 5) -> bool:
        """``GET /+api`` answers 200, from devpi or through ``base_url`` (e.g. Caddy)."""
        return http_ok(f"{base_url or self.devpi_url}/+api", timeout=timeout)

    def wait_healthy(self, timeout: float = 120) -> int:
        """Wait for a running job whose ``/+api`` answers 200; returns devpi's pid."""
        return wait_until(lambda: (pid := self.pid()) and self.api_ok(timeout=2) and pid, timeout, 0.05,
                          "devpi to be healthy", detail=lambda: tail(self.err_log))

    def wait_caddy(self, timeout: float = 30) -> None:
        """Wait until Caddy answers with the deploy's block (devpi's ``/+api`` through it)."""
        wait_until(lambda: self.api_ok(self.caddy_url, timeout=2), timeout, 0.05,
                   f"Caddy at {self.caddy_url} to proxy /+api")

    def stop_devpi(self, timeout: float = 30) -> None:
        """``launchctl bootout`` the job and wait until nothing listens on its port."""
        self.launchd.bootout(self.label)
        wait_until(lambda: not port_open(self.devpi_port), timeout, 0.05,
                   f"devpi to stop listening on {self.devpi_port} after bootout")

    def reset(self, **host_data: Any) -> PyinfraResult | None:
        """Back to a converged host as first deployed, for the next test of a module that
        shares it: the host's data as at the first converge (plus ``host_data``), Caddy
        loaded again in the deploy's domain if a test took it away, then the deploy (which
        rewrites what a test changed and brings a stopped devpi back). Nothing to do (None)
        for a host ``untouched`` since it converged with that data."""
        wanted = {**self.initial_data, **host_data}
        if self.untouched and self.data == wanted:
            self.untouched = False
            return None
        self.untouched = False
        self.data = wanted
        if self.caddy is not None and self.launchd.print(self.caddy_label).returncode != 0:
            self.launchd.bootstrap(self.caddy.plist)
        result = self.deploy()
        self.wait_healthy()
        if self.caddy is not None:
            self.wait_caddy()
        return result

    def stop(self) -> None:
        """Boot out devpi's job and the Caddy job."""
        self.launchd.bootout(self.label)
        if self.caddy is not None:
            self.launchd.bootout(self.caddy_label)

    def __enter__(self) -> DeployedStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_stack(
    sshd: SshServer,
    launchd: LaunchdDouble,
    upstream: Upstream,
    root: Path,
    name: str,
    *,
    deploy: bool = True,
    caddy: bool = True,
    password: str = DEFAULT_PASSWORD,
    secrets: dict[str, str] | None = None,
    **host_data: Any,
) -> DeployedStack:
    """A home under ``root`` (a fresh directory); with ``caddy``, Caddy as LaunchAgent
    ``e2e.<name>.caddy`` (placeholder site) for the deploy to configure and restart
    (without, the site address is a free port nobody serves); the ``op`` double answering
    ``password`` (and ``secrets``: reference -> value); the deploy's data for all that,
    then ``host_data``; unless ``deploy=False``, the deploy converged onto it (devpi on a
    free loopback port). Use it as a context manager to stop its jobs."""
    home = root / "home"
    for sub in HOME_DIRS:
        (home / sub).mkdir(parents=True, exist_ok=True)
    stack = DeployedStack(
        sshd=sshd, launchd=launchd, upstream=upstream, root=root, name=name,
        op=FakeOp(log_path=root / "op-calls.jsonl", password=password, secrets=dict(secrets or {})),
        data={},
    )
    if caddy:
        stack.caddy = start_caddy_job(
            launchd, caddyfile=root / "caddy" / "Caddyfile", port=free_port(), site_file=stack.site_file,
            work_dir=root / "caddy", label=stack.caddy_label,
        )
    stack.data = {
        "devpi_home": stack.devpi_home,
        "devpi_log_dir": home / "Library/Logs",
        "devpi_launch_agents_dir": home / "Library/LaunchAgents",
        "devpi_label": stack.label,
        "devpi_port": free_port(),
        "devpi_root_password": f"env:{ROOT_PASSWORD_ENV}",
        "devpi_caddy_site_file": stack.site_file,
        # Caddy's placeholder site (written so Caddy starts) is not the deploy's file.
        "devpi_caddy_adopt_site_file": True,
        "devpi_caddy_site_address": stack.caddy.url if caddy else f"http://{LOOPBACK}:{free_port()}",
        **({"devpi_caddy_restart": stack.caddy_label} if caddy else {}),
        # A Python the test machine has (the controller's): the default, "3.12", is a
        # version uv would download from GitHub, which the sandbox does not reach.
        # uv and Caddy are left for the deploy to find where a Mac keeps them.
        "devpi_python": controller_python(),
        **host_data,
    }
    stack.initial_data = dict(stack.data)
    try:
        if deploy:
            stack.deploy()
    except BaseException:
        stack.stop()
        raise
    return stack


class SharedHost:
    """One deployed host (devpi behind Caddy, the default data) that several modules share
    (the session fixture ``shared_host``): :meth:`get` gives it converged with a module's
    data, so each module pays a reset (usually a config change and a restart), not a
    first converge. A host a module left beyond repair (its reset fails) is stopped and
    a fresh one deployed, so one module's breakage does not fail the next ones."""

    def __init__(self, sshd: SshServer, launchd: LaunchdDouble, upstream: Upstream, root: Path) -> None:
        self.sshd, self.launchd, self.upstream, self.root = sshd, launchd, upstream, root
        self.stack: DeployedStack | None = None
        self.deployed = 0  # first converges so far

    def get(self, **host_data: Any) -> DeployedStack:
        """The host, converged with the default data plus ``host_data``."""
        if self.stack is not None:
            self.stack.untouched = False  # the last module's tests used it
            try:
                self.stack.reset(**host_data)
                self.stack.untouched = True
                return self.stack
            except Exception:
                self.stack.stop()
                self.stack = None
        self.deployed += 1
        stack = start_stack(self.sshd, self.launchd, self.upstream, self.root / f"host-{self.deployed}",
                            f"shared{self.deployed}", deploy=False)
        try:
            stack.reset(**host_data)
        except BaseException:
            stack.stop()
            raise
        stack.untouched = True
        self.stack = stack
        return stack

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()

"""Scenario steps that both end-to-end suites run: tests/e2e (over its sshd, on the
launchctl double) and tests/mac (through ``@local``, on a Mac's real launchd).

Each step takes a deployed host: an object with ``deploy(*args) -> PyinfraResult``,
``pid()`` (devpi's pid as launchd reports it, None when not running), ``printed()``
(``launchctl print`` of devpi's job), ``wait_healthy()`` (-> pid, once ``/+api`` answers
200) and the paths ``devpi_home``, ``server_dir``, ``plist``, ``err_log``, ``site_file``
and ``label`` (``tests/e2e/stack.py``'s ``DeployedStack``, ``tests/mac/local_host.py``'s
``LocalHost``). Nothing here knows how the host is reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.pyinfra_cli import PyinfraResult, remote_commands


class HostPaths:
    """Where a deployed host keeps things, for a host object with ``root`` (its temporary
    home's parent) and ``label``: the deploy's paths under the home the tests give it."""

    root: Path
    label: str

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
    def log_dir(self) -> Path:
        return self.home / "Library/Logs"

    @property
    def err_log(self) -> Path:
        return self.log_dir / f"{self.label}.err.log"

    @property
    def plist(self) -> Path:
        return self.home / "Library/LaunchAgents" / f"{self.label}.plist"


def first_converge(host) -> tuple[PyinfraResult, int]:
    """The deploy on a host that has nothing yet: devpi's job loaded from the deploy's plist,
    running and answering ``GET /+api`` with 200. Returns the run and devpi's pid."""
    result = host.deploy()
    pid = host.wait_healthy()
    printed = host.printed()
    assert f"path = {host.plist}" in printed, printed
    assert "state = running" in printed and f"pid = {pid}" in printed, printed
    return result, pid


def no_change_rerun(host, rerun: Callable[[], PyinfraResult] | None = None) -> PyinfraResult:
    """A rerun with nothing to change: no change reported, two commands on the host (the
    login session, whose home and launchd domain shape the config, then every fact the
    plan reads, batched into one), and devpi still the same process. ``rerun``: the
    ``--debug`` deploy run, if the caller measures more around it."""
    pid = host.pid()
    assert pid, host.printed()
    result = rerun() if rerun is not None else host.deploy("--debug")
    changed, unchanged = result.grand_total()
    # an operation that ran any command counts as changed: so every command was a fact
    assert changed == 0 and unchanged >= 7, result.describe()
    commands = remote_commands(result.output)
    assert len(commands) == 2, commands
    assert result.output.count("Getting fact: facts.batch.FactBatch") == 1
    assert host.pid() == pid
    return result


def purged_paths(host) -> list[Path]:
    """What ``devpi_uninstall_purge`` removes: devpi's data, venvs, config, secret, logs
    and plist."""
    logs = Path(host.err_log).parent
    home = Path(host.devpi_home)
    return [
        Path(host.server_dir), home / "venv", home / "venvs", home / "devpi-server.yml", home / "secret",
        Path(host.err_log), logs / f"{host.label}.out.log", logs / f"{host.label}.log", Path(host.plist),
    ]


def check_purged(host, result: PyinfraResult) -> None:
    """After an uninstall with ``devpi_uninstall_purge``: every purged path is gone, devpi
    does not run, and Caddy's site file says devpi was uninstalled."""
    assert result.ok, result.describe()
    left = [path for path in purged_paths(host) if path.exists() or path.is_symlink()]
    assert left == [], result.describe()
    assert host.pid() is None
    assert "devpi was uninstalled" in Path(host.site_file).read_text()

"""The restore's swap and rollback (issue 23): ``operations/restore_swap.sh`` run for
real in each shell, with the real dir swap (``restore.SWAP``) and stand-ins for
launchd's bootout / bootstrap and the health gate that log what ran. A restored dir
that does not come up is swapped back out: the previous dir is live again, devpi is
started on it and waited for, and the run fails naming what failed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import operations.restore as restore
from pyinfra_devpi import layout, shell_script
from pyinfra_devpi.config import build_config

from .prepared import SHELLS


class Host:
    def __init__(self, root: Path):
        self.root = root
        self.live = root / "server-dir"
        self.new = root / ("server-dir" + layout.RESTORING_SUFFIX)
        self.log = root / "launchd.log"
        for path, which in ((self.live, "previous"), (self.new, "restored")):
            path.mkdir()
            (path / "which").write_text(which)

    def healthy(self, which: Path) -> None:
        (which / "healthy").write_text("")

    def script(self, loaded: bool = True, start_fails: int = 0, gate_takes: float = 0) -> str:
        log = str(self.log)
        # the start fails its first ``start_fails`` times (a counter file)
        start = (f"n=$(cat {self.root}/starts 2>/dev/null || echo 0); echo $((n + 1)) > {self.root}/starts; "
                 f"printf 'start\\n' >> {log}; [ \"$n\" -ge {start_fails} ]")
        return shell_script.render(
            restore.__file__, "restore_swap", "swap",
            new=str(self.new), live=str(self.live),
            keep_prefix=str(self.live) + layout.BEFORE_RESTORE_SUFFIX,
            failed_prefix=str(self.live) + layout.FAILED_RESTORE_SUFFIX,
            python=sys.executable, swap_py=restore.SWAP, loaded=loaded,
            stop=f"printf 'stop\\n' >> {log}", start=start,
            gate=f"printf 'gate\\n' >> {log}; sleep {gate_takes}; [ -e {self.live}/healthy ]",
        )

    def run(self, shell: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([shell, "-c", self.script(**kwargs)], capture_output=True, text=True, timeout=60)

    def ran(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def kept(self, suffix: str) -> list[str]:
        return [(p / "which").read_text() for p in self.root.glob("server-dir" + suffix + "*")]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_healthy_restore_keeps_the_previous_dir(shell, tmp_path):
    host = Host(tmp_path)
    host.healthy(host.new)
    result = host.run(shell)
    assert result.returncode == 0, result.stderr
    assert host.ran() == ["stop", "start", "gate"]
    assert (host.live / "which").read_text() == "restored"
    assert host.kept(layout.BEFORE_RESTORE_SUFFIX) == ["previous"] and not host.new.exists()
    # a job that was not loaded is not booted out first
    (tmp_path / "b").mkdir()
    host2 = Host(tmp_path / "b")
    host2.healthy(host2.new)
    assert host2.run(shell, loaded=False).returncode == 0 and host2.ran() == ["start", "gate"]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_restored_dir_that_fails_the_health_gate_is_rolled_back(shell, tmp_path):
    host = Host(tmp_path)
    host.healthy(host.live)  # the previous dir comes up; the restored one does not
    result = host.run(shell)
    assert result.returncode == 1
    assert host.ran() == ["stop", "start", "gate", "stop", "start", "gate"]
    assert (host.live / "which").read_text() == "previous"
    assert host.kept(layout.FAILED_RESTORE_SUFFIX) == ["restored"]
    assert host.kept(layout.BEFORE_RESTORE_SUFFIX) == [] and not host.new.exists()
    assert "the restore failed: devpi on the restored server dir did not pass the health gate" in result.stderr
    assert f"rolled back: devpi answers again from the previous server dir {host.live}" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_a_restored_dir_devpi_cannot_start_on_is_rolled_back(shell, tmp_path):
    host = Host(tmp_path)
    host.healthy(host.live)
    result = host.run(shell, start_fails=1)
    assert result.returncode == 1
    assert host.ran() == ["stop", "start", "stop", "start", "gate"]
    assert (host.live / "which").read_text() == "previous"
    assert "could not be started (launchctl bootstrap failed)" in result.stderr and "rolled back" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_a_rollback_that_does_not_come_up_either_says_so(shell, tmp_path):
    host = Host(tmp_path)
    result = host.run(shell)  # neither dir is healthy
    assert result.returncode == 1
    assert (host.live / "which").read_text() == "previous"
    assert "the rollback did not bring devpi back either" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_a_swap_that_fails_starts_devpi_on_the_dir_it_had(shell, tmp_path):
    host = Host(tmp_path)
    host.healthy(host.live)
    (host.new / "which").unlink()
    host.new.rmdir()  # nothing to swap in
    result = host.run(shell)
    assert result.returncode == 1
    assert host.ran() == ["stop", "start", "gate"]
    assert (host.live / "which").read_text() == "previous" and host.kept(layout.BEFORE_RESTORE_SUFFIX) == []
    assert "could not be swapped in" in result.stderr


def test_the_deploy_renders_it_with_launchd_and_the_health_gate():
    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/alice")
    swap = restore.swap_command(config, "gui/501", loaded=True)
    assert "launchctl bootout gui/501/net.devpi" in swap
    assert "launchctl bootstrap gui/501 /Users/alice/Library/LaunchAgents/net.devpi.plist" in swap
    assert "http://127.0.0.1:3141/+api" in swap  # the gate
    assert f"failed_prefix=/Users/alice/devpi/server-dir{layout.FAILED_RESTORE_SUFFIX}" in swap


@pytest.mark.parametrize("shell", SHELLS)
def test_a_controller_that_goes_away_does_not_stop_the_rollback_halfway(shell, tmp_path):
    # The SSH session is gone while the restored dir is being waited for: the script is
    # hung up on and its output goes nowhere; it still puts the previous dir back.
    host = Host(tmp_path)
    host.healthy(host.live)
    proc = subprocess.Popen([shell, "-c", host.script(gate_takes=0.5)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while "gate" not in host.ran() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.stdout.close()
        proc.stderr.close()
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=60) == 1
    finally:
        proc.kill()
    assert host.ran() == ["stop", "start", "gate", "stop", "start", "gate"]
    assert (host.live / "which").read_text() == "previous"
    assert host.kept(layout.FAILED_RESTORE_SUFFIX) == ["restored"]

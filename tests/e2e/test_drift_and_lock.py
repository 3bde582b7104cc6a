"""
The plist on disk and the job launchd loaded drifting apart, and two deploys at once.

Drift (one deployed stack for the module, tests in file order): a run stopped between
writing the plist and reloading the job (simulated by writing the new plist by hand
while the old definition stays loaded), a plist made world-writable and the job booted
out (launchd refuses such a plist), a job loaded from another copy of the plist. Each
rerun must leave launchd running the rendered definition, from the deploy's plist.

The deploy lock: two pyinfra processes deploying a fresh host at once (both end well:
one converges, the other waits or stops saying why; one venv, healthy, converged); a
lock held by a live process stops the run with its owner and how to remove it, and is
taken over once that process is gone; a failed run releases it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyinfra_devpi.config import build_config
from pyinfra_devpi.render import render_plist

from . import harness
from .harness import simultaneous
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_host) -> DeployedStack:
    return shared_host.get()


@pytest.fixture(autouse=True)
def _show_stack_logs(request, e2e_log_dirs):
    if "stack" in request.fixturenames:
        e2e_log_dirs.append(request.getfixturevalue("stack").root)


def rendered_plist(stack: DeployedStack, **overrides) -> str:
    """The plist the deploy renders for the stack's data plus ``overrides``."""
    data = {k: str(v) if isinstance(v, Path) else v for k, v in {**stack.data, **overrides}.items()}
    return render_plist(build_config(data, str(stack.home)))


def printed(stack: DeployedStack) -> str:
    return stack.launchd.print(stack.label).stdout


def test_a_plist_written_but_never_loaded_is_loaded_by_the_next_run(stack):
    pid = stack.wait_healthy()
    new = {"devpi_out_log": "renamed.out.log", "devpi_err_log": "renamed.err.log"}
    # The run that was stopped: the new plist is in place, the old job still loaded.
    stack.plist.write_text(rendered_plist(stack, **new))
    stack.plist.chmod(0o644)
    before = printed(stack)
    assert "renamed.out.log" not in before and f"pid = {pid}" in before

    stack.update(**new)
    result = stack.deploy("-vv")
    after = printed(stack)
    logs = stack.home / "Library/Logs"
    assert f"stdout path = {logs}/renamed.out.log" in after, result.describe()
    assert f"stderr path = {logs}/renamed.err.log" in after
    assert f"path = {stack.plist}" in after
    assert stack.wait_healthy() != pid
    assert "runs another definition than" in result.output
    assert "launchctl bootout" in result.output and "launchctl bootstrap" in result.output


def test_a_writable_plist_refused_by_launchd_is_fixed_and_loaded(stack):
    stack.plist.chmod(0o666)
    stack.stop_devpi()
    assert stack.launchd.print(stack.label).returncode == 113
    refused = stack.launchd.run("bootstrap", stack.launchd.domain, str(stack.plist), check=False)
    assert refused.returncode != 0  # launchd refuses a group/world-writable plist

    stack.deploy()
    assert stack.plist.stat().st_mode & 0o777 == 0o644
    assert "state = running" in printed(stack)
    stack.wait_healthy()


def test_a_job_loaded_from_another_copy_is_reloaded_from_the_deploys_plist(stack, tmp_path):
    copy = tmp_path / f"{stack.label}.plist"
    copy.write_text(stack.plist.read_text())
    copy.chmod(0o644)
    stack.stop_devpi()
    stack.launchd.bootstrap(copy)
    assert f"path = {copy}" in printed(stack)

    stack.deploy()
    assert f"path = {stack.plist}" in printed(stack)
    stack.wait_healthy()


def test_a_converged_host_is_no_drift(stack):
    pid = stack.wait_healthy()
    rerun = stack.deploy("--debug")
    assert harness.count_remote_commands(rerun.output) == 2
    assert stack.pid() == pid


# --------------------------------------------------------------------------- the deploy lock


LOCK_STOPS = ("changed this host after this run read it", "is held by another deploy")


def test_two_deploys_at_once_on_a_fresh_host_both_end_well(sshd, launchd, upstream, tmp_path, e2e_log_dirs):
    fresh = start_stack(sshd, launchd, upstream, tmp_path / "two", "two", deploy=False)
    e2e_log_dirs.append(fresh.root)
    try:
        inventory = fresh.write_inventory()
        runs = simultaneous(2, lambda i: harness.run_pyinfra(
            inventory, "deploys/devpi.py", check=False, env_extra=fresh.env_extra))
        described = "\n\n".join(r.describe() if hasattr(r, "describe") else repr(r) for r in runs)
        assert all(hasattr(r, "returncode") for r in runs), described
        winners = [r for r in runs if r.returncode == 0]
        assert winners, described
        for result in runs:
            if result.returncode != 0:  # it stopped before changing anything, saying why
                assert any(why in result.output for why in LOCK_STOPS), described
                assert "Traceback" not in result.output

        # the service is healthy, from the one venv that was built, and nothing is locked
        fresh.wait_healthy()
        venvs = sorted(p for p in (fresh.devpi_home / "venvs").iterdir() if p.is_dir())
        assert len(venvs) == 1, venvs
        assert Path(os.path.realpath(fresh.devpi_home / "venv")) == venvs[0].resolve()
        assert not list((fresh.devpi_home / "venvs").glob("*.building"))
        assert not (fresh.devpi_home / ".pyinfra-deploy.lock").exists()
        # and converged: a rerun changes nothing
        rerun = fresh.deploy("--debug")
        assert harness.count_remote_commands(rerun.output) == 2
    finally:
        fresh.stop()


def lock_owner_text(pid: int, run: str = "run-by-hand") -> str:
    started = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return (f"run={run}\npid={pid}\nstarted={started}\nhost={os.uname().nodename}\n"
            f"since=2026-11-30 10:00:00 UTC\nby=someone@elsewhere (pyinfra pid 1)\n")


def test_a_held_lock_stops_the_run_with_the_owner_and_a_stale_one_is_taken_over(stack):
    lock = stack.devpi_home / ".pyinfra-deploy.lock"
    owner = subprocess.Popen(["sleep", "600"])  # another deploy's connection, still alive
    try:
        lock.mkdir()
        (lock / "owner").write_text(lock_owner_text(owner.pid))
        pid = stack.pid()
        result = stack.deploy(check=False, devpi_lock_wait=2, devpi_throttle_interval=3)
        assert result.returncode != 0
        assert f"{lock} is held by another deploy (run run-by-hand by someone@elsewhere" in result.output
        assert f"its process {owner.pid} on {os.uname().nodename}" in result.output
        assert f"rm -r {lock}" in result.output
        assert "Traceback" not in result.output
        assert stack.pid() == pid and "<integer>3</integer>" not in stack.plist.read_text()
    finally:
        owner.kill()
        owner.wait()
    # its process is gone: the lock is stale, and the next run takes it over
    result = stack.deploy("-v", devpi_throttle_interval=3)
    assert "took over the stale deploy lock" in result.output or "no longer running" in result.output
    assert "<integer>3</integer>" in stack.plist.read_text()
    assert not lock.exists()
    stack.wait_healthy()


def test_a_failed_run_releases_the_lock(stack):
    result = stack.deploy(check=False, devpi_server_version="99.0.0")
    assert result.returncode != 0 and "devpi-server==99.0.0" in result.output
    assert not (stack.devpi_home / ".pyinfra-deploy.lock").exists()
    assert (stack.devpi_home / ".pyinfra-deploy.serial").exists()  # it was taken
    stack.wait_healthy()

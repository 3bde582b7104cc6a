"""
The plist on disk and the job launchd loaded drifting apart, and two deploys at once.

Drift (one deployed stack for the module, tests in file order): a run stopped between
writing the plist and reloading the job (simulated by writing the new plist by hand
while the old definition stays loaded), a plist made world-writable and the job booted
out (launchd refuses such a plist), a job loaded from another copy of the plist. Each
rerun must leave launchd running the rendered definition, from the deploy's plist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pyinfra_devpi.config import build_config
from pyinfra_devpi.render import render_plist

from . import harness
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(sshd, launchd, upstream, tmp_path_factory) -> DeployedStack:
    deployed = start_stack(sshd, launchd, upstream, tmp_path_factory.mktemp("drift-stack"), "drift")
    try:
        yield deployed
    finally:
        deployed.stop()


@pytest.fixture(autouse=True)
def _show_stack_logs(request, e2e_log_dirs):
    if "stack" in request.fixturenames:
        e2e_log_dirs.append(request.getfixturevalue("stack").root)


def rendered_plist(stack: DeployedStack, **overrides) -> str:
    """The plist the deploy renders for the stack's data plus ``overrides``."""
    data = {k: str(v) if isinstance(v, Path) else v for k, v in stack.data(**overrides).items()}
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

    stack.host_data.update(new)
    result = stack.converge("-vv")
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

    stack.converge()
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

    stack.converge()
    assert f"path = {stack.plist}" in printed(stack)
    stack.wait_healthy()


def test_a_converged_host_is_no_drift(stack):
    pid = stack.wait_healthy()
    rerun = stack.converge("--debug")
    assert harness.count_remote_commands(rerun.output) == 2
    assert stack.pid() == pid

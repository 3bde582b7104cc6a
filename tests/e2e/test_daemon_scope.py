"""``devpi_launchd_scope = "daemon"``: devpi as a LaunchDaemon (the system domain) run as
the SSH user, installed through ``sudo -n`` by an SSH user who is not root but has
passwordless sudo (indri's admin user), and the switch between the two scopes in both
directions on the same data.

The SSH user here is a throwaway account (``harness/other_user.py``) with its own sshd
(the session's sshd logs in as the harness's own user, root). The LaunchDaemons dir is
a root-owned dir of the run's (``devpi_launch_daemons_dir``), so the user can write it
only through sudo, as on a Mac; the double refuses the system domain to anyone but root.
The tests run in order on one host.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .harness import LaunchdDouble, build_session_env, launchd_shutdown, remote_commands, start_sshd
from .harness.other_user import OtherUser, make_other_user
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e

# A Python the other user can run (the controller's is in root's home).
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def admin() -> OtherUser:
    user = make_other_user()
    try:
        yield user
    finally:
        user.remove()


@pytest.fixture(scope="module")
def admin_host(admin: OtherUser, tools):
    """An sshd that logs in as ``admin``, its launchctl double's state dir (the user's),
    and the root-owned LaunchDaemons dir."""
    area = admin.area
    state, cache = area / "launchd", area / "uv-cache"
    for directory in (state, cache):
        directory.mkdir()
        admin.own(directory)
    daemons = area / "LaunchDaemons"
    daemons.mkdir(mode=0o755)  # root's, as /Library/LaunchDaemons is
    env = build_session_env(tools, launchd_state=state, home=admin.home, extra={"UV_CACHE_DIR": str(cache)})
    sshd = start_sshd(area / "sshd", tools, env, user=admin.name)
    try:
        yield sshd, LaunchdDouble(state_dir=state, sshd=sshd), daemons
    finally:
        sshd.stop()
        launchd_shutdown(env)


@pytest.fixture(scope="module")
def stack(admin: OtherUser, admin_host, upstream) -> DeployedStack:
    sshd, launchd, daemons = admin_host
    deployed = start_stack(sshd, launchd, upstream, admin.area / "stack", "daemon", deploy=False, caddy=False,
                           devpi_python=SYSTEM_PYTHON, devpi_launchd_scope="daemon",
                           devpi_launch_daemons_dir=daemons, devpi_backup={"hour": 3, "minute": 17})
    admin.own(deployed.root)
    deployed.daemons = daemons
    with deployed:
        yield deployed


@pytest.fixture(autouse=True)
def _show_stack_logs(request, e2e_log_dirs):
    if "stack" in request.fixturenames:
        e2e_log_dirs.append(request.getfixturevalue("stack").root)


def system_print(stack: DeployedStack, label: str | None = None):
    return stack.launchd.run("print", f"system/{label or stack.label}", check=False)


def system_pid(stack: DeployedStack) -> int | None:
    printed = system_print(stack)
    match = re.search(r"^\s*pid = (\d+)", printed.stdout, re.M)
    return int(match.group(1)) if printed.returncode == 0 and match else None


def uid_of(pid: int) -> int:
    """The real uid of a process (``Uid:`` in /proc: real, effective, saved, fs)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def uuid_of(stack: DeployedStack) -> str:
    return json.loads((stack.server_dir / ".nodeinfo").read_text())["uuid"]


def daemon_plist(stack: DeployedStack) -> Path:
    return stack.daemons / f"{stack.label}.plist"


def backup_label(stack: DeployedStack) -> str:
    return f"{stack.label}.backup"


def assert_runs_as_daemon(stack: DeployedStack, admin: OtherUser) -> int:
    printed = system_print(stack)
    assert printed.returncode == 0, printed.stderr
    assert "\ttype = LaunchDaemon" in printed.stdout and f"\tusername = {admin.name}" in printed.stdout
    pid = system_pid(stack)
    assert pid is not None and uid_of(pid) == admin.uid  # devpi runs as the SSH user, not root
    plist = daemon_plist(stack).stat()
    assert (plist.st_uid, plist.st_gid, plist.st_mode & 0o7777) == (0, 0, 0o644)
    assert stack.launchd.print(stack.label).returncode != 0  # no LaunchAgent beside it
    assert not stack.plist.exists()
    assert stack.api_ok()
    # The backup job follows the scope: a LaunchDaemon too, run as the same user.
    backup = system_print(stack, backup_label(stack))
    assert backup.returncode == 0 and f"\tusername = {admin.name}" in backup.stdout, backup.stderr
    assert (stack.daemons / f"{backup_label(stack)}.plist").stat().st_uid == 0
    assert stack.launchd.print(backup_label(stack)).returncode != 0
    return pid


def test_1_the_daemon_converges_as_the_ssh_user_and_a_rerun_changes_nothing(stack, admin):
    result = stack.deploy()
    assert result.ok, result.describe()
    pid = assert_runs_as_daemon(stack, admin)
    # launchd (root) opened the logs: the deploy made them the user's first.
    for log in (stack.err_log, stack.err_log.with_name(f"{stack.label}.out.log")):
        assert log.stat().st_uid == admin.uid, log

    mark = stack.sshd.mark()
    again = stack.deploy("--debug")
    changed, _ = again.grand_total()
    assert changed == 0, again.describe()
    commands = remote_commands(again.output)
    assert len(commands) == 2, commands  # the session, then one fact batch: no sudo at all
    assert stack.sshd.commands_since(mark) == 2
    assert system_pid(stack) == pid

    status = stack.pyinfra("deploys/status.py")
    assert f"system/{stack.label}: running, pid {pid}" in status.output, status.describe()


def test_2_switching_back_to_the_agent_leaves_no_daemon(stack, admin):
    uuid = uuid_of(stack)
    stack.update(devpi_launchd_scope="agent")
    result = stack.deploy()
    assert result.ok, result.describe()
    assert system_print(stack).returncode == 113  # booted out of the system domain
    assert not daemon_plist(stack).exists()
    pid = stack.wait_healthy()
    assert stack.launchd.domain == f"user/{admin.uid}"  # not logged in at the console
    assert uid_of(pid) == admin.uid
    assert stack.plist.exists() and stack.plist.stat().st_uid == admin.uid
    assert uuid_of(stack) == uuid
    # the backup job moved with it
    assert system_print(stack, backup_label(stack)).returncode == 113
    assert not (stack.daemons / f"{backup_label(stack)}.plist").exists()
    assert stack.launchd.print(backup_label(stack)).returncode == 0
    assert stack.deploy().grand_total()[0] == 0


def test_3_without_passwordless_sudo_the_daemon_is_refused_before_any_change(stack, admin):
    pid = stack.pid()
    admin.sudoers(passwordless=False)
    try:
        result = stack.deploy(check=False, devpi_launchd_scope="daemon")
    finally:
        admin.sudoers()
    assert not result.ok
    assert "is not ready for devpi; nothing was changed" in result.output, result.describe()
    assert "sudo: devpi_launchd_scope = 'daemon' installs a LaunchDaemon" in result.output
    assert "`sudo -n true` failed (sudo: a password is required)" in result.output
    assert f"{admin.name} ALL=(root) NOPASSWD: ALL" in result.output
    assert stack.pid() == pid and not daemon_plist(stack).exists()
    assert system_print(stack).returncode == 113


def test_4_switching_the_agent_to_the_daemon_retires_it_first(stack, admin):
    uuid = uuid_of(stack)
    stack.update(devpi_launchd_scope="daemon")
    dry = stack.deploy("--dry", "--diff")
    assert dry.ok, dry.describe()
    # The plan shows the plist and the root steps, and changes nothing.
    assert f"<string>{admin.name}</string>" in dry.output and "<key>UserName</key>" in dry.output
    assert "sudo -n launchctl bootstrap system" in dry.output
    assert f"sudo -n chown 0:0 {daemon_plist(stack)}.pyinfra-new" in dry.output
    assert stack.password not in dry.output
    assert stack.pid() is not None and not daemon_plist(stack).exists()

    result = stack.deploy()
    assert result.ok, result.describe()
    assert stack.launchd.print(stack.label).returncode != 0  # the LaunchAgent is gone
    assert not stack.plist.exists()
    assert_runs_as_daemon(stack, admin)
    assert uuid_of(stack) == uuid


def test_5_the_uninstall_takes_the_daemon_off(stack):
    uninstall = stack.pyinfra("deploys/devpi_uninstall.py")
    assert uninstall.ok, uninstall.describe()
    assert system_print(stack).returncode == 113
    assert not daemon_plist(stack).exists()
    assert system_print(stack, backup_label(stack)).returncode == 113
    assert list(stack.daemons.iterdir()) == []
    assert (stack.server_dir / ".nodeinfo").exists()  # the data stays

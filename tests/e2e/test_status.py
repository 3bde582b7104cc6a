"""``deploys/status.py``: devpi's state in one remote command, changing nothing, reading
no secret, failing the run when devpi is not serving (a monitoring check)."""

from __future__ import annotations

import json

import pytest

from .harness import wait_until
from .stack import DeployedStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_host) -> DeployedStack:
    # A short throttle: a crash-looping job is respawned every 2 s.
    return shared_host.get(devpi_throttle_interval=2)


@pytest.fixture(autouse=True)
def _show_stack_logs(request, e2e_log_dirs):
    if "stack" in request.fixturenames:
        e2e_log_dirs.append(request.getfixturevalue("stack").root)


def status(stack: DeployedStack, *args: str, inventory=None):
    """``pyinfra -y INVENTORY deploys/status.py --data devpi_status_format=json``: (result, report).
    No secret is reachable: the run gets neither the root password variable nor ``op``."""
    result = stack.pyinfra("deploys/status.py", "--data", "devpi_status_format=json", *args, check=False,
                           inventory=inventory)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.describe()  # stdout holds the report and nothing else
    return result, json.loads(lines[0])


def test_a_healthy_devpi_in_one_round_trip(stack, sshd):
    pid = stack.wait_healthy()
    uuid = json.loads((stack.server_dir / ".nodeinfo").read_text())["uuid"]
    before = {p: p.stat().st_mtime_ns for p in (stack.plist, stack.site_file, stack.devpi_home / "devpi-server.yml")}
    mark = sshd.mark()
    result, report = status(stack)
    assert sshd.commands_since(mark) == 1, result.describe()  # one remote command: the fact batch
    assert result.returncode == 0, result.describe()
    assert stack.op.calls() == []  # no secret read

    assert report["host"] == "127.0.0.1" and report["healthy"] is True and report["problems"] == []
    sections = report["sections"]
    assert sections["versions"]["pinned"] == {"devpi-server": "6.20.3", "devpi-web": "5.1.1"}
    assert sections["versions"]["installed"]["devpi-server"] == "6.20.3"
    assert sections["versions"]["installed"]["devpi-web"] == "5.1.1"
    job = sections["launchd"]
    assert (job["loaded"], job["state"], job["pid"], job["label"]) == (True, "running", pid, stack.label)
    assert job["domain"] == stack.launchd.domain and job["runs"] >= 1
    http = sections["http"]
    assert (http["api_status"], http["uuid"], http["server_dir_uuid"]) == (200, uuid, uuid)
    assert http["running_version"] == "6.20.3"
    assert isinstance(http["serial"], int) and http["event_queue"] >= 0
    assert sections["disk"]["files_dir"] == str(stack.server_dir / "+files")
    assert sections["caddy"] == {"site_file": str(stack.site_file), "exists": True, "as_deployed": True,
                                 "restart_pending": False}
    assert sections["prewarm"]["configured"] is False
    assert sections["logs"]["err_log"]["path"] == str(stack.err_log)
    assert sections["logs"]["log"]["path"].endswith(f"{stack.label}.log")
    # it changed nothing
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert stack.pid() == pid

    # The table, for people: the default
    table = stack.pyinfra("deploys/status.py")
    assert table.stdout.startswith("devpi on 127.0.0.1: healthy"), table.describe()
    assert f"pid {pid}" in table.stdout and "as the deploy writes it" in table.stdout


def test_a_changed_caddy_block_is_a_warning_not_a_failure(stack):
    stack.wait_healthy()
    original = stack.site_file.read_text()
    stack.site_file.write_text(original + "# edited by hand\n")
    try:
        result, report = status(stack)
        assert result.returncode == 0 and report["healthy"] is True
        assert report["sections"]["caddy"]["as_deployed"] is False
        assert any("differs from what the deploy writes" in w for w in report["warnings"])
    finally:
        stack.site_file.write_text(original)


def test_a_stopped_job_fails_the_check(stack):
    stack.wait_healthy()
    stack.stop_devpi()
    try:
        result, report = status(stack)
        assert result.returncode != 0
        assert "unhealthy" in result.stderr and "is not loaded" in result.stderr
        assert report["healthy"] is False
        assert report["sections"]["launchd"]["loaded"] is False
        assert report["sections"]["http"]["api_status"] is None
        assert any("is not loaded (stopped)" in p for p in report["problems"])
        assert any("nothing answers" in p for p in report["problems"])
    finally:
        stack.deploy()
    assert status(stack)[0].returncode == 0


def test_a_crash_looping_job_fails_the_check_with_its_exit_and_error(stack):
    stack.wait_healthy()
    config = stack.devpi_home / "devpi-server.yml"
    original = config.read_text()
    # devpi refuses the option at start-up (argparse: exit 2), so launchd respawns it
    config.write_text(original.replace(f"port: {stack.devpi_port}", "port: not-a-port"))
    try:
        stack.launchd.kickstart(stack.label)
        wait_until(lambda: (stack.launchd.print(stack.label).stdout.count("last exit code = 2") and
                            _runs(stack) >= 3), 60, 0.2, "devpi to crash three times")
        result, report = status(stack)
        assert result.returncode != 0, result.describe()
        assert report["healthy"] is False
        job = report["sections"]["launchd"]
        assert job["loaded"] is True and job["last_exit_code"] == 2 and job["runs"] >= 3
        assert report["sections"]["http"]["api_status"] is None
        assert "invalid int value" in "\n".join(report["sections"]["logs"]["err_log"]["last_lines"])
        assert any("nothing answers" in p for p in report["problems"])
    finally:
        stack.deploy()  # the config differs from the deploy's: rewritten, devpi restarted and waited for
    assert status(stack)[0].returncode == 0


def _runs(stack: DeployedStack) -> int:
    for line in stack.launchd.print(stack.label).stdout.splitlines():
        if line.strip().startswith("runs = "):
            return int(line.split("=")[1])
    return 0


# Scheduled backups and a declared user: the deploy then owns a backup status record and
# a record of the users' password references (the root password's variable serves both).
DAMAGE_DATA = {"devpi_backup": {"hour": 3, "minute": 17, "keep": 2},
               "devpi_users": {"damage-e2e": {"password": "env:DEVPI_STACK_ROOT_PASSWORD"}}}


def test_damaged_files_of_the_deploy_are_reported_and_replaced(stack):
    """A truncated plist, and a byte that is not UTF-8 in the users' record, the backup
    status record and the Caddy block: the status names each and reports the rest; the
    deploy says what is wrong with each and replaces it; then nothing is damaged."""
    stack.wait_healthy()
    inventory = stack.write_inventory(stack.root / "inventory-damage.py", **DAMAGE_DATA)
    stack.pyinfra("deploys/devpi.py", inventory=inventory)
    users_state = stack.devpi_home / "users.pyinfra.json"
    backup_status = stack.devpi_home / "backup.status.json"
    assert json.loads(users_state.read_text())["users"]["damage-e2e"]
    plist_text = stack.plist.read_text()
    stack.plist.write_text(plist_text[: len(plist_text) // 2])
    users_state.write_bytes(users_state.read_bytes().replace(b"damage-e2e", b"damage-\xffe2e"))
    backup_status.write_bytes(b'{"last_success": {"name": "devpi-backup-\x80"}}\n')
    block = stack.site_file.read_bytes()
    stack.site_file.write_bytes(block.replace(b"reverse_proxy", b"reverse_\xe9proxy", 1))
    try:
        result, report = status(stack, inventory=inventory)
        assert result.returncode == 0 and report["healthy"] is True, result.describe()
        warnings = "\n".join(report["warnings"])
        assert f"{stack.site_file} is damaged (not UTF-8 text (byte 0xe9 at offset" in warnings
        assert f"{backup_status} is damaged (not UTF-8 text (byte 0x80 at offset 40)): the last" in warnings
        assert report["sections"]["http"]["api_status"] == 200 and report["sections"]["launchd"]["state"] == "running"

        deployed = stack.pyinfra("deploys/devpi.py", inventory=inventory)
        assert f"{stack.plist} is damaged (not a plist" in deployed.output, deployed.describe()
        assert f"{stack.site_file} is damaged (not UTF-8 text (byte 0xe9" in deployed.output
        assert f"{backup_status} is damaged (not UTF-8 text (byte 0x80 at offset 40)): replacing it" in deployed.output
        assert f"{users_state} is damaged (not UTF-8 text (byte 0xff" in deployed.output
        assert stack.plist.read_text() == plist_text and stack.site_file.read_bytes() == block
        assert json.loads(backup_status.read_text()) == {}
        assert json.loads(users_state.read_text())["users"]["damage-e2e"]
        stack.wait_healthy()
        result, report = status(stack, inventory=inventory)
        assert result.returncode == 0 and not any("damaged" in w for w in report["warnings"]), result.describe()
        # What the run wrote is final: a rerun changes nothing.
        rerun = stack.pyinfra("deploys/devpi.py", inventory=inventory)
        assert rerun.grand_total()[0] == 0 and "damaged" not in rerun.output, rerun.describe()
    finally:
        stack.plist.write_text(plist_text)
        stack.site_file.write_bytes(block)
        stack.deploy()  # back to the module's data: the backup job removed again


def test_a_damaged_nodeinfo_is_never_replaced_and_named_with_the_way_out(stack):
    """devpi's own file: the deploy refuses before changing anything, naming the file and
    the way out (no traceback); the status names it as a problem and reports the rest."""
    stack.wait_healthy()
    nodeinfo = stack.server_dir / ".nodeinfo"
    original = nodeinfo.read_bytes()
    nodeinfo.write_bytes(original[:10] + b"\xff\xfe" + original[10:])
    garbled = nodeinfo.read_bytes()
    try:
        result = stack.deploy(check=False)
        assert result.returncode != 0
        assert f"{nodeinfo} is damaged: not UTF-8 text (byte 0xff at offset 10)" in result.output, result.describe()
        assert "never replaces them, and nothing was changed" in result.output
        assert "Traceback" not in result.output
        assert nodeinfo.read_bytes() == garbled
        result, report = status(stack)
        assert result.returncode != 0
        assert any(p.startswith(f"{nodeinfo} is damaged (not UTF-8 text") for p in report["problems"]), report
        assert report["sections"]["http"]["api_status"] == 200 and report["sections"]["launchd"]["state"] == "running"
    finally:
        nodeinfo.write_bytes(original)

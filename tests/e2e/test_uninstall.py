"""``deploys/devpi_uninstall.py``: devpi taken off the host and brought back on its data;
the purge removes exactly what it names."""

from __future__ import annotations

import json

import pytest

from tests.deploy_scenarios import check_purged

from .harness import http_ok, wait_until
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(sshd, launchd, upstream, tmp_path_factory) -> DeployedStack:
    with start_stack(sshd, launchd, upstream, tmp_path_factory.mktemp("uninstall-stack"), "uninstall") as deployed:
        yield deployed


@pytest.fixture(autouse=True)
def _show_stack_logs(request, e2e_log_dirs):
    if "stack" in request.fixturenames:
        e2e_log_dirs.append(request.getfixturevalue("stack").root)


def uninstall(stack: DeployedStack, *args: str, **overrides):
    return stack.pyinfra("deploys/devpi_uninstall.py", *args, inventory=stack.write_inventory(**overrides))


def uuid_of(stack: DeployedStack) -> str:
    return json.loads((stack.server_dir / ".nodeinfo").read_text())["uuid"]


def test_uninstall_then_reinstall_keeps_the_data_and_the_server_uuid(stack):
    stack.wait_healthy()
    stack.wait_caddy()
    uuid = uuid_of(stack)
    index = stack.api.new_mirror(stack.upstream.url, prefix="kept")
    venv = stack.venv_target()
    caddy_pid = stack.launchd.pid(stack.caddy_label)

    # --dry: the whole plan, nothing changed
    dry = uninstall(stack, "--dry", "--diff")
    assert dry.ok and stack.pid() is not None and stack.plist.exists(), dry.describe()
    assert f"server dir (devpi's data: uploads, users, indexes, the mirror's cache): {stack.server_dir}" in dry.output
    assert "kept (a deploy brings devpi back on them" in dry.output
    assert "Will run: ( out=$(launchctl bootout" in dry.output and "rm -f" in dry.output

    result = uninstall(stack)
    assert result.grand_total()[0] >= 2, result.describe()
    assert stack.launchd.print(stack.label).returncode != 0  # not loaded
    assert not stack.plist.exists()
    assert "devpi was uninstalled" in stack.site_file.read_text()
    # Caddy was restarted without devpi's block, and still runs (the import of the file works)
    wait_until(lambda: stack.launchd.pid(stack.caddy_label) not in (None, caddy_pid), 30, 0.1, "Caddy to restart")
    assert not http_ok(f"{stack.caddy_url}/+api")
    # kept, and said so
    assert (stack.server_dir / ".nodeinfo").exists() and stack.venv_target() == venv
    assert (stack.devpi_home / "devpi-server.yml").exists() and stack.err_log.exists()
    assert str(stack.server_dir) in result.output and str(stack.err_log) in result.output

    # a second uninstall changes nothing
    again = uninstall(stack)
    assert again.grand_total()[0] == 0, again.describe()

    # the normal deploy brings it back on the same data
    back = stack.deploy()
    assert back.ok
    stack.wait_healthy()
    stack.wait_caddy()
    assert uuid_of(stack) == uuid
    assert index in stack.state()["root"]["indexes"] or index.split("/")[1] in stack.state()["root"]["indexes"]
    assert stack.venv_target() == venv  # not rebuilt


def test_purge_removes_what_it_names_and_nothing_else(stack):
    stack.wait_healthy()
    mine = stack.devpi_home / "my-notes.txt"
    mine.write_text("the operator's, not the deploy's\n")
    logs = stack.home / "Library/Logs"
    other_log = logs / "someone-else.log"
    other_log.write_text("x\n")
    # rotated copies of devpi's log from a time devpi_log_backups was larger
    beyond = [logs / f"{stack.label}.log.{n}" for n in (8, 9, 10)]
    for path in beyond:
        path.write_text("old\n")

    dry = uninstall(stack, "--dry", devpi_uninstall_purge=True)
    assert "devpi_uninstall_purge is set: removes:" in dry.output
    assert stack.server_dir.exists() and stack.pid() is not None

    result = uninstall(stack, devpi_uninstall_purge=True)
    # devpi's files gone, the job too, the site file says so (shared with tests/mac)
    check_purged(stack, result)
    assert not any(path.exists() for path in beyond)
    # what is not the deploy's stays, and so does the home that holds it
    assert mine.read_text() == "the operator's, not the deploy's\n" and other_log.exists()

    again = uninstall(stack, devpi_uninstall_purge=True)
    assert again.grand_total()[0] == 0, again.describe()

    # with nothing else in it, devpi_home goes too, and so does the backup program's dir
    mine.unlink()
    stack.deploy()  # a fresh devpi (new server dir), then purged again
    (stack.devpi_home / "bin").mkdir()
    (stack.devpi_home / "bin" / "devpi-backup.py").write_text("# as devpi_backup leaves it\n")
    uninstall(stack, devpi_uninstall_purge=True)
    assert not stack.devpi_home.exists()

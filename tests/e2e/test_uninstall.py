"""``deploys/devpi_uninstall.py``: devpi taken off the host and brought back on its data;
the purge removes exactly what it names."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.deploy_scenarios import check_purged

from .harness import http_ok, wait_until
from .stack import DeployedStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_host) -> DeployedStack:
    """The shared host: the module purges it (a later ``shared_host.get()`` deploys it afresh)."""
    return shared_host.get()


@pytest.fixture(autouse=True)
def _show_stack_logs(request, e2e_log_dirs):
    if "stack" in request.fixturenames:
        e2e_log_dirs.append(request.getfixturevalue("stack").root)


def uninstall(stack: DeployedStack, *args: str, check: bool = True, **overrides):
    return stack.pyinfra("deploys/devpi_uninstall.py", *args, inventory=stack.write_inventory(**overrides),
                         check=check)


def uuid_of(stack: DeployedStack) -> str:
    return json.loads((stack.server_dir / ".nodeinfo").read_text())["uuid"]


# --------------------------------------------------------------------------- paths that aim at others' files
# (issue 22) Each run below is refused in the preflight (two remote commands): the host
# stays as the shared converge left it.


def test_a_site_file_through_a_symlinked_dir_onto_the_deploys_config_is_refused(stack):
    sites = stack.root / "sites-link"
    sites.symlink_to(stack.devpi_home)  # ~/sites -> ~/devpi
    config = stack.devpi_home / "devpi-server.yml"
    before = config.read_bytes()
    try:
        result = stack.deploy(check=False, devpi_caddy_site_file=sites / "devpi-server.yml")
    finally:
        sites.unlink()
    assert result.returncode != 0
    assert (f"paths: `devpi_caddy_site_file` = {sites}/devpi-server.yml (on the host: {config}) is the deploy's "
            "own devpi-server config") in result.output, result.describe()
    assert "nothing was changed" in result.output
    assert config.read_bytes() == before
    assert stack.api_ok()


def test_a_site_file_of_the_users_is_never_shown_nor_replaced(stack):
    notes = stack.home / "notes.caddy"
    notes.write_text("# alice's own: the-password-is-swordfish\n")
    notes.chmod(0o600)
    try:
        # (the stack's data adopts Caddy's placeholder site file; not this one)
        dry = stack.deploy("--dry", "--diff", check=False, devpi_caddy_site_file=notes,
                           devpi_caddy_adopt_site_file=False)
        applied = stack.deploy(check=False, devpi_caddy_site_file=notes, devpi_caddy_adopt_site_file=False)
        for result in (dry, applied):
            assert result.returncode != 0
            assert f"`devpi_caddy_site_file` = {notes} exists and was not written by this deploy" in result.output, \
                result.describe()
            assert "swordfish" not in result.output
        assert notes.read_text() == "# alice's own: the-password-is-swordfish\n"
    finally:
        notes.unlink()


def test_a_devpi_home_linked_to_the_users_home_is_refused_and_the_purge_removes_nothing_of_theirs(stack):
    user_home = stack.sshd.home  # the SSH session's $HOME
    mine = [user_home / "tools" / "alice-tool", user_home / "venvs" / "alice-venv" / "pyvenv.cfg",
            user_home / "bin" / "devpi-backup.py"]
    made = [d for d in (user_home / "tools", user_home / "venvs", user_home / "bin") if not d.exists()]
    for path in mine:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's own\n")
    linked = stack.root / "linked-home"
    linked.symlink_to(user_home)
    mode = user_home.stat().st_mode
    try:
        converge = stack.deploy(check=False, devpi_home=linked)
        purge = uninstall(stack, devpi_home=linked, devpi_uninstall_purge=True, check=False)
        assert converge.returncode != 0 and purge.returncode != 0
        for result in (converge, purge):
            assert (f"`devpi_home` = {linked} (on the host: {user_home}) is the SSH user's home") in result.output, \
                result.describe()
        assert "the purge is refused, nothing was changed" in purge.output
        assert all(path.read_text() == "the user's own\n" for path in mine)
        assert user_home.stat().st_mode == mode  # not made 0700
        assert stack.api_ok()  # nothing of the deployed devpi was touched either
    finally:
        linked.unlink()
        for path in mine:
            path.unlink()
        for directory in made:
            shutil.rmtree(directory)


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

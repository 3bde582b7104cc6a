"""
devpi_users / devpi_indexes end to end: the real deploy over SSH creates, patches and
deletes users and indexes through devpi's REST API, and refuses bad specs before
anything changes.

One deployed host for the module (module scope), the tests in file order: a fresh
converge, an upload and an install through ``bases``, a no-change rerun, single-key
patches, a password rotation, a dry run and a deletion, bad specs, the ad-hoc fact.
The hermetic upstream is devpi's mirror: ``root/pypi``'s ``mirror_url`` comes from
``devpi_indexes`` like any other setting.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from . import devpi_client
from .harness import build_wheel, free_port, remote_commands
from .stack import start_stack

pytestmark = pytest.mark.e2e

ROOT_REF = "op://vault/devpi/root password"
EBLUME_REF = "op://vault/devpi/eblume password"
EBLUME_PW = "eblume e2e Pa55 & more"


def leftovers(home: Path) -> list[str]:
    """Transient files a run must not leave behind (the deploy's records may stay)."""
    kept = ("users.pyinfra.json", ".pyinfra-deploy.serial", "smoke.pyinfra.json")
    return sorted(p.name for p in (home / "devpi").iterdir() if "pyinfra" in p.name and p.name not in kept)


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    needle = secret.encode()
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes())


def with_indexes(host, **changes) -> dict:
    """The host's ``devpi_indexes`` with some entries replaced."""
    return {**host.data["devpi_indexes"], **changes}


@pytest.fixture(scope="module")
def host(tmp_path_factory, sshd, launchd, upstream):
    # no Caddy: the site address is a port nobody serves, and no Caddy job is restarted
    with start_stack(
        sshd, launchd, upstream, tmp_path_factory.mktemp("users-indexes"), "users", deploy=False, caddy=False,
        password="e2e root Pa55 & word!", secrets={EBLUME_REF: EBLUME_PW},
        devpi_root_password=ROOT_REF,
        devpi_throttle_interval=1,
        devpi_users={"eblume": {"email": "eblume@e2e.test", "password": EBLUME_REF}},
        devpi_indexes={
            "root/pypi": {"mirror_url": upstream.url},
            "root/extra": {},
            "eblume/dev": {"bases": ["root/pypi"]},
            "eblume/scratch": {},
        },
    ) as stack:
        yield stack


def test_fresh_converge_creates_users_and_indexes(host, upstream):
    result = host.deploy("--debug")

    state = host.state()
    assert state["eblume"]["email"] == "eblume@e2e.test"
    dev = state["eblume"]["indexes"]["dev"]
    assert (dev["type"], dev["bases"], dev["volatile"], dev["acl_upload"]) == ("stage", ["root/pypi"], True, ["eblume"])
    pypi = state["root"]["indexes"]["pypi"]
    assert pypi["mirror_no_project_list"] is True and pypi["mirror_url"] == upstream.url
    assert set(state["root"]["indexes"]) == {"pypi", "extra"}
    assert host.login("eblume", EBLUME_PW) == 200
    assert host.login("eblume", "not it") == 401

    # each password read once, though root's is needed by init and by the login
    assert sorted(host.op.calls()) == [["read", EBLUME_REF], ["read", ROOT_REF]]
    marker = host.devpi_home / "users.pyinfra.json"
    assert json.loads(marker.read_text()) == {"users": {"eblume": {"password": EBLUME_REF, "version": 0}}}
    assert marker.stat().st_mode & 0o777 == 0o600
    assert leftovers(host.home) == []
    for secret in (EBLUME_PW, host.op.password):
        assert secret not in result.output
        assert files_holding(host.home, secret) == []
    # No secret reaches the host, not even for a second: the users and indexes were
    # made from this machine through the SSH connection, with no upload and no
    # command on the host carrying a payload.
    commands = remote_commands(result.output)
    assert not any("pyinfra-devpi-api" in c or "PAYLOAD" in c for c in commands), commands
    assert "(on this machine) Apply the users/indexes plan" in result.output or "devpi: create user eblume" in result.output


def test_upload_to_dev_and_install_through_its_bases(host, upstream, tools, tmp_path):
    wheel = build_wheel(tmp_path / "dist", "e2e-private", "1.0", ["hermetic-alpha>=1.0"])
    publish = devpi_client.uv_publish(tools.uv, wheel.path, f"{host.devpi_url}/eblume/dev/", "eblume", EBLUME_PW)
    assert publish.returncode == 0, publish.stdout + publish.stderr

    venv_python = devpi_client.make_venv(tools.uv, tools.python3, tmp_path / "venv")
    install = devpi_client.install("uv", tools.uv, venv_python, f"{host.devpi_url}/eblume/dev/+simple/",
                                   ["e2e-private"], quiet=False, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "e2e-private==1.0" in install.stderr
    assert "hermetic-alpha==1.1" in install.stderr  # from the upstream, through root/pypi
    assert any(r.startswith("GET /simple/hermetic-alpha/") for r in upstream.requests())


def test_rerun_changes_nothing_and_asks_op_nothing(host):
    pid, calls = host.pid(), len(host.op.calls())
    before = host.state()
    result = host.deploy("--debug")
    changed, _ = result.grand_total()
    assert changed == 0, result.describe()
    assert len(host.op.calls()) == calls
    assert host.pid() == pid
    assert host.state() == before
    commands = remote_commands(result.output)
    # The login session, then one batch of every fact, devpi's users and indexes among them.
    assert len(commands) == 2, commands
    assert "Getting fact: facts.users_indexes.UsersIndexes" not in result.output
    assert not any("pyinfra-devpi-api" in c for c in commands)


def patch_only(host, index: str, key: str, value, **extra):
    before = host.state()
    calls = len(host.op.calls())
    spec = {**host.data["devpi_indexes"][index], key: value}
    host.update(devpi_indexes=with_indexes(host, **{index: spec}))
    result = host.deploy("-v")
    # the users/indexes operation, and the deploy lock's release after it
    assert result.grand_total()[0] == 2, result.describe()
    assert [line for line in result.output.splitlines() if "Will " in line and index in line], result.describe()
    after = host.state()
    user, name = index.split("/")
    assert after[user]["indexes"][name] == {**before[user]["indexes"][name], key: value}
    for other in before:
        if other != user:
            assert after[other] == before[other]
    assert {k: v for k, v in after[user].items() if k != "indexes"} == {
        k: v for k, v in before[user].items() if k != "indexes"
    }
    # only root's password was needed: a login, no user password
    assert host.op.calls()[calls:] == [["read", ROOT_REF]]
    return result


def test_a_stopped_devpi_is_restored_without_any_secret(host):
    """Booted out by hand (or crashed, or a config fixed after it exited): the rerun
    brings it back and compares users and indexes only once it is up, so with
    1Password unavailable it still succeeds and plans nothing against a 'fresh' server."""
    before = host.state()
    host.stop_devpi()
    calls = len(host.op.calls())
    host.op.fail()
    try:
        dry = host.deploy("--dry")
        assert dry.returncode == 0, dry.describe()
        assert "compared once it is up" in dry.output
        assert "Will set index" not in dry.output and "Will create" not in dry.output
        result = host.deploy()
    finally:
        host.op.fail(False)
    assert result.returncode == 0, result.describe()
    assert host.pid() is not None and host.state() == before
    assert len(host.op.calls()) == calls  # 1Password was never asked
    assert "Will set index" not in result.output


def test_changing_bases_patches_only_bases(host):
    result = patch_only(host, "eblume/dev", "bases", ["root/extra", "root/pypi"])
    assert "set index eblume/dev's bases to ['root/extra', 'root/pypi'] (was ['root/pypi'])" in result.output


def test_changing_acl_upload_patches_only_acl_upload(host):
    result = patch_only(host, "eblume/dev", "acl_upload", ["eblume", "alice"])
    assert "acl_upload to ['eblume', 'alice'] (was ['eblume'])" in result.output


def test_password_version_bump_sets_the_new_password(host):
    calls = len(host.op.calls())
    host.op.secrets = {EBLUME_REF: "rotated " + EBLUME_PW}
    users = {"eblume": {**host.data["devpi_users"]["eblume"], "password_version": 1}}
    host.update(devpi_users=users)
    result = host.deploy()
    assert result.grand_total()[0] == 2  # users/indexes, then the lock's release
    assert sorted(host.op.calls()[calls:]) == [["read", EBLUME_REF], ["read", ROOT_REF]]
    assert host.login("eblume", "rotated " + EBLUME_PW) == 200
    assert host.login("eblume", EBLUME_PW) == 401
    assert json.loads((host.devpi_home / "users.pyinfra.json").read_text())["users"]["eblume"]["version"] == 1
    assert "rotated" not in result.output


def test_absent_index_shows_in_dry_run_then_is_deleted(host):
    indexes = with_indexes(host, **{"eblume/scratch": {"state": "absent"}})
    dry = host.deploy("--dry", check=False, devpi_indexes=indexes)
    assert dry.returncode == 0, dry.describe()
    assert "Will delete index eblume/scratch" in dry.output
    assert "scratch" in host.state()["eblume"]["indexes"]

    removed = host.state()["eblume"]["indexes"]
    host.update(devpi_indexes=indexes)
    result = host.deploy()
    assert result.grand_total()[0] == 2  # users/indexes, then the lock's release
    state = host.state()
    assert "scratch" not in state["eblume"]["indexes"]
    assert state["eblume"]["indexes"]["dev"] == removed["dev"]

    # dropping it from the data (and anything else undeclared) does nothing
    calls = len(host.op.calls())
    left_out = {k: v for k, v in indexes.items() if k != "eblume/scratch"}
    status, _ = devpi_client.request("PUT", host.devpi_url + "/eblume/handmade", {"type": "stage"}, ("root", host.password))
    assert status == 200
    host.update(devpi_indexes=left_out)
    result = host.deploy()
    assert result.grand_total()[0] == 0
    assert "handmade" in host.state()["eblume"]["indexes"]
    assert len(host.op.calls()) == calls


@pytest.mark.parametrize(
    ("indexes", "message"),
    [
        ({"eblume/dev": {"bases": ["root/nope"]}}, "unknown base 'root/nope'"),
        ({"eblume/dev": {"type": "private"}}, "use 'stage' or 'mirror'"),
        ({"eblume/d ev": {"bases": ["root/pypi"]}}, "malformed index name"),
        # valid data that the server's state refuses: a type change
        ({"root/extra": {"type": "mirror", "mirror_url": "http://127.0.0.1:9/simple/"}}, "cannot change an index's type"),
    ],
    ids=["unknown base", "bad type", "malformed name", "type change"],
)
def test_bad_index_spec_fails_before_anything_changes(host, indexes, message):
    pid, calls = host.pid(), len(host.op.calls())
    before = host.state()
    config_file = (host.devpi_home / "devpi-server.yml").read_text()
    # a server option change rides along: it must not be applied either
    result = host.deploy(check=False, devpi_indexes=with_indexes(host, **indexes), devpi_server_options={"threads": 7})
    assert result.returncode != 0
    assert message in result.output, result.describe()
    assert "devpi_indexes" in result.output or "devpi cannot change" in result.output
    assert host.state() == before
    assert (host.devpi_home / "devpi-server.yml").read_text() == config_file
    assert host.pid() == pid
    assert len(host.op.calls()) == calls
    assert leftovers(host.home) == []


def test_only_root_creates_users_and_indexes(host):
    """restrict-modify: root by default: anyone who reaches devpi (or Caddy) could
    otherwise create users and indexes (devpi's default answers 201)."""
    status, _ = devpi_client.request("PUT", host.devpi_url + "/intruder", {"password": "x", "email": "i@x.org"})
    assert status == 403
    status, _ = devpi_client.request("PUT", host.devpi_url + "/eblume/own", {"type": "stage"}, ("eblume", "rotated " + EBLUME_PW))
    assert status == 403
    state = host.state()
    assert "intruder" not in state and "own" not in state["eblume"]["indexes"]


def test_fact_is_queryable_from_the_cli(host):
    value = host.fact("facts.users_indexes.UsersIndexes", f"url={host.devpi_url}")
    assert value["users"]["eblume"]["email"] == "eblume@e2e.test"
    assert value["indexes"]["eblume/dev"]["bases"] == ["root/extra", "root/pypi"]
    assert value["indexes"]["root/pypi"]["mirror_no_project_list"] is True
    assert "passwords" not in value  # only with state_file=
    assert host.fact("facts.users_indexes.UsersIndexes", f"url=http://127.0.0.1:{free_port()}") is None

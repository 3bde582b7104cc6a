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
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import devpi_client
from .harness import FakeOp, build_wheel, free_port, remote_commands

pytestmark = pytest.mark.e2e

LABEL = "e2e.users.devpi"
ROOT_REF = "op://vault/devpi/root password"
EBLUME_REF = "op://vault/devpi/eblume password"
EBLUME_PW = "eblume e2e Pa55 & more"


@dataclass
class Host:
    root: Path
    home: Path
    data: dict
    op: FakeOp
    run: object
    write_inventory: object
    launchd: object
    sshd: object
    uv: str
    inventory: Path = field(init=False)

    def __post_init__(self):
        self.inventory = self.write_inventory(self.root / "inventory.py", self.data)

    def deploy(self, *args, check=True, **changes):
        """Run the deploy; keyword arguments replace host data for this and later runs."""
        if changes:
            self.data = {**self.data, **changes}
            self.inventory = self.write_inventory(self.root / "inventory.py", self.data)
        return self.run(self.inventory, "deploys/devpi.py", *args, env_extra=self.op.env, check=check)

    def try_deploy(self, *args, **changes):
        """Run the deploy with changed data once, keeping the stored data as it was."""
        inventory = self.write_inventory(self.root / "inventory-try.py", {**self.data, **changes})
        return self.run(inventory, "deploys/devpi.py", *args, env_extra=self.op.env, check=False)

    @property
    def devpi_home(self) -> Path:
        return self.home / "devpi"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.data['devpi_port']}"

    def state(self) -> dict:
        status, answer = devpi_client.request("GET", self.url + "/", timeout=60)
        assert status == 200, answer
        return answer["result"]

    def index(self, name: str) -> dict:
        user, index = name.split("/")
        return self.state()[user]["indexes"][index]

    def login(self, user: str, password: str) -> int:
        return devpi_client.login(self.url, user, password)

    def pid(self):
        return self.launchd.pid(LABEL)

    def indexes(self, **changes) -> dict:
        return {**self.data["devpi_indexes"], **changes}


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "devpi").iterdir() if ".pyinfra-devpi-api" in p.name or p.name.endswith(".new"))


@pytest.fixture(scope="module")
def host(tmp_path_factory, sshd, launchd, upstream, write_inventory, run_pyinfra, tools):
    root = tmp_path_factory.mktemp("users-indexes")
    home = root / "home"
    for sub in ("Library/Logs", "Library/LaunchAgents", ".config/caddy/sites"):
        (home / sub).mkdir(parents=True)
    data = {
        "devpi_home": home / "devpi",
        "devpi_log_dir": home / "Library/Logs",
        "devpi_launch_agents_dir": home / "Library/LaunchAgents",
        "devpi_label": LABEL,
        "devpi_port": free_port(),
        "devpi_root_password": ROOT_REF,
        "devpi_throttle_interval": 1,
        "devpi_caddy_site_file": home / ".config/caddy/sites/devpi.caddy",
        "devpi_caddy_site_address": f"http://127.0.0.1:{free_port()}",
        "devpi_caddy_bin": str(tools.caddy),
        "devpi_users": {"eblume": {"email": "eblume@e2e.test", "password": EBLUME_REF}},
        "devpi_indexes": {
            "root/pypi": {"mirror_url": upstream.url},
            "root/extra": {},
            "eblume/dev": {"bases": ["root/pypi"]},
            "eblume/scratch": {},
        },
    }
    op = FakeOp(log_path=root / "op-calls.jsonl", password="e2e root Pa55 & word!", secrets={EBLUME_REF: EBLUME_PW})
    yield Host(
        root=root, home=home, data=data, op=op, run=run_pyinfra, write_inventory=write_inventory,
        launchd=launchd, sshd=sshd, uv=str(tools.uv),
    )
    launchd.bootout(LABEL)


def test_fresh_converge_creates_users_and_indexes(host, upstream):
    result = host.deploy()

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


def test_upload_to_dev_and_install_through_its_bases(host, upstream, tmp_path):
    wheel = build_wheel(tmp_path / "dist", "e2e-private", "1.0", ["hermetic-alpha>=1.0"])
    publish = subprocess.run(
        [host.uv, "publish", "--publish-url", f"{host.url}/eblume/dev/",
         "--username", "eblume", "--password", EBLUME_PW, str(wheel.path)],
        capture_output=True, text=True, env={**os.environ, "UV_NO_CONFIG": "1"}, timeout=120,
    )
    assert publish.returncode == 0, publish.stdout + publish.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_", "VIRTUAL_ENV"))}
    subprocess.run([host.uv, "venv", "-q", "--no-config", str(tmp_path / "venv")], check=True, env=env)
    install = subprocess.run(
        [host.uv, "pip", "install", "--no-config", "--no-cache", "--python", str(tmp_path / "venv/bin/python"),
         "--index-url", f"{host.url}/eblume/dev/+simple/", "e2e-private"],
        capture_output=True, text=True, env=env, timeout=300,
    )
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
    result = host.deploy("-v", devpi_indexes=host.indexes(**{index: spec}))
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
    result = host.deploy(devpi_users=users)
    assert result.grand_total()[0] == 2  # users/indexes, then the lock's release
    assert sorted(host.op.calls()[calls:]) == [["read", EBLUME_REF], ["read", ROOT_REF]]
    assert host.login("eblume", "rotated " + EBLUME_PW) == 200
    assert host.login("eblume", EBLUME_PW) == 401
    assert json.loads((host.devpi_home / "users.pyinfra.json").read_text())["users"]["eblume"]["version"] == 1
    assert "rotated" not in result.output


def test_absent_index_shows_in_dry_run_then_is_deleted(host):
    indexes = host.indexes(**{"eblume/scratch": {"state": "absent"}})
    dry = host.try_deploy("--dry", devpi_indexes=indexes)
    assert dry.returncode == 0, dry.describe()
    assert "Will delete index eblume/scratch" in dry.output
    assert "scratch" in host.state()["eblume"]["indexes"]

    removed = host.state()["eblume"]["indexes"]
    result = host.deploy(devpi_indexes=indexes)
    assert result.grand_total()[0] == 2  # users/indexes, then the lock's release
    state = host.state()
    assert "scratch" not in state["eblume"]["indexes"]
    assert state["eblume"]["indexes"]["dev"] == removed["dev"]

    # dropping it from the data (and anything else undeclared) does nothing
    calls = len(host.op.calls())
    left_out = {k: v for k, v in indexes.items() if k != "eblume/scratch"}
    status, _ = devpi_client.request("PUT", host.url + "/eblume/handmade", {"type": "stage"}, ("eblume", "rotated " + EBLUME_PW))
    assert status == 200
    result = host.deploy(devpi_indexes=left_out)
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
    result = host.try_deploy(devpi_indexes=host.indexes(**indexes), devpi_server_options={"threads": 7})
    assert result.returncode != 0
    assert message in result.output, result.describe()
    assert "devpi_indexes" in result.output or "devpi cannot change" in result.output
    assert host.state() == before
    assert (host.devpi_home / "devpi-server.yml").read_text() == config_file
    assert host.pid() == pid
    assert len(host.op.calls()) == calls
    assert leftovers(host.home) == []


def test_fact_is_queryable_from_the_cli(host):
    result = host.run(host.inventory, "fact", "facts.users_indexes.UsersIndexes", f"url={host.url}", "--json",
                      env_extra=host.op.env)
    data = json.loads(result.stdout[result.stdout.index("{"):])
    ((value,),) = [list(by_host.values()) for by_host in data.values()]
    assert value["users"]["eblume"]["email"] == "eblume@e2e.test"
    assert value["indexes"]["eblume/dev"]["bases"] == ["root/extra", "root/pypi"]
    assert value["indexes"]["root/pypi"]["mirror_no_project_list"] is True
    assert "passwords" not in value  # only with state_file=
    nothing = host.run(host.inventory, "fact", "facts.users_indexes.UsersIndexes", f"url=http://127.0.0.1:{free_port()}",
                       "--json", env_extra=host.op.env)
    data = json.loads(nothing.stdout[nothing.stdout.index("{"):])
    assert [list(by_host.values()) for by_host in data.values()] == [[None]]

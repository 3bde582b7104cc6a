"""
DESIGN.md's ten acceptance scenarios, each run against the real deploy over SSH.

The tests share one deployed host (module scope) and run in file order, like an
operator's week: a fresh converge, reruns, a tuning change, a version bump, a dry
run, bad inputs, a failed bump, a crash, a plist change, and fact queries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_config import BAD_VALUES

from . import devpi_client as devpi
from .harness import FakeOp, free_port, remote_commands, start_caddy_job

pytestmark = pytest.mark.e2e

OLD = ("6.20.2", "5.1.0")  # the pair the host starts on (no lock file: uv resolves the pins)
NEW = ("6.20.3", "5.1.1")  # the bump target (installed from locks/devpi-6.20.3-5.1.1.txt)
LABEL = "e2e.scenarios.devpi"
CADDY_LABEL = "e2e.scenarios.caddy"
OP_REF = "op://vault/devpi/root password"


@dataclass
class Deployment:
    """One host as the operator sees it: inventory data, paths, and ways to run pyinfra."""

    root: Path
    home: Path
    data: dict
    op: FakeOp
    sshd: object
    launchd: object
    run: object
    write_inventory: object
    caddy_url: str
    upstream: object
    uv: str
    inventory: Path = field(init=False)

    def __post_init__(self):
        self.inventory = self.write({})

    def write(self, overrides: dict, name: str = "inventory.py") -> Path:
        data = {k: v for k, v in {**self.data, **overrides}.items() if v is not None}
        return self.write_inventory(self.root / name, data)

    def deploy(self, *args, overrides=None, check=True):
        # a one-off inventory: the host's own stays as it was
        inventory = self.write(overrides, name="inventory-once.py") if overrides else self.inventory
        return self.run(inventory, "deploys/devpi.py", *args, env_extra=self.op.env, check=check)

    @property
    def devpi_home(self) -> Path:
        return self.home / "devpi"

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.data['devpi_port']}"

    @property
    def root_auth(self):
        return ("root", self.op.password)

    def pid(self) -> int | None:
        return self.launchd.pid(LABEL)

    def printed(self) -> str:
        return self.launchd.print(LABEL).stdout

    def venv_target(self) -> str:
        return os.readlink(self.devpi_home / "venv")


def tree_digest(root: Path, skip=("Library/Logs",)) -> str:
    """Every path, mode, symlink target and file byte under ``root`` (logs aside)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        st = path.lstat()
        digest.update(f"{rel}\0{st.st_mode:o}\0".encode())
        if path.is_symlink():
            digest.update(os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def api_ok(host) -> bool:
    try:
        return devpi.request("GET", f"{host.local_url}/+api", timeout=5)[0] == 200
    except OSError:
        return False


def wait_for(predicate, timeout=30.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def host(tmp_path_factory, sshd, launchd, upstream, write_inventory, run_pyinfra, tools):
    root = tmp_path_factory.mktemp("scenarios")
    home = root / "home"
    for sub in ("Library/Logs", "Library/LaunchAgents", ".config/caddy/sites"):
        (home / sub).mkdir(parents=True)
    site_file = home / ".config/caddy/sites/devpi.caddy"
    caddy_port = free_port()
    caddy = start_caddy_job(
        launchd, caddyfile=root / "caddy/Caddyfile", port=caddy_port, site_file=site_file,
        work_dir=root / "caddy", label=CADDY_LABEL,
    )
    data = {
        "devpi_server_version": OLD[0],
        "devpi_web_version": OLD[1],
        "devpi_home": home / "devpi",
        "devpi_log_dir": home / "Library/Logs",
        "devpi_launch_agents_dir": home / "Library/LaunchAgents",
        "devpi_label": LABEL,
        "devpi_port": free_port(),
        "devpi_root_password": OP_REF,
        "devpi_throttle_interval": 1,
        "devpi_caddy_site_file": site_file,
        "devpi_caddy_site_address": caddy.url,
        "devpi_caddy_restart": CADDY_LABEL,
        "devpi_caddy_bin": str(tools.caddy),
    }
    op = FakeOp(log_path=root / "op-calls.jsonl", password="e2e root Pa55 & word!")
    deployment = Deployment(
        root=root, home=home, data=data, op=op, sshd=sshd, launchd=launchd, run=run_pyinfra,
        write_inventory=write_inventory, caddy_url=caddy.url, upstream=upstream, uv=str(tools.uv),
    )
    yield deployment
    launchd.bootout(LABEL)
    launchd.bootout(CADDY_LABEL)


def test_1_fresh_converge(host, tmp_path, tools):
    result = host.deploy()
    assert "devpi_caddy_restart is unset" not in result.output

    # the venv holds the pins
    venv_python = host.devpi_home / "venv/bin/python"
    versions = subprocess.run(
        [str(venv_python), "-c", "import importlib.metadata as m; print(m.version('devpi-server'), m.version('devpi-web'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert tuple(versions) == OLD

    # the server dir is initialised, and root logs in with the password from "1Password"
    assert (host.devpi_home / "server-dir/.nodeinfo").is_file()
    assert (host.devpi_home / "server-dir/.serverversion").read_text().strip() == "4"
    assert devpi.login(host.local_url, "root", host.op.password) == 200
    assert devpi.login(host.local_url, "root", "not the password") == 401
    assert host.op.calls() == [["read", OP_REF]]

    # the job is loaded from our plist and running
    printed = host.printed()
    assert f"path = {host.home}/Library/LaunchAgents/{LABEL}.plist" in printed
    assert "state = running" in printed and host.pid()
    status, api = devpi.request("GET", f"{host.local_url}/+api")
    assert status == 200 and api["type"] == "apiconfig"

    # the secret file and the server dir are private
    assert (host.devpi_home / "secret").stat().st_mode & 0o777 == 0o600
    assert (host.devpi_home / "server-dir").stat().st_mode & 0o777 == 0o700

    # clients install an upstream package through Caddy -> devpi -> the hermetic upstream
    devpi.ensure_index(host.local_url, host.root_auth, "root/hermetic", type="mirror",
                       mirror_url=host.upstream.url)
    index = f"{host.caddy_url}/root/hermetic/+simple/"
    pip = subprocess.run(
        [str(tools.python3), "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
         "--index-url", index, "--target", str(tmp_path / "pip-target"), "hermetic-beta"],
        capture_output=True, text=True,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (tmp_path / "pip-target/hermetic_beta").is_dir()
    subprocess.run([host.uv, "venv", "-q", str(tmp_path / "uv-venv")], check=True)
    uv = subprocess.run(
        [host.uv, "pip", "install", "--no-cache", "--index-url", index,
         "--python", str(tmp_path / "uv-venv/bin/python"), "hermetic-beta"],
        capture_output=True, text=True,
    )
    assert uv.returncode == 0, uv.stdout + uv.stderr
    assert "hermetic-alpha==1.1" in uv.stderr  # the dependency, newest version, via the mirror


def test_2_no_change_rerun(host):
    pid, calls = host.pid(), len(host.op.calls())
    mark = host.sshd.mark()
    result = host.deploy("--debug")
    changed, unchanged = result.grand_total()
    # an operation that ran any command counts as changed: so every command was a fact
    assert changed == 0 and unchanged >= 7
    commands = remote_commands(result.output)
    # Two round trips: the login session (its home and launchd domain shape the config),
    # then every fact the plan reads, batched into one command.
    assert len(commands) == 2, commands
    assert result.output.count("Getting fact: facts.batch.FactBatch") == 1
    assert host.sshd.commands_since(mark) == len(commands)
    assert host.pid() == pid
    assert len(host.op.calls()) == calls


def test_3_tuning_change_restarts_only(host):
    pid = host.pid()
    venv_dir = Path(host.devpi_home / "venv").resolve()
    venv_stat = venv_dir.stat()
    # devpi rewrites .nodeinfo at every start; its uuid is what init would change
    uuid = json.loads((host.devpi_home / "server-dir/.nodeinfo").read_text())["uuid"]
    calls = len(host.op.calls())

    host.data["devpi_server_options"] = {"threads": 8, "mirror-cache-expiry": 900}
    host.inventory = host.write({})
    result = host.deploy("-vv")

    assert "kickstart -k" in result.output
    assert "bootout" not in result.output and "devpi-init" not in result.output
    new_pid = wait_for(lambda: (p := host.pid()) and p != pid and p, what="a new pid")
    assert new_pid != pid
    assert "threads: 8" in (host.devpi_home / "devpi-server.yml").read_text()
    assert Path(host.devpi_home / "venv").resolve() == venv_dir
    assert (venv_dir.stat().st_ino, venv_dir.stat().st_mtime_ns) == (venv_stat.st_ino, venv_stat.st_mtime_ns)
    assert json.loads((host.devpi_home / "server-dir/.nodeinfo").read_text())["uuid"] == uuid
    assert devpi.login(host.local_url, "root", host.op.password) == 200
    assert len(host.op.calls()) == calls
    assert api_ok(host)


def running_server_version(host) -> str:
    """The devpi-server version of the running process, from its own executable's venv."""
    pid = host.pid()
    exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    program = next(Path(part.decode()) for part in exe if part.endswith(b"devpi-server"))
    python = Path(os.path.realpath(program.parent)) / "python"
    return subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('devpi-server'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def test_4_version_bump_keeps_data(host, tmp_path):
    # a package uploaded to a user index before the bump
    devpi.ensure_user(host.local_url, host.root_auth, "alice", "alice-pw")
    devpi.ensure_index(host.local_url, ("alice", "alice-pw"), "alice/dev", bases=["root/hermetic"])
    wheel = host.upstream.add_project("alice-tool", "0.1", [])
    published = devpi.uv_publish(host.uv, wheel.path, f"{host.local_url}/alice/dev/", "alice", "alice-pw")
    assert published.returncode == 0, published.stdout + published.stderr
    before = devpi.simple_links(host.local_url, "alice/dev", "alice-tool")
    assert wheel.filename in before

    old_target = host.venv_target()
    assert running_server_version(host) == OLD[0]
    host.data.update(devpi_server_version=NEW[0], devpi_web_version=NEW[1])
    host.inventory = host.write({})
    host.deploy()

    assert host.venv_target() != old_target
    assert Path(old_target).is_dir()  # the previous venv is kept
    assert running_server_version(host) == NEW[0]
    after = devpi.simple_links(host.local_url, "alice/dev", "alice-tool")
    assert devpi.sha256(devpi.download(after[wheel.filename])) == wheel.sha256


def test_5_dry_diff_changes_nothing_and_shows_no_secret(host, tmp_path, write_inventory, run_pyinfra):
    before = tree_digest(host.home)
    pid = host.pid()
    result = host.deploy("--dry", "--diff", overrides={"devpi_throttle_interval": 2})
    assert "Will modify" in result.output and f"{LABEL}.plist" in result.output
    assert "<integer>2</integer>" in result.output  # the diff's new line
    assert tree_digest(host.home) == before
    assert host.pid() == pid

    # A host that still needs init is where the password is read and hashed: at every
    # verbosity, neither it nor its hash may appear (fresh home, dry run).
    fresh = tmp_path / "fresh"
    (fresh / "Library/LaunchAgents").mkdir(parents=True)
    data = {**host.data, "devpi_home": fresh / "devpi", "devpi_log_dir": fresh / "logs",
            "devpi_launch_agents_dir": fresh / "Library/LaunchAgents",
            "devpi_caddy_site_file": fresh / "devpi.caddy", "devpi_label": "e2e.fresh"}
    inventory = write_inventory(tmp_path / "fresh.py", data)
    fresh_before = tree_digest(fresh)
    for verbosity in ("-v", "-vv", "-vvv"):
        calls = len(host.op.calls())
        result = run_pyinfra(inventory, "deploys/devpi.py", "--dry", "--diff", verbosity, env_extra=host.op.env)
        assert len(host.op.calls()) == calls + 1  # init would run, so the secret was read
        assert host.op.password not in result.output
        assert "$argon2" not in result.output and "argon2id" not in result.output
        assert "devpi-init" in result.output  # the plan shows the init command, masked
    assert tree_digest(fresh) == fresh_before


# One bad value per key, from the unit tests' table (which must cover every key),
# plus an unknown key: a typo must not fall back to a default.
BAD_INPUTS = {
    key: next(v for v in values if v is not None) for key, values in BAD_VALUES.items()
}
BAD_INPUTS["devpi_prot"] = 3142


def test_6_bad_inputs_change_nothing(host, tmp_path):
    from pyinfra_devpi.config import KEYS

    assert set(KEYS) <= set(BAD_INPUTS), "every config key needs a bad input here"
    before, pid = tree_digest(host.home), host.pid()
    for key, value in BAD_INPUTS.items():
        result = host.deploy(overrides={key: value}, check=False)
        assert result.returncode != 0, result.describe()
        assert f"`{key}`" in result.output or key in result.output, result.describe()
        assert "Traceback" not in result.output, result.describe()
    assert tree_digest(host.home) == before and host.pid() == pid


@pytest.mark.parametrize(
    ("reference", "fail", "message"),
    [
        ("vault:devpi/root", False, "unknown secret reference scheme"),
        (OP_REF, True, "isn't an item"),
        ("env:E2E_UNSET_VARIABLE", False, "E2E_UNSET_VARIABLE is unset"),
    ],
)
def test_6_bad_secrets_on_a_fresh_host_change_nothing(host, tmp_path, reference, fail, message, write_inventory, run_pyinfra):
    fresh = tmp_path / "fresh"
    (fresh / "Library/LaunchAgents").mkdir(parents=True)
    data = {**host.data, "devpi_home": fresh / "devpi", "devpi_log_dir": fresh / "logs",
            "devpi_launch_agents_dir": fresh / "Library/LaunchAgents", "devpi_caddy_site_file": fresh / "devpi.caddy",
            "devpi_label": "e2e.fresh", "devpi_root_password": reference}
    inventory = write_inventory(tmp_path / "fresh.py", data)
    host.op.fail(fail)
    try:
        result = run_pyinfra(inventory, "deploys/devpi.py", env_extra=host.op.env, check=False)
    finally:
        host.op.fail(False)
    assert result.returncode != 0
    assert message in result.output, result.describe()
    assert "devpi_root_password" in result.output
    assert sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*")) == ["Library", "Library/LaunchAgents"]


def test_7_bump_to_a_missing_version_keeps_the_old_service(host):
    pid, target = host.pid(), host.venv_target()
    result = host.deploy(overrides={"devpi_server_version": "99.0.0"}, check=False)
    assert result.returncode != 0
    assert "devpi-server==99.0.0" in result.output  # uv's own reason names the pin
    assert re.search(r"no version of devpi-server|not found in the package registry|No solution", result.output), result.describe()
    assert host.venv_target() == target
    assert not any("99.0.0" in p.name for p in (host.devpi_home / "venvs").iterdir())
    assert host.pid() == pid
    assert api_ok(host)


def test_8_killed_job_comes_back_and_a_booted_out_job_is_restored(host):
    pid = host.pid()
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_for(lambda: (p := host.pid()) and p != pid and p, what="KeepAlive respawn")
    assert "last terminating signal = Killed: 9" in host.printed()
    assert new_pid != pid
    wait_for(lambda: api_ok(host), what="devpi back up")

    host.launchd.bootout(LABEL)
    assert host.launchd.print(LABEL).returncode == 113
    host.deploy()
    assert "state = running" in host.printed()
    assert api_ok(host)


def test_9_plist_change_reloads_the_definition(host):
    pid = host.pid()
    host.data["devpi_out_log"] = "e2e-renamed.out.log"
    host.inventory = host.write({})
    result = host.deploy("-vv")
    assert "launchctl bootout" in result.output and "launchctl bootstrap" in result.output
    printed = host.printed()
    assert f"stdout path = {host.home}/Library/Logs/e2e-renamed.out.log" in printed
    assert host.pid() != pid
    assert api_ok(host)


def fact_json(host, *args) -> dict:
    result = host.run(host.inventory, "fact", *args, "--json", env_extra=host.op.env)
    data = json.loads(result.stdout[result.stdout.index("{"):])  # {fact: {host: value}}
    (by_host,) = data.values()
    (value,) = by_host.values()
    return value


def test_10_fact_queries_print_json(host):
    job = fact_json(host, "facts.launchd.LaunchdJob", f"label={LABEL}")
    assert job["state"] == "running" and job["pid"] == host.pid()
    assert job["path"] == f"{host.home}/Library/LaunchAgents/{LABEL}.plist"
    assert job["program"] == f"{host.devpi_home}/venv/bin/devpi-server"
    assert job["domain"] == host.launchd.domain and job["disabled"] is False

    server_dir = fact_json(host, "facts.devpi.ServerDir", f"path={host.devpi_home}/server-dir")
    assert server_dir["initialised"] and server_dir["serverversion"] == "4"
    assert server_dir["has_database"] and server_dir["complete"]
    assert server_dir["nodeinfo"]["role"] == "standalone"

    versions = fact_json(host, "facts.devpi.VenvVersions", f"venv={host.devpi_home}/venv")
    assert (versions["devpi-server"], versions["devpi-web"]) == (
        host.data["devpi_server_version"], host.data["devpi_web_version"])

    assert fact_json(host, "facts.devpi.Health", f"url={host.local_url}") == {"status": 200, "ok": True}
    assert fact_json(host, "facts.launchd.LaunchdJob", "label=e2e.not.there") is None

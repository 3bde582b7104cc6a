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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.deploy_scenarios import first_converge, no_change_rerun
from tests.test_config import BAD_VALUES

from . import devpi_client as devpi
from .harness import cmdline, remote_commands, wait_until
from .stack import start_stack

pytestmark = pytest.mark.e2e

OLD = ("6.20.2", "5.1.0")  # the pair the host starts on (no lock file: uv resolves the pins)
NEW = ("6.20.3", "5.1.1")  # the bump target (installed from locks/devpi-6.20.3-5.1.1.txt)
OP_REF = "op://vault/devpi/root password"


def tree_digest(root: Path, skip=("Library/Logs",)) -> dict[str, str]:
    """Every path under ``root`` (logs aside), with a digest of its mode, symlink target
    and bytes: two of these compare equal when nothing changed, and pytest's diff of
    unequal ones names the paths that did."""
    entries = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        try:
            digest = hashlib.sha256(f"{path.lstat().st_mode:o}\0".encode())
            if path.is_symlink():
                digest.update(os.readlink(path).encode())
            elif path.is_file():
                digest.update(path.read_bytes())
        except FileNotFoundError:  # removed while the walk ran (devpi-web's indexer): gone
            continue
        entries[rel] = digest.hexdigest()
    return entries


def settled_tree(root: Path, skip=("Library/Logs",)) -> dict[str, str]:
    """``tree_digest(root)`` once devpi's own background writes have stopped: devpi-web's
    Whoosh indexer works through the last changes (``.indices``, and the bytecode of the
    modules it imports for that) for a while after the run that made them. Two digests
    a second apart must agree; what a later run changes is then that run's doing."""
    import time

    previous = tree_digest(root, skip)
    for _ in range(60):
        time.sleep(1)
        current = tree_digest(root, skip)
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"{root} kept changing for a minute with no deploy running")


@pytest.fixture(scope="module")
def host(tmp_path_factory, sshd, launchd, upstream):
    with start_stack(
        sshd, launchd, upstream, tmp_path_factory.mktemp("scenarios"), "scenarios", deploy=False,
        password="e2e root Pa55 & word!",
        devpi_server_version=OLD[0], devpi_web_version=OLD[1], devpi_root_password=OP_REF,
        devpi_throttle_interval=1,
    ) as stack:
        yield stack


def fresh_inventory(host, fresh: Path, path: Path, **changes) -> Path:
    """An inventory for a host that still needs everything: the scenario host's data
    with a fresh, empty home ``fresh`` (only its LaunchAgents dir exists)."""
    (fresh / "Library/LaunchAgents").mkdir(parents=True)
    return host.write_inventory(
        path, devpi_home=fresh / "devpi", devpi_log_dir=fresh / "logs",
        devpi_launch_agents_dir=fresh / "Library/LaunchAgents", devpi_caddy_site_file=fresh / "devpi.caddy",
        devpi_label="e2e.fresh", **changes,
    )


def test_1_fresh_converge(host, tmp_path, tools):
    # the job loaded from our plist, running, /+api 200 (shared with tests/mac)
    result, _ = first_converge(host)
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
    assert devpi.login(host.devpi_url, "root", host.op.password) == 200
    assert devpi.login(host.devpi_url, "root", "not the password") == 401
    assert host.op.calls() == [["read", OP_REF]]

    status, api = devpi.request("GET", f"{host.devpi_url}/+api")
    assert status == 200 and api["type"] == "apiconfig"

    # the secret file and the server dir are private
    assert (host.devpi_home / "secret").stat().st_mode & 0o777 == 0o600
    assert (host.devpi_home / "server-dir").stat().st_mode & 0o777 == 0o700

    # clients install an upstream package through Caddy -> devpi -> the hermetic upstream
    # (with the flag, as every mirror next to devpi-web's Whoosh search must have: docs/operating.md, "Search")
    devpi.ensure_index(host.devpi_url, host.root_auth, "root/hermetic", type="mirror",
                       mirror_url=host.upstream.url, mirror_no_project_list=True)
    index = f"{host.caddy_url}/root/hermetic/+simple/"
    pip = subprocess.run(
        [str(tools.python3), "-m", "pip", "install", "--isolated", "--no-cache-dir", "--disable-pip-version-check",
         "--index-url", index, "--target", str(tmp_path / "pip-target"), "hermetic-beta"],
        capture_output=True, text=True,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (tmp_path / "pip-target/hermetic_beta").is_dir()
    venv_python = devpi.make_venv(tools.uv, tools.python3, tmp_path / "uv-venv")
    uv = devpi.install("uv", tools.uv, venv_python, index, ["hermetic-beta"], quiet=False)
    assert uv.returncode == 0, uv.stdout + uv.stderr
    assert "hermetic-alpha==1.1" in uv.stderr  # the dependency, newest version, via the mirror


def test_2_no_change_rerun(host):
    calls, sessions = len(host.op.calls()), []

    def rerun():
        mark = host.sshd.mark()
        result = host.deploy("--debug")
        sessions.append(host.sshd.commands_since(mark))
        return result

    # no change, two commands on the host, the same pid (shared with tests/mac)
    result = no_change_rerun(host, rerun)
    assert sessions == [len(remote_commands(result.output))]
    assert len(host.op.calls()) == calls


def test_3_tuning_change_restarts_only(host):
    pid = host.pid()
    venv_dir = Path(host.devpi_home / "venv").resolve()
    venv_stat = venv_dir.stat()
    # devpi rewrites .nodeinfo at every start; its uuid is what init would change
    uuid = json.loads((host.devpi_home / "server-dir/.nodeinfo").read_text())["uuid"]
    calls = len(host.op.calls())

    host.update(devpi_server_options={"threads": 8, "mirror-cache-expiry": 900})
    result = host.deploy("-vv")

    assert "kickstart -k" in result.output
    # No bootout command ran (the health wait's message, shown by -vv, names one as advice).
    assert f"launchctl bootout {host.launchd.target(host.label)}" not in result.output
    assert "devpi-init" not in result.output
    new_pid = wait_until(lambda: (p := host.pid()) and p != pid and p, 30, 0.2, "a new pid")
    assert new_pid != pid
    assert "threads: 8" in (host.devpi_home / "devpi-server.yml").read_text()
    assert Path(host.devpi_home / "venv").resolve() == venv_dir
    assert (venv_dir.stat().st_ino, venv_dir.stat().st_mtime_ns) == (venv_stat.st_ino, venv_stat.st_mtime_ns)
    assert json.loads((host.devpi_home / "server-dir/.nodeinfo").read_text())["uuid"] == uuid
    assert devpi.login(host.devpi_url, "root", host.op.password) == 200
    assert len(host.op.calls()) == calls
    assert host.api_ok()


def running_server_version(host) -> str:
    """The devpi-server version of the running process, from its own executable's venv."""
    program = next(Path(arg) for arg in cmdline(host.pid()) if arg.endswith("devpi-server"))
    python = Path(os.path.realpath(program.parent)) / "python"
    return subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('devpi-server'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def test_4_version_bump_keeps_data(host, tools):
    # a package uploaded to a user index before the bump
    devpi.ensure_user(host.devpi_url, host.root_auth, "alice", "alice-pw")
    # only root creates indexes (restrict-modify: root); alice uploads (acl_upload)
    devpi.ensure_index(host.devpi_url, host.root_auth, "alice/dev", bases=["root/hermetic"])
    wheel = host.upstream.add_project("alice-tool", "0.1", [])
    published = devpi.uv_publish(tools.uv, wheel.path, f"{host.devpi_url}/alice/dev/", "alice", "alice-pw")
    assert published.returncode == 0, published.stdout + published.stderr
    before = devpi.simple_links(host.devpi_url, "alice/dev", "alice-tool")
    assert wheel.filename in before

    old_target = host.venv_target()
    assert running_server_version(host) == OLD[0]
    host.update(devpi_server_version=NEW[0], devpi_web_version=NEW[1])
    host.deploy()

    assert host.venv_target() != old_target
    assert Path(old_target).is_dir()  # the previous venv is kept
    assert running_server_version(host) == NEW[0]
    after = devpi.simple_links(host.devpi_url, "alice/dev", "alice-tool")
    assert devpi.sha256(devpi.download(after[wheel.filename])) == wheel.sha256


def test_5_dry_diff_changes_nothing_and_shows_no_secret(host, tmp_path):
    before = settled_tree(host.home)
    pid = host.pid()
    result = host.deploy("--dry", "--diff", devpi_throttle_interval=2)
    assert "Will modify" in result.output and f"{host.label}.plist" in result.output
    assert "<integer>2</integer>" in result.output  # the diff's new line
    assert tree_digest(host.home) == before
    assert host.pid() == pid

    # A host that still needs init: a dry run reads no secret at all (a review job has
    # no 1Password) and says which one the init will read; at every verbosity,
    # neither the password nor a hash appears (fresh home, dry run).
    fresh = tmp_path / "fresh"
    inventory = fresh_inventory(host, fresh, tmp_path / "fresh.py")
    fresh_before = tree_digest(fresh)
    for verbosity in ("-v", "-vv", "-vvv"):
        calls = len(host.op.calls())
        result = host.pyinfra("deploys/devpi.py", "--dry", "--diff", verbosity, inventory=inventory)
        assert len(host.op.calls()) == calls  # init would run, but a dry run reads no secret
        assert "Will read devpi_root_password" in result.output
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


def test_6_bad_inputs_change_nothing(host):
    from pyinfra_devpi.config import KEYS

    assert set(KEYS) <= set(BAD_INPUTS), "every config key needs a bad input here"
    before, pid = settled_tree(host.home), host.pid()

    def refused(numbered):
        # each run its own inventory: four runs at a time (each is refused before any change)
        n, (key, value) = numbered
        inventory = host.write_inventory(host.root / f"inventory-bad-{n}.py", **{key: value})
        return key, host.pyinfra("deploys/devpi.py", inventory=inventory, check=False)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(refused, enumerate(BAD_INPUTS.items())))
    for key, result in results:
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
def test_6_bad_secrets_on_a_fresh_host_change_nothing(host, tmp_path, reference, fail, message):
    fresh = tmp_path / "fresh"
    inventory = fresh_inventory(host, fresh, tmp_path / "fresh.py", devpi_root_password=reference)
    host.op.fail(fail)
    try:
        result = host.pyinfra("deploys/devpi.py", inventory=inventory, check=False)
    finally:
        host.op.fail(False)
    assert result.returncode != 0
    assert message in result.output, result.describe()
    assert "devpi_root_password" in result.output
    assert sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*")) == ["Library", "Library/LaunchAgents"]


def test_7_bump_to_a_missing_version_keeps_the_old_service(host):
    pid, target = host.pid(), host.venv_target()
    result = host.deploy(check=False, devpi_server_version="99.0.0")
    assert result.returncode != 0
    assert "devpi-server==99.0.0" in result.output  # uv's own reason names the pin
    assert re.search(r"no version of devpi-server|not found in the package registry|No solution", result.output), result.describe()
    assert host.venv_target() == target
    assert not any("99.0.0" in p.name for p in (host.devpi_home / "venvs").iterdir())
    assert host.pid() == pid
    assert host.api_ok()


def test_8_killed_job_comes_back_and_a_booted_out_job_is_restored(host):
    pid = host.pid()
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_until(lambda: (p := host.pid()) and p != pid and p, 30, 0.2, "KeepAlive respawn")
    assert "last terminating signal = Killed: 9" in host.printed()
    assert new_pid != pid
    wait_until(host.api_ok, 30, 0.2, "devpi back up")

    host.launchd.bootout(host.label)
    assert host.launchd.print(host.label).returncode == 113
    host.deploy()
    assert "state = running" in host.printed()
    assert host.api_ok()


def test_9_plist_change_reloads_the_definition(host):
    pid = host.pid()
    host.update(devpi_out_log="e2e-renamed.out.log")
    result = host.deploy("-vv")
    assert "launchctl bootout" in result.output and "launchctl bootstrap" in result.output
    printed = host.printed()
    assert f"stdout path = {host.home}/Library/Logs/e2e-renamed.out.log" in printed
    assert host.pid() != pid
    assert host.api_ok()


def test_10_fact_queries_print_json(host):
    job = host.fact("facts.launchd.LaunchdJob", f"label={host.label}")
    assert job["state"] == "running" and job["pid"] == host.pid()
    assert job["path"] == str(host.plist)
    assert job["program"] == f"{host.devpi_home}/venv/bin/devpi-server"
    assert job["domain"] == host.launchd.domain and job["disabled"] is False

    server_dir = host.fact("facts.devpi.ServerDir", f"path={host.devpi_home}/server-dir")
    assert server_dir["initialised"] and server_dir["serverversion"] == "4"
    assert server_dir["has_database"] and server_dir["complete"]
    assert server_dir["nodeinfo"]["role"] == "standalone"

    versions = host.fact("facts.devpi.VenvVersions", f"venv={host.devpi_home}/venv")
    assert (versions["devpi-server"], versions["devpi-web"]) == (
        host.data["devpi_server_version"], host.data["devpi_web_version"])

    assert host.fact("facts.devpi.Health", f"url={host.devpi_url}") == {"status": 200, "ok": True}
    assert host.fact("facts.launchd.LaunchdJob", "label=e2e.not.there") is None

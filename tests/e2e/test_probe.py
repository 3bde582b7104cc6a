"""
The first-contact probe (``deploys/probe.py``) on the e2e host: a deployed stack (devpi
and Caddy running under the launchctl double), probed once. It changes nothing, calls
no ``op`` (even with ``devpi_root_password`` an ``op://`` reference), and writes every
capture it names; what it captured is what the deploy's parsers read
(``tests/test_probe_fixtures.py`` replays the committed captures).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facts.launchd import LaunchdJob
from facts.probe import RenameSwap

from .harness import remote_commands, run_pyinfra
from .stack import DeployedStack, start_stack
from .test_scenarios import settled_tree, tree_digest

pytestmark = pytest.mark.e2e

OUTPUT_ENV = "PYINFRA_DEVPI_PROBE_DIR"

EXPECTED = {
    "session", "uname", "sw_vers", "managername", "console",
    "domain-gui", "domain-user", "domain-system",
    "job-gui", "job-user", "job-system", "job-session-rule", "backup-job",
    "caddy-job-gui", "caddy-job-user", "caddy-job-system",
    "disabled-gui", "disabled-user", "disabled-system",
    "session-processes", "ps-lstart", "readiness", "df", "sudo", "ls", "plist-mode", "tools",
    "deploy-lock", "serverdir", "venv-versions", "answers", "rename-swap",
}


@pytest.fixture(scope="module")
def stack(shared_host) -> DeployedStack:
    deployed = shared_host.get()
    deployed.wait_healthy()
    return deployed


def jobs(launchd) -> list[str]:
    return sorted(str(p.relative_to(launchd.state_dir)) for p in (launchd.state_dir / "jobs").rglob("*"))


def probe_unchanged(stack: DeployedStack, launchd, out: Path, pid: int) -> tuple[Path, dict]:
    """Run the probe into ``out``; assert it changed nothing and called no ``op``; return
    its capture dir and index."""
    skip = ("home/Library/Logs", "inventory.py", "inventory-once.py")
    before = settled_tree(stack.root, skip)
    jobs_before = jobs(launchd)
    # An op:// reference for root's password: the deploy would ask op for it on an
    # init; the probe never builds the config's secret parts.
    inventory = stack.write_inventory(devpi_root_password="op://vault/devpi/root password")
    result = run_pyinfra(inventory, "deploys/probe.py", "--debug",
                         env_extra={**stack.env_extra, OUTPUT_ENV: str(out)})
    assert "nothing was changed" in result.output, result.describe()
    # Two round trips: the login session, then one batch of everything else.
    assert len(remote_commands(result.output)) == 2, remote_commands(result.output)
    assert stack.password not in result.output

    # Nothing changed: the tree, launchd's jobs, devpi's process; no op call.
    assert tree_digest(stack.root, skip) == before
    assert jobs(launchd) == jobs_before
    assert running_pid(stack, launchd) == pid
    assert stack.op.calls() == []
    assert not list(Path(stack.devpi_home).glob(".pyinfra-devpi-probe.*"))

    # Every capture, named in the index with its exit code and reader, in one dir.
    (directory,) = out.iterdir()
    assert directory.name.startswith("127.0.0.1-")
    index = json.loads((directory / "index.json").read_text())
    expected = EXPECTED if stack.caddy else {n for n in EXPECTED if not n.startswith("caddy-job-")}
    assert {entry["name"] for entry in index["commands"]} == expected
    assert {p.name for p in directory.iterdir()} == {f"{n}.txt" for n in expected} | {"index.json"}
    assert index["os"]["macos"] is None and index["os"]["uname"].startswith("Linux")
    assert "devpi_root_password" not in index["host_data"]
    for path in directory.iterdir():
        text = path.read_text()
        assert stack.password not in text and "op://" not in text, path.name
    return directory, index


def running_pid(stack: DeployedStack, launchd) -> int | None:
    """devpi's pid in whichever agent domain its job is (the harness asks gui/ only)."""
    for kind in ("gui", "user"):
        proc = launchd.run("print", f"{kind}/{stack.sshd.uid}/{stack.label}", check=False)
        for line in proc.stdout.splitlines():
            if line.startswith("\tpid = "):
                return int(line.split("=")[1])
    return None


def job_of(directory: Path, name: str):
    return LaunchdJob().process((directory / f"{name}.txt").read_text().splitlines())


def test_probe_captures_everything_and_changes_nothing(stack, launchd, tmp_path):
    pid = running_pid(stack, launchd)
    directory, index = probe_unchanged(stack, launchd, tmp_path / "captures", pid)

    # What it captured is the deploy's view of this host: the SSH user (root) owns the
    # console, devpi's job runs in gui/<uid> with its pid, devpi answers through the SSH
    # channel, and there is no renamex_np off macOS.
    session = index["session"]
    assert session["domain"] == f"gui/{session['uid']}"
    job = job_of(directory, "job-gui")
    assert job["state"] == "running" and job["pid"] == pid and job["label"] == stack.label
    assert job_of(directory, "job-user") is None and job_of(directory, "job-system") is None
    assert (directory / "managername.txt").read_text() == "Background\n"
    assert index["tunnel"]["opened"] is True and index["tunnel"]["api_status"] == 200
    swap = RenameSwap().process((directory / "rename-swap.txt").read_text().splitlines())
    assert swap["renamex_np"] == "absent" and swap["swapped"] is True
    assert swap["parent"] == str(stack.devpi_home)


@pytest.fixture
def headless(sshd, tmp_path):
    """The SSH sessions see a /dev/console of uid 65534's: nobody's console, so the
    double has no gui/<uid> and the deploy's domain is user/<uid> (as on a Mac mini
    nobody is logged in to). Only this test's sessions' mount namespace is changed."""
    console = tmp_path / "console"
    sshd.run(f": > {console} && chown 65534 {console} && mount --bind {console} /dev/console")
    try:
        yield
    finally:
        sshd.run("umount /dev/console")


def test_probe_of_a_headless_host(sshd, launchd, upstream, tmp_path, headless):
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "probe-headless", caddy=False) as stack:
        uid = sshd.uid
        try:
            pid = running_pid(stack, launchd)
            assert pid
            directory, index = probe_unchanged(stack, launchd, tmp_path / "captures", pid)
            session = index["session"]
            assert session["domain"] == f"user/{uid}" and session["console_uid"] == 65534
            # gui/<uid> is not there (125), and the job runs in user/<uid>.
            gui = {e["name"]: e for e in index["commands"]}["domain-gui"]
            assert gui["exit"] == 125
            job = job_of(directory, "job-user")
            assert job["state"] == "running" and job["pid"] == pid
            # A domain that is not there holds nothing (issue 20, item 1).
            assert job_of(directory, "job-gui") is None
        finally:
            launchd.run("bootout", f"user/{uid}/{stack.label}", check=False)

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

from .harness import run_pyinfra
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
    "deploy-lock", "server-dir", "venv", "answers", "rename-swap",
}


@pytest.fixture(scope="module")
def stack(sshd, launchd, upstream, tmp_path_factory) -> DeployedStack:
    with start_stack(sshd, launchd, upstream, tmp_path_factory.mktemp("probe-stack"), "probe") as deployed:
        deployed.wait_healthy()
        yield deployed


def jobs(launchd) -> list[str]:
    return sorted(str(p.relative_to(launchd.state_dir)) for p in (launchd.state_dir / "jobs").rglob("*"))


def test_probe_captures_everything_and_changes_nothing(stack, launchd, tmp_path):
    skip = ("home/Library/Logs", "inventory.py", "inventory-once.py")
    before = settled_tree(stack.root, skip)
    jobs_before = jobs(launchd)
    pid = stack.pid()
    out = tmp_path / "captures"
    # An op:// reference for root's password: the deploy would ask op for it on an
    # init; the probe never builds the config's secret parts.
    inventory = stack.write_inventory(devpi_root_password="op://vault/devpi/root password")
    result = run_pyinfra(inventory, "deploys/probe.py", env_extra={**stack.env_extra, OUTPUT_ENV: str(out)})
    assert "nothing was changed" in result.output, result.describe()

    # Nothing changed: the tree, launchd's jobs, devpi's process; no op call.
    assert tree_digest(stack.root, skip) == before
    assert jobs(launchd) == jobs_before
    assert stack.pid() == pid
    assert stack.op.calls() == []

    # Every capture, named in the index with its exit code and reader, in one dir.
    (directory,) = out.iterdir()
    assert directory.name.startswith("127.0.0.1-")
    index = json.loads((directory / "index.json").read_text())
    names = {entry["name"] for entry in index["commands"]}
    assert names == EXPECTED
    assert {p.name for p in directory.iterdir()} == {f"{n}.txt" for n in EXPECTED} | {"index.json"}
    assert index["os"]["macos"] is None and index["os"]["uname"].startswith("Linux")
    assert "devpi_root_password" not in index["host_data"]
    for path in directory.iterdir():
        text = path.read_text()
        assert stack.password not in text and "op://" not in text, path.name

    # What it captured is the deploy's view of this host: devpi's job running with its
    # pid in the session's domain, devpi answering through the SSH channel, no
    # renamex_np off macOS.
    session = index["session"]
    kind = session["domain"].split("/")[0]
    lines = (directory / f"job-{kind}.txt").read_text().splitlines()
    job = LaunchdJob().process(lines)
    assert job["state"] == "running" and job["pid"] == pid and job["label"] == stack.label
    assert index["tunnel"]["opened"] is True and index["tunnel"]["api_status"] == 200
    swap = RenameSwap().process((directory / "rename-swap.txt").read_text().splitlines())
    assert swap["renamex_np"] == "absent" and swap["swapped"] is True
    assert swap["parent"] == str(stack.devpi_home)
    assert not list(Path(stack.devpi_home).glob(".pyinfra-devpi-probe.*"))

"""
The one-time init, end to end: all or nothing, and the mirror never loads its upstream's
project list.

- A server dir that a killed ``devpi-init`` left behind (``.nodeinfo`` but no database) is
  refused before anything changes, with a message saying what it is and how to recover.
- A run killed during init leaves only the transient dir beside the server dir; the next
  run removes it, initialises cleanly, and root logs in (no one else can claim ``root``).
- A first converge never makes devpi fetch a mirror's project list: devpi-init runs
  without ``root/pypi`` and the users/indexes step creates it with
  ``mirror_no_project_list`` already set (a hermetic upstream of its own records every
  request; devpi's debug log records every attempt to fetch a project list, wherever
  the mirror points).

Each test deploys its own stack (``stack.py``) into its own home.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pyinfra_devpi.layout import NODEINFO, SERVERVERSION, SQLITE, transient

from . import devpi_client
from .harness import start_upstream
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e

# What a devpi-init killed after writing ``.nodeinfo`` leaves (devpi writes
# ``.serverversion`` first, then ``.nodeinfo``, then its database ``.sqlite``).
NODEINFO_TEXT = json.dumps({"role": "standalone", "uuid": "0123456789abcdef0123456789abcdef", "nodeinfo_version": 1})

# devpi-init's own root/pypi (devpi-server 6.x), which the deploy now creates itself.
ROOT_PYPI_DEFAULTS = {
    "type": "mirror",
    "volatile": False,
    "title": "PyPI",
    "mirror_url": "https://pypi.org/simple/",
    "mirror_web_url_fmt": "https://pypi.org/project/{name}/",
}


def index_settings(stack: DeployedStack, index: str) -> dict:
    """An index's settings as devpi holds them (without the list of its projects)."""
    user, name = index.split("/")
    return {k: v for k, v in devpi_client.state(stack.devpi_url)[user]["indexes"][name].items() if k != "projects"}


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its mode and content digest (logs aside)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("Library/Logs"):
            continue
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else None
        found[rel] = (st.st_mode, os.readlink(path) if path.is_symlink() else None, digest)
    return found


@pytest.fixture
def stack(sshd, launchd, upstream, tmp_path, e2e_log_dirs):
    """A home and a Caddy job, nothing deployed yet."""
    e2e_log_dirs.append(tmp_path)
    deployed = start_stack(sshd, launchd, upstream, tmp_path / "stack", f"init.{os.getpid()}.{tmp_path.name}",
                           deploy=False)
    try:
        yield deployed
    finally:
        deployed.stop()


@pytest.mark.parametrize("files", [(NODEINFO,), (SERVERVERSION, NODEINFO)], ids=["nodeinfo", "serverversion+nodeinfo"])
def test_half_initialised_server_dir_is_refused_before_any_change(stack: DeployedStack, files):
    stack.server_dir.mkdir(parents=True)
    for name in files:
        (stack.server_dir / name).write_text(NODEINFO_TEXT if name == NODEINFO else "4\n")
    before = tree(stack.home)

    result = stack.deploy(check=False)

    assert result.returncode != 0, result.describe()
    assert f"{stack.server_dir} is a half-initialised devpi server dir" in result.output, result.describe()
    assert f"holds devpi's {NODEINFO} but no database ({SQLITE})" in result.output
    assert "move it aside" in result.output and "nothing is deleted" in result.output
    assert "Traceback" not in result.output
    assert tree(stack.home) == before  # no venv, no config, no plist: nothing changed
    assert stack.pid() is None


def test_empty_serverversion_is_refused(stack: DeployedStack):
    stack.server_dir.mkdir(parents=True)
    (stack.server_dir / NODEINFO).write_text(NODEINFO_TEXT)
    (stack.server_dir / SQLITE).write_bytes(b"SQLite format 3\0")
    (stack.server_dir / SERVERVERSION).write_text("")
    before = tree(stack.home)

    result = stack.deploy(check=False)

    assert result.returncode != 0, result.describe()
    assert f"{stack.server_dir / SERVERVERSION} is empty" in result.output, result.describe()
    assert tree(stack.home) == before


def test_a_run_killed_during_init_is_followed_by_a_clean_init(stack: DeployedStack):
    # The killed run's transient dir (what devpi-init had written so far) and an empty
    # server dir made by hand: the next run removes the one and fills the other.
    leftover = Path(transient(str(stack.server_dir)))
    leftover.mkdir(parents=True)
    (leftover / SERVERVERSION).write_text("4\n")
    (leftover / NODEINFO).write_text(NODEINFO_TEXT)
    stack.server_dir.mkdir()

    result = stack.deploy("-vv")

    assert not leftover.exists()
    assert {p.name for p in stack.server_dir.iterdir()} >= {NODEINFO, SERVERVERSION, SQLITE}
    assert json.loads((stack.server_dir / NODEINFO).read_text())["uuid"] != json.loads(NODEINFO_TEXT)["uuid"]
    assert stack.server_dir.stat().st_mode & 0o777 == 0o700
    assert devpi_client.login(stack.devpi_url, "root", stack.password) == 200
    assert devpi_client.login(stack.devpi_url, "root", "not the password") == 401
    # root exists, so no one can claim it
    assert devpi_client.request("PUT", f"{stack.devpi_url}/root", {"password": "mine"})[0] != 201
    assert stack.password not in result.output and "$argon2" not in result.output
    # root/pypi as devpi-init would have made it, plus the flag, from its creation on
    assert index_settings(stack, "root/pypi") == {**ROOT_PYPI_DEFAULTS, "mirror_no_project_list": True}

    # a rerun changes nothing
    assert stack.deploy().grand_total()[0] == 0


def test_first_converge_never_fetches_a_project_list(sshd, launchd, tools, tmp_path, e2e_log_dirs):
    e2e_log_dirs.append(tmp_path)
    mirror = start_upstream(tmp_path / "upstream", python=tools.python3)
    try:
        asked_before = len(mirror.requests())  # the harness's own readiness probe
        stack = start_stack(
            sshd, launchd, mirror, tmp_path / "stack", f"init.list.{os.getpid()}", deploy=False,
            devpi_indexes={"root/pypi": {"mirror_url": mirror.url}},
            # debug: devpi logs each attempt to fetch a mirror's project list, whatever the URL
            devpi_server_options={"debug": True},
        )
        try:
            stack.deploy()
            stack.wait_healthy()
            pypi = index_settings(stack, "root/pypi")
            assert pypi == {**ROOT_PYPI_DEFAULTS, "mirror_url": mirror.url, "mirror_no_project_list": True}
            # the mirror works: a project page through root/pypi comes from the upstream
            status, _ = devpi_client.request("GET", f"{stack.devpi_url}/root/pypi/+simple/hermetic-alpha/")
            assert status == 200
            asked = mirror.requests()[asked_before:]
            assert "GET /simple/hermetic-alpha/ HTTP/1.1" in asked
            assert not [r for r in asked if r.startswith("GET /simple/ ")], asked
            # every log of the job: devpi's own (<label>.log, rotated copies too) and launchd's
            log = "".join(p.read_text(errors="replace") for p in sorted(stack.err_log.parent.glob(f"{stack.label}*.log*")))
            assert "GET /root/pypi/+simple/hermetic-alpha/" in log  # devpi's request log is among them
            assert "fetching remote projects" not in log, [
                line for line in log.splitlines() if "remote projects" in line or "projects list" in line
            ]
        finally:
            stack.stop()
    finally:
        mirror.stop()

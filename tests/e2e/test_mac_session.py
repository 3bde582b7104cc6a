"""
The deploy in a Mac's SSH session as it really is (harness/mac.py): PATH is
``/usr/bin:/bin:/usr/sbin:/sbin``, uv is in ``~/.local/bin``, Caddy in
``/opt/homebrew/bin``, launchctl at ``/bin/launchctl``; nothing tells the deploy where.
It finds its tools, says which it uses, bootstraps uv when there is none, and a
preflight refuses a host that is not ready, with everything that is missing, before
any change.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pyinfra_devpi.config import UV_BOOTSTRAP_VERSION

from .harness import CADDY_BIN, HOMEBREW_BIN, UV_INSTALLER_DIR, remote_commands
from .stack import start_stack
from .test_scenarios import tree_digest

pytestmark = pytest.mark.e2e


def venv_uv_version(stack) -> str | None:
    """The uv that made devpi's live venv (uv writes ``uv = <version>`` to pyvenv.cfg)."""
    for line in (stack.devpi_home / "venv" / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "uv":
            return value.strip()
    return None


def tools_line(result) -> list[str]:
    """The plan's line naming the tools the run uses (not the bootstrap's progress lines)."""
    return [line for line in result.output.splitlines() if "] uv: " in line and "; caddy: " in line]


def test_uv_and_caddy_are_found_outside_path_and_named_once(sshd, launchd, upstream, tools, tmp_path):
    # Not on the session's PATH: only where a Mac keeps them.
    assert sshd.run("command -v uv caddy || echo none").stdout.strip() == "none"
    uv = f"{sshd.home}/{UV_INSTALLER_DIR}/uv"
    caddy = f"{HOMEBREW_BIN}/caddy"
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "found", deploy=False) as stack:
        result = stack.deploy("-vv")
        (line,) = tools_line(result)  # said once, in the plan
        assert f"uv: {uv} (found); caddy: {caddy} (found); devpi's Python: {stack.data['devpi_python']}" in line
        # and used: uv made the venv, Caddy validated the new block
        version = subprocess.run([str(tools.uv), "--version"], capture_output=True, text=True).stdout.split()[1]
        assert venv_uv_version(stack) == version
        assert f"c={caddy};" in result.output
        stack.wait_healthy()
        stack.wait_caddy()

        # The rerun still costs two remote commands, and says the same once.
        rerun = stack.deploy("--debug")
        assert len(remote_commands(rerun.output)) == 2, remote_commands(rerun.output)
        assert tools_line(rerun) == [line]

        # An explicit key wins over the candidates.
        explicit = stack.deploy(devpi_caddy_bin=CADDY_BIN)
        assert f"caddy: {CADDY_BIN} (devpi_caddy_bin)" in tools_line(explicit)[0]


def test_preflight_lists_everything_missing_and_changes_nothing(sshd, launchd, upstream, tmp_path):
    """A host missing six things: one refusal naming all six, two remote commands (the
    facts), no change anywhere."""
    uid = os.getuid()
    inside = Path(f"/proc/{sshd.pid}/root")  # the file system as sshd's sessions see it
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "preflight", deploy=False, caddy=False) as stack:
        small = stack.root / "small"
        small.mkdir()
        old_python = stack.root / "python3.9"
        old_python.write_text("#!/bin/sh\necho 3.9.6\n")  # an interpreter that reports 3.9
        old_python.chmod(0o755)
        console = launchd.state_dir / "console_uid"
        # A 1 MB file system for devpi_home (in the sessions' mount namespace only), with
        # a server dir that belongs to someone else; the console is someone else's.
        sshd.run(f"mount -t tmpfs -o size=1m tmpfs {small} && mkdir -p {small}/devpi/server-dir"
                 f" && chown 65534 {small}/devpi/server-dir")
        console.write_text(f"{uid + 1}\n")
        try:
            seen = inside / str(stack.root).lstrip("/")
            skip = ("Library/Logs", "inventory.py", "inventory-once.py")  # the controller's files
            before = tree_digest(seen, skip)
            jobs_before = sorted(p.name for p in (launchd.state_dir / "jobs").rglob("*"))
            mark = sshd.mark()
            result = stack.deploy(
                "--debug", check=False,
                devpi_home=small / "devpi",
                devpi_uv=stack.root / "no-uv-here",
                devpi_python=old_python,
                devpi_caddy_bin=stack.root / "no-caddy-here",
                devpi_launchd_domain=f"gui/{uid}",
            )
            assert result.returncode != 0
            output = result.output
            assert "is not ready for devpi; nothing was changed" in output, result.describe()
            for expected in (
                f"uv: devpi_uv is {stack.root}/no-uv-here",
                f"python: devpi_python is {old_python}, which is Python 3.9.6",
                "needs Python 3.11 or newer",
                f"caddy: devpi_caddy_bin is {stack.root}/no-caddy-here",
                f"launchd: the domain gui/{uid} is not reachable",
                f"devpi_launchd_domain = 'user/{uid}'",
                f"disk: {small}/devpi",
                f"ownership: {small}/devpi/server-dir belongs to uid 65534",
            ):
                assert expected in output, f"{expected!r} missing:\n{result.describe()}"
            assert "Traceback" not in output
            # stopped after the facts: the session, then the one batch
            assert len(remote_commands(output)) == 2 == sshd.commands_since(mark)
            assert tree_digest(seen, skip) == before
            assert sorted(p.name for p in (launchd.state_dir / "jobs").rglob("*")) == jobs_before
        finally:
            console.unlink()
            sshd.run(f"umount {small}")


def test_uv_is_bootstrapped_into_devpi_home_when_it_is_nowhere(sshd, launchd, upstream, tmp_path):
    link = sshd.home / UV_INSTALLER_DIR / "uv"
    real = os.readlink(link)
    link.unlink()  # no uv anywhere on the host now
    try:
        with start_stack(sshd, launchd, upstream, tmp_path / "stack", "bootstrap", deploy=False,
                         caddy=False) as stack:
            bootstrapped = stack.devpi_home / "tools/bin/uv"
            result = stack.deploy()
            (line,) = tools_line(result)
            assert (f"uv: none found; bootstrapping uv {UV_BOOTSTRAP_VERSION} from PyPI into {bootstrapped} "
                    "with /usr/bin/python3") in line, result.describe()
            version = subprocess.run([str(bootstrapped), "--version"], capture_output=True, text=True).stdout
            assert version.startswith(f"uv {UV_BOOTSTRAP_VERSION}")
            assert venv_uv_version(stack) == UV_BOOTSTRAP_VERSION  # the venv was built with it
            assert sorted(p.name for p in bootstrapped.parent.parent.iterdir()) == [
                "bin", f"uv-{UV_BOOTSTRAP_VERSION}.lock.txt"]  # the scratch venv is gone
            stack.wait_healthy()

            # Next time it is found where the deploy put it, and nothing is bootstrapped again.
            rerun = stack.deploy("--debug")
            assert f"uv: {bootstrapped} (found)" in tools_line(rerun)[0]
            assert len(remote_commands(rerun.output)) == 2
            assert rerun.grand_total()[0] == 0

            # A new release of this deploy pins another uv: the one an older release
            # bootstrapped (here: one that says it is 0.12.1, beside that release's
            # requirement file) is replaced by the pinned one, and its file goes.
            bootstrapped.write_text('#!/bin/sh\necho "uv 0.12.1 (an older release)"\n')
            (bootstrapped.parent.parent / "uv-0.12.1.lock.txt").write_text("uv==0.12.1\n")
            upgraded = stack.deploy()
            assert (f"uv: {bootstrapped} (bootstrapped, uv 0.12.1); replacing it with uv {UV_BOOTSTRAP_VERSION} "
                    "from PyPI with /usr/bin/python3") in tools_line(upgraded)[0], upgraded.describe()
            version = subprocess.run([str(bootstrapped), "--version"], capture_output=True, text=True).stdout
            assert version.startswith(f"uv {UV_BOOTSTRAP_VERSION}")
            assert sorted(p.name for p in bootstrapped.parent.parent.iterdir()) == [
                "bin", f"uv-{UV_BOOTSTRAP_VERSION}.lock.txt"]
            assert sorted(p.name for p in bootstrapped.parent.iterdir()) == ["uv"]
            # and then it is left alone: asking its version is part of the one batch
            again = stack.deploy("--debug")
            assert f"uv: {bootstrapped} (found)" in tools_line(again)[0]
            assert len(remote_commands(again.output)) == 2
            assert again.grand_total()[0] == 0
    finally:
        link.symlink_to(real)

"""The deploy as the pyinfra CLI runs it on a machine without launchd (a Linux box; on a
Mac, a PATH without launchctl stands in for one)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYINFRA = Path(sys.executable).parent / "pyinfra"


def test_linux_host_gets_a_clear_launchd_error_not_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LAUNCHCTL_DOUBLE_STATE"}
    # No launchctl (nor its test double): only what the login-session fact runs, which
    # on a Mac is what keeps /bin/launchctl off the PATH.
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("sh", "id", "ls", "awk"):
        (tools / name).symlink_to(shutil.which(name, path="/usr/bin:/bin"))
    home = tmp_path / "home"
    home.mkdir()
    env["PATH"] = str(tools)
    env["HOME"] = str(home)
    result = subprocess.run(
        [str(PYINFRA), "@local", "deploys/devpi.py", "--dry"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "launchd is not available on @local" in output
    assert "Traceback" not in output
    assert list(home.iterdir()) == []  # nothing written

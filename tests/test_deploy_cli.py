"""The deploy as the pyinfra CLI runs it on a machine without launchd (this Linux box)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYINFRA = Path(sys.executable).parent / "pyinfra"


def test_linux_host_gets_a_clear_launchd_error_not_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LAUNCHCTL_DOUBLE_STATE"}
    env["PATH"] = "/usr/bin:/bin"  # no launchctl (nor its test double)
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [str(PYINFRA), "@local", "deploys/devpi.py", "--dry"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "launchd is not available on @local" in output
    assert "Traceback" not in output
    assert list(tmp_path.iterdir()) == []  # nothing written

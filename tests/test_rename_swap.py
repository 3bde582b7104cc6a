"""The ``RenameSwap`` fact's command (facts/rename_swap.sh) run here, under each shell:
what its ``process()`` reads, with paths and candidates no shell may interpret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from facts.probe import TEMP_PREFIX, RenameSwap
from operations.restore import SWAP

from .prepared import SHELLS

HOSTILE = "$(touch pwned-a) `touch pwned-b` \"; touch pwned-c; ' ; touch pwned-d %s \\ ~"


def run(shell, cwd, **kwargs):
    fact = RenameSwap()
    result = subprocess.run([shell, "-c", fact.command(**kwargs)], capture_output=True, text=True, cwd=cwd,
                            timeout=60, env={"HOME": str(cwd), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return fact.process(result.stdout.splitlines())


@pytest.mark.parametrize("shell", SHELLS)
def test_the_swap_runs_in_the_nearest_existing_parent_with_the_first_python_that_runs(shell, tmp_path):
    parent = tmp_path / HOSTILE
    parent.mkdir()
    found = run(shell, tmp_path, home=str(parent / "devpi" / "not yet"), swap=SWAP,
                pythons=(f"/nowhere/{HOSTILE}", "~/no-python", HOSTILE, sys.executable))
    assert found["parent"] == str(parent)
    assert found["python"] == sys.executable and found["python_version"] == "%d.%d.%d" % sys.version_info[:3]
    assert (found["skipped"], found["swap_exit"], found["swapped"]) == (None, 0, True)
    assert found["renamex_np"] == ("ok" if sys.platform == "darwin" else "absent")
    # the temporary dir is gone, and no value ran as a command
    assert list(parent.glob(TEMP_PREFIX + "*")) == [] and sorted(tmp_path.rglob("pwned-*")) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_without_a_python_that_runs_nothing_is_made(shell, tmp_path):
    found = run(shell, tmp_path, home=str(tmp_path), swap=SWAP, pythons=("/no/python3", "~/python3"))
    assert (found["python"], found["skipped"], found["swapped"]) == (None, "no python3 that runs", False)
    assert list(tmp_path.iterdir()) == []

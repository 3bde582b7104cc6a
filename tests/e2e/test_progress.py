"""Long steps say what they do at pyinfra's default verbosity (no ``-v``): the venv
build, devpi-init, the health wait and the prewarm of several projects, one line per
project; with ``--json`` the lines go to stderr and stdout stays one JSON document."""

from __future__ import annotations

import json
import re

import pytest

from .harness import start_upstream
from .stack import start_stack

pytestmark = pytest.mark.e2e

PROJECTS = ["hermetic-alpha", "hermetic-beta", "e2e-gamma", "e2e-delta", "e2e-epsilon"]


@pytest.fixture
def upstream(tools, tmp_path):
    index = start_upstream(tmp_path / "upstream", python=tools.python3)
    for name in PROJECTS[2:]:
        index.add_project(name, "1.0")
    yield index
    index.stop()


def progress_lines(text: str) -> list[str]:
    return re.findall(r"^\[[^\]]+\] (prewarm \d+/\d+: .*|venv: .*|devpi-init: .*|prewarm: .*)$", text, re.M)


def test_a_default_verbosity_run_shows_each_long_step_as_it_goes(sshd, launchd, upstream, tmp_path):
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "progress", deploy=False, caddy=False,
                     devpi_indexes={"root/pypi": {"mirror_url": upstream.url}},
                     devpi_prewarm=PROJECTS[:4]) as stack:
        result = stack.deploy()
        assert "-v" not in result.argv
        lines = progress_lines(result.stderr)
        assert lines[:3] == [
            next(line for line in lines if line.startswith("venv: creating")),
            "venv: installing devpi-server 6.20.3 + devpi-web 5.1.1 and their dependencies",
            "venv: checking that the new venv imports and reports the pinned version",
        ], result.describe()
        assert any(line.startswith("venv: ") and line.endswith(" is live") for line in lines)
        assert any(line.startswith("devpi-init: initialising a new server dir") for line in lines)
        assert [line for line in lines if line.startswith("prewarm ")] == [
            "prewarm 1/4: hermetic-alpha (2 files)",
            "prewarm 2/4: hermetic-beta (1 files)",
            "prewarm 3/4: e2e-gamma (1 files)",
            "prewarm 4/4: e2e-delta (1 files)",
        ]
        # the deploy's own lines, not devpi-init's log or pyramid's deprecation warning
        assert "Unknown devpi-init option" not in result.stderr and "pkg_resources" not in result.stderr
        # shown once (not again as pyinfra's output of a failed command), before the results table
        assert result.stderr.count("prewarm 4/4") == 1
        assert result.output.index("prewarm 4/4") < result.output.index("Grand total")

        # --json: the progress on stderr, stdout one JSON document
        stack.update(devpi_prewarm=PROJECTS)
        as_json = stack.deploy("--json")
        assert "prewarm 5/5: e2e-epsilon (1 files)" in as_json.stderr
        assert "prewarm" not in as_json.stdout.split("{", 1)[0]
        json.loads(as_json.stdout)

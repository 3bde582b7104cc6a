"""
No value reaches a shell except through quoting: the host scripts' failure paths,
run here under sh with hostile values, print them literally and run nothing.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from operations.devpi import build_venv_script, say, wait_healthy_script
from pyinfra_devpi.config import build_config

from .prepared import SHELLS

HOSTILE = [
    '$(touch {pwned}/a)',
    '`touch {pwned}/b`',
    '"; touch {pwned}/c; echo "',
    "'; touch {pwned}/d; echo '",
    "%s%n%d $HOME \\\\ {pwned}",
]


def run(shell: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60)


@pytest.fixture
def pwned(tmp_path) -> Path:
    directory = tmp_path / "pwned"
    directory.mkdir()
    yield directory
    assert sorted(p.name for p in directory.iterdir()) == [], "a hostile value ran on the host"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("template", HOSTILE)
def test_uv_missing_message_prints_the_value_literally(shell, template, pwned, tmp_path):
    uv = f"/nonexistent/{template.format(pwned=pwned)}"
    config = build_config(
        {"devpi_outside_url": "https://pypi.example.org", "devpi_uv": uv, "devpi_home": str(tmp_path / "h")},
        "/Users/alice",
    )
    result = run(shell, build_venv_script(config, "devpi-server==6.20.3"))
    assert result.returncode == 127
    assert f"uv not found on the target as {uv}: install uv" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("template", HOSTILE)
def test_health_timeout_message_and_tail_take_the_log_path_literally(shell, template, pwned, tmp_path):
    log_dir = tmp_path / template.format(pwned=pwned).replace("/", "_")
    log_dir.mkdir()
    err_log = log_dir / "err.log"
    err_log.write_text("Traceback: the last line\n")
    # A port nothing listens on: the wait gives up after its timeout.
    result = run(shell, wait_healthy_script("http://127.0.0.1:9", 1, str(err_log)))
    assert result.returncode == 1
    assert f"Last lines of {err_log}:" in result.stderr
    assert "Traceback: the last line" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_say_expands_only_the_shell_values_it_is_given(shell, pwned):
    value = f"$(touch {pwned}/x) %s"
    result = run(shell, f"v={shlex.quote(value)}; " + say("got %s, not " + value.replace("%", "%%"), '"$v"'))
    assert result.stderr == f"got {value}, not {value}\n"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("template", HOSTILE)
def test_restore_steps_take_paths_literally(shell, template, pwned, tmp_path):
    """Each restore step, with a hostile devpi home and backup path, on a host without
    devpi: every step fails, and runs nothing the values name."""
    from operations import restore

    # ('%' is refused in devpi_home, config.SPECIAL_IN_HOME: it never reaches the host there)
    hostile = template.format(pwned=pwned).replace("/", "_").replace("%", "pct")
    home = tmp_path / hostile / "devpi"
    home.mkdir(parents=True)
    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_home": str(home)}, "/Users/alice")
    backup = str(tmp_path / hostile / "backups" / hostile)
    steps = [
        restore.verify_command(config, backup, 501), restore.import_command(config, backup),
        restore.fsck_command(config), restore.trial_command(config),
    ]
    for step in steps:
        result = run(shell, step)
        assert result.returncode != 0, step
    assert not Path(config.paths.restoring_dir).exists()  # the import's trap removed its dir


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("template", HOSTILE)
def test_upgrade_refusal_takes_the_paths_literally(shell, template, pwned, tmp_path):
    # The upgrade's first failure path: no live venv that reads the server dir's version.
    from operations.server_dir import upgrade_script

    # ('%' is refused in devpi_home, config.SPECIAL_IN_HOME: it never reaches the host there)
    home = tmp_path / template.format(pwned=pwned).replace("/", "_").replace("%", "pct")
    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_home": str(home),
                           "devpi_allow_export_import": True}, "/Users/alice")
    new = home / "venvs" / "new"
    (new / "bin").mkdir(parents=True)
    for name, body in (("devpi-import", "exit 0"), ("python", "echo 5")):
        (new / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
        (new / "bin" / name).chmod(0o755)
    (home / "server-dir").mkdir()
    (home / "server-dir" / ".serverversion").write_text("4")
    Path(config.paths.upgrade_pending).write_text(f"{new}\n")
    result = run(shell, upgrade_script(config, "gui/501"))
    assert result.returncode == 1
    assert f"{home}/server-dir holds database version 4, but the live venv (none) is no devpi-server" \
        in result.stderr
    assert not Path(config.paths.upgrade_pending).exists()

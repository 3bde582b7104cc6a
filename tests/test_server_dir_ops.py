"""The server dir across database versions (devpi_allow_export_import) and a server dir
brought over from elsewhere: what the plan refuses, what the operations yield, and the
export/import shell run for real with this project's devpi-server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from operations import devpi
from operations import server_dir as server_dir_ops
from pyinfra_devpi.config import build_config
from deploys._service import check_server_dir
from pyinfra_devpi.errors import DeployError

from .prepared import Meta, gnu_only_forms, run_op
from .test_operations import DOMAIN, FOUND, converged, fresh  # noqa: F401 (fixtures' data)
from pyinfra_devpi.preflight import with_tools

VENV = Path(sys.prefix)
OPT_IN = "rerun with `--data devpi_allow_export_import=true` (or set devpi_allow_export_import = True"


def make_config(**data):
    return with_tools(build_config({"devpi_root_password": "env:PW", "devpi_outside_url": "https://pypi.example.org",
                                    **data}, "/Users/alice"), FOUND)


def other_version(config):
    return {**converged(config).server_dir, "serverversion": "3"}


def test_another_database_version_is_refused_with_the_opt_in_command():
    config = make_config()
    with pytest.raises(DeployError) as error:
        check_server_dir(config, other_version(config))
    assert "is '3' but devpi-server 6.20.3 uses database version '4'" in str(error.value)
    assert "nothing was changed" in str(error.value) and OPT_IN in str(error.value)


def test_with_the_opt_in_another_version_passes_when_a_venv_is_built_only():
    config = make_config(devpi_allow_export_import=True)
    check_server_dir(config, other_version(config), venv_build=True)
    with pytest.raises(DeployError) as error:
        check_server_dir(config, other_version(config), venv_build=False,
                         live_venv={"devpi-server": "6.20.3", "database_version": "4"})
    assert "no venv is built here" in str(error.value)


def test_the_live_venvs_own_database_version_counts_for_its_major_release():
    # devpi-server 6.20.99 with database version 5 (after an upgrade): its own version
    # counts while it stays, and for a new venv of the same major (a devpi-web bump).
    config = make_config(devpi_server_version="6.20.99")
    found = {**converged(config).server_dir, "serverversion": "5"}
    live = {"devpi-server": "6.20.99", "database_version": "5"}
    check_server_dir(config, found, venv_build=False, live_venv=live)
    check_server_dir(config, found, venv_build=True, live_venv=live)
    with pytest.raises(DeployError):
        check_server_dir(config, found, venv_build=False, live_venv={**live, "database_version": "4"})
    # another major release: the table's version, here 6.x's "4" for 5.x's dir "3"
    with pytest.raises(DeployError):
        check_server_dir(make_config(), {**found, "serverversion": "3"}, venv_build=True,
                         live_venv={"devpi-server": "5.5.0", "database_version": "3"})


@pytest.mark.parametrize("field, fix", [("foreign_owned", "chown -R"), ("writable_by_others", "chmod -R go-w")])
def test_a_server_dir_brought_over_must_be_the_users_and_not_writable_by_others(field, fix):
    config = make_config()
    found = {**converged(config).server_dir, "secret_file": {"exists": False, "mode": None},
             "foreign_owned": {"count": 0, "first": None}, "writable_by_others": {"count": 0, "first": None}}
    check_server_dir(config, found)
    found[field] = {"count": 2, "first": config.paths.server_dir + "/.sqlite"}
    with pytest.raises(DeployError) as error:
        check_server_dir(config, found)
    assert fix in str(error.value) and "/.sqlite" in str(error.value) and "nothing was changed" in str(error.value)


def test_the_venv_build_refuses_or_hands_over_a_new_database_version():
    # venv_build.sh refuses (naming the opt-in) unless allow_export_import is set, then hands over
    refuse = devpi.build_venv_script(make_config(), "x").splitlines()
    assert "allow_export_import=''" in refuse and any(line.startswith("opt_in_hint=") and OPT_IN in line
                                                       for line in refuse)
    hand_over = devpi.build_venv_script(make_config(devpi_allow_export_import=True), "x").splitlines()
    assert "allow_export_import=1" in hand_over and """    printf '%s\\n' "$new" > "$pending"; exit 0""" in hand_over


def test_upgrade_runs_only_with_the_opt_in_after_a_venv_build():
    plain, opted = make_config(), make_config(devpi_allow_export_import=True)
    host = converged(opted)
    assert run_op(server_dir_ops.upgrade, host, config=plain, domain=DOMAIN, venv_op=Meta(True)) == []
    assert run_op(server_dir_ops.upgrade, host, config=opted, domain=DOMAIN, venv_op=Meta(False)) == []
    assert run_op(server_dir_ops.upgrade, fresh(opted), config=opted, domain=DOMAIN, venv_op=Meta(True)) == []
    host.paths[opted.paths.upgrade_pending] = {"kind": "file", "kib": 4}  # the build left a venv waiting
    wait, command = run_op(server_dir_ops.upgrade, host, config=opted, domain=DOMAIN, venv_op=Meta(True),
                           server_db_version="4", wanted_db_version="5")
    assert wait.startswith("# wait while a scheduled backup runs")  # backup.wait_for_backup
    script = command.function.shown_as  # run on the host, its messages shown in the run's output
    assert script.startswith("# the server dir's data to the new venv's database version")
    assert gnu_only_forms(script) == []
    # the plan lists every step, and reads no secret
    (steps,) = [m for m in host.logged if "devpi_allow_export_import" in m]
    for step in ("devpi-export with the live venv", "devpi-import with the new venv", "spare loopback port",
                 "server-dir.before-db4-<time> (kept)", "No secret is read"):
        assert step in steps


def test_adopt_runs_devpi_fsck_only_on_a_dir_not_managed_yet():
    config = make_config()
    assert run_op(server_dir_ops.adopt, converged(config), config=config) == []  # managed: secret exists
    assert run_op(server_dir_ops.adopt, fresh(config), config=config) == []  # new: nothing to check
    brought = converged(config)
    brought.server_dir = {**brought.server_dir, "secret_file": {"exists": False, "mode": None}}
    (command,) = run_op(server_dir_ops.adopt, brought, config=config)
    assert command.startswith(f"{config.paths.venv}/bin/devpi-fsck --serverdir {config.paths.server_dir} ")
    assert "nothing in it was changed" in command and gnu_only_forms(command) == []


# -- the shell functions, run for real with this project's devpi-server ---------------


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ei")
    cfg = root / "devpi-server.yml"
    cfg.write_text('devpi-server:\n  indexer-backend: "null"\n  argon2-memory-cost: 8192\n'
                   "  argon2-time-cost: 2\n  argon2-parallelism: 1\n")
    subprocess.run([VENV / "bin/devpi-init", "--configfile", cfg, "--serverdir", root / "sd", "--no-root-pypi"],
                   check=True, capture_output=True)
    return root, cfg


def run_functions(script: str) -> subprocess.CompletedProcess:
    functions = server_dir_ops.export_import_functions(60)
    return subprocess.run(["/bin/sh", "-c", functions + "\n" + script], capture_output=True, text=True, timeout=300)


def test_export_import_moves_the_data_and_the_copy_answers_on_a_spare_port(server_dir):
    root, cfg = server_dir
    before = sorted(p.name for p in (root / "sd").iterdir())
    done = run_functions(
        f'export_import {VENV} {root}/sd {VENV} {root}/new {root}/exp {cfg} {root}/log && check_on_spare {VENV} {root}/new '
        f'{cfg} {root}/exp && echo moved'
    )
    assert done.stdout.strip() == "moved", done.stderr
    assert {".serverversion", ".nodeinfo", ".sqlite"} <= {p.name for p in (root / "new").iterdir()}
    assert sorted(p.name for p in (root / "sd").iterdir()) == before  # the source is only read


def test_export_import_refuses_an_export_dir_that_exists(server_dir):
    root, cfg = server_dir
    (root / "busy").mkdir()
    (root / "busy" / "x").write_text("x")
    done = run_functions(f"export_import {VENV} {root}/sd {VENV} {root}/new2 {root}/busy {cfg} {root}/log2")
    assert done.returncode != 0 and "devpi-export of" in done.stderr
    assert "must not exist or be empty" in done.stderr  # devpi-export's own words, from its log
    assert not (root / "new2").exists()

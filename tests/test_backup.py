"""Scheduled backups and the restore without a host: the backup program run for real
with a stand-in devpi-export, the facts' commands in local shells, the operations
under prepared facts, the backup job's plist."""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facts.backup import Backups, BackupSource
from operations import backup as backup_op
from operations import launchd, restore
from pyinfra_devpi import backup as bk
from pyinfra_devpi import layout
from pyinfra_devpi.config import build_config
from pyinfra_devpi.errors import ConfigError
from pyinfra_devpi.render import render_backup_plist
from deploys._restore import backup_path

from .prepared import SHELLS, PreparedHost, gnu_only_forms, run_op, shell_lines
from .test_operations import launchctl_verbs

HOME = "/Users/alice"
DOMAIN = "gui/501"
BASE = {"devpi_outside_url": "https://pypi.example.org"}
PROGRAM = Path(bk.PROGRAM_SOURCE)


@pytest.fixture
def config():
    return build_config({**BASE, "devpi_backup": {"hour": 3, "minute": 17, "keep": 2}}, HOME)


# --------------------------------------------------------------------------- the program


def fake_export(tmp_path: Path, body: str) -> Path:
    """A stand-in devpi-export: its last argument is the export directory."""
    script = tmp_path / "devpi-export"
    script.write_text(f"#!{sys.executable}\nimport os, sys\nout = sys.argv[-1]\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


WRITES = """
os.makedirs(os.path.join(out, "alice", "dev"))
open(os.path.join(out, "dataindex.json"), "w").write('{"indexes": {}}')
open(os.path.join(out, "alice", "dev", "pkg-1.0.whl"), "wb").write(b"wheel bytes")
print("dumped index alice/dev")
"""


def run_program(tmp_path: Path, export: Path, *extra: str) -> subprocess.CompletedProcess:
    server_dir = tmp_path / "server-dir"
    server_dir.mkdir(exist_ok=True)
    (server_dir / ".serverversion").write_text("4\n")
    argv = [
        sys.executable, "-I", str(PROGRAM), "--export", str(export), "--configfile", "/dev/null",
        "--serverdir", str(server_dir), "--serverversion-file", str(server_dir / ".serverversion"),
        "--dest", str(tmp_path / "backups"), "--keep", "2", "--status", str(tmp_path / "status.json"),
        "--server-version", "6.20.3",
        "--names", layout.BACKUP_PREFIX, layout.BACKUP_MANIFEST, layout.BACKUP_EXPORT_DIR, layout.TRANSIENT_SUFFIX,
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def listing(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "backups"))


def test_a_backup_is_an_export_with_a_manifest_under_a_timestamped_name(tmp_path):
    export = fake_export(tmp_path, WRITES + "assert '--include-mirrored-files' not in sys.argv\n")
    result = run_program(tmp_path, export)
    assert result.returncode == 0, result.stdout + result.stderr
    (name,) = listing(tmp_path)
    assert name.startswith("devpi-backup-") and name.endswith("Z")
    manifest = json.loads((tmp_path / "backups" / name / "manifest.json").read_text())
    assert manifest["serverversion"] == "4" and manifest["devpi_server"] == "6.20.3"
    paths = {f["path"]: f for f in manifest["files"]}
    assert set(paths) == {"dataindex.json", "alice/dev/pkg-1.0.whl"}
    import hashlib
    assert paths["alice/dev/pkg-1.0.whl"]["sha256"] == hashlib.sha256(b"wheel bytes").hexdigest()
    assert manifest["size"] == sum(f["size"] for f in manifest["files"])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["last_success"]["name"] == name and status["last_success"]["size"] == manifest["size"]
    assert "last_failure" not in status
    assert "dumped index alice/dev" in result.stdout  # devpi-export's output goes to the job's log


def test_mirrored_files_are_asked_for(tmp_path):
    export = fake_export(tmp_path, WRITES + "assert '--include-mirrored-files' in sys.argv\n")
    assert run_program(tmp_path, export, "--include-mirrored-files").returncode == 0


def test_only_the_newest_good_backups_are_kept(tmp_path):
    export = fake_export(tmp_path, WRITES)
    backups = tmp_path / "backups"
    backups.mkdir()
    for old in ("devpi-backup-20200101T000000Z", "devpi-backup-20210101T000000Z"):
        (backups / old).mkdir()
        (backups / old / "manifest.json").write_text("{}")
    # not ours, or not finished: never pruned
    (backups / "devpi-backup-20190101T000000Z").mkdir()  # no manifest
    (backups / "notes").mkdir()
    assert run_program(tmp_path, export).returncode == 0
    names = listing(tmp_path)
    assert "devpi-backup-20200101T000000Z" not in names
    assert "devpi-backup-20210101T000000Z" in names and "notes" in names
    assert "devpi-backup-20190101T000000Z" in names
    assert len(names) == 4  # the new one, the newest old one, and the two that are not good backups


def test_a_failed_export_keeps_older_backups_and_records_the_failure(tmp_path):
    good = fake_export(tmp_path, WRITES)
    assert run_program(tmp_path, good).returncode == 0
    (kept,) = listing(tmp_path)
    failing = fake_export(tmp_path, WRITES + "print('OSError: [Errno 28] No space left on device')\nsys.exit(3)\n")
    result = run_program(tmp_path, failing)
    assert result.returncode == 3
    assert listing(tmp_path) == [kept]  # and its temporary dir is gone
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["last_success"]["name"] == kept
    failure = status["last_failure"]
    assert failure["exit_code"] == 3 and failure["log_tail"][-1].endswith("No space left on device")


def test_a_killed_runs_temporary_dir_is_removed_but_a_live_ones_is_not(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    gone = 2**22 + 12345  # above Linux's and macOS's pid limits: no process has it
    dead = backups / f".devpi-backup-20200101T000000Z-{gone}.pyinfra-new"
    live = backups / f".devpi-backup-20200101T000000Z-{os.getpid()}.pyinfra-new"
    dead.mkdir()
    live.mkdir()
    assert run_program(tmp_path, fake_export(tmp_path, WRITES)).returncode == 0
    assert not dead.exists() and live.exists()


# --------------------------------------------------------------------------- the facts


def run_fact(fact_cls, shell="/bin/sh", **kwargs):
    command = fact_cls().command(**kwargs)
    result = subprocess.run([shell, "-c", str(command)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert gnu_only_forms(str(command)) == []
    return fact_cls().process(result.stdout.splitlines())


@pytest.mark.parametrize("shell", SHELLS)
def test_backups_fact(tmp_path, shell):
    backups = tmp_path / "back ups"
    status = tmp_path / "status.json"
    empty = run_fact(Backups, shell, status_file=str(status), directory=str(backups))
    assert (empty["count"], empty["last_success"], empty["last_failure"]) == (0, None, None)
    assert run_program(tmp_path, fake_export(tmp_path, WRITES), "--dest", str(backups)).returncode == 0
    (backups / ".devpi-backup-20200101T000000Z-1.pyinfra-new").mkdir()  # not counted
    found = run_fact(Backups, shell, status_file=str(status), directory=str(backups))
    assert found["count"] == 1 and found["newest"] == found["last_success"]["name"]
    assert abs(found["now"] - found["last_success"]["epoch"]) < 60


def test_backup_source_fact(tmp_path):
    assert run_fact(BackupSource, path=str(tmp_path / "none")) is None
    assert run_program(tmp_path, fake_export(tmp_path, WRITES)).returncode == 0
    (name,) = listing(tmp_path)
    found = run_fact(BackupSource, path=str(tmp_path / "backups" / name))
    assert found["has_manifest"] and found["has_dataindex"]
    assert found["name"] == name and found["file_count"] == 2 and found["serverversion"] == "4"


def test_stale_backups_are_warned_about():
    now = 1_800_000_000
    fresh = {"now": now, "last_success": {"epoch": now - 3600, "name": "b", "time": "t"}, "last_failure": None}
    assert bk.staleness(fresh, "/b") is None
    assert bk.staleness({"now": now, "last_success": None, "last_failure": None}, "/b") is None  # never ran
    old = {**fresh, "last_success": {"epoch": now - 49 * 3600, "name": "b", "time": "t"}}
    assert "2 d 1 h old" in bk.staleness(old, "/b") and "twice the daily schedule" in bk.staleness(old, "/b")
    failing = {"now": now, "last_success": None,
               "last_failure": {"time": "t", "exit_code": 74, "log_tail": ["a", "No space left on device"]}}
    message = bk.staleness(failing, "/b")
    assert "no backup of devpi has succeeded yet" in message and "exit 74" in message and "No space" in message


# --------------------------------------------------------------------------- the job


def test_the_backup_plist_runs_the_program_daily_and_never_at_load(config):
    plist = plistlib.loads(render_backup_plist(config).encode())
    assert plist["Label"] == "net.devpi.backup"
    assert plist["StartCalendarInterval"] == {"Hour": 3, "Minute": 17}
    assert "RunAtLoad" not in plist and "KeepAlive" not in plist
    arguments = plist["ProgramArguments"]
    assert arguments[:3] == [f"{HOME}/devpi/venv/bin/python", "-I", f"{HOME}/devpi/bin/devpi-backup.py"]
    assert arguments[arguments.index("--dest") + 1] == f"{HOME}/devpi/backups"
    assert arguments[arguments.index("--keep") + 1] == "2"
    assert "--include-mirrored-files" not in arguments
    assert plist["StandardOutPath"] == plist["StandardErrorPath"] == f"{HOME}/Library/Logs/net.devpi.backup.log"


def agent(host, config, keep_running=False):
    paths = config.paths
    return run_op(launchd.agent, host, label=paths.backup_label, plist=render_backup_plist(config),
                  plist_path=paths.backup_plist_file, domain=DOMAIN, directories=[paths.log_dir],
                  keep_running=keep_running)


def verbs(commands):
    return [v.removesuffix(" -k") for v in launchctl_verbs(commands)]


def test_the_backup_job_is_loaded_but_never_started(config):
    paths = config.paths
    host = PreparedHost()
    assert verbs(agent(host, config)) == ["enable", "bootstrap"]
    loaded = {"loaded": True, "source": "print", "state": "not running", "pid": None, "disabled": False,
              "program": f"{HOME}/devpi/venv/bin/python",
              "arguments": plistlib.loads(render_backup_plist(config).encode())["ProgramArguments"],
              "path": paths.backup_plist_file, "working_directory": paths.home,
              "stdout_path": paths.backup_log, "stderr_path": paths.backup_log,
              "environment": {"LANG": "en_US.UTF-8", "PYTHONUNBUFFERED": "1"}}
    converged = PreparedHost(jobs={paths.backup_label: loaded},
                             files={paths.backup_plist_file: render_backup_plist(config)})
    assert agent(converged, config) == []
    assert converged.noops == [f"{DOMAIN}/net.devpi.backup is loaded, enabled and its current definition"]
    # the schedule changed: the job is reloaded, still not started
    moved = build_config({**BASE, "devpi_backup": {"hour": 4, "minute": 0, "keep": 2}}, HOME)
    assert verbs(agent(converged, moved)) == ["bootout", "bootstrap"]
    # devpi's own job, by contrast, is kickstarted when not running
    assert verbs(agent(converged, config, keep_running=True)) == ["kickstart"]


def test_unsetting_devpi_backup_removes_the_job_and_its_plist_but_no_backup(config):
    paths = config.paths
    host = PreparedHost(jobs={paths.backup_label: {"loaded": True}},
                        files={paths.backup_plist_file: render_backup_plist(config)})
    commands = run_op(launchd.absent, host, label=paths.backup_label, domain=DOMAIN,
                      plist_path=paths.backup_plist_file)
    assert verbs(commands) == ["bootout"]
    assert commands[-1] == f"rm -f {paths.backup_plist_file}"
    assert not any(config.backup_dir in c for c in shell_lines(commands))
    gone = PreparedHost(jobs={paths.backup_label: None})
    assert run_op(launchd.absent, gone, label=paths.backup_label, domain=DOMAIN,
                  plist_path=paths.backup_plist_file) == []
    assert gone.noops == ["no LaunchAgent net.devpi.backup"]


def test_the_program_is_written_once(config):
    host = PreparedHost()
    commands = run_op(backup_op.program, host, config=config)
    assert commands[-1].startswith("{ chmod 755 ")
    same = PreparedHost(files={config.paths.backup_program: bk.program_text()})
    assert run_op(backup_op.program, same, config=config) == []


def test_reads_are_declared(config):
    unset = build_config(BASE, HOME)
    assert backup_op.reads(unset, DOMAIN) == launchd.reads("net.devpi.backup", DOMAIN, unset.paths.backup_plist_file)
    assert config.paths.backup_program in backup_op.reads(config, DOMAIN)


# --------------------------------------------------------------------------- the restore


def test_restore_source_names(config):
    assert backup_path(config, "devpi-backup-20261130T031700Z", HOME) == f"{HOME}/devpi/backups/devpi-backup-20261130T031700Z"
    assert backup_path(config, "/Volumes/b/devpi-backup-x/", HOME) == "/Volumes/b/devpi-backup-x"
    assert backup_path(config, "~/b/x", HOME) == f"{HOME}/b/x"
    for bad in ("", "a/b", "/x/../etc", "x\ny", 5, ".."):
        with pytest.raises(ConfigError) as error:
            backup_path(config, bad, HOME)
        assert "`devpi_restore_from`" in str(error.value)


def test_restore_steps(config):
    path = f"{HOME}/devpi/backups/devpi-backup-20261130T031700Z"
    host = PreparedHost(sources={path: {"path": path, "has_manifest": True, "has_dataindex": True}})
    steps = run_op(restore.server_dir, host, config=config, backup=path, uid=501, domain=DOMAIN, job={"loaded": True})
    firsts = [step.splitlines()[0] for step in steps]
    assert [f.split(" ")[1] for f in firsts] == ["verify", "devpi-import", "devpi-fsck", "trial:", "stop"]
    swap = steps[-1]
    # (their order, and the rollback: tests/test_restore_swap.py runs the script)
    assert "launchctl bootout" in swap and "import ctypes" in swap and "launchctl bootstrap" in swap
    assert f"keep_prefix={HOME}/devpi/server-dir.before-restore-" in swap
    assert "--serverdir \"$new\"" in steps[1] and "rm -rf \"$new\"" in steps[1]
    # the live server dir is never removed
    for step in steps:
        assert f"rm -rf {HOME}/devpi/server-dir " not in step + " "
        assert gnu_only_forms(step) == []
    # a job that is not loaded is only bootstrapped
    unloaded = run_op(restore.server_dir, host, config=config, backup=path, uid=501, domain=DOMAIN, job=None)
    assert "loaded=''" in unloaded[-1]


@pytest.mark.parametrize("exchange", [True, False])
def test_the_swap_keeps_the_previous_dir(tmp_path, exchange):
    new, live, keep = tmp_path / "new", tmp_path / "live", tmp_path / "keep"
    new.mkdir()
    (new / "which").write_text("restored")
    live.mkdir()
    (live / "which").write_text("previous")
    code = restore.SWAP if exchange else restore.SWAP.replace('hasattr(libc, "renameat2")', "False")
    subprocess.run([sys.executable, "-c", code, str(new), str(live), str(keep)], check=True, capture_output=True)
    assert (live / "which").read_text() == "restored" and (keep / "which").read_text() == "previous"
    assert not new.exists()
    # no live dir at all (it was lost): the restored one just moves in
    new.mkdir()
    (new / "which").write_text("again")
    os.rename(live, tmp_path / "elsewhere")
    subprocess.run([sys.executable, "-c", restore.SWAP, str(new), str(live), str(tmp_path / "k2")], check=True)
    assert (live / "which").read_text() == "again" and not (tmp_path / "k2").exists()


def test_restore_refuses_what_is_not_a_finished_backup():
    from pyinfra_devpi.errors import DeployError
    from deploys._restore import check_source

    for found, says in (
        (None, "there is no backup at /b"),
        ({"has_manifest": False, "has_dataindex": True}, "has no manifest.json"),
        ({"has_manifest": True, "has_dataindex": False}, "not a devpi-export dump"),
    ):
        with pytest.raises(DeployError) as error:
            check_source("/b", found)
        assert says in str(error.value)
    check_source("/b", {"has_manifest": True, "has_dataindex": True})


def test_a_restore_restarts_a_launchdaemon_through_sudo():
    from operations.restore import swap_command
    from operations.server_dir import upgrade_script
    from pyinfra_devpi.config import build_config

    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_launchd_scope": "daemon"},
                          "/Users/alice")
    swap = swap_command(config, "system", loaded=True, sudo="sudo -n ")
    assert "$(sudo -n launchctl bootout system/net.devpi " in swap
    assert "sudo -n launchctl enable system/net.devpi" in swap
    assert "out=$(sudo -n launchctl bootstrap system /Library/LaunchDaemons/net.devpi.plist 2>&1)" in swap
    upgrade = upgrade_script(config, "system", "sudo -n ")
    assert "$(sudo -n launchctl bootout system/net.devpi " in upgrade
    assert "out=$(sudo -n launchctl bootstrap system /Library/LaunchDaemons/net.devpi.plist 2>&1)" in upgrade

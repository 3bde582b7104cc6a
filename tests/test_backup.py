"""Scheduled backups and the restore without a host: the backup program run for real
with a stand-in devpi-export, the facts' commands in local shells, the operations
under prepared facts, the backup job's plist."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from facts.backup import Backups, BackupSource
from operations import backup as backup_op
from operations import launchd, restore
from pyinfra_devpi import backup as bk
from pyinfra_devpi import layout
from pyinfra_devpi.config import build_config
from pyinfra_devpi.errors import ConfigError
from pyinfra_devpi.layout import LockPaths
from pyinfra_devpi.render import render_backup_plist
from deploys._restore import backup_path

from .prepared import SHELLS, PreparedHost, gnu_only_forms, run_op, shell_lines
from .test_deploy_lock import dead_pid, hold, lstart, state
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


def program_argv(tmp_path: Path, export: Path, *extra: str) -> list[str]:
    server_dir = tmp_path / "server-dir"
    server_dir.mkdir(exist_ok=True)
    (server_dir / ".serverversion").write_text("4\n")
    argv = [
        sys.executable, "-I", str(PROGRAM), "--export", str(export), "--configfile", "/dev/null",
        "--serverdir", str(server_dir), "--serverversion-file", str(server_dir / ".serverversion"),
        "--dest", str(tmp_path / "backups"), "--keep", "2", "--status", str(tmp_path / "status.json"),
        "--server-version", "6.20.3",
        "--deploy-lock", str(tmp_path / "deploy.lock"), "--backup-lock", str(tmp_path / "backup.lock"),
        "--names", *bk.NAMES,
        *extra,
    ]
    return argv


def run_program(tmp_path: Path, export: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(program_argv(tmp_path, export, *extra), capture_output=True, text=True, timeout=60)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


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


def forge(backups: Path, name: str, epoch: int | None = None) -> Path:
    """A backup as the program completes it (export, manifest, marker), named ``name``."""
    from pyinfra_devpi import backup_program as program

    program.set_names(*bk.NAMES)
    path = backups / name
    (path / "export" / "alice").mkdir(parents=True)
    (path / "export" / "dataindex.json").write_text('{"indexes": {}}')
    (path / "export" / "alice" / "pkg-1.0.whl").write_bytes(b"wheel " + name.encode())
    files = program.manifest_of(str(path / "export"))
    epoch = epoch if epoch is not None else 1_600_000_000
    manifest = {"name": name, "created": program.iso(epoch), "epoch": epoch, "files": files,
                "file_count": len(files), "size": sum(f["size"] for f in files)}
    program.write_json(str(path / layout.BACKUP_MANIFEST), manifest, 1)
    program.write_json(str(path / layout.BACKUP_MARKER),
                       {"name": name, "manifest_sha256": program.sha256_of(str(path / layout.BACKUP_MANIFEST))}, 1)
    return path


def plant(backups: Path, name: str) -> Path:
    """What another user plants: a backup-named dir with a manifest.json."""
    (backups / name).mkdir()
    (backups / name / "manifest.json").write_text('{"files": []}')
    return backups / name


def status_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "status.json").read_text())


PLANTED = ("devpi-backup-29990101T000000Z", "devpi-backup-29990102T000000Z")


def test_planted_backups_in_a_shared_dir_never_cost_a_real_backup(tmp_path):
    """Issue 22 item 1: another user who can write the backup dir plants newer-named
    dirs; the program used to prune every real backup right after writing it."""
    backups = tmp_path / "backups"
    backups.mkdir()
    real = forge(backups, "devpi-backup-20200101T000000Z").name
    for name in PLANTED:
        plant(backups, name)
    backups.chmod(0o777)
    result = run_program(tmp_path, fake_export(tmp_path, WRITES))
    assert result.returncode == 77, result.stdout
    assert listing(tmp_path) == sorted([real, *PLANTED])  # nothing written, nothing removed
    failure = status_of(tmp_path)["last_failure"]
    assert f"{backups} is writable by group and others (mode 0777)" in failure["refused"]
    assert "nothing was backed up or removed" in failure["log_tail"][-1]
    assert f"{backups} is writable by group and others" in result.stdout  # the job's log
    # the Backups fact: nothing there counts, and the status calls it a problem
    found = run_fact(Backups, status_file=str(tmp_path / "status.json"), directory=str(backups),
                     python=sys.executable)
    assert found["count"] == 0 and found["newest"] is None
    assert "writable by group and others" in found["dir_problem"]
    assert {u["name"] for u in found["unverified"]} == {real, *PLANTED}
    assert bk.problems(found, str(backups)) and "chmod go-w" in bk.problems(found, str(backups))[0]


def test_planted_dirs_are_reported_and_never_pruned_and_one_backup_is_replaced_per_run(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    ours = [forge(backups, f"devpi-backup-20{y}0101T000000Z").name for y in (19, 20, 21)]
    for name in PLANTED:
        plant(backups, name)
    (backups / "notes").mkdir()
    result = run_program(tmp_path, fake_export(tmp_path, WRITES))  # keep=2
    assert result.returncode == 0, result.stdout
    status = status_of(tmp_path)
    new = status["last_success"]["name"]
    # one new backup, so at most one old one goes: the oldest verified
    assert status["last_success"]["pruned"] == [ours[0]]
    assert listing(tmp_path) == sorted([*ours[1:], new, *PLANTED, "notes"])
    assert {u["name"]: u["reason"] for u in status["unverified"]} == {
        name: f"{backups / name} has no {layout.BACKUP_MARKER}: not completed by this backup program" for name in PLANTED}
    assert "cannot vouch for" in result.stdout
    # the program's own backup is one it vouches for; the next run replaces one more
    found = run_fact(Backups, status_file=str(tmp_path / "status.json"), directory=str(backups),
                     python=sys.executable)
    assert found["names"] == [*ours[1:], new] and found["newest"] == new and found["dir_problem"] is None
    assert any("devpi-backup-29990101T000000Z in the backup dir is not counted" in w
               for w in bk.warnings(found, str(backups)))


def untrust_symlink(path: Path):
    (path / "export" / "alice" / "pkg-1.0.whl").unlink()
    (path / "export" / "alice" / "pkg-1.0.whl").symlink_to(path / "export" / "dataindex.json")
    return "export/alice/pkg-1.0.whl is a symlink"


def untrust_fifo(path: Path):
    os.mkfifo(path / "export" / "pipe")
    return "export/pipe is a FIFO"


def untrust_group_writable_file(path: Path):
    (path / "export" / "dataindex.json").chmod(0o664)
    return "export/dataindex.json is writable by group (mode 0664)"


def untrust_world_writable_dir(path: Path):
    (path / "export" / "alice").chmod(0o777)
    return "export/alice is writable by group and others (mode 0777)"


def untrust_unlisted_file(path: Path):
    (path / "export" / "alice" / "extra.whl").write_bytes(b"x")
    return "export/alice/extra.whl is not in the manifest"


def untrust_missing_file(path: Path):
    (path / "export" / "alice" / "pkg-1.0.whl").unlink()
    return "export/alice/pkg-1.0.whl is missing"


def untrust_renamed_copy(path: Path):
    # a copy of another backup, put under this name: its marker names the original
    marker = json.loads((path / layout.BACKUP_MARKER).read_text())
    (path / layout.BACKUP_MARKER).write_text(json.dumps({**marker, "name": "devpi-backup-19990101T000000Z"}))
    return f"{layout.BACKUP_MARKER} does not name this backup"


def untrust_edited_manifest(path: Path):
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    return "manifest.json is not the manifest this backup program wrote"


@pytest.mark.parametrize("untrust", [untrust_symlink, untrust_fifo, untrust_group_writable_file,
                                     untrust_world_writable_dir, untrust_unlisted_file, untrust_missing_file,
                                     untrust_renamed_copy, untrust_edited_manifest])
def test_a_backup_the_program_cannot_vouch_for_is_reported_and_kept(tmp_path, untrust):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    odd = forge(backups, "devpi-backup-20190101T000000Z")
    says = untrust(odd)
    kept = [forge(backups, f"devpi-backup-20{y}0101T000000Z").name for y in (20, 21)]
    result = run_program(tmp_path, fake_export(tmp_path, WRITES))
    assert result.returncode == 0, result.stdout
    status = status_of(tmp_path)
    # the oldest it vouches for goes, never the odd one
    assert status["last_success"]["pruned"] == [kept[0]]
    assert odd.name in listing(tmp_path)
    (reported,) = status["unverified"]
    assert reported["name"] == odd.name and says in reported["reason"] and str(odd) in reported["reason"]
    # the status and the plan do not count it either (a look at its own entries every
    # time, and what the run's check of every file found)
    found = run_fact(Backups, status_file=str(tmp_path / "status.json"), directory=str(backups),
                     python=sys.executable)
    assert found["names"] == [kept[1], status["last_success"]["name"]]
    assert [u["name"] for u in found["unverified"]] == [odd.name]


def test_a_backup_is_the_users_alone_whatever_the_umask(tmp_path):
    """An export holds password hashes; and a group-writable backup is one the program
    could not vouch for later."""
    argv = program_argv(tmp_path, fake_export(tmp_path, WRITES))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, preexec_fn=lambda: os.umask(0o002))
    assert result.returncode == 0, result.stdout
    (name,) = listing(tmp_path)
    modes = {p: p.stat().st_mode & 0o777 for p in [tmp_path / "backups", *(tmp_path / "backups").rglob("*")]}
    assert {m & 0o077 for m in modes.values()} == {0}, modes
    found = run_fact(Backups, status_file=str(tmp_path / "status.json"), directory=str(tmp_path / "backups"),
                     python=sys.executable)
    assert found["names"] == [name] and found["unverified"] == []


def test_ownership_is_compared_with_the_user_the_backups_run_as(tmp_path):
    from pyinfra_devpi import backup_program as program

    program.set_names(*bk.NAMES)
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    path = forge(backups, "devpi-backup-20200101T000000Z")
    me, other = os.getuid(), os.getuid() + 1
    assert program.vouch(str(path), me)[1] is None
    assert program.vouch(str(path), other)[1] == f"{path} is owned by uid {me}, not by uid {other} (the user the backups run as)"
    assert program.dir_problem(str(backups), other).startswith(f"{backups} is owned by uid {me}")
    found = program.survey(str(backups), other)
    assert found["backups"] == [] and found["problem"] and found["unverified"][0]["name"] == path.name
    # a backup dir that is a symlink is judged by what it points at
    (tmp_path / "link").symlink_to(backups)
    assert program.dir_problem(str(tmp_path / "link"), me) is None


def test_a_killed_runs_leftover_holding_a_symlink_is_reported_not_removed(tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir(mode=0o700)
    gone = 2**22 + 12345
    odd = backups / f".devpi-backup-20200101T000000Z-{gone}.pyinfra-new"
    odd.mkdir()
    (odd / "elsewhere").symlink_to(tmp_path)
    assert run_program(tmp_path, fake_export(tmp_path, WRITES)).returncode == 0
    assert odd.exists() and (tmp_path / "server-dir").exists()
    (reported,) = status_of(tmp_path)["unverified"]
    assert reported["name"] == odd.name and "is a symlink" in reported["reason"]


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


# --------------------------------------------------------------------------- the locks
# Issue 23 item 3: a scheduled backup and a restore or database upgrade exclude each
# other. The backup waits (then skips) while a deploy holds the deploy lock; a restore
# and an upgrade (both under the deploy lock) wait for the backup's own lock.


def lock_paths(tmp_path: Path) -> LockPaths:
    return LockPaths(str(tmp_path))  # run_program's --deploy-lock is <tmp_path>/.pyinfra-deploy.lock


def test_a_backup_skips_while_a_deploy_holds_its_lock_and_says_so(tmp_path):
    paths = lock_paths(tmp_path)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        hold(paths, run_id="restore-run", pid=holder.pid)
        result = run_program(tmp_path, fake_export(tmp_path, WRITES), "--deploy-lock", paths.lock, "--lock-wait", "0")
        assert result.returncode == 75, result.stdout
        skipped = status_of(tmp_path)["last_skipped"]
        assert skipped["reason"].startswith(f"a deploy holds {paths.lock} (run restore-run by someone@elsewhere")
        assert "for longer than 0s" in skipped["reason"] and "SKIPPED" in result.stdout
        assert not (tmp_path / "backups").exists() and not (tmp_path / "backup.lock").exists()
        # the status says so
        found = run_fact(Backups, status_file=str(tmp_path / "status.json"), directory=str(tmp_path / "backups"),
                         python=sys.executable)
        assert "was skipped: a deploy holds" in bk.staleness(found, "/b")
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the lock is stale, and the backup does not wait for it
    result = run_program(tmp_path, fake_export(tmp_path, WRITES), "--deploy-lock", paths.lock, "--lock-wait", "0")
    assert result.returncode == 0, result.stdout
    assert "waited_for" not in status_of(tmp_path)["last_success"]


def test_a_backup_waits_for_the_deploy_to_finish_and_records_the_wait(tmp_path):
    paths = lock_paths(tmp_path)
    hold(paths, run_id="upgrade-run")  # this test's process: live
    export = fake_export(tmp_path, WRITES)
    out = tmp_path / "program.out"
    with out.open("w") as fh:
        proc = subprocess.Popen(program_argv(tmp_path, export, "--deploy-lock", paths.lock, "--lock-wait", "120"),
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "waiting up to 120s: a deploy holds" in out.read_text(), "the backup to wait")
        assert not (tmp_path / "backups").exists()  # nothing exported while the deploy holds the lock
        shutil.rmtree(paths.lock)  # the deploy ends
        assert proc.wait(timeout=60) == 0, out.read_text()
    finally:
        proc.kill()
    success = status_of(tmp_path)["last_success"]
    assert success["waited_for"].startswith(f"a deploy holds {paths.lock} (run upgrade-run")
    assert success["waited_seconds"] > 0
    assert len(listing(tmp_path)) == 1


def test_a_second_backup_skips_while_one_runs(tmp_path):
    backup_lock = tmp_path / "backup.lock"
    backup_lock.mkdir()
    (backup_lock / "owner").write_text(f"run=backup-1\npid={os.getpid()}\nstarted={lstart(os.getpid())}\n"
                                       f"host={os.uname().nodename}\nsince=then\nby=the backup job\n")
    result = run_program(tmp_path, fake_export(tmp_path, WRITES))
    assert result.returncode == 75
    assert status_of(tmp_path)["last_skipped"]["reason"].startswith(f"another backup holds {backup_lock}")
    assert backup_lock.exists()  # not ours to remove
    # a stale one (its process gone) is taken over
    (backup_lock / "owner").write_text(f"run=backup-1\npid={dead_pid()}\nstarted=x\nhost={os.uname().nodename}\n")
    assert run_program(tmp_path, fake_export(tmp_path, WRITES)).returncode == 0
    assert not backup_lock.exists()


BLOCKS = WRITES + """
import time
while not os.path.exists(os.path.join(os.path.dirname(sys.argv[0]), "go")):
    time.sleep(0.05)
"""


def test_a_restore_or_upgrade_waits_for_a_running_backup(tmp_path):
    """``backup.wait_for_backup``: the command a restore and an upgrade run first."""
    home = tmp_path / "devpi home"
    home.mkdir()
    config = build_config({**BASE, "devpi_home": str(home), "devpi_lock_wait": 1}, HOME)
    export = fake_export(tmp_path, BLOCKS)
    out = tmp_path / "program.out"
    with out.open("w") as fh:
        proc = subprocess.Popen(program_argv(tmp_path, export, "--backup-lock", config.paths.backup_lock),
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: os.path.exists(config.paths.backup_lock_owner) and "running" in out.read_text(),
                 "the backup to start")
        # the restore gives up after devpi_lock_wait, having changed nothing
        script = bk.wait_for_backup(config)
        assert gnu_only_forms(script) == []
        gave_up = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert gave_up.returncode == 75
        assert f"a scheduled backup (process {proc.pid}, since " in gave_up.stderr
        assert f"still holds {config.paths.backup_lock} after 1s; nothing was changed" in gave_up.stderr
        # with time to wait, it returns once the backup has finished
        patient = bk.wait_for_backup(build_config({**BASE, "devpi_home": str(home), "devpi_lock_wait": 120}, HOME))
        waiter = subprocess.Popen(["/bin/sh", "-c", patient], stderr=subprocess.PIPE, text=True)
        wait_for(lambda: waiter.poll() is None and proc.poll() is None, "both to run")
        (tmp_path / "go").touch()
        assert waiter.wait(timeout=60) == 0
        assert "waiting for the scheduled backup" in waiter.stderr.read()
        assert "last_success" in status_of(tmp_path)  # finished before the restore goes on
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    # no backup, or a stale lock: no wait
    assert subprocess.run(["/bin/sh", "-c", script], timeout=10).returncode == 0
    Path(config.paths.backup_lock).mkdir()
    Path(config.paths.backup_lock_owner).write_text(f"pid={dead_pid()}\nstarted=x\nhost={os.uname().nodename}\n")
    assert subprocess.run(["/bin/sh", "-c", script], timeout=10).returncode == 0


def test_the_program_reads_the_deploy_lock_as_its_scripts_do(tmp_path):
    from pyinfra_devpi import backup_program as program

    paths = lock_paths(tmp_path / "home")
    assert program.lock_holder(paths.lock) is None and state("/bin/sh", paths)["state"] == "free"
    hold(paths)
    assert program.lock_holder(paths.lock)["run"] == "other" and state("/bin/sh", paths)["state"] == "held"
    shutil.rmtree(paths.lock)
    hold(paths, pid=dead_pid())
    assert program.lock_holder(paths.lock) is None and state("/bin/sh", paths)["state"] == "stale"
    shutil.rmtree(paths.lock)
    hold(paths, started="Mon Jan  1 00:00:00 2001")  # the pid now belongs to another process
    assert program.lock_holder(paths.lock) is None and state("/bin/sh", paths)["state"] == "stale"
    shutil.rmtree(paths.lock)
    hold(paths, pid=dead_pid(), host="another-host")  # cannot be checked from here: held
    assert program.lock_holder(paths.lock) is not None and state("/bin/sh", paths)["state"] == "held"


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
    args = dict(status_file=str(status), directory=str(backups), python=sys.executable)
    empty = run_fact(Backups, shell, **args)
    assert (empty["count"], empty["backups"], empty["last_success"], empty["last_failure"]) == (0, [], None, None)
    assert run_program(tmp_path, fake_export(tmp_path, WRITES), "--dest", str(backups)).returncode == 0
    (backups / ".devpi-backup-20200101T000000Z-1.pyinfra-new").mkdir()  # not counted
    found = run_fact(Backups, shell, **args)
    assert found["count"] == 1 and found["newest"] == found["last_success"]["name"]
    (newest,) = found["backups"]
    assert newest["files"] == 2 and abs(found["now"] - newest["epoch"]) < 60
    # no venv yet: the dir is not looked at, and nothing is said about it
    unknown = run_fact(Backups, shell, **{**args, "python": str(tmp_path / "no-venv/bin/python")})
    assert unknown["backups"] is None and unknown["count"] == 0 and bk.warnings(unknown, "/b") == []


def test_the_backups_counted_are_those_in_the_dir_not_the_last_recorded_success(tmp_path):
    """Issue 22 item 7: after devpi_backup's dir moved, the old dir's backup was named as
    the last good one; a backup removed from the dir was still counted."""
    old, new = tmp_path / "old", tmp_path / "new"
    assert run_program(tmp_path, fake_export(tmp_path, WRITES), "--dest", str(old)).returncode == 0
    recorded = status_of(tmp_path)["last_success"]["name"]
    new.mkdir(mode=0o700)
    found = run_fact(Backups, status_file=str(tmp_path / "status.json"), directory=str(new), python=sys.executable)
    assert found["count"] == 0 and found["newest"] is None
    message = bk.staleness(found, str(new))
    assert message.startswith(f"no verified backup of devpi in {new}")
    assert f"the last recorded success, {recorded}" in message and "is not a verified backup" in message
    # and in the status: counted 0, the old dir's backup not named as the newest
    from deploys import _status as status

    data = {**BASE, "devpi_backup": {"hour": 3, "minute": 17, "keep": 2, "dir": str(new)}}
    probe = build_config(data, status.PROBE_HOME)
    backups_read, usage_read = status._backups(probe)
    report = status.backups_report(status.Found(build_config(data, HOME), DOMAIN,
                                                {backups_read: found, usage_read: None}, {}), probe)
    assert report.fields["count"] == 0 and report.fields["newest"] is None
    assert any(w.startswith("no verified backup") for w in report.warnings)
    row = dict(status.summary_lines({"backups": report.fields}))["backups"]
    assert row.startswith(f"0 verified in {new}") and "newest none" in row and recorded not in row


def test_stale_backups_are_warned_about():
    now = 1_800_000_000

    def found(epoch=None, **records):
        backups = [{"name": "devpi-backup-b", "epoch": epoch, "created": "t"}] if epoch else []
        return {"now": now, "backups": backups, "last_success": None, "last_failure": None, "last_skipped": None,
                **records}

    assert bk.staleness(found(now - 3600), "/b") is None
    assert bk.staleness(found(), "/b") is None  # never ran
    assert bk.staleness(None, "/b") is None
    old = bk.staleness(found(now - 49 * 3600), "/b")
    assert "newest verified backup of devpi is 2 d 1 h old (devpi-backup-b" in old
    assert "twice the daily schedule" in old
    failure = {"time": "t", "epoch": now - 100, "exit_code": 74, "log_tail": ["a", "No space left on device"]}
    message = bk.staleness(found(last_failure=failure), "/b")
    assert "no verified backup of devpi in /b" in message and "exit 74" in message and "No space" in message
    skipped = {"time": "t2", "epoch": now - 50, "reason": "a deploy holds /l"}
    assert "the backup at t2 was skipped: a deploy holds /l" in bk.staleness(found(now - 72 * 3600,
                                                                                   last_skipped=skipped), "/b")
    # a failure older than the newest verified backup is old news
    assert bk.staleness(found(now - 3600, last_failure={**failure, "epoch": now - 7200}), "/b") is None


def test_backup_source_fact(tmp_path):
    assert run_fact(BackupSource, path=str(tmp_path / "none")) is None
    assert run_program(tmp_path, fake_export(tmp_path, WRITES)).returncode == 0
    (name,) = listing(tmp_path)
    found = run_fact(BackupSource, path=str(tmp_path / "backups" / name))
    assert found["has_manifest"] and found["has_dataindex"]
    assert found["name"] == name and found["file_count"] == 2 and found["serverversion"] == "4"


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
    assert [f.split(" ")[1] for f in firsts] == ["wait", "verify", "devpi-import", "devpi-fsck", "trial:", "stop"]
    swap = steps[-1]
    # (their order, and the rollback: tests/test_restore_swap.py runs the script)
    assert "launchctl bootout" in swap and "import ctypes" in swap and "launchctl bootstrap" in swap
    assert f"keep_prefix={HOME}/devpi/server-dir.before-restore-" in swap
    assert "--serverdir \"$new\"" in steps[2] and "rm -rf \"$new\"" in steps[2]
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

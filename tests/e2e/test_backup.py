"""Scheduled backups and the restore, end to end with real devpi: a user's uploads are
backed up by the backup LaunchAgent's own program (run on demand with ``launchctl
kickstart``), the server dir is lost, and the restore brings back every file, user,
index and ACL; a backup into a full disk fails cleanly and keeps the older ones."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from . import devpi_client
from .harness import build_wheel, count_remote_commands, wait_until
from .stack import start_stack

pytestmark = pytest.mark.e2e

ALICE_REF = "op://e2e/devpi/alice"
ALICE_PW = "alice-backup-Pa55"
PROJECTS = ("bk-alpha", "bk-beta", "bk-gamma")


@pytest.fixture(scope="module")
def host(tmp_path_factory, sshd, launchd, upstream):
    with start_stack(
        sshd, launchd, upstream, tmp_path_factory.mktemp("backup"), "backup", caddy=False,
        secrets={ALICE_REF: ALICE_PW},
        devpi_throttle_interval=1,
        devpi_users={"alice": {"email": "alice@e2e.test", "password": ALICE_REF}},
        devpi_indexes={
            "root/pypi": {"mirror_url": upstream.url},
            "alice/dev": {"bases": ["root/pypi"], "acl_upload": ["alice"]},
            "alice/stable": {"bases": ["alice/dev"], "volatile": False},
        },
        devpi_backup={"hour": 3, "minute": 17, "keep": 2},
    ) as stack:
        yield stack


def backup_label(host) -> str:
    return host.label + ".backup"


def status(host) -> dict:
    path = host.devpi_home / "backup.status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_backup(host, previous: dict | None = None) -> dict:
    """``launchctl kickstart`` the backup job and wait until it has exited; its status."""
    before = json.dumps(status(host), sort_keys=True)
    host.launchd.kickstart(backup_label(host), kill=False)
    wait_until(lambda: json.dumps(status(host), sort_keys=True) != before
               and host.launchd.pid(backup_label(host)) is None,
               300, 0.2, "the backup job to finish", detail=lambda: log_tail(host))
    return status(host)


def log_tail(host) -> str:
    log = host.home / "Library/Logs" / f"{backup_label(host)}.log"
    return log.read_text()[-3000:] if log.exists() else "(no backup log)"


def file_digests(host) -> dict[str, str]:
    """Every release file on alice's indexes: name -> sha256 of what devpi serves."""
    digests = {}
    for index in ("alice/dev", "alice/stable"):
        for project in PROJECTS:
            status_code, _ = devpi_client.simple_page(host.devpi_url, index, project)
            if status_code != 200:
                continue
            for name, url in devpi_client.simple_links(host.devpi_url, index, project).items():
                if "/alice/" in url:
                    digests[f"{index}/{name}"] = devpi_client.sha256(devpi_client.download(url))
    return digests


def users_and_indexes(host) -> dict:
    """Users with their settings and indexes (ACLs, bases, ...), without volatile bits."""
    state = host.state()
    for user in state.values():
        user.pop("created", None)
        user.pop("modified", None)
    return state


def test_backup_and_restore_bring_back_every_upload(host, upstream, tools, tmp_path):
    # alice uploads several packages to her stage index; two go on to the non-volatile one
    for project in PROJECTS:
        for version in ("1.0", "1.1"):
            wheel = build_wheel(tmp_path / "dist", project, version, ["hermetic-alpha>=1.0"] if project == "bk-alpha" else [])
            published = devpi_client.uv_publish(tools.uv, wheel.path, f"{host.devpi_url}/alice/dev/", "alice", ALICE_PW)
            assert published.returncode == 0, published.stdout + published.stderr
    wheel = build_wheel(tmp_path / "dist", "bk-gamma", "2.0")
    published = devpi_client.uv_publish(tools.uv, wheel.path, f"{host.devpi_url}/alice/stable/", "alice", ALICE_PW)
    assert published.returncode == 0, published.stdout + published.stderr
    digests, state = file_digests(host), users_and_indexes(host)
    assert len(digests) >= 7

    # the job is loaded, never started by the deploy; launchctl kickstart runs it once
    printed = host.launchd.print(backup_label(host)).stdout
    assert "state = not running" in printed and "runs = 0" in printed
    first = run_backup(host)
    assert first["last_success"]["name"].startswith("devpi-backup-")
    assert "last_failure" not in first
    backups = host.devpi_home / "backups"
    (name,) = [p.name for p in backups.iterdir()]
    manifest = json.loads((backups / name / "manifest.json").read_text())
    assert manifest["file_count"] == len(manifest["files"]) and manifest["serverversion"] == "4"
    assert {f["sha256"] for f in manifest["files"]} >= set(digests.values())
    # the fact, from the CLI
    fact = host.fact("facts.backup.Backups", f"status_file={host.devpi_home / 'backup.status.json'}",
                     f"directory={backups}", f"python={host.devpi_home / 'venv/bin/python'}")
    assert fact["count"] == 1 and fact["newest"] == name
    assert fact["last_success"]["size"] == manifest["size"] > 0

    # a rerun with backups configured changes nothing, in two remote commands
    pid = host.pid()
    rerun = host.deploy("--debug")
    assert rerun.grand_total()[0] == 0, rerun.describe()
    assert count_remote_commands(rerun.output) == 2
    assert host.pid() == pid

    # keep=2: a third backup prunes the oldest
    time.sleep(1.1)  # backups are named by the second
    second = run_backup(host)
    time.sleep(1.1)
    third = run_backup(host)
    kept = sorted(p.name for p in backups.iterdir())
    assert kept == sorted([second["last_success"]["name"], third["last_success"]["name"]])

    # the server dir is lost: devpi stops, its dir goes, the deploy makes a new, empty one
    host.stop_devpi()
    lost = host.server_dir.with_name("lost-server-dir")
    host.server_dir.rename(lost)
    host.deploy()
    assert host.login("alice", ALICE_PW) == 200  # the deploy made alice again, with no uploads
    assert file_digests(host) == {}
    empty_uuid = json.loads((host.server_dir / ".nodeinfo").read_text())["uuid"]

    dry = host.pyinfra("deploys/devpi_restore.py", "--dry", "--diff", "--data", f"devpi_restore_from={kept[-1]}")
    for step in ("verify the backup", "devpi-import", "devpi-fsck", "trial: devpi-server", "swap the restored"):
        assert step in dry.output, dry.output
    assert not host.server_dir.with_name("server-dir.restoring.pyinfra-new").exists()

    restored = host.pyinfra("deploys/devpi_restore.py", "-vvv", "--data", f"devpi_restore_from={kept[-1]}")
    assert "the restored server dir answered on spare port" in restored.output, restored.describe()
    assert "all match the manifest" in restored.output
    host.wait_healthy()
    # every file, user, index and ACL as before; alice logs in with her password
    assert file_digests(host) == digests
    assert users_and_indexes(host) == state
    assert host.login("alice", ALICE_PW) == 200
    # devpi answers with the restored dir's identity; the replaced dir is kept
    uuid = json.loads((host.server_dir / ".nodeinfo").read_text())["uuid"]
    assert uuid != empty_uuid
    (kept_dir,) = [p for p in host.devpi_home.iterdir() if ".before-restore-" in p.name]
    assert json.loads((kept_dir / ".nodeinfo").read_text())["uuid"] == empty_uuid
    assert not host.server_dir.with_name("server-dir.restoring.pyinfra-new").exists()

    # installs from the restored index work (bk-alpha's dependency through root/pypi)
    venv_python = devpi_client.make_venv(tools.uv, tools.python3, tmp_path / "venv", seed=True)
    install = devpi_client.install("pip", tools.uv, venv_python, f"{host.devpi_url}/alice/stable/+simple/",
                                   ["bk-alpha==1.1", "bk-gamma==2.0"], timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr

    # and the deploy is happy with the restored dir
    rerun = host.deploy()
    assert rerun.grand_total()[0] == 0, rerun.describe()


def on_disk(host, disk) -> list[str]:
    """What the tmpfs holds, seen from the SSH sessions' mount namespace (where it is mounted)."""
    return sorted(host.sshd.run(f"ls -A {disk}", check=True).stdout.split())


def test_a_backup_into_a_full_disk_fails_cleanly_and_keeps_older_backups(host, tmp_path):
    disk = host.root / "small-disk"
    disk.mkdir(exist_ok=True)
    # a 4 MB tmpfs in the SSH sessions' mount namespace (where the backup job runs)
    host.sshd.run(f"mount -t tmpfs -o size=4m,mode=0700 tmpfs {disk}", check=True)
    try:
        host.update(devpi_backup={"hour": 3, "minute": 17, "keep": 3, "dir": str(disk)})
        host.deploy()
        good = run_backup(host)["last_success"]["name"]
        # fill the disk: the next export cannot fit
        host.sshd.run(f"dd if=/dev/zero of={disk}/filler bs=64k 2>/dev/null", check=False)
        failed = run_backup(host)
        failure = failed["last_failure"]
        assert failure["exit_code"] != 0
        assert any("No space left" in line or "Errno 28" in line for line in failure["log_tail"]), failure
        assert failed["last_success"]["name"] == good
        # the older backup intact, no temporary dir left
        assert on_disk(host, disk) == sorted([good, "filler"])
        host.sshd.run(f"test -s {disk}/{good}/manifest.json", check=True)
        # the fact reports it
        fact = host.fact("facts.backup.Backups", f"status_file={host.devpi_home / 'backup.status.json'}",
                         f"directory={disk}", f"python={host.devpi_home / 'venv/bin/python'}")
        assert fact["last_failure"]["exit_code"] == failure["exit_code"] and fact["count"] == 1

        # unset: the backup job and its plist go; the backups stay
        host.update(devpi_backup=None)
        host.deploy()
        assert host.launchd.print(backup_label(host)).returncode != 0
        assert not (host.home / "Library/LaunchAgents" / f"{backup_label(host)}.plist").exists()
        assert good in on_disk(host, disk)
    finally:
        host.launchd.run("bootout", host.launchd.target(backup_label(host)), check=False)
        host.sshd.run(f"umount {disk}", check=False)


def status_report(host) -> tuple:
    """``deploys/status.py`` as JSON: (result, report)."""
    result = host.pyinfra("deploys/status.py", "--data", "devpi_status_format=json", check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.describe()
    return result, json.loads(lines[0])


PLANTED = ("devpi-backup-29990101T000000Z", "devpi-backup-29990102T000000Z")


def test_planted_backups_in_a_shared_backup_dir_cost_no_real_backup(host):
    """Issue 22 items 1 and 7: another local user who can write the backup dir plants
    newer-named dirs with a manifest; the backup program used to delete each real backup
    right after writing it, while the status stayed healthy naming a deleted backup."""
    shared = host.root / "shared-backups"
    shared.mkdir(mode=0o700)
    try:
        host.update(devpi_backup={"hour": 3, "minute": 17, "keep": 2, "dir": str(shared)})
        host.deploy()
        real = run_backup(host)["last_success"]["name"]
        for name in PLANTED:
            (shared / name).mkdir()
            (shared / name / "manifest.json").write_text('{"files": []}')
            if os.getuid() == 0:  # planted by another user
                os.chown(shared / name / "manifest.json", 65534, 65534)
                os.chown(shared / name, 65534, 65534)
        shared.chmod(0o777)

        # the program refuses, naming the dir; nothing written, nothing removed
        refused = run_backup(host)
        assert refused["last_failure"]["exit_code"] == 77, refused
        assert f"{shared} is writable by group and others (mode 0777)" in refused["last_failure"]["refused"]
        assert sorted(p.name for p in shared.iterdir()) == sorted([real, *PLANTED])
        # the status is not healthy, counts nothing and names no backup as the newest
        result, report = status_report(host)
        assert result.returncode != 0 and not report["healthy"]
        backups = report["sections"]["backups"]
        assert backups["count"] == 0 and backups["newest"] is None and backups["dir_problem"]
        assert any(f"{shared} is writable by group and others" in p for p in report["problems"])
        # the plan says so too
        plan = host.deploy("--dry")
        assert "the backup dir cannot be trusted" in plan.output, plan.output

        # the dir made the user's own again: backups are written, the oldest verified one
        # replaced, the planted dirs reported and never removed
        shared.chmod(0o700)
        second = run_backup(host)["last_success"]
        time.sleep(1.1)  # backups are named by the second
        third = run_backup(host)["last_success"]
        assert (second["pruned"], third["pruned"]) == ([], [real])
        assert sorted(p.name for p in shared.iterdir()) == sorted([second["name"], third["name"], *PLANTED])
        result, report = status_report(host)
        backups = report["sections"]["backups"]
        assert backups["count"] == 2 and backups["newest"]["name"] == third["name"]
        assert {u["name"] for u in backups["unverified"]} == set(PLANTED)
        assert not [p for p in report["problems"] if "backup" in p]
        assert any(f"{PLANTED[0]} in the backup dir is not counted" in w for w in report["warnings"])

        # devpi_backup moved to another dir: nothing there yet, and the old dir's backup is
        # not named as the newest
        moved = host.root / "moved-backups"
        moved.mkdir(mode=0o700)
        host.update(devpi_backup={"hour": 3, "minute": 17, "keep": 2, "dir": str(moved)})
        result, report = status_report(host)
        backups = report["sections"]["backups"]
        assert backups["count"] == 0 and backups["newest"] is None
        assert any(w.startswith(f"no verified backup of devpi in {moved}") for w in report["warnings"])
    finally:
        host.launchd.run("bootout", host.launchd.target(backup_label(host)), check=False)
        host.update(devpi_backup=None)


def hold_lock(lock, holder) -> None:
    """A lock dir as a live run writes it: owned by process ``holder`` on this host."""
    started = subprocess.run(["ps", "-o", "lstart=", "-p", str(holder.pid)], capture_output=True,
                             text=True).stdout.strip()
    lock.mkdir()
    (lock / "owner").write_text(f"run=e2e-{holder.pid}\npid={holder.pid}\nstarted={started}\n"
                                f"host={os.uname().nodename}\nsince=just now\nby=the e2e test\n")


def test_a_backup_and_a_restore_exclude_each_other(host):
    """Issue 23 item 3: a scheduled backup waits while a deploy (a restore, an upgrade)
    holds the deploy lock, and says so; a restore waits for a running backup, and stops
    having changed nothing when it runs too long."""
    holder = subprocess.Popen(["sleep", "300"])
    deploy_lock = host.devpi_home / ".pyinfra-deploy.lock"
    backup_lock = host.devpi_home / ".pyinfra-backup.lock"
    try:
        host.update(devpi_backup={"hour": 3, "minute": 17, "keep": 2})
        host.deploy()
        before = json.dumps(status(host), sort_keys=True)
        # a restore (or an upgrade) holds the deploy lock: the backup waits, exporting nothing
        hold_lock(deploy_lock, holder)
        host.launchd.kickstart(backup_label(host), kill=False)
        wait_until(lambda: "waiting up to 3600s: a deploy holds" in log_tail(host), 60, 0.2,
                   "the backup to wait for the deploy", detail=lambda: log_tail(host))
        assert json.dumps(status(host), sort_keys=True) == before
        assert not backup_lock.exists()  # given back while it waits
        for entry in deploy_lock.iterdir():
            entry.unlink()
        deploy_lock.rmdir()  # the deploy ends
        wait_until(lambda: json.dumps(status(host), sort_keys=True) != before
                   and host.launchd.pid(backup_label(host)) is None, 300, 0.2, "the backup to finish",
                   detail=lambda: log_tail(host))
        success = status(host)["last_success"]
        assert success["waited_for"].startswith(f"a deploy holds {deploy_lock} (run e2e-{holder.pid}")
        result, report = status_report(host)
        assert report["sections"]["backups"]["last_success"]["waited_seconds"] == success["waited_seconds"]

        # a backup holds its lock: the restore waits for it, then stops having changed nothing
        hold_lock(backup_lock, holder)
        nodeinfo = (host.server_dir / ".nodeinfo").read_text()
        refused = host.pyinfra("deploys/devpi_restore.py", "--data", f"devpi_restore_from={success['name']}",
                               "--data", "devpi_lock_wait=1", check=False)
        assert refused.returncode != 0
        assert f"a scheduled backup (process {holder.pid}, since just now) still holds {backup_lock}" in refused.output
        assert (host.server_dir / ".nodeinfo").read_text() == nodeinfo
        assert not host.server_dir.with_name("server-dir.restoring.pyinfra-new").exists()
        assert not deploy_lock.exists()  # the restore gave its lock back
    finally:
        holder.kill()
        holder.wait()
        for lock in (deploy_lock, backup_lock):
            if lock.exists():
                for entry in lock.iterdir():
                    entry.unlink()
                lock.rmdir()
        host.launchd.run("bootout", host.launchd.target(backup_label(host)), check=False)
        host.update(devpi_backup=None)

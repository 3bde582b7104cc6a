"""The deploy lock's scripts (``pyinfra_devpi/deploy_lock.py``), run locally under sh
against a temporary devpi home: taking, waiting, stale takeover, the serial check,
release, the ``DeployLock`` fact, races between many runs, and the venv prune."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from facts.deploy_lock import DeployLock
from operations.devpi import prune_script
from pyinfra_devpi import deploy_lock as dl
from pyinfra_devpi.config import build_config
from pyinfra_devpi.layout import LockPaths

from .prepared import gnu_only_forms

# /bin/sh (bash on macOS, dash on Debian), and dash and bash when they are other shells
SHELLS = list({os.path.realpath(s): s for s in ("/bin/sh", shutil.which("dash"), shutil.which("bash")) if s}.values())
HOST = os.uname().nodename


@pytest.fixture(params=SHELLS)
def shell(request) -> str:
    return request.param


@pytest.fixture
def paths(tmp_path) -> LockPaths:
    return LockPaths(str(tmp_path / "devpi home"))  # a space: every path is quoted


def run(shell: str, script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    assert gnu_only_forms(script) == [], gnu_only_forms(script)
    return subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=timeout)


def acquire(shell, paths, token, expect="", wait=0, by="tester@here") -> subprocess.CompletedProcess:
    return run(shell, dl.acquire_script(paths, token, expect, wait, os.getpid(), by))


def lstart(pid: int) -> str:
    out = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True).stdout
    return out.strip()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def hold(paths: LockPaths, run_id="other", pid=None, started=None, host=HOST) -> str:
    """Write a lock by hand, as another run would have (a live owner by default)."""
    pid = os.getpid() if pid is None else pid
    started = lstart(pid) if started is None else started
    text = f"run={run_id}\npid={pid}\nstarted={started}\nhost={host}\nsince=2026-11-30 10:00:00 UTC\nby=someone@elsewhere\n"
    Path(paths.lock).mkdir(parents=True)
    Path(paths.owner).write_text(text)
    return text


def owner(paths: LockPaths) -> dict:
    lines = Path(paths.owner).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def state(shell, paths, wait=0) -> dict:
    result = run(shell, DeployLock().command(home=paths.home, wait=wait))
    assert result.returncode == 0, result.stderr
    return DeployLock().process(result.stdout.splitlines())


# ------------------------------------------------------------------ taking and giving back


def test_a_free_lock_is_taken_with_its_owner_and_the_serial(shell, paths):
    assert state(shell, paths) == {"state": "free", "serial": "", "owner": None}
    result = acquire(shell, paths, "run-a")
    assert result.returncode == 0, result.stderr
    found = owner(paths)
    assert found["run"] == "run-a" and found["host"] == HOST and found["by"] == "tester@here"
    # the process that lives as long as the run: here (no sshd between), pyinfra's pid
    assert found["pid"] == str(os.getpid()) and found["started"] == lstart(os.getpid())
    assert Path(paths.serial).read_text() == "run-a\n"
    assert oct(Path(paths.home).stat().st_mode & 0o777) == oct(0o700)  # a new home is private
    assert state(shell, paths)["state"] == "held"


def test_the_run_that_holds_it_goes_on_at_once(shell, paths):
    assert acquire(shell, paths, "run-a").returncode == 0
    before = Path(paths.owner).read_text()
    started = time.monotonic()
    assert acquire(shell, paths, "run-a", wait=30).returncode == 0
    assert time.monotonic() - started < 5
    assert Path(paths.owner).read_text() == before


def test_release_removes_only_the_runs_own_lock(shell, paths):
    assert acquire(shell, paths, "run-a").returncode == 0
    other = run(shell, dl.release_script(paths, "run-b"))
    assert other.returncode == 0 and Path(paths.lock).is_dir()
    assert "was not this run's at the end (run run-a by tester@here holds it)" in other.stderr
    mine = run(shell, dl.release_script(paths, "run-a"))
    assert mine.returncode == 0 and not Path(paths.lock).exists()
    assert Path(paths.serial).read_text() == "run-a\n"  # what the last run that took it was
    assert run(shell, dl.release_script(paths, "run-a")).returncode == 0  # nothing to release


# ------------------------------------------------------------------ another run holds it


def test_a_live_owner_is_waited_for_then_named_in_the_message(shell, paths):
    hold(paths, "run-other")
    started = time.monotonic()
    result = acquire(shell, paths, "run-a", wait=2)
    assert time.monotonic() - started >= 1  # whole seconds: between wait - 1 and wait + 1
    assert result.returncode == dl.LOCK_EXIT
    message = result.stderr
    assert f"{paths.lock} is held by another deploy (run run-other by someone@elsewhere" in message
    assert f"its process {os.getpid()} on {HOST}" in message
    assert "this run changed nothing" in message
    assert f"`ps -p {os.getpid()}` on {HOST}" in message and f"rm -r {paths.lock}" in message
    assert owner(paths)["run"] == "run-other"  # untouched


def test_a_lock_released_while_waiting_is_taken(shell, paths):
    hold(paths, "run-other")
    Path(paths.serial).parent.mkdir(exist_ok=True)
    Path(paths.serial).write_text("run-other\n")
    threading.Timer(1.5, lambda: shutil.rmtree(paths.lock)).start()
    result = acquire(shell, paths, "run-a", expect="run-other", wait=20)
    assert result.returncode == 0, result.stderr
    assert owner(paths)["run"] == "run-a"


def test_a_lock_from_another_host_is_never_taken_over(shell, paths):
    hold(paths, "run-other", pid=dead_pid(), host="some-other-mac")
    result = acquire(shell, paths, "run-a", wait=1)
    assert result.returncode == dl.LOCK_EXIT and "on some-other-mac" in result.stderr
    assert state(shell, paths)["state"] == "held"


# ------------------------------------------------------------------ stale locks


@pytest.mark.parametrize("case", ["pid gone", "pid reused", "no owner for a minute"])
def test_a_stale_lock_is_taken_over(shell, paths, case):
    if case == "pid gone":
        hold(paths, "run-dead", pid=dead_pid(), started="Mon Nov 30 09:00:00 2026")
    elif case == "pid reused":  # the pid runs, but it is a process started at another time
        hold(paths, "run-dead", pid=os.getpid(), started="Thu Jan  1 00:00:00 1970")
    else:  # its maker died between mkdir and writing the owner
        Path(paths.lock).mkdir(parents=True)
        old = time.time() - 120
        os.utime(paths.lock, (old, old))
    assert state(shell, paths)["state"] == "stale"
    result = acquire(shell, paths, "run-a", wait=0)
    assert result.returncode == 0, result.stderr
    assert "took over the stale deploy lock" in result.stderr
    assert owner(paths)["run"] == "run-a"
    assert not Path(paths.takeover).exists()


def test_a_young_lock_without_owner_is_being_made_and_waited_for(shell, paths):
    Path(paths.lock).mkdir(parents=True)
    assert state(shell, paths)["state"] == "held"
    assert acquire(shell, paths, "run-a", wait=1).returncode == dl.LOCK_EXIT


def test_a_takeover_guard_left_by_a_dead_run_is_cleared(shell, paths):
    hold(paths, "run-dead", pid=dead_pid())
    Path(paths.takeover).mkdir()
    old = time.time() - 120
    os.utime(paths.takeover, (old, old))
    result = acquire(shell, paths, "run-a", wait=10)
    assert result.returncode == 0, result.stderr
    assert owner(paths)["run"] == "run-a"


# ------------------------------------------------------------------ the serial


def test_a_host_changed_after_the_run_read_it_stops_the_run(shell, paths):
    Path(paths.home).mkdir()
    Path(paths.serial).write_text("run-b\n")  # run b took the lock after run a read ''
    result = acquire(shell, paths, "run-a", expect="")
    assert result.returncode == dl.LOCK_EXIT
    assert f"{paths.lock}: another deploy (run run-b) changed this host after this run read it" in result.stderr
    assert "run it again" in result.stderr
    assert not Path(paths.lock).exists() and Path(paths.serial).read_text() == "run-b\n"


def test_the_runs_own_serial_is_no_change(shell, paths):
    # this run took the lock, and it was removed by hand meanwhile: taken again
    assert acquire(shell, paths, "run-a").returncode == 0
    shutil.rmtree(paths.lock)
    assert acquire(shell, paths, "run-a", expect="").returncode == 0


# ------------------------------------------------------------------ the fact


def test_the_fact_waits_while_a_live_run_holds_the_lock(shell, paths):
    hold(paths, "run-other")
    assert state(shell, paths, wait=0)["owner"]["run"] == "run-other"
    threading.Timer(1.5, lambda: shutil.rmtree(paths.lock)).start()
    started = time.monotonic()
    found = state(shell, paths, wait=30)
    assert found == {"state": "free", "serial": "", "owner": None}
    assert 1 <= time.monotonic() - started < 20


def test_the_fact_gives_up_waiting_and_reports_the_owner(shell, paths):
    hold(paths, "run-other")
    found = state(shell, paths, wait=1)
    assert found["state"] == "held"
    assert found["owner"] == {"run": "run-other", "pid": str(os.getpid()), "started": lstart(os.getpid()),
                              "host": HOST, "since": "2026-11-30 10:00:00 UTC", "by": "someone@elsewhere"}
    message = dl.held_message(paths, found["owner"], 1)
    assert message == dl.held_message(paths, found["owner"], 1)
    assert f"{paths.lock} is held by another deploy (run run-other" in message and f"rm -r {paths.lock}" in message


def test_a_damaged_owner_or_serial_file_is_read_as_printable_text(shell, paths):
    """The fact's output is decoded as UTF-8 with the whole fact batch: bytes that are
    not (a damaged file, a terminal escape) come out as '?', never raw."""
    text = hold(paths, "run-other").replace("by=someone@elsewhere", "by=\xff\x1b[31mjos\u00e9@mac\r")
    Path(paths.owner).write_bytes(text.encode("latin-1"))
    Path(paths.serial).write_bytes(b"tok\xfe\xff\x00en\n")
    result = subprocess.run([shell, "-c", DeployLock().command(home=paths.home)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = DeployLock().process(result.stdout.decode("ascii").splitlines())
    assert found["state"] == "held" and found["owner"]["run"] == "run-other"
    assert found["owner"]["by"] == "??[31mjos?@mac?"
    assert found["serial"] == "tok???en"


# ------------------------------------------------------------------ many runs at once


def race(shell, paths, tokens, wait=20):
    """Every token's run at once: take the lock, note start/end in a log, release."""
    log = Path(paths.home).parent / "log"
    script = (
        "{acquire}\n" "rc=$?\n"
        'if [ $rc -eq 0 ]; then echo "start {token}" >> {log}; sleep 0.3; echo "end {token}" >> {log}; {release}; fi\n'
        "exit $rc"
    )
    results = {}

    def one(token):
        text = script.format(
            acquire="(\n" + dl.acquire_script(paths, token, "", wait, os.getpid(), "racer") + "\n)",
            token=token, log=f"'{log}'", release="(\n" + dl.release_script(paths, token) + "\n)",
        )
        results[token] = subprocess.run([shell, "-c", text], capture_output=True, text=True, timeout=120)

    threads = [threading.Thread(target=one, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = log.read_text().splitlines() if log.exists() else []
    return results, lines


def test_of_many_runs_at_once_one_changes_the_host_the_others_stop(shell, paths):
    tokens = [f"run-{i}" for i in range(6)]
    results, lines = race(shell, paths, tokens)
    winners = [t for t, r in results.items() if r.returncode == 0]
    assert len(winners) == 1, {t: r.stderr for t, r in results.items()}
    assert lines == [f"start {winners[0]}", f"end {winners[0]}"]
    for token, result in results.items():
        if token not in winners:
            # they read the host before the winner changed it: their plans are out of date
            assert result.returncode == dl.LOCK_EXIT
            assert "changed this host after this run read it" in result.stderr, result.stderr
    assert not Path(paths.lock).exists()


def test_of_many_runs_finding_a_stale_lock_one_takes_it_over(shell, paths):
    hold(paths, "run-dead", pid=dead_pid())
    Path(paths.serial).write_text("run-dead\n")
    tokens = [f"run-{i}" for i in range(6)]
    script_results = {}

    def one(token):
        script_results[token] = acquire(shell, paths, token, expect="run-dead", wait=3)

    threads = [threading.Thread(target=one, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    holders = [t for t, r in script_results.items() if r.returncode == 0]
    assert len(holders) == 1, {t: (r.returncode, r.stderr) for t, r in script_results.items()}
    assert owner(paths)["run"] == holders[0]
    took_over = [t for t, r in script_results.items() if "took over" in r.stderr]
    assert len(took_over) == 1
    for token, result in script_results.items():
        if token != holders[0]:
            assert result.returncode == dl.LOCK_EXIT and "is held by another deploy" in result.stderr


# ------------------------------------------------------------------ the venv prune


def test_the_prune_keeps_live_previous_new_and_building_venvs(tmp_path, shell):
    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_home": str(tmp_path / "h")}, "/x")
    venvs = Path(config.paths.venvs_dir)
    venvs.mkdir(parents=True)
    names = {
        "old": "devpi-server-1-web-1-20260101000000-11",
        "prev": "devpi-server-2-web-2-20260102000000-12",
        "new": "devpi-server-3-web-3-20260103000000-13",
        "building": "devpi-server-3-web-3-20260103000001-14",
        "dead_builder": "devpi-server-3-web-3-20260103000002-15",
        "dead_but_live": "devpi-server-3-web-3-20260103000003-16",
    }
    for name in names.values():
        (venvs / name).mkdir()
    (venvs / "devpi-server-3-web-3.lock.txt").write_text("pins\n")
    live_marker = f"pid={os.getpid()}\nstarted={lstart(os.getpid())}\nhost={HOST}\n"
    dead_marker = f"pid={dead_pid()}\nstarted=x\nhost={HOST}\n"
    (venvs / (names["building"] + ".building")).write_text(live_marker)
    (venvs / (names["dead_builder"] + ".building")).write_text(dead_marker)
    (venvs / (names["dead_but_live"] + ".building")).write_text(dead_marker)  # killed after its swap
    (venvs / (names["new"] + ".building")).write_text(live_marker)
    os.symlink(venvs / names["dead_but_live"], config.paths.venv)

    script = "\n".join([
        dl.PROCESS_FUNCTIONS,
        f"venvs='{venvs}'; live='{config.paths.venv}'; new=\"$venvs\"/{names['new']}; building=\"$new\".building",
        f"prev='{(venvs / names['prev']).resolve()}'",
        prune_script(),
        'prune_venvs "$venvs" "$new" "$prev" "$live" "$building"',
    ])
    result = run(shell, script)
    assert result.returncode == 0, result.stderr
    left = sorted(p.name for p in venvs.iterdir())
    assert left == sorted([
        names["prev"], names["new"], names["new"] + ".building", names["building"],
        names["building"] + ".building", names["dead_but_live"], "devpi-server-3-web-3.lock.txt",
    ])

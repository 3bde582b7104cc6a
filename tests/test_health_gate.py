"""The health gate's script, run here under sh against a stand-in for devpi's /+api."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from operations.devpi import wait_healthy_script

from .prepared import SHELLS, gnu_only_forms

OURS = "cd936c8ffd5e4f15a7189944f4680d29"


@pytest.fixture
def devpi_answering():
    """An HTTP server answering /+api with 200 and ``X-DEVPI-UUID: <uuid>``."""
    answer = {"uuid": OURS}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("X-DEVPI-UUID", answer["uuid"])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answer
    server.shutdown()


def nodeinfo(tmp_path, uuid=OURS):
    path = tmp_path / ".nodeinfo"
    path.write_text('{\n  "role": "standalone",\n  "uuid": "%s"\n}' % uuid)
    return str(path)


def run(shell, script):
    return subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60)


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def devpi_like(port, delay=0.0):
    """Python source of a server answering every GET on ``port`` with 200 and our
    ``X-DEVPI-UUID``, after ``delay`` seconds (as devpi after its start-up)."""
    return (
        "import http.server, time\n"
        f"time.sleep({delay})\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def log_message(self, *a): pass\n"
        "    def do_GET(self):\n"
        f"        self.send_response(200); self.send_header('X-DEVPI-UUID', {OURS!r})\n"
        "        self.send_header('Content-Length', '0'); self.end_headers()\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_healthy_when_our_server_dir_answers(shell, devpi_answering, tmp_path):
    url, _ = devpi_answering
    script = wait_healthy_script(url, 5, str(tmp_path / "err.log"), nodeinfo(tmp_path))
    assert gnu_only_forms(script) == []
    assert run(shell, script).returncode == 0


@pytest.mark.parametrize("shell", SHELLS)
def test_another_devpi_on_the_port_is_not_health(shell, devpi_answering, tmp_path):
    """A job under an old label (or from a previous devpi_home) still holds the port."""
    url, answer = devpi_answering
    answer["uuid"] = "0ther0ld"
    (tmp_path / "err.log").write_text("OSError: [Errno 98] Address already in use\n")
    result = run(shell, wait_healthy_script(url, 1, str(tmp_path / "err.log"), nodeinfo(tmp_path)))
    assert result.returncode == 1
    assert f"another devpi answers on {url}: its server dir is 0ther0ld, this one's is {OURS}" in result.stderr
    assert "Address already in use" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_nothing_listening_times_out_with_the_log_tail(shell, tmp_path):
    (tmp_path / "err.log").write_text("Traceback: boom\n")
    result = run(shell, wait_healthy_script("http://127.0.0.1:9", 1, str(tmp_path / "err.log"), nodeinfo(tmp_path)))
    assert result.returncode == 1
    assert "did not answer 200 on http://127.0.0.1:9/+api within 1s (last status: 000)" in result.stderr
    assert "Traceback: boom" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_the_timeout_shows_devpis_own_log_too(shell, tmp_path):
    """An error devpi logs (after its logging is set up) is in its rotated log, not in
    launchd's stderr file: the gate shows the tails of both."""
    (tmp_path / "err.log").write_text("")
    (tmp_path / "devpi.log").write_text("2026-11-30 12:00:00 ERROR could not bind 127.0.0.1:9\n")
    script = wait_healthy_script("http://127.0.0.1:9", 1, str(tmp_path / "err.log"), nodeinfo(tmp_path),
                                 server_log=str(tmp_path / "devpi.log"))
    result = run(shell, script)
    assert result.returncode == 1
    assert f"Last lines of {tmp_path / 'devpi.log'}:" in result.stderr
    assert "ERROR could not bind 127.0.0.1:9" in result.stderr


def test_a_new_venv_whose_devpi_fails_the_gate_is_rolled_back(tmp_path):
    """The swapped-in venv's devpi never answers: the link goes back to the previous
    venv, the job restarts (a stand-in launchctl starts a devpi-like server), the gate
    waits again, and the run still fails naming the version."""
    import sys

    port = free_port()
    home, old, live = venvs_with_rollback(tmp_path)
    server = tmp_path / "server.py"
    server.write_text(devpi_like(port))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "launchctl.calls"
    fake = bin_dir / "launchctl"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        f'{sys.executable} {server} >/dev/null 2>&1 &\necho $! > {tmp_path / "server.pid"}\n'
    )
    fake.chmod(0o755)
    rollback = {"version": "6.20.99", "previous": str(home / "venv.previous"), "live": str(live),
                "target": "gui/501/net.devpi"}
    script = wait_healthy_script(f"http://127.0.0.1:{port}", 2, str(tmp_path / "err.log"), nodeinfo(tmp_path), rollback)
    assert gnu_only_forms(script) == []
    import os

    try:
        result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    finally:
        pid_file = tmp_path / "server.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), 15)
    assert result.returncode == 1
    assert f"devpi-server 6.20.99 failed the health gate: rolling back to the previous venv {old}" in result.stderr
    assert f"rolled back: devpi answers again from {old}" in result.stderr
    assert os.readlink(live) == str(old)
    assert calls.read_text() == "kickstart -k gui/501/net.devpi\n"


def test_a_long_wait_says_it_is_still_waiting(tmp_path):
    """Every few seconds the wait prints a progress line (stdout: what ProgressCommand
    shows at pyinfra's default verbosity); the failure itself goes to stderr."""
    result = run("/bin/sh", wait_healthy_script("http://127.0.0.1:9", 7, str(tmp_path / "err.log"), nodeinfo(tmp_path)))
    assert result.returncode == 1
    assert re.search(r"^waiting for devpi on http://127\.0\.0\.1:9/\+api: \d+s of 7s \(last status: 000\)$",
                     result.stdout, re.M), result.stdout
    assert "did not answer 200" in result.stderr and "did not answer" not in result.stdout


# --- the gate watches the job's process (the launchctl double stands in for launchd)

@pytest.fixture
def launchd(tmp_path):
    """The launchctl double as ``launchctl`` on PATH, and its state."""
    import os

    from .test_launchctl_double import LAUNCHCTL, Double

    double = Double(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "launchctl").symlink_to(LAUNCHCTL)
    double.env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    yield double
    double.cleanup()


def serving_after(port, delay):
    """A job's program: a devpi-like /+api on ``port`` that starts answering after ``delay``."""
    import sys

    return [sys.executable, "-c", devpi_like(port, delay)]


def wait_for_state(launchd, label, state):
    from .test_launchctl_double import wait_for

    return wait_for(lambda: launchd.info(label).get("state") == state, timeout=10)


@pytest.mark.parametrize("lives", [0, 1.5], ids=["gone-before-the-gate-looks", "seen-running-then-gone"])
def test_a_devpi_that_exits_fails_the_gate_at_once_with_launchds_account(launchd, tmp_path, lives):
    """devpi exits before it answers (a venv that cannot start, a taken port): the gate
    does not wait out its timeout. It says the process exited and shows launchd's state
    and exit status, then the logs, as a timeout does."""
    import sys

    from .test_launchctl_double import GUI

    err_log = tmp_path / "err.log"
    program = [sys.executable, "-c", f"import sys, time; time.sleep({lives}); "
               "print('ImportError: no devpi here', file=sys.stderr); sys.exit(1)"]
    plist = launchd.plist("net.devpi.gate", program=program, StandardErrorPath=str(err_log), ThrottleInterval=30)
    launchd.ok("bootstrap", GUI, str(plist))
    if not lives:
        assert wait_for_state(launchd, "net.devpi.gate", "spawn scheduled")
    script = wait_healthy_script(f"http://127.0.0.1:{free_port()}", 120, str(err_log), nodeinfo(tmp_path),
                                 job=f"{GUI}/net.devpi.gate")
    assert gnu_only_forms(script) == []
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=100, env=launchd.env)
    assert result.returncode == 1
    assert re.search(r"devpi exited before it answered on http://127\.0\.0\.1:\d+/\+api\. "
                     rf"launchd reports for {GUI}/net\.devpi\.gate:", result.stderr), result.stderr
    assert "\tlast exit code = 1" in result.stderr
    assert "did not answer 200" not in result.stderr
    assert "ImportError: no devpi here" in result.stderr  # the error log's tail


def test_a_restart_during_the_wait_is_followed_not_taken_for_an_exit(launchd, tmp_path):
    """``kickstart -k`` while the gate waits replaces devpi's process: the pid the gate
    watched is gone, but launchd runs the job again, so the gate waits for the new one."""
    import time

    from .test_launchctl_double import GUI

    port = free_port()
    plist = launchd.plist("net.devpi.follow", program=serving_after(port, 1.5))
    launchd.ok("bootstrap", GUI, str(plist))
    first = launchd.pid("net.devpi.follow")
    script = wait_healthy_script(f"http://127.0.0.1:{port}", 60, str(tmp_path / "err.log"), nodeinfo(tmp_path),
                                 job=f"{GUI}/net.devpi.follow")
    gate = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=launchd.env)
    time.sleep(0.5)  # the gate has seen the first pid by now (it polls every 0.1 s)
    launchd.ok("kickstart", "-k", f"{GUI}/net.devpi.follow")
    out, err = gate.communicate(timeout=60)
    assert launchd.pid("net.devpi.follow") != first
    assert gate.returncode == 0, err


# --- the smoke check: /+api answering is not enough

def devpi_serving(port, real_requests_fail):
    """Python source of a devpi-like server on ``port``: /+api answers 200 with our uuid;
    ``GET /`` lists root/pypi (a flagged mirror that has cached ``cached-one``) and the
    stage root/dev, whose pages answer 200, or every request but /+api fails with 500."""
    return (
        "import http.server, json\n"
        "ROOT = json.dumps({'result': {'root': {'indexes': {\n"
        "    'pypi': {'type': 'mirror', 'mirror_no_project_list': True}, 'dev': {'type': 'stage'}}}}})\n"
        "PAGES = {'/': ROOT, '/root/pypi/+simple/': '<a href=\"cached-one/\">cached-one</a>',\n"
        "         '/root/pypi/+simple/cached-one/': 'links', '/root/dev': 'index page'}\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def log_message(self, *a): pass\n"
        "    def do_GET(self):\n"
        "        body = PAGES.get(self.path) if self.path != '/+api' else '{}'\n"
        f"        if body is None or ({real_requests_fail!r} and self.path != '/+api'):\n"
        "            status, body = 500, 'Internal Server Error'\n"
        "        else:\n"
        "            status = 200\n"
        f"        self.send_response(status); self.send_header('X-DEVPI-UUID', {OURS!r})\n"
        "        self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body.encode())\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
    )


def venvs_with_rollback(tmp_path):
    """A devpi home whose live venv link points at ``new``, the previous one ``old``."""
    import sys

    home = tmp_path / "home"
    old, new = home / "venvs" / "old", home / "venvs" / "new"
    for venv in (old, new):
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "python").symlink_to(sys.executable)
    live = home / "venv"
    live.symlink_to(new)
    (home / "venv.previous").write_text(f"{old}\n")
    return home, old, live


def smoke_for(home, indexes="root/dev"):
    from operations.devpi import SMOKE_PY

    return {"smoke": SMOKE_PY, "smoke_python": str(home / "venv" / "bin" / "python"),
            "smoke_result": str(home / "smoke.pyinfra.json"), "smoke_new": str(home / "smoke.pyinfra.json.pyinfra-new"),
            "smoke_indexes": indexes}


@pytest.mark.parametrize("shell", SHELLS)
def test_the_smoke_check_passes_shows_and_records_its_requests(shell, tmp_path):
    import os
    import sys

    port = free_port()
    home, _, _ = venvs_with_rollback(tmp_path)
    server = subprocess.Popen([sys.executable, "-c", devpi_serving(port, False)])
    try:
        script = wait_healthy_script(f"http://127.0.0.1:{port}", 10, str(tmp_path / "err.log"), nodeinfo(tmp_path),
                                     smoke=smoke_for(home, "root/nothere\nroot/dev"))
        assert gnu_only_forms(script) == []
        result = run(shell, script)
    finally:
        os.kill(server.pid, 15)
        server.wait()
    assert result.returncode == 0, result.stderr
    assert (f"smoke check passed on http://127.0.0.1:{port}" in result.stdout
            and "GET / 200, GET /root/pypi/+simple/ 200, GET /root/pypi/+simple/cached-one/ 200, GET /root/dev 200"
            in result.stdout), result.stdout
    record = json.loads((home / "smoke.pyinfra.json").read_text())
    assert record["ok"] is True and record["checks"][-1] == ["/root/dev", 200]
    assert not (home / "smoke.pyinfra.json.pyinfra-new").exists()


@pytest.mark.parametrize("connection", ["kept", "gone"])
def test_a_new_venv_whose_devpi_answers_the_api_but_fails_real_requests_is_rolled_back(tmp_path, connection):
    """The new venv's devpi answers /+api, but its pages fail: the smoke check fails the
    gate, the link goes back to the previous venv, the job restarts (a stand-in launchctl
    starts the good devpi) and passes the smoke check; the run still fails. A run killed
    in the gate (``gone``: the connection, the script's stdout and stderr, closed at once)
    still rolls back: the old venv serves."""
    import os
    import sys

    port = free_port()
    home, old, live = venvs_with_rollback(tmp_path)
    bad = subprocess.Popen([sys.executable, "-c", devpi_serving(port, True)])
    good = tmp_path / "good.py"
    good.write_text(devpi_serving(port, False))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "launchctl"
    fake.write_text(
        f'#!/bin/sh\nkill {bad.pid}; sleep 0.2\n'  # a zombie until the test reaps it: its port is free
        f'{sys.executable} {good} >/dev/null 2>&1 &\necho $! > {tmp_path / "good.pid"}\n'
    )
    fake.chmod(0o755)
    rollback = {"version": "6.20.96", "previous": str(home / "venv.previous"), "live": str(live),
                "target": "gui/501/net.devpi"}
    script = wait_healthy_script(f"http://127.0.0.1:{port}", 10, str(tmp_path / "err.log"), nodeinfo(tmp_path),
                                 rollback, smoke=smoke_for(home))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        if connection == "gone":
            gate = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            gate.stdout.close()
            gate.stderr.close()
            gate.wait(timeout=60)
        else:
            result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    finally:
        bad.kill()
        bad.wait()
        if (tmp_path / "good.pid").exists():
            os.kill(int((tmp_path / "good.pid").read_text()), 15)
    if connection == "gone":
        assert os.readlink(live) == str(old) and (tmp_path / "good.pid").exists()
        assert json.loads((home / "smoke.pyinfra.json").read_text())["ok"] is True
        return
    assert result.returncode == 1
    assert "smoke check FAILED" in result.stdout and "GET / 500" in result.stdout, result.stdout
    assert "but failed the smoke check" in result.stderr and "did not answer" not in result.stderr
    assert f"devpi-server 6.20.96 failed the health gate: rolling back to the previous venv {old}" in result.stderr
    assert f"rolled back: devpi answers again from {old}" in result.stderr
    assert "smoke check passed" in result.stdout
    assert os.readlink(live) == str(old)
    assert json.loads((home / "smoke.pyinfra.json").read_text())["ok"] is True


@pytest.mark.parametrize("text, ok, warned", [
    (None, None, False),
    ('{"time": "2026-12-07T21:40:00Z", "ok": true, "venv_dir": "/v/a", "checks": [["/", 200]]}', True, False),
    ('{"time": "2026-12-07T21:40:00Z", "ok": false, "venv_dir": "/v/a", "checks": [["/", 500]]}', False,
     "devpi failed its last smoke check (GET / 500)"),
    # passed, but on another venv than the live one (/v/a): a run stopped after the swap
    ('{"time": "2026-12-07T21:40:00Z", "ok": true, "venv_dir": "/v/b", "checks": [["/", 200]]}', True,
     "the live venv /v/a has not passed a smoke check (the last one ran on /v/b)"),
    ("\ufffd{garbled", None, "is not the smoke check's record"),
])
def test_the_status_shows_the_last_smoke_check(text, ok, warned):
    from deploys import _status
    from pyinfra_devpi.config import build_config

    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/alice")
    probe = build_config({"devpi_outside_url": "https://pypi.example.org"}, _status.PROBE_HOME)
    found = _status.Found(config, "gui/501", {_status._smoke_file(probe): {config.paths.smoke_result: text},
                                              _status._venv(probe): {"path": "/v/a"}}, {})
    part = _status.smoke_report(found, probe)
    assert part.fields.get("ok") is ok
    assert [w for w in part.warnings if warned and warned in w] == part.warnings, part.warnings
    assert bool(part.warnings) is bool(warned)
    if ok is not None:
        assert part.fields["checks"] == [f"GET / {200 if ok else 500}"]
        (row,) = [r for r in _status.summary_lines({"smoke": part.fields}) if r[0] == "smoke"]
        assert row[1].startswith("passed at" if ok else "FAILED at")


def _record(venv: str, ok: bool) -> str:
    return json.dumps({"time": "2026-12-08T00:40:00Z", "ok": ok, "venv_dir": venv,
                       "checks": [["/", 200 if ok else 500]]})


@pytest.mark.parametrize("record, previous, reason, rollback_to", [
    # the live venv passed its last check: nothing to do
    (_record("/h/venvs/b", True), "/h/venvs/a\n", None, None),
    # no record (a host from before the smoke check), or one that is not the record
    (None, "/h/venvs/a\n", None, None),
    ("{garbled", "/h/venvs/a\n", None, None),
    (_record("/h/venvs/\x1b[2Ja", True), "/h/venvs/a\n", None, None),
    # a run stopped between the swap (venv.previous written) and the gate: back to a
    (_record("/h/venvs/a", True), "/h/venvs/a\n", "has not passed the health gate", "/h/venvs/a"),
    # the same, but venv.previous no longer names the venv that passed: checked, no rollback
    (_record("/h/venvs/a", True), "/h/venvs/z\n", "has not passed the health gate", None),
    (_record("/h/venvs/a", True), None, "has not passed the health gate", None),
    # the live venv failed its last check and was not rolled back: checked again, never downgraded
    (_record("/h/venvs/b", False), "/h/venvs/a\n", "failed its last smoke check (GET / 500)", None),
])
def test_a_live_venv_no_gate_passed_is_checked_again(record, previous, reason, rollback_to):
    from pyinfra_devpi import smoke

    found = smoke.recheck(record, "/h/venvs/b", previous)
    assert (found and found.reason and reason in found.reason) if reason else found is None, found
    assert (found.rollback_to if found else None) == rollback_to

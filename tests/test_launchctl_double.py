"""Tests of the launchctl test double (tests/fakes/launchctl), driven as a subprocess.

The end-to-end tests trust this double to behave like launchctl/launchd; these tests pin
the behaviours (and real-launchctl messages and exit codes) they rely on.
"""

import json
import os
import plistlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

LAUNCHCTL = Path(__file__).parent / "fakes" / "launchctl"
UID = os.getuid()
GUI = f"gui/{UID}"
USER = f"user/{UID}"
HINT = "Try re-running the command as root for richer errors."

# The job: writes its pid, cwd and environment to a report file, says hello on both
# streams, then sleeps.
SLEEPER = r"""
import json, os, sys, time
report = sys.argv[1]
tmp = report + ".tmp"
with open(tmp, "w") as fh:
    json.dump({"pid": os.getpid(), "cwd": os.getcwd(), "env": dict(os.environ),
               "sid": os.getsid(0)}, fh)
os.replace(tmp, report)
print("hello stdout", flush=True)
print("hello stderr", file=sys.stderr, flush=True)
time.sleep(300)
"""


def ps_field(pid, keyword):
    """One `ps -o` column for pid (BSD/macOS and procps alike), or None if no such pid.

    -ww: no width limit, which macOS's ps applies even when not writing to a terminal.
    """
    result = subprocess.run(["ps", "-ww", "-o", f"{keyword}=", "-p", str(pid)],
                            capture_output=True, text=True, timeout=10)
    value = result.stdout.strip()
    return value if result.returncode == 0 and value else None


def alive(pid):
    """Running and not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = ps_field(pid, "stat")  # e.g. "S", "Ss", "R+"; "Z" for a zombie
    return state is not None and not state.startswith("Z")


def wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def fields(print_output):
    """Top-level `key = value` lines of `launchctl print` (nested blocks skipped)."""
    result = {}
    for line in print_output.splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and " = " in line:
            key, value = line.strip().split(" = ", 1)
            if value != "{":
                result[key] = value
    return result


class Double:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.env = dict(os.environ, LAUNCHCTL_DOUBLE_STATE=str(self.state),
                        LAUNCHCTL_DOUBLE_RICH_ERRORS="0")
        self.env.pop("LAUNCHCTL_DOUBLE_TEARDOWN_SECONDS", None)
        self.env.pop("LAUNCHCTL_DOUBLE_DEFAULT_SESSION_TYPE", None)
        self.env.pop("SUDO_UID", None)
        self.pids = set()
        # The test's user is logged in at the console (gui/<uid> exists) whoever owns
        # /dev/console here; tests of a headless session rewrite or remove the file.
        self.state.mkdir(parents=True, exist_ok=True)
        self.console_uid(UID)

    def console_uid(self, uid):
        path = self.state / "console_uid"
        if uid is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(f"{uid}\n")

    def run(self, *args, env=None):
        merged = dict(self.env, **(env or {}))
        return subprocess.run([str(LAUNCHCTL), *args], env=merged, capture_output=True,
                              text=True, timeout=30)

    def ok(self, *args, env=None):
        result = self.run(*args, env=env)
        assert result.returncode == 0, (args, result.returncode, result.stderr)
        self.remember_pids()
        return result

    def plist(self, label, program=None, **keys):
        work = self.tmp / f"{label}.work"
        work.mkdir(exist_ok=True)
        data = {
            "Label": label,
            "ProgramArguments": program or [sys.executable, "-c", SLEEPER,
                                            str(self.report(label))],
            "EnvironmentVariables": {"DEVPI_TEST_VAR": "forty two"},
            "WorkingDirectory": str(work),
            "StandardOutPath": str(self.tmp / f"{label}.out.log"),
            "StandardErrorPath": str(self.tmp / f"{label}.err.log"),
            "RunAtLoad": True,
            "KeepAlive": True,
            "ThrottleInterval": 1,
            "LimitLoadToSessionType": ["Aqua", "Background"],
            "ProcessType": "Interactive",
        }
        for key, value in keys.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        path = self.tmp / f"{label}.plist"
        path.write_bytes(plistlib.dumps(data))
        path.chmod(0o644)
        return path

    def report(self, label):
        return self.tmp / f"{label}.report.json"

    def read_report(self, label):
        try:
            return json.loads(self.report(label).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def print(self, target):
        result = self.run("print", target)
        if result.returncode == 0:
            self.remember_pids(result.stdout)
        return result

    def info(self, label, domain=GUI):
        result = self.print(f"{domain}/{label}")
        assert result.returncode == 0, result.stderr
        return fields(result.stdout)

    def pid(self, label, domain=GUI):
        value = self.info(label, domain).get("pid")
        return int(value) if value else None

    def remember_pids(self, text=None):
        if text:
            value = fields(text).get("pid")
            if value:
                self.pids.add(int(value))
        for status in self.state.glob("jobs/*/*/status.json"):
            try:
                data = json.loads(status.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            for key in ("supervisor_pid", "pid"):
                if data.get(key):
                    self.pids.add(data[key])

    def supervisor_pid(self, label, domain=GUI):
        status = self.state / "jobs" / domain.replace("/", "_") / label / "status.json"
        return json.loads(status.read_text())["supervisor_pid"]

    def ours(self, pid):
        """Only signal processes that belong to this test (pids may be reused)."""
        return str(self.tmp) in (ps_field(pid, "command") or "")

    def cleanup(self):
        self.remember_pids()
        self.run("_double-shutdown")
        for pid in self.pids:
            if alive(pid) and self.ours(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def double(tmp_path):
    d = Double(tmp_path)
    yield d
    d.cleanup()


def test_requires_the_state_directory(double):
    env = {k: v for k, v in double.env.items() if k != "LAUNCHCTL_DOUBLE_STATE"}
    result = subprocess.run([str(LAUNCHCTL), "print", f"{GUI}/x"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "LAUNCHCTL_DOUBLE_STATE" in result.stderr


def test_bootstrap_starts_the_job_as_the_plist_says(double):
    path = double.plist("net.devpi.a")
    double.ok("bootstrap", GUI, str(path))

    report = wait_for(lambda: double.read_report("net.devpi.a"))
    assert report, "the job never ran"
    out = double.print(f"{GUI}/net.devpi.a").stdout
    info = fields(out)
    assert info["state"] == "running"
    assert int(info["pid"]) == report["pid"] and alive(report["pid"])
    assert info["active count"] == "1"
    assert info["runs"] == "1"
    assert info["path"] == str(path)
    assert info["program"] == sys.executable
    assert info["last exit code"] == "(never exited)"
    assert info["working directory"] == str(double.tmp / "net.devpi.a.work")
    assert info["stdout path"] == str(double.tmp / "net.devpi.a.out.log")
    assert info["domain"] == f"{GUI} [100008]"
    assert info["spawn type"] == "interactive (4)"
    assert info["properties"] == "keepalive | runatload | inferred program"
    assert out.startswith(f"{GUI}/net.devpi.a = {{\n") and out.endswith("}\n")
    assert f"\targuments = {{\n\t\t{sys.executable}\n\t\t-c\n" in out
    assert "\tdefault environment = {\n\t\tPATH => /usr/bin:/bin:/usr/sbin:/sbin\n\t}" in out
    assert "\t\tDEVPI_TEST_VAR => forty two\n" in out
    # nested blocks carry their own `state =` lines, as real output does
    assert "\tresource coalition = {\n" in out and "\t\tstate = active\n" in out

    # launchd's environment, working directory and log files
    env = report["env"]
    assert env["DEVPI_TEST_VAR"] == "forty two"
    assert env["PATH"] == "/usr/bin:/bin:/usr/sbin:/sbin"
    assert env["XPC_SERVICE_NAME"] == "net.devpi.a"
    for key in ("HOME", "USER", "LOGNAME", "SHELL", "TMPDIR"):
        assert env.get(key), key
    assert "LAUNCHCTL_DOUBLE_STATE" not in env
    assert report["cwd"] == str(double.tmp / "net.devpi.a.work")
    assert wait_for(lambda: "hello stdout" in (double.tmp / "net.devpi.a.out.log").read_text())
    assert wait_for(lambda: "hello stderr" in (double.tmp / "net.devpi.a.err.log").read_text())

    # detached: the job leads its own session, the supervisor is not in ours
    assert report["sid"] == report["pid"]
    assert os.getsid(double.supervisor_pid("net.devpi.a")) != os.getsid(0)



def test_bootstrap_of_a_loaded_job_fails_with_error_5(double):
    path = double.plist("net.devpi.b")
    double.ok("bootstrap", GUI, str(path))
    pid = wait_for(lambda: double.pid("net.devpi.b"))

    again = double.run("bootstrap", GUI, str(path))
    assert again.returncode == 5
    assert again.stderr == f"Bootstrap failed: 5: Input/output error\n{HINT}\n"
    rich = double.run("bootstrap", GUI, str(path), env={"LAUNCHCTL_DOUBLE_RICH_ERRORS": "1"})
    assert rich.returncode == 5
    assert rich.stderr == (f"{path}: service already bootstrapped\n"
                           "Bootstrap failed: 5: Input/output error\n")
    assert double.pid("net.devpi.b") == pid and alive(pid)


def test_unknown_services_answer_113(double):
    result = double.run("print", f"{GUI}/no.such.job")
    assert result.returncode == 113
    assert result.stdout == ""
    assert result.stderr == (
        f'Bad request.\nCould not find service "no.such.job" in domain for user gui: {UID}\n')
    result = double.run("print", f"{USER}/no.such.job")
    assert result.returncode == 113
    assert f'Could not find service "no.such.job" in domain for uid: {UID}' in result.stderr

    result = double.run("kickstart", "-k", f"{GUI}/no.such.job")
    assert result.returncode == 113
    assert result.stderr == (
        f'Could not find service "no.such.job" in domain for user gui: {UID}\n')

    result = double.run("list", "no.such.job")
    assert result.returncode == 113
    assert result.stderr == 'Could not find service "no.such.job" in domain for port\n'


def test_bootout_stops_the_job_and_unloads_it(double):
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.c")))
    pid = wait_for(lambda: double.pid("net.devpi.c"))
    supervisor = double.supervisor_pid("net.devpi.c")

    double.ok("bootout", f"{GUI}/net.devpi.c")
    # bootout waits: nothing is left when it returns
    assert not alive(pid)
    assert wait_for(lambda: not alive(supervisor), 2)
    assert double.print(f"{GUI}/net.devpi.c").returncode == 113

    again = double.run("bootout", f"{GUI}/net.devpi.c")
    assert again.returncode == 3
    assert again.stderr == "Boot-out failed: 3: No such process\n"


def test_bootout_by_plist_path(double):
    path = double.plist("net.devpi.d")
    double.ok("bootstrap", USER, str(path))
    pid = wait_for(lambda: double.pid("net.devpi.d", USER))
    assert double.info("net.devpi.d", USER)["domain"] == USER
    double.ok("bootout", USER, str(path))
    assert not alive(pid)
    missing = double.run("bootout", USER, str(path))
    assert missing.returncode == 5
    assert missing.stderr == f"Boot-out failed: 5: Input/output error\n{HINT}\n"


def test_bootstrap_right_after_bootout_hits_the_teardown_window(double):
    path = double.plist("net.devpi.e")
    window = {"LAUNCHCTL_DOUBLE_TEARDOWN_SECONDS": "0.6"}
    double.ok("bootstrap", GUI, str(path))
    double.ok("bootout", f"{GUI}/net.devpi.e", env=window)
    early = double.run("bootstrap", GUI, str(path))
    assert early.returncode == 5
    assert early.stderr.startswith("Bootstrap failed: 5: Input/output error\n")
    time.sleep(0.7)
    double.ok("bootstrap", GUI, str(path))
    assert wait_for(lambda: double.pid("net.devpi.e"))

    double.ok("bootout", f"{GUI}/net.devpi.e", env={"LAUNCHCTL_DOUBLE_TEARDOWN_SECONDS": "0"})
    double.ok("bootstrap", GUI, str(path))


@pytest.mark.parametrize("keepalive", [True, {"SuccessfulExit": False}])
def test_killed_job_is_restarted_under_keepalive(double, keepalive):
    # in user/<uid>, the SSH session's domain, which `list` shows
    double.ok("bootstrap", USER, str(double.plist("net.devpi.f", KeepAlive=keepalive)))
    old = wait_for(lambda: double.pid("net.devpi.f", USER))
    os.kill(old, signal.SIGKILL)

    new = wait_for(lambda: (p := double.pid("net.devpi.f", USER)) and p != old and p, 5)
    assert new and new != old
    assert alive(new) and not alive(old)
    info = double.info("net.devpi.f", USER)
    assert info["last terminating signal"] == "Killed: 9"
    assert "last exit code" not in info  # the signal line replaces it
    assert info["runs"] == "2"
    # the legacy table shows the live pid next to the previous run's status
    assert f"{new}\t-9\tnet.devpi.f" in double.ok("list").stdout.splitlines()
    assert wait_for(lambda: double.read_report("net.devpi.f")["pid"] == new)


def test_killed_job_stays_down_without_keepalive(double):
    double.ok("bootstrap", USER, str(double.plist("net.devpi.g", KeepAlive=False,
                                                   ThrottleInterval=0.5)))
    old = wait_for(lambda: double.pid("net.devpi.g", USER))
    os.kill(old, signal.SIGKILL)
    assert wait_for(lambda: double.info("net.devpi.g", USER)["state"] == "not running")
    time.sleep(0.8)  # longer than the ThrottleInterval
    info = double.info("net.devpi.g", USER)
    assert info["state"] == "not running" and "pid" not in info
    assert info["runs"] == "1"
    assert info["active count"] == "0"
    assert info["last terminating signal"] == "Killed: 9"
    assert "-\t-9\tnet.devpi.g" in double.ok("list").stdout


def test_successful_exit_false_restarts_only_failures(double):
    code = "import sys; sys.exit(int(sys.argv[1]))"
    keepalive = {"SuccessfulExit": False}
    double.ok("bootstrap", GUI, str(double.plist(
        "net.devpi.ok", program=[sys.executable, "-c", code, "0"], KeepAlive=keepalive,
        ThrottleInterval=0)))
    double.ok("bootstrap", GUI, str(double.plist(
        "net.devpi.bad", program=[sys.executable, "-c", code, "3"], KeepAlive=keepalive,
        ThrottleInterval=0)))
    assert wait_for(lambda: int(double.info("net.devpi.bad")["runs"]) >= 3, 5)
    info = double.info("net.devpi.ok")
    assert info["runs"] == "1" and info["last exit code"] == "0"
    assert double.info("net.devpi.bad")["last exit code"] == "3"


def test_throttle_interval_spaces_respawns(double):
    quick = ["/bin/sh", "-c", "exit 1"]
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.fast", program=quick,
                                                   ThrottleInterval=1)))
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.slow", program=quick,
                                                   ThrottleInterval=None)))
    time.sleep(2.2)
    fast = double.info("net.devpi.fast")
    slow = double.info("net.devpi.slow")
    # spawns at ~0 s, 1 s, 2 s: never faster than one per ThrottleInterval
    assert 2 <= int(fast["runs"]) <= 4, fast
    assert fast["minimum runtime"] == "1"
    # default ThrottleInterval is 10 s: one spawn, the next one scheduled
    assert slow["runs"] == "1"
    assert slow["state"] == "spawn scheduled"
    assert slow["minimum runtime"] == "10"
    assert slow["last exit code"] == "1"


def test_kickstart(double):
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.h")))
    old = wait_for(lambda: double.pid("net.devpi.h"))

    same = double.ok("kickstart", f"{GUI}/net.devpi.h")
    assert same.stdout == "" and double.pid("net.devpi.h") == old

    result = double.ok("kickstart", "-k", "-p", f"{GUI}/net.devpi.h")
    new = int(result.stdout.strip())
    assert new != old and alive(new) and not alive(old)
    info = double.info("net.devpi.h")
    assert int(info["pid"]) == new
    assert info["last terminating signal"] == "Terminated: 15"
    assert info["runs"] == "2"

    # KeepAlive alone starts the job at load, as launchd does
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.ka", RunAtLoad=False)))
    assert wait_for(lambda: double.pid("net.devpi.ka"))

    # a loaded job that is not running is started
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.i", RunAtLoad=False,
                                                 KeepAlive=False)))
    info = double.info("net.devpi.i")
    assert info["state"] == "not running" and info["runs"] == "0"
    assert info["last exit code"] == "(never exited)"
    started = int(double.ok("kickstart", "-p", f"{GUI}/net.devpi.i").stdout)
    assert double.pid("net.devpi.i") == started and alive(started)


def test_disabled_job_is_refused(double):
    path = double.plist("net.devpi.j")
    double.ok("disable", f"{GUI}/net.devpi.j")
    assert double.ok("print-disabled", GUI).stdout == (
        'disabled services = {\n\t"net.devpi.j" => disabled\n}\n')
    refused = double.run("bootstrap", GUI, str(path))
    assert refused.returncode == 5
    assert refused.stderr == f"Bootstrap failed: 5: Input/output error\n{HINT}\n"
    rich = double.run("bootstrap", GUI, str(path), env={"LAUNCHCTL_DOUBLE_RICH_ERRORS": "1"})
    assert rich.returncode == 119
    assert rich.stderr == f"{path}: Service is disabled\nBootstrap failed: 119: Service is disabled\n"
    assert double.print(f"{GUI}/net.devpi.j").returncode == 113

    double.ok("enable", f"{GUI}/net.devpi.j")
    assert '"net.devpi.j" => enabled' in double.ok("print-disabled", GUI).stdout
    double.ok("bootstrap", GUI, str(path))
    pid = wait_for(lambda: double.pid("net.devpi.j"))
    # disabling does not unload a loaded job
    double.ok("disable", f"{GUI}/net.devpi.j")
    assert double.pid("net.devpi.j") == pid and alive(pid)


def test_session_type_must_fit_the_domain(double):
    aqua_only = double.plist("net.devpi.k", LimitLoadToSessionType="Aqua")
    refused = double.run("bootstrap", USER, str(aqua_only))
    assert refused.returncode == 5
    rich = double.run("bootstrap", USER, str(aqua_only), env={"LAUNCHCTL_DOUBLE_RICH_ERRORS": "1"})
    assert rich.returncode == 134
    assert "Service cannot load in requested session" in rich.stderr
    # no key means Aqua, as for launchd agents
    implicit = double.plist("net.devpi.l", LimitLoadToSessionType=None)
    assert double.run("bootstrap", USER, str(implicit)).returncode == 5
    double.ok("bootstrap", GUI, str(aqua_only))
    background = double.plist("net.devpi.m", LimitLoadToSessionType="Background")
    double.ok("bootstrap", USER, str(background))
    assert wait_for(lambda: double.pid("net.devpi.m", USER))


def test_unspawnable_program_is_ex_config(double):
    double.ok("bootstrap", GUI, str(double.plist(
        "net.devpi.n", program=[str(double.tmp / "missing")], KeepAlive=False)))
    info = double.info("net.devpi.n")
    assert info["state"] == "not running"
    assert info["last exit code"] == "78: EX_CONFIG"


def test_bad_plist_mode_and_missing_file(double):
    path = double.plist("net.devpi.o")
    path.chmod(0o666)
    assert double.run("bootstrap", GUI, str(path)).returncode == 5
    rich = double.run("bootstrap", GUI, str(path), env={"LAUNCHCTL_DOUBLE_RICH_ERRORS": "1"})
    assert rich.returncode == 122
    assert "Path had bad ownership/permissions" in rich.stderr
    missing = double.run("bootstrap", GUI, str(double.tmp / "nope.plist"))
    assert missing.returncode == 2
    assert missing.stderr == "Bootstrap failed: 2: No such file or directory\n"


def test_usage_errors(double):
    unknown = double.run("frobnicate")
    assert unknown.returncode == 1
    assert unknown.stderr == "Unrecognized subcommand: frobnicate\n"
    assert unknown.stdout.startswith("Usage: launchctl <subcommand> ... | help [subcommand]\n")

    bad = double.run("bootout", "--wait", f"{GUI}/net.devpi.x")
    assert bad.returncode == 64
    assert bad.stderr.startswith("Unrecognized target specifier.\nUsage: launchctl bootout ")

    assert double.run("bootstrap", GUI).returncode == 64
    assert double.run("kickstart", "-z", f"{GUI}/x").returncode == 64
    session = double.run("print", "session/100008/com.apple.x")
    assert session.returncode == 125 and "not emulated" in session.stderr
    other = double.run("print", f"gui/{UID + 1}/x")  # not at the console: no such domain
    assert other.returncode == 125


def test_double_shutdown_leaves_no_process(double):
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.p")))
    double.ok("bootstrap", USER, str(double.plist("net.devpi.q", KeepAlive=False,
                                                  LimitLoadToSessionType="Background")))
    jobs = [wait_for(lambda: double.pid("net.devpi.p")),
            wait_for(lambda: double.pid("net.devpi.q", USER))]
    supervisors = [double.supervisor_pid("net.devpi.p"),
                   double.supervisor_pid("net.devpi.q", USER)]
    assert all(alive(pid) for pid in jobs + supervisors)

    double.ok("_double-shutdown")
    assert not any(alive(pid) for pid in jobs)
    assert wait_for(lambda: not any(alive(pid) for pid in supervisors), 2)
    assert double.print(f"{GUI}/net.devpi.p").returncode == 113
    assert double.print(f"{USER}/net.devpi.q").returncode == 113
    assert double.ok("list").stdout == "PID\tStatus\tLabel\n"
    # shutting down an empty or missing state is fine
    double.ok("_double-shutdown")


def test_print_a_domain_lists_its_loaded_services(double):
    empty = double.ok("print", USER)
    assert empty.stdout.startswith(f"{USER} = {{\n") and "service count = 0" in empty.stdout
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.dom")))
    printed = double.ok("print", GUI).stdout
    assert "\ttype = login\n" in printed and "service count = 1" in printed
    assert printed.rstrip().endswith("}") and "net.devpi.dom" in printed


def test_a_calendar_job_runs_once_per_kickstart(double):
    """The backup job: StartCalendarInterval, no RunAtLoad, no KeepAlive. Loading it
    starts nothing; ``kickstart`` runs the program once, and after it exits (0) it is
    not restarted, as launchd does for an on-demand job."""
    marker = double.tmp / "runs.txt"
    program = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write('ran\\n')", str(marker)]
    plist = double.plist("net.devpi.backup", program=program, RunAtLoad=None, KeepAlive=None,
                         StartCalendarInterval={"Hour": 3, "Minute": 17})
    double.ok("bootstrap", GUI, str(plist))
    time.sleep(0.3)
    info = double.info("net.devpi.backup")
    assert info["state"] == "not running" and info["runs"] == "0" and not marker.exists()
    double.ok("kickstart", f"{GUI}/net.devpi.backup")
    assert wait_for(lambda: double.info("net.devpi.backup").get("last exit code") == "0")
    time.sleep(0.5)
    info = double.info("net.devpi.backup")
    assert info["state"] == "not running" and info["runs"] == "1"
    assert marker.read_text() == "ran\n"


# --------------------------------------------------------------------------- macOS over SSH
# ../shared/MACOS.md, point by point: the domains a session has, legacy verbs, bootout's 36,
# what print shows of the launch keys.

NO_DOMAIN = "Domain does not support specified action"


def test_gui_domain_of_a_user_not_at_the_console_answers_125(double):
    """Headless (someone else, or nobody, at the console): every verb on gui/<uid> fails
    with 125 and launchctl's texts (lidge-jun/opencodex#1770, home-manager#4413,
    hermes-agent#23387); the ``no_gui_status`` knob makes it 112 (Sequoia). user/<uid> is
    there either way."""
    double.console_uid(UID + 1)
    plist = str(double.plist("net.devpi.gone"))
    expected = {
        ("print", GUI): f"Could not print domain: 125: {NO_DOMAIN}\n",
        ("print", f"{GUI}/net.devpi.gone"): f"Could not print domain: 125: {NO_DOMAIN}\n",
        ("print-disabled", GUI): f"Could not print domain: 125: {NO_DOMAIN}\n",
        ("bootstrap", GUI, plist): f"Bootstrap failed: 125: {NO_DOMAIN}\n",
        ("bootout", f"{GUI}/net.devpi.gone"): f"Boot-out failed: 125: {NO_DOMAIN}\n",
        ("kickstart", "-k", f"{GUI}/net.devpi.gone"):
            f'Could not kickstart service "net.devpi.gone": 125: {NO_DOMAIN}\n',
        ("enable", f"{GUI}/net.devpi.gone"):
            f'Could not enable service "net.devpi.gone": 125: {NO_DOMAIN}\n',
        ("disable", f"{GUI}/net.devpi.gone"):
            f'Could not disable service "net.devpi.gone": 125: {NO_DOMAIN}\n',
    }
    for args, stderr in expected.items():
        result = double.run(*args)
        assert (result.returncode, result.stderr, result.stdout) == (125, stderr, ""), args
    double.ok("print", USER)
    double.ok("bootstrap", USER, str(double.plist("net.devpi.bg", LimitLoadToSessionType="Background")))

    (double.state / "no_gui_status").write_text("112\n")
    for args in expected:
        result = double.run(*args)
        assert (result.returncode, result.stderr) == (
            112, f"Bad request.\nCould not find domain for user gui: {UID}\n"), args

    double.console_uid(UID)  # logged in at the console: the domain is there
    double.ok("print", GUI)


def test_console_owner_is_the_owner_of_dev_console(double):
    """Without ``console_uid`` the double asks /dev/console, as the deploy does (`ls -ln
    /dev/console`; Homebrew's services/system.rb): its owner has gui/<uid>; if it is
    missing, the console is root's (the login window)."""
    double.console_uid(None)
    try:
        owner = os.stat("/dev/console").st_uid
    except OSError:
        owner = 0
    result = double.run("print", GUI)
    if owner == UID:
        assert result.returncode == 0, result.stderr
    else:
        assert (result.returncode, result.stderr) == (125, f"Could not print domain: 125: {NO_DOMAIN}\n")


@pytest.fixture
def nobody_double(tmp_path):
    """The double as ``nobody`` would run it: a state dir nobody may write, no knob."""
    import pwd
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="launchctl-console-"))
    directory.chmod(0o755)
    d = Double(directory)
    d.console_uid(None)
    nobody = pwd.getpwnam("nobody")
    os.chown(d.state, nobody.pw_uid, nobody.pw_gid)
    d.nobody = nobody
    yield d
    d.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the double as another user")
def test_a_user_who_does_not_own_dev_console_has_no_gui_domain(nobody_double):
    """/dev/console is not nobody's: gui/<nobody> is not there, user/<nobody> is."""
    uid = nobody_double.nobody.pw_uid
    assert os.stat("/dev/console").st_uid != uid
    result = as_nobody(nobody_double, "print", f"gui/{uid}")
    assert (result.returncode, result.stderr) == (125, f"Could not print domain: 125: {NO_DOMAIN}\n")
    assert as_nobody(nobody_double, "print", f"user/{uid}").returncode == 0


def test_gui_user_and_system_domains_hold_separate_jobs(double):
    """One label, loaded in user/<uid> and then gui/<uid> (a console login loading an Aqua
    agent while the user/<uid> job holds the label): two jobs, two processes, each
    domain's verbs touch only its own (MACOS.md)."""
    path = double.plist("net.devpi.twice")
    double.ok("bootstrap", USER, str(path))
    double.ok("bootstrap", GUI, str(path))
    gui_pid = wait_for(lambda: double.pid("net.devpi.twice", GUI))
    user_pid = wait_for(lambda: double.pid("net.devpi.twice", USER))
    assert gui_pid != user_pid and alive(gui_pid) and alive(user_pid)
    double.ok("disable", f"{GUI}/net.devpi.twice")
    assert "net.devpi.twice" not in double.ok("print-disabled", USER).stdout
    double.ok("bootout", f"{GUI}/net.devpi.twice")
    assert not alive(gui_pid) and alive(user_pid)
    assert double.print(f"{GUI}/net.devpi.twice").returncode == 113
    assert double.pid("net.devpi.twice", USER) == user_pid
    assert double.print("system/net.devpi.twice").returncode == 113


def test_user_domain_refuses_a_label_that_runs_in_gui(double):
    """launchd refuses ``bootstrap user/<uid>`` of a label running in gui/<uid> with error
    5 (MACOS.md, "bootstrap, bootout, kickstart"); the gui job goes on."""
    path = double.plist("net.devpi.gui-first")
    double.ok("bootstrap", GUI, str(path))
    gui_pid = wait_for(lambda: double.pid("net.devpi.gui-first", GUI))
    refused = double.run("bootstrap", USER, str(path))
    assert refused.returncode == 5, refused.stderr
    assert refused.stderr.startswith("Bootstrap failed: 5: Input/output error")
    assert double.print(f"{USER}/net.devpi.gui-first").returncode == 113
    assert double.pid("net.devpi.gui-first", GUI) == gui_pid and alive(gui_pid)


def test_legacy_load_of_an_aqua_agent_by_the_console_owner_lands_in_gui(double):
    """What the Ansible role ran over SSH on indri, where its user owns the console:
    ``launchctl load -w <plist>`` of a plist without LimitLoadToSessionType (an Aqua
    agent) loads it into gui/<uid> (launchctl(1): legacy verbs target the GUI session)."""
    plist = double.plist("net.devpi.legacy", LimitLoadToSessionType=None)
    double.ok("disable", f"{GUI}/net.devpi.legacy")
    double.ok("load", "-w", str(plist))
    assert wait_for(lambda: double.pid("net.devpi.legacy", GUI))
    assert double.print(f"{USER}/net.devpi.legacy").returncode == 113
    assert '"net.devpi.legacy" => enabled' in double.ok("print-disabled", GUI).stdout
    # loaded already: refused like bootstrap, under legacy load's own title and hint
    again = double.run("load", str(plist))
    assert (again.returncode, again.stderr) == (5, (
        "Load failed: 5: Input/output error\n"
        "Try running `launchctl bootstrap` as root for richer errors.\n"))  # drduh/YubiKey-Guide#504
    assert double.run("load").returncode == 64
    double.ok("bootout", f"{GUI}/net.devpi.legacy")


def test_legacy_load_of_an_aqua_agent_over_a_headless_session_loads_nothing(double):
    """Nobody (or someone else) at the console: launchd has no Aqua session for the
    caller. Nothing is loaded, launchd's message is printed, and the exit is 0
    (actions/runner#349, buildkite/agent PR #1960)."""
    double.console_uid(UID + 1)
    plist = double.plist("net.devpi.headless", LimitLoadToSessionType=None)
    result = double.run("load", "-w", str(plist))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "", "Could not find domain for port (Aqua)\n")
    assert double.print(f"{USER}/net.devpi.headless").returncode == 113
    assert double.run("print", f"{GUI}/net.devpi.headless").returncode == 125
    assert not list(double.state.glob("jobs/*/net.devpi.headless"))


@pytest.mark.parametrize("how", ["-S Background", "LimitLoadToSessionType"])
def test_legacy_load_of_a_background_agent_lands_in_user(double, how):
    """``-S Background`` (buildkite/agent PR #1960) or the plist's own Background session:
    the job lands in user/<uid>, the SSH session's, whoever owns the console."""
    double.console_uid(UID + 1)
    if how == "-S Background":
        plist = double.plist("net.devpi.bg", LimitLoadToSessionType=None)
        double.ok("load", "-S", "Background", str(plist))
    else:
        plist = double.plist("net.devpi.bg", LimitLoadToSessionType="Background")
        double.ok("load", str(plist))
    assert wait_for(lambda: double.pid("net.devpi.bg", USER))
    double.console_uid(UID)
    assert double.print(f"{GUI}/net.devpi.bg").returncode == 113


@pytest.mark.skipif(os.geteuid() != 0, reason="loads into the system domain as root")
def test_legacy_load_through_sudo_lands_in_system(double):
    """``sudo launchctl load``: root's legacy verbs target the system domain
    (launchctl(1)), with launchctl's warning for a LaunchAgents path
    (drduh/YubiKey-Guide#504); ``list`` as root shows the system domain."""
    agents = double.tmp / "Library" / "LaunchAgents"
    agents.mkdir(parents=True)
    plist = double.plist("net.devpi.sudo", LimitLoadToSessionType=None)
    moved = agents / plist.name
    plist.rename(moved)
    sudo = {"SUDO_UID": "501", "SUDO_USER": "someone"}
    result = double.run("load", "-w", str(moved), env=sudo)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("Warning: Expecting a LaunchDaemons path since the command was ran as root. "
                             "Got LaunchAgents instead.\n`launchctl bootstrap` is a recommended alternative.\n")
    pid = wait_for(lambda: double.pid("net.devpi.sudo", "system"))
    assert pid and double.print(f"{GUI}/net.devpi.sudo").returncode == 113
    listed = double.ok("list", "net.devpi.sudo", env=sudo).stdout
    assert f'\t"PID" = {pid};\n' in listed and '\t"LimitLoadToSessionType" = "System";\n' in listed
    assert double.run("list", "net.devpi.sudo").returncode == 113  # root's own SSH session: user/0
    double.ok("bootout", "system/net.devpi.sudo")


def test_list_shows_the_callers_session_and_managername_says_background(double):
    """Legacy ``list`` answers from the caller's own session, over SSH the Background one,
    user/<uid>; not a chosen domain (Homebrew/brew PR #588). ``managername`` prints
    ``Background`` over SSH (Mic92/sops-nix#966)."""
    assert double.ok("managername").stdout == "Background\n"
    path = double.plist("net.devpi.both")
    double.ok("bootstrap", USER, str(path))
    double.ok("bootstrap", GUI, str(path))
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.guionly")))
    gui_pid = wait_for(lambda: double.pid("net.devpi.both", GUI))
    user_pid = wait_for(lambda: double.pid("net.devpi.both", USER))
    assert wait_for(lambda: double.pid("net.devpi.guionly", GUI))

    listed = double.ok("list", "net.devpi.both").stdout
    assert f'\t"PID" = {user_pid};\n' in listed
    assert '\t"Label" = "net.devpi.both";\n' in listed and '\t"OnDemand" = false;\n' in listed
    assert '\t"LimitLoadToSessionType" = "Background";\n' in listed
    table = double.ok("list").stdout.splitlines()
    assert table == ["PID\tStatus\tLabel", f"{user_pid}\t0\tnet.devpi.both"]
    assert str(gui_pid) not in "\n".join(table)
    missing = double.run("list", "net.devpi.guionly")
    assert (missing.returncode, missing.stderr) == (
        113, 'Could not find service "net.devpi.guionly" in domain for port\n')


# A job that shrugs off SIGTERM: it stops only at the SIGKILL after its ExitTimeOut.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def test_bootout_may_answer_36_while_the_job_stops(double):
    """With the ``bootout_in_progress`` knob, bootout of a running job answers 36
    "Operation now in progress" at once (osquery/osquery#5698); the job is still loaded
    (print finds it) until it has stopped, then it is gone."""
    (double.state / "bootout_in_progress").write_text("")
    double.ok("bootstrap", GUI, str(double.plist(
        "net.devpi.slowstop", program=[sys.executable, "-c", STUBBORN], ExitTimeOut=1)))
    pid = wait_for(lambda: double.pid("net.devpi.slowstop"))
    double.remember_pids()

    result = double.run("bootout", f"{GUI}/net.devpi.slowstop")
    assert (result.returncode, result.stderr) == (36, "Boot-out failed: 36: Operation now in progress\n")
    assert double.print(f"{GUI}/net.devpi.slowstop").returncode == 0  # still loaded
    again = double.run("bootout", f"{GUI}/net.devpi.slowstop")
    assert again.returncode == 36
    assert wait_for(lambda: double.print(f"{GUI}/net.devpi.slowstop").returncode == 113, 10)
    assert not alive(pid)
    gone = double.run("bootout", f"{GUI}/net.devpi.slowstop")
    assert (gone.returncode, gone.stderr) == (3, "Boot-out failed: 3: No such process\n")

    # a job that is not running is booted out at once, knob or not
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.idle", RunAtLoad=False, KeepAlive=False)))
    double.ok("bootout", f"{GUI}/net.devpi.idle")
    assert double.print(f"{GUI}/net.devpi.idle").returncode == 113


@pytest.mark.parametrize(("keepalive", "block"), [
    ({"SuccessfulExit": False}, "\t\tsuccessful exit => 0\n"),
    ({"SuccessfulExit": True}, "\t\tsuccessful exit => 1\n"),
    ({"SuccessfulExit": False, "Crashed": True}, "\t\tsuccessful exit => 0\n\t\tafter crash => 1\n"),
    (True, None),
])
def test_print_shows_minimum_runtime_and_keepalive_semaphores(double, keepalive, block):
    """ThrottleInterval as ``minimum runtime`` (default 10) and KeepAlive's dict as a
    ``semaphores`` block after ``last exit code``, as macOS 14/15 print them
    (HsuTse/teamwork-leader's macOS 14 capture; see the double's keepalive_semaphores)."""
    double.ok("bootstrap", GUI, str(double.plist("net.devpi.sem", KeepAlive=keepalive,
                                                 ThrottleInterval=None, RunAtLoad=False,
                                                 program=[sys.executable, "-c", "import time; time.sleep(300)"])))
    out = double.print(f"{GUI}/net.devpi.sem").stdout
    assert fields(out)["minimum runtime"] == "10"
    if block is None:
        assert "semaphores" not in out
    else:
        assert f"\tlast exit code = (never exited)\n\n\tsemaphores = {{\n{block}\t}}\n\n" in out, out

# --------------------------------------------------------------------------- the system domain
# A LaunchDaemon: root loads it, anyone reads it, it runs as its UserName. These tests act
# as root and as another user (``nobody``), so they need root (CI runs as root).

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="acts as root and as another user")
SYSTEM_PATH = "/usr/bin:/bin"


@pytest.fixture
def shared(tmp_path):
    """A double whose state dir, work dir and logs another user can reach (pytest's
    tmp_path is root's alone); the state dir is that user's, as the SSH user's is."""
    import pwd
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="launchctl-system-"))
    directory.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    d = Double(directory)
    os.chown(d.state, nobody.pw_uid, nobody.pw_gid)
    (directory / "work").mkdir(mode=0o777)
    (directory / "work").chmod(0o777)
    d.env["PATH"] = SYSTEM_PATH
    d.nobody = nobody
    yield d
    d.run("_double-shutdown")
    d.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


def as_nobody(double, *args):
    return subprocess.run([str(LAUNCHCTL), *args], env=double.env, capture_output=True, text=True, timeout=30,
                          user="nobody")


def daemon_plist(double, label, **keys):
    """A LaunchDaemon run as ``nobody``: writes its report (pid, uid, groups, env) into
    the shared work dir; root's, 0644."""
    work = double.tmp / "work"
    program = ["/usr/bin/python3", "-c", SLEEPER.replace('"sid": os.getsid(0)}',
               '"sid": os.getsid(0), "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}'),
               str(work / f"{label}.report.json")]
    data = {"Label": label, "ProgramArguments": program, "WorkingDirectory": str(work),
            "StandardOutPath": str(work / f"{label}.out.log"), "StandardErrorPath": str(work / f"{label}.err.log"),
            "RunAtLoad": True, "KeepAlive": True, "UserName": "nobody", "GroupName": "nogroup",
            "EnvironmentVariables": {"LANG": "en_US.UTF-8"}}
    data.update(keys)
    data = {k: v for k, v in data.items() if v is not None}
    path = double.tmp / f"{label}.plist"
    path.write_bytes(plistlib.dumps(data))
    path.chmod(0o644)
    return path


@needs_root
def test_anyone_reads_the_system_domain_but_only_root_changes_it(shared):
    plist = daemon_plist(shared, "net.devpi.daemon")
    missing = as_nobody(shared, "print", "system/net.devpi.daemon")
    assert missing.returncode == 113
    assert missing.stderr == 'Bad request.\nCould not find service "net.devpi.daemon" in domain for system\n'
    refused = as_nobody(shared, "bootstrap", "system", str(plist))
    assert (refused.returncode, refused.stderr) == (1, "Bootstrap failed: 1: Operation not permitted\n")
    for verb in ("enable", "disable", "kickstart"):
        result = as_nobody(shared, verb, "system/net.devpi.daemon")
        assert (result.returncode, result.stderr) == (1, f"Could not {verb} service: 1: Operation not permitted\n")

    shared.ok("bootstrap", "system", str(plist))
    printed = as_nobody(shared, "print", "system/net.devpi.daemon")
    assert printed.returncode == 0, printed.stderr
    info = fields(printed.stdout)
    assert info["type"] == "LaunchDaemon" and info["domain"] == "system" and info["state"] == "running"
    assert info["username"] == "nobody"
    assert "net.devpi.daemon" in as_nobody(shared, "print", "system").stdout
    assert as_nobody(shared, "print-disabled", "system").returncode == 0
    out = as_nobody(shared, "bootout", "system/net.devpi.daemon")
    assert (out.returncode, out.stderr) == (1, "Boot-out failed: 1: Operation not permitted\n")
    shared.ok("bootout", "system/net.devpi.daemon")
    assert as_nobody(shared, "print", "system/net.devpi.daemon").returncode == 113
    # What root did in the state dir stays usable by its owner (the SSH user's own jobs).
    assert as_nobody(shared, "print-disabled", f"user/{shared.nobody.pw_uid}").returncode == 0
    assert as_nobody(shared, "enable", f"user/{shared.nobody.pw_uid}/net.devpi.x").returncode == 0


@needs_root
def test_a_daemon_runs_as_its_user_with_launchds_environment(shared):
    plist = daemon_plist(shared, "net.devpi.asuser")
    shared.ok("bootstrap", "system", str(plist))
    report = wait_for(lambda: shared.read_report("work/net.devpi.asuser"), 10)
    assert report, (shared.tmp / "work" / "net.devpi.asuser.err.log").read_text()
    nogroup = __import__("grp").getgrnam("nogroup").gr_gid
    assert (report["uid"], report["gid"]) == (shared.nobody.pw_uid, nogroup)
    assert set(report["groups"]) == set(os.getgrouplist("nobody", nogroup))  # initgroups
    env = report["env"]
    assert (env["HOME"], env["USER"], env["LOGNAME"], env["SHELL"]) == (
        shared.nobody.pw_dir, "nobody", "nobody", shared.nobody.pw_shell)
    assert env["LANG"] == "en_US.UTF-8" and env["XPC_SERVICE_NAME"] == "net.devpi.asuser"
    # launchd opened the logs as root: a log that was not there is root's now.
    assert (shared.tmp / "work" / "net.devpi.asuser.out.log").stat().st_uid == 0
    shared.ok("bootout", "system/net.devpi.asuser")
    assert wait_for(lambda: not alive(report["pid"]), 5)


@needs_root
def test_a_daemon_plist_must_be_roots_and_not_writable_by_others(shared):
    plist = daemon_plist(shared, "net.devpi.owner")
    os.chown(plist, shared.nobody.pw_uid, shared.nobody.pw_gid)
    result = shared.run("bootstrap", "system", str(plist), env={"LAUNCHCTL_DOUBLE_RICH_ERRORS": "1"})
    assert result.returncode == 122
    assert result.stderr == f"{plist}: Path had bad ownership/permissions\nBootstrap failed: 122: Path had bad ownership/permissions\n"
    os.chown(plist, 0, 0)
    plist.chmod(0o664)
    assert shared.run("bootstrap", "system", str(plist), env={"LAUNCHCTL_DOUBLE_RICH_ERRORS": "1"}).returncode == 122
    # An agent's session type does not fit the system domain.
    agent = daemon_plist(shared, "net.devpi.agentish", LimitLoadToSessionType=["Aqua", "Background"])
    assert shared.run("bootstrap", "system", str(agent), env={"LAUNCHCTL_DOUBLE_RICH_ERRORS": "1"}).returncode == 134

"""Unit tests for facts.launchd: LaunchdJob's parsing of real launchctl outputs (see
tests/data/launchctl/SOURCES.md), its marker protocol, and both facts' shell commands,
run for real through sh/dash/bash with and without a stand-in launchctl (and a
stand-in console owner) on PATH."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.launchd import LaunchdJob, LaunchdSession

from .prepared import SHELLS, gnu_only_forms

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "data" / "launchctl"


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def process(lines: list[str]):
    return LaunchdJob().process(lines)


def replace_line(lines: list[str], old: str, new: str) -> list[str]:
    """Derive a case from a real fixture by replacing exactly one line (by its text)."""
    hits = [i for i, line in enumerate(lines) if line.strip() == old]
    assert len(hits) == 1, f"{old!r} found {len(hits)} times"
    out = list(lines)
    indent = out[hits[0]][: len(out[hits[0]]) - len(out[hits[0]].lstrip())]
    out[hits[0]] = indent + new
    return out


# ---------------------------------------------------------------------------
# Every fixture parses to what the text says.

EXPECTED = {
    "print_10.10_running_spaces.txt": {
        "label": "dev.mysql",
        "domain": None,  # header has no domain; the field is launchd's internal name
        "state": "running",
        "running": True,
        "pid": 24784,
        "last_exit_code": 1,
        "last_exit_signal": None,
        "program": "/opt/boxen/homebrew/bin/mysqld_safe",
        "arguments": [
            "/opt/boxen/homebrew/bin/mysqld_safe",
            "--defaults-file=/opt/boxen/config/mysql/my.cnf",
        ],
        "path": "/Library/LaunchDaemons/dev.mysql.plist",
        "runs": 2,
        "type": None,
        "working_directory": "/opt/boxen/data/mysql",
        "stdout_path": "/opt/boxen/log/mysql/console.log",
        "environment": {"XPC_SERVICE_NAME": "dev.mysql"},
    },
    "print_system_daemon_running_spaces.txt": {
        "label": "com.apple.akd",
        "domain": "system",
        "state": "running",
        "pid": 928,
        "last_exit_code": None,  # (never exited)
        "last_exit_signal": None,
        "program": "/System/Library/PrivateFrameworks/AuthKit.framework/Versions/A/Support/akd",
        "arguments": [
            "/System/Library/PrivateFrameworks/AuthKit.framework/Versions/A/Support/akd"
        ],
        "path": "/System/Library/LaunchDaemons/com.apple.akd.plist",
        "runs": 1,
        "type": "LaunchDaemon",
        "job_state": "running",
        "spawn_type": "adaptive (6)",
        "environment": {
            "MallocSpaceEfficient": "1",
            "XPC_SERVICE_NAME": "com.apple.akd",
        },
    },
    "print_submitted_login_item_spaces.txt": {
        "label": "com.vendor.helper",
        "domain": "gui/501",
        "state": "not running",
        "running": False,
        "pid": None,
        "last_exit_code": 0,
        "program": None,
        "arguments": [],
        "path": "(submitted by smd.500)",
        "runs": 1,
        "type": "Submitted",
        "job_state": "exited",
        "properties": ["supports transactions", "resolve program", "has LWCR"],
        "minimum_runtime": 10,
        # "semaphores = { successful exit => 0 }": KeepAlive SuccessfulExit false
        "successful_exit": False,
    },
    "print_keepalive_running_tabs.txt": {
        "label": "com.user.ddc-brightnessd",
        "domain": "gui/501",  # from the header; the field reads "gui/501 [100020]"
        "state": "running",
        "running": True,
        "pid": 1076,
        "last_exit_code": None,
        "last_exit_signal": None,
        "program": "/Users/user/.local/bin/ddc-brightnessd",
        "arguments": ["/Users/user/.local/bin/ddc-brightnessd"],
        "path": "/Users/user/scripts/launchagents/Library/LaunchAgents/com.user.ddc-brightnessd.plist",
        "runs": 1,
        "type": "LaunchAgent",
        "stdout_path": "/Users/user/Library/Logs/ddc-brightnessd.log",
        "stderr_path": "/Users/user/Library/Logs/ddc-brightnessd.log",
        "environment": {
            "OSLogRateLimit": "64",
            "DDC_DISPLAY": "PA27JCV",
            "XPC_SERVICE_NAME": "com.user.ddc-brightnessd",
        },
        "properties": [
            "keepalive",
            "runatload",
            "inferred program",
            "managed LWCR",
            "has LWCR",
        ],
        "minimum_runtime": 10,
        "successful_exit": None,  # KeepAlive true: no semaphore
    },
    "print_exited_1_watchpaths_tabs.txt": {
        "label": "com.user.sync-legacy",
        "domain": "gui/501",
        "state": "not running",
        "pid": None,
        "last_exit_code": 1,
        "last_exit_signal": None,
        "program": "/Users/user/.local/bin/sync-legacy.sh",
        "path": "/Users/user/scripts/launchagents/Library/LaunchAgents/com.user.sync-legacy.plist",
        "runs": 4,
        "job_state": "exited",
        "minimum_runtime": 30,
        "successful_exit": None,
    },
    "print_never_run_calendar_tabs.txt": {
        "label": "com.user.brew-maintain",
        "state": "not running",
        "pid": None,
        "last_exit_code": None,  # (never exited)
        "last_exit_signal": None,
        "runs": 0,
        "job_state": "uninitialized",
        "spawn_type": "daemon (3)",
    },
    "print_user_domain_calendar_exit0_tabs.txt": {
        "label": "local.resticprofile.self.check",
        "domain": "user/503",
        "state": "not running",
        "pid": None,
        "last_exit_code": 0,
        "program": "/Users/user/go/src/github.com/creativeprojects/resticprofile/resticprofile",
        "arguments": [
            "/Users/user/go/src/github.com/creativeprojects/resticprofile/resticprofile",
            "--no-prio",
            "--no-ansi",
            "--config",
            "examples/dev.yaml",
            "run-schedule",
            "check@self",
        ],
        "path": "/Users/user/Library/LaunchAgents/local.resticprofile.self.check.agent.plist",
        "runs": 1,
        "stdout_path": "local.resticprofile.self.check.log",
        "properties": [],  # "properties = " with nothing after it
    },
    "print_spawn_scheduled_signal_trimmed.txt": {
        "label": "com.macwsguide.macos-locationd",
        "domain": "user/501",
        "state": "spawn scheduled",
        "running": False,
        "pid": None,
        "last_exit_code": None,
        "last_exit_signal": "Bus error: 10",
        "last_exit_signal_number": 10,
        "runs": 105,
        "program": "/var/jb/usr/macOS/PrivateFrameworks/CoreLocation.framework/XPCServices/LocationdProxy.xpc/LocationdProxy",
        "path": None,
    },
    "print_not_found_bad_request.txt": None,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_expected_values(name):
    result = process(fixture_lines(name))
    expected = EXPECTED[name]
    if expected is None:
        assert result is None
        return
    assert result["loaded"] is True
    assert result["launchctl_available"] is True
    assert result["disabled"] is False  # no @disabled marker in a bare output
    for key, value in expected.items():
        assert result[key] == value, key


def test_every_fixture_has_expectations_and_a_source():
    on_disk = {p.name for p in FIXTURES.glob("*.txt")}
    assert on_disk == set(EXPECTED)
    sources = (FIXTURES / "SOURCES.md").read_text()
    for name in on_disk:
        assert f"`{name}`" in sources, name


def test_loaded_results_always_have_the_same_keys():
    key_sets = {
        name: frozenset(process(fixture_lines(name)))
        for name, expected in EXPECTED.items()
        if expected is not None
    }
    assert len(set(key_sets.values())) == 1
    keys = next(iter(key_sets.values()))
    for required in (
        "loaded",
        "launchctl_available",
        "domain",
        "label",
        "state",
        "pid",
        "last_exit_code",
        "last_exit_signal",
        "program",
        "arguments",
        "path",
        "runs",
        "disabled",
        "type",
        "stdout_path",
        "stderr_path",
    ):
        assert required in keys


# ---------------------------------------------------------------------------
# Layout details that a naive parser gets wrong.


def test_nested_state_lines_are_not_the_jobs_state():
    lines = fixture_lines("print_exited_1_watchpaths_tabs.txt")
    # The nested coalition blocks say "state = active"; the job is "not running".
    assert sum(1 for line in lines if line.strip() == "state = active") == 2
    assert process(lines)["state"] == "not running"


def test_top_level_state_found_even_after_nested_blocks():
    # Derived from a real fixture: move the job's own state line to the end of the
    # body, after every nested block that has its own "state = active".
    lines = fixture_lines("print_exited_1_watchpaths_tabs.txt")
    state_line = next(line for line in lines if line == "\tstate = not running")
    lines.remove(state_line)
    lines.insert(len(lines) - 1, state_line)
    assert lines[-1] == "}"
    assert process(lines)["state"] == "not running"


def test_lwcr_line_with_inline_bracket_does_not_hide_later_fields():
    lines = fixture_lines("print_keepalive_running_tabs.txt")
    assert "\t\t\t\t\t0 = \t\t\t\t]" in lines
    weird = lines.index("\t\t\t\t\t0 = \t\t\t\t]")
    # pid and last exit code come after that line in the real output.
    assert lines.index("\tpid = 1076") > weird
    result = process(lines)
    assert result["pid"] == 1076
    assert result["runs"] == 1


def test_nested_pid_lines_are_ignored():
    lines = fixture_lines("print_never_run_calendar_tabs.txt")
    # Derived: a nested block with a pid-like line must not make the job "have" a pid.
    at = (
        lines.index("\tresource coalition = {")
        if "\tresource coalition = {" in lines
        else None
    )
    assert at is None  # this fixture has no coalition block; add one in front of "}"
    lines[-1:-1] = [
        "\tresource coalition = {",
        "\t\tpid = 1",
        "\t\tstate = active",
        "\t}",
    ]
    result = process(lines)
    assert result["pid"] is None
    assert result["state"] == "not running"


def test_print_exit_code_with_description():
    # Derived: launchd prints named exit codes as "78: EX_CONFIG" on recent macOS.
    lines = replace_line(
        fixture_lines("print_exited_1_watchpaths_tabs.txt"),
        "last exit code = 1",
        "last exit code = 78: EX_CONFIG",
    )
    assert process(lines)["last_exit_code"] == 78


def test_print_killed_by_signal():
    # Derived: the real KeepAlive fixture with its exit line replaced by a SIGKILL death.
    lines = replace_line(
        fixture_lines("print_keepalive_running_tabs.txt"),
        "last exit code = (never exited)",
        "last terminating signal = Killed: 9",
    )
    result = process(lines)
    assert result["last_exit_code"] is None
    assert result["last_exit_signal"] == "Killed: 9"
    assert result["last_exit_signal_number"] == 9
    assert result["state"] == "running"  # relaunched by KeepAlive


def test_print_preamble_before_header_is_skipped():
    lines = ["launchctl: warning: something"] + fixture_lines(
        "print_never_run_calendar_tabs.txt"
    )
    assert process(lines)["label"] == "com.user.brew-maintain"


# ---------------------------------------------------------------------------
# The marker protocol written by the command.


def wrapped(print_lines, status, disabled=None, domain="gui/501"):
    out = [f"@domain {domain}", *print_lines, f"@exit {status}"]
    if disabled is not None:
        out.append(f"@disabled {disabled}")
    return out


def test_markers_loaded_job_takes_domain_and_disabled():
    result = process(
        wrapped(
            fixture_lines("print_10.10_running_spaces.txt"),
            0,
            "true",
            domain="user/501",
        )
    )
    assert result["domain"] == "user/501"
    assert result["disabled"] is True
    assert result["pid"] == 24784


def test_markers_disabled_false_and_absent():
    lines = fixture_lines("print_keepalive_running_tabs.txt")
    assert process(wrapped(lines, 0, "false"))["disabled"] is False
    assert process(wrapped(lines, 0, None))["disabled"] is False


def test_markers_queried_domain_wins_over_header():
    lines = fixture_lines("print_keepalive_running_tabs.txt")  # header says gui/501
    assert process(wrapped(lines, 0, "false", domain="gui/502"))["domain"] == "gui/502"


@pytest.mark.parametrize(
    "body",
    [
        fixture_lines("print_not_found_bad_request.txt"),
        ["Bad request."],
        ["Bad request.", "Could not find domain for user gui: 501"],
        [],
    ],
)
def test_markers_status_113_is_not_loaded(body):
    assert process(wrapped(body, 113, "false")) is None


# gui/<uid> over SSH without that user's console login: the domain is not there, so
# nothing is loaded in it (../shared/MACOS.md: lidge-jun/opencodex#1770, duh17/oppi#38).
NO_DOMAIN_ANSWERS = {
    125: ["Could not print domain: 125: Domain does not support specified action"],
    112: ["Bad request.", "Could not find domain for user gui: 501"],
}


@pytest.mark.parametrize("status", sorted(NO_DOMAIN_ANSWERS))
def test_markers_no_such_domain_is_not_loaded(status):
    assert process(wrapped(NO_DOMAIN_ANSWERS[status], status, "false")) is None


@pytest.mark.parametrize("status", sorted(NO_DOMAIN_ANSWERS))
def test_bare_no_such_domain_text_is_not_loaded(status):
    assert process(NO_DOMAIN_ANSWERS[status]) is None


def test_markers_125_with_any_text_is_not_loaded():
    # The status decides; the text varies between releases.
    assert process(wrapped(["Domain does not support specified action"], 125, "false")) is None
    assert process(wrapped([], 112, "false")) is None


def test_markers_leftover_list_section_is_not_read():
    """The command no longer asks `launchctl list`: it answers from the caller's own
    session (Homebrew/brew PR #588), so a job it shows is no job of the domain asked."""
    out = wrapped(NO_DOMAIN_ANSWERS[125], 125)
    out += ["{", '\t"Label" = "net.devpi";', '\t"PID" = 4242;', "};", "@disabled false"]
    assert process(out) is None


@pytest.mark.parametrize("status", [1, 5, 64, 150])
def test_markers_other_print_statuses_raise_naming_the_status(status):
    with pytest.raises(FactProcessError, match=f"launchctl print exited {status}"):
        process(wrapped(["Unrecognized subcommand: print"], status, "false"))


def test_print_reads_minimum_runtime_and_the_successful_exit_semaphore():
    lines = fixture_lines("print_keepalive_running_tabs.txt")
    assert process(lines)["successful_exit"] is None
    # Derived: the semaphore block as launchd prints it for KeepAlive SuccessfulExit
    # false (print_submitted_login_item_spaces.txt has it with 4-space indent), with a
    # ThrottleInterval of 5.
    lines = replace_line(lines, "minimum runtime = 10", "minimum runtime = 5")
    at = lines.index("\tproperties = keepalive | runatload | inferred program | managed LWCR | has LWCR")
    lines[at:at] = ["\tsemaphores = {", "\t\tsuccessful exit => 0", "\t}", ""]
    result = process(lines)
    assert (result["minimum_runtime"], result["successful_exit"]) == (5, False)
    lines[at + 1] = "\t\tsuccessful exit => 1"
    assert process(lines)["successful_exit"] is True
    # Another semaphore alone says nothing of SuccessfulExit.
    lines[at + 1] = "\t\tpath state => 1"
    assert process(lines)["successful_exit"] is None


def test_markers_unknown_print_error_names_the_message():
    with pytest.raises(FactProcessError, match="Input/output error"):
        process(wrapped(["Bootstrap failed: 5: Input/output error"], 5, "false"))


def test_markers_exit_0_without_a_job_is_an_error():
    with pytest.raises(FactProcessError):
        process(wrapped(["something odd"], 0, "false"))


def test_markers_no_launchctl():
    assert process(["@domain user/501", "@no-launchctl"]) == {
        "loaded": False,
        "launchctl_available": False,
        "domain": "user/501",
    }


# ---------------------------------------------------------------------------
# Garbage is refused, not guessed at.


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [""],
        ["hello world"],
        [
            "Unrecognized subcommand: print",
            "Usage: launchctl <subcommand> ... | help [subcommand]",
        ],
        ["launchctl: command not found"],
        ["{", '\t"Label" = "x";', '\t"PID" = 1;', "};"],  # legacy `list <label>`: not read
        ["{", "\tnot a plist line", "};"],
        ["gui/501/x = {", "\tpid = 1", "}"],  # print without a state
        ["gui/501/x = {", "}"],
    ],
)
def test_garbage_raises(lines):
    with pytest.raises(FactProcessError):
        process(lines)


# ---------------------------------------------------------------------------
# The command: POSIX sh, quoting, and real runs.


# Bash-only forms that would break under dash (GNU-only forms: prepared.gnu_only_forms).
BASH_ONLY = [
    r"\$\{[^}]*//",
    r"\bfunction\b",
    r"<<<",
    r"\bsource\b",
    r"\blocal\b",
    r"(^|\s)--[a-z]",  # long options: BSD tools mostly have none
]

# Every command either fact can send: LaunchdJob with and without a domain (the latter
# runs the domain rule), and LaunchdSession.
COMMANDS = {
    "job, default domain": lambda: LaunchdJob().command("net.devpi"),
    "job, given domain": lambda: LaunchdJob().command("net.devpi", domain="user/501"),
    "session": lambda: LaunchdSession().command(),
}


@pytest.mark.parametrize("which", sorted(COMMANDS))
@pytest.mark.parametrize("shell", SHELLS)
def test_command_is_valid_shell(shell, which):
    command = COMMANDS[which]()
    result = subprocess.run(
        [shell, "-n", "-c", command], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_command_has_no_gnu_or_bash_only_forms(which):
    command = COMMANDS[which]()
    assert gnu_only_forms(command) == []
    for pattern in BASH_ONLY:
        assert not re.search(pattern, command), pattern


def test_command_quotes_the_label():
    label = "com.ex'ample; touch /tmp/x $(id)"
    command = LaunchdJob().command(label)
    assert f"label={shlex.quote(label)};" in command
    # The label only ever reaches launchctl through "$label" (and, for grep, inside
    # single-quoted patterns): never as bare shell text.
    assert command.count('"$domain/$label"') == 1


def test_command_uses_given_domain_verbatim():
    command = LaunchdJob().command("net.devpi", domain="user/501")
    assert "domain=user/501;" in command
    assert "/dev/console" not in command


def expected_default_domain() -> str:
    uid = os.getuid()
    try:
        console_uid = os.stat("/dev/console").st_uid
    except OSError:
        return f"user/{uid}"
    return f"gui/{uid}" if console_uid == uid else f"user/{uid}"


def run_command(
    command: str, path: str, shell: str = "/bin/sh", extra_env=None
) -> list[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/")}
    env.update(extra_env or {})
    result = subprocess.run(
        [shell, "-c", command], capture_output=True, text=True, env=env, check=False
    )
    # pyinfra treats a non-zero status as a failed fact; the command must not.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_real_run_without_launchctl_reports_it_missing():
    path = "/usr/bin:/bin"
    if any(Path(d, "launchctl").exists() for d in path.split(":")):
        pytest.skip("this machine has a launchctl")
    lines = run_command(LaunchdJob().command("net.devpi"), path)
    assert process(lines) == {
        "loaded": False,
        "launchctl_available": False,
        "domain": expected_default_domain(),
    }


FAKE_LAUNCHCTL = """#!/bin/sh
# Stand-in launchctl for these tests: answers from fixture files, logs its argv.
for a in "$@"; do printf '%s|' "$a" >> "$FAKE_LOG"; done; echo >> "$FAKE_LOG"
case "$1" in
print)
    if [ -n "$FAKE_PRINT" ]; then cat "$FAKE_PRINT" >&"$FAKE_PRINT_FD"; fi
    exit "$FAKE_PRINT_RC" ;;
print-disabled)
    printf 'disabled services = {\\n'
    printf '\\t"%s" => %s\\n' "$FAKE_DISABLED_LABEL" "$FAKE_DISABLED_VALUE"
    printf '}\\n' ;;
*)
    echo "unexpected: $*" >&2; exit 99 ;;
esac
"""


@pytest.fixture
def fake_bin(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launchctl = bin_dir / "launchctl"
    launchctl.write_text(FAKE_LAUNCHCTL)
    launchctl.chmod(0o755)
    return bin_dir


def fake_env(tmp_path, **overrides):
    env = {
        "FAKE_LOG": str(tmp_path / "argv.log"),
        "FAKE_PRINT": str(FIXTURES / "print_keepalive_running_tabs.txt"),
        "FAKE_PRINT_FD": "1",
        "FAKE_PRINT_RC": "0",
        "FAKE_DISABLED_LABEL": "net.devpi",
        "FAKE_DISABLED_VALUE": "enabled",
    }
    env.update(overrides)
    return env


def calls(tmp_path) -> list[list[str]]:
    text = (tmp_path / "argv.log").read_text()
    return [line.rstrip("|").split("|") for line in text.splitlines()]


@pytest.mark.parametrize("shell", SHELLS)
def test_fake_launchctl_loaded_job(shell, tmp_path, fake_bin):
    env = fake_env(tmp_path, FAKE_DISABLED_VALUE="disabled")
    lines = run_command(
        LaunchdJob().command("net.devpi"), f"{fake_bin}:/usr/bin:/bin", shell, env
    )
    result = process(lines)
    domain = expected_default_domain()
    assert result["domain"] == domain
    assert result["pid"] == 1076
    assert result["state"] == "running"
    assert result["disabled"] is True
    assert calls(tmp_path) == [
        ["print", f"{domain}/net.devpi"],
        ["print-disabled", domain],
    ]


@pytest.mark.parametrize(
    "value, disabled", [("true", True), ("false", False), ("enabled", False)]
)
def test_fake_launchctl_disabled_forms(tmp_path, fake_bin, value, disabled):
    env = fake_env(tmp_path, FAKE_DISABLED_VALUE=value)
    lines = run_command(
        LaunchdJob().command("net.devpi"), f"{fake_bin}:/usr/bin:/bin", extra_env=env
    )
    assert process(lines)["disabled"] is disabled


def test_fake_launchctl_disabled_matches_the_exact_label(tmp_path, fake_bin):
    env = fake_env(
        tmp_path, FAKE_DISABLED_LABEL="net.devpi.other", FAKE_DISABLED_VALUE="disabled"
    )
    lines = run_command(
        LaunchdJob().command("net.devpi"), f"{fake_bin}:/usr/bin:/bin", extra_env=env
    )
    assert process(lines)["disabled"] is False


@pytest.mark.parametrize("shell", SHELLS)
def test_fake_launchctl_not_loaded(shell, tmp_path, fake_bin):
    env = fake_env(
        tmp_path,
        FAKE_PRINT=str(FIXTURES / "print_not_found_bad_request.txt"),
        FAKE_PRINT_FD="2",  # launchctl writes this to stderr; the command folds it in
        FAKE_PRINT_RC="113",
    )
    lines = run_command(
        LaunchdJob().command("net.devpi"), f"{fake_bin}:/usr/bin:/bin", shell, env
    )
    assert "Bad request." in lines
    assert process(lines) is None
    assert [call[0] for call in calls(tmp_path)] == ["print", "print-disabled"]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("status", sorted(NO_DOMAIN_ANSWERS))
def test_fake_launchctl_without_the_domain_is_not_loaded_and_asks_nothing_else(shell, tmp_path, fake_bin, status):
    """gui/501 over SSH without a console login: print answers 125 (or 112) on stderr.
    The job is not loaded there, and no legacy `list` is asked (issue 20: it answered
    from the SSH session and found the job of user/501)."""
    answer = tmp_path / "answer.txt"
    answer.write_text("\n".join(NO_DOMAIN_ANSWERS[status]) + "\n")
    env = fake_env(tmp_path, FAKE_PRINT=str(answer), FAKE_PRINT_FD="2", FAKE_PRINT_RC=str(status))
    lines = run_command(
        LaunchdJob().command("net.devpi", domain="gui/501"), f"{fake_bin}:/usr/bin:/bin", shell, env
    )
    assert process(lines) is None
    assert calls(tmp_path) == [["print", "gui/501/net.devpi"], ["print-disabled", "gui/501"]]


@pytest.mark.parametrize("which", sorted(COMMANDS))
def test_command_never_asks_legacy_list(which):
    assert not re.search(r"launchctl\s+list\b", COMMANDS[which]())


def test_fake_launchctl_failure_surfaces_as_fact_error(tmp_path, fake_bin):
    bad = tmp_path / "bad.txt"
    bad.write_text("Could not print service: 1: Operation not permitted\n")
    env = fake_env(tmp_path, FAKE_PRINT=str(bad), FAKE_PRINT_FD="2", FAKE_PRINT_RC="1")
    lines = run_command(
        LaunchdJob().command("net.devpi"), f"{fake_bin}:/usr/bin:/bin", extra_env=env
    )
    with pytest.raises(FactProcessError, match="exited 1: .*Operation not permitted"):
        process(lines)


def test_fake_launchctl_gets_an_awkward_label_as_one_argument(tmp_path, fake_bin):
    marker = tmp_path / "injected"
    label = f"com.ex'ample two; touch {marker} $(touch {marker})"
    env = fake_env(tmp_path, FAKE_DISABLED_LABEL=label, FAKE_DISABLED_VALUE="disabled")
    lines = run_command(
        LaunchdJob().command(label, domain="gui/501"),
        f"{fake_bin}:/usr/bin:/bin",
        extra_env=env,
    )
    assert lines[0] == "@domain gui/501"
    assert not marker.exists()
    assert calls(tmp_path) == [
        ["print", f"gui/501/{label}"],
        ["print-disabled", "gui/501"],
    ]
    assert process(lines)["disabled"] is True


# ---------------------------------------------------------------------------
# The domain rule, run by both facts: gui/<uid> for the console owner, else user/<uid>.

# Who owns the console, as `ls -ln /dev/console` shows it (None: there is no console).
CONSOLE_OWNERS = {
    "mine": str(os.getuid()),
    "another user's": str(os.getuid() + 1),
    "owner not numeric": "someone",
    "no console": None,
}


def fake_console(fake_bin: Path, owner: str | None) -> None:
    """A stand-in `ls` on PATH that answers `ls -ln /dev/console` for ``owner``."""
    if owner is None:
        answer = 'echo "ls: /dev/console: No such file or directory" >&2; exit 1'
    else:
        answer = f'echo "crw-------  1 {owner}  0    0,   0 Jan  1 09:00 /dev/console"'
    ls = fake_bin / "ls"
    ls.write_text(f'#!/bin/sh\n[ "$1 $2" = "-ln /dev/console" ] || exit 2\n{answer}\n')
    ls.chmod(0o755)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("case", sorted(CONSOLE_OWNERS))
def test_both_facts_pick_the_same_domain_for_the_console_owner(
    tmp_path, fake_bin, case, shell
):
    owner = CONSOLE_OWNERS[case]
    fake_console(fake_bin, owner)
    path = f"{fake_bin}:/usr/bin:/bin"
    env = fake_env(tmp_path)
    session = LaunchdSession().process(
        run_command(LaunchdSession().command(), path, shell, env)
    )
    job_lines = run_command(LaunchdJob().command("net.devpi"), path, shell, env)

    uid = os.getuid()
    expected = f"gui/{uid}" if case == "mine" else f"user/{uid}"
    assert session["domain"] == expected
    assert job_lines[0] == f"@domain {expected}"
    assert process(job_lines)["domain"] == expected
    assert calls(tmp_path)[0] == ["print", f"{expected}/net.devpi"]
    numeric = owner is not None and owner.isdigit()
    assert session["console_uid"] == (int(owner) if numeric else None)


def test_session_on_this_machine(tmp_path):
    path = os.environ["PATH"]
    session = LaunchdSession().process(
        run_command(LaunchdSession().command(), path, extra_env={"HOME": str(tmp_path)})
    )
    assert session["uid"] == os.getuid()
    assert session["home"] == str(tmp_path)
    assert session["domain"] == expected_default_domain()
    assert session["launchctl"] is (shutil.which("launchctl", path=path) is not None)


SESSION = [
    "uid=501",
    "home=/Users/a",
    "console_uid=501",
    "domain=gui/501",
    "launchctl=true",
    "user=alice",
    "group=staff",
]


def session_output(**changes) -> list[str]:
    """SESSION with values replaced (``None``: the line left out)."""
    values = dict(line.split("=", 1) for line in SESSION)
    values.update(changes)
    return [f"{key}={value}" for key, value in values.items() if value is not None]


def test_session_process_reports_what_the_command_printed():
    assert LaunchdSession().process(SESSION) == {
        "uid": 501,
        "home": "/Users/a",
        "console_uid": 501,
        "domain": "gui/501",
        "launchctl": True,
        # a LaunchDaemon's UserName / GroupName
        "user": "alice",
        "group": "staff",
    }
    # The domain is the command's choice: process does not decide it again.
    both = session_output(console_uid="501", domain="user/501", launchctl="false")
    assert LaunchdSession().process(both)["domain"] == "user/501"
    unknown = LaunchdSession().process(session_output(console_uid=""))
    assert unknown["console_uid"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {"domain": None},
        {"domain": ""},
        {"domain": "gui/502"},
        {"domain": "system"},
        {"uid": "x"},
        {"home": None},
        {"launchctl": None},
    ],
)
def test_session_process_refuses_unexpected_output(changes):
    with pytest.raises(FactProcessError):
        LaunchdSession().process(session_output(**changes))


# ---------------------------------------------------------------------------
# pyinfra loads the fact by its dotted name, as the operator does from the CLI.


def test_pyinfra_cli_fact_query():
    if shutil.which("launchctl"):
        pytest.skip("this machine has a launchctl")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyinfra",
            "@local",
            "fact",
            "facts.launchd.LaunchdJob",
            "label=net.devpi",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = (
        result.stdout + result.stderr
    )  # pyinfra logs (and prints fact data) on stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    start = output.index("{\n")
    end = output.rindex("}") + 1
    data = json.loads(output[start:end])
    assert data["@local"] == {
        "loaded": False,
        "launchctl_available": False,
        "domain": expected_default_domain(),
    }

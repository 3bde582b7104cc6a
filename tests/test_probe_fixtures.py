"""
The probe's captures (``tests/fixtures/hosts/<host>-<date>/``, written by
``deploys/probe.py`` on a real host) replayed through the deploy's own parsers: every
fact's ``process()``, and the preflight. A capture from a real Mac, committed by its
operator, is what keeps these parsers honest about macOS's output; each test below
states something the deploy relies on and checks it against every capture.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from facts.host_tools import HostTools
from facts.launchd import LaunchdJob, LaunchdSession
from facts.preflight import HostReadiness, parse_df
from facts.probe import (
    REDACTED,
    RenameSwap,
    SessionProcesses,
    console_owner,
    disabled_labels,
    parse_sw_vers,
    scrub,
)
from facts.status import DevpiAnswers
from pyinfra_devpi.config import build_config
from pyinfra_devpi.preflight import Needs, check

FIXTURES = Path(__file__).parent / "fixtures" / "hosts"
CAPTURES = sorted(p.parent for p in FIXTURES.glob("*/index.json"))
# launchd's answers when a domain is not there (MACOS.md, "Domains over SSH").
NO_DOMAIN = (112, 125)
DOMAIN_KINDS = ("gui", "user", "system")


class Capture:
    def __init__(self, directory: Path):
        self.directory = directory
        self.index = json.loads((directory / "index.json").read_text())
        self.entries = {entry["name"]: entry for entry in self.index["commands"]}

    def lines(self, name: str) -> list[str]:
        return (self.directory / self.entries[name]["file"]).read_text().splitlines()

    def exit(self, name: str) -> int:
        return self.entries[name]["exit"]

    def value(self, name: str):
        fact = reader(self.entries[name]["reader"])()
        lines = self.lines(name)
        return fact.process(lines) if lines else fact.default()

    @property
    def macos(self) -> bool:
        return self.index["os"]["macos"] is not None

    @property
    def over_ssh(self) -> bool:
        return self.index["tunnel"]["connector"] == "SSHConnector"

    @property
    def session(self) -> dict:
        return self.value("session")


def reader(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def kind_of(domain: str) -> str:
    return domain.split("/")[0]


def all_entries():
    for directory in CAPTURES:
        for entry in json.loads((directory / "index.json").read_text())["commands"]:
            if entry["reader"]:
                yield pytest.param(directory, entry["name"], id=f"{directory.name}/{entry['name']}")


captures = pytest.mark.parametrize("capture", [pytest.param(Capture(d), id=d.name) for d in CAPTURES])


def test_there_is_a_capture():
    assert CAPTURES, f"no capture under {FIXTURES}: the e2e host's own belongs there (README, 'the probe')"


@pytest.mark.parametrize("directory, name", list(all_entries()))
def test_every_fact_parses_its_capture(directory, name):
    capture = Capture(directory)
    # The facts' scripts always exit 0: anything else is a command the host could not run.
    assert capture.exit(name) == 0, capture.lines(name)[:5]
    capture.value(name)  # raises FactProcessError when the output is not understood


@captures
def test_index_names_every_file_and_the_os(capture):
    files = {p.name for p in capture.directory.iterdir()} - {"index.json"}
    assert files == {entry["file"] for entry in capture.index["commands"]}
    assert capture.index["os"]["uname"]
    sw_vers = parse_sw_vers(capture.lines("sw_vers"))
    assert capture.index["os"]["macos"] == (sw_vers.get("ProductVersion") if capture.exit("sw_vers") == 0 else None)
    assert not any("password" in key for key in capture.index["host_data"])


@captures
def test_session_domain_follows_the_console_owner(capture):
    session = capture.session
    assert session == capture.index["session"]
    if capture.exit("console") == 0:
        assert session["console_uid"] == console_owner(capture.lines("console"))
    owns_console = session["console_uid"] == session["uid"]
    assert session["domain"] == (f"gui/{session['uid']}" if owns_console else f"user/{session['uid']}")


@captures
def test_managername_over_ssh_is_background(capture):
    if capture.exit("managername") != 0 or not capture.over_ssh:
        pytest.skip("launchctl managername did not answer (a launchctl without it) or not over SSH")
    assert [line.strip() for line in capture.lines("managername") if line.strip()] == ["Background"]


@captures
def test_jobs_are_read_in_the_domain_asked(capture):
    for kind in DOMAIN_KINDS:
        name = f"job-{kind}"
        job = capture.value(name)
        asked = capture.entries[name]["arguments"]
        if capture.exit(f"domain-{kind}") in NO_DOMAIN:
            # A domain that is not there holds nothing (issue 20, item 1).
            assert job is None, f"{asked['domain']} is not there, yet {name} reads {job}"
        if not job or not job.get("loaded"):
            continue
        assert job["label"] == asked["label"] and job["domain"] == asked["domain"]
        assert job["state"]
        if job["running"]:
            assert isinstance(job["pid"], int) and job["pid"] > 0


@captures
def test_disabled_flag_matches_print_disabled(capture):
    for kind in DOMAIN_KINDS:
        job = capture.value(f"job-{kind}")
        if not job or not job.get("loaded") or capture.exit(f"disabled-{kind}") != 0:
            continue
        listed = disabled_labels(capture.lines(f"disabled-{kind}"))
        assert job["disabled"] == listed.get(job["label"], False)


def ls_owners(lines: list[str]) -> dict[str, int]:
    """``ls -lnd`` lines: the path (after the date) and the numeric owner."""
    owners = {}
    for line in lines:
        fields = line.split()
        if len(fields) >= 9 and fields[2].isdigit() and "/" in line:
            owners[line[line.index(" /") + 1:]] = int(fields[2])
    return owners


@captures
def test_readiness_agrees_with_the_raw_answers(capture):
    readiness = capture.value("readiness")
    session = capture.session
    assert readiness["uid"] == session["uid"]
    kind = kind_of(readiness["domain"])
    if session["launchctl"]:
        assert readiness["domain_status"] == capture.exit(f"domain-{kind}")
    # df: the same dir, the same free space (give or take what changed between the two)
    df = capture.lines("df")
    assert readiness["free_kb"] is not None and parse_df(df) is not None
    assert abs(readiness["free_kb"] - parse_df(df)) < 64 * 1024
    owners = ls_owners(capture.lines("ls"))
    for path, owner in readiness["owners"].items():
        assert owners[path] == owner
    if session["uid"] == 0:
        assert readiness["sudo_ok"] is None
    elif capture.exit("sudo") == 127:
        assert readiness["sudo_ok"] == "missing"
    else:
        assert readiness["sudo_ok"] == (capture.exit("sudo") == 0)


@captures
def test_preflight_decides_from_the_capture(capture):
    session = capture.session
    config = build_config(capture.index["host_data"], session["home"])
    tools = capture.value("tools")
    readiness = capture.value("readiness")
    for tool in ("uv", "caddy"):
        assert tools[tool] is None or tools[tool].startswith("/")
    resolved, problems = check(config, tools=tools, readiness=readiness,
                               needs=Needs(venv=True, caddy_block=True, root=True))
    assert all(isinstance(p, str) and p for p in problems)
    assert any(p.startswith("launchd:") for p in problems) == (readiness["domain_ok"] is False)
    if tools["uv"]:
        assert resolved.uv == tools["uv"]


@captures
def test_processes_as_the_deploy_lock_sees_them(capture):
    processes = capture.value("session-processes")
    assert processes["self_started"]
    # The same shell ran both: the deploy lock's dl_started is ps -o lstart=, trimmed.
    assert [line.strip() for line in capture.lines("ps-lstart")] == [processes["self_started"]]
    if capture.over_ssh:
        assert processes["anchor"] and "sshd" in processes["anchor_comm"] and processes["anchor_started"]
    session = capture.session
    target = capture.entries["session-processes"]["arguments"]["target"]
    job = next((capture.value(f"job-{k}") for k in DOMAIN_KINDS
                if capture.entries[f"job-{k}"]["arguments"]["domain"] == target.rsplit("/", 1)[0]), None)
    if job and job.get("running") and session["launchctl"]:
        assert processes["job_pid"] == job["pid"] and processes["job_started"]


@captures
def test_rename_swap(capture):
    swap = capture.value("rename-swap")
    home = capture.entries["rename-swap"]["arguments"]["home"]
    assert home == swap["parent"] or home.startswith(swap["parent"].rstrip("/") + "/")
    if swap["skipped"]:
        pytest.skip(f"the swap did not run: {swap['skipped']}")
    assert swap["swap_exit"] == 0 and swap["swapped"], swap["swap_output"]
    if capture.macos:
        assert swap["renamex_np"] == "ok" or swap["renamex_np"].startswith("failed")
    else:
        assert swap["renamex_np"] == "absent"


@captures
def test_devpi_answers_alike_on_the_host_and_through_the_channel(capture):
    answers = capture.value("answers")
    tunnel = capture.index["tunnel"]
    if tunnel["opened"]:
        assert tunnel["api_status"] == answers["api_status"]
    elif answers["api_status"] is not None:
        pytest.fail(f"devpi answers on the host ({answers['api_status']}) but the channel did not open: "
                    f"{tunnel['error']} (the host's sshd must allow TCP forwarding)")


# ---------------------------------------------------------------- the probe's own parsers


def test_scrub_keeps_secret_looking_values_out():
    lines = ["\tenvironment = {", "\t\tDEVPI_PASSWORD => hunter2", "\t\tPATH => /usr/bin", "\t}", "API_TOKEN=abc",
             "uid=501"]
    assert scrub(lines) == ["\tenvironment = {", f"\t\tDEVPI_PASSWORD => {REDACTED}", "\t\tPATH => /usr/bin", "\t}",
                            f"API_TOKEN={REDACTED}", "uid=501"]


def test_raw_parsers():
    assert console_owner(["crw-------  1 501  0    0,   0 Dec  7 09:12 /dev/console"]) == 501
    assert console_owner(["ls: /dev/console: No such file or directory"]) is None
    assert disabled_labels(['disabled services = {', '\t"net.devpi" => disabled', '\t"x.y" => enabled', "}"]) == {
        "net.devpi": True, "x.y": False}
    assert parse_sw_vers(["ProductName:\t\tmacOS", "ProductVersion:\t\t15.1", "BuildVersion:\t\t24B83"]) == {
        "ProductName": "macOS", "ProductVersion": "15.1", "BuildVersion": "24B83"}


def test_fact_classes_named_in_captures_exist():
    names = {entry["reader"] for d in CAPTURES for entry in Capture(d).index["commands"] if entry["reader"]}
    classes = {reader(n) for n in names}
    assert {LaunchdJob, LaunchdSession, HostReadiness, HostTools, RenameSwap, SessionProcesses,
            DevpiAnswers} <= classes

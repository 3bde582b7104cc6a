"""
The preflight: the facts' commands run in local shells against a made-up host (tools
where a Mac keeps them, fake interpreters, a fake launchctl, ``uname`` and
``xcode-select``), their pure ``process()``, and the decisions made from them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facts.batch import command_text
from facts.host_tools import HostTools
from facts.preflight import HostReadiness, parse_df
from operations import preflight as preflight_ops
from pyinfra_devpi import layout
from pyinfra_devpi.config import UV_BOOTSTRAP_VERSION, ConfigError, build_config
from pyinfra_devpi.preflight import VENV_BUILD_MB, Needs, Tools, check, message, with_tools
from pyinfra_devpi.launchd_scope import JobPlace

from .prepared import SHELLS, PreparedHost, Upload, gnu_only_forms, run_op, shell_lines

HOME = "/Users/alice"
BASE = {"devpi_outside_url": "https://pypi.example.org", "devpi_caddy_restart": "org.caddy"}
MAC_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
BOTH = Needs(venv=True, caddy_block=True)
AGENT = JobPlace(scope="agent", agent_domain="gui/501", uid=501, user="alice", group="staff")
DAEMON = JobPlace(scope="daemon", agent_domain="gui/501", uid=501, user="alice", group="staff")
NEITHER = Needs(venv=False, caddy_block=False)


def config_of(**data):
    return build_config({**BASE, **data}, HOME)


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def fake_python(path: Path, version: str) -> Path:
    return executable(path, f"#!/bin/sh\necho {version}\n")


def run_fact(fact_cls, shell="/bin/sh", env=None, cwd=None, **kwargs):
    result = subprocess.run([shell, "-c", command_text(fact_cls, kwargs)], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return fact_cls().process(result.stdout.splitlines())


# --------------------------------------------------------------------------- HostTools


@pytest.fixture
def mac(tmp_path):
    """A made-up host: a HOME and a PATH of its own (only a bin dir of fakes)."""
    home = tmp_path / "home"
    home.mkdir()
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    return {"home": home, "path": path_dir, "env": {"HOME": str(home), "PATH": f"{path_dir}:{MAC_PATH}"}}


@pytest.mark.parametrize("shell", SHELLS)
def test_the_first_candidate_found_wins_and_home_paths_expand(shell, mac, tmp_path):
    executable(mac["home"] / ".cargo/bin/uv")
    executable(mac["home"] / ".local/bin/uv")
    (mac["home"] / ".local/bin/not-executable").write_text("")
    brew = executable(tmp_path / "brew/bin/caddy")
    found = run_fact(
        HostTools, shell, mac["env"],
        uv=("no-such-uv", "~/.local/bin/not-executable", "~/.cargo/bin/uv", "~/.local/bin/uv"),
        caddy=("/nowhere/caddy", str(tmp_path / "brew/bin"), str(brew)),  # a directory is not it
    )
    assert found == {"uv": f"{mac['home']}/.cargo/bin/uv", "caddy": str(brew), "python": None,
                     "bootstrap_python": None}


@pytest.mark.parametrize("shell", SHELLS)
def test_a_bare_name_is_looked_up_on_the_sessions_path(shell, mac):
    uv = executable(mac["path"] / "uv")
    found = run_fact(HostTools, shell, mac["env"], uv=("uv", "~/.local/bin/uv"), caddy=("caddy",))
    assert (found["uv"], found["caddy"]) == (str(uv), None)
    # a shell builtin is not a program
    assert run_fact(HostTools, shell, mac["env"], uv=("echo",), caddy=())["uv"] is None


def test_layouts_candidates_name_macs_places():
    assert layout.UV_CANDIDATES[0] == "uv"  # the session's PATH first
    assert {"~/.local/bin/uv", "/opt/homebrew/bin/uv", "/usr/local/bin/uv"} <= set(layout.UV_CANDIDATES)
    assert {"/opt/homebrew/bin/caddy", "/usr/local/bin/caddy"} <= set(layout.CADDY_CANDIDATES)
    reads = preflight_ops.tools_read(config_of()).kwargs
    assert reads["uv"] == (*layout.UV_CANDIDATES, "/Users/alice/devpi/tools/bin/uv")  # bootstrapped: last
    assert reads["python"] is None  # "3.12" is a version for uv, nothing to probe
    explicit = preflight_ops.tools_read(config_of(devpi_uv="/x/uv", devpi_caddy_bin="caddy2",
                                                  devpi_python="/py/bin/python3")).kwargs
    assert (explicit["uv"], explicit["caddy"], explicit["python"]) == (("/x/uv",), ("caddy2",), "/py/bin/python3")


@pytest.mark.parametrize("shell", SHELLS)
def test_interpreters_report_their_version(shell, mac, tmp_path):
    python = fake_python(tmp_path / "py/python3.11", "3.11.9")
    found = run_fact(HostTools, shell, mac["env"], uv=(), caddy=(), python=str(python))
    assert found["python"] == {"path": str(python), "version": "3.11.9", "shim": False}
    broken = executable(tmp_path / "py/broken", "#!/bin/sh\nexit 3\n")
    found = run_fact(HostTools, shell, mac["env"], uv=(), caddy=(), python=str(broken))
    assert found["python"] == {"path": str(broken), "version": None, "shim": False}
    found = run_fact(HostTools, shell, mac["env"], uv=(), caddy=(), python="/no/python")
    assert found["python"] == {"path": None, "version": None, "shim": False}


def test_a_real_interpreter_reports_its_version(mac):
    found = run_fact(HostTools, "/bin/sh", mac["env"], uv=(), caddy=(), python=sys.executable)
    assert found["python"]["version"] == "%d.%d.%d" % sys.version_info[:3]


@pytest.mark.parametrize("developer_dir", [False, True])
def test_macos_placeholder_python_runs_only_with_the_command_line_tools(mac, developer_dir):
    # uname says Darwin; xcode-select -p fails without the Command Line Tools.
    executable(mac["path"] / "uname", "#!/bin/sh\necho Darwin\n")
    executable(mac["path"] / "xcode-select", f"#!/bin/sh\nexit {0 if developer_dir else 2}\n")
    if not os.access(layout.MACOS_PYTHON_SHIM, os.X_OK):
        pytest.skip(f"{layout.MACOS_PYTHON_SHIM} is not on this machine")
    if developer_dir and sys.platform == "darwin" and subprocess.run(["xcode-select", "-p"],
                                                                      capture_output=True).returncode != 0:
        pytest.skip("this Mac has no Command Line Tools: running its python3 would open an install dialog")
    found = run_fact(HostTools, "/bin/sh", mac["env"], uv=(), caddy=(), python=layout.MACOS_PYTHON_SHIM)
    assert found["python"]["shim"] is (not developer_dir)
    assert (found["python"]["version"] is None) is (not developer_dir)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_bootstrap_python_is_looked_for_only_when_there_is_no_uv(shell, mac, tmp_path):
    old = fake_python(tmp_path / "a/python3", "oops")  # says no version: skipped
    good = fake_python(tmp_path / "b/python3", "3.9.6")
    candidates = (str(old), "/nowhere/python3", str(good))
    found = run_fact(HostTools, shell, mac["env"], uv=("/no/uv",), caddy=(), bootstrap_python=candidates)
    assert found["bootstrap_python"] == {"path": str(good), "version": "3.9.6"}
    uv = executable(tmp_path / "uv")
    found = run_fact(HostTools, shell, mac["env"], uv=(str(uv),), caddy=(), bootstrap_python=candidates)
    assert found["bootstrap_python"] is None


@pytest.mark.parametrize("shell", SHELLS)
def test_the_deploys_own_uv_reports_its_version_and_a_python_to_replace_it_when_not_pinned(shell, mac, tmp_path):
    good = fake_python(tmp_path / "b/python3", "3.9.6")
    own = tmp_path / "devpi/tools/bin/uv"
    facts = dict(caddy=(), bootstrap_python=(str(good),), bootstrapped=str(own), pinned="0.13.9")
    executable(own, '#!/bin/sh\necho "uv 0.12.1 (0123abcd 2026-05-01)"\n')
    found = run_fact(HostTools, shell, mac["env"], uv=("/no/uv", str(own)), **facts)
    assert (found["uv"], found["uv_version"]) == (str(own), "0.12.1")
    assert found["bootstrap_python"] == {"path": str(good), "version": "3.9.6"}
    # the pinned one: nothing else is run
    executable(own, '#!/bin/sh\necho "uv 0.13.9 (4567cdef 2026-11-20)"\n')
    found = run_fact(HostTools, shell, mac["env"], uv=("/no/uv", str(own)), **facts)
    assert (found["uv_version"], found["bootstrap_python"]) == ("0.13.9", None)
    # a broken one says no version
    executable(own, "#!/bin/sh\nexit 1\n")
    found = run_fact(HostTools, shell, mac["env"], uv=("/no/uv", str(own)), **facts)
    assert (found["uv_version"], found["bootstrap_python"]["path"]) == (None, str(good))
    # a uv the operator installed is not asked its version, and no python is looked for
    operators = executable(tmp_path / "brew/uv", '#!/bin/sh\necho "uv 0.1.0"\n')
    found = run_fact(HostTools, shell, mac["env"], uv=(str(operators), str(own)), **facts)
    assert (found["uv"], "uv_version" in found, found["bootstrap_python"]) == (str(operators), False, None)


def test_the_tools_read_asks_about_the_deploys_own_uv_unless_devpi_uv_is_set():
    reads = preflight_ops.tools_read(config_of()).kwargs
    assert (reads["bootstrapped"], reads["pinned"]) == ("/Users/alice/devpi/tools/bin/uv", UV_BOOTSTRAP_VERSION)
    assert "bootstrapped" not in preflight_ops.tools_read(config_of(devpi_uv="/x/uv")).kwargs


def test_a_bootstrap_python_needs_venv_and_ensurepip(mac):
    found = run_fact(HostTools, "/bin/sh", mac["env"], uv=(), caddy=(), bootstrap_python=(sys.executable,))
    assert found["bootstrap_python"]["version"] == "%d.%d.%d" % sys.version_info[:3]


# --------------------------------------------------------------------------- HostReadiness


DF_SAMPLES = {
    "linux": ["Filesystem     1K-blocks     Used Available Use% Mounted on",
              "/dev/vda       264212084 23087740  83303172  22% /"],
    "macos": ["Filesystem    1024-blocks      Used Available Capacity iused      ifree %iused  Mounted on",
              "/dev/disk3s5    482797652 301157296 160946020    66% 2381412 1609460200    0%   /System/Volumes/Data"],
    "macos-spaces": ["Filesystem 1024-blocks Used Available Capacity iused ifree %iused Mounted on",
                     "map auto_home 0 0 0 100% 0 0 - /System/Volumes/Data/home"],
    "wrapped": ["Filesystem 1K-blocks Used Available Use% Mounted on",
                "/dev/mapper/a-very-long-volume-group-name",
                "  1000 200 800 20% /srv"],
}


@pytest.mark.parametrize(("sample", "free"), [("linux", 83303172), ("macos", 160946020), ("macos-spaces", 0),
                                              ("wrapped", 800)])
def test_df_output_of_both_userlands(sample, free):
    assert parse_df(DF_SAMPLES[sample]) == free


def test_df_garbage_is_unknown_not_an_error():
    assert parse_df([]) is None
    assert parse_df(["df: /x: No such file or directory"]) is None


@pytest.mark.parametrize("shell", SHELLS)
# 125 and 112: gui/<uid> over SSH without that user's console login (../shared/MACOS.md).
@pytest.mark.parametrize("status", [0, 112, 125])
def test_readiness_of_a_made_up_host(shell, status, mac, tmp_path):
    executable(mac["path"] / "launchctl", f"#!/bin/sh\n[ \"$1 $2\" = 'print gui/501' ] || exit 9\nexit {status}\n")
    home = tmp_path / "deep/er/devpi"
    found = run_fact(HostReadiness, shell, mac["env"], domain="gui/501", path=str(home),
                     owned=(str(tmp_path), str(home / "server-dir")))
    assert found["domain"] == "gui/501" and found["domain_status"] == status
    assert found["domain_ok"] is (status == 0)
    assert found["df_path"] == str(tmp_path)  # the nearest directory that exists
    assert found["free_kb"] is not None and found["free_kb"] > 0
    assert found["uid"] == os.getuid() and found["user"]
    assert found["owners"] == {str(tmp_path): os.stat(tmp_path).st_uid}  # the missing one is not listed


def test_readiness_without_launchctl_is_unknown(mac, tmp_path):
    # A PATH with the tools the fact runs but no launchctl (a Mac has /bin/launchctl).
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("id", "df", "dirname", "ls", "awk"):
        (tools / name).symlink_to(shutil.which(name))
    found = run_fact(HostReadiness, "/bin/sh", {**mac["env"], "PATH": str(tools)},
                     domain="user/501", path=str(tmp_path), owned=())
    assert found["domain_ok"] is None and found["domain_status"] is None
    assert found["free_kb"] is not None


# --------------------------------------------------------------------------- decisions


def tools_fact(uv="/opt/homebrew/bin/uv", caddy="/opt/homebrew/bin/caddy", python=None, bootstrap=None):
    return {"uv": uv, "caddy": caddy, "python": python, "bootstrap_python": bootstrap}


def readiness(domain_ok=True, free_mb=10_000, owners=None, domain="gui/501"):
    return {"uid": 501, "user": "alice", "domain": domain, "domain_ok": domain_ok,
            "domain_status": 0 if domain_ok else 112, "df_path": "/Users/alice", "free_kb": free_mb * 1024,
            "owners": owners if owners is not None else {"/Users/alice/devpi": 501}}


def test_a_ready_host_resolves_every_tool():
    tools, problems = check(config_of(), tools=tools_fact(), readiness=readiness(), needs=BOTH)
    assert problems == []
    assert tools.describe() == (
        "uv: /opt/homebrew/bin/uv (found); caddy: /opt/homebrew/bin/caddy (found); "
        "devpi's Python: 3.12 (a version uv finds on the host or downloads)"
    )
    resolved = with_tools(config_of(), tools)
    assert (resolved.uv, resolved.caddy_bin, resolved.python) == ("/opt/homebrew/bin/uv", "/opt/homebrew/bin/caddy", "3.12")
    assert resolved.paths == config_of().paths


def test_explicit_keys_win_and_are_named():
    config = config_of(devpi_uv="/srv/uv", devpi_caddy_bin="/srv/caddy", devpi_python="/srv/python3")
    tools, problems = check(
        config, tools=tools_fact("/srv/uv", "/srv/caddy", {"path": "/srv/python3", "version": "3.13.1", "shim": False}),
        readiness=readiness(), needs=BOTH,
    )
    assert problems == []
    assert tools.describe() == ("uv: /srv/uv (devpi_uv); caddy: /srv/caddy (devpi_caddy_bin); "
                                "devpi's Python: /srv/python3 (Python 3.13.1, devpi_python)")


def test_a_python_command_is_resolved_to_its_path():
    tools, problems = check(config_of(devpi_python="python3.12"),
                            tools=tools_fact(python={"path": "/opt/homebrew/bin/python3.12", "version": "3.12.4",
                                                     "shim": False}),
                            readiness=readiness(), needs=BOTH)
    assert problems == [] and tools.python == "/opt/homebrew/bin/python3.12"


def test_no_uv_is_bootstrapped_with_the_hosts_python3():
    config = config_of()
    tools, problems = check(config, tools=tools_fact(uv=None, bootstrap={"path": "/usr/bin/python3", "version": "3.9.6"}),
                            readiness=readiness(), needs=BOTH)
    assert problems == []
    assert (tools.uv, tools.uv_source, tools.bootstrap_python) == (
        "/Users/alice/devpi/tools/bin/uv", "bootstrap", "/usr/bin/python3")
    assert tools.describe().startswith(
        f"uv: none found; bootstrapping uv {UV_BOOTSTRAP_VERSION} from PyPI into /Users/alice/devpi/tools/bin/uv "
        "with /usr/bin/python3;")
    # Only when a venv is to be built.
    tools, problems = check(config, tools=tools_fact(uv=None, bootstrap={"path": "/usr/bin/python3", "version": "3.9.6"}),
                            readiness=readiness(), needs=NEITHER)
    assert problems == [] and tools.uv is None and tools.uv_source == "missing"


OWN_UV = "/Users/alice/devpi/tools/bin/uv"
PY39 = {"path": "/usr/bin/python3", "version": "3.9.6"}


@pytest.mark.parametrize("needs", [BOTH, NEITHER])
def test_a_bootstrapped_uv_of_another_version_is_bootstrapped_again(needs):
    fact = {**tools_fact(uv=OWN_UV, bootstrap=PY39), "uv_version": "0.12.1"}
    tools, problems = check(config_of(), tools=fact, readiness=readiness(), needs=needs)
    assert problems == []
    assert (tools.uv, tools.uv_source, tools.bootstrap_python) == (OWN_UV, "upgrade", "/usr/bin/python3")
    assert tools.describe().startswith(
        f"uv: {OWN_UV} (bootstrapped, uv 0.12.1); replacing it with uv {UV_BOOTSTRAP_VERSION} from PyPI "
        "with /usr/bin/python3;")
    # a binary that does not say its version is replaced too
    fact["uv_version"] = None
    assert check(config_of(), tools=fact, readiness=readiness(), needs=needs)[0].uv_source == "upgrade"


def test_the_pinned_bootstrapped_uv_and_an_operators_uv_are_kept():
    pinned = {**tools_fact(uv=OWN_UV), "uv_version": UV_BOOTSTRAP_VERSION}
    tools, problems = check(config_of(), tools=pinned, readiness=readiness(), needs=BOTH)
    assert (problems, tools.uv_source) == ([], "found")
    assert tools.describe().startswith(f"uv: {OWN_UV} (found);")
    # the operator's uv, whatever its version and whatever python is there
    operators = {**tools_fact(uv="/opt/homebrew/bin/uv", bootstrap=PY39)}
    assert check(config_of(), tools=operators, readiness=readiness(), needs=BOTH)[0].uv_source == "found"
    # devpi_uv naming the deploy's own path is the operator's choice
    named = {**tools_fact(uv=OWN_UV, bootstrap=PY39), "uv_version": "0.12.1"}
    assert check(config_of(devpi_uv=OWN_UV), tools=named, readiness=readiness(), needs=BOTH)[0].uv_source == "devpi_uv"


def test_an_old_bootstrapped_uv_is_kept_with_a_note_when_no_python_can_replace_it():
    fact = {**tools_fact(uv=OWN_UV), "uv_version": "0.12.1"}
    tools, problems = check(config_of(), tools=fact, readiness=readiness(), needs=BOTH)
    assert (problems, tools.uv, tools.uv_source) == ([], OWN_UV, "found")
    assert f"uv {UV_BOOTSTRAP_VERSION} is pinned, but no python3 with venv and pip was found" in tools.describe()


def test_no_uv_and_no_python_to_bootstrap_it():
    _, problems = check(config_of(), tools=tools_fact(uv=None), readiness=readiness(), needs=BOTH)
    (problem,) = problems
    assert problem.startswith("uv: not found (uv on the SSH session's PATH, ~/.local/bin, ~/.cargo/bin, "
                              "/opt/homebrew/bin, /usr/local/bin)")
    assert "set devpi_uv" in problem
    old = {"path": "/usr/bin/python3", "version": "3.7.3"}  # too old for uv's wheel
    assert len(check(config_of(), tools=tools_fact(uv=None, bootstrap=old), readiness=readiness(), needs=BOTH)[1]) == 1


@pytest.mark.parametrize(
    ("python", "probed", "expected"),
    [
        ("/usr/bin/python3", {"path": "/usr/bin/python3", "version": "3.9.6", "shim": False},
         "python: devpi_python is /usr/bin/python3, which is Python 3.9.6; devpi-server 6.20.3 with its locked "
         "dependencies needs Python 3.11 or newer"),
        ("python3", {"path": "/usr/bin/python3", "version": "3.10.2", "shim": False},
         "python: devpi_python is python3 (/usr/bin/python3), which is Python 3.10.2"),
        ("python3", {"path": "/usr/bin/python3", "version": None, "shim": True},
         "macOS's placeholder python3, and the Command Line Tools are not installed"),
        ("python3", {"path": None, "version": None, "shim": False},
         "python: devpi_python is python3, which is not a command on the SSH session's PATH"),
        ("/opt/py/bin/python", {"path": None, "version": None, "shim": False},
         "python: devpi_python is /opt/py/bin/python, which is not an executable file"),
        ("/opt/py/bin/python", {"path": "/opt/py/bin/python", "version": None, "shim": False},
         "which did not say its version"),
    ],
)
def test_an_interpreter_devpi_cannot_run_on_is_refused(python, probed, expected):
    _, problems = check(config_of(devpi_python=python), tools=tools_fact(python=probed), readiness=readiness(),
                        needs=BOTH)
    (problem,) = problems
    assert expected in problem and "devpi_python" in problem


@pytest.mark.parametrize("request_", ["3.9", "3.10", "3.8.18"])
def test_a_version_request_below_the_minimum_is_a_config_error(request_):
    with pytest.raises(ConfigError, match="devpi_python.*needs Python 3.11 or newer"):
        config_of(devpi_python=request_)
    assert config_of(devpi_python="3.11").python == "3.11"


def test_defaults_are_found_not_named():
    config = config_of()
    assert (config.uv, config.caddy_bin, config.python) == (None, None, "3.12")


def test_caddy_is_needed_only_to_validate_a_changed_block_for_a_managed_caddy():
    config = config_of()
    _, problems = check(config, tools=tools_fact(caddy=None), readiness=readiness(), needs=BOTH)
    assert problems and problems[0].startswith("caddy: not found (caddy on the SSH session's PATH, "
                                               "/opt/homebrew/bin, /usr/local/bin)")
    assert check(config, tools=tools_fact(caddy=None), readiness=readiness(), needs=NEITHER)[1] == []
    unmanaged = build_config({"devpi_outside_url": "https://pypi.example.org"}, HOME)  # no devpi_caddy_restart
    tools, problems = check(unmanaged, tools=tools_fact(caddy=None), readiness=readiness(), needs=BOTH)
    assert problems == [] and "caddy: none found (site block not validated)" in tools.describe()
    explicit = config_of(devpi_caddy_bin="/x/caddy")
    assert "devpi_caddy_bin is /x/caddy" in check(explicit, tools=tools_fact(caddy=None), readiness=readiness(),
                                                  needs=BOTH)[1][0]


@pytest.mark.parametrize("status", [112, 125])
def test_an_unreachable_gui_domain_says_how_to_fix_it(status):
    found = {**readiness(domain_ok=False), "domain_status": status}
    _, problems = check(config_of(), tools=tools_fact(), readiness=found, needs=NEITHER)
    (problem,) = problems
    assert f"the domain gui/501 is not reachable from this SSH session (`launchctl print gui/501` exited {status})" in problem
    assert "alice is logged in at the Mac's console" in problem
    assert "devpi_launchd_domain = 'user/501'" in problem


def test_too_little_disk_for_a_venv_build():
    low = readiness(free_mb=VENV_BUILD_MB - 1)
    (problem,) = check(config_of(), tools=tools_fact(), readiness=low, needs=BOTH)[1]
    assert problem.startswith(f"disk: /Users/alice, where /Users/alice/devpi will be, has {VENV_BUILD_MB - 1} MB free")
    assert check(config_of(), tools=tools_fact(), readiness=low, needs=NEITHER)[1] == []
    unknown = {**readiness(), "free_kb": None}
    assert check(config_of(), tools=tools_fact(), readiness=unknown, needs=BOTH)[1] == []


def test_a_server_dir_of_another_user():
    owners = {"/Users/alice/devpi": 501, "/Users/alice/devpi/server-dir": 0}
    (problem,) = check(config_of(), tools=tools_fact(), readiness=readiness(owners=owners), needs=NEITHER)[1]
    assert problem.startswith("ownership: /Users/alice/devpi/server-dir belongs to uid 0, but devpi runs as alice")


def test_everything_missing_is_listed_in_one_message():
    config = config_of(devpi_python="/usr/bin/python3")
    _, problems = check(
        config,
        tools=tools_fact(uv=None, caddy=None, python={"path": "/usr/bin/python3", "version": "3.9.6", "shim": False}),
        readiness=readiness(domain_ok=False, free_mb=5, owners={"/Users/alice/devpi/server-dir": 0}),
        needs=BOTH,
    )
    assert [p.split(":", 1)[0] for p in problems] == ["uv", "python", "caddy", "launchd", "disk", "ownership"]
    text = message("indri", problems)
    assert text.startswith("indri is not ready for devpi; nothing was changed. Fix these and rerun:\n  - uv: ")
    assert text.count("\n  - ") == 6


# --------------------------------------------------------------------------- the bootstrap


def bootstrap_tools(config):
    return Tools(uv=config.paths.bootstrap_uv, uv_source="bootstrap", bootstrap_python="/usr/bin/python3",
                 caddy=None, caddy_source="missing", python="3.12", python_note="")


def test_uv_bootstrap_uploads_the_hashed_pin_and_keeps_only_the_binary():
    config = config_of()
    host = PreparedHost()
    commands = run_op(preflight_ops.uv_bootstrap, host, config=config, tools=bootstrap_tools(config),
                      lock="uv==0.13.9 --hash=sha256:00\n")
    assert [c.dest for c in commands if isinstance(c, Upload)] == [f"/Users/alice/devpi/tools/uv-{UV_BOOTSTRAP_VERSION}.lock.txt"]
    script = shell_lines(commands)[-1]
    assert "--require-hashes" in script and "--only-binary=:all:" in script
    assert "py=/usr/bin/python3" in script and '"$py" -m venv "$new"' in script
    # uv_bootstrap.sh: mv -f "$staged" "$target", given these paths
    assert {"staged=/Users/alice/devpi/tools/bin/uv.pyinfra-new", "target=/Users/alice/devpi/tools/bin/uv"} <= set(
        script.splitlines()) and 'mv -f "$staged" "$target"' in script
    assert all(gnu_only_forms(c) == [] for c in shell_lines(commands))
    found = Tools(uv="/opt/homebrew/bin/uv", uv_source="found", bootstrap_python=None, caddy=None,
                  caddy_source="missing", python="3.12", python_note="")
    assert run_op(preflight_ops.uv_bootstrap, host, config=config, tools=found, lock="") == []
    assert host.noops == ["uv is /opt/homebrew/bin/uv"]


@pytest.mark.parametrize("shell", SHELLS)
def test_uv_bootstrap_without_a_working_python_changes_nothing(shell, tmp_path):
    config = build_config({**BASE, "devpi_home": str(tmp_path / "devpi")}, HOME)
    lock = tmp_path / "lock.txt"
    lock.write_text("uv==0.13.9 --hash=sha256:00\n")
    python = executable(tmp_path / "no venv here", "#!/bin/sh\nexit 1\n")
    script = preflight_ops.bootstrap_script(config, str(python), str(lock))
    result = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"{python} could not make a venv (python3 -m venv) to bootstrap uv into" in result.stderr
    assert sorted(p.name for p in (tmp_path / "devpi").iterdir()) == []  # the scratch venv is gone


# A python3 that makes a "venv" whose pip "installs" a uv reporting ``version``.
FAKE_BOOTSTRAP_PYTHON = """#!/bin/sh
case "$1 $2" in
  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;
  "-m pip") printf '#!/bin/sh\\necho "uv %s (fake)"\\n' VERSION > "$(dirname "$0")/uv" && chmod 755 "$(dirname "$0")/uv" ;;
  *) exit 1 ;;
esac
"""


def bootstrap_home(tmp_path, old_version="0.12.1"):
    config = build_config({**BASE, "devpi_home": str(tmp_path / "devpi")}, HOME)
    tools_dir = Path(config.paths.tools_dir)
    executable(tools_dir / "bin/uv", f'#!/bin/sh\necho "uv {old_version} (old)"\n')
    (tools_dir / f"uv-{old_version}.lock.txt").write_text("uv==old\n")
    lock = Path(config.paths.uv_lock_upload(UV_BOOTSTRAP_VERSION))
    lock.write_text(f"uv=={UV_BOOTSTRAP_VERSION} --hash=sha256:00\n")
    return config, tools_dir, lock


def uv_says(path: Path) -> str:
    return subprocess.run([str(path)], capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("shell", SHELLS)
def test_uv_bootstrap_replaces_an_older_bootstrapped_uv_and_its_requirement_file(shell, tmp_path):
    config, tools_dir, lock = bootstrap_home(tmp_path)
    python = executable(tmp_path / "python3", FAKE_BOOTSTRAP_PYTHON.replace("VERSION", UV_BOOTSTRAP_VERSION))
    result = subprocess.run([shell, "-c", preflight_ops.bootstrap_script(config, str(python), str(lock))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert uv_says(tools_dir / "bin/uv") == f"uv {UV_BOOTSTRAP_VERSION} (fake)"
    assert sorted(p.name for p in tools_dir.iterdir()) == ["bin", lock.name]
    assert sorted(p.name for p in (tools_dir / "bin").iterdir()) == ["uv"]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_failed_uv_upgrade_leaves_the_old_uv_working(shell, tmp_path):
    config, tools_dir, lock = bootstrap_home(tmp_path)
    # pip "installs" a uv of the wrong version: refused before it goes near the old one
    python = executable(tmp_path / "python3", FAKE_BOOTSTRAP_PYTHON.replace("VERSION", "0.0.1"))
    result = subprocess.run([shell, "-c", preflight_ops.bootstrap_script(config, str(python), str(lock))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"expected uv {UV_BOOTSTRAP_VERSION}" in result.stderr
    assert uv_says(tools_dir / "bin/uv") == "uv 0.12.1 (old)"
    assert "uv-0.12.1.lock.txt" in {p.name for p in tools_dir.iterdir()}


def test_an_upgrade_runs_the_bootstrap():
    config = config_of()
    upgrade = Tools(uv=config.paths.bootstrap_uv, uv_source="upgrade", bootstrap_python="/usr/bin/python3",
                    caddy=None, caddy_source="missing", python="3.12", python_note="", bootstrapped_version="0.12.1")
    commands = run_op(preflight_ops.uv_bootstrap, PreparedHost(), config=config, tools=upgrade,
                      lock="uv==0.13.9 --hash=sha256:00\n")
    assert [c.dest for c in commands if isinstance(c, Upload)] == [config.paths.uv_lock_upload(UV_BOOTSTRAP_VERSION)]
    assert {f"staged={OWN_UV}.pyinfra-new", f"target={OWN_UV}"} <= set(shell_lines(commands)[-1].splitlines())


def test_preflight_commands_use_no_gnu_only_forms():
    config = config_of()
    commands = [
        command_text(HostTools, preflight_ops.tools_read(config).kwargs),
        command_text(HostReadiness, preflight_ops.readiness_read(config, "gui/501", AGENT).kwargs),
        command_text(HostReadiness, preflight_ops.readiness_read(config, "system", DAEMON).kwargs),
        command_text(preflight_ops.real_paths_read(config).fact, preflight_ops.real_paths_read(config).kwargs),
        preflight_ops.bootstrap_script(config, "/usr/bin/python3", "/x.lock.txt"),
    ]
    assert {c: gnu_only_forms(c) for c in commands if gnu_only_forms(c)} == {}


# --------------------------------------------------------------------------- the deploy's use


class FactsHost(PreparedHost):
    """Answers the preflight's facts (every path where it is written, the site file
    missing unless given); records what was asked."""

    def __init__(self, tools, readiness, real=None, site=None):
        super().__init__()
        self.answers = {"HostTools": tools, "HostReadiness": readiness}
        self.real, self.site = real or {}, site

    def get_fact(self, cls, **kwargs):
        self.asked.append((cls.__name__, kwargs))
        if cls.__name__ == "LaunchdJob":  # Caddy's job: {domain: job} (not loaded elsewhere)
            return self.answers.get("LaunchdJob", {}).get(kwargs["domain"])
        if cls.__name__ == "RealPaths":
            return {"home": {"real": HOME, "folds": False},
                    "paths": {p: {"real": self.real.get(p, p), "folds": False} for p in kwargs["paths"]}}
        if cls.__name__ == "FileContents":
            return {p: self.site for p in kwargs["paths"]}
        return self.answers[cls.__name__]


def run_ready(host, config, needs=BOTH, place=None):
    from types import SimpleNamespace

    from pyinfra.context import ctx_host, ctx_state

    place = place or AGENT
    with ctx_host.use(host), ctx_state.use(SimpleNamespace(is_executing=False, config=SimpleNamespace(DIFF=False))):
        return preflight_ops.ready(config, place.domain, needs, place)


def test_ready_reads_exactly_what_reads_declares_and_says_the_tools_once():
    from facts.snapshot import FactRead

    config = config_of()
    host = FactsHost(tools_fact(), readiness())
    tools = run_ready(host, config)
    declared = {(r.fact.__name__, r.arguments) if isinstance(r, FactRead) else ("FileContents", r)
                for r in preflight_ops.reads(config, "gui/501", AGENT)}
    asked = {(name, FactRead.of(object, **kwargs).arguments) if name != "FileContents" else (name, kwargs["paths"][0])
             for name, kwargs in host.asked}
    assert asked == declared
    assert host.logged == [tools.describe()]


def test_ready_refuses_with_every_problem():
    from pyinfra_devpi.errors import DeployError

    host = FactsHost(tools_fact(uv=None, caddy=None), readiness(domain_ok=False))
    with pytest.raises(DeployError) as error:
        run_ready(host, config_of())
    assert str(error.value).startswith("prepared is not ready for devpi; nothing was changed.")
    assert str(error.value).count("\n  - ") == 3  # uv, caddy, launchd
    assert host.logged == []


# --------------------------------------------------------------------------- Caddy's job

RESTARTS_CADDY = Needs(venv=False, caddy_block=True, caddy_restart=True)
NOWHERE = {"gui/501": None, "user/501": None, "system": None}


def test_a_caddy_label_loaded_nowhere_refuses_a_run_that_restarts_caddy():
    _, problems = check(config_of(), tools=tools_fact(), readiness=readiness(), needs=RESTARTS_CADDY,
                        caddy_jobs=NOWHERE)
    (problem,) = problems
    assert problem.startswith("caddy: devpi_caddy_restart is Caddy's launchd label org.caddy, which is not "
                              "loaded in gui/501, user/501, system")
    assert "load Caddy's job" in problem
    assert "set devpi_caddy_restart to {'command': '/opt/homebrew/bin/caddy reload --config" in problem


def test_a_caddy_label_loaded_anywhere_or_not_needed_passes():
    from facts._launchctl import _EMPTY_JOB

    in_system = {**NOWHERE, "system": {**_EMPTY_JOB, "domain": "system", "pid": 80}}
    assert check(config_of(), tools=tools_fact(), readiness=readiness(), needs=RESTARTS_CADDY,
                 caddy_jobs=in_system)[1] == []
    # no restart this run (the block is unchanged, no restart pending): not required
    assert check(config_of(), tools=tools_fact(), readiness=readiness(), needs=BOTH, caddy_jobs=NOWHERE)[1] == []
    # launchctl missing answers "not loaded" too (the launchd problem is reported elsewhere)
    no_launchctl = {d: {"loaded": False, "launchctl_available": False, "domain": d} for d in NOWHERE}
    assert len(check(config_of(), tools=tools_fact(), readiness=readiness(), needs=RESTARTS_CADDY,
                     caddy_jobs=no_launchctl)[1]) == 1


def test_caddy_in_system_needs_passwordless_sudo_to_be_kickstarted():
    from facts._launchctl import _EMPTY_JOB

    in_system = {**NOWHERE, "system": {**_EMPTY_JOB, "domain": "system", "pid": 80}}
    no_sudo = {**readiness(), "sudo_ok": False, "sudo_error": "sudo: a password is required"}
    (problem,) = check(config_of(), tools=tools_fact(), readiness=no_sudo, needs=RESTARTS_CADDY,
                       caddy_jobs=in_system)[1]
    assert problem.startswith("caddy: Caddy's launchd label org.caddy is loaded in system")
    assert "passwordless sudo" in problem and "caddy reload --config" in problem
    # root, or sudo that works, or no restart this run: fine
    as_root = {**no_sudo, "uid": 0, "owners": {"/Users/alice/devpi": 0}}
    for ready, needs in ((as_root, RESTARTS_CADDY), ({**no_sudo, "sudo_ok": True}, RESTARTS_CADDY),
                         (no_sudo, BOTH)):
        assert check(config_of(), tools=tools_fact(), readiness=ready, needs=needs, caddy_jobs=in_system)[1] == []
    # sudo is asked about when Caddy's LaunchDaemon plist is there
    root_if = preflight_ops.readiness_read(config_of(), "gui/501", AGENT).kwargs["root_if"]
    assert "/Library/LaunchDaemons/org.caddy.plist" in root_if
    command = preflight_ops.readiness_read(config_of(devpi_caddy_restart={"command": "x"}), "gui/501", AGENT)
    assert not any("caddy" in path for path in command.kwargs["root_if"])


def test_ready_looks_for_caddys_label_in_the_three_domains_and_refuses_when_it_is_nowhere():
    from pyinfra_devpi.errors import DeployError

    headless = JobPlace(scope="agent", agent_domain="user/501", uid=501, user="alice", group="staff")
    host = FactsHost(tools_fact(), readiness(domain="user/501"))
    with pytest.raises(DeployError) as error:
        run_ready(host, config_of(), needs=RESTARTS_CADDY, place=headless)
    assert "label org.caddy, which is not loaded in user/501, gui/501, system" in str(error.value)
    assert [kwargs["domain"] for name, kwargs in host.asked if name == "LaunchdJob"] == [
        "user/501", "gui/501", "system"]
    # a restart command: no launchd lookup at all
    host = FactsHost(tools_fact(), readiness())
    run_ready(host, config_of(devpi_caddy_restart={"command": "/opt/homebrew/bin/caddy reload --config /c"}),
              needs=RESTARTS_CADDY)
    assert "LaunchdJob" not in [name for name, _ in host.asked]


# --------------------------------------------------------------------------- after a reboot


def test_the_plan_warns_that_a_user_domain_launchagent_does_not_come_back_after_a_reboot():
    from pyinfra_devpi.preflight import reboot_warning

    headless = JobPlace(scope="agent", agent_domain="user/501", uid=501, user="alice", group="staff")
    warning = reboot_warning(headless)
    assert "loaded into user/501" in warning
    assert "devpi will not come back after a reboot until a rerun of this deploy or a console login" in warning
    assert 'use devpi_launchd_scope = "daemon"' in warning and "automatic login" in warning
    # a console login's gui/ domain is loaded again at that login; a LaunchDaemon at boot
    assert reboot_warning(AGENT) is None
    assert reboot_warning(JobPlace(scope="daemon", agent_domain="user/501", uid=501, user="alice",
                                   group="staff")) is None


# --------------------------------------------------------------------------- hostile values


HOSTILE = "$(touch pwned-a) `touch pwned-b` \"; touch pwned-c; ' ; touch pwned-d %s \\ ~"


@pytest.mark.parametrize("shell", SHELLS)
def test_hostile_paths_in_the_preflight_facts_run_nothing(shell, mac, tmp_path):
    value = HOSTILE
    odd = tmp_path / value
    uv = executable(odd / "uv")
    python = fake_python(odd / "python3", "3.12.1")
    found = run_fact(HostTools, shell, mac["env"], tmp_path, uv=(f"/nowhere/{value}", str(uv)), caddy=(value,),
                     python=str(python), bootstrap_python=(value,))
    assert found["uv"] == str(uv) and found["caddy"] is None
    assert found["python"] == {"path": str(python), "version": "3.12.1", "shim": False}
    found = run_fact(HostReadiness, shell, mac["env"], tmp_path, domain=f"gui/{value}", path=str(odd / "devpi"),
                     owned=(str(odd), str(odd / "devpi")))
    assert found["df_path"] == str(odd) and found["owners"] == {str(odd): os.getuid()}
    assert found["domain"] == f"gui/{value}"
    # the bootstrap script's failure path names the interpreter as it is
    # ('%' is refused in devpi_home: SQLite reads it in the database's URI)
    config = build_config({**BASE, "devpi_home": str(tmp_path / value.replace("%", "") / "devpi")}, HOME)
    script = preflight_ops.bootstrap_script(config, str(odd / "no-python"), str(odd / "lock.txt"))
    result = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1 and f"{odd}/no-python could not make a venv" in result.stderr
    assert sorted(tmp_path.rglob("pwned-*")) == []


# --------------------------------------------------------------------------- root, for a LaunchDaemon


ROOT = Needs(venv=False, caddy_block=False, root=True)


def test_a_launchdaemon_without_passwordless_sudo_is_refused_with_the_fix():
    config = config_of(devpi_launchd_scope="daemon")
    found = {**readiness(domain="system"), "sudo_ok": False, "sudo_error": "sudo: a password is required"}
    _, problems = check(config, tools=tools_fact(), readiness=found, needs=ROOT)
    (problem,) = problems
    assert problem.startswith("sudo: devpi_launchd_scope = 'daemon' installs a LaunchDaemon "
                              "(/Library/LaunchDaemons/net.devpi.plist, launchd's system domain), which needs root")
    assert "`sudo -n true` failed (sudo: a password is required)" in problem
    assert "alice ALL=(root) NOPASSWD: ALL" in problem and "deploy as root" in problem
    # The whole refusal, as the operator reads it: nothing changed, every problem listed.
    assert message("indri", problems).startswith("indri is not ready for devpi; nothing was changed.")


def test_no_sudo_at_all_is_named_as_such():
    config = config_of(devpi_launchd_scope="daemon")
    _, problems = check(config, tools=tools_fact(), readiness={**readiness(), "sudo_ok": "missing"}, needs=ROOT)
    assert ["there is no sudo on the SSH session's PATH" in p for p in problems] == [True]


def test_switching_back_to_the_agent_needs_sudo_to_remove_the_launchdaemon():
    _, problems = check(config_of(), tools=tools_fact(), readiness={**readiness(), "sudo_ok": False}, needs=ROOT)
    assert ["LaunchDaemon (/Library/LaunchDaemons/net.devpi.plist) is to be removed" in p for p in problems] == [True]


@pytest.mark.parametrize("sudo_ok", [True, None])
def test_passwordless_sudo_or_root_is_enough(sudo_ok):
    config = config_of(devpi_launchd_scope="daemon")
    _, problems = check(config, tools=tools_fact(), readiness={**readiness(), "sudo_ok": sudo_ok}, needs=ROOT)
    assert problems == []


@pytest.fixture
def as_other_user():
    """Run a command as a user who is not root (``nobody`` when the tests run as root), in a
    directory that user can reach."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="preflight-sudo-"))
    directory.chmod(0o755)
    user = {"user": "nobody"} if os.geteuid() == 0 else {}
    yield directory, user
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(("sudo", "expected"), [
    ("#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n", (False, "sudo: a password is required")),
    ('#!/bin/sh\n[ "$1" = -n ] && [ "$2" = true ] || exit 99\nexit 0\n', (True, None)),
    (None, ("missing", None)),
])
def test_the_fact_asks_sudo_without_a_prompt_only_when_root_is_needed(as_other_user, sudo, expected):
    directory, user = as_other_user
    tools = directory / "bin"
    tools.mkdir()
    for name in ("id", "dirname", "df", "ls", "awk", "head", "printf"):
        real = shutil.which(name)
        if real:
            (tools / name).symlink_to(real)
    if sudo is not None:
        executable(tools / "sudo", sudo)
    env = {"PATH": str(tools), "HOME": str(directory)}
    plist = directory / "net.devpi.plist"

    def ask(**kwargs):
        command = command_text(HostReadiness, {"domain": "system", "path": str(directory), **kwargs})
        result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, timeout=60,
                                **user)
        assert result.returncode == 0, result.stderr
        found = HostReadiness().process(result.stdout.splitlines())
        return found["sudo_ok"], found["sudo_error"]

    assert ask(root=True) == expected
    # Not needed (no LaunchDaemon, none to retire): sudo is not asked.
    assert ask(root_if=(str(plist),)) == (None, None)
    plist.write_text("<plist/>")
    assert ask(root_if=(str(plist),)) == expected


# --------------------------------------------------------------------------- paths as the host resolves them


def resolved(real=None, folds=(), home=HOME, home_folds=False):
    """A RealPaths answer: each path where ``real`` says (else where it is written)."""
    real = real or {}

    def answer(config):
        from pyinfra_devpi.real_paths import to_read

        return {"home": {"real": home, "folds": home_folds},
                "paths": {p: {"real": real.get(p, p), "folds": p in folds or real.get(p, p) in folds}
                          for p in to_read(config)}}
    return answer


def path_problems(config, answer, site_file_ours=None):
    _, problems = check(config, tools=tools_fact(), readiness=readiness(), needs=NEITHER,
                        resolved=answer(config), site_file_ours=site_file_ours)
    return [p for p in problems if p.startswith("paths: ")]


def test_a_site_file_through_a_symlinked_dir_onto_the_deploys_config_is_refused():
    # ~/sites -> ~/devpi, devpi_caddy_site_file = ~/sites/devpi-server.yml
    config = config_of(devpi_caddy_site_file="~/sites/devpi-server.yml")
    (problem,) = path_problems(config, resolved({f"{HOME}/sites/devpi-server.yml": f"{HOME}/devpi/devpi-server.yml"}))
    assert problem == (
        f"paths: `devpi_caddy_site_file` = {HOME}/sites/devpi-server.yml (on the host: {HOME}/devpi/devpi-server.yml) "
        "is the deploy's own devpi-server config; use a path in Caddy's config, such as "
        "'~/.config/caddy/sites/devpi.caddy'")
    # a link into devpi_home at large
    (problem,) = path_problems(config, resolved({f"{HOME}/sites/devpi-server.yml": f"{HOME}/devpi/x.caddy"}))
    assert "is inside devpi_home" in problem
    # where it is written is fine
    assert path_problems(config, resolved()) == []


def test_a_site_file_the_deploy_did_not_write_is_refused_and_never_shown():
    config = config_of()
    (problem,) = path_problems(config, resolved(), site_file_ours=False)
    assert problem.startswith(f"paths: `devpi_caddy_site_file` = {config.caddy_site_file} exists and was not "
                              "written by this deploy")
    assert path_problems(config, resolved(), site_file_ours=True) == []
    assert path_problems(config, resolved(), site_file_ours=None) == []  # missing: written
    # the run is refused in the preflight, before the Caddy step could diff it
    from pyinfra_devpi.errors import DeployError

    host = FactsHost(tools_fact(), readiness(), site="alice's own notes: hunter2\n")
    with pytest.raises(DeployError) as error:
        run_ready(host, config)
    assert "was not written by this deploy" in str(error.value) and "hunter2" not in str(error.value)
    # and the Caddy operation itself neither diffs nor replaces it
    from operations import caddy

    prepared = PreparedHost(files={config.caddy_site_file: "alice's own notes: hunter2\n"})
    with pytest.raises(DeployError):
        run_op(caddy.site, prepared, diff=True, path=config.caddy_site_file, content="new\n", restart=None,
               place=AGENT, pending_marker=config.paths.caddy_restart_pending)
    assert prepared.logged == []
    # devpi_caddy_adopt_site_file: replaced (a takeover of the Ansible role's block), still not shown
    adopting = config_of(devpi_caddy_adopt_site_file=True)
    assert path_problems(adopting, resolved(), site_file_ours=False) == []
    commands = run_op(caddy.site, prepared, diff=True, path=config.caddy_site_file, content="new\n", restart=None,
                      place=AGENT, pending_marker=config.paths.caddy_restart_pending, adopt=True)
    assert any(isinstance(c, Upload) and c.content == "new\n" for c in commands)
    assert not any("hunter2" in line for line in prepared.logged)
    assert any("which this deploy did not write" in line for line in prepared.logged)


@pytest.mark.parametrize("inside", ["venvs/b", "tools/b", "server-dir/b", "venv/b"])
def test_a_backup_dir_that_lands_inside_what_the_deploy_prunes_is_refused(inside):
    # written elsewhere, a link into ~/devpi/<inside> on the host
    config = config_of(devpi_backup={"hour": 3, "minute": 0, "dir": "/Volumes/b"})
    (problem,) = path_problems(config, resolved({"/Volumes/b": f"{HOME}/devpi/{inside}"}))
    assert problem.startswith(f"paths: `devpi_backup` ['dir'] = /Volumes/b (on the host: {HOME}/devpi/{inside}) is ")
    assert "use a directory of its own outside the deploy's" in problem


def test_case_is_folded_where_the_file_system_folds_it():
    config = config_of(devpi_backup={"hour": 3, "minute": 0, "dir": "~/devpi/SERVER-DIR"})
    upper = f"{HOME}/devpi/SERVER-DIR"
    (problem,) = path_problems(config, resolved(folds={upper}))
    assert "`devpi_backup` ['dir'] = " in problem and "server dir" in problem
    # a case-sensitive file system: another dir
    assert path_problems(config, resolved()) == []
    # the site file at ~/Devpi/secret on APFS is devpi's secret
    site = config_of(devpi_caddy_site_file="~/Devpi/secret")
    (problem,) = path_problems(site, resolved(folds={f"{HOME}/Devpi/secret"}))
    assert "is the deploy's own secret file" in problem


def test_case_folding_in_the_model():
    from pyinfra_devpi.real_paths import Real, same, within

    assert same(Real("/Users/a/Devpi", folds=True), Real("/Users/a/devpi"))
    assert not same(Real("/Users/a/Devpi"), Real("/Users/a/devpi"))
    assert within(Real("/Users/a/devpi/VENVS/x", folds=True), Real("/Users/a/devpi/venvs", folds=True))
    assert not within(Real("/Users/a/devpi/venvs-old"), Real("/Users/a/devpi/venvs"))
    assert within(Real("/x"), Real("/"))


@pytest.mark.parametrize(("real", "why"), [(HOME, "is the SSH user's home"), ("/Users", "holds the SSH user's home"),
                                           ("/", "holds the SSH user's home")])
def test_a_devpi_home_that_lands_on_the_users_home_is_refused(real, why):
    config = config_of(devpi_home="~/dv")
    (problem,) = path_problems(config, resolved({f"{HOME}/dv": real}))
    assert problem.startswith(f"paths: `devpi_home` = {HOME}/dv (on the host: {real}) {why}")
    assert "use a directory of its own, such as '~/devpi'" in problem
    # the home itself, spelled in another case on APFS
    (problem,) = path_problems(config, resolved({f"{HOME}/dv": HOME.upper()}, folds={HOME.upper()}))
    assert "is the SSH user's home" in problem


def test_logs_and_plists_that_land_on_the_deploys_files_are_refused():
    # ~/Library/Logs -> ~/devpi (a symlink made by hand): the err log would be the secret
    config = config_of(devpi_err_log="secret")
    (problem,) = path_problems(config, resolved({f"{HOME}/Library/Logs/secret": f"{HOME}/devpi/secret"}))
    assert problem.startswith("paths: `devpi_log_dir` / `devpi_err_log` = ")
    assert "is the deploy's own secret file" in problem
    config = config_of()
    plist = config.paths.plist_file
    (problem,) = path_problems(config, resolved({plist: f"{HOME}/devpi/venvs/net.devpi.plist"}))
    assert "`devpi_launch_agents_dir` / `devpi_label` = " in problem and "inside the deploy's venvs" in problem


def test_the_real_paths_fact_follows_links_on_the_way_and_at_the_end(tmp_path):
    from facts.files import RealPaths

    (tmp_path / "devpi").mkdir()
    (tmp_path / "devpi" / "devpi-server.yml").write_text("x")
    (tmp_path / "sites").symlink_to(tmp_path / "devpi")
    (tmp_path / "link-file").symlink_to("devpi/devpi-server.yml")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    odd = tmp_path / "a b $(touch pwned)"
    paths = (str(tmp_path / "sites" / "devpi-server.yml"), str(tmp_path / "sites" / "missing" / "x.caddy"),
             str(tmp_path / "link-file"), str(tmp_path / "nowhere" / "x"), str(odd / "y"), str(tmp_path / "loop"))
    for shell in SHELLS:
        found = run_fact(RealPaths, shell, {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "sites")}, tmp_path,
                         paths=paths)
        real = {p: v["real"] for p, v in found["paths"].items()}
        assert real[paths[0]] == str(tmp_path / "devpi" / "devpi-server.yml")
        assert real[paths[1]] == str(tmp_path / "devpi" / "missing" / "x.caddy")
        assert real[paths[2]] == str(tmp_path / "devpi" / "devpi-server.yml")
        assert real[paths[3]] == paths[3] and real[paths[4]] == paths[4]
        assert paths[5] in real  # a loop of links ends
        assert found["home"] == {"real": str(tmp_path / "devpi"), "folds": False}
        assert not any(v["folds"] for v in found["paths"].values())  # Linux: case-sensitive
    assert not (tmp_path / "pwned").exists()

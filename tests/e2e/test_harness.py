"""Smoke tests of the end-to-end harness itself (see conftest.py)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from . import harness
from .devpi_client import install, make_venv
from .harness import count_remote_commands, http, remote_commands, wait_until

pytestmark = pytest.mark.e2e

SETENV_PROBE = 'a b  "quoted" \\back\\slash $HOME %h #hash \'single\''


def _exec_lines(output: str, host: str = "127.0.0.1") -> list[str]:
    """What ``pyinfra INVENTORY exec`` printed from the host (``[host] line``)."""
    prefix = f"[{host}] "
    return [line.strip()[len(prefix):] for line in output.splitlines() if line.strip().startswith(prefix)]


def test_pyinfra_exec_over_ssh_gets_a_macs_session(sshd, write_inventory, run_pyinfra, tools, tmp_path):
    inventory = write_inventory(tmp_path / "inventory.py", {"e2e_probe": [1, "two", Path("/x")]})
    mark = sshd.mark()
    result = run_pyinfra(
        inventory,
        "--debug",
        "exec",
        "--",
        'echo "PATH=$PATH"; echo "UV=$(command -v uv)"; echo "CADDY=$(command -v caddy)";'
        ' echo "PY=$(command -v python3)"; echo "LAUNCHCTL=$(command -v launchctl)";'
        ' echo "LINK=$(readlink /bin/launchctl)";'
        ' echo "STATE=$LAUNCHCTL_DOUBLE_STATE"; echo "HOME=$HOME"; echo "SSH=${SSH_CONNECTION%% *}"',
    )
    values = dict(line.split("=", 1) for line in _exec_lines(result.output) if "=" in line)
    # macOS's PATH for `ssh host command`, exactly: nothing of the harness's on it.
    assert values["PATH"] == harness.MAC_SSH_PATH, result.describe()
    assert values["UV"] == "" and values["CADDY"] == ""
    assert values["PY"] == "/usr/bin/python3"
    # found on that PATH (Debian's /bin is /usr/bin, which comes first), and it is the double
    assert values["LAUNCHCTL"] in ("/usr/bin/launchctl", harness.MAC_LAUNCHCTL)
    assert values["LINK"] == str(harness.LAUNCHCTL_DOUBLE)
    assert values["STATE"] == sshd.env["LAUNCHCTL_DOUBLE_STATE"]
    assert values["HOME"] == str(sshd.home)
    assert values["SSH"] == "127.0.0.1"  # really over SSH, not @local

    # Counting: the pyinfra debug log and sshd's own log agree.
    commands = remote_commands(result.output)
    assert commands, result.describe()
    assert count_remote_commands(result.output) == sshd.commands_since(mark) == len(commands)
    assert count_remote_commands(result.output, host="127.0.0.1") == len(commands)
    assert count_remote_commands(result.output, host="elsewhere") == 0
    assert sshd.connections_since(mark) == 1
    assert harness.listening_addresses(sshd.port) == {"127.0.0.1"}


def test_ssh_session_env_via_setenv(sshd, tools):
    # The tools are where a Mac keeps them, not on PATH; HOME sandboxed; root's ~/.bashrc not sourced.
    proc = sshd.run(
        'echo "$PATH"; echo "$SHLVL"; ~/.local/bin/uv --version; /opt/homebrew/bin/caddy version;'
        " /bin/launchctl print-disabled user/$(id -u) >/dev/null && echo launchctl-ok"
    )
    path, shlvl, uv_version, caddy_version, launchctl = proc.stdout.splitlines()
    assert path == sshd.env["PATH"] == harness.MAC_SSH_PATH
    assert uv_version.startswith("uv ")
    assert caddy_version.startswith("v2.")
    assert launchctl == "launchctl-ok"
    for name in harness.PASSTHROUGH_ENV:
        if os.environ.get(name):
            assert sshd.run(f'printf %s "${name}"').stdout == os.environ[name]


def test_the_stand_ins_are_in_sshds_namespace_only(sshd):
    """/bin/launchctl and /opt/homebrew are overlays in sshd's mount namespace: this
    machine's own /bin and /opt are as they were."""
    assert not os.path.lexists(harness.MAC_LAUNCHCTL)
    assert not os.path.lexists(harness.HOMEBREW_BIN)
    inside = Path(f"/proc/{sshd.pid}/root")
    assert os.readlink(inside / harness.MAC_LAUNCHCTL.lstrip("/")) == str(harness.LAUNCHCTL_DOUBLE)
    assert os.readlink(inside / harness.HOMEBREW_BIN.lstrip("/") / "caddy") == str(harness.CADDY_BIN)


def test_setenv_quoting(tmp_path, tools):
    """A value with spaces, quotes, backslashes, $, %, # survives sshd's SetEnv parsing."""
    env = {"PATH": "/usr/bin:/bin", "SHLVL": "1", "HOME": str(tmp_path), "E2E_PROBE": SETENV_PROBE}
    server = harness.start_sshd(tmp_path / "sshd", tools, env)
    try:
        assert server.run('printf %s "$E2E_PROBE"').stdout == SETENV_PROBE
    finally:
        server.stop()
    with pytest.raises(ValueError):
        harness.sshd_setenv_line({"BAD": "two\nlines"})
    assert harness.sshd_setenv_line({"A": "x y"}) == 'SetEnv "A=x y"'


def test_count_remote_commands_needs_debug_output():
    with pytest.raises(harness.HarnessError, match="--debug"):
        count_remote_commands("--> Starting operation: Server/Shell\n[127.0.0.1] Success\n")
    sample = (
        "    [pyinfra.connectors.ssh] Running command on 127.0.0.1: (pty=False) sh -c 'echo a\n"
        "echo b'\n"
        "    [pyinfra.connectors.ssh] Waiting for exit status...\n"
        "    [pyinfra.connectors.ssh] Running command on 127.0.0.1: (pty=False) sh -c true\n"
    )
    assert remote_commands(sample) == ["sh -c 'echo a", "sh -c true"]


def test_write_inventory_rejects_non_literals(write_inventory, tmp_path):
    with pytest.raises(ValueError, match="literals"):
        write_inventory(tmp_path / "inv.py", {"bad": object()})
    inventory = write_inventory(tmp_path / "inv.py", {"devpi_port": 3999, "nested": {"a": [Path("/p")]}})
    namespace: dict = {}
    exec(inventory.read_text(), namespace)
    ((name, data),) = namespace["e2e_hosts"]
    assert name == "127.0.0.1"
    assert data["devpi_port"] == 3999 and data["nested"] == {"a": ["/p"]}
    assert data["ssh_strict_host_key_checking"] == "yes"


def test_upstream_index_installs_hermetically(upstream, tools, tmp_path):
    beta = upstream.wheel("hermetic-beta", "2.0")
    status, _, page = http("GET", upstream.url + "hermetic-beta/")
    assert status == 200
    assert f"{beta.filename}#sha256={beta.sha256}" in page.decode()
    assert hashlib.sha256(beta.path.read_bytes()).hexdigest() == beta.sha256
    # Rebuilding gives the same bytes (uploads/bumps compare sha256 across runs).
    again = harness.build_wheel(tmp_path / "rebuild", "hermetic-beta", "2.0", beta.requires)
    assert again.sha256 == beta.sha256

    venv_python = make_venv(tools.uv, tools.python3, tmp_path / "venv")
    installed = install("uv", tools.uv, venv_python, upstream.url, ["hermetic-beta"])
    assert installed.returncode == 0, installed.stderr
    versions = subprocess.run(
        [str(venv_python), "-c",
         "import hermetic_alpha, hermetic_beta; print(hermetic_alpha.__version__, hermetic_beta.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert versions == ["1.1", "2.0"]
    assert any(r.startswith("GET /simple/hermetic-alpha/") for r in upstream.requests())
    assert any(r.startswith(f"GET /files/{beta.filename}") for r in upstream.requests())
    assert harness.listening_addresses(upstream.port) == {"127.0.0.1"}


def test_op_double(fake_op):
    env = {**os.environ, **fake_op.env}
    ok = subprocess.run(["op", "read", "op://vault/devpi/password"], env=env, capture_output=True, text=True)
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, fake_op.password + "\n", "")
    nonl = subprocess.run(["op", "read", "-n", "op://vault/devpi/password"], env=env, capture_output=True, text=True)
    assert nonl.stdout == fake_op.password

    fake_op.fail()
    env = {**os.environ, **fake_op.env}
    bad = subprocess.run(["op", "read", "op://vault/devpi/password"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == ""
    assert re.fullmatch(
        r"\[ERROR\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d could not read secret 'op://vault/devpi/password': "
        r"\"devpi\" isn't an item in the \"vault\" vault\. Specify the item with its UUID, name, or domain\.\n",
        bad.stderr,
    ), bad.stderr
    assert fake_op.calls() == [
        ["read", "op://vault/devpi/password"],
        ["read", "-n", "op://vault/devpi/password"],
        ["read", "op://vault/devpi/password"],
    ]


def test_op_double_reaches_pyinfra_controller(fake_op, write_inventory, run_pyinfra, tmp_path):
    """A deploy that shells out to ``op`` at plan time gets the double, not a real op."""
    deploy = tmp_path / "deploy_op_probe.py"
    deploy.write_text(
        "import subprocess\n"
        "from pyinfra.operations import server\n"
        "secret = subprocess.run(['op', 'read', 'op://vault/devpi/password'],\n"
        "                        capture_output=True, text=True, check=True).stdout.rstrip('\\n')\n"
        "assert secret, 'empty secret'\n"
        "server.shell(name='probe', commands=['true'])\n"
    )
    inventory = write_inventory(tmp_path / "inventory.py")
    result = run_pyinfra(inventory, str(deploy), env_extra=fake_op.env)
    assert fake_op.password not in result.output
    assert fake_op.calls() == [["read", "op://vault/devpi/password"]]


def test_caddy_job_serves_placeholder_through_launchctl_double(caddy_job, launchd, tmp_path):
    site = tmp_path / "sites" / "devpi.caddy"
    job = caddy_job(site)
    assert site.exists()
    status, _, body = http("GET", job.url + "/")
    assert (status, body.decode()) == (200, harness.CADDY_PLACEHOLDER_BODY)
    assert harness.listening_addresses(job.port) == {"127.0.0.1"}
    printed = launchd.print(job.label)
    assert printed.returncode == 0, printed.stderr
    assert "state = running" in printed.stdout
    first_pid = launchd.pid(job.label)
    assert first_pid

    # The restart path the deploy uses for Caddy: kickstart -k -> new process, same site.
    launchd.kickstart(job.label)
    wait_until(lambda: launchd.pid(job.label) not in (None, first_pid) and harness.port_open(job.port), 20, 0.1,
               "a new Caddy process serving")
    assert launchd.pid(job.label) not in (None, first_pid)
    status, _, body = http("GET", job.url + "/")
    assert (status, body) == (200, harness.CADDY_PLACEHOLDER_BODY.encode())


def test_command_count_of_a_deploy_and_its_rerun(sshd, write_inventory, run_pyinfra, tmp_path):
    """The pattern for "a no-change rerun runs N remote commands": --debug + count."""
    target = tmp_path / "target"
    deploy = tmp_path / "deploy_count_probe.py"
    deploy.write_text(
        "from io import StringIO\n"
        "from pyinfra import host\n"
        "from pyinfra.operations import files\n"
        "root = host.data.probe_dir\n"
        "files.directory(name='dir', path=root)\n"
        "files.put(name='file', src=StringIO('hello\\n'), dest=root + '/hello.txt', mode='644')\n"
    )
    inventory = write_inventory(tmp_path / "inventory.py", {"probe_dir": target})

    mark = sshd.mark()
    first = run_pyinfra(inventory, str(deploy), "--debug")
    assert (target / "hello.txt").read_text() == "hello\n"
    assert count_remote_commands(first.output) == sshd.commands_since(mark)
    assert sshd.sftp_sessions_since(mark) == 1  # the upload went over SFTP, not as a command

    mark = sshd.mark()
    rerun = run_pyinfra(inventory, str(deploy), "--debug")
    assert count_remote_commands(rerun.output) == sshd.commands_since(mark)
    assert sshd.sftp_sessions_since(mark) == 0
    assert 0 < count_remote_commands(rerun.output) < count_remote_commands(first.output)

"""A new devpi-server that installs and imports but cannot start is rolled back, and so is
one that answers /+api but fails real requests (the health gate's smoke check)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.pyinfra_cli import PYINFRA_BIN

from .harness import REPO, add_unstartable_devpi, http, pyinfra_env, start_upstream, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def private_upstream(tools, tmp_path):
    """A private hermetic index: the broken release must not show up in other tests'."""
    index = start_upstream(tmp_path / "upstream", python=tools.python3)
    yield index
    index.stop()


def test_a_bad_upgrade_is_rolled_back_to_the_previous_venv(shared_host, private_upstream, e2e_log_dirs):
    # devpi-server 6.20.99 and devpi-web 5.1.99 install and import, report their
    # version, and exit at once when started.
    upstream = private_upstream
    add_unstartable_devpi(upstream, "built by the e2e test")
    stack = shared_host.get()
    e2e_log_dirs.append(stack.root)
    good = os.path.realpath(stack.devpi_home / "venv")
    pid = stack.wait_healthy()

    result = stack.deploy(check=False, devpi_server_version="6.20.99", devpi_web_version="5.1.99",
                          devpi_index_url=upstream.url, devpi_health_timeout=60)

    assert result.returncode != 0, result.describe()
    # The gate saw the new devpi exit and did not wait out its 60 s: launchd's account.
    assert "exited before it answered" in result.output, result.describe()
    assert "last exit code = " in result.output
    assert "devpi-server 6.20.99 failed the health gate: rolling back to the previous venv" in result.output
    assert "rolled back: devpi answers again from" in result.output, result.describe()
    assert "a release that cannot start" in result.output  # the error log's tail
    assert os.path.realpath(stack.devpi_home / "venv") == good
    assert stack.wait_healthy() != pid  # restarted, from the good venv
    assert stack.api_ok()


# devpi-server 6.20.96 + devpi-web 5.1.96: install and import, report their version, and
# start a server that answers /+api (with the server dir's uuid) but 500 on every other
# request: what a release broken past its start looks like.
HOLLOW_SERVER, HOLLOW_WEB = "6.20.96", "5.1.96"
HOLLOW_MAIN = (
    'DATABASE_VERSION = "4"\n'
    "import http.server, json, re, sys\n"
    "def main():\n"
    '    if "--version" in sys.argv:\n'
    f'        print("{HOLLOW_SERVER}")\n'
    "        return 0\n"
    '    text = open(sys.argv[sys.argv.index("--configfile") + 1]).read()\n'
    "    value = lambda key: re.search(r'^  %s: \"?([^\"\\n]*)\"?$' % key, text, re.M).group(1)\n"
    '    uuid = json.load(open(value("serverdir") + "/.nodeinfo"))["uuid"]\n'
    "    class Handler(http.server.BaseHTTPRequestHandler):\n"
    "        def do_GET(self):\n"
    '            self.send_response(200 if self.path == "/+api" else 500)\n'
    '            self.send_header("X-DEVPI-UUID", uuid)\n'
    '            self.send_header("Content-Length", "2")\n'
    "            self.end_headers()\n"
    '            self.wfile.write(b"{}")\n'
    '    server = http.server.HTTPServer((value("host"), int(value("port"))), Handler)\n'
    '    sys.stderr.write("devpi-server 6.20.96: answers /+api only (built by the e2e test)\\n")\n'
    "    server.serve_forever()\n"
)


def hollow_devpi(upstream):
    """``upstream`` serving the hollow devpi (6.20.96 + devpi-web 5.1.96)."""
    upstream.add_project("devpi-server", HOLLOW_SERVER, modules={"main": HOLLOW_MAIN},
                         scripts={"devpi-server": "devpi_server.main:main"})
    upstream.add_project("devpi-web", HOLLOW_WEB, modules={"main": ""})
    upstream.add_project("setuptools", "80.0")
    return upstream


def test_a_new_venv_that_answers_the_api_but_fails_real_requests_is_rolled_back(shared_host, private_upstream,
                                                                                 e2e_log_dirs):
    upstream = hollow_devpi(private_upstream)
    stack = shared_host.get()
    e2e_log_dirs.append(stack.root)
    good = os.path.realpath(stack.devpi_home / "venv")
    pid = stack.wait_healthy()

    result = stack.deploy(check=False, devpi_server_version=HOLLOW_SERVER, devpi_web_version=HOLLOW_WEB,
                          devpi_index_url=upstream.url, devpi_health_timeout=60)

    assert result.returncode != 0, result.describe()
    # /+api answered: the smoke check's real requests failed, shown in the run
    assert "smoke check FAILED" in result.output and "GET / 500" in result.output, result.describe()
    assert "but failed the smoke check" in result.output
    assert f"devpi-server {HOLLOW_SERVER} failed the health gate: rolling back to the previous venv" in result.output
    assert "rolled back: devpi answers again from" in result.output, result.describe()
    assert "smoke check passed" in result.output  # the old venv's devpi serves again
    assert os.path.realpath(stack.devpi_home / "venv") == good
    assert stack.wait_healthy() != pid  # restarted, from the good venv
    # the status shows the last smoke check: the old venv's, passed
    report = stack.pyinfra("deploys/status.py", "--data", "devpi_status_format=json", check=False)
    smoke = json.loads(report.stdout.strip().splitlines()[0])["sections"]["smoke"]
    assert smoke["ok"] is True and os.path.realpath(smoke["venv_dir"]) == good, smoke
    assert smoke["checks"][0] == "GET / 200"

    # A run stopped right after the swap (before the restart and the gate) leaves the
    # hollow venv live, unchecked, and the good one named in venv.previous; devpi still
    # runs the old code. The next run with the same data finds nothing to build: it must
    # check the live venv anyway, and roll it back.
    (hollow,) = [p for p in (stack.devpi_home / "venvs").iterdir() if HOLLOW_SERVER in p.name]
    os.symlink(hollow, stack.devpi_home / "venv.swap")
    os.replace(stack.devpi_home / "venv.swap", stack.devpi_home / "venv")
    assert (stack.devpi_home / "venv.previous").read_text().strip() == good
    pid = stack.wait_healthy()
    # the status, a monitor, says so
    report = stack.pyinfra("deploys/status.py", "--data", "devpi_status_format=json", check=False)
    warnings = json.loads(report.stdout.strip().splitlines()[0])["warnings"]
    assert any(f"the live venv {os.path.realpath(hollow)} has not passed a smoke check" in w for w in warnings), warnings
    again = stack.deploy(check=False, devpi_server_version=HOLLOW_SERVER, devpi_web_version=HOLLOW_WEB,
                         devpi_index_url=upstream.url, devpi_health_timeout=60)
    assert again.returncode != 0, again.describe()
    assert f"the live venv {os.path.realpath(hollow)} has not passed the health gate" in again.output, \
        again.describe()
    assert "smoke check FAILED" in again.output and "rolled back: devpi answers again from" in again.output
    assert os.path.realpath(stack.devpi_home / "venv") == good
    assert stack.wait_healthy() != pid
    # and with the good venv checked, a rerun changes nothing
    assert stack.deploy().grand_total()[0] == 0


def test_a_run_killed_in_the_gate_of_a_hollow_venv_still_rolls_back(shared_host, private_upstream, e2e_log_dirs):
    """pyinfra (and its SSH connection) killed while the gate checks the new venv: the
    gate's script goes on on the host, fails the smoke check and rolls back; the old venv
    serves, its data as it was."""
    upstream = hollow_devpi(private_upstream)
    stack = shared_host.get()
    e2e_log_dirs.append(stack.root)
    good = os.path.realpath(stack.devpi_home / "venv")
    stack.wait_healthy()
    uuid = (stack.server_dir / ".nodeinfo").read_text()
    # compared parsed: devpi lists users in an order that may differ from one process to the next
    users = json.loads(http("GET", stack.devpi_url + "/", headers={"Accept": "application/json"})[2])

    inventory = stack.write_inventory(devpi_server_version=HOLLOW_SERVER, devpi_web_version=HOLLOW_WEB,
                                      devpi_index_url=upstream.url, devpi_health_timeout=60)
    proc = subprocess.Popen([str(PYINFRA_BIN), "-y", str(inventory), "deploys/devpi.py"], cwd=str(REPO),
                            env=pyinfra_env(stack.env_extra), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "smoke check FAILED" in line:  # the gate is under way on the host
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "smoke check FAILED" in "".join(seen), "".join(seen)[-3000:]

    wait_until(lambda: os.path.realpath(stack.devpi_home / "venv") == good, 90, 0.2,
               "the gate left running on the host to roll the venv link back")
    wait_until(lambda: last_smoke(stack).get("ok") is True, 90, 0.2, "the old venv's devpi to pass the smoke check")
    assert os.path.realpath(last_smoke(stack)["venv_dir"]) == good
    stack.wait_healthy()
    assert json.loads(http("GET", stack.devpi_url + "/", headers={"Accept": "application/json"})[2]) == users
    assert (stack.server_dir / ".nodeinfo").read_text() == uuid


def last_smoke(stack) -> dict:
    try:
        return json.loads((stack.devpi_home / "smoke.pyinfra.json").read_text())
    except (OSError, ValueError):
        return {}

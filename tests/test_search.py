"""devpi-web's search (``devpi_search``): Whoosh only once no mirror loads its
upstream's whole project list (pyinfra_devpi/search.py, operations/search.py)."""

import subprocess
import threading
from types import SimpleNamespace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pyinfra.api import FunctionCommand

from operations import search as search_op
from operations.users_indexes import refuse_unflagged_mirrors
from pyinfra_devpi.config import build_config
from pyinfra_devpi.render import render_server_yaml
from pyinfra_devpi.search import (
    NULL, WHOOSH, SearchPlan, backend_in, decide, decide_when_up, indexes_after, unflagged_mirrors,
)
from pyinfra_devpi.users_indexes.plan import AFTER_INIT, ApplyError, plan
from pyinfra_devpi.users_indexes.spec import check_indexes

from .prepared import PreparedHost, Upload, run_op, shell_lines

FLAGGED = {"type": "mirror", "mirror_url": "https://pypi.org/simple/", "mirror_no_project_list": True}
UNFLAGGED = {"type": "mirror", "mirror_url": "https://pypi.org/simple/"}  # as the Ansible role's devpi-init made it
STAGE = {"type": "stage", "bases": ["root/pypi"]}


def declared(**extra):
    return check_indexes("`devpi_indexes`", extra)


def decision(current, host_backend=None, search=True, **indexes):
    actions = None if current is None else plan({}, declared(**indexes), {"users": {"root": {}}, "indexes": current})
    return decide(search, current, actions, host_backend)


def test_a_new_server_dir_gets_whoosh_from_the_start():
    # devpi-init --no-root-pypi; root/pypi is created with the flag by the users/indexes step
    actions = plan({}, declared(), None)
    assert decide(True, AFTER_INIT["indexes"], actions, None) == SearchPlan(WHOOSH)


def test_every_mirror_flagged_gets_whoosh_at_once():
    assert decision({"root/pypi": FLAGGED, "eblume/dev": STAGE}, host_backend=NULL) == SearchPlan(WHOOSH)


def test_an_unflagged_root_pypi_is_flagged_under_null_then_whoosh_is_switched_on():
    result = decision({"root/pypi": UNFLAGGED}, host_backend=None)
    assert result.backend == NULL and result.switch_on
    assert "root/pypi" in result.message and "restarts once more" in result.message


def test_a_host_running_whoosh_with_an_unflagged_mirror_goes_to_null_first():
    result = decision({"root/pypi": UNFLAGGED}, host_backend=WHOOSH)
    assert (result.backend, result.switch_on) == (NULL, True)


@pytest.mark.parametrize("indexes, current", [
    # declared with the flag off: the operator's choice keeps search off, with a warning
    ({"root/pypi": {"mirror_no_project_list": False}}, {"root/pypi": FLAGGED}),
    # a new mirror declared without the flag: devpi would load its list when it is created
    ({"root/other": {"type": "mirror", "mirror_url": "https://example.org/simple/"}}, {"root/pypi": FLAGGED}),
    # a mirror made by hand, not declared: the deploy does not touch it
    ({}, {"root/pypi": FLAGGED, "root/hand": UNFLAGGED}),
])
def test_a_mirror_that_stays_unflagged_keeps_search_off(indexes, current):
    result = decision(current, host_backend=WHOOSH, **indexes)
    assert (result.backend, result.switch_on, result.warn) == (NULL, False, True)
    assert "mirror_no_project_list" in result.message


def test_a_mirror_deleted_by_the_run_does_not_hold_search_back():
    result = decision({"root/pypi": FLAGGED, "root/hand": {**UNFLAGGED, "volatile": True}},
                      **{"root/hand": {"state": "absent"}})
    assert (result.backend, result.switch_on) == (NULL, True)


def test_devpi_not_answering_keeps_whoosh_or_decides_once_it_is_up():
    assert decision(None, host_backend=WHOOSH) == SearchPlan(WHOOSH)
    # null (or no config: a server dir brought over): devpi starts without search, and the
    # decision waits for devpi to answer after the health gate, in the same run
    for host_backend in (NULL, None):
        result = decision(None, host_backend=host_backend)
        assert (result.backend, result.switch_on, result.deferred) == (NULL, False, True)
        assert "next run" not in result.message and "after the users and indexes step" in result.message


@pytest.mark.parametrize("indexes, backend", [
    ({"root/pypi": FLAGGED, "eblume/dev": STAGE}, WHOOSH),
    ({}, WHOOSH),
    ({"root/pypi": UNFLAGGED}, NULL),
])
def test_the_deferred_decision_uses_the_indexes_devpi_reports_once_up(indexes, backend):
    result = decide_when_up(True, indexes)
    assert (result.backend, result.switch_on) == (backend, False)
    assert result.warn == (backend == NULL)
    assert decide_when_up(False, indexes) == SearchPlan(NULL)


def test_search_off_is_null_whatever_the_host_holds():
    assert decision({"root/pypi": FLAGGED}, search=False) == SearchPlan(NULL)


def test_the_indexes_after_the_plan():
    current = {"root/pypi": UNFLAGGED, "old/x": STAGE}
    actions = [
        {"op": "patch_index", "name": "root/pypi", "body": {"mirror_no_project_list": True}},
        {"op": "create_index", "name": "root/m", "body": dict(UNFLAGGED)},
        {"op": "delete_user", "name": "old"},
    ]
    after = indexes_after(current, actions)
    assert set(after) == {"root/pypi", "root/m"}
    assert unflagged_mirrors(after) == ["root/m"]
    assert current["root/pypi"] == UNFLAGGED  # not modified


def test_backend_in_reads_the_rendered_config():
    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/alice")
    assert backend_in(render_server_yaml(config, WHOOSH)) == WHOOSH
    assert backend_in(render_server_yaml(config, NULL)) == NULL
    assert backend_in(None) is None and backend_in("devpi-server:\n  port: 1\n") is None


def test_while_devpi_runs_whoosh_no_change_may_leave_a_mirror_unflagged():
    current = {"users": {"root": {}}, "indexes": {"root/pypi": FLAGGED}}
    refuse_unflagged_mirrors(current, [])  # nothing to refuse
    with pytest.raises(ApplyError, match="root/pypi"):
        refuse_unflagged_mirrors(current, [
            {"op": "patch_index", "name": "root/pypi", "body": {"mirror_no_project_list": False}},
        ])
    # a mirror someone made by hand without the flag is not this plan's doing
    by_hand = {"type": "mirror", "mirror_url": "https://pypi.org/simple/"}
    refuse_unflagged_mirrors({"users": {"root": {}}, "indexes": {"root/pypi": FLAGGED, "root/hand": by_hand}}, [
        {"op": "patch_index", "name": "root/pypi", "body": {"title": "PyPI"}},
    ])


# --------------------------------------------------------------------------- the operation


@pytest.fixture
def config():
    return build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/alice")


def test_switch_on_writes_whoosh_over_the_null_config_restarts_and_waits(config):
    null_yaml, whoosh_yaml = render_server_yaml(config, NULL), render_server_yaml(config, WHOOSH)
    # the host held whoosh when the run started (a hand-made state): the earlier write
    # put null there, so the switch writes whoosh again
    host = PreparedHost(files={config.paths.config_file: whoosh_yaml})
    commands = run_op(search_op.switch_on, host, config=config, plan=SearchPlan(NULL, switch_on=True),
                      content=whoosh_yaml, written=null_yaml, target="gui/501/net.devpi")
    uploads = [c for c in commands if isinstance(c, Upload)]
    assert [u.content for u in uploads] == [whoosh_yaml]
    lines = shell_lines(commands)
    assert any("launchctl kickstart -k gui/501/net.devpi" in c for c in lines)
    # the restart, then the health gate
    assert "/+api" in lines[-1] and "kickstart" in lines[-2]


@pytest.mark.parametrize("plan, reason", [
    (SearchPlan(WHOOSH), "on from devpi's start"),
    (SearchPlan(NULL), "stays off"),
])
def test_no_switch_no_command(config, plan, reason):
    host = PreparedHost()
    assert run_op(search_op.switch_on, host, config=config, plan=plan, content="x", written="y", target="t") == []
    assert reason in host.noops[0]


class ControllerHost:
    """What ``switch_on_when_up`` uses of pyinfra's host: uploads, one shell command, logs."""

    def __init__(self, ok=True):
        self.uploads, self.commands, self.logged, self.ok = [], [], [], ok

    def put_file(self, src, dest):
        self.uploads.append((dest, src.read().decode()))
        return True

    def run_shell_command(self, command, print_output=False):
        self.commands.append(str(command))
        return self.ok, SimpleNamespace(stdout_lines=["waited"], stderr_lines=[])

    def log(self, message, log_func=None):
        self.logged.append(message)

    def log_styled(self, message, **kwargs):
        self.logged.append(message)


def devpi_reporting(indexes: dict):
    """devpi's JSON API answering ``GET /`` with ``indexes`` (``{"user/index": ixconfig}``)."""
    users = {}
    for name, ixconfig in indexes.items():
        user, index = name.split("/")
        users.setdefault(user, {"indexes": {}})["indexes"][index] = ixconfig
    return lambda method, path, body=None, auth=None: (200, {"result": users})


def test_a_deferred_plan_decides_at_execution(config):
    commands = run_op(search_op.switch_on, PreparedHost(), config=config, plan=SearchPlan(NULL, deferred=True),
                      content="whoosh", written="null", target="gui/501/net.devpi")
    (command,) = commands
    assert isinstance(command, FunctionCommand) and command.function is search_op.switch_on_when_up


def test_once_up_every_mirror_flagged_switches_whoosh_on_restarts_waits_and_makes_the_index(config):
    whoosh_yaml = render_server_yaml(config, WHOOSH)
    host = ControllerHost()
    ok = search_op.switch_on_when_up(None, host, config, whoosh_yaml, "gui/501/net.devpi",
                                     request=devpi_reporting({"root/pypi": FLAGGED}))
    assert ok
    assert host.uploads == [(config.paths.config_file + ".pyinfra-new", whoosh_yaml)]
    (script,) = host.commands
    steps = [script.index(s) for s in (f"mv -f {config.paths.config_file}.pyinfra-new {config.paths.config_file}",
                                       "launchctl kickstart -k gui/501/net.devpi", "/+api", "/+search?query=devpi")]
    assert steps == sorted(steps)
    # the script is valid sh
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0


def test_once_up_an_unflagged_mirror_keeps_search_off_with_the_warning(config):
    host = ControllerHost()
    assert search_op.switch_on_when_up(None, host, config, "whoosh", "t", request=devpi_reporting(
        {"root/pypi": UNFLAGGED}))
    assert host.uploads == [] and host.commands == []
    assert any("search stays off" in m and "root/pypi" in m for m in host.logged)


def test_once_up_devpi_not_answering_fails_the_step_and_changes_nothing():
    config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_health_timeout": 1}, "/Users/alice")
    host = ControllerHost()
    assert not search_op.switch_on_when_up(None, host, config, "whoosh", "t",
                                           request=lambda *a, **k: (502, {"message": "bad gateway"}))
    assert host.uploads == [] and host.commands == []
    assert any("did not answer" in m for m in host.logged)


# devpi-web's Whoosh index: made by one search request once devpi runs with Whoosh, not
# by the first upload's two racing threads (operations/search.py, create_index).


def _search_page(status: int):
    """A stand-in for devpi answering every GET with ``status``; records the paths."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("status", [200, 500])
def test_the_search_index_is_created_by_one_search_once_devpi_runs_with_whoosh(status):
    server, seen = _search_page(status)
    try:
        port = server.server_address[1]
        config = build_config({"devpi_outside_url": "https://pypi.example.org", "devpi_port": port}, "/Users/alice")
        (command,) = shell_lines(run_op(search_op.create_index, PreparedHost(), config=config, whoosh=True,
                                        exists=False))
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert seen == ["/+search?query=devpi"]
    if status == 200:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1
        assert f"devpi-web's search page answered 500 on http://127.0.0.1:{port}/+search?query=devpi" in done.stderr


def test_no_search_request_when_the_index_exists_or_search_is_off():
    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, "/Users/alice")
    host = PreparedHost()
    assert run_op(search_op.create_index, host, config=config, whoosh=True, exists=True) == []
    assert run_op(search_op.create_index, host, config=config, whoosh=False, exists=False) == []
    assert host.noops == ["devpi-web's search index exists", "devpi-web's search is off: no index to create"]

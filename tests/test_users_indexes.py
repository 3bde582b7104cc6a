"""
devpi_users / devpi_indexes: validation, the plan (which changes for which
differences), the fact, the operation under prepared facts, and the script that
applies the plan on the target (against a small stand-in for devpi's REST API; the
real devpi is exercised end to end in tests/e2e/test_users_indexes.py).
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from argon2 import PasswordHasher
from pyinfra.api import FunctionCommand
from pyinfra.api.exceptions import FactProcessError

from facts.users_indexes import UsersIndexes
from operations import users_indexes as users_indexes_op
from pyinfra_devpi.config import ConfigError, build_config
from pyinfra_devpi import tunnel
from pyinfra_devpi.secrets import SecretRef
from pyinfra_devpi.users_indexes import plan as plan_script
from pyinfra_devpi.users_indexes.plan import AFTER_INIT, ROOT_PYPI_INIT, PlanError, describe, plan, split_userlist

from .prepared import PreparedHost, run_op

HOME = "/Users/alice"
BASE = {"devpi_root_password": "env:ROOT_PW", "devpi_outside_url": "https://pypi.example.org"}
EBLUME = {"email": "eblume@example.org", "password": "env:EBLUME_PW"}
DEV = {"bases": ["root/pypi"]}


def config_for(users=None, indexes=None, **extra):
    data = {**BASE, **extra}
    if users is not None:
        data["devpi_users"] = users
    if indexes is not None:
        data["devpi_indexes"] = indexes
    return build_config(data, HOME)


def error_for(users=None, indexes=None) -> str:
    with pytest.raises(ConfigError) as error:
        config_for(users, indexes)
    return str(error.value)


def desired(config):
    return users_indexes_op.desired_users(config), config.indexes


# --------------------------------------------------------------------------- validation


def test_defaults_manage_only_root_pypi_project_list():
    config = config_for()
    assert config.users == {}
    assert config.indexes == {
        "root/pypi": {"state": "present", "type": "mirror", "config": {"mirror_no_project_list": True}},
    }


def test_root_pypi_default_is_overridable_and_completed():
    config = config_for(indexes={"root/pypi": {"mirror_no_project_list": False}})
    assert config.indexes["root/pypi"]["config"] == {"mirror_no_project_list": False}
    config = config_for(indexes={"root/pypi": {"mirror_url": "http://127.0.0.1:9/simple/"}})
    assert config.indexes["root/pypi"]["config"] == {
        "mirror_no_project_list": True, "mirror_url": "http://127.0.0.1:9/simple/",
    }
    config = config_for(indexes={"root/pypi": {"state": "absent"}})
    assert config.indexes == {"root/pypi": {"state": "absent", "volatile": False}}


def test_users_and_indexes_are_normalised_like_devpi():
    config = config_for(
        users={"eblume": EBLUME, "gone": {"state": "absent"}},
        indexes={
            "eblume/dev": {
                "bases": ["root/pypi"], "acl_upload": ["eblume", ":authenticated:"],
                "mirror_whitelist": ["Foo_Bar", "*"], "mirror_whitelist_inheritance": "UNION",
                "volatile": False, "title": "dev",
            },
            "root/upstream": {"type": "mirror", "mirror_url": "https://example.org/simple/",
                              "mirror_cache_expiry": 600},
        },
    )
    assert config.users["eblume"] == {
        "state": "present", "email": "eblume@example.org",
        "password": SecretRef("env", "EBLUME_PW"), "password_version": 0,
    }
    assert config.users["gone"]["state"] == "absent"
    assert config.indexes["eblume/dev"]["config"] == {
        "acl_upload": ["eblume", ":AUTHENTICATED:"], "bases": ["root/pypi"],
        "mirror_whitelist": ["foo-bar", "*"], "mirror_whitelist_inheritance": "union",
        "title": "dev", "volatile": False,
    }
    assert config.indexes["root/upstream"]["type"] == "mirror"


@pytest.mark.parametrize(
    ("users", "indexes", "expected"),
    [
        ({"eblume": EBLUME}, {"eblume/dev": {"bases": ["root/nope"]}}, "unknown base 'root/nope' (not declared)"),
        ({"eblume": EBLUME}, {"eblume/dev": {"bases": ["eblume/base"]}, "eblume/base": {"state": "absent"}},
         "unknown base 'eblume/base' (declared absent)"),
        ({"eblume": EBLUME}, {"eblume/dev": {"bases": ["root/pypi"]}, "root/pypi": {"state": "absent"}},
         "unknown base 'root/pypi' (declared absent)"),
        ({}, {"eblume/dev": DEV}, "its user 'eblume' is not in `devpi_users`"),
        ({"eblume": {"state": "absent"}}, {"eblume/dev": DEV}, "'eblume' is absent"),
        ({"eblume": EBLUME}, {"eblume/dev": {"type": "private"}}, "use 'stage' or 'mirror'"),
        ({"eblume": EBLUME}, {"eblume/dev": {"mirror_url": "https://x.org/simple/"}},
         "(mirror_url: mirror indexes only)"),
        ({"eblume": EBLUME}, {"eblume/m": {"type": "mirror", "bases": ["root/pypi"]}},
         "(bases: stage indexes only)"),
        ({"eblume": EBLUME}, {"eblume/dev": {"basis": ["root/pypi"]}}, "unknown key(s) basis"),
        ({"eblume": EBLUME}, {"eblume/dev ": DEV}, "malformed index name"),
        ({"eblume": EBLUME}, {"eblume": DEV}, "malformed index name 'eblume': use 'user/index'"),
        ({"eblume": EBLUME}, {"eblume/a": {"bases": ["eblume/b"]}, "eblume/b": {"bases": ["eblume/a"]}},
         "cycle of bases: eblume/a -> eblume/b -> eblume/a"),
        ({"eblume": EBLUME}, {"eblume/dev": {"state": "absent", "bases": []}}, "unknown key(s) bases"),
        ({"eblume": {"password": "env:PW", "passwd": "x"}}, None, "unknown key(s) passwd"),
        ({"ROOT/x": {}}, None, "malformed user name"),
    ],
)
def test_bad_specs_name_the_key_and_the_fix(users, indexes, expected):
    message = error_for(users, indexes)
    assert expected in message
    assert "`devpi_users`" in message or "`devpi_indexes`" in message


def test_user_password_literal_is_not_echoed():
    message = error_for({"eblume": {"password": "correct horse battery"}})
    assert "correct horse battery" not in message and "op://" in message


# --------------------------------------------------------------------------- the plan


def converged_state(config, markers=True):
    """What devpi (and the state file) hold after a converge of ``config``."""
    current = json.loads(json.dumps(AFTER_INIT))
    actions = plan(*desired(config), current, {})
    for action in actions:
        if action["op"] == "create_user":
            current["users"][action["name"]] = {"username": action["name"], **action["body"]}
        elif action["op"] == "create_index":
            body = dict(action["body"])
            current["indexes"][action["name"]] = {
                "volatile": True, "acl_upload": [action["name"].split("/")[0]], "bases": [], **body,
            }
        elif action["op"] == "patch_index":
            current["indexes"][action["name"]].update(action["body"])
    marks = {n: plan_script.password_marker(s) for n, s in desired(config)[0].items() if s["state"] == "present"}
    return current, (marks if markers else {})


def ops(actions):
    return [(a["op"], a["name"]) for a in actions]


def test_fresh_server_gets_everything_declared_in_dependency_order():
    config = config_for(
        {"eblume": EBLUME},
        {"eblume/dev": {"bases": ["eblume/base", "root/pypi"]}, "eblume/base": {"bases": ["root/pypi"]}},
    )
    actions = plan(*desired(config), None)
    assert ops(actions) == [
        ("create_user", "eblume"),
        ("create_index", "root/pypi"),
        ("create_index", "eblume/base"),
        ("create_index", "eblume/dev"),
    ]
    assert actions[0]["body"] == {"email": "eblume@example.org"}
    assert actions[0]["marker"] == {"password": "env:EBLUME_PW", "version": 0}
    assert actions[1]["body"] == {**ROOT_PYPI_INIT, "mirror_no_project_list": True}
    assert actions[3]["body"] == {"type": "stage", "bases": ["eblume/base", "root/pypi"]}


def test_devpi_init_leaves_no_root_pypi_and_the_plan_creates_it_with_the_flag():
    """devpi-init runs with --no-root-pypi: root/pypi is created by the plan, with
    devpi-init's own settings and mirror_no_project_list in the same request, so the
    mirror never exists (not even at devpi's first start) without the flag."""
    assert AFTER_INIT["indexes"] == {}
    assert ROOT_PYPI_INIT == {
        "type": "mirror", "volatile": False, "title": "PyPI",
        "mirror_url": "https://pypi.org/simple/", "mirror_web_url_fmt": "https://pypi.org/project/{name}/",
    }
    (action,) = plan(*desired(config_for()), None)
    assert action == {"op": "create_index", "name": "root/pypi", "body": {**ROOT_PYPI_INIT, "mirror_no_project_list": True}}
    assert describe(action).startswith("create index root/pypi (type='mirror', volatile=False, title='PyPI'")
    # declared settings win over devpi-init's
    declared = config_for(indexes={"root/pypi": {"mirror_url": "http://127.0.0.1:9/simple/", "mirror_no_project_list": False}})
    (action,) = plan(*desired(declared), None)
    assert action["body"] == {**ROOT_PYPI_INIT, "mirror_url": "http://127.0.0.1:9/simple/", "mirror_no_project_list": False}
    # a root/pypi declared as a stage index gets none of the mirror's settings
    stage = config_for(indexes={"root/pypi": {"type": "stage"}})
    (action,) = plan(*desired(stage), None)
    assert action["body"] == {"type": "stage"}
    # a server initialised with devpi-init's root/pypi (an older deploy) is patched, not recreated
    current = {"users": {"root": {"username": "root"}}, "indexes": {"root/pypi": dict(ROOT_PYPI_INIT)}}
    assert plan(*desired(config_for()), current) == [{
        "op": "patch_index", "name": "root/pypi", "body": {"mirror_no_project_list": True},
        "was": {"mirror_no_project_list": None},
    }]


def test_converged_server_plans_nothing():
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    current, markers = converged_state(config)
    assert plan(*desired(config), current, markers) == []


def test_undeclared_users_and_indexes_are_left_alone():
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    current, markers = converged_state(config)
    current["users"]["alice"] = {"username": "alice"}
    current["indexes"]["alice/dev"] = {"type": "stage", "volatile": True}
    current["indexes"]["eblume/old"] = {"type": "stage", "volatile": True}
    assert plan(*desired(config), current, markers) == []


def test_changed_bases_patch_only_bases():
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV, "root/extra": {}})
    current, markers = converged_state(config)
    changed = config_for({"eblume": EBLUME}, {"eblume/dev": {"bases": ["root/extra", "root/pypi"]}, "root/extra": {}})
    actions = plan(*desired(changed), current, markers)
    assert actions == [{
        "op": "patch_index", "name": "eblume/dev",
        "body": {"bases": ["root/extra", "root/pypi"]}, "was": {"bases": ["root/pypi"]},
    }]
    assert describe(actions[0]) == (
        "set index eblume/dev's bases to ['root/extra', 'root/pypi'] (was ['root/pypi'])"
    )


def test_changed_acl_upload_patches_only_acl_upload():
    config = config_for({"eblume": EBLUME}, {"eblume/dev": {**DEV, "acl_upload": ["eblume"]}})
    current, markers = converged_state(config)
    changed = config_for({"eblume": EBLUME}, {"eblume/dev": {**DEV, "acl_upload": ["eblume", "alice"]}})
    actions = plan(*desired(changed), current, markers)
    assert ops(actions) == [("patch_index", "eblume/dev")]
    assert actions[0]["body"] == {"acl_upload": ["eblume", "alice"]}


def test_root_pypi_settings_patch_the_mirror():
    config = config_for()
    current, markers = converged_state(config)
    changed = config_for(indexes={"root/pypi": {"mirror_url": "http://127.0.0.1:9/simple/", "mirror_cache_expiry": 60}})
    actions = plan(*desired(changed), current, markers)
    assert actions == [{
        "op": "patch_index", "name": "root/pypi",
        "body": {"mirror_cache_expiry": 60, "mirror_url": "http://127.0.0.1:9/simple/"},
        "was": {"mirror_cache_expiry": None, "mirror_url": "https://pypi.org/simple/"},
    }]


def test_email_change_patches_the_user_without_its_password():
    config = config_for({"eblume": EBLUME})
    current, markers = converged_state(config)
    changed = config_for({"eblume": {**EBLUME, "email": "new@example.org"}})
    actions = plan(*desired(changed), current, markers)
    assert ops(actions) == [("patch_user", "eblume")]
    assert actions[0]["body"] == {"email": "new@example.org"}


@pytest.mark.parametrize(
    "spec",
    [{**EBLUME, "password_version": 1}, {**EBLUME, "password": "env:OTHER_PW"}],
    ids=["version bumped", "reference changed"],
)
def test_password_is_set_when_its_marker_differs(spec):
    config = config_for({"eblume": EBLUME})
    current, markers = converged_state(config)
    actions = plan(*desired(config_for({"eblume": spec})), current, markers)
    assert ops(actions) == [("set_password", "eblume")]


def test_existing_user_without_marker_is_adopted_not_reset():
    config = config_for({"eblume": EBLUME})
    current, _ = converged_state(config)
    actions = plan(*desired(config), current, {})
    assert ops(actions) == [("record_password", "eblume")]
    assert "leave its password as it is" in describe(actions[0])


def test_user_without_password_is_managed_but_cannot_be_created():
    config = config_for({"eblume": {"email": "eblume@example.org"}})
    current, _ = converged_state(config_for({"eblume": EBLUME}))
    assert plan(*desired(config), current, {}) == []
    with pytest.raises(PlanError, match="gives it no password"):
        plan(*desired(config), None)


def test_type_change_is_refused():
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    current, markers = converged_state(config)
    current["indexes"]["eblume/dev"]["type"] = "mirror"
    with pytest.raises(PlanError, match="cannot change an index's type"):
        plan(*desired(config), current, markers)


def test_absent_index_is_deleted_once():
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV, "eblume/old": {}})
    current, markers = converged_state(config)
    gone = config_for({"eblume": EBLUME}, {"eblume/dev": DEV, "eblume/old": {"state": "absent"}})
    actions = plan(*desired(gone), current, markers)
    assert actions == [{"op": "delete_index", "name": "eblume/old", "make_volatile": False}]
    del current["indexes"]["eblume/old"]
    assert plan(*desired(gone), current, markers) == []


def test_absent_non_volatile_index_needs_volatile_true():
    config = config_for({"eblume": EBLUME}, {"eblume/rel": {"volatile": False}})
    current, markers = converged_state(config)
    with pytest.raises(PlanError, match="add 'volatile': True"):
        plan(*desired(config_for({"eblume": EBLUME}, {"eblume/rel": {"state": "absent"}})), current, markers)
    forced = config_for({"eblume": EBLUME}, {"eblume/rel": {"state": "absent", "volatile": True}})
    assert plan(*desired(forced), current, markers) == [
        {"op": "delete_index", "name": "eblume/rel", "make_volatile": True},
    ]


def test_absent_user_is_deleted_after_its_non_volatile_indexes():
    config = config_for({"eblume": EBLUME}, {"eblume/rel": {"volatile": False}, "eblume/tmp": {}})
    current, markers = converged_state(config)
    with pytest.raises(PlanError, match="owns non-volatile index"):
        plan(*desired(config_for({"eblume": {"state": "absent"}})), current, markers)
    gone = config_for(
        {"eblume": {"state": "absent"}},
        {"eblume/rel": {"state": "absent", "volatile": True}, "eblume/tmp": {"state": "absent"}},
    )
    assert ops(plan(*desired(gone), current, markers)) == [
        ("delete_index", "eblume/rel"), ("delete_index", "eblume/tmp"), ("delete_user", "eblume"),
    ]
    # the volatile index would go with the user anyway
    alone = config_for({"eblume": {"state": "absent"}}, {"eblume/rel": {"state": "absent", "volatile": True}})
    assert ops(plan(*desired(alone), current, markers)) == [("delete_index", "eblume/rel"), ("delete_user", "eblume")]


def test_absent_indexes_go_before_their_bases():
    config = config_for({"eblume": EBLUME}, {"eblume/a": {}, "eblume/b": {"bases": ["eblume/a"]}})
    current, markers = converged_state(config)
    gone = config_for({"eblume": EBLUME}, {"eblume/a": {"state": "absent"}, "eblume/b": {"state": "absent"}})
    assert ops(plan(*desired(gone), current, markers)) == [("delete_index", "eblume/b"), ("delete_index", "eblume/a")]


def test_split_userlist_is_devpis_get_root_answer():
    answer = {
        "root": {"username": "root", "indexes": {"pypi": {"type": "mirror"}}},
        "eblume": {"username": "eblume", "email": "e@x.org", "indexes": {"dev": {"type": "stage"}}},
    }
    assert split_userlist(answer) == {
        "users": {"eblume": {"username": "eblume", "email": "e@x.org"}, "root": {"username": "root"}},
        "indexes": {"eblume/dev": {"type": "stage"}, "root/pypi": {"type": "mirror"}},
    }


# --------------------------------------------------------------------------- a stand-in devpi


class FakeDevpi:
    """devpi's user/index REST semantics, as far as the deploy uses them."""

    ROOT_PASSWORD = "root pw"
    TOKEN = '["root", [], true].token'

    def __init__(self):
        # as an older deploy's devpi-init left it (with root/pypi); see fresh()
        self.data = json.loads(json.dumps({"root": {"username": "root", "indexes": {"pypi": ROOT_PYPI_INIT}}}))
        self.requests: list[tuple[str, str, dict | None, str | None]] = []
        self.fail_get = False
        self.fail_put_index = False
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                auth = self.headers.get("X-Devpi-Auth")
                fake.requests.append((self.command, self.path, body, auth))
                status, answer = fake.handle(self.command, self.path, body, auth)
                self._reply(status, answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        return Handler

    def handle(self, method, path, body, auth):
        parts = [p for p in path.split("/") if p]
        if method == "GET" and not parts:
            return (500, {}) if self.fail_get else (200, {"type": "list:userconfig", "result": self.data})
        if method == "POST" and parts == ["+login"]:
            if body == {"user": "root", "password": self.ROOT_PASSWORD}:
                return 200, {"type": "proxyauth", "result": {"password": self.TOKEN, "expiration": 36000}}
            return 401, {"message": "user 'root' could not be authenticated"}
        if auth != base64.b64encode(f"root:{self.TOKEN}".encode()).decode():
            return 403, {"message": "no permission"}
        if len(parts) == 1:
            user = parts[0]
            if method == "PUT":
                assert body["password"] is None and body["pwhash"].startswith("$argon2")
                self.data[user] = {"username": user, "indexes": {}, **{k: v for k, v in body.items() if k == "email"}}
                return 201, {}
            if method == "PATCH":
                self.data[user].update({k: v for k, v in body.items() if k != "pwhash"})
                return 200, {}
            if method == "DELETE":
                del self.data[user]
                return 200, {}
        user, index = parts
        indexes = self.data[user]["indexes"]
        if method == "PUT" and self.fail_put_index:
            return 500, {"message": "disk full"}
        if method == "PUT":
            indexes[index] = {"volatile": True, **body}
            return 200, {}
        if method == "PATCH":
            indexes[index].update(body)
            return 200, {}
        if method == "DELETE":
            if not indexes[index].get("volatile"):
                return 403, {"message": "non-volatile"}
            del indexes[index]
            return 201, {}
        return 405, {}

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def fake_devpi():
    fake = FakeDevpi()
    yield fake
    fake.stop()


def run_users_fact(url, state_file=None):
    command = UsersIndexes().command(url=url, state_file=state_file)
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return UsersIndexes().process(result.stdout.splitlines())


def test_fact_reads_devpi_and_the_state_file(fake_devpi, tmp_path):
    fake_devpi.data["eblume"] = {"username": "eblume", "email": "e@x.org", "indexes": {"dev": {"type": "stage"}}}
    state = tmp_path / "users.pyinfra.json"
    assert run_users_fact(fake_devpi.url) == {
        "users": {"eblume": {"username": "eblume", "email": "e@x.org"}, "root": {"username": "root"}},
        "indexes": {"eblume/dev": {"type": "stage"}, "root/pypi": ROOT_PYPI_INIT},
    }
    fact = run_users_fact(fake_devpi.url, str(state))
    assert fact["passwords"] == {}
    state.write_text(json.dumps({"users": {"eblume": {"password": "op://v/i/f", "version": 2}}}))
    assert run_users_fact(fake_devpi.url, str(state))["passwords"] == {"eblume": {"password": "op://v/i/f", "version": 2}}


def test_fact_is_none_when_nothing_answers(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run_users_fact(f"http://127.0.0.1:{port}", str(tmp_path / "state.json")) is None


def test_fact_fails_on_an_error_answer(fake_devpi):
    fake_devpi.fail_get = True
    with pytest.raises(FactProcessError, match="HTTP 500"):
        run_users_fact(fake_devpi.url)
    with pytest.raises(FactProcessError):
        UsersIndexes().process(["@api", "not json", "@end", "status=200"])
    with pytest.raises(FactProcessError):
        UsersIndexes().process(["garbage"])


# --------------------------------------------------------------------------- applying (on the controller)


class Secrets:
    """plan.Secrets that records what was asked."""

    def __init__(self, root=FakeDevpi.ROOT_PASSWORD, hashes=None):
        self.root, self.hashes, self.asked = root, hashes or {}, []

    def root_password(self):
        self.asked.append("root")
        return self.root

    def password_hash(self, user):
        self.asked.append(user)
        return self.hashes[user]


def request_to(fake):
    port = int(fake.url.rsplit(":", 1)[1])
    return tunnel.requester(lambda: socket.create_connection(("127.0.0.1", port), timeout=5), f"127.0.0.1:{port}", 5)


def apply_to(fake, config, markers, secrets, lines=None):
    return plan_script.apply(
        request_to(fake), users_indexes_op.desired_users(config), config.indexes, markers, secrets,
        timeout=5, out=(lines.append if lines is not None else (lambda line: None)),
    )


def test_apply_logs_in_once_and_makes_only_the_planned_calls(fake_devpi):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    pwhash = PasswordHasher().hash("eblume pw")
    secrets, lines, markers = Secrets(hashes={"eblume": pwhash}), [], {}
    apply_to(fake_devpi, config, markers, secrets, lines)
    calls = [(m, p) for m, p, _, _ in fake_devpi.requests]
    assert calls == [
        ("GET", "/"), ("POST", "/+login"), ("PUT", "/eblume"), ("PATCH", "/root/pypi"), ("PUT", "/eblume/dev"),
    ]
    assert fake_devpi.requests[2][2] == {"password": None, "pwhash": pwhash, "email": "eblume@example.org"}
    assert fake_devpi.data["eblume"]["indexes"]["dev"]["bases"] == ["root/pypi"]
    assert fake_devpi.data["root"]["indexes"]["pypi"]["mirror_no_project_list"] is True
    assert markers == {"eblume": {"password": "env:EBLUME_PW", "version": 0}}
    assert json.loads(plan_script.markers_file(markers)) == {"users": markers}
    assert any("create user eblume" in line for line in lines) and any("create index eblume/dev" in line for line in lines)
    assert not any(FakeDevpi.ROOT_PASSWORD in line or pwhash in line for line in lines)

    # again: nothing to do, no login, no secret asked
    fake_devpi.requests.clear()
    again = Secrets()
    apply_to(fake_devpi, config, markers, again)
    assert [(m, p) for m, p, _, _ in fake_devpi.requests] == [("GET", "/")]
    assert again.asked == []


def test_apply_creates_root_pypi_on_a_fresh_server_in_one_request(fake_devpi):
    del fake_devpi.data["root"]["indexes"]["pypi"]  # what devpi-init --no-root-pypi leaves
    config = config_for()
    apply_to(fake_devpi, config, {}, Secrets())
    writes = [(m, p, b) for m, p, b, _ in fake_devpi.requests if m not in ("GET", "POST")]
    assert writes == [("PUT", "/root/pypi", {**ROOT_PYPI_INIT, "mirror_no_project_list": True})]


def test_apply_adopts_without_login_or_secret(fake_devpi):
    fake_devpi.data["eblume"] = {"username": "eblume", "email": "eblume@example.org", "indexes": {}}
    fake_devpi.data["root"]["indexes"]["pypi"]["mirror_no_project_list"] = True
    config = config_for({"eblume": EBLUME})
    secrets, markers = Secrets(), {}
    apply_to(fake_devpi, config, markers, secrets)
    assert [(m, p) for m, p, _, _ in fake_devpi.requests] == [("GET", "/")]
    assert markers["eblume"] == {"password": "env:EBLUME_PW", "version": 0}
    assert secrets.asked == []


def test_apply_reports_a_wrong_root_password_without_echoing_it(fake_devpi):
    config = config_for({"eblume": EBLUME})
    markers = {}
    with pytest.raises(plan_script.ApplyError) as error:
        apply_to(fake_devpi, config, markers, Secrets(root="wrong pw", hashes={"eblume": "$argon2id$x"}))
    assert "devpi refused root's login (401" in str(error.value) and "`devpi_root_password`" in str(error.value)
    assert "wrong pw" not in str(error.value) and "$argon2id$x" not in str(error.value)
    assert markers == {}


def test_apply_records_what_was_done_before_a_failure(fake_devpi):
    config = config_for({"eblume": EBLUME, "alice": {"password": "env:ALICE_PW"}}, {"alice/dev": {}})
    fake_devpi.fail_put_index = True
    markers = {}
    with pytest.raises(plan_script.ApplyError, match="answered 500"):
        apply_to(fake_devpi, config, markers, Secrets(hashes={"eblume": "$argon2id$e", "alice": "$argon2id$a"}))
    assert set(markers) == {"alice", "eblume"}  # both users were created before the index failed


def test_tunnel_requester_speaks_json_and_never_raises_on_http_errors(fake_devpi):
    request = request_to(fake_devpi)
    status, answer = request("GET", "/")
    assert status == 200 and "root" in answer["result"]
    assert request("PUT", "/someone", {"password": "x"})[0] == 403  # no auth


# --------------------------------------------------------------------------- the operation


@dataclass
class ApiHost(PreparedHost):
    api: dict | None = None

    def get_fact(self, cls, **kwargs):
        if cls is UsersIndexes:
            self.asked.append((cls.__name__, kwargs))
            return self.api
        return super().get_fact(cls, **kwargs)

    def log(self, message, log_func=None):
        self.asked.append(("log", message))


def api_facts(config, markers=True):
    current, marks = converged_state(config, markers)
    return {**current, "passwords": marks}


@pytest.fixture
def resolved(monkeypatch):
    """Record every secret resolution instead of reading the environment."""
    calls = []

    def resolve(self, key):
        calls.append((str(self), key))
        return f"secret-of-{self.target}"

    monkeypatch.setattr(SecretRef, "resolve", resolve)
    return calls


def prepare(host, config, fresh=False):
    from pyinfra.context import ctx_host

    with ctx_host.use(host):
        return users_indexes_op.prepare(config, fresh=fresh)


def test_converged_host_yields_nothing_and_reads_no_secret(resolved):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=api_facts(config))
    prepare(host, config)
    assert run_op(users_indexes_op.users_indexes, host, config=config) == []
    assert run_op(users_indexes_op.users_indexes, host, executing=False, config=config) == []
    assert resolved == []
    assert host.noops == ["devpi holds the declared users and indexes"] * 2
    assert [a for a in host.asked if a[0] == "UsersIndexes"] == [
        ("UsersIndexes", {"url": "http://127.0.0.1:3141", "state_file": "/Users/alice/devpi/users.pyinfra.json"}),
    ]


def test_patch_reads_only_roots_password(resolved):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=api_facts(config))
    changed = config_for({"eblume": EBLUME}, {"eblume/dev": {**DEV, "acl_upload": ["alice"]}})
    prepare(host, changed)
    assert resolved == [("env:ROOT_PW", "devpi_root_password")]
    assert ("log", "Will set index eblume/dev's acl_upload to ['alice'] (was ['eblume'])") in host.asked


def test_adoption_reads_no_secret(resolved):
    config = config_for({"eblume": EBLUME})
    host = ApiHost(api=api_facts(config, markers=False))
    prepare(host, config)
    assert resolved == []
    (command,) = run_op(users_indexes_op.users_indexes, host, config=config)
    assert isinstance(command, FunctionCommand)


def test_fresh_host_reads_the_secrets_while_planning_and_sends_none_to_the_host(resolved):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=None)
    prepare(host, config, fresh=True)
    assert sorted(resolved) == [("env:EBLUME_PW", "devpi_users"), ("env:ROOT_PW", "devpi_root_password")]
    prepare(host, config, fresh=True)
    assert len(resolved) == 2  # once per run
    commands = run_op(users_indexes_op.users_indexes, host, config=config, fresh=True)
    # One call on the controller: no upload, no shell command, nothing for the host to hold.
    assert len(commands) == 1 and isinstance(commands[0], FunctionCommand)
    assert "secret-of" not in repr(commands[0])


def test_an_initialised_server_that_does_not_answer_is_compared_once_it_is_up(resolved):
    """A rerun that restores a stopped devpi plans nothing against a 'fresh' server
    and reads no secret while planning (issue: restoring needs no secret)."""
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=None)
    prepare(host, config, fresh=False)
    assert resolved == []
    logged = [m for kind, m in host.asked if kind == "log"]
    assert not any(m.startswith("Will ") for m in logged)
    assert any("compared once it is up" in m for m in logged)
    (command,) = run_op(users_indexes_op.users_indexes, host, config=config)
    assert isinstance(command, FunctionCommand)


def test_missing_root_password_is_refused_before_anything_runs(resolved):
    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, HOME)
    host = ApiHost(api=api_facts(config_for()))
    prepare(host, config)  # nothing to change: no password needed
    changed = build_config(
        {"devpi_outside_url": "https://pypi.example.org", "devpi_indexes": {"root/dev": {}}}, HOME,
    )
    with pytest.raises(PlanError, match="`devpi_root_password` is unset"):
        prepare(host, changed)


def test_plan_errors_surface_from_prepare(resolved):
    config = config_for({"eblume": EBLUME}, {"eblume/rel": {"volatile": False}})
    host = ApiHost(api=api_facts(config))
    gone = config_for({"eblume": EBLUME}, {"eblume/rel": {"state": "absent"}})
    with pytest.raises(PlanError, match="non-volatile"):
        prepare(host, gone)
    assert resolved == []


def test_indri_declares_what_the_operator_made_by_hand():
    namespace = {}
    exec(open("inventories/indri.py").read(), namespace)
    ((_, data),) = namespace["hosts"]
    config = build_config(data, "/Users/erichblume")
    assert config.users["eblume"]["state"] == "present"
    assert config.users["eblume"]["password"].scheme == "op"
    assert config.indexes["eblume/dev"] == {"state": "present", "type": "stage", "config": {"bases": ["root/pypi"]}}
    assert config.indexes["root/pypi"]["config"] == {"mirror_no_project_list": True}


def test_a_server_dir_this_run_initialises_is_planned_from_scratch(resolved):
    """devpi_home moved: the old devpi still answers on the port, but the new server
    dir starts as devpi-init leaves it, so everything declared is created."""
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=api_facts(config))  # the old server holds everything already
    prepare(host, config, fresh=True)
    logged = [m for kind, m in host.asked if kind == "log"]
    assert "Will create user eblume (email eblume@example.org) with its password" in logged
    assert any(m.startswith("Will create index eblume/dev") for m in logged)
    (command,) = run_op(users_indexes_op.users_indexes, host, config=config, fresh=True)
    assert isinstance(command, FunctionCommand)


def test_a_dry_run_reads_no_secret_and_says_which_it_will_read(resolved, monkeypatch):
    monkeypatch.setattr("sys.argv", ["pyinfra", "inventory.py", "deploys/devpi.py", "--dry", "--diff"])
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=None)
    prepare(host, config, fresh=True)
    assert resolved == []
    logged = [m for kind, m in host.asked if kind == "log"]
    assert "Will read devpi_root_password (env:ROOT_PW) when applied" in logged
    assert "Will read devpi_users['eblume']['password'] (env:EBLUME_PW) when applied" in logged

"""
devpi_users / devpi_indexes: validation, the plan (which changes for which
differences), the fact, the operation under prepared facts, and the script that
applies the plan on the target (against a small stand-in for devpi's REST API; the
real devpi is exercised end to end in tests/e2e/test_users_indexes.py).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from argon2 import PasswordHasher
from pyinfra.api.exceptions import FactProcessError

from facts.users_indexes import UsersIndexes
from operations import users_indexes as users_indexes_op
from pyinfra_devpi.config import ConfigError, build_config
from pyinfra_devpi.users_indexes import plan as plan_script
from pyinfra_devpi.users_indexes.plan import AFTER_INIT, ROOT_PYPI_INIT, PlanError, describe, plan, split_userlist
from pyinfra_devpi.secrets import SecretRef

from .prepared import PreparedHost, Upload, gnu_only_forms, run_op, shell_lines

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
    tmp_path.chmod(0o700)
    assert run_users_fact(fake_devpi.url, str(state))["state_dir_mode"] == "drwx------"
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


# --------------------------------------------------------------------------- the script on the target


def payload_for(config, url, state_file, secrets):
    return {
        "url": url, "timeout": 5, "state_file": str(state_file), "state_file_transient": f"{state_file}.pyinfra-new",
        "users": users_indexes_op.desired_users(config), "indexes": config.indexes, "secrets": secrets,
    }


def test_script_logs_in_once_and_applies_the_plan(fake_devpi, tmp_path):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    state = tmp_path / "users.pyinfra.json"
    pwhash = PasswordHasher().hash("eblume pw")
    out = io.StringIO()
    plan_script.apply(
        payload_for(config, fake_devpi.url, state, {"root_password": FakeDevpi.ROOT_PASSWORD, "hashes": {"eblume": pwhash}}),
        out=out,
    )
    calls = [(m, p) for m, p, _, _ in fake_devpi.requests]
    assert calls == [
        ("GET", "/"), ("POST", "/+login"), ("PUT", "/eblume"), ("PATCH", "/root/pypi"), ("PUT", "/eblume/dev"),
    ]
    assert fake_devpi.requests[2][2] == {"password": None, "pwhash": pwhash, "email": "eblume@example.org"}
    assert fake_devpi.data["eblume"]["indexes"]["dev"]["bases"] == ["root/pypi"]
    assert fake_devpi.data["root"]["indexes"]["pypi"]["mirror_no_project_list"] is True
    assert json.loads(state.read_text()) == {"users": {"eblume": {"password": "env:EBLUME_PW", "version": 0}}}
    assert state.stat().st_mode & 0o777 == 0o600
    printed = out.getvalue()
    assert "create user eblume" in printed and "create index eblume/dev" in printed
    assert FakeDevpi.ROOT_PASSWORD not in printed and pwhash not in printed

    # again: nothing to do, no login
    fake_devpi.requests.clear()
    plan_script.apply(payload_for(config, fake_devpi.url, state, None), out=io.StringIO())
    assert [(m, p) for m, p, _, _ in fake_devpi.requests] == [("GET", "/")]


def test_script_creates_root_pypi_on_a_fresh_server_in_one_request(fake_devpi, tmp_path):
    del fake_devpi.data["root"]["indexes"]["pypi"]  # what devpi-init --no-root-pypi leaves
    config = config_for()
    plan_script.apply(
        payload_for(config, fake_devpi.url, tmp_path / "s.json", {"root_password": FakeDevpi.ROOT_PASSWORD, "hashes": {}}),
        out=io.StringIO(),
    )
    writes = [(m, p, b) for m, p, b, _ in fake_devpi.requests if m not in ("GET", "POST")]
    assert writes == [("PUT", "/root/pypi", {**ROOT_PYPI_INIT, "mirror_no_project_list": True})]


def test_script_adopts_without_login(fake_devpi, tmp_path):
    fake_devpi.data["eblume"] = {"username": "eblume", "email": "eblume@example.org", "indexes": {}}
    fake_devpi.data["root"]["indexes"]["pypi"]["mirror_no_project_list"] = True
    config = config_for({"eblume": EBLUME})
    state = tmp_path / "users.pyinfra.json"
    plan_script.apply(payload_for(config, fake_devpi.url, state, None), out=io.StringIO())
    assert [(m, p) for m, p, _, _ in fake_devpi.requests] == [("GET", "/")]
    assert json.loads(state.read_text())["users"]["eblume"] == {"password": "env:EBLUME_PW", "version": 0}


def test_script_reports_a_wrong_root_password_without_echoing_it(fake_devpi, tmp_path, capsys, monkeypatch):
    config = config_for({"eblume": EBLUME})
    payload = payload_for(config, fake_devpi.url, tmp_path / "s.json", {"root_password": "wrong pw", "hashes": {"eblume": "$argon2id$x"}})
    monkeypatch.setenv(plan_script.PAYLOAD_ENV, json.dumps(payload))
    assert plan_script.main() == 1
    assert plan_script.PAYLOAD_ENV not in os.environ  # removed before anything else
    captured = capsys.readouterr()
    assert "devpi refused root's login (401" in captured.err and "`devpi_root_password`" in captured.err
    assert "wrong pw" not in captured.err + captured.out and "$argon2id$x" not in captured.err + captured.out
    assert not (tmp_path / "s.json").exists()


def test_script_refuses_a_change_it_has_no_secret_for(fake_devpi, tmp_path):
    config = config_for({"eblume": EBLUME})
    with pytest.raises(plan_script.ApplyError, match="rerun the deploy"):
        plan_script.apply(payload_for(config, fake_devpi.url, tmp_path / "s.json", None), out=io.StringIO())


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
    return {**current, "passwords": marks, "state_dir_mode": "drwx------"}


@pytest.fixture
def resolved(monkeypatch):
    """Record every secret resolution instead of reading the environment."""
    calls = []

    def resolve(self, key):
        calls.append((str(self), key))
        return f"secret-of-{self.target}"

    monkeypatch.setattr(SecretRef, "resolve", resolve)
    return calls


def prepare(host, config):
    from pyinfra.context import ctx_host

    with ctx_host.use(host):
        return users_indexes_op.prepare(config)


def test_converged_host_yields_nothing_and_reads_no_secret(resolved):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=api_facts(config))
    assert prepare(host, config) is None
    assert run_op(users_indexes_op.users_indexes, host, config=config) == []
    assert run_op(users_indexes_op.users_indexes, host, executing=False, config=config) == []
    assert resolved == []
    assert [a for a in host.asked if a[0] == "UsersIndexes"] == [
        ("UsersIndexes", {"url": "http://127.0.0.1:3141", "state_file": "/Users/alice/devpi/users.pyinfra.json"}),
    ]


def test_patch_reads_only_roots_password(resolved):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=api_facts(config))
    changed = config_for({"eblume": EBLUME}, {"eblume/dev": {**DEV, "acl_upload": ["alice"]}})
    secrets = prepare(host, changed)
    assert resolved == [("env:ROOT_PW", "devpi_root_password")]
    assert json.loads(secrets.unmask()) == {"root_password": "secret-of-ROOT_PW", "hashes": {}}
    assert str(secrets) == "*MASKED*"
    assert ("log", "Will set index eblume/dev's acl_upload to ['alice'] (was ['eblume'])") in host.asked


def test_adoption_reads_no_secret(resolved):
    config = config_for({"eblume": EBLUME})
    host = ApiHost(api=api_facts(config, markers=False))
    assert prepare(host, config) is None
    assert resolved == []
    commands = run_op(users_indexes_op.users_indexes, host, config=config, secrets=None)
    assert len(shell_lines(commands)) == 1  # the home is private already: no chmod
    payload = json.loads([c for c in commands if isinstance(c, Upload)][1].content)
    assert payload["secrets"] is None


def test_fresh_host_creates_all_with_hashed_passwords(resolved):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api=None)
    secrets = prepare(host, config)
    assert sorted(resolved) == [("env:EBLUME_PW", "devpi_users"), ("env:ROOT_PW", "devpi_root_password")]
    value = json.loads(secrets.unmask())
    assert value["root_password"] == "secret-of-ROOT_PW"
    assert PasswordHasher().verify(value["hashes"]["eblume"], "secret-of-EBLUME_PW")
    assert prepare(host, config).unmask() == secrets.unmask()  # once per run
    assert len(resolved) == 2

    planning = run_op(users_indexes_op.users_indexes, host, executing=False, config=config, secrets=secrets)
    commands = run_op(users_indexes_op.users_indexes, host, config=config, secrets=secrets)
    chmod, script, payload_upload, command = commands
    assert chmod == "chmod 700 /Users/alice/devpi"  # the home's mode is unknown yet
    assert isinstance(script, Upload) and script.dest == "/Users/alice/devpi/.pyinfra-devpi-api.py"
    assert script.content == users_indexes_op.SCRIPT_SOURCE
    assert isinstance(payload_upload, Upload) and payload_upload.dest == "/Users/alice/devpi/.pyinfra-devpi-api.json"
    payload = json.loads(payload_upload.content)
    assert payload["secrets"] == value
    assert payload["url"] == "http://127.0.0.1:3141"
    assert payload["users"]["eblume"]["password"] == "env:EBLUME_PW"
    # while planning nothing secret is even prepared for upload
    assert json.loads(planning[2].content)["secrets"] is None
    # one command: the payload goes into the environment, the file is removed first
    assert command.index('rm -f "$f"') < command.index("/Users/alice/devpi/venv/bin/python")
    assert "secret-of" not in command and "$argon2" not in command
    assert gnu_only_forms(command) == [] and gnu_only_forms(chmod) == []
    assert shell_lines(commands) == [chmod, command]


@pytest.mark.parametrize(("mode", "chmod"), [("drwx------", False), ("drwxr-xr-x", True), (None, True)])
def test_home_is_made_private_before_secrets_land_in_it(resolved, mode, chmod):
    config = config_for({"eblume": EBLUME}, {"eblume/dev": DEV})
    host = ApiHost(api={**api_facts(config), "state_dir_mode": mode})
    changed = config_for({"eblume": EBLUME}, {"eblume/dev": {**DEV, "volatile": False}})
    commands = run_op(users_indexes_op.users_indexes, host, config=changed, secrets=prepare(host, changed))
    assert len(shell_lines(commands)) == (2 if chmod else 1)
    assert isinstance(commands[1 if chmod else 0], Upload)


def test_missing_root_password_is_refused_before_anything_runs(resolved):
    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, HOME)
    host = ApiHost(api=api_facts(config_for()))
    assert prepare(host, config) is None  # nothing to change: no password needed
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

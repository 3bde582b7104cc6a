"""The health gate's script, run here under sh against a stand-in for devpi's /+api."""

from __future__ import annotations

import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from operations.devpi import wait_healthy_script

from .prepared import SHELLS, gnu_only_forms

OURS = "cd936c8ffd5e4f15a7189944f4680d29"


@pytest.fixture
def devpi_answering():
    """An HTTP server answering /+api with 200 and ``X-DEVPI-UUID: <uuid>``."""
    answer = {"uuid": OURS}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("X-DEVPI-UUID", answer["uuid"])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", answer
    server.shutdown()


def nodeinfo(tmp_path, uuid=OURS):
    path = tmp_path / ".nodeinfo"
    path.write_text('{\n  "role": "standalone",\n  "uuid": "%s"\n}' % uuid)
    return str(path)


def run(shell, script):
    return subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shell", SHELLS)
def test_healthy_when_our_server_dir_answers(shell, devpi_answering, tmp_path):
    url, _ = devpi_answering
    script = wait_healthy_script(url, 5, str(tmp_path / "err.log"), nodeinfo(tmp_path))
    assert gnu_only_forms(script) == []
    assert run(shell, script).returncode == 0


@pytest.mark.parametrize("shell", SHELLS)
def test_another_devpi_on_the_port_is_not_health(shell, devpi_answering, tmp_path):
    """A job under an old label (or from a previous devpi_home) still holds the port."""
    url, answer = devpi_answering
    answer["uuid"] = "0ther0ld"
    (tmp_path / "err.log").write_text("OSError: [Errno 98] Address already in use\n")
    result = run(shell, wait_healthy_script(url, 1, str(tmp_path / "err.log"), nodeinfo(tmp_path)))
    assert result.returncode == 1
    assert f"another devpi answers on {url}: its server dir is 0ther0ld, this one's is {OURS}" in result.stderr
    assert "Address already in use" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_nothing_listening_times_out_with_the_log_tail(shell, tmp_path):
    (tmp_path / "err.log").write_text("Traceback: boom\n")
    result = run(shell, wait_healthy_script("http://127.0.0.1:9", 1, str(tmp_path / "err.log"), nodeinfo(tmp_path)))
    assert result.returncode == 1
    assert "did not answer 200 on http://127.0.0.1:9/+api within 1s (last status: 000)" in result.stderr
    assert "Traceback: boom" in result.stderr

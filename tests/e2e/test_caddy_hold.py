"""While the deploy restarts devpi, Caddy holds the requests that come through it
(``devpi_caddy_upstream_wait``) instead of answering 502: clients, who reach devpi
through Caddy, see a slower answer, never a failed one."""

from __future__ import annotations

import base64
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from . import devpi_client as devpi
from .harness import Poller, build_wheel, http
from .stack import DeployedStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def host(shared_host) -> DeployedStack:
    """The deployed host (devpi behind Caddy) the module's tests share with other modules."""
    return shared_host.get()


@pytest.fixture
def stack(host, e2e_log_dirs) -> DeployedStack:
    """The module's host; each test starts with ``stack.reset(...)`` (the tests change
    devpi's config and Caddy's hold, and stop devpi)."""
    e2e_log_dirs.append(host.root)
    return host


def restart_under_polls(stack, **overrides) -> tuple[Poller, Poller]:
    """A deploy run that restarts devpi (``overrides`` change its config), with devpi
    polled directly and through Caddy."""
    before = stack.pid()
    with Poller(stack.devpi_url) as direct, Poller(stack.caddy_url) as proxied:
        time.sleep(0.3)
        stack.deploy(**overrides)
        after = stack.wait_healthy()
        time.sleep(0.3)
    assert after != before, "the run did not restart devpi"
    return direct, proxied


def test_requests_through_caddy_wait_out_a_restart(stack):
    stack.reset()

    # A config change: devpi restarts (kickstart -k); Caddy's block is unchanged.
    direct, proxied = restart_under_polls(stack, devpi_server_options={"threads": 12})
    assert direct.failed(), "devpi never stopped answering: the run did not restart it"
    assert proxied.failed() == [], proxied.failed()
    # Held, not lost: requests through Caddy were in flight while devpi's port was
    # closed, and were answered 200.
    first_down, last_down = direct.failed()[0][0], direct.failed()[-1][0]
    assert any(sent <= last_down and back >= first_down for sent, back in proxied.spans)

    # devpi_caddy_upstream_wait = 0: Caddy answers 502 at once while devpi is down. devpi
    # is stopped by hand here: a restart's down window is short enough that, on a loaded
    # machine, Caddy's own restart (its block changed) could cover all of it.
    stack.update(devpi_caddy_upstream_wait=0)
    stack.deploy()
    stack.wait_caddy()
    stack.stop_devpi()
    status, _, _ = http("GET", f"{stack.caddy_url}/+api", timeout=5)
    assert status == 502


def legacy_upload(index_url: str, auth: tuple[str, str], wheel) -> int:
    """One upload the way twine and ``uv publish`` send it (devpi's legacy upload API: a
    multipart POST), with no retry of its own; the HTTP status."""
    boundary = uuid.uuid4().hex
    fields = {":action": "file_upload", "name": wheel.name, "version": wheel.version,
              "protocol_version": "1", "filetype": "bdist_wheel", "pyversion": "py3"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{wheel.filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + wheel.path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(index_url, data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode(),
    })
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("wait", [None, 0])
def test_an_upload_through_caddy_waits_for_devpi_to_come_back(stack, launchd, tmp_path, wait):
    """A POST with a body (an upload) that reaches Caddy while devpi's port is closed is
    held and delivered whole once devpi is back; with devpi_caddy_upstream_wait = 0 it
    gets a 502."""
    data = {} if wait is None else {"devpi_caddy_upstream_wait": wait}
    stack.reset(**data)
    alice = ("alice", "alice-Pa55")
    devpi.ensure_user(stack.devpi_url, stack.root_auth, *alice)
    devpi.ensure_index(stack.devpi_url, stack.root_auth, "alice/dev", bases=[], acl_upload=["alice"])
    wheel = build_wheel(tmp_path / "dist", "held-upload", "1.0")

    stack.stop_devpi()
    answers: list[int] = []
    sender = threading.Thread(target=lambda: answers.append(
        legacy_upload(f"{stack.caddy_url}/alice/dev/", alice, wheel)))
    sender.start()
    time.sleep(1)  # the upload waits in Caddy meanwhile
    if wait == 0:
        sender.join(60)
        assert answers == [502]
        return
    assert answers == []
    launchd.bootstrap(stack.plist)
    sender.join(60)
    assert answers == [200]
    (url,) = devpi.simple_links(stack.devpi_url, "alice/dev", "held-upload").values()
    assert devpi.sha256(devpi.download(url)) == wheel.sha256

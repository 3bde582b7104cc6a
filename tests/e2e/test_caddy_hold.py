"""While the deploy restarts devpi, Caddy holds the requests that come through it
(``devpi_caddy_upstream_wait``) instead of answering 502: clients, who reach devpi
through Caddy, see a slower answer, never a failed one."""

from __future__ import annotations

import threading
import time

import pytest

from .harness import http
from .stack import start_stack

pytestmark = pytest.mark.e2e


class Poller:
    """``GET <url>/+api`` back to back in a thread: every answer's status (0: no
    connection at all) and when the request was sent."""

    def __init__(self, url: str):
        self.url = url
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                status = http("GET", self.url + "/+api", headers={"Accept": "application/json"}, timeout=30)[0]
            except OSError:
                status = 0
            self.answers.append((sent, status))
            self._stop.wait(0.02)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def failed(self) -> list[tuple[float, int]]:
        return [(sent, status) for sent, status in self.answers if status != 200]


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


def test_requests_through_caddy_wait_out_a_restart(sshd, launchd, upstream, tmp_path):
    with start_stack(sshd, launchd, upstream, tmp_path / "stack", "hold") as stack:
        stack.wait_caddy()

        # A config change: devpi restarts (kickstart -k); Caddy's block is unchanged.
        direct, proxied = restart_under_polls(stack, devpi_server_options={"threads": 12})
        assert direct.failed(), "devpi never stopped answering: the run did not restart it"
        assert proxied.failed() == [], proxied.failed()
        # Held, not lost: some answers through Caddy came while devpi's port was closed.
        first_down, last_down = direct.failed()[0][0], direct.failed()[-1][0]
        assert any(first_down <= sent <= last_down for sent, _ in proxied.answers)

        # devpi_caddy_upstream_wait = 0: Caddy answers 502 while devpi is down. (The block
        # changes, so Caddy restarts first: its own restart's refused connections are
        # not what is asserted.)
        stack.update(devpi_caddy_upstream_wait=0)
        direct, proxied = restart_under_polls(stack, devpi_server_options={"threads": 13})
        assert direct.failed()
        assert 502 in {status for _, status in proxied.failed()}, proxied.failed()

"""While the deploy restarts devpi, Caddy holds the requests that come through it
(``devpi_caddy_upstream_wait``) instead of answering 502: clients, who reach devpi
through Caddy, see a slower answer, never a failed one."""

from __future__ import annotations

import time

import pytest

from .harness import Poller
from .stack import start_stack

pytestmark = pytest.mark.e2e


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
        # Held, not lost: requests through Caddy were in flight while devpi's port was
        # closed, and were answered 200.
        first_down, last_down = direct.failed()[0][0], direct.failed()[-1][0]
        assert any(sent <= last_down and back >= first_down for sent, back in proxied.spans)

        # devpi_caddy_upstream_wait = 0: Caddy answers 502 while devpi is down. (The block
        # changes, so Caddy restarts first: its own restart's refused connections are
        # not what is asserted.)
        stack.update(devpi_caddy_upstream_wait=0)
        direct, proxied = restart_under_polls(stack, devpi_server_options={"threads": 13})
        assert direct.failed()
        assert 502 in {status for _, status in proxied.failed()}, proxied.failed()

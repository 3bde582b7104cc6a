"""Loopback ports, the one HTTP helper, and a poller of devpi's ``/+api``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .common import LOOPBACK, HarnessError, wait_until

#: No proxy handler: everything the harness talks to is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


#: Ports the harness hands out: below Linux's ephemeral range, where bind(0) picks (the
#: deploy's spare ports for a check or a trial, every client's own end), and one slice
#: for each pytest-xdist worker. A port handed out is used seconds later (after a venv
#: build, say): from the ephemeral range, another worker's devpi could have taken it
#: by then, and answered for this one (seen: "another devpi answers on ...").
HARNESS_PORTS = (12000, 32000)
_handed_out: set[int] = set()


def _worker_slice() -> range:
    low, high = HARNESS_PORTS
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, ephemeral_low)
    except (OSError, ValueError, IndexError):
        pass
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    worker = int((os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw") or 0)
    size = (high - low) // max(workers, 1)
    return range(low + worker * size, low + (worker + 1) * size)


def free_port() -> int:
    """A free loopback TCP port from this worker's own slice, never handed out before in
    this process (the caller binds it soon after)."""
    for port in _worker_slice():
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise HarnessError(f"no free port left in {_worker_slice()}")


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int, *, timeout: float = 20.0, proc: subprocess.Popen | None = None, what: str = "service"
) -> None:
    """Wait until something listens on ``port``; fail at once if ``proc`` exits first."""

    def listening() -> bool:
        if proc is not None and proc.poll() is not None:
            raise HarnessError(f"{what} exited with {proc.returncode} before port {port} opened")
        return port_open(port)

    wait_until(listening, timeout, 0.05, f"{what} to listen on port {port}")


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket LISTENing on ``port`` (Linux /proc/net/tcp{,6}),
    e.g. ``{"127.0.0.1"}``; ``0.0.0.0`` / ``::`` mean every interface."""
    found: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) != port or fields[3] != "0A":
                continue
            raw = bytes.fromhex(address)
            if v6:
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, raw))
            else:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
    return found


def http(
    method: str, url: str, *, data: Any = None, headers: dict | None = None, timeout: float = 60
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request without any proxy: ``(status, headers, body)``. ``data`` (if not
    None) is sent as JSON. Never raises on an HTTP error status; a connection that fails
    raises ``OSError`` (``urllib.error.URLError``)."""
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, method=method, data=body, headers=dict(headers or {}))
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def http_ok(url: str, *, timeout: float = 2) -> bool:
    """``GET url`` answers 200 (False too when nothing answers at all)."""
    try:
        return http("GET", url, timeout=timeout)[0] == 200
    except OSError:
        return False


class Poller:
    """``GET <url>/+api`` back to back (every 20 ms) in a thread while a test changes the
    host: every answer's status (0: no connection at all), when it was sent and when it
    came back (``time.monotonic()``)."""

    def __init__(self, url: str):
        self.url = url
        self.answers: list[tuple[float, int]] = []
        self.spans: list[tuple[float, float]] = []
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
            self.spans.append((sent, time.monotonic()))
            self._stop.wait(0.02)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def failed(self) -> list[tuple[float, int]]:
        return [(sent, status) for sent, status in self.answers if status != 200]

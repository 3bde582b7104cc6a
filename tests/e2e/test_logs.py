"""devpi's logs stay within the configured bound under a flood of requests.

devpi logs every request. launchd holds the stdout/stderr files open, so renaming them
rotates nothing; the deploy hands devpi a logging config (``--logger-cfg``) whose
``RotatingFileHandler`` keeps ``<label>.log`` and its numbered copies within
``devpi_log_max_bytes`` x (1 + ``devpi_log_backups``), while launchd's files keep only
what bypasses logging.
"""

from __future__ import annotations

import http.client
import threading

import pytest

from .stack import DeployedStack

pytestmark = pytest.mark.e2e

MAX_BYTES = 16 * 1024
BACKUPS = 2
# ~200 bytes a request: ~0.8 MB of log, 16 times what the three files may keep
REQUESTS = 4_000
CLIENTS = 8


@pytest.fixture(scope="module")
def stack(shared_host) -> DeployedStack:
    return shared_host.get(devpi_log_max_bytes=MAX_BYTES, devpi_log_backups=BACKUPS)


@pytest.fixture(autouse=True)
def _show_stack_logs(request, e2e_log_dirs):
    if "stack" in request.fixturenames:
        e2e_log_dirs.append(request.getfixturevalue("stack").root)


def flood(port: int, requests: int, clients: int) -> list[int]:
    """``requests`` GETs of /+api from ``clients`` threads on keep-alive connections;
    returns every status."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(count):
            connection.request("GET", "/+api", headers={"Accept": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(response.status)
        connection.close()
        with lock:
            statuses.extend(mine)

    threads = [threading.Thread(target=client, args=(requests // clients,)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def log_files(stack: DeployedStack) -> dict[str, int]:
    logs = stack.home / "Library/Logs"
    return {p.name: p.stat().st_size for p in sorted(logs.iterdir()) if p.name.startswith(stack.label)}


def test_a_request_flood_keeps_devpis_logs_within_the_bound(stack):
    pid = stack.wait_healthy()
    statuses = flood(stack.devpi_port, REQUESTS, CLIENTS)
    assert len(statuses) == REQUESTS and set(statuses) == {200}
    assert stack.pid() == pid  # the same devpi served them all

    sizes = log_files(stack)
    log = f"{stack.label}.log"
    # devpi's log rotated (the flood wrote many times the bound), and kept only its copies
    assert set(sizes) == {log, f"{log}.1", f"{log}.2", f"{stack.label}.out.log", f"{stack.label}.err.log"}, sizes
    assert all(sizes[name] <= MAX_BYTES for name in (log, f"{log}.1", f"{log}.2")), sizes
    # every request is logged there: the newest ones are in the live file
    assert "GET /+api" in (stack.home / "Library/Logs" / log).read_text()
    # launchd's files (held open by launchd) got none of it
    assert sizes[f"{stack.label}.out.log"] + sizes[f"{stack.label}.err.log"] < 16 * 1024, sizes


def test_a_new_bound_restarts_devpi_and_a_rerun_changes_nothing(stack):
    pid = stack.wait_healthy()
    stack.update(devpi_log_max_bytes=2 * MAX_BYTES)
    changed = stack.deploy()
    assert changed.grand_total()[0] >= 1, changed.describe()
    new_pid = stack.wait_healthy()
    assert new_pid != pid  # restarted with the new config
    assert str(2 * MAX_BYTES) in (stack.devpi_home / "devpi-logging.json").read_text()
    flood(stack.devpi_port, 1_000, 4)
    sizes = log_files(stack)
    assert max(size for name, size in sizes.items() if ".log." in name or name.endswith(".devpi.log")) <= 2 * MAX_BYTES

    rerun = stack.deploy()
    assert rerun.grand_total()[0] == 0, rerun.describe()
    assert stack.pid() == new_pid

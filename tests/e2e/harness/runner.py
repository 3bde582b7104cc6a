"""The real pyinfra CLI over the private sshd: its inventories (running pyinfra and reading
what a run executed is ``tests/pyinfra_cli.py``, shared with tests/mac)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Running pyinfra and reading its output is shared with tests/mac (no sshd there).
from tests.pyinfra_cli import (  # noqa: F401 - re-exported through the harness
    DEBUG_COMMAND_RE,
    PyinfraResult,
    count_remote_commands,
    pyinfra_env,
    remote_commands,
    render_inventory,
    run_pyinfra,
)

from .common import LOOPBACK
from .sshd import SshServer


def write_inventory(path: Path | str, host_data: dict[str, Any] | None = None, *, sshd: SshServer) -> Path:
    """Write a pyinfra inventory module with one host (``127.0.0.1``, in group
    ``e2e_hosts``) reached through ``sshd``.

    The host data is the SSH connector data (port, user, key, known_hosts, strict checking,
    an empty ssh_config) merged with ``host_data`` (which wins, so a test can break the
    connection on purpose). Values must be Python literals; ``Path`` is turned into ``str``.
    """
    return render_inventory(path, "e2e_hosts", LOOPBACK, {**sshd.connector_data(), **(host_data or {})},
                            made_by="tests/e2e/harness/runner.py:write_inventory")

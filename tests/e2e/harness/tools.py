"""The external tools the harness runs, found on the controller (outside the project venv)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .common import (
    CADDY_BIN,
    PYINFRA_BIN,
    SSH_BIN,
    SSH_KEYGEN_BIN,
    SSHD_BIN,
    VENV_BIN,
    fail_missing,
    require_executable,
)


def _venv_bin_dirs() -> set[str]:
    dirs = {str(VENV_BIN), str(Path(sys.prefix) / "bin")}
    if os.environ.get("VIRTUAL_ENV"):
        dirs.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    return {os.path.realpath(d) for d in dirs}


def path_without_venv(path: str | None = None) -> str:
    """The controller's PATH minus the project venv (``uv run`` prepends it)."""
    venv_dirs = _venv_bin_dirs()
    entries = (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
    return os.pathsep.join(e for e in entries if e and os.path.realpath(e) not in venv_dirs)


def resolve_controller_tool(name: str) -> Path | None:
    """Find ``name`` on the controller's PATH (outside the venv), through version-manager
    shims: a pyenv/asdf shim is a script that only works with the manager's environment,
    so the target would get the shim's directory, not the tool's."""
    found = shutil.which(name, path=path_without_venv())
    if not found:
        return None
    candidate = Path(found)
    if candidate.parent.name == "shims":
        for manager in ("pyenv", "asdf"):
            exe = shutil.which(manager)
            if not exe:
                continue
            proc = subprocess.run(
                [exe, "which", name], capture_output=True, text=True, check=False
            )
            real = proc.stdout.strip().splitlines()
            if proc.returncode == 0 and real and os.access(real[-1], os.X_OK):
                return Path(real[-1])
    return Path(os.path.realpath(candidate))


def controller_python() -> Path:
    """The interpreter the controller runs on, outside the venv (the venv's base)."""
    for candidate in (
        Path(sys.base_prefix) / "bin" / "python3",
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = resolve_controller_tool("python3")
    if found is None:
        fail_missing("python3")
    return found


@dataclasses.dataclass(frozen=True)
class ToolPaths:
    sshd: Path
    ssh: Path
    ssh_keygen: Path
    uv: Path
    python3: Path
    caddy: Path
    pyinfra: Path


def find_tools() -> ToolPaths:
    """Every external tool the harness needs; fails (with the .ci/run hint) if one is missing."""
    uv = resolve_controller_tool("uv")
    if uv is None:
        fail_missing("uv", "not on the controller's PATH")
    return ToolPaths(
        sshd=require_executable(SSHD_BIN, "sshd (Debian's openssh-server)"),
        ssh=require_executable(SSH_BIN, "ssh (openssh-client)"),
        ssh_keygen=require_executable(SSH_KEYGEN_BIN, "ssh-keygen (openssh-client)"),
        uv=uv,
        python3=controller_python(),
        caddy=require_executable(CADDY_BIN, "caddy (caddy-bin in the dev group)"),
        pyinfra=require_executable(PYINFRA_BIN, "pyinfra (project venv)"),
    )


def uv_cache_dir(uv: Path) -> str | None:
    if os.environ.get("UV_CACHE_DIR"):
        return os.environ["UV_CACHE_DIR"]
    proc = subprocess.run([str(uv), "cache", "dir"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None

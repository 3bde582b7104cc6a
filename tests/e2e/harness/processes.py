"""Processes the harness started: stopping them (by PID, never by name) and measuring them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from .common import HarnessError, wait_until


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen:
    """Start a daemon in its own session, stdout and stderr appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False if no process has that pid."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def alive(pid: int) -> bool:
    return _signal(pid, 0)


def wait_gone(pid: int, timeout: float, interval: float = 0.05) -> None:
    """Poll until no process has ``pid``; HarnessError if one still does after ``timeout``."""
    wait_until(lambda: not alive(pid), timeout, interval, f"pid {pid} to exit")


def stop_process(proc: subprocess.Popen | None, pid: int | None = None, timeout: float = 10.0) -> None:
    """SIGTERM then SIGKILL one process we started (never by name)."""
    if proc is not None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        return
    if pid and _signal(pid, signal.SIGTERM):
        try:
            wait_gone(pid, timeout)
        except HarnessError:
            _signal(pid, signal.SIGKILL)


def proc_memory(pid: int) -> dict[str, int | None]:
    """``rss_kb`` and ``peak_rss_kb`` (Linux VmHWM: the high-water mark since the process
    started; ``None`` where the OS does not keep one, e.g. macOS)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        values = dict(re.findall(r"^(\w+):\s+(\d+) kB$", status.read_text(), re.M))
        return {"rss_kb": int(values["VmRSS"]), "peak_rss_kb": int(values["VmHWM"])}
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True)
    return {"rss_kb": int(out.stdout.strip()), "peak_rss_kb": None}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    out = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True, text=True, check=True)
    parts = [float(p) for p in re.split(r"[:-]", out.stdout.strip())]
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def cmdline(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/cmdline")
    if path.exists():
        return [a for a in path.read_bytes().decode(errors="replace").split("\0") if a]
    out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=True)
    return out.stdout.split()

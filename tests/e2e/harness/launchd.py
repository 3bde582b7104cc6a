"""The ``tests/fakes/launchctl`` double, driven through the ssh session, and Caddy running
as a LaunchAgent under it."""

from __future__ import annotations

import dataclasses
import os
import plistlib
import pwd
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from .common import CADDY_BIN, LAUNCHCTL_DOUBLE, LOOPBACK, HarnessError, require_executable, wait_until
from .logs import tail
from .network import http
from .sshd import SshServer


@dataclasses.dataclass
class LaunchdDouble:
    """``tests/fakes/launchctl`` with its state dir; calls go through the real ssh session
    (same PATH and LAUNCHCTL_DOUBLE_STATE the deploy sees) unless ``local=True``."""

    state_dir: Path
    sshd: SshServer

    @property
    def domain(self) -> str:
        """The domain of the SSH user's LaunchAgents in this session: ``gui/<uid>`` when
        they own /dev/console as the session sees it, else ``user/<uid>`` (the rule the
        deploy applies; as root on Linux /dev/console is root's, so ``gui/0``, unless the
        session is a headless Mac's, ``start_sshd(console_owner=...)``)."""
        return f"{'user' if self.sshd.headless else 'gui'}/{self.sshd.uid}"

    def target(self, label: str) -> str:
        return f"{self.domain}/{label}"

    def require(self) -> Path:
        return require_executable(LAUNCHCTL_DOUBLE, "the launchctl double tests/fakes/launchctl")

    def run(self, *args: str, check: bool = True, local: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        self.require()
        if local:
            proc = _run_locally([str(LAUNCHCTL_DOUBLE), *args], self.sshd.env, timeout)
        else:
            proc = self.sshd.run(shlex.join(["launchctl", *args]), check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise HarnessError(
                f"launchctl {shlex.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def print(self, label: str, check: bool = False) -> subprocess.CompletedProcess:
        return self.run("print", self.target(label), check=check)

    def pid(self, label: str) -> int | None:
        proc = self.print(label)
        match = re.search(r"^\s*pid = (\d+)", proc.stdout, re.M)
        return int(match.group(1)) if proc.returncode == 0 and match else None

    def bootstrap(self, plist: Path) -> subprocess.CompletedProcess:
        """``launchctl bootstrap``; error 5 right after a bootout of the same label (launchd
        still tearing the old job down: the double's teardown window) is retried for a
        few seconds, as the deploy's own bootstrap does."""
        deadline = time.monotonic() + 5
        while True:
            proc = self.run("bootstrap", self.domain, str(plist), check=False)
            if proc.returncode != 5 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if proc.returncode != 0:
            raise HarnessError(f"launchctl bootstrap {self.domain} {plist} exited {proc.returncode}\n"
                               f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def bootout(self, label: str) -> subprocess.CompletedProcess:
        return self.run("bootout", self.target(label), check=False)

    def kickstart(self, label: str, kill: bool = True) -> subprocess.CompletedProcess:
        return self.run("kickstart", *(["-k"] if kill else []), self.target(label))


def launchd_shutdown(session_env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess | None:
    """``launchctl _double-shutdown`` for the session's state dir, run locally (not over ssh)
    with the session environment, so it works even when sshd is gone."""
    if not LAUNCHCTL_DOUBLE.exists():
        return None
    state = session_env.get("LAUNCHCTL_DOUBLE_STATE")
    if state and not (Path(state) / "jobs").is_dir():
        return None  # nothing was ever bootstrapped (documented state layout: jobs/<domain>/<label>)
    # via the interpreter: teardown must work even if the exec bit went missing
    return _run_locally([sys.executable, str(LAUNCHCTL_DOUBLE), "_double-shutdown"], session_env, timeout)


def _run_locally(argv: list[str], session_env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """The double run here, not over ssh, with the ssh session's environment."""
    user = pwd.getpwuid(os.getuid())
    return subprocess.run(
        argv,
        env={"USER": user.pw_name, "LOGNAME": user.pw_name, **session_env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


@dataclasses.dataclass
class CaddyJob:
    label: str
    port: int
    caddyfile: Path
    site_file: Path
    plist: Path
    out_log: Path
    err_log: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


CADDY_PLACEHOLDER_BODY = "e2e caddy placeholder"


def write_caddyfile(caddyfile: Path, site_file: Path, port: int) -> None:
    """Global options for a hermetic, loopback-only Caddy (admin API off, no automatic
    HTTPS, no autosave, ``default_bind 127.0.0.1``) plus ``import <site_file>``. If ``site_file`` does
    not exist yet, a placeholder site answering on ``http://127.0.0.1:<port>`` is written."""
    if not site_file.exists():
        site_file.parent.mkdir(parents=True, exist_ok=True)
        site_file.write_text(
            f"http://{LOOPBACK}:{port} {{\n\trespond \"{CADDY_PLACEHOLDER_BODY}\" 200\n}}\n"
        )
    caddyfile.parent.mkdir(parents=True, exist_ok=True)
    caddyfile.write_text(
        # default_bind: a site address like http://127.0.0.1:PORT only sets the Host
        # matcher; without it Caddy listens on every interface (":PORT").
        "{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n"
        f"\tdefault_bind {LOOPBACK}\n}}\n\nimport {site_file}\n"
    )


def start_caddy_job(
    launchd: LaunchdDouble,
    *,
    caddyfile: Path,
    port: int,
    site_file: Path,
    work_dir: Path,
    label: str = "test.caddy",
    timeout: float = 30.0,
    expect_body: str | None = None,
) -> CaddyJob:
    """Run Caddy as a LaunchAgent under the launchctl double and wait until it answers.

    Writes the Caddyfile (``write_caddyfile``), a plist for ``label`` (KeepAlive, logs and
    XDG dirs under ``work_dir``), validates the config with ``caddy validate`` and
    bootstraps it through the ssh session. ``expect_body``: a substring the response to
    ``GET /`` must contain (default: the placeholder body, if the placeholder was written).
    """
    launchd.require()
    placeholder = not site_file.exists()
    write_caddyfile(caddyfile, site_file, port)
    work_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "config", "logs"):
        (work_dir / sub).mkdir(exist_ok=True)
    validate = subprocess.run(
        [str(CADDY_BIN), "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_DATA_HOME": str(work_dir / "data"), "XDG_CONFIG_HOME": str(work_dir / "config")},
    )
    if validate.returncode != 0:
        raise HarnessError(f"caddy validate failed for {caddyfile}:\n{validate.stderr}")
    job = CaddyJob(
        label=label,
        port=port,
        caddyfile=caddyfile,
        site_file=site_file,
        plist=work_dir / f"{label}.plist",
        out_log=work_dir / "logs" / f"{label}.out.log",
        err_log=work_dir / "logs" / f"{label}.err.log",
    )
    with job.plist.open("wb") as handle:
        plistlib.dump(
            {
                "Label": label,
                "ProgramArguments": [
                    str(CADDY_BIN), "run", "--config", str(caddyfile), "--adapter", "caddyfile",
                ],
                "EnvironmentVariables": {
                    "HOME": str(work_dir),
                    "XDG_DATA_HOME": str(work_dir / "data"),
                    "XDG_CONFIG_HOME": str(work_dir / "config"),
                },
                "WorkingDirectory": str(work_dir),
                "RunAtLoad": True,
                "KeepAlive": True,
                "ThrottleInterval": 1,
                "ProcessType": "Background",
                "LimitLoadToSessionType": ["Aqua", "Background"],
                "StandardOutPath": str(job.out_log),
                "StandardErrorPath": str(job.err_log),
            },
            handle,
        )
    launchd.bootstrap(job.plist)
    if expect_body is None and placeholder:
        expect_body = CADDY_PLACEHOLDER_BODY
    last = "no answer"

    def serving() -> bool:
        nonlocal last
        try:
            status, _, body = http("GET", job.url + "/", timeout=2)
        except OSError as error:
            last = repr(error)
            return False
        last = f"{status} {body[:200]!r}"
        return status < 500 and (expect_body is None or expect_body in body.decode(errors="replace"))

    def detail() -> str:
        printed = launchd.print(label)
        return (
            f"last answer: {last}\nlaunchctl print:\n{printed.stdout}{printed.stderr}\n"
            f"--- {job.err_log} ---\n{tail(job.err_log)}"
        )

    wait_until(serving, timeout, 0.1, f"caddy job {label} to serve on {job.url}", detail=detail)
    return job

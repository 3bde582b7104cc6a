"""End-to-end harness: the real deploy, over a real sshd on loopback, on Linux.

CI has no macOS, so the tests build a small "Mac" out of parts (see DESIGN.md, Testing):

``sshd`` (session)
    A private ``/usr/sbin/sshd`` on 127.0.0.1:<free port>: own ed25519 host key, a fresh
    client key, key-only auth, ``known_hosts`` pre-filled (pyinfra checks host keys
    strictly). Sessions are a Mac's (``harness/mac.py``): sshd runs in a private mount
    namespace where ``/bin/launchctl`` is the launchctl double and
    ``/opt/homebrew/bin/caddy`` is Caddy (overlays nothing else on the machine sees; it
    needs root), and uv is in the sandbox HOME's ``~/.local/bin``. Every session gets,
    via ``SetEnv``: ``PATH`` = ``/usr/bin:/bin:/usr/sbin:/sbin`` exactly, as macOS gives
    ``ssh host command``; ``LAUNCHCTL_DOUBLE_STATE``; a sandbox ``HOME``; ``SHLVL=1``
    (stops bash from sourcing root's ``~/.bashrc``); and the controller's TLS trust / uv
    index variables, since uv and pip on the target reach the registry only through them. ``sshd.run(cmd)`` runs a command through the real ssh client;
    ``sshd.mark()`` / ``sshd.commands_since(mark)`` count exec requests server side.

``write_inventory(path, host_data=None) -> Path``
    Writes a pyinfra inventory (``e2e_hosts = [("127.0.0.1", {...})]``) holding the SSH
    connector data plus ``host_data`` (Python literals; ``Path`` allowed).

``run_pyinfra(inventory, *args, cwd=REPO, env_extra=None, check=True, timeout=900)``
    Runs ``.venv/bin/pyinfra [-y] INVENTORY *args`` (``-y`` unless ``--dry``) with
    ``tests/e2e/fakes`` first on PATH; returns a ``PyinfraResult`` (``returncode``,
    ``stdout``, ``stderr``, ``output``, ``lines``, ``json()``, ``grand_total()``).
    ``count_remote_commands(result.output)`` counts commands of a ``--debug`` run.

``fake_op`` (function)
    The ``op`` double (``tests/e2e/fakes/op``): pass ``env_extra=fake_op.env``;
    ``fake_op.password``, ``fake_op.calls()``, ``fake_op.fail()``.

``upstream`` (session)
    A static PEP 503 index on loopback (``python3 -m http.server``) with self-built wheels
    ``hermetic-alpha`` 1.0/1.1 and ``hermetic-beta`` 2.0 (requires hermetic-alpha):
    ``upstream.url`` is the ``/simple/`` URL, ``upstream.wheel(name, version).sha256``,
    ``upstream.add_project(name, version, requires)`` publishes more.

``headless_sshd`` / ``headless_launchd`` (session, started on first use)
    A second Mac, headless (a Mac mini nobody is logged in to): its sshd's namespace
    bind-mounts a file of uid 65534's over ``/dev/console``, so the SSH user (root) is
    not the console owner: no ``gui/0``, the deploy's agent domain is ``user/0``. Its own
    launchd state dir and HOME (``headless_session_env``), shut down like the first.

``launchd`` (session) / ``caddy_job`` (function factory)
    ``tests/fakes/launchctl`` driven through the ssh session (``launchd.print(label)``,
    ``.pid(label)``, ``.bootstrap(plist)``, ...). ``caddy_job(site_file, port=None)`` runs
    ``.venv/bin/caddy`` as LaunchAgent ``test.caddy`` importing ``site_file`` (a
    placeholder site is written if it does not exist yet) and boots it out afterwards.

A deployed host (devpi + Caddy run by the launchctl double, converged by the real
deploy) is built by ``stack.start_stack(sshd, launchd, upstream, root, name, ...)``
(see ``stack.py``), in a module-scoped fixture of each module that needs one.

``shared_host`` (session)
    One deployed host that the modules needing only "a deployed host" share (caddy hold
    and restart, drift and lock, logs, probe, retire, rollback, the source host of the
    server dir checks, status, uninstall, in that order; uninstall purges it last):
    ``shared_host.get(**host_data)`` resets it to the default data plus the module's,
    converged; a test that changes it resets it (``stack.reset(**host_data)``).

On a failing test the tails of all ``*.log`` files under the test's ``tmp_path``, the
launchd state dir, the sandbox HOME and sshd's / the upstream's logs are attached to the
report. At session end sshd and the http.server are stopped by PID, then
``launchctl _double-shutdown`` boots out every job of the state dir (whoever started it;
a failing shutdown is reported as a teardown error). Every test here is marked ``e2e``; a missing tool FAILS
(with a hint that ``.ci/run`` should install it), it is never skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from . import harness
from .harness import (
    E2E_DIR,
    FakeOp,
    LaunchdDouble,
    SshServer,
    Upstream,
    collect_logs,
    free_port,
    run_pyinfra as _run_pyinfra,
    start_caddy_job,
    start_sshd,
    start_upstream,
)
from .stack import SharedHost

_LOG_DIRS = pytest.StashKey[list]()
#: Session-wide places whose logs are attached to every failing e2e test.
_SESSION_LOG_DIRS: list[Path] = []
_SESSION_LOG_FILES: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test over a private loopback sshd (tests/e2e)"
    )


def _is_e2e(item: pytest.Item) -> bool:
    return E2E_DIR in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_e2e(item) and item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and report.when in ("setup", "call") and _is_e2e(item):
        dirs = list(item.stash.get(_LOG_DIRS, []))
        tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
        if tmp_path is not None:
            dirs.append(Path(tmp_path))
        text = collect_logs([*dirs, *_SESSION_LOG_DIRS], _SESSION_LOG_FILES)
        if text:
            report.sections.append(("e2e job logs", text))
    return report


@pytest.fixture
def e2e_log_dirs(request: pytest.FixtureRequest) -> list[Path]:
    """Append directories whose ``*.log`` files should be shown if this test fails."""
    dirs: list[Path] = []
    request.node.stash[_LOG_DIRS] = dirs
    return dirs


# --------------------------------------------------------------------------- session parts


@pytest.fixture(scope="session")
def e2e_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def tools() -> harness.ToolPaths:
    """sshd, ssh, ssh-keygen, uv, base python3, caddy, pyinfra, or a failure naming .ci/run."""
    return harness.find_tools()


@pytest.fixture(scope="session")
def launchd_state(e2e_root: Path) -> Path:
    return _launchd_state(e2e_root / "launchd")


def _launchd_state(state: Path) -> Path:
    state.mkdir()
    _SESSION_LOG_DIRS.append(state)
    return state


@pytest.fixture(scope="session")
def session_env(e2e_root: Path, tools: harness.ToolPaths, launchd_state: Path) -> dict[str, str]:
    """The environment of every SSH session (sshd SetEnv). Its finalizer, which runs after
    sshd has stopped, boots out every job the launchctl double holds (whoever started it)."""
    yield from _mac_session_env(tools, launchd_state, e2e_root / "target-home")


def _mac_session_env(tools: harness.ToolPaths, launchd_state: Path, home: Path):
    """One Mac's session environment (its launchd state dir, its HOME); at the end, every
    job of that state dir is booted out."""
    home.mkdir()
    _SESSION_LOG_DIRS.append(home)
    env = harness.build_session_env(tools, launchd_state=launchd_state, home=home)
    try:
        yield env
    finally:
        result = harness.launchd_shutdown(env)
        if result is not None and result.returncode != 0:
            raise harness.HarnessError(
                f"launchctl _double-shutdown exited {result.returncode} (jobs may be left running "
                f"under {launchd_state}):\n{result.stdout}{result.stderr}"
            )


def _session_service(service: SshServer | Upstream):
    """Yield a started session daemon (its log attached to failure reports), then stop it."""
    _SESSION_LOG_FILES.append(service.log_path)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def sshd(e2e_root: Path, tools: harness.ToolPaths, session_env: dict[str, str]) -> SshServer:
    yield from _session_service(start_sshd(e2e_root / "sshd", tools, session_env))


@pytest.fixture(scope="session")
def launchd(sshd: SshServer, launchd_state: Path) -> LaunchdDouble:
    """The launchctl double of the session (its jobs are shut down with ``session_env``)."""
    return LaunchdDouble(state_dir=launchd_state, sshd=sshd)


# A second Mac, headless: nobody is logged in at its console (it is uid 65534's in its
# sshd's namespace), so the SSH user (root) has no gui/0 and the deploy picks user/0.
# Its own launchd state dir, HOME and sshd; started only when a test asks for it.


@pytest.fixture(scope="session")
def headless_launchd_state(e2e_root: Path) -> Path:
    return _launchd_state(e2e_root / "headless-launchd")


@pytest.fixture(scope="session")
def headless_session_env(e2e_root: Path, tools: harness.ToolPaths, headless_launchd_state: Path) -> dict[str, str]:
    """``session_env`` of the headless Mac."""
    yield from _mac_session_env(tools, headless_launchd_state, e2e_root / "headless-home")


@pytest.fixture(scope="session")
def headless_sshd(e2e_root: Path, tools: harness.ToolPaths, headless_session_env: dict[str, str]) -> SshServer:
    """An sshd whose sessions see /dev/console owned by ``HEADLESS_CONSOLE_OWNER``."""
    yield from _session_service(start_sshd(e2e_root / "headless-sshd", tools, headless_session_env,
                                           console_owner=harness.HEADLESS_CONSOLE_OWNER))


@pytest.fixture(scope="session")
def headless_launchd(headless_sshd: SshServer, headless_launchd_state: Path) -> LaunchdDouble:
    """The headless Mac's launchctl double (its agent domain is ``user/<uid>``)."""
    return LaunchdDouble(state_dir=headless_launchd_state, sshd=headless_sshd)


@pytest.fixture(scope="session")
def upstream(e2e_root: Path, tools: harness.ToolPaths) -> Upstream:
    yield from _session_service(start_upstream(e2e_root / "upstream", python=tools.python3))


@pytest.fixture(scope="session")
def shared_host(e2e_root: Path, sshd: SshServer, launchd: LaunchdDouble, upstream: Upstream):
    """``stack.SharedHost``: one deployed host (devpi behind Caddy) that the modules whose
    tests need only "a deployed host" share; ``shared_host.get(**host_data)`` converges it
    with a module's data (a module-scoped fixture calls it once per module)."""
    host = SharedHost(sshd, launchd, upstream, e2e_root / "shared")
    try:
        yield host
    finally:
        host.stop()


# --------------------------------------------------------------------------- per-test helpers


@pytest.fixture(scope="session")
def write_inventory(sshd: SshServer) -> Callable[..., Path]:
    """``write_inventory(path, host_data=None) -> Path``."""

    def write(path: Path | str, host_data: dict | None = None) -> Path:
        return harness.write_inventory(path, host_data, sshd=sshd)

    return write


@pytest.fixture(scope="session")
def run_pyinfra() -> Callable[..., harness.PyinfraResult]:
    """``run_pyinfra(inventory, *args, cwd=REPO, env_extra=None, check=True, timeout=900)``."""
    return _run_pyinfra


@pytest.fixture
def fake_op(tmp_path: Path) -> FakeOp:
    harness.require_executable(harness.OP_DOUBLE, "the op double tests/e2e/fakes/op")
    return FakeOp(log_path=tmp_path / "op-calls.jsonl", password="e2e-root-Pa55 word!")


@pytest.fixture
def caddy_job(launchd: LaunchdDouble, tmp_path: Path, e2e_log_dirs: list[Path]):
    """Factory: ``caddy_job(site_file, port=None, label="test.caddy", expect_body=None)``
    -> ``CaddyJob`` (``.url``, ``.port``, ``.label``, logs); booted out after the test."""
    started: list[harness.CaddyJob] = []

    def start(site_file: Path | str, port: int | None = None, label: str = "test.caddy", **kwargs):
        work = tmp_path / f"caddy-{label}"
        e2e_log_dirs.append(work)
        job = start_caddy_job(
            launchd,
            caddyfile=work / "Caddyfile",
            port=port or free_port(),
            site_file=Path(site_file),
            work_dir=work,
            label=label,
            **kwargs,
        )
        started.append(job)
        return job

    yield start
    for job in started:
        launchd.bootout(job.label)

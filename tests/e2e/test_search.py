"""devpi-web's search (``devpi_search``, on by default): a private upload is found, a
mirrored project after a restart, and devpi never runs Whoosh while a mirror loads its
upstream's whole project list (the upstream is never asked for its ``/simple/`` root).

An existing host whose ``root/pypi`` lacks ``mirror_no_project_list`` (what the Ansible
role's devpi-init made) is switched in one run: the flag under the null backend first,
then Whoosh and a restart. Memory and CPU are measured in ``bench/`` (``namelist``).

The last four tests share one host, in this order: a declared unflagged mirror keeps
search off, then that host (with search off, as an Ansible-made host has it) is switched,
then switched again in a run that finds devpi down while planning, then such a run is
killed in its switch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.parse

import pytest

from . import devpi_client
from tests.pyinfra_cli import PYINFRA_BIN

from .harness import REPO, build_wheel, http, pyinfra_env, start_upstream, wait_until
from .stack import DeployedStack, start_stack

pytestmark = pytest.mark.e2e

EBLUME_REF = "op://vault/devpi/eblume password"
EBLUME_PW = "eblume search Pa55"


@pytest.fixture(scope="module")
def upstream(tools, tmp_path_factory):
    """A private upstream: its request log is this module's alone (the tests count
    requests since they began)."""
    index = start_upstream(tmp_path_factory.mktemp("search-upstream"), python=tools.python3)
    yield index
    index.stop()


@pytest.fixture(scope="module")
def unflagged_host(sshd, launchd, upstream, tmp_path_factory) -> DeployedStack:
    """A host whose declared root/pypi lacks mirror_no_project_list (what the Ansible
    role's devpi-init made), deployed once for the module's last two tests."""
    unflagged = {"mirror_url": upstream.url, "mirror_no_project_list": False}
    with start_stack(sshd, launchd, upstream, tmp_path_factory.mktemp("search-unflagged"), "nosearch", caddy=False,
                     devpi_indexes={"root/pypi": unflagged}) as deployed:
        yield deployed


def name_list_fetches(upstream, since: int = 0) -> list[str]:
    """The upstream's ``/simple/`` root (its whole project list) asked for since ``since``."""
    return [r for r in upstream.requests()[since:] if r.startswith("GET /simple/ ")]


def search(stack, query: str) -> str:
    status, _, body = http("GET", f"{stack.devpi_url}/+search?{urllib.parse.urlencode({'query': query})}",
                           headers={"Accept": "text/html"})
    assert status == 200, body[:500]
    return body.decode("utf-8", "replace")


def found(stack, query: str, project: str) -> bool:
    page = search(stack, query)
    return f"/{project}" in page or f">{project}<" in page


def backend(stack) -> str:
    text = (stack.devpi_home / "devpi-server.yml").read_text()
    return next(line.split(":", 1)[1].strip().strip('"') for line in text.splitlines()
                if line.strip().startswith("indexer-backend:"))


def test_search_finds_a_private_upload_and_a_mirrored_project_after_a_restart(sshd, launchd, upstream, tools,
                                                                              tmp_path, e2e_log_dirs):
    e2e_log_dirs.append(tmp_path)  # devpi's logs, shown if the test fails
    since = len(upstream.requests())
    with start_stack(
        sshd, launchd, upstream, tmp_path / "stack", "search", caddy=False, secrets={EBLUME_REF: EBLUME_PW},
        devpi_users={"eblume": {"password": EBLUME_REF}},
        devpi_indexes={"root/pypi": {"mirror_url": upstream.url}, "eblume/dev": {"bases": ["root/pypi"]}},
    ) as stack:
        assert backend(stack) == "whoosh"  # a new server dir: Whoosh from devpi's first start
        stack.wait_healthy()
        # The run made devpi-web's index (one search request): the first upload does not,
        # from two threads at once, one of which then fails and leaves the upload unsearchable.
        assert list((stack.server_dir / ".indices").glob("_project_*.toc")), "no Whoosh project index"

        wheel = build_wheel(tmp_path / "dist", "e2e-findme", "1.0")
        publish = devpi_client.uv_publish(tools.uv, wheel.path, f"{stack.devpi_url}/eblume/dev/", "eblume", EBLUME_PW)
        assert publish.returncode == 0, publish.stderr
        wait_until(lambda: found(stack, "findme", "e2e-findme"), 120, 0.5, "the private upload to be searchable",
                   detail=lambda: search(stack, "findme")[-2000:])

        # a project fetched through the mirror is indexed at devpi's next start
        status, links = devpi_client.simple_page(stack.devpi_url, "root/pypi", "hermetic-alpha")
        assert status == 200 and links
        launchd.kickstart(stack.label)
        stack.wait_healthy()
        wait_until(lambda: found(stack, "hermetic", "hermetic-alpha"), 120, 0.5,
                   "the mirrored project to be searchable after a restart",
                   detail=lambda: search(stack, "hermetic")[-2000:])

        # a rerun changes nothing, and nothing ever asked the upstream for its whole name list
        assert stack.deploy().grand_total()[0] == 0
        assert name_list_fetches(upstream, since) == []


def test_a_declared_unflagged_mirror_keeps_search_off_with_a_warning(unflagged_host):
    stack = unflagged_host
    result = stack.deploy()
    assert backend(stack) == "null"
    assert "devpi-web's search stays off" in result.output and "root/pypi" in result.output


def test_an_existing_host_gets_the_flag_first_then_whoosh_in_one_run(unflagged_host, upstream, e2e_log_dirs):
    stack = unflagged_host
    e2e_log_dirs.append(stack.root)
    # The host as the Ansible role left it, but with the null backend: root/pypi without
    # mirror_no_project_list (devpi loads the name list when the mirror is created).
    stack.reset(devpi_search=False)
    assert backend(stack) == "null"
    assert stack.state()["root"]["indexes"]["pypi"]["mirror_no_project_list"] is False
    before = stack.wait_healthy()
    since = len(upstream.requests())

    dry = stack.deploy("--dry", devpi_indexes={"root/pypi": {"mirror_url": upstream.url}}, devpi_search=True)
    assert "switched on once root/pypi has mirror_no_project_list" in dry.output, dry.describe()

    stack.update(devpi_search=True, devpi_indexes={"root/pypi": {"mirror_url": upstream.url}})
    result = stack.deploy()
    out = result.output
    # the flag under the null backend, then the config naming Whoosh, then a restart
    assert out.index("set index root/pypi's mirror_no_project_list to True") < out.index(
        "Switch devpi-web search on"), result.describe()
    assert backend(stack) == "whoosh"
    assert stack.state()["root"]["indexes"]["pypi"]["mirror_no_project_list"] is True
    assert stack.wait_healthy() != before
    # devpi never ran Whoosh with the unflagged mirror: devpi-web opened its Whoosh
    # index only after the flag was set, and nothing loaded the name list again
    log = stack.server_log.read_text()
    assert log.index("PATCH /root/pypi") < log.index("for Whoosh index files"), log[-3000:]
    assert name_list_fetches(upstream, since) == []
    # and the next run has nothing left to do
    assert stack.deploy().grand_total()[0] == 0


def test_a_run_that_finds_devpi_down_switches_search_on_in_the_same_run(unflagged_host, upstream, e2e_log_dirs):
    stack = unflagged_host
    e2e_log_dirs.append(stack.root)
    # search off and root/pypi unflagged, as before; then devpi booted out (a bootout, a
    # crash, a server dir brought over: devpi does not answer while the run plans)
    stack.reset(devpi_search=False)
    assert backend(stack) == "null"
    stack.stop_devpi()
    since = len(upstream.requests())

    stack.update(devpi_search=True, devpi_indexes={"root/pypi": {"mirror_url": upstream.url}})
    result = stack.deploy()
    out = result.output
    assert "seen once it is up" in out, result.describe()
    # decided after the health gate and the users/indexes step, in this run
    assert out.index("set index root/pypi's mirror_no_project_list to True") < out.index(
        "devpi-web's search (Whoosh) is switched on: every mirror"), result.describe()
    assert backend(stack) == "whoosh"
    assert stack.state()["root"]["indexes"]["pypi"]["mirror_no_project_list"] is True
    stack.wait_healthy()
    assert list((stack.server_dir / ".indices").glob("_project_*.toc")), "no Whoosh project index"
    log = stack.server_log.read_text()
    assert log.rindex("PATCH /root/pypi") < log.rindex("for Whoosh index files"), log[-3000:]
    assert name_list_fetches(upstream, since) == []
    # and the next run has nothing left to do
    assert stack.deploy().grand_total()[0] == 0


def killed_at(stack, operation: str, timeout: float = 300) -> str:
    """Run the deploy and SIGKILL pyinfra (its whole process group: the SSH connection
    goes with it) as soon as it starts ``operation``; returns what it printed."""
    proc = subprocess.Popen([str(PYINFRA_BIN), "-y", str(stack.write_inventory()), "deploys/devpi.py"],
                            cwd=str(REPO), env=pyinfra_env(stack.env_extra), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen, deadline = [], time.monotonic() + timeout
    try:
        for line in proc.stderr:
            seen.append(line)
            if f"Starting operation: devpi | {operation}" in line or time.monotonic() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    out = "".join(seen)
    assert f"Starting operation: devpi | {operation}" in out, out[-3000:]
    return out


def test_a_run_killed_in_the_deferred_switch_leaves_devpi_serving_and_the_next_run_finishes(
        unflagged_host, upstream, tools, tmp_path, e2e_log_dirs):
    stack = unflagged_host
    e2e_log_dirs.append(stack.root)
    stack.reset(devpi_search=False)
    # an upload, whose bytes must survive whatever the kill leaves
    devpi_client.ensure_index(stack.devpi_url, stack.root_auth, "root/keep", bases=[])
    wheel = build_wheel(tmp_path / "dist", "e2e-keepme", "1.0")
    published = devpi_client.uv_publish(tools.uv, wheel.path, f"{stack.devpi_url}/root/keep/", *stack.root_auth)
    assert published.returncode == 0, published.stdout + published.stderr
    stack.stop_devpi()

    stack.update(devpi_search=True, devpi_indexes={"root/pypi": {"mirror_url": upstream.url}})
    killed_at(stack, "Switch devpi-web search on (Whoosh)")

    # devpi serves (launchd keeps it running: the old config or the new, never half of one)
    stack.wait_healthy()
    assert backend(stack) in ("null", "whoosh")
    links = devpi_client.simple_links(stack.devpi_url, "root/keep", "e2e-keepme")
    assert devpi_client.sha256(devpi_client.download(links[wheel.filename])) == wheel.sha256
    # the next run finishes the switch, and the one after has nothing to do
    stack.deploy()
    assert backend(stack) == "whoosh"
    stack.wait_healthy()
    assert devpi_client.sha256(devpi_client.download(links[wheel.filename])) == wheel.sha256
    assert stack.deploy().grand_total()[0] == 0

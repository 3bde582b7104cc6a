"""
devpi-web's search switched on after the users/indexes step (``pyinfra_devpi/search.py``).

On a host where a mirror loads its upstream's whole project list (one the Ansible role
made: ``root/pypi`` without ``mirror_no_project_list``), the run writes the config with
the null backend first; the users/indexes step sets the flag while devpi still runs
without Whoosh; then this operation writes the config naming Whoosh, restarts devpi
and waits for it, so devpi never starts with Whoosh and an unflagged mirror.

When devpi did not answer while pyinfra planned (``SearchPlan.deferred``: the first run
on a server dir brought over, a run after a bootout or a crash), the same switch is
decided at execution, after the health gate and the users/indexes step, from the
indexes devpi reports then over the SSH connection (``switch_on_when_up``), so search
is on at the end of that run, not the next.
"""

from __future__ import annotations

import shlex
from io import BytesIO

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand

from facts.snapshot import FactRead, read
from facts.users_indexes import UsersIndexes
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.layout import transient
from pyinfra_devpi.search import WHOOSH, SearchPlan, decide_when_up
from pyinfra_devpi.tunnel import json_requester
from pyinfra_devpi.users_indexes.plan import AFTER_INIT, ApplyError, read_current

from .announce import ProgressCommand, operation
from .devpi import say, wait_healthy_script
from .textfile import write_text

q = shlex.quote


def indexes_read(config: DevpiConfig) -> FactRead:
    """devpi's indexes as the run finds them (the users/indexes step's own read: one fact)."""
    return FactRead.of(UsersIndexes, url=config.local_url, state_file=config.paths.users_state_file)


def reads(config: DevpiConfig) -> list:
    """What the search plan reads: devpi's indexes, whenever search is on (with no
    declared users or indexes too: a mirror made by hand keeps search off)."""
    return [indexes_read(config)] if config.search else []


def found_indexes(config: DevpiConfig, fresh: bool = False) -> dict | None:
    """devpi's indexes as this run starts from: what devpi-init leaves for a server dir the
    run initialises, devpi's answer otherwise (None: devpi did not answer, or search is off)."""
    if fresh:
        return dict(AFTER_INIT["indexes"])
    if not config.search:
        return None
    facts = read(host, indexes_read(config))
    return None if facts is None else facts["indexes"]


@operation
def switch_on(config: DevpiConfig, plan: SearchPlan, content: str, written: str, target: str, sudo: str = ""):
    """
    Switch devpi-web's search on (Whoosh) once every mirror has ``mirror_no_project_list``.

    + plan: the run's ``SearchPlan`` (nothing to do unless ``switch_on``)
    + content: the YAML config naming Whoosh
    + written: the config as the run's earlier write left it (naming null)
    + target: the job's ``domain/label``, restarted with the new config
    + sudo: the prefix of that restart (``"sudo -n "`` for the system domain), or empty

    A ``deferred`` plan decides at execution (``switch_on_when_up``), and creates
    devpi-web's index when it switches Whoosh on.
    """
    if plan.deferred:
        yield FunctionCommand(switch_on_when_up, (config, content, target, sudo), {})
        return
    if not plan.switch_on:
        if plan.backend == WHOOSH:
            host.noop("devpi-web's search (Whoosh) is on from devpi's start")
        else:
            host.noop("devpi-web's search stays off" + ("" if config.search else " (devpi_search is False)"))
        return
    paths = config.paths
    yield from write_text(paths.config_file, content, mode="600", current=written)
    yield f"{sudo}launchctl kickstart -k {shlex.quote(target)}"
    yield ProgressCommand(wait_healthy_script(config.local_url, config.health_timeout, paths.err_log, paths.nodeinfo))


# A search devpi-web answers from its Whoosh index (creating the index when missing).
CREATE_INDEX_QUERY = "/+search?query=devpi"


@operation
def create_index(config: DevpiConfig, whoosh: bool, exists: bool):
    """
    Have devpi-web create its Whoosh project index before any client writes to devpi.

    + whoosh: devpi runs with Whoosh at the end of this run (from its start, or switched on)
    + exists: the server dir holds the project index (``ServerDir``'s ``whoosh_project_index``)

    devpi-web 5.1 creates the index when it first indexes or searches. The first upload to a
    server dir without one indexes from two threads at once (the upload's request and
    devpi's event thread); the one that loses fails with ``NameError: File
    '_project_0.toc' exists`` and that upload is never searchable. One search request,
    made by the run once devpi is up, creates the index from one thread.
    """
    if not whoosh:
        host.noop("devpi-web's search is off: no index to create")
        return
    if exists:
        host.noop("devpi-web's search index exists")
        return
    yield create_index_command(config)


def create_index_command(config: DevpiConfig) -> str:
    """One search request on devpi's loopback port; fails unless it answers 200."""
    url = config.local_url.rstrip("/") + CREATE_INDEX_QUERY
    return (
        f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 60 {shlex.quote(url)}) || true; "
        'if [ "$code" != 200 ]; then '
        + say("devpi-web's search page answered %s on %s, not 200: devpi-web cannot create its search index "
              "(see devpi's log)", '"${code:-000}"', shlex.quote(url))
        + "; exit 1; fi"
    )


def decide_now(request, config: DevpiConfig) -> SearchPlan:
    """The deferred decision, from the indexes devpi reports now (``request``: devpi's
    JSON API, ``tunnel.json_requester``); ``ApplyError`` when it does not answer."""
    current = read_current(request, config.health_timeout, config.local_url)
    return decide_when_up(config.search, current["indexes"])


def switch_script(config: DevpiConfig, new: str, target: str, sudo: str) -> str:
    """One host command: the config naming Whoosh (uploaded to ``new``) moved into place,
    devpi restarted and waited for, devpi-web's index made. One command, so a run killed
    in it leaves devpi restarting with the config it reads, or running the old one."""
    paths = config.paths
    return " && ".join((
        f"chmod 600 {q(new)}",
        f"mv -f {q(new)} {q(paths.config_file)}",
        f"{sudo}launchctl kickstart -k {q(target)}",
        # in its own shell: the gate's script ends with exit
        "(\n" + wait_healthy_script(config.local_url, config.health_timeout, paths.err_log, paths.nodeinfo) + "\n)",
        "{ " + create_index_command(config) + "; }",
    ))


def switch_on_when_up(state, host, config: DevpiConfig, content: str, target: str, sudo: str = "",
                      request=None) -> bool:
    """Decide devpi-web's search from devpi's indexes now, and switch Whoosh on if no mirror forbids it.

    At execution, for a ``deferred`` plan (after the health gate and the users/indexes
    step): when no mirror loads its upstream's whole project list, write the config naming
    Whoosh, restart devpi, wait for it and make devpi-web's index. ``request``: devpi's
    JSON API (default: through the SSH connection)."""
    if request is None:
        request = json_requester(host, config.local_address, config.port, timeout=max(30, config.health_timeout))
    try:
        plan = decide_now(request, config)
    except ApplyError as error:
        host.log_styled(f"devpi-web's search: {error}", fg="red", log_func=logger.error)
        return False
    if plan.backend != WHOOSH:
        if plan.message:
            host.log(plan.message, logger.warning if plan.warn else logger.info)
        return True
    host.log("devpi-web's search (Whoosh) is switched on: every mirror has mirror_no_project_list", logger.info)
    new = transient(config.paths.config_file)
    if not host.put_file(BytesIO(content.encode("utf-8")), new):
        return False
    ok, output = host.run_shell_command(StringCommand(switch_script(config, new, target, sudo)), print_output=False)
    for line in [*output.stdout_lines, *output.stderr_lines]:
        host.log(line, logger.info if ok else logger.error)
    return ok

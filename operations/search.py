"""
devpi-web's search switched on after the users/indexes step (``pyinfra_devpi/search.py``).

On a host where a mirror loads its upstream's whole project list (one the Ansible role
made: ``root/pypi`` without ``mirror_no_project_list``), the run writes the config with
the null backend first; the users/indexes step sets the flag while devpi still runs
without Whoosh; then this operation writes the config naming Whoosh, restarts devpi
and waits for it, so devpi never starts with Whoosh and an unflagged mirror.
"""

from __future__ import annotations

import shlex

from pyinfra import host

from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.search import WHOOSH, SearchPlan

from .announce import ProgressCommand, operation
from .devpi import say, wait_healthy_script
from .textfile import write_text


@operation
def switch_on(config: DevpiConfig, plan: SearchPlan, content: str, written: str, target: str, sudo: str = ""):
    """
    Switch devpi-web's search on (Whoosh) once every mirror has ``mirror_no_project_list``.

    + plan: the run's ``SearchPlan`` (nothing to do unless ``switch_on``)
    + content: the YAML config naming Whoosh
    + written: the config as the run's earlier write left it (naming null)
    + target: the job's ``domain/label``, restarted with the new config
    + sudo: the prefix of that restart (``"sudo -n "`` for the system domain), or empty
    """
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
    url = config.local_url.rstrip("/") + CREATE_INDEX_QUERY
    yield (
        f"code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 60 {shlex.quote(url)}) || true; "
        'if [ "$code" != 200 ]; then '
        + say("devpi-web's search page answered %s on %s, not 200: devpi-web cannot create its search index "
              "(see devpi's log)", '"${code:-000}"', shlex.quote(url))
        + "; exit 1; fi"
    )

"""
Warm devpi's mirror for the projects the operator lists (``devpi_prewarm``).

A mitigation for devpi's cold-mirror race (docs/cold-mirror-race.md): the host fetches
``<devpi>/<index>/+simple/<name>/`` for each project, one at a time, and stops the run
naming the first project whose answer is not ``200`` with at least one file. Nothing is
retried, so a wrong answer is never hidden. It runs only when the marker on the host
(see ``pyinfra_devpi.prewarm``) says this list was not yet warmed on this mirror.
"""

from __future__ import annotations

import shlex

from pyinfra import host

from facts.snapshot import file_content
from pyinfra_devpi import prewarm as pw
from pyinfra_devpi.config import DevpiConfig
from pyinfra_devpi.layout import transient

from .announce import ProgressCommand, operation
from .triggers import any_changed

q = shlex.quote


def reads(config: DevpiConfig) -> list:
    """What ``projects`` reads from the host: the marker, when there is a list."""
    return [config.paths.prewarm_marker] if config.prewarm else []


def prewarm_command(config: DevpiConfig, digest: str, timeout: int = 120) -> str:
    paths = config.paths
    args = [
        config.local_url,
        config.prewarm_index,
        paths.prewarm_marker,
        transient(paths.prewarm_marker),
        digest,
        paths.nodeinfo,
        str(timeout),
        *config.prewarm,
    ]
    return f"{q(paths.bin('python'))} -I -c {q(pw.SCRIPT)} " + " ".join(q(a) for a in args)


@operation
def projects(config: DevpiConfig, server_dir: dict, mirror: dict | None = None, after=()):
    """
    Fetch each ``devpi_prewarm`` project's simple page through the mirror, in order.

    + config: the validated deploy config (``prewarm``, ``prewarm_index``)
    + server_dir: the ``ServerDir`` fact as the run found it (its uuid identifies the mirror)
    + mirror: the mirror's settings as the deploy declares them (a change re-warms)
    + after: operations whose change means the mirror changed (re-warm even if the
      marker matches)
    """
    if not config.prewarm:
        host.noop("devpi_prewarm lists no project")
        return
    digest = pw.digest(config.prewarm, config.prewarm_index, mirror)
    marker = file_content(host, config.paths.prewarm_marker)
    if pw.is_warm(marker, digest, server_dir) and not any_changed(after):
        host.noop(f"{config.prewarm_index} is warm for these {len(config.prewarm)} projects")
        return
    yield ProgressCommand(prewarm_command(config, digest))

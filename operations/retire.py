"""
Retire what the deploy left under another name: its LaunchAgent under an old label
(``devpi_label`` renamed), and its own label loaded in the other launchd domain
(``gui/<uid>`` vs ``user/<uid>``: a job loaded from another kind of session, e.g.
with legacy ``launchctl load`` over SSH). Either would keep devpi's port, so the new
job could not bind it while the old one went on answering.

Only plists carrying the deploy's marker and running devpi with this deploy's config
file are retired: a marked plist for another devpi home is reported, never touched.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger

from facts.launchd import LaunchdJob
from facts.managed_agents import ManagedAgents
from pyinfra_devpi.snapshot import FactRead, read

from .announce import operation

q = shlex.quote


def other_domain(domain: str) -> str:
    kind, uid = domain.split("/", 1)
    return f"{'user' if kind == 'gui' else 'gui'}/{uid}"


def _agents_read(agents_dir: str) -> FactRead:
    return FactRead.of(ManagedAgents, directory=agents_dir)


def _elsewhere_read(label: str, domain: str) -> FactRead:
    return FactRead.of(LaunchdJob, label=label, domain=other_domain(domain))


def reads(label: str, domain: str, agents_dir: str) -> list:
    return [_agents_read(agents_dir), _elsewhere_read(label, domain)]


def bootout_and_wait(target: str) -> str:
    """Boot ``target`` out and fail unless launchd lets it go within ~10 s. The
    bootout's own status is not trusted: it differs between a job that is not loaded
    and a domain that does not exist (no GUI login), and both are fine here."""
    return (
        f"launchctl bootout {q(target)} >/dev/null 2>&1 || true; "
        f"i=0; while launchctl print {q(target)} >/dev/null 2>&1; do i=$((i + 1)); "
        f"if [ $i -ge 40 ]; then echo {q(target + ' is still loaded after bootout')} >&2; exit 1; fi; "
        "sleep 0.25; done"
    )


@operation
def old_agents(label: str, domain: str, plist_path: str, config_file: str, agents_dir: str, keep=()):
    """
    Boot out and remove this deploy's LaunchAgent under an old label, and its label
    loaded in the other launchd domain.

    + label, domain, plist_path: the job as it should be
    + config_file: devpi's config file: a marked plist that runs devpi with it is ours
    + agents_dir: where the plists live
    + keep: labels of this devpi's other LaunchAgents (the backup job): not retired
    """
    commands = []
    elsewhere = read(host, _elsewhere_read(label, domain))
    if elsewhere and elsewhere.get("loaded"):
        target = f"{other_domain(domain)}/{label}"
        host.log(f"{label} is also loaded in {other_domain(domain)}: booting it out there", logger.info)
        commands.append(bootout_and_wait(target))
    for path, agent in sorted(read(host, _agents_read(agents_dir)).items()):
        if path == plist_path or agent["label"] == label or agent["label"] in keep:
            continue
        if config_file not in agent["arguments"]:
            logger.warning(
                f"{host.print_prefix}{path} ({agent['label']}) was written by this deploy for another "
                "devpi home: left alone",
            )
            continue
        host.log(f"{agent['label']} is this devpi under an old label: retiring it", logger.info)
        for target in (f"{domain}/{agent['label']}", f"{other_domain(domain)}/{agent['label']}"):
            commands.append(bootout_and_wait(target))
        commands.append(f"rm -f {q(path)}")
    if not commands:
        host.noop("no LaunchAgent of this devpi under another label or domain")
    yield from commands

"""
Retire what the deploy left under another name: its LaunchAgent under an old label
(``devpi_label`` renamed), and its own labels (devpi's and the backup job's) loaded in
another launchd domain (``gui/<uid>`` vs ``user/<uid>``: a job loaded from another kind
of session, e.g. with legacy ``launchctl load`` over SSH; or ``system`` vs the user's
domains after ``devpi_launchd_scope`` changed) with the other scope's plists. Either
would keep devpi's port, so the new job could not bind it while the old one went on
answering. The system domain and /Library/LaunchDaemons are changed through ``sudo -n``
(``JobPlace.prefix``) unless the SSH user is root.

This deploy's jobs are found by what they run, under any label (in the LaunchAgents dir,
and in the LaunchDaemons dir when this devpi is a LaunchDaemon): a plist carrying the
deploy's marker whose job runs with this deploy's config file, or with a config the
deploy wrote (its marker) that serves this deploy's port: the job of an earlier
``devpi_home`` (renamed together with the label), which would hold the port. Anything
else (a marked plist for another port, one running something else, one too damaged to
read) is named and left alone.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger

from facts.launchd import LaunchdJob
from facts.managed_agents import ManagedAgents
from facts.snapshot import FactRead, file_content, read
from pyinfra_devpi.launchd_scope import SYSTEM_DOMAIN, JobPlace
from pyinfra_devpi.layout import PLIST_SUFFIX

from .announce import operation
from .launchd import bootout_command, removal_commands

q = shlex.quote


def _agents_read(agents_dir: str) -> FactRead:
    return FactRead.of(ManagedAgents, directory=agents_dir)


def _job_elsewhere_read(label: str, domain: str) -> FactRead:
    return FactRead.of(LaunchdJob, label=label, domain=domain)


def reads(labels: tuple[str, ...], place: JobPlace, agents_dir: str, other_plists: tuple[str, ...],
          daemons_dir: str | None = None) -> list:
    """What ``old_agents`` reads: the deploy's plists in the LaunchAgents dir (and the
    LaunchDaemons dir, for a LaunchDaemon), its labels in every domain they must not be
    loaded in, and the other scope's plists."""
    return [
        _agents_read(agents_dir),
        *([_agents_read(daemons_dir)] if daemons_dir else []),
        *(_job_elsewhere_read(label, domain) for label in labels for domain in place.elsewhere),
        *other_plists,
    ]


def loaded_elsewhere(label: str, place: JobPlace) -> list[tuple[str, str]]:
    """``label`` loaded in a domain it must not be in: (what to say, the command that
    boots it out and waits until launchd lets it go), one per such domain."""
    found = []
    for where in place.elsewhere:
        elsewhere = read(host, _job_elsewhere_read(label, where))
        if elsewhere and elsewhere.get("loaded"):
            found.append((
                f"{label} is also loaded in {where}: booting it out there",
                bootout_command(f"{where}/{label}", place.prefix(where)),
            ))
    return found


def whose(agent: dict, config_file: str, port: int | None) -> str | None:
    """Why a marked plist's job is this deploy's (``None``: it is not)."""
    if config_file in agent["arguments"]:
        return "this devpi under an old label"
    if port is not None and agent["config_port"] == port:
        return (f"this devpi under an old label and an earlier devpi_home (its config {agent['config']} "
                f"serves port {port})")
    return None


def foreign(agent: dict, port: int | None) -> str:
    """What a marked plist that is not this deploy's runs, to name it."""
    if agent["config"] is None:
        return f"runs {' '.join(agent['arguments'][:1]) or 'nothing'}, no devpi config"
    if agent["config_port"] is None:
        return f"runs with {agent['config']}, not a config this deploy wrote"
    return f"runs devpi on port {agent['config_port']}, not {port}"


@operation
def old_agents(label: str, place: JobPlace, plist_path: str, config_file: str, agents_dir: str, keep=(),
               other_plists=(), leave=(), port: int | None = None, daemons_dir: str | None = None):
    """
    Boot out and remove this deploy's LaunchAgent under an old label, its labels loaded
    in another launchd domain, and the other scope's plists.

    + label, place, plist_path: the job as it should be
    + config_file: devpi's config file: a marked plist that runs devpi with it is ours
    + port: devpi's port: a marked plist whose config (one the deploy wrote) serves it
      is ours too (an earlier ``devpi_home``'s job)
    + agents_dir: where the LaunchAgents' plists live
    + daemons_dir: where the LaunchDaemons' plists live, when this devpi is one: a
      LaunchDaemon of this devpi under an old label is retired too (through ``sudo -n``)
    + keep: labels of this devpi's other jobs (the backup job): not retired under an old
      label, but booted out of the other domains like devpi's own
    + other_plists: the other scope's plists (devpi's and the backup job's), removed
    + leave: labels whose jobs in other domains are left to the job's own load command
      (``launchd.agent``'s ``displace``: booted out right before the bootstrap)
    """
    commands = []
    for job_label in (label, *keep):
        if job_label in leave:
            continue
        for message, bootout in loaded_elsewhere(job_label, place):
            host.log(message, logger.info)
            commands.append(bootout)
    for path in other_plists:
        if file_content(host, path) is not None:
            host.log(f"{path} is this devpi's plist for the other devpi_launchd_scope: removing it", logger.info)
            sudo = place.as_root if not path.startswith(agents_dir + "/") else ""
            commands.append(f"{sudo}rm -f {q(path)}")
    own_plists = {plist_path, *(f"{d}/{k}{PLIST_SUFFIX}" for d in (agents_dir, daemons_dir) if d for k in keep)}
    found = dict(read(host, _agents_read(agents_dir)))
    if daemons_dir:
        found.update(read(host, _agents_read(daemons_dir)))
    for path, agent in sorted(found.items()):
        if agent["damaged"]:
            if path in own_plists:
                host.log(f"{path} is damaged ({agent['damaged']}): the deploy writes it again", logger.warning)
            elif path not in other_plists:
                logger.warning(
                    f"{host.print_prefix}{path} carries this deploy's marker but is damaged ({agent['damaged']}): "
                    "whose job it was cannot be told, so it is left alone; remove it if no job of yours uses it",
                )
            continue
        if path == plist_path or agent["label"] == label or agent["label"] in keep:
            continue
        reason = whose(agent, config_file, port)
        if reason is None:
            logger.warning(
                f"{host.print_prefix}{path} ({agent['label']}) was written by this deploy but "
                f"{foreign(agent, port)}: not this devpi's job, left alone",
            )
            continue
        host.log(f"{agent['label']} is {reason}: retiring it", logger.info)
        if daemons_dir and path.startswith(daemons_dir.rstrip("/") + "/"):
            commands += removal_commands(agent["label"], [(SYSTEM_DOMAIN, place.as_root)], [(path, place.as_root)],
                                         found_only=False)
        else:
            commands += removal_commands(agent["label"], [(d, "") for d in place.own_domains], [(path, "")],
                                         found_only=False)
    if not commands:
        host.noop("no job of this devpi under another label, domain or scope")
    yield from commands

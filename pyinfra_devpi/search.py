"""
devpi-web's search (``devpi_search``): which indexer backend the YAML config names,
and when the deploy may switch Whoosh on.

Whoosh indexes every project of every index at devpi's start, and a mirror's whole
project list as soon as devpi loads it. A mirror without ``mirror_no_project_list``
loads its upstream's list (PyPI: ~700k names): Whoosh indexing it costs tens of
CPU-minutes and more than a GB. With the flag on every mirror, Whoosh costs what the
null backend costs (docs/operating.md, "Search"). So Whoosh is written into the config only when
devpi holds no mirror without the flag, before and after this run's users/indexes step:

- a new server dir (``devpi-init --no-root-pypi``; the users/indexes step creates
  ``root/pypi`` with the flag) or every mirror already flagged: Whoosh at once;
- a mirror the users/indexes step flags (an existing host, e.g. one the Ansible role
  made): the config says ``null`` until that step has run, then a second write names
  Whoosh and devpi restarts (``operations/search.py``), in the same run;
- a mirror that would stay unflagged (declared with ``mirror_no_project_list: False``,
  or not declared at all): ``null``, and the plan says which mirror keeps search off;
- devpi did not answer while planning (its indexes unknown: the first run on a server
  dir brought over, a run after a bootout or a crash): a host whose config names Whoosh
  keeps it, since the deploy wrote Whoosh there only once every mirror was flagged, and
  the users/indexes step refuses to leave a mirror unflagged while devpi runs Whoosh; a
  host on ``null`` (or without a config) starts devpi with ``null``, and the decision is
  made once devpi is up, after the health gate and the users/indexes step, from the
  indexes devpi reports then (``deferred``, ``decide_when_up``): Whoosh in the same run.

Pure functions; the deploy reads the facts and acts on the ``SearchPlan``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WHOOSH = "whoosh"
NULL = "null"
# The devpi-server option that names the backend (devpi-web's ``--indexer-backend``).
OPTION = "indexer-backend"

_BACKEND_RE = re.compile(r'^\s+indexer-backend:\s*"?([A-Za-z0-9_.:/-]+)"?\s*$', re.M)


def backend_in(config_text: str | None) -> str | None:
    """The backend a YAML config the deploy rendered names (None: no config, or none named)."""
    match = _BACKEND_RE.search(config_text or "")
    return match.group(1) if match else None


def unflagged_mirrors(indexes: dict) -> list[str]:
    """The mirror indexes (``{"user/index": ixconfig}``) that load their upstream's whole
    project list: ``mirror_no_project_list`` is not true."""
    return sorted(
        name for name, ixconfig in indexes.items()
        if (ixconfig or {}).get("type") == "mirror" and ixconfig.get("mirror_no_project_list") is not True
    )


def indexes_after(indexes: dict, actions: list[dict]) -> dict:
    """devpi's indexes once the users/indexes ``actions`` (``plan.plan``) are made."""
    after = {name: dict(ixconfig or {}) for name, ixconfig in indexes.items()}
    for action in actions:
        op, name = action["op"], action["name"]
        if op == "create_index":
            after[name] = dict(action["body"])
        elif op == "patch_index":
            after.setdefault(name, {}).update(action["body"])
        elif op == "delete_index":
            after.pop(name, None)
        elif op == "delete_user":
            after = {ix: c for ix, c in after.items() if ix.split("/")[0] != name}
    return after


@dataclass(frozen=True)
class SearchPlan:
    """``backend``: what the config written before devpi's (re)start names;
    ``switch_on``: after the users/indexes step, write Whoosh and restart devpi;
    ``deferred``: devpi did not answer while planning: decided once it is up, after the
    users/indexes step (``decide_when_up``), and maybe switched on then;
    ``message``: what the plan tells the operator (``warn``: as a warning)."""

    backend: str
    switch_on: bool = False
    deferred: bool = False
    message: str | None = None
    warn: bool = False


def decide(search: bool, current: dict | None, actions: list[dict] | None, host_backend: str | None) -> SearchPlan:
    """The plan for devpi-web's indexer on this host.

    ``current``: devpi's indexes as the run found them (what ``devpi-init`` leaves for
    a server dir this run initialises), or None when devpi did not answer; ``actions``:
    the users/indexes plan from there; ``host_backend``: what the host's config names.
    """
    if not search:
        return SearchPlan(NULL)
    if current is None:
        if host_backend == WHOOSH:
            return SearchPlan(WHOOSH)
        return SearchPlan(
            NULL,
            deferred=True,
            message="devpi does not answer while planning, so whether every mirror has "
            "mirror_no_project_list is seen once it is up: devpi starts without search (null), and "
            "devpi-web's search (Whoosh) is switched on after the users and indexes step if every "
            "mirror has it (devpi restarts once more)",
        )
    later = unflagged_mirrors(indexes_after(current, actions or []))
    if later:
        return SearchPlan(
            NULL,
            message=f"devpi-web's search stays off (indexer-backend null): {', '.join(later)} would load its "
            "upstream's whole project list for Whoosh to index (mirror_no_project_list is not True). Set "
            "mirror_no_project_list True for it in devpi_indexes, or devpi_search = False to silence this",
            warn=True,
        )
    now = unflagged_mirrors(current)
    if now:
        return SearchPlan(
            NULL,
            switch_on=True,
            message=f"devpi-web's search (Whoosh) is switched on once {', '.join(now)} has "
            "mirror_no_project_list (after the users and indexes step): devpi restarts once more",
        )
    return SearchPlan(WHOOSH)


def decide_when_up(search: bool, indexes: dict) -> SearchPlan:
    """The deferred decision (``SearchPlan.deferred``), made once devpi is up and the
    users/indexes step has run, from the ``indexes`` devpi reports then: Whoosh
    (``WHOOSH``: switch it on now) when no mirror loads its upstream's whole project
    list, else ``NULL`` with the warning naming the mirrors."""
    if not search:
        return SearchPlan(NULL)
    return decide(search, indexes, [], NULL)

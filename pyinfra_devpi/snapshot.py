"""
Facts read once per host per run.

pyinfra 3 runs a fact's command on every ``host.get_fact`` call, and an operation's
body runs twice when changes are detected before execution. The deploy's plan is
made from the host as it was when the run began (a chain inside one run follows
operation results, not re-read facts), so each fact is read once and reused: the
plan shown by ``--dry`` is the plan executed, and a no-change rerun costs one
round trip per fact.
"""

from __future__ import annotations

from facts.files import FileContents

# The memo lives on the Host object itself (works through pyinfra's context proxy).
_ATTR = "_pyinfra_devpi_snapshot"


def _memo(host) -> dict:
    memo = getattr(host, _ATTR, None)
    if memo is None:
        memo = {"facts": {}, "files": {}}
        setattr(host, _ATTR, memo)
    return memo


def read_fact(host, fact_cls, **kwargs):
    """``host.get_fact`` with a per-run memo keyed by fact class and arguments."""
    facts = _memo(host)["facts"]
    key = (fact_cls, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in facts:
        facts[key] = host.get_fact(fact_cls, **kwargs)
    return facts[key]


def prefetch_files(host, paths) -> None:
    """Read several small files in one command; ``file_content`` then answers from it."""
    files = _memo(host)["files"]
    missing = [p for p in paths if p not in files]
    if missing:
        files.update(host.get_fact(FileContents, paths=missing))


def file_content(host, path: str) -> str | None:
    """The file's content as the run found it (``None`` when missing)."""
    prefetch_files(host, [path])
    return _memo(host)["files"][path]

"""
Facts read once per host per run.

pyinfra 3 runs a fact's command on every ``host.get_fact`` call, and an operation's
body runs twice when changes are detected before execution. The deploy's plan is
made from the host as it was when the run began (a chain inside one run follows
operation results, not re-read facts), so each fact is read once and reused: the
plan shown by ``--dry`` is the plan executed.

``prefetch`` reads the facts the plan will need in one round trip (``FactBatch``);
``read_fact`` and ``file_content`` then answer from the memo, and read on their own
only what was not prefetched (or did not come back cleanly: pyinfra's own fact
handling then reports it).
"""

from __future__ import annotations

from pyinfra.api.exceptions import FactProcessError, PyinfraError

from facts.batch import FactBatch, command_text
from facts.files import FileContents

# The memo lives on the Host object itself (works through pyinfra's context proxy).
_ATTR = "_pyinfra_devpi_snapshot"


def _memo(host) -> dict:
    memo = getattr(host, _ATTR, None)
    if memo is None:
        memo = {"facts": {}, "files": {}}
        setattr(host, _ATTR, memo)
    return memo


def _key(fact_cls, kwargs: dict):
    return (fact_cls, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))


def read_fact(host, fact_cls, **kwargs):
    """``host.get_fact`` with a per-run memo keyed by fact class and arguments."""
    facts = _memo(host)["facts"]
    key = _key(fact_cls, kwargs)
    if key not in facts:
        facts[key] = host.get_fact(fact_cls, **kwargs)
    return facts[key]


def prefetch(host, facts=(), files=()) -> None:
    """Read ``facts`` (``(fact class, kwargs)`` pairs) and the small text files
    ``files`` in one command; what is already in the memo is not read again.

    A fact whose command failed, or whose output its ``process`` refused, is left
    out of the memo, so ``read_fact`` reads it on its own and pyinfra reports it.
    """
    memo = _memo(host)
    wanted = [(cls, kwargs) for cls, kwargs in facts if _key(cls, kwargs) not in memo["facts"]]
    missing_files = [path for path in dict.fromkeys(files) if path not in memo["files"]]
    if missing_files:
        wanted.append((FileContents, {"paths": missing_files}))
    if not wanted:
        return
    if len(wanted) == 1:  # nothing to batch
        cls, kwargs = wanted[0]
        value = host.get_fact(cls, **kwargs)
        _store(memo, cls, kwargs, value)
        return
    results = host.get_fact(FactBatch, commands=[command_text(cls, kwargs) for cls, kwargs in wanted])
    if not isinstance(results, list) or len(results) != len(wanted):
        return  # read one by one instead
    for (cls, kwargs), result in zip(wanted, results):
        if result["status"] != 0:
            continue
        fact = cls()
        try:
            # As pyinfra does: no output is the fact's default.
            value = fact.process(result["lines"]) if result["lines"] else fact.default()
        except FactProcessError:
            continue
        _store(memo, cls, kwargs, value)


def _store(memo: dict, cls, kwargs: dict, value) -> None:
    if cls is FileContents and isinstance(value, dict):
        memo["files"].update(value)
    else:
        memo["facts"][_key(cls, kwargs)] = value


def prefetch_files(host, paths) -> None:
    """Read several small files in one command; ``file_content`` then answers from it."""
    prefetch(host, files=paths)


def file_content(host, path: str) -> str | None:
    """The file's content as the run found it (``None`` when missing)."""
    prefetch_files(host, [path])
    files = _memo(host)["files"]
    if path not in files:  # pyinfra has reported why, and failed the host
        raise PyinfraError(f"could not read {path} on {host.name}")
    return files[path]

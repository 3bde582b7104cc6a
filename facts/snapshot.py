"""
Facts read once per host per run.

pyinfra 3 runs a fact's command on every ``host.get_fact`` call, and an operation's
body runs twice when changes are detected before execution. The deploy's plan is
made from the host as it was when the run began (a chain inside one run follows
operation results, not re-read facts), so each fact is read once and reused: the
plan shown by ``--dry`` is the plan executed.

What an operation reads is declared by its module (``reads(...)``: a list of
``FactRead`` and file paths) and read by the operation through the same
declaration (``read(host, fact_read)``, ``file_content(host, path)``). The deploy
hands all modules' lists to ``prefetch``, which reads them in one round trip
(``FactBatch``); a read that was not prefetched (or did not come back cleanly)
happens on its own, so pyinfra's own fact handling reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

from pyinfra.api.exceptions import FactProcessError, PyinfraError

from facts.batch import FactBatch, command_text
from facts.files import FileContents

# The memo lives on the Host object itself (works through pyinfra's context proxy).
_ATTR = "_pyinfra_devpi_snapshot"


@dataclass(frozen=True)
class FactRead:
    """One fact with its arguments: what an operation reads, and the memo's key."""

    fact: type
    arguments: tuple[tuple[str, object], ...]

    @classmethod
    def of(cls, fact: type, **kwargs) -> "FactRead":
        return cls(fact, tuple(sorted(kwargs.items())))

    @property
    def kwargs(self) -> dict:
        return dict(self.arguments)


# A read is a fact, or the path of a small text file the deploy owns.
Read = Union[FactRead, str]


def _memo(host) -> dict:
    memo = getattr(host, _ATTR, None)
    if memo is None:
        memo = {"facts": {}, "files": {}}
        setattr(host, _ATTR, memo)
    return memo


def read(host, fact_read: FactRead):
    """The fact's value as the run found it (read now if it was not prefetched)."""
    facts = _memo(host)["facts"]
    if fact_read not in facts:
        facts[fact_read] = host.get_fact(fact_read.fact, **fact_read.kwargs)
    return facts[fact_read]


def prefetch(host, reads: Iterable[Read]) -> None:
    """Read every fact and file in ``reads`` in one command; what is already in the
    memo is not read again.

    A fact whose command failed, or whose output its ``process`` refused, is left
    out of the memo, so ``read`` reads it on its own and pyinfra reports it.
    """
    memo = _memo(host)
    reads = list(dict.fromkeys(reads))
    wanted = [r for r in reads if isinstance(r, FactRead) and r not in memo["facts"]]
    paths = [r for r in reads if isinstance(r, str) and r not in memo["files"]]
    if paths:
        wanted.append(FactRead.of(FileContents, paths=tuple(paths)))
    if not wanted:
        return
    if len(wanted) == 1:  # nothing to batch
        _store(memo, wanted[0], host.get_fact(wanted[0].fact, **wanted[0].kwargs))
        return
    values, _ = read_batch(host, wanted)
    for fact_read, value in values.items():
        _store(memo, fact_read, value)


def read_batch(host, reads: list[FactRead], wrap=lambda command: command) -> tuple[dict, dict]:
    """Every read in one ``FactBatch`` (each command through ``wrap``): ``(values,
    errors)`` by read; the one place batch output becomes fact values. A read whose
    command failed, or whose output its ``process`` refused, is in ``errors`` with why;
    all are when the batch gave no usable answer."""
    results = host.get_fact(FactBatch, commands=[wrap(command_text(r.fact, r.kwargs)) for r in reads])
    if not isinstance(results, list) or len(results) != len(reads):
        return {}, {r: "the fact batch gave no result" for r in reads}
    values, errors = {}, {}
    for fact_read, result in zip(reads, results):
        if result["status"] != 0:
            errors[fact_read] = f"{fact_read.fact.__name__} exited {result['status']}"
            continue
        fact = fact_read.fact()
        try:
            # As pyinfra does: no output is the fact's default.
            values[fact_read] = fact.process(result["lines"]) if result["lines"] else fact.default()
        except FactProcessError as error:
            errors[fact_read] = f"{fact_read.fact.__name__}: {error}"
    return values, errors


def _store(memo: dict, fact_read: FactRead, value) -> None:
    if fact_read.fact is FileContents and isinstance(value, dict):
        memo["files"].update(value)
    else:
        memo["facts"][fact_read] = value


def file_content(host, path: str) -> str | None:
    """The file's content as the run found it (``None`` when missing)."""
    prefetch(host, [path])
    files = _memo(host)["files"]
    if path not in files:  # pyinfra has reported why, and failed the host
        raise PyinfraError(f"could not read {path} on {host.name}")
    return files[path]

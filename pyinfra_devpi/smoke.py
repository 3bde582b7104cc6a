"""
The health gate's smoke check record (``smoke.pyinfra.json``, written on the host by
``operations/devpi.py``'s ``SMOKE_PY`` after each check): which venv it ran on, whether
it passed, and each request's status. The status reports it; the converge reads it to
find a live venv that no gate has passed (a run stopped between the venv's swap and the
gate) or a devpi whose last check failed, and checks it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


def parse_record(text) -> dict | None:
    """The record's fields (``ok``, ``time``, ``venv_dir``, ``checks`` as ``GET <path>
    <status>``), or ``None`` when ``text`` is not the record (damaged, not text)."""
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text)
        checks = [f"GET {path} {status or 'no answer'}" for path, status in record["checks"]]
        fields = {"ok": record["ok"] is True, "time": record["time"], "venv_dir": record["venv_dir"],
                  "checks": checks}
    except (ValueError, KeyError, TypeError):
        return None
    # Printed in the run and the status: a path or request with a control character
    # (a terminal escape) is not a record the gate wrote.
    text_fields = [fields["venv_dir"], fields["time"], *fields["checks"]]
    if not all(isinstance(value, str) and value.isprintable() for value in text_fields):
        return None
    return fields


@dataclass(frozen=True)
class Recheck:
    """Why the running devpi is restarted and gated again though nothing changed
    (``reason``), and the venv the gate may roll back to (``rollback_to``: the one the
    last passed check ran on, when ``venv.previous`` still names it)."""

    reason: str
    rollback_to: str | None = None


def recheck(record_text, live_venv_dir: str | None, previous_text) -> Recheck | None:
    """What the record says of the live venv (its real directory). No record, or one that
    cannot be read, says nothing: the next gate writes one."""
    record = parse_record(record_text)
    if record is None or not live_venv_dir:
        return None
    if record["venv_dir"] != live_venv_dir:
        previous = previous_text.strip() if isinstance(previous_text, str) else ""
        return Recheck(
            f"the live venv {live_venv_dir} has not passed the health gate (the last smoke check ran on "
            f"{record['venv_dir']}): a run stopped between the venv's swap and its check; restarting devpi "
            "to check it now",
            rollback_to=record["venv_dir"] if record["ok"] and previous == record["venv_dir"] else None,
        )
    if not record["ok"]:
        return Recheck(f"devpi failed its last smoke check ({', '.join(record['checks'])}) and has not passed "
                       "one since: restarting it to check again")
    return None

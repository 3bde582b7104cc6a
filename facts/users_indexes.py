"""
What devpi itself reports over its JSON API: its users and indexes.

Read with curl (macOS ships it) over loopback, anonymously: devpi answers ``GET /``
with ``Accept: application/json`` with every user's public config and every index
config. Passwords are never part of it.
"""

from __future__ import annotations

import json
import shlex

from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts._output import key_values, script, split_blocks
from facts.files import Damaged, decode_text, text_block
from pyinfra_devpi.users_indexes.plan import split_userlist


class UsersIndexes(FactBase):
    """
    devpi's users and indexes, from ``GET <url>/``.

    Returns ``None`` when nothing answers on ``url`` (e.g. before the first start), else
    a dict: ``users`` (``{name: public user config}``: ``email``, ``created``, ...),
    ``indexes`` (``{"user/index": index config}``: ``type``, ``bases``, ``volatile``,
    ``acl_upload``, ``mirror_url``, ...) and, with ``state_file`` (the deploy's record of
    the password references it set), ``passwords`` (``{user: {"password": reference,
    "version": n}}``; references, never passwords; ``{}`` when the file is damaged, and
    then ``state_damaged`` says what is wrong with it).
    """

    def command(self, url, state_file=None):
        root = shlex.quote(url.rstrip("/") + "/")
        parts = [
            'echo "@api"',
            # curl prints the write-out even when nothing answers (status 000).
            "curl -s --max-time 10 -H 'Accept: application/json' "
            f"-w '\\n@end\\nstatus=%{{http_code}}\\n' {root} 2>/dev/null",
        ]
        if state_file:
            parts += [
                f"s={shlex.quote(state_file)}",
                text_block('"$s"', "state", missing="state=missing"),
            ]
        return script(parts)

    def process(self, output):
        plain, blocks = split_blocks(output, ("api", "state"), "UsersIndexes")
        values = key_values(plain)
        status = values.get("status")
        body = blocks.get("api", [])
        state = blocks.get("state", [])
        has_state = True if "state" in blocks else (False if values.get("state") == "missing" else None)
        if status is None or not status.isdigit():
            raise FactProcessError(f"UsersIndexes: unexpected output: {output[:3]!r}")
        if status == "000":
            return None
        if status != "200":
            raise FactProcessError(f"UsersIndexes: devpi answered GET / with HTTP {status}")
        try:
            answer = json.loads("\n".join(body))
            result = answer["result"]
            if not isinstance(result, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise FactProcessError("UsersIndexes: GET / did not return devpi's user list") from None
        facts = split_userlist(result)
        if has_state is not None:
            facts["passwords"], facts["state_damaged"] = _passwords(decode_text(state) if has_state else "")
        return facts


def _passwords(text: str) -> tuple[dict, str | None]:
    """The state file's password references, or ``{}`` and what is wrong with it."""
    if isinstance(text, Damaged):
        return {}, text.reason
    if not text.strip():
        return {}, None
    try:
        users = json.loads(text).get("users") or {}
        if not isinstance(users, dict) or not all(isinstance(v, dict) for v in users.values()):
            raise TypeError
        return dict(users), None
    except ValueError as error:
        return {}, f"not JSON ({error})"
    except (AttributeError, TypeError):
        return {}, "not the deploy's record of password references"

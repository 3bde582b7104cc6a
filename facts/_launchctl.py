"""
Pure parsers for what ``facts.launchd``'s commands print: ``launchctl print`` text,
the marker protocol ``LaunchdJob``'s command wraps it in, and ``LaunchdSession``'s
``key=value`` lines. No I/O here; the commands, the marker
protocol and the result contract are described in ``facts/launchd.py``.
"""

from __future__ import annotations

import re

from pyinfra.api.exceptions import FactProcessError

from ._output import key_values

# launchctl's exit status when the service (or the domain) is not there: 113,
# "Could not find specified service" (`launchctl error 113`), launchctl 2 (10.10+).
NOT_FOUND_STATUS = 113
# The domain itself is not there: gui/<uid> over SSH without that user's console login
# answers 125 ("Domain does not support specified action"), sometimes 112 ("Could not
# find domain for ..."); see ../shared/MACOS.md. A domain that is not there holds no job.
NO_DOMAIN_STATUSES = (112, 125)
# Every print status that means "not loaded in that domain".
NOT_LOADED_STATUSES = (NOT_FOUND_STATUS, *NO_DOMAIN_STATUSES)

# Marker lines written by the command; launchctl itself never prints a line that
# starts with "@" at column 0 (its lines are a header, indented fields, or messages).
_MARKER_RE = re.compile(r"^@(domain|exit|disabled|no-launchctl)(?: (.*))?$")

# What launchctl prints when the service (or the whole domain) does not exist:
#   print, macOS 11+:  'Bad request.' + 'Could not find service "x" in domain for user gui: 501'
#   print, no GUI session (112): 'Bad request.' + 'Could not find domain for user gui: 501'
#   print, no GUI session (125): 'Could not print domain: 125: Domain does not support specified action'
_NOT_FOUND_RE = re.compile(
    r"^(Could not find (service|domain)\b.*|Bad request\.?"
    r"|(.*: )?(125: )?Domain does not support specified action\.?)$"
)

# `launchctl print` starts with "<target> = {" at column 0, where target is
# "gui/501/com.foo" (modern), "system/com.foo", or just "com.foo" (OS X 10.10).
_PRINT_HEADER_RE = re.compile(r"^(?P<target>\S.*?) = \{\s*$")
_TARGET_RE = re.compile(
    r"^(?P<domain>system|(?:gui|user|login|session|pid)/[^/\s]+)/(?P<label>.+)$"
)

# "gui/501 [100003]": the bracket is the audit session id, not part of the domain.
_DOMAIN_FIELD_RE = re.compile(r"^(?P<domain>\S+)(?: \[[^\]]*\])?$")
_LEADING_INT_RE = re.compile(r"^(-?\d+)\b")
_TRAILING_INT_RE = re.compile(r"(\d+)\s*$")

# Every key a loaded job's dict has, whichever launchctl command it came from.
_EMPTY_JOB: dict = {
    "loaded": True,
    "launchctl_available": True,
    "domain": None,
    "label": None,
    "state": None,  # launchd's top-level state: "running", "not running", "spawn scheduled", ...
    "running": False,
    "pid": None,
    "last_exit_code": None,  # None: never exited, unknown, or ended by a signal
    "last_exit_signal": None,  # as printed ("Killed: 9")
    "last_exit_signal_number": None,
    "last_exit_reason": None,  # modern `print` only, e.g. "JETSAM_REASON_MEMORY_IDLE_EXIT"
    "program": None,
    "arguments": [],
    "path": None,  # the plist launchd loaded the job from
    "runs": None,
    "disabled": False,
    "type": None,  # "LaunchAgent", "LaunchDaemon", "Submitted", ... (not on OS X 10.10)
    "job_state": None,
    "spawn_type": None,
    "working_directory": None,
    "stdout_path": None,
    "stderr_path": None,
    "environment": {},
    "properties": [],
    # ThrottleInterval as launchd applies it ("minimum runtime = N"); None: not printed.
    "minimum_runtime": None,
    # KeepAlive's SuccessfulExit as launchd holds it: the "successful exit => 0|1"
    # semaphore (False: restart only after a failure); None: no such semaphore.
    "successful_exit": None,
}


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _not_found_message(lines: list[str]) -> bool:
    """True when the non-blank lines are only launchctl's "no such service" messages."""
    text = [line.strip() for line in lines if line.strip()]
    return bool(text) and all(_NOT_FOUND_RE.match(line) for line in text)


def _looks_like_print(lines: list[str]) -> bool:
    return any(_PRINT_HEADER_RE.match(line) for line in lines)


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    match = _LEADING_INT_RE.match(value.strip())
    return int(match.group(1)) if match else None


def parse_print(lines: list[str]) -> dict:
    """Parse the text of ``launchctl print <domain>/<label>``."""
    header_at = next(
        (i for i, line in enumerate(lines) if _PRINT_HEADER_RE.match(line)), None
    )
    if header_at is None:
        raise FactProcessError(
            "launchctl print output has no '<target> = {' header line"
        )
    # Lines before the header are stderr chatter (warnings); the job is what follows.
    header = lines[header_at]
    target = _PRINT_HEADER_RE.match(header).group("target")
    header_indent = _indent(header)

    body: list[str] = []
    for line in lines[header_at + 1 :]:
        if line.strip() == "}" and _indent(line) == header_indent:
            break
        body.append(line)
    # A missing closing brace (a trimmed or cut-off output) is tolerated: what was
    # printed is still launchd's word on the fields it contains.

    nonblank = [line for line in body if line.strip()]
    if not nonblank:
        raise FactProcessError(f"launchctl print output for {target!r} has no fields")
    # Top-level fields share the shallowest indentation (one tab, or four spaces on
    # OS X 10.10). Nested blocks ("endpoints", "event channels", "resource coalition",
    # ...) are indented deeper and carry their own "state =" / "pid =" lines, which
    # must not be taken for the job's. Indentation is used instead of counting braces
    # because real outputs contain lines such as "0 = \t\t\t\t]" (an LWCR block) and
    # arguments may themselves contain braces.
    top = min((_indent(line) for line in nonblank), key=len)

    fields: dict[str, str] = {}
    blocks: dict[str, list[str]] = {}
    flags: list[str] = []
    current_block: str | None = None
    for line in body:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent != top:
            if current_block is not None:
                blocks[current_block].append(line)
            continue
        # A line at the top level ends any open block.
        text = line.strip()
        current_block = None
        if text in ("}", "]"):
            continue
        if text.endswith("{") and ("=" in text):
            key = re.sub(r"\s*=>?\s*\{$", "", text).strip()
            current_block = key
            blocks.setdefault(key, [])
            continue
        if "=" in text:
            key, _, value = text.partition("=")
            fields.setdefault(key.strip(), value.strip())
        else:
            flags.append(text)

    def block_items(name: str) -> list[str]:
        raw = blocks.get(name, [])
        inner = [line for line in raw if line.strip() not in ("}", "]")]
        if not inner:
            return []
        child = min((_indent(line) for line in inner), key=len)
        # Keep only the block's own items (one level down), not nested sub-blocks.
        return [line[len(child) :] for line in inner if _indent(line) == child]

    target_match = _TARGET_RE.match(target)
    label = target_match.group("label") if target_match else target
    domain = target_match.group("domain") if target_match else None
    if domain is None and "domain" in fields:
        domain_match = _DOMAIN_FIELD_RE.match(fields["domain"])
        # OS X 10.10 prints the internal name "com.apple.xpc.launchd.domain.system";
        # only a launchctl-style domain ("gui/501", "system", ...) is useful here.
        candidate = domain_match.group("domain") if domain_match else None
        if candidate and (candidate == "system" or "/" in candidate):
            domain = candidate

    environment = {}
    for item in block_items("environment"):
        key, sep, value = item.partition(" => ")
        if sep:
            environment[key.strip()] = value.strip()

    successful_exit = None
    for item in block_items("semaphores"):
        key, sep, value = item.partition(" => ")
        if sep and key.strip() == "successful exit":
            number = _int_or_none(value)
            successful_exit = None if number is None else number != 0

    properties_value = fields.get("properties", "")
    properties = [p.strip() for p in properties_value.split("|") if p.strip()]

    job = dict(_EMPTY_JOB)
    job.update(
        {
            "domain": domain,
            "label": label,
            "state": fields.get("state"),
            "pid": _int_or_none(fields.get("pid")),
            "program": fields.get("program"),
            "arguments": block_items("arguments"),
            "path": fields.get("path"),
            "runs": _int_or_none(fields.get("runs")),
            "type": fields.get("type"),
            "job_state": fields.get("job state"),
            "spawn_type": fields.get("spawn type"),
            "working_directory": fields.get("working directory"),
            "stdout_path": fields.get("stdout path"),
            "stderr_path": fields.get("stderr path"),
            "last_exit_reason": fields.get("last exit reason"),
            "environment": environment,
            "properties": properties,
            "minimum_runtime": _int_or_none(fields.get("minimum runtime")),
            "successful_exit": successful_exit,
        }
    )
    if job["state"] is None:
        # Every loaded job's print has a top-level state; without one the layout was
        # not understood, and guessing would report a live job as stopped.
        raise FactProcessError(
            f"launchctl print output for {target!r} has no top-level 'state'"
        )
    job["running"] = job["state"] == "running"

    signal = fields.get("last terminating signal")
    if signal:
        # A signal death replaces the exit code: launchd prints
        # "last terminating signal = Killed: 9" and drops "last exit code". Should
        # both ever be present, the signal is the more specific account of the end.
        job["last_exit_signal"] = signal
        number = _TRAILING_INT_RE.search(signal)
        job["last_exit_signal_number"] = int(number.group(1)) if number else None
    else:
        # "(never exited)" has no number and maps to None; "78: EX_CONFIG" to 78.
        job["last_exit_code"] = _int_or_none(fields.get("last exit code"))
    return job


def _split_markers(lines: list[str]) -> tuple[dict, list[str]]:
    """Split marker-wrapped output into (markers, print lines)."""
    markers: dict[str, str | None] = {}
    print_lines: list[str] = []
    in_print = False
    for line in lines:
        match = _MARKER_RE.match(line)
        if not match:
            # Lines outside the print section (none are expected) are not its answer.
            if in_print:
                print_lines.append(line)
            continue
        name, value = match.group(1), match.group(2)
        markers[name] = value.strip() if value is not None else None
        in_print = name == "domain"
    return markers, print_lines


def _excerpt(lines: list[str], limit: int = 3) -> str:
    text = [line.strip() for line in lines if line.strip()]
    return " / ".join(text[:limit]) or "(no output)"


def _parse_unwrapped(lines: list[str]) -> dict | None:
    """Bare launchctl output: decide the format from the text alone."""
    if _looks_like_print(lines):
        return parse_print(lines)
    if _not_found_message(lines):
        return None
    raise FactProcessError(f"not launchctl print output: {_excerpt(lines)}")


def _status(markers: dict, name: str) -> int:
    value = markers.get(name)
    if value is None or not re.fullmatch(r"-?\d+", value):
        raise FactProcessError(f"@{name} marker has no exit status: {value!r}")
    return int(value)


def parse_job(output: list[str]) -> dict | None:
    """``LaunchdJob``'s result from its command's output (or bare launchctl output)."""
    lines = [line.rstrip("\r") for line in output]
    if not any(_MARKER_RE.match(line) for line in lines):
        return _parse_unwrapped(lines)

    markers, print_lines = _split_markers(lines)
    domain = markers.get("domain") or None
    if "no-launchctl" in markers:
        return {"loaded": False, "launchctl_available": False, "domain": domain}

    print_status = _status(markers, "exit")
    if print_status == 0:
        if not _looks_like_print(print_lines):
            raise FactProcessError(
                f"launchctl print exited 0 but printed no job: {_excerpt(print_lines)}"
            )
        job = parse_print(print_lines)
    elif print_status in NOT_LOADED_STATUSES or _not_found_message(print_lines):
        # 113: no such service in the domain; 112/125: no such domain (gui/<uid> without
        # that user's console login), which holds nothing. The texts vary by release; a
        # body that parses would be odd but is launchd's own word, so prefer it.
        if _looks_like_print(print_lines):
            job = parse_print(print_lines)
        else:
            return None
    else:
        raise FactProcessError(
            f"launchctl print exited {print_status}: {_excerpt(print_lines)}"
        )

    if domain:
        # The domain that was asked is authoritative; OS X 10.10's header has none.
        job["domain"] = domain
    job["disabled"] = markers.get("disabled") == "true"
    return job


def parse_session(output: list[str]) -> dict:
    """``LaunchdSession``'s result from its ``key=value`` lines.

    The domain is taken as the command chose it (the rule is the command's); it is only
    checked to be one of the two the rule can give for this uid.
    """
    values = key_values(output)
    uid = values.get("uid", "")
    if not uid.isdigit() or any(
        key not in values for key in ("home", "domain", "launchctl")
    ):
        raise FactProcessError(f"LaunchdSession: unexpected output: {output[:5]!r}")
    if values["domain"] not in (f"gui/{uid}", f"user/{uid}"):
        raise FactProcessError(
            f"LaunchdSession: domain {values['domain']!r} is not gui/{uid} or user/{uid}"
        )
    console = values.get("console_uid", "")
    return {
        "uid": int(uid),
        "home": values["home"],
        "console_uid": int(console) if console.isdigit() else None,
        "domain": values["domain"],
        "launchctl": values["launchctl"] == "true",
        "user": values.get("user") or None,
        "group": values.get("group") or None,
    }

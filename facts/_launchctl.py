"""
Pure parsers for what ``facts.launchd``'s commands print: ``launchctl print`` and
``launchctl list <label>`` text, the marker protocol ``LaunchdJob``'s command wraps them
in, and ``LaunchdSession``'s ``key=value`` lines. No I/O here; the commands, the marker
protocol and the result contract are described in ``facts/launchd.py``.
"""

from __future__ import annotations

import re

from pyinfra.api.exceptions import FactProcessError

from ._output import key_values

# launchctl's exit status when the service (or the domain) is not there: 113,
# "Could not find specified service" (`launchctl error 113`), launchctl 2 (10.10+).
NOT_FOUND_STATUS = 113

# Marker lines written by the command; launchctl itself never prints a line that
# starts with "@" at column 0 (its lines are a header, indented fields, or messages).
_MARKER_RE = re.compile(r"^@(domain|exit|list-exit|disabled|no-launchctl)(?: (.*))?$")

# What launchctl prints when the service (or the whole domain) does not exist:
#   print, macOS 11+:  'Bad request.' + 'Could not find service "x" in domain for user gui: 501'
#   print, no GUI session: 'Bad request.' + 'Could not find domain for user gui: 501'
#   list:              'Could not find service "x" in domain for port'
_NOT_FOUND_RE = re.compile(r"^(Could not find (service|domain)\b.*|Bad request\.?)$")

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

# Darwin signal numbers (<sys/signal.h>; also the order `killall -l` prints on macOS).
# Linux numbers differ (e.g. SIGBUS is 7 there, 10 here), so Python's `signal`
# module, which reflects the controller's OS, must not be used to name them.
DARWIN_SIGNALS = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGEMT",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGBUS",
    11: "SIGSEGV",
    12: "SIGSYS",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
    16: "SIGURG",
    17: "SIGSTOP",
    18: "SIGTSTP",
    19: "SIGCONT",
    20: "SIGCHLD",
    21: "SIGTTIN",
    22: "SIGTTOU",
    23: "SIGIO",
    24: "SIGXCPU",
    25: "SIGXFSZ",
    26: "SIGVTALRM",
    27: "SIGPROF",
    28: "SIGWINCH",
    29: "SIGINFO",
    30: "SIGUSR1",
    31: "SIGUSR2",
}

# Every key a loaded job's dict has, whichever launchctl command it came from.
_EMPTY_JOB: dict = {
    "loaded": True,
    "launchctl_available": True,
    "source": None,  # "print" or "list": which launchctl output was parsed
    "domain": None,
    "label": None,
    "state": None,  # launchd's top-level state: "running", "not running", "spawn scheduled", ...
    "running": False,
    "pid": None,
    "last_exit_code": None,  # None: never exited, unknown, or ended by a signal
    "last_exit_signal": None,  # as printed ("Killed: 9") or, from list, "SIGKILL"
    "last_exit_signal_number": None,
    "last_exit_reason": None,  # modern `print` only, e.g. "JETSAM_REASON_MEMORY_IDLE_EXIT"
    "program": None,
    "arguments": [],
    "path": None,  # the plist launchd loaded the job from (print only)
    "runs": None,
    "disabled": False,
    "type": None,  # "LaunchAgent", "LaunchDaemon", "Submitted", ... (modern print only)
    "job_state": None,
    "spawn_type": None,
    "working_directory": None,
    "stdout_path": None,
    "stderr_path": None,
    "environment": {},
    "properties": [],
}


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _not_found_message(lines: list[str]) -> bool:
    """True when the non-blank lines are only launchctl's "no such service" messages."""
    text = [line.strip() for line in lines if line.strip()]
    return bool(text) and all(_NOT_FOUND_RE.match(line) for line in text)


def _looks_like_print(lines: list[str]) -> bool:
    return any(_PRINT_HEADER_RE.match(line) for line in lines)


def _looks_like_list(lines: list[str]) -> bool:
    text = [line.strip() for line in lines if line.strip()]
    return bool(text) and text[0] == "{" and text[-1] in ("};", "}")


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

    properties_value = fields.get("properties", "")
    properties = [p.strip() for p in properties_value.split("|") if p.strip()]

    job = dict(_EMPTY_JOB)
    job.update(
        {
            "source": "print",
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


def _list_scalar(text: str):
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    return text  # mach-port-object, file-descriptor-object, ???


_LIST_KEYED_RE = re.compile(r'^"(?P<key>(?:[^"\\]|\\.)*)" = (?P<value>.*)$')


def parse_list_dict(lines: list[str]) -> dict:
    """Parse ``launchctl list <label>`` output, launchd's old-style plist text::

    {
        "Label" = "com.x";
        "PID" = 123;
        "ProgramArguments" = (
            "/usr/bin/x";
        );
    };
    """
    text = [line.strip() for line in lines if line.strip()]
    if not text or text[0] != "{":
        raise FactProcessError("launchctl list output does not start with '{'")
    root: dict = {}
    stack: list = [root]
    for number, line in enumerate(text[1:], start=2):
        if not stack:
            raise FactProcessError(
                f"launchctl list output continues after its end: {line!r}"
            )
        container = stack[-1]
        if line in ("};", "}", ");", ")"):
            stack.pop()
            continue
        keyed = _LIST_KEYED_RE.match(line)
        if keyed:
            if not isinstance(container, dict):
                raise FactProcessError(
                    f"launchctl list: keyed entry inside an array: {line!r}"
                )
            key, value = keyed.group("key"), keyed.group("value")
        else:
            if not isinstance(container, list):
                raise FactProcessError(
                    f"launchctl list: unparseable line {number}: {line!r}"
                )
            key, value = None, line
        if value in ("{", "("):
            child: dict | list = {} if value == "{" else []
            if key is None:
                container.append(child)
            else:
                container[key] = child
            stack.append(child)
            continue
        if not value.endswith(";"):
            raise FactProcessError(
                f"launchctl list: unparseable line {number}: {line!r}"
            )
        scalar = _list_scalar(value[:-1])
        if key is None:
            container.append(scalar)
        else:
            container[key] = scalar
    if stack:
        raise FactProcessError("launchctl list output ends inside an unclosed block")
    return root


def decode_wait_status(status: int) -> tuple[int | None, int | None]:
    """Split a raw wait(2) status into (exit code, signal number).

    `launchctl list <label>` prints "LastExitStatus" as the raw status launchd got
    from wait4(): launchctl's own `list` table decodes that very value with
    WIFEXITED/WEXITSTATUS/WTERMSIG (launchd source, launchctl.c print_jobs, mirrored
    in freebsd/openlaunchd), while `list <label>` prints the integer untouched. So
    256 is "exited 1", 9 is "killed by SIGKILL", 15 "killed by SIGTERM", and 3840
    "exited 15". A negative value is the table's convention (-N: signal N).
    """
    if status < 0:
        return None, -status
    low = status & 0x7F
    if low == 0:  # WIFEXITED
        return (status >> 8) & 0xFF, None
    if low != 0x7F:  # WIFSIGNALED (0x7f would be "stopped", which a reaped job is not)
        return None, low
    return None, None


def parse_list(lines: list[str]) -> dict:
    data = parse_list_dict(lines)
    if not isinstance(data.get("Label"), str):
        # launchd always exports the job's Label; a dict without one is not a job.
        raise FactProcessError('launchctl list output has no "Label"')
    pid = data.get("PID")
    pid = pid if isinstance(pid, int) else None
    arguments = data.get("ProgramArguments")
    arguments = [str(a) for a in arguments] if isinstance(arguments, list) else []
    program = data.get("Program")
    if not isinstance(program, str):
        program = arguments[0] if arguments else None

    job = dict(_EMPTY_JOB)
    job.update(
        {
            "source": "list",
            "label": data.get("Label"),
            # `list` reports no launchd state; a PID is the only sign of a live process.
            "state": "running" if pid is not None else "not running",
            "running": pid is not None,
            "pid": pid,
            "program": program,
            "arguments": arguments,
            "working_directory": data.get("WorkingDirectory"),
            "stdout_path": data.get("StandardOutPath"),
            "stderr_path": data.get("StandardErrorPath"),
        }
    )
    environment = data.get("EnvironmentVariables")
    if isinstance(environment, dict):
        job["environment"] = {str(k): str(v) for k, v in environment.items()}
    status = data.get("LastExitStatus")
    if isinstance(status, int):
        code, signal = decode_wait_status(status)
        job["last_exit_code"] = code
        if signal is not None:
            job["last_exit_signal_number"] = signal
            job["last_exit_signal"] = DARWIN_SIGNALS.get(signal, f"signal {signal}")
    return job


def _split_markers(lines: list[str]) -> tuple[dict, list[str], list[str]]:
    """Split marker-wrapped output into (markers, print lines, list lines)."""
    markers: dict[str, str | None] = {}
    sections: dict[str, list[str]] = {"print": [], "list": []}
    section: str | None = None
    for line in lines:
        match = _MARKER_RE.match(line)
        if not match:
            # Lines outside a section (none are expected) are not launchctl's answer.
            if section is not None:
                sections[section].append(line)
            continue
        name, value = match.group(1), match.group(2)
        markers[name] = value.strip() if value is not None else None
        section = {"domain": "print", "exit": "list"}.get(name)
    return markers, sections["print"], sections["list"]


def _excerpt(lines: list[str], limit: int = 3) -> str:
    text = [line.strip() for line in lines if line.strip()]
    return " / ".join(text[:limit]) or "(no output)"


def _parse_unwrapped(lines: list[str]) -> dict | None:
    """Bare launchctl output: decide the format from the text alone."""
    if _looks_like_print(lines):
        return parse_print(lines)
    if _looks_like_list(lines):
        return parse_list(lines)
    if _not_found_message(lines):
        return None
    raise FactProcessError(f"not launchctl print or list output: {_excerpt(lines)}")


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

    markers, print_lines, list_lines = _split_markers(lines)
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
    elif "list-exit" in markers:
        list_status = _status(markers, "list-exit")
        if list_status == 0 and _looks_like_list(list_lines):
            job = parse_list(list_lines)
        elif _not_found_message(list_lines) or list_status == NOT_FOUND_STATUS:
            return None
        else:
            raise FactProcessError(
                f"launchctl print exited {print_status} ({_excerpt(print_lines)}) and "
                f"launchctl list exited {list_status} ({_excerpt(list_lines)})"
            )
    elif print_status == NOT_FOUND_STATUS or _not_found_message(print_lines):
        # 113 is "no such service"; its text varies by release, a body that parses
        # would be odd but is launchd's own word, so prefer it.
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

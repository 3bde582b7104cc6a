"""launchctl test double: enough of macOS launchctl/launchd to drive the deploy on Linux.

CI has no launchd, so the end-to-end tests put this script first on the SSH session's
PATH as ``launchctl``. It is stdlib-only and runs under whatever ``python3`` is on PATH.

State
-----
``LAUNCHCTL_DOUBLE_STATE`` (required) names a directory holding everything the double
knows; without it every verb fails with exit 1. Layout (the test harness may read it):

    .lock                              flock(2) taken by every mutating verb
    console_uid                        optional, written by a test: the uid logged in at
                                       the console. Absent: the owner of /dev/console
                                       as the caller sees it (root, or no
                                       /dev/console: nobody, the login window).
    no_gui_status                      optional knob: "112" makes verbs on a missing
                                       gui/<uid> answer 112 instead of 125.
    bootout_in_progress                optional knob: bootout of a running job answers
                                       36 at once and the job stops asynchronously.
    overrides.json                     enable/disable overrides, per domain
    teardown.json                      "<domain>/<label>" -> end of the teardown window
    jobs/<gui_UID|user_UID|system>/<label>/   one directory per loaded job
        job.json                       the parsed plist plus what bootstrap derived
        stopping                       an asynchronous bootout (36) is under way
        status.json                    written only by the job's supervisor (atomic
                                       replace): supervisor_pid, pid, pgid, state, runs,
                                       last_exit ({"code": n} | {"signal": n}), ...
        requests/, acks/               launchctl -> supervisor requests and replies

Root (launchctl run through sudo, for the system domain) and the state dir's owner share
the state dir: what root creates in it is given to the dir's owner (the lock file, the
JSON files), except the system domain's job dirs, which stay root's as launchd's are;
everyone may read them (``print``). sudo resets the environment: a test that runs the
double through sudo keeps ``LAUNCHCTL_DOUBLE_STATE`` with its sudoers ``env_keep``.

Other knobs: ``LAUNCHCTL_DOUBLE_TEARDOWN_SECONDS`` (default 0.3; 0 disables) is how
long after a ``bootout`` a ``bootstrap`` of the same label still fails with error 5,
like launchd while it tears the old job down. ``LAUNCHCTL_DOUBLE_RICH_ERRORS`` (1/0)
chooses root-style or user-style bootstrap/bootout errors (default: rich when euid is
0; real launchctl only shows the per-path detail to root and tells anyone else "Try
re-running the command as root for richer errors."). ``LAUNCHCTL_DOUBLE_DEFAULT_SESSION_TYPE``
(default ``Aqua``, ``any`` disables) is the session type assumed for a plist without
``LimitLoadToSessionType``.

Domains
-------
``gui/<uid>`` and ``user/<uid>`` of the current user, and ``system``: three separate sets
of jobs. A label may be loaded in more than one at once, but ``bootstrap user/<uid>`` of
a label that runs in ``gui/<uid>`` is refused with 5 (the evidence set's sample; the
other order is allowed: a console login loads an Aqua agent into ``gui/<uid>`` while the
``user/<uid>`` job holds the label). Sources are in ../shared/MACOS.md.

* The console owner is ``console_uid`` when present, else ``os.stat("/dev/console")``'s
  owner (Homebrew's Library/Homebrew/services/system.rb). ``gui/<uid>`` exists only for
  the console owner: every verb on another ``gui/<uid>`` answers 125 "Domain does not
  support specified action" ("Could not print domain: 125: ..." for print and
  print-disabled, "Bootstrap failed: 125: ...", "Boot-out failed: 125: ...", 'Could not
  kickstart service "<label>": 125: ...' and alike for enable/disable;
  lidge-jun/opencodex#1770, nix-community/home-manager#4413,
  NousResearch/hermes-agent#23387), or 112 "Bad request." / "Could not find domain for
  user gui: <uid>" with the ``no_gui_status`` knob (Sequoia).
* ``user/<uid>`` always exists (pam_launchd makes it for an SSH session:
  Mic92/sops-nix#966).
* "Anyone may read or query the system domain, but root privileges are required to make
  modifications" (launchctl(1)): ``print`` and ``print-disabled`` of ``system`` work for
  everyone; bootstrap, bootout, enable, disable and kickstart there need euid 0, and
  anyone else gets launchd's EPERM: exit 1, "Bootstrap failed: 1: Operation not
  permitted" / "Boot-out failed: 1: ..." / "Could not <verb> service: 1: Operation not
  permitted" (launchd logs "Caller not allowed to perform action ... code = 1: Operation
  not permitted").

Who is root: euid 0. For the legacy verbs (``load``, ``list``), "as root" means through
sudo (SUDO_UID set): the e2e suite's SSH user is root standing in for a Mac user, whose
own session is what a root without sudo gets.

A system job with ``UserName``
(and ``GroupName``, default the user's primary group) is started as that user:
initgroups (unless ``InitGroups`` is false), setgid, setuid, with SHELL, HOME, USER and
LOGNAME from the user's record (launchd's ``job_postfork_become_user``); its log files
are opened before that, as root, so one that did not exist becomes root's. Its plist must
be root's and not group/world-writable (122 "Path had bad ownership/permissions"); a
plist without LimitLoadToSessionType loads there (the system's session).

Verbs (output formats and exit codes follow real launchctl, macOS 13-15)
-----------------------------------------------------------------------
bootstrap <domain> <plist>...  load; refused with 5 when the label is loaded or being
                               torn down, when the session type does not fit the domain
                               (gui = Aqua, user = Background, system = System; 134 as
                               root), when disabled (119 as root), on a group/world-writable
                               or foreign-owned plist (122 as root; system: not root's), on
                               a bad plist; missing file: 2; system as non-root: 1.
bootout <domain>/<label> | <domain> <plist>...
                               SIGTERM to the job's process group, SIGKILL after the exit
                               timeout, waits until it is gone, unloads; "Boot-out failed:
                               3: No such process" (exit 3) when not loaded. With the
                               ``bootout_in_progress`` knob, a running job's bootout answers
                               36 "Operation now in progress" at once (osquery/osquery#5698)
                               and the job stays loaded until it has stopped.
enable|disable <domain>/<label>  persistent override; disable does not stop a loaded job.
kickstart [-kp] <domain>/<label> start now, ignoring the throttle (-k: SIGTERM the
                               running instance first, then restart; without -k a running
                               job is left alone, exit 0; -p prints the pid, as
                               "service spawned with pid: N" on a tty); 113 when not
                               loaded, 119 when disabled.
print <domain>/<label>          macOS 14-style description (values are the double's truth):
                               ``minimum runtime`` (ThrottleInterval, default 10), a
                               ``semaphores = {...}`` block for KeepAlive's SuccessfulExit
                               (``successful exit => 0|1``) and Crashed (``after crash =>
                               0|1``); 113 "Bad request. / Could not find service ..." on
                               stderr.
print <domain>                  a short description of the domain (type, handle, its
                               services); 125 for a gui domain that is not there.
print-disabled <domain>         ``"label" => disabled|enabled`` (macOS 13+ wording; older
                               releases printed true/false).
list [label]                    the legacy table / the legacy dict of the caller's own
                               session, not a chosen domain: ``user/<uid>`` (the SSH
                               session's, Background), ``system`` through sudo; 113 when
                               unknown there (Homebrew/brew PR #588).
managername                     ``Background``: the double's callers come over SSH
                               (Mic92/sops-nix#966).
load [-w] [-S type] <plist>...  legacy load: an Aqua agent (no LimitLoadToSessionType, no
                               -S) lands in gui/<uid> when the caller owns the console;
                               headless it loads nothing, says "Could not find domain for
                               port (Aqua)" and exits 0 (actions/runner#349); -S Background
                               (or the plist's key) lands in user/<uid>; through sudo, in
                               system. -w clears a disable override; "Load failed: <n>: ..."
                               on errors.
anything else                   "Unrecognized subcommand: X" + usage, exit 1 (as in the
                               Procursus reimplementation; a bad target specifier is 64).
_finish-bootout <jobdir>        NOT a launchctl verb: the detached rest of a bootout that
                               answered 36.
_double-shutdown                NOT a launchctl verb: boots out every job in the state dir
                               and waits (and SIGKILLs stragglers by recorded pid); the test
                               harness calls it at teardown.

Supervision
-----------
bootstrap double-forks a detached supervisor per job (setsid, stdio on /dev/null, all
other fds closed, SIGHUP ignored), so it outlives the SSH session that ran bootstrap.
The supervisor starts the program in its own session/process group with launchd's
environment (PATH=/usr/bin:/bin:/usr/sbin:/sbin, HOME, USER, LOGNAME, SHELL, TMPDIR,
XPC_SERVICE_NAME, then EnvironmentVariables), WorkingDirectory (default /), Umask, and
stdout/stderr appended to StandardOutPath/StandardErrorPath (default /dev/null). It
reaps the job (no zombies), kills what is left of its process group (unless
AbandonProcessGroup), records runs / pid / last exit code / last terminating signal, and
starts it at load when RunAtLoad, KeepAlive=true or KeepAlive.SuccessfulExit is set
(launchd.plist(5): SuccessfulExit implies RunAtLoad), restarts it per KeepAlive (true,
or a dict with SuccessfulExit and/or Crashed: Crashed means SIGILL, SIGTRAP, SIGABRT,
SIGFPE, SIGBUS, SIGSEGV or SIGSYS, not SIGKILL; several keys are OR-ed) no sooner
than ThrottleInterval (default 10 s) after the previous spawn, showing
``state = spawn scheduled`` meanwhile. A program that cannot be spawned (missing file,
bad working directory) counts as an exit with 78 (EX_CONFIG), as launchd reports it.
It polls requests/ every 20 ms, exits after a bootout, and also stops its job and exits
when its job directory disappears or when it receives SIGTERM.

NOT emulated
------------
The login/<asid>, session and pid domains (exit 125 with a note); other users'
domains (exit 1, "Operation not permitted"; as root 112; a gui domain of a user not at
the console answers 125 first, as above); most of what printing a whole
domain shows (only its type, handle and services are printed);
sockets, MachServices, endpoints, event channels and LaunchEvents; StartInterval,
StartCalendarInterval (accepted, never fires: a test runs such a job with ``kickstart``,
which runs it once, as launchd does), WatchPaths, QueueDirectories, StartOnMount; KeepAlive's
PathState, OtherJobEnabled, NetworkState and AfterInitialDemand (ignored); UserName,
GroupName and InitGroups outside the system domain (launchd honours them for root's
agents only); RootDirectory, Nice, resource limits, LowPriorityIO,
ProcessType semantics (only reported as ``spawn type``); real session types, login and
logout (the console owner is read on every call; Terminal.app's Aqua session: every
caller is taken to come over SSH); the ``state = SIGTERMed`` a job shows while a bootout
drains it (kxn/codex-remote-feishu#914) and the ``immediate reason = semaphore`` of a
SuccessfulExit job; jetsam; ExitTimeOut beyond 5 s (capped at 5, which is also real launchd's
default for agents); ``kickstart -s``; legacy unload/start/stop and every other verb.
Error 5 is the catch-all it is on real macOS: as a non-root user most bootstrap
refusals look the same, so consumers must re-probe with ``print``.
"""

import fcntl
import json
import os
import signal
import sys
import time

# plistlib, pwd, shutil, subprocess and zlib are imported where they are needed: every
# launchctl call starts a Python, and the read-only verbs should start fast.

STATE_ENV = "LAUNCHCTL_DOUBLE_STATE"
TEARDOWN_ENV = "LAUNCHCTL_DOUBLE_TEARDOWN_SECONDS"
RICH_ENV = "LAUNCHCTL_DOUBLE_RICH_ERRORS"
SESSION_ENV = "LAUNCHCTL_DOUBLE_DEFAULT_SESSION_TYPE"

DEFAULT_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
DEFAULT_THROTTLE = 10
EXIT_TIMEOUT_CAP = 5  # real launchd prints "exit timeout = 5" for agents without ExitTimeOut
ASID = 100008
POLL = 0.02
EX_CONFIG = 78
SESSION_OF = {"gui": "Aqua", "user": "Background", "system": "System"}

# launchd / errno texts used in messages (`launchctl error <n>`).
ERRTEXT = {
    1: "Operation not permitted",
    2: "No such file or directory",
    3: "No such process",
    5: "Input/output error",
    36: "Operation now in progress",
    37: "Operation already in progress",
    112: "Could not find specified domain",
    113: "Could not find specified service",
    119: "Service is disabled",
    122: "Path had bad ownership/permissions",
    125: "Domain does not support specified action",
    134: "Service cannot load in requested session",
}
HINT = "Try re-running the command as root for richer errors."
# Legacy load's own hint (drduh/YubiKey-Guide#504).
LOAD_HINT = "Try running `launchctl bootstrap` as root for richer errors."

SYSEXITS = {
    64: "EX_USAGE", 65: "EX_DATAERR", 66: "EX_NOINPUT", 67: "EX_NOUSER",
    68: "EX_NOHOST", 69: "EX_UNAVAILABLE", 70: "EX_SOFTWARE", 71: "EX_OSERR",
    72: "EX_OSFILE", 73: "EX_CANTCREAT", 74: "EX_IOERR", 75: "EX_TEMPFAIL",
    76: "EX_PROTOCOL", 77: "EX_NOPERM", 78: "EX_CONFIG",
}

# Signals as a Mac prints them (strsignal(3) text and Darwin number), keyed by name so
# a Linux signal is reported the way macOS would report the same signal.
MAC_SIGNALS = {
    "SIGHUP": (1, "Hangup"), "SIGINT": (2, "Interrupt"), "SIGQUIT": (3, "Quit"),
    "SIGILL": (4, "Illegal instruction"), "SIGTRAP": (5, "Trace/BPT trap"),
    "SIGABRT": (6, "Abort trap"), "SIGFPE": (8, "Floating point exception"),
    "SIGKILL": (9, "Killed"), "SIGBUS": (10, "Bus error"),
    "SIGSEGV": (11, "Segmentation fault"), "SIGSYS": (12, "Bad system call"),
    "SIGPIPE": (13, "Broken pipe"), "SIGALRM": (14, "Alarm clock"),
    "SIGTERM": (15, "Terminated"), "SIGURG": (16, "Urgent I/O condition"),
    "SIGSTOP": (17, "Suspended (signal)"), "SIGTSTP": (18, "Suspended"),
    "SIGCONT": (19, "Continued"), "SIGCHLD": (20, "Child exited"),
    "SIGTTIN": (21, "Stopped (tty input)"), "SIGTTOU": (22, "Stopped (tty output)"),
    "SIGIO": (23, "I/O possible"), "SIGXCPU": (24, "Cputime limit exceeded"),
    "SIGXFSZ": (25, "Filesize limit exceeded"), "SIGVTALRM": (26, "Virtual timer expired"),
    "SIGPROF": (27, "Profiling timer expired"), "SIGWINCH": (28, "Window size changes"),
    "SIGUSR1": (30, "User defined signal 1"), "SIGUSR2": (31, "User defined signal 2"),
}
CRASH_SIGNALS = {"SIGILL", "SIGTRAP", "SIGABRT", "SIGFPE", "SIGBUS", "SIGSEGV", "SIGSYS"}

USAGES = {
    "bootstrap": "<domain-target> [service-path, service-path2, ...]",
    "bootout": "<domain-target> [service-path1, service-path2, ...] | <service-target>",
    "enable": "<service-target>",
    "disable": "<service-target>",
    "kickstart": "[-kp] <service-target>",
    "print": "<domain-target> | <service-target>",
    "print-disabled": "<domain-target>",
    "list": "[service-name]",
    "managername": "",
    "load": "[-wF] [-S <session>] <path> ...",
    "help": "<subcommand>",
}

MAIN_USAGE = """Usage: launchctl <subcommand> ... | help [subcommand]
Many subcommands take a target specifier that refers to a domain or service
within that domain. The available specifier forms are:

system/[service-name]
Targets the system-wide domain or service within. Root privileges are required
to make modifications.

user/<uid>/[service-name]
Targets the user domain or service within. A process running as the target user
may make modifications. Root may modify any user's domain. User domains do not
exist on iOS.

gui/<uid>/[service-name]
Targets the GUI domain or service within. Each GUI domain is associated with a
user domain, and a process running as the owner of that user domain may make
modifications. Root may modify any GUI domain. GUI domains do not exist on iOS.

session/<asid>/[service-name]
Targets a session domain or service within. A process running within the target
security audit session may make modifications. Root may modify any session
domain.

pid/<pid>/[service-name]
Targets a process domain or service within. Only the process which owns the
domain may modify it. Even root may not do so.

When using a legacy subcommand which manipulates a domain, the target domain is
assumed to be the system domain. On iOS, there is no support for per-user
domains, even though there is a mobile user.

Subcommands:
\tbootstrap       Bootstraps a domain or a service into a domain.
\tbootout         Tears down a domain or removes a service from a domain.
\tenable          Enables an existing service.
\tdisable         Disables an existing service.
\tkickstart       Forces an existing service to start.
\tprint           Prints a description of a domain or service.
\tprint-disabled  Prints which services are disabled.
\tlist            Lists information about services.
\tmanagername     Prints the name of the current launchd session.
\thelp            Prints the usage for a given subcommand.
"""


class Exit(Exception):
    """Finish the command with this exit code (messages already written)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def err(*lines):
    for line in lines:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def out(text):
    sys.stdout.write(text)
    sys.stdout.flush()


def fail(code, *lines):
    err(*lines)
    raise Exit(code)


def usage(verb):
    err(f"Usage: launchctl {verb} {USAGES.get(verb, '')}".rstrip())
    raise Exit(64)


def rich_errors():
    value = os.environ.get(RICH_ENV)
    if value is not None and value != "":
        return value not in ("0", "false", "no")
    return os.geteuid() == 0


def verb_failed(verb_title, code, path=None, detail=None):
    """Report a bootstrap/bootout failure the way launchctl does for this user."""
    lines = []
    if rich_errors():
        if path is not None and detail is not None:
            lines.append(f"{path}: {detail}")
        lines.append(f"{verb_title} failed: {code}: {ERRTEXT.get(code, 'Unknown error')}")
        fail(code, *lines)
    # Without root, launchd's per-path detail is withheld: everything but a missing
    # file collapses into error 5.
    if code == 2:
        fail(2, f"{verb_title} failed: 2: {ERRTEXT[2]}")
    fail(5, f"{verb_title} failed: 5: {ERRTEXT[5]}", LOAD_HINT if verb_title == "Load" else HINT)


# --------------------------------------------------------------------------- files

def state_root():
    root = os.environ.get(STATE_ENV)
    if not root:
        fail(1, f"launchctl (test double): {STATE_ENV} is not set; it must name the "
                "directory where the double keeps its jobs")
    jobs = os.path.join(root, "jobs")
    if not os.path.isdir(jobs):
        os.makedirs(jobs, exist_ok=True)
        give_to_state_owner(jobs)
    return os.path.abspath(root)


def give_to_state_owner(path):
    """Root (launchctl run through sudo for the system domain) shares the state dir with
    the user who owns it: what root creates there, that user must still be able to
    replace or lock (launchd's own state needs no such care: it is launchd's)."""
    if os.geteuid() != 0:
        return
    root = os.environ.get(STATE_ENV)
    try:
        st = os.stat(root)
        if st.st_uid != 0:
            os.chown(path, st.st_uid, st.st_gid)
    except (OSError, TypeError):
        pass


def read_json(path, default=None):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return default


def write_json_atomic(path, data):
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(16).hex()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    give_to_state_owner(tmp)
    os.replace(tmp, path)


class Lock:
    def __init__(self, root):
        self.path = os.path.join(root, ".lock")

    def __enter__(self):
        created = not os.path.exists(self.path)
        self.fh = open(self.path, "a")
        if created:
            give_to_state_owner(self.path)
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def domain_dirname(domain):
    return domain.replace("/", "_")


def job_dir(root, domain, label):
    return os.path.join(root, "jobs", domain_dirname(domain), label)


def loaded_job(root, domain, label):
    jdir = job_dir(root, domain, label)
    job = read_json(os.path.join(jdir, "job.json"))
    if job is None:
        return None, None, jdir
    status = read_json(os.path.join(jdir, "status.json"), {})
    return job, status, jdir


def all_job_dirs(root):
    jobs = os.path.join(root, "jobs")
    result = []
    for ddir in sorted(os.listdir(jobs)) if os.path.isdir(jobs) else []:
        if ddir.startswith("."):
            continue
        dpath = os.path.join(jobs, ddir)
        if not os.path.isdir(dpath):
            continue
        for label in sorted(os.listdir(dpath)):
            if not label.startswith("."):
                result.append(os.path.join(dpath, label))
    return result


# ----------------------------------------------------------------------- processes

def proc_start_ticks(pid):
    """Start time of pid (Linux /proc), to tell a live process from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            data = fh.read()
        return int(data.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def pid_alive(pid, start_ticks=None):
    """True if pid runs (zombies count as gone) and, when known, is the same process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = proc_state(pid)
    if state == "Z":
        return False
    if start_ticks is not None and state is not None:
        return proc_start_ticks(pid) == start_ticks
    return True


def group_alive(pgid):
    """True while any non-zombie process is left in process group pgid."""
    if os.path.isdir("/proc/self"):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def wait_until(predicate, timeout, interval=POLL):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def signal_name(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}"


def mac_signal(num):
    """(darwin number, description) for a signal number of this host."""
    name = signal_name(num)
    return MAC_SIGNALS.get(name, (num, f"Unknown signal: {num}"))


# ------------------------------------------------------------------------- targets

class Target:
    def __init__(self, kind, uid, name):
        self.kind = kind          # "gui" | "user" | "system"
        self.uid = uid            # None for the system domain
        self.name = name          # label or None
        self.domain = "system" if kind == "system" else f"{kind}/{uid}"

    @property
    def service(self):
        return f"{self.domain}/{self.name}"

    def not_found_text(self):
        # "... in domain for user gui: 501" / "... in domain for uid: 501" / "... for system"
        if self.kind == "system":
            return "system"
        return f"user gui: {self.uid}" if self.kind == "gui" else f"uid: {self.uid}"


def bad_specifier(verb):
    err("Unrecognized target specifier.",
        f"Usage: launchctl {verb} {USAGES.get(verb, '')}".rstrip(),
        "<service-target> takes a form of <domain-target>/<service-id>.",
        "Please refer to `man launchctl` for explanation of the <domain-target> specifiers.")
    raise Exit(64)


# Verbs that change a domain: the system domain takes them from root only ("Anyone may
# read or query the system domain, but root privileges are required to make
# modifications", launchctl(1)); launchd refuses anyone else with EPERM.
CHANGING_VERBS = ("bootstrap", "bootout", "enable", "disable", "kickstart", "load")


def not_permitted(verb):
    titles = {"bootstrap": "Bootstrap failed", "bootout": "Boot-out failed", "load": "Load failed"}
    if verb in titles:
        fail(1, f"{titles[verb]}: 1: {ERRTEXT[1]}")
    if verb in ("print", "print-disabled"):
        fail(1, f"Could not print domain: 1: {ERRTEXT[1]}")
    fail(1, f"Could not {verb} service: 1: {ERRTEXT[1]}")


def parse_target(verb, spec):
    parts = spec.split("/", 1)
    if parts[0] == "system":
        name = parts[1] if len(parts) == 2 and parts[1] != "" else None
        if name is not None and "/" in name:
            bad_specifier(verb)
        if verb in CHANGING_VERBS and os.geteuid() != 0:
            not_permitted(verb)
        return Target("system", None, name)
    parts = spec.split("/", 2)
    kind = parts[0]
    if kind in ("login", "session", "pid", "asid"):
        fail(125, f"launchctl (test double): the {kind} domain is not emulated; "
                  "only system, and gui/<uid> and user/<uid> of the current user are "
                  f"(exit 125: {ERRTEXT[125]})")
    if kind not in ("gui", "user") or len(parts) < 2 or not parts[1].isdigit():
        bad_specifier(verb)
    uid = int(parts[1])
    name = parts[2] if len(parts) == 3 and parts[2] != "" else None
    if name is not None and "/" in name:
        bad_specifier(verb)
    target = Target(kind, uid, name)
    if kind == "gui" and console_owner() != uid:
        no_gui_domain(verb, target)
    if uid != os.getuid():
        if os.geteuid() == 0:
            fail(112, "Bad request.", f"Could not find domain for {target.not_found_text()}")
        not_permitted(verb)
    return target


def console_owner():
    """The uid logged in at the console: the state dir's ``console_uid`` (a test's knob)
    when present, else the owner of ``/dev/console`` as this process sees it; root (also
    when /dev/console is missing) means the login window, nobody logged in. Homebrew
    tests the same (Library/Homebrew/services/system.rb: ``File.stat("/dev/console").uid``)."""
    root = os.environ.get(STATE_ENV)
    if root:
        try:
            with open(os.path.join(root, "console_uid"), encoding="utf-8") as fh:
                text = fh.read().strip()
        except (FileNotFoundError, NotADirectoryError):
            text = ""
        if text.isdigit():
            return int(text)
    try:
        return os.stat("/dev/console").st_uid
    except OSError:
        return 0


def state_knob(name):
    """The stripped text of the state dir's knob file ``name``, or None when absent."""
    root = os.environ.get(STATE_ENV)
    if not root:
        return None
    try:
        with open(os.path.join(root, name), encoding="utf-8") as fh:
            return fh.read().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def no_gui_domain(verb, target):
    """A verb on ``gui/<uid>`` while ``<uid>`` is not logged in at the console: the
    domain is not there. macOS answers exit 125 "Domain does not support specified
    action" from an SSH session: print (lidge-jun/opencodex#1770, duh17/oppi#38,
    agentcage/agentcage PR #308), bootstrap (nix-community/home-manager#4413),
    kickstart (NousResearch/hermes-agent#23387). Sometimes (Sequoia; macOS 26 when
    nothing has run as the uid since boot) it is 112 "Bad request." / "Could not find
    domain for user gui: <uid>": the state dir's ``no_gui_status`` knob file holding
    ``112`` chooses that. bootout, enable, disable and print-disabled have no capture in
    the sources: their texts follow the same pattern as the verbs above."""
    if state_knob("no_gui_status") == "112":
        fail(112, "Bad request.", f"Could not find domain for {target.not_found_text()}")
    reason = f"125: {ERRTEXT[125]}"
    if verb in ("print", "print-disabled"):
        fail(125, f"Could not print domain: {reason}")
    titles = {"bootstrap": "Bootstrap failed", "bootout": "Boot-out failed", "load": "Load failed"}
    if verb in titles:
        fail(125, f"{titles[verb]}: {reason}")
    fail(125, f'Could not {verb} service "{target.name}": {reason}')


def via_sudo():
    """True when launchctl runs as root through sudo (sudo always sets SUDO_UID): the
    caller is root, and legacy verbs target the system domain (launchctl(1)). The e2e
    suite's SSH user is root standing in for a Mac user (macOS has no root SSH login by
    default), so a root without sudo is treated as that user's own session."""
    return os.geteuid() == 0 and bool(os.environ.get("SUDO_UID"))


# ------------------------------------------------------------------------ overrides

def read_overrides(root):
    return read_json(os.path.join(root, "overrides.json"), {})


def is_disabled(root, domain, label, job_plist=None):
    override = read_overrides(root).get(domain, {}).get(label)
    if override is not None:
        return override == "disabled"
    return bool(job_plist and job_plist.get("Disabled") is True)


# ------------------------------------------------------------------------ bootstrap

def load_plist(path):
    import plistlib
    with open(path, "rb") as fh:
        return plistlib.load(fh)


def job_program(plist):
    args = plist.get("ProgramArguments")
    program = plist.get("Program")
    if args is not None and (not isinstance(args, list) or not args
                             or not all(isinstance(a, str) for a in args)):
        return None, None
    if program is not None and not isinstance(program, str):
        return None, None
    if program is None and not args:
        return None, None
    argv = list(args) if args else [program]
    return program, argv


def session_types(plist, kind=None):
    value = plist.get("LimitLoadToSessionType")
    if value is None and kind == "system":
        return None  # a LaunchDaemon: the system's session, no key needed
    if value is None:
        default = os.environ.get(SESSION_ENV, "Aqua")
        return None if default.lower() == "any" else [default]
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)]


def run_as(plist):
    """A system job's ``UserName`` / ``GroupName``: ``{"user", "uid", "gid", "home",
    "shell", "groups"}``, or None (it runs as root). launchd sets the gid from GroupName,
    else the user's primary group, calls initgroups(UserName, gid), setgid, setuid.
    An unknown user or group is an error only when the job spawns (exit 78)."""
    import grp
    import pwd
    name = plist.get("UserName")
    if not isinstance(name, str) or not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return {"user": name, "error": f"no such user: {name}"}
    gid = entry.pw_gid
    group = plist.get("GroupName")
    if isinstance(group, str) and group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            return {"user": name, "error": f"no such group: {group}"}
    init_groups = plist.get("InitGroups", True) is not False
    return {"user": name, "uid": entry.pw_uid, "gid": gid, "home": entry.pw_dir,
            "shell": entry.pw_shell or "/bin/sh",
            "groups": os.getgrouplist(name, gid) if init_groups else [gid]}


def job_environment(plist, kind=None):
    import pwd
    if kind == "system":
        user = run_as(plist)
        env = {"PATH": DEFAULT_PATH, "XPC_SERVICE_NAME": plist["Label"]}
        if user and "error" not in user:
            # launchd (job_postfork_become_user): SHELL, HOME, USER, LOGNAME from the
            # user's record once it has become them (and TMPDIR, the user's own temp dir).
            env.update(SHELL=user["shell"], HOME=user["home"], USER=user["user"], LOGNAME=user["user"],
                       TMPDIR="/tmp")
        for key, value in (plist.get("EnvironmentVariables") or {}).items():
            env[str(key)] = str(value)
        return env
    try:
        entry = pwd.getpwuid(os.getuid())
        home, user, shell = entry.pw_dir, entry.pw_name, entry.pw_shell or "/bin/sh"
    except KeyError:
        home = os.environ.get("HOME", "/")
        user = os.environ.get("USER", str(os.getuid()))
        shell = "/bin/sh"
    tmpdir = os.environ.get("TMPDIR") or "/tmp"
    env = {"PATH": DEFAULT_PATH, "HOME": home, "USER": user, "LOGNAME": user,
           "SHELL": shell, "TMPDIR": tmpdir, "XPC_SERVICE_NAME": plist["Label"]}
    for key, value in (plist.get("EnvironmentVariables") or {}).items():
        env[str(key)] = str(value)
    return env


def in_teardown(root, service):
    until = read_json(os.path.join(root, "teardown.json"), {}).get(service)
    return until is not None and time.time() < until


def mark_teardown(root, service):
    window = float(os.environ.get(TEARDOWN_ENV, "0.3") or 0)
    path = os.path.join(root, "teardown.json")
    data = {k: v for k, v in read_json(path, {}).items() if v > time.time()}
    if window > 0:
        data[service] = time.time() + window
    else:
        data.pop(service, None)
    write_json_atomic(path, data)


def spawn_supervisor(jdir, verb="_supervise"):
    """Double-fork a detached supervisor for the job in jdir (or, with ``verb``
    ``_finish-bootout``, the process that completes an asynchronous bootout)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launchctl")
    argv = [sys.executable, "-I", script, verb, jdir]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # intermediate child
        try:
            os.setsid()
            if os.fork() == 0:  # the supervisor
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.closerange(3, 65536)
                os.execv(argv[0], argv)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def cmd_bootstrap(args):
    if len(args) < 2:
        usage("bootstrap")
    target = parse_target("bootstrap", args[0])
    if target.name is not None:
        bad_specifier("bootstrap")
    root = state_root()
    for path in args[1:]:
        bootstrap_one(root, target, os.path.abspath(path))
    return 0


def bootstrap_one(root, target, path, verb_title="Bootstrap", session=None):
    """Load the plist at ``path`` into ``target``'s domain. ``session``: the caller's
    session type (legacy ``load``), which a plist without LimitLoadToSessionType gets."""
    import plistlib
    import shutil
    if not os.path.exists(path):
        verb_failed(verb_title, 2, path, ERRTEXT[2])
    try:
        st = os.stat(path)
        plist = load_plist(path)
    except (OSError, plistlib.InvalidFileException, ValueError, OverflowError):
        verb_failed(verb_title, 5, path, "Invalid property list")
    # A LaunchDaemon's plist must be root's (root:wheel on macOS); an agent's, its user's
    # or root's; neither group- nor world-writable.
    owners = (0,) if target.kind == "system" else (os.getuid(), 0)
    if st.st_uid not in owners or st.st_mode & 0o022:
        verb_failed(verb_title, 122, path, ERRTEXT[122])
    label = plist.get("Label") if isinstance(plist, dict) else None
    program, argv = job_program(plist) if isinstance(plist, dict) else (None, None)
    if not isinstance(label, str) or not label or "/" in label or label.startswith(".") \
            or argv is None:
        verb_failed(verb_title, 5, path, "Invalid or missing Program/ProgramArguments"
                    if isinstance(label, str) and label else "Invalid or missing Label")
    service = f"{target.domain}/{label}"
    with Lock(root):
        job, _status, jdir = loaded_job(root, target.domain, label)
        if job is not None or in_teardown(root, service):
            verb_failed(verb_title, 5, path, "service already bootstrapped")
        if target.kind == "user" and loaded_job(root, f"gui/{target.uid}", label)[0] is not None:
            # launchd refuses user/<uid> a label that runs in gui/<uid> (error 5; the
            # other way round is allowed: a console login loads an Aqua agent into
            # gui/<uid> while the user/<uid> job holds the label). ../shared/MACOS.md.
            verb_failed(verb_title, 5, path, "service already bootstrapped in gui/" + str(target.uid))
        allowed = session_types(plist, target.kind)
        if session is not None and plist.get("LimitLoadToSessionType") is None:
            allowed = [session]
        if allowed is not None and SESSION_OF[target.kind] not in allowed:
            verb_failed(verb_title, 134, path, ERRTEXT[134])
        if is_disabled(root, target.domain, label, plist):
            verb_failed(verb_title, 119, path, ERRTEXT[119])
        if os.path.isdir(jdir):  # leftovers of a crashed bootstrap
            shutil.rmtree(jdir, ignore_errors=True)
        os.makedirs(os.path.join(jdir, "requests"))
        os.makedirs(os.path.join(jdir, "acks"))
        throttle = plist.get("ThrottleInterval", DEFAULT_THROTTLE)
        exit_timeout = plist.get("ExitTimeOut", EXIT_TIMEOUT_CAP)
        record = {
            "plist": plist_to_json(plist),
            "path": path,
            "domain": target.domain,
            "label": label,
            "program": program,
            "argv": argv,
            "env": job_environment(plist, target.kind),
            "run_as": run_as(plist) if target.kind == "system" else None,
            "throttle": throttle if isinstance(throttle, (int, float)) and throttle >= 0
            else DEFAULT_THROTTLE,
            "exit_timeout": min(exit_timeout, EXIT_TIMEOUT_CAP)
            if isinstance(exit_timeout, (int, float)) and exit_timeout > 0 else EXIT_TIMEOUT_CAP,
            "loaded_at": time.time(),
        }
        write_json_atomic(os.path.join(jdir, "job.json"), record)
        spawn_supervisor(jdir)
        if not wait_until(lambda: os.path.exists(os.path.join(jdir, "status.json")), 10):
            shutil.rmtree(jdir, ignore_errors=True)
            verb_failed(verb_title, 5, path, "supervisor did not start")


def cmd_load(args):
    """Legacy ``load [-w] [-F] [-S sessiontype] <plist>...`` (what an Ansible role or an
    old script runs). "Legacy subcommands select the target domain based on whether they
    are executed as root or not. When executed as root, they target the system domain"
    (launchctl(1), quoted in facebook/watchman#1220); as a normal user, the session type
    Aqua is the default (-S in launchctl(1); actions/runner PR #2449). Here "root" is root
    through sudo (``via_sudo``): ``sudo launchctl load`` loads into ``system``, with
    launchctl's warning when the path is a LaunchAgents one (drduh/YubiKey-Guide#504,
    nix-darwin/nix-darwin#1255).

    For a user, the session asked for is ``-S``'s, else the plist's
    LimitLoadToSessionType, else Aqua (an agent without the key is an Aqua agent:
    actions/runner PR #2449, buildkite/agent PR #1960):

    * Aqua, and the caller owns the console (``console_owner``): ``gui/<uid>``;
    * Background (``-S Background`` or the plist's key): ``user/<uid>``;
    * Aqua without a console login (a headless SSH session): nothing is loaded, launchd's
      message ``Could not find domain for port (Aqua)`` (actions/runner#349; buildkite/docs#353)
      goes to stderr, and the exit status is 0: legacy load fails only on bad usage
      (MACOS.md). Other session types are not emulated and load nothing alike.

    ``-w`` clears a disable override first (in the domain it loads into); errors read
    "Load failed: <n>: <text>" with legacy load's own hint."""
    write_override = False
    session = None
    paths = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-w":
            write_override = True
        elif arg == "-F":
            pass
        elif arg == "-S" and rest:
            session = rest.pop(0)
        elif arg.startswith("-"):
            usage("load")
        else:
            paths.append(arg)
    if not paths:
        usage("load")
    root = state_root()
    uid = os.getuid()
    for path in paths:
        path = os.path.abspath(path)
        try:
            plist = load_plist(path)
        except Exception:
            plist = None
        label = plist.get("Label") if isinstance(plist, dict) else None
        if via_sudo():
            if "/LaunchAgents/" in path:
                err("Warning: Expecting a LaunchDaemons path since the command was ran as root. "
                    "Got LaunchAgents instead.",
                    "`launchctl bootstrap` is a recommended alternative.")
            target = parse_target("load", "system")
            load_session = None
        else:
            if session is not None:
                wanted = [session]
            elif isinstance(plist, dict) and plist.get("LimitLoadToSessionType") is not None:
                wanted = session_types(plist)
            else:
                wanted = ["Aqua"]
            if "Aqua" in wanted and console_owner() == uid:
                target, load_session = Target("gui", uid, None), "Aqua"
            elif "Background" in wanted:
                target, load_session = Target("user", uid, None), "Background"
            else:
                err(f"Could not find domain for port ({wanted[0] if wanted else 'Aqua'})")
                continue
        if write_override and isinstance(label, str):
            with Lock(root):
                overrides_path = os.path.join(root, "overrides.json")
                data = read_json(overrides_path, {})
                data.setdefault(target.domain, {})[label] = "enabled"
                write_json_atomic(overrides_path, data)
        bootstrap_one(root, target, path, verb_title="Load", session=load_session)
    return 0


def plist_to_json(value):
    """plist values -> JSON-safe values (dates and data are stringified)."""
    if isinstance(value, dict):
        return {str(k): plist_to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plist_to_json(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------- bootout

def send_request(jdir, status, op, timeout, **fields):
    """Ask the job's supervisor to do op; return its reply, or None if it is gone."""
    rid = os.urandom(16).hex()
    req = dict(fields, op=op, id=rid)
    reqdir = os.path.join(jdir, "requests")
    tmp = os.path.join(reqdir, f".{rid}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(req, fh)
    os.replace(tmp, os.path.join(reqdir, f"{time.time():017.6f}-{rid}.json"))
    ack_path = os.path.join(jdir, "acks", f"{rid}.json")
    sup_pid = status.get("supervisor_pid")
    sup_start = status.get("supervisor_start")
    reply = {}

    def answered():
        data = read_json(ack_path)
        if data is not None:
            reply.update(data)
            return True
        return not pid_alive(sup_pid, sup_start)

    wait_until(answered, timeout)
    try:
        os.unlink(ack_path)
    except FileNotFoundError:
        pass
    return reply if reply else None


def kill_recorded(status, timeout=EXIT_TIMEOUT_CAP):
    """Stop whatever a (dead or stuck) supervisor left behind, by recorded pid."""
    pgid, pid, start = status.get("pgid"), status.get("pid"), status.get("job_start")
    if pid and pid_alive(pid, start):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid or pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            if wait_until(lambda: not pid_alive(pid, start), timeout):
                break
    if pgid:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        wait_until(lambda: not group_alive(pgid), 2)
    sup, sup_start = status.get("supervisor_pid"), status.get("supervisor_start")
    if sup and pid_alive(sup, sup_start):
        try:
            os.kill(sup, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        wait_until(lambda: not pid_alive(sup, sup_start), 2)


def bootout_job(root, jdir, teardown=True, locked=True):
    """Stop the job in jdir and unload it. ``locked``: the caller holds the state lock;
    else (an asynchronous bootout) the lock is taken for the unload only, so that other
    verbs are served while the job stops."""
    job = read_json(os.path.join(jdir, "job.json"), {})
    status = read_json(os.path.join(jdir, "status.json"), {})
    timeout = job.get("exit_timeout", EXIT_TIMEOUT_CAP) + 10
    send_request(jdir, status, "bootout", timeout)
    sup, sup_start = status.get("supervisor_pid"), status.get("supervisor_start")
    wait_until(lambda: not pid_alive(sup, sup_start), 5)
    # Whatever is still recorded and alive now is a leftover: kill it by pid.
    kill_recorded(read_json(os.path.join(jdir, "status.json"), status))
    if locked:
        unload_job_dir(root, jdir, job, teardown)
    else:
        with Lock(root):
            unload_job_dir(root, jdir, job, teardown)


def unload_job_dir(root, jdir, job, teardown):
    import shutil
    trash = os.path.join(root, "jobs", f".trash-{os.urandom(16).hex()}")
    try:
        os.replace(jdir, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
    if teardown and job.get("domain") and job.get("label"):
        mark_teardown(root, f"{job['domain']}/{job['label']}")


def cmd_bootout(args):
    if not args:
        usage("bootout")
    target = parse_target("bootout", args[0])
    root = state_root()
    if target.name is not None:
        with Lock(root):
            job, status, jdir = loaded_job(root, target.domain, target.name)
            if job is None:
                fail(3, f"Boot-out failed: 3: {ERRTEXT[3]}")
            bootout_or_start_it(root, jdir, status)
        return 0
    if len(args) < 2:
        fail(125, "launchctl (test double): booting out a whole domain is not emulated",
             f"Boot-out failed: 125: {ERRTEXT[125]}")
    import plistlib
    for raw in args[1:]:
        path = os.path.abspath(raw)
        if not os.path.exists(path):
            verb_failed("Boot-out", 2, path, ERRTEXT[2])
        try:
            label = load_plist(path).get("Label")
        except (OSError, plistlib.InvalidFileException, ValueError, AttributeError):
            label = None
        with Lock(root):
            job = None
            if isinstance(label, str) and label and "/" not in label:
                job, _status, jdir = loaded_job(root, target.domain, label)
            if job is None:
                verb_failed("Boot-out", 5)
            bootout_or_start_it(root, jdir, _status)
    return 0


def bootout_or_start_it(root, jdir, status):
    """Boot the job in jdir out (the caller holds the lock). With the state dir's
    ``bootout_in_progress`` knob file, a bootout of a running job only starts: launchctl
    answers exit 36 "Operation now in progress" at once (osquery/osquery#5698: "Boot-out
    failed: 36: Operation now in progress", and the daemon did stop; Homebrew retries on
    it) while the job keeps stopping; it stays loaded (``print`` finds it) until it has
    stopped, then it is unloaded. A second bootout meanwhile answers 36 again."""
    if state_knob("bootout_in_progress") is not None:
        stopping = os.path.join(jdir, "stopping")
        live = effective_status(status)
        if os.path.exists(stopping) or (live.get("state") == "running" and live.get("pid")):
            if not os.path.exists(stopping):
                with open(stopping, "w", encoding="utf-8"):
                    pass
                give_to_state_owner(stopping)
                spawn_supervisor(jdir, "_finish-bootout")
            fail(36, f"Boot-out failed: 36: {ERRTEXT[36]}")
    bootout_job(root, jdir)


def cmd_finish_bootout(args):
    """NOT a launchctl verb: the detached rest of an asynchronous bootout (see
    ``bootout_or_start_it``)."""
    root = os.environ.get(STATE_ENV)
    if not root or not args:
        return 1
    bootout_job(os.path.abspath(root), args[0], locked=False)
    return 0


# ------------------------------------------------------------------ enable, disable

def cmd_enable(args, verb):
    if len(args) != 1:
        usage(verb)
    target = parse_target(verb, args[0])
    if target.name is None:
        bad_specifier(verb)
    root = state_root()
    with Lock(root):
        path = os.path.join(root, "overrides.json")
        data = read_json(path, {})
        data.setdefault(target.domain, {})[target.name] = \
            "enabled" if verb == "enable" else "disabled"
        write_json_atomic(path, data)
    return 0


def cmd_print_disabled(args):
    if len(args) != 1:
        usage("print-disabled")
    target = parse_target("print-disabled", args[0])
    if target.name is not None:
        bad_specifier("print-disabled")
    root = state_root()
    overrides = read_overrides(root).get(target.domain, {})
    lines = ["disabled services = {"]
    for label in sorted(overrides):
        lines.append(f'\t"{label}" => {overrides[label]}')
    lines.append("}")
    out("\n".join(lines) + "\n")
    return 0


# ------------------------------------------------------------------------ kickstart

def cmd_kickstart(args):
    kill = printpid = False
    rest = []
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not rest:
            for flag in arg[1:]:
                if flag == "k":
                    kill = True
                elif flag == "p":
                    printpid = True
                elif flag == "s":
                    pass  # start suspended: not emulated, accepted and ignored
                else:
                    usage("kickstart")
        else:
            rest.append(arg)
    if len(rest) != 1:
        usage("kickstart")
    target = parse_target("kickstart", rest[0])
    if target.name is None:
        bad_specifier("kickstart")
    root = state_root()
    with Lock(root):
        job, status, jdir = loaded_job(root, target.domain, target.name)
        if job is None:
            fail(113, f'Could not find service "{target.name}" in domain for '
                      f"{target.not_found_text()}")
        if is_disabled(root, target.domain, target.name, job.get("plist")):
            fail(119, f'Could not kickstart service "{target.name}": 119: {ERRTEXT[119]}')
        reply = send_request(jdir, status, "kickstart", job["exit_timeout"] + 10, kill=kill)
    if reply is None:
        fail(5, f'Could not kickstart service "{target.name}": 5: {ERRTEXT[5]}')
    if printpid:
        pid = reply.get("pid") or 0
        out(f"service spawned with pid: {pid}\n" if sys.stdout.isatty() else f"{pid}\n")
    return 0


# ---------------------------------------------------------------------------- print

def effective_status(status):
    """The supervisor's status, corrected if the supervisor itself has died."""
    status = dict(status or {})
    if not pid_alive(status.get("supervisor_pid"), status.get("supervisor_start")):
        status["state"] = "not running"
        status["pid"] = None
        status["spawn_at"] = None
    elif status.get("pid") and not pid_alive(status["pid"], status.get("job_start")):
        # died this instant; the supervisor has not noticed yet
        status["state"] = "not running"
        status["pid"] = None
    return status


def exit_line(last):
    if not last:
        return "last exit code = (never exited)"
    if "signal" in last:
        num, text = mac_signal(last["signal"])
        return f"last terminating signal = {text}: {num}"
    code = last["code"]
    if code in SYSEXITS:
        return f"last exit code = {code}: {SYSEXITS[code]}"
    return f"last exit code = {code}"


def coalition_id(label, offset):
    import zlib
    return 1000 + (zlib.crc32(label.encode()) % 40000) * 2 + offset


def keepalive_semaphores(keepalive):
    """KeepAlive's dict keys as ``print`` shows them, in a ``semaphores = {…}`` block after
    ``last exit code``: ``SuccessfulExit = false`` as ``successful exit => 0`` (true: 1),
    ``Crashed`` as ``after crash => 1|0``. Real captures: HsuTse/teamwork-leader
    docs/archives/measurement.v0.1.9.macos-14.partial.md (macOS 14 CI: ``last exit code = 1``, blank line,
    ``\tsemaphores = {\n\t\tsuccessful exit => 0\n\t}``), a Rust parser's note
    "Observed on macOS 15.6.1 (24G90): `launchctl print` normalizes the rendered
    KeepAlive.SuccessfulExit=false setting to `semaphores = { successful exit => 0 }`",
    and a prometheus-companion report of ``successful exit => 0, after crash => 1`` for a
    KeepAlive dict with both keys."""
    if not isinstance(keepalive, dict):
        return []
    result = []
    if isinstance(keepalive.get("SuccessfulExit"), bool):
        result.append(("successful exit", int(keepalive["SuccessfulExit"])))
    if isinstance(keepalive.get("Crashed"), bool):
        result.append(("after crash", int(keepalive["Crashed"])))
    return result


def render_print(target, job, status):
    plist = job["plist"]
    label = job["label"]
    running = status.get("state") == "running" and bool(status.get("pid"))
    state = status.get("state") or "not running"
    lines = [f"{target.domain}/{label} = {{"]
    add = lines.append
    add(f"\tactive count = {1 if running else 0}")
    add(f"\tpath = {job['path']}")
    add(f"\ttype = {'LaunchDaemon' if target.kind == 'system' else 'LaunchAgent'}")
    add(f"\tstate = {state}")
    add("")
    add(f"\tprogram = {job['program'] or job['argv'][0]}")
    add("\targuments = {")
    for arg in job["argv"]:
        add(f"\t\t{arg}")
    add("\t}")
    add("")
    if plist.get("WorkingDirectory"):
        add(f"\tworking directory = {plist['WorkingDirectory']}")
        add("")
    if plist.get("StandardOutPath"):
        add(f"\tstdout path = {plist['StandardOutPath']}")
    if plist.get("StandardErrorPath"):
        add(f"\tstderr path = {plist['StandardErrorPath']}")
    add("\tdefault environment = {")
    add(f"\t\tPATH => {DEFAULT_PATH}")
    add("\t}")
    add("")
    add("\tenvironment = {")
    for key, value in (plist.get("EnvironmentVariables") or {}).items():
        add(f"\t\t{key} => {value}")
    add(f"\t\tXPC_SERVICE_NAME => {label}")
    add("\t}")
    add("")
    add(f"\tdomain = {target.domain}" + (f" [{ASID}]" if target.kind == "gui" else ""))
    if job.get("run_as"):
        add(f"\tusername = {job['run_as']['user']}")
    if isinstance(plist.get("Umask"), int):
        add(f"\tumask = {plist['Umask']:o}")
    add(f"\tasid = {ASID}")
    add(f"\tminimum runtime = {job['throttle']:g}")
    add(f"\texit timeout = {job['exit_timeout']:g}")
    add(f"\truns = {status.get('runs', 0)}")
    if running:
        add(f"\tpid = {status['pid']}")
    if status.get("immediate_reason"):
        add(f"\timmediate reason = {status['immediate_reason']}")
    add("\tforks = 0")
    add(f"\texecs = {1 if running else 0}")
    add("\tinitialized = 1")
    add("\ttrampolined = 1")
    add("\tstarted suspended = 0")
    add("\tproxy started suspended = 0")
    add("\tchecked allocations = 0 (queried = 1)")
    add("\tchecked allocations reason = no host")
    add("\tchecked allocations flags = 0x0")
    add("\t" + exit_line(status.get("last_exit")))
    add("")
    semaphores = keepalive_semaphores(plist.get("KeepAlive"))
    if semaphores:
        add("\tsemaphores = {")
        for name, value in semaphores:
            add(f"\t\t{name} => {value}")
        add("\t}")
        add("")
    for kind, offset in (("resource", 0), ("jetsam", 1)):
        add(f"\t{kind} coalition = {{")
        add(f"\t\tID = {coalition_id(label, offset)}")
        add(f"\t\ttype = {kind}")
        add("\t\tstate = active")
        add(f"\t\tactive count = {1 if running else 0}")
        add(f"\t\tname = {label}")
        add("\t}")
        add("")
    spawn_type = {"Interactive": "interactive (4)", "Background": "background (5)",
                  "Adaptive": "adaptive (6)"}.get(plist.get("ProcessType"), "daemon (3)")
    add(f"\tspawn type = {spawn_type}")
    add("\tjetsam priority = 40")
    add("\tjetsam memory limit (active) = (unlimited)")
    add("\tjetsam memory limit (inactive) = (unlimited)")
    add("\tjetsamproperties category = daemon")
    add("\tjetsam thread limit = 32")
    add("\tcpumon = default")
    add("")
    props = []
    if plist.get("KeepAlive"):
        props.append("keepalive")
    if plist.get("RunAtLoad"):
        props.append("runatload")
    if not plist.get("Program"):
        props.append("inferred program")
    add(f"\tproperties = {' | '.join(props)}")
    add("}")
    return "\n".join(lines) + "\n"


def render_domain(root, target):
    """``print <domain>``, reduced to what the double knows: the domain's type, handle
    and the services loaded in it (real launchctl prints much more)."""
    directory = os.path.join(root, "jobs", domain_dirname(target.domain))
    labels = sorted(label for label in (os.listdir(directory) if os.path.isdir(directory) else [])
                    if not label.startswith(".") and loaded_job(root, target.domain, label)[0] is not None)
    lines = [f"{target.domain} = {{",
             f"\ttype = {({'gui': 'login', 'system': 'system'}).get(target.kind, 'user')}",
             f"\thandle = {({'gui': ASID, 'system': 0}).get(target.kind, target.uid)}",
             f"\tservice count = {len(labels)}",
             "\tservices = {"]
    lines += [f"\t\t0\t-\t{label}" for label in labels]
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def cmd_print(args):
    if len(args) != 1:
        usage("print")
    target = parse_target("print", args[0])
    root = state_root()
    if target.name is None:
        out(render_domain(root, target))
        return 0
    job, status, _jdir = loaded_job(root, target.domain, target.name)
    if job is None:
        fail(113, "Bad request.",
             f'Could not find service "{target.name}" in domain for {target.not_found_text()}')
    out(render_print(target, job, effective_status(status)))
    return 0


# ----------------------------------------------------------------------------- list

def list_status_value(last):
    if not last:
        return 0
    if "signal" in last:
        return -mac_signal(last["signal"])[0]
    return last["code"]


def raw_wait_status(last):
    if not last:
        return 0
    if "signal" in last:
        return mac_signal(last["signal"])[0]
    return (last["code"] & 0xFF) << 8


def caller_session():
    """The domain of the caller's own session, which legacy ``list`` shows: root through
    sudo gets the system domain (launchctl(1): legacy verbs as root target it); anyone
    else here comes over SSH, a Background session, ``user/<uid>`` (Mic92/sops-nix#966:
    ``managername`` prints ``Background`` over SSH). Not a chosen domain: Homebrew gave
    up on ``list`` because it does not show one domain's jobs (Homebrew/brew PR #588)."""
    if via_sudo():
        return Target("system", None, None)
    return Target("user", os.getuid(), None)


def cmd_managername(args):
    """``managername``: the name of the caller's session's manager. ``Background`` for
    every caller of the double, who all come over SSH (Mic92/sops-nix#966; ``Aqua`` in
    Terminal.app, which the double has no notion of)."""
    if args:
        usage("managername")
    out("Background\n")
    return 0


def cmd_list(args):
    if len(args) > 1:
        usage("list")
    root = state_root()
    domains = [caller_session()]
    if not args:
        lines = ["PID\tStatus\tLabel"]
        for dom in domains:
            ddir = os.path.join(root, "jobs", domain_dirname(dom.domain))
            for label in sorted(os.listdir(ddir)) if os.path.isdir(ddir) else []:
                job, status, _ = loaded_job(root, dom.domain, label)
                if job is None:
                    continue
                status = effective_status(status)
                pid = status.get("pid") if status.get("state") == "running" else None
                lines.append(f"{pid or '-'}\t{list_status_value(status.get('last_exit'))}"
                             f"\t{label}")
        out("\n".join(lines) + "\n")
        return 0
    label = args[0]
    for dom in domains:
        job, status, _ = loaded_job(root, dom.domain, label) if "/" not in label \
            else (None, None, None)
        if job is None:
            continue
        status = effective_status(status)
        plist = job["plist"]

        def q(value):
            return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = ["{"]
        if plist.get("StandardOutPath"):
            lines.append(f'\t"StandardOutPath" = {q(plist["StandardOutPath"])};')
        lines.append(f'\t"LimitLoadToSessionType" = {q(SESSION_OF[dom.kind])};')
        if plist.get("StandardErrorPath"):
            lines.append(f'\t"StandardErrorPath" = {q(plist["StandardErrorPath"])};')
        lines.append(f'\t"Label" = {q(label)};')
        lines.append(f'\t"OnDemand" = {"false" if plist.get("KeepAlive") else "true"};')
        lines.append(f'\t"LastExitStatus" = {raw_wait_status(status.get("last_exit"))};')
        if status.get("state") == "running" and status.get("pid"):
            lines.append(f'\t"PID" = {status["pid"]};')
        lines.append(f'\t"Program" = {q(job["program"] or job["argv"][0])};')
        lines.append('\t"ProgramArguments" = (')
        for arg in job["argv"]:
            lines.append(f"\t\t{q(arg)};")
        lines.append("\t);")
        lines.append("};")
        out("\n".join(lines) + "\n")
        return 0
    fail(113, f'Could not find service "{label}" in domain for port')


# ------------------------------------------------------------------------- shutdown

def cmd_double_shutdown(args):
    import shutil
    root = os.environ.get(STATE_ENV)
    if not root:
        state_root()  # reports the missing variable
    if not os.path.isdir(root):
        return 0
    root = os.path.abspath(root)
    with Lock(root):
        for jdir in all_job_dirs(root):
            bootout_job(root, jdir, teardown=False)
        # leftovers of interrupted bootouts
        jobs = os.path.join(root, "jobs")
        for name in os.listdir(jobs) if os.path.isdir(jobs) else ():
            if name.startswith(".trash-"):
                status = read_json(os.path.join(jobs, name, "status.json"), {})
                kill_recorded(status)
                shutil.rmtree(os.path.join(jobs, name), ignore_errors=True)
        write_json_atomic(os.path.join(root, "teardown.json"), {})
    return 0


# ----------------------------------------------------------------------- supervisor

class Supervisor:
    def __init__(self, jdir):
        self.jdir = jdir
        self.job_path = os.path.join(jdir, "job.json")
        self.status_path = os.path.join(jdir, "status.json")
        self.job = read_json(self.job_path)
        self.plist = self.job["plist"]
        self.child = None
        self.stop = False
        self.written = None
        self.status = {
            "supervisor_pid": os.getpid(),
            "supervisor_start": proc_start_ticks(os.getpid()),
            "state": "not running",
            "pid": None,
            "pgid": None,
            "job_start": None,
            "runs": 0,
            "last_exit": None,
            "last_spawn": None,
            "spawn_at": None,
            "immediate_reason": None,
            "spawn_error": None,
        }

    # -- helpers
    def flush(self):
        if self.status != self.written:
            write_json_atomic(self.status_path, self.status)
            self.written = dict(self.status)

    def ack(self, rid, reply):
        write_json_atomic(os.path.join(self.jdir, "acks", f"{rid}.json"), reply)

    def open_log(self, key):
        path = self.plist.get(key)
        if path:
            try:
                return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError:
                pass  # launchd runs the job anyway, without the log
        return os.open(os.devnull, os.O_WRONLY)

    def should_restart(self, last):
        keepalive = self.plist.get("KeepAlive")
        if keepalive is True:
            return True
        if not isinstance(keepalive, dict):
            return False
        decisions = []
        if "SuccessfulExit" in keepalive:
            successful = "code" in last and last["code"] == 0
            decisions.append(successful if keepalive["SuccessfulExit"] else not successful)
        if "Crashed" in keepalive:
            crashed = "signal" in last and signal_name(last["signal"]) in CRASH_SIGNALS
            decisions.append(crashed if keepalive["Crashed"] else not crashed)
        return any(decisions)

    # -- job lifecycle
    def spawn(self, reason):
        import subprocess
        now = time.time()
        self.status.update(runs=self.status["runs"] + 1, last_spawn=now, spawn_at=None,
                           immediate_reason=reason, spawn_error=None)
        out_fd = self.open_log("StandardOutPath")
        err_fd = self.open_log("StandardErrorPath")
        kwargs = {}
        umask = self.plist.get("Umask")
        if isinstance(umask, str):
            try:
                umask = int(umask, 8)
            except ValueError:
                umask = None
        if isinstance(umask, int):
            kwargs["umask"] = umask
        user = self.job.get("run_as")
        if user and os.geteuid() == 0:
            if "error" in user:
                os.close(out_fd)
                os.close(err_fd)
                self.child = None
                self.status.update(state="not running", pid=None, pgid=None, job_start=None,
                                   spawn_error=user["error"])
                self.exited({"code": EX_CONFIG})
                return
            # The log files were opened above as root, as launchd opens them: one that did
            # not exist is root's now. Then the job becomes its user.
            kwargs.update(user=user["uid"], group=user["gid"], extra_groups=user["groups"])
        try:
            self.child = subprocess.Popen(
                self.job["argv"], executable=self.job["program"], env=self.job["env"],
                cwd=self.plist.get("WorkingDirectory") or "/",
                stdin=subprocess.DEVNULL, stdout=out_fd, stderr=err_fd,
                start_new_session=True, close_fds=True, **kwargs)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self.child = None
            self.status.update(state="not running", pid=None, pgid=None, job_start=None,
                               spawn_error=str(exc))
            self.exited({"code": EX_CONFIG})
            return
        finally:
            os.close(out_fd)
            os.close(err_fd)
        self.status.update(state="running", pid=self.child.pid, pgid=self.child.pid,
                           job_start=proc_start_ticks(self.child.pid))

    def exited(self, last):
        """Record an exit and schedule the KeepAlive restart, throttled."""
        self.status.update(last_exit=last, state="not running", pid=None, job_start=None)
        if self.should_restart(last):
            now = time.time()
            at = max(now, (self.status["last_spawn"] or now) + self.job["throttle"])
            self.status["spawn_at"] = at
            if at > now:
                self.status["state"] = "spawn scheduled"

    def clean_group(self, pgid):
        if self.plist.get("AbandonProcessGroup"):
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        wait_until(lambda: not group_alive(pgid), 2)

    def last_from_returncode(self, code):
        return {"signal": -code} if code < 0 else {"code": code}

    def reap(self):
        if self.child is None or self.child.poll() is None:
            return
        pgid = self.child.pid
        last = self.last_from_returncode(self.child.returncode)
        self.child = None
        self.clean_group(pgid)
        self.status["pgid"] = None
        self.exited(last)

    def stop_job(self):
        """SIGTERM the job's process group, SIGKILL after the exit timeout."""
        child = self.child
        if child is None:
            self.status.update(spawn_at=None, state="not running")
            return
        try:
            os.killpg(child.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + self.job["exit_timeout"]
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL)
        if child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            child.wait()
        self.child = None
        self.clean_group(child.pid)
        self.status.update(last_exit=self.last_from_returncode(child.returncode),
                           state="not running", pid=None, pgid=None, job_start=None,
                           spawn_at=None)

    def handle_requests(self):
        """Serve queued requests; True once a bootout has been served."""
        reqdir = os.path.join(self.jdir, "requests")
        try:
            names = sorted(n for n in os.listdir(reqdir) if not n.startswith("."))
        except FileNotFoundError:
            return False
        for name in names:
            path = os.path.join(reqdir, name)
            req = read_json(path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            if not req:
                continue
            if req.get("op") == "kickstart":
                self.reap()
                if self.child is not None and req.get("kill"):
                    self.stop_job()
                if self.child is None:
                    self.spawn("non-ipc demand")
                self.flush()
                self.ack(req["id"], {"pid": self.child.pid if self.child else 0})
            elif req.get("op") == "bootout":
                self.stop_job()
                self.flush()
                self.ack(req["id"], {"stopped": True})
                return True
        return False

    def run(self):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop", True))
        keepalive = self.plist.get("KeepAlive")
        # KeepAlive=true keeps the job running from the start, and SuccessfulExit
        # "implies that RunAtLoad is set to true" (launchd.plist(5)).
        if self.plist.get("RunAtLoad") or keepalive is True or (
                isinstance(keepalive, dict) and "SuccessfulExit" in keepalive):
            self.spawn("speculative")
        self.flush()
        while True:
            if self.stop or not os.path.exists(self.job_path):
                self.stop_job()
                if os.path.isdir(self.jdir):
                    self.flush()
                return 0
            self.reap()
            if self.handle_requests():
                return 0
            spawn_at = self.status["spawn_at"]
            if self.child is None and spawn_at is not None and time.time() >= spawn_at:
                self.spawn(None)
            self.flush()
            time.sleep(POLL)


def cmd_supervise(args):
    supervisor = None
    try:
        supervisor = Supervisor(args[0])
        return supervisor.run()
    except Exception:  # never leave the job behind
        import traceback
        try:
            with open(os.path.join(args[0], "supervisor.err"), "a") as fh:
                traceback.print_exc(file=fh)
        except OSError:
            pass
        if supervisor is not None:
            try:
                supervisor.stop_job()
            except Exception:
                pass
        return 1


# ----------------------------------------------------------------------------- main

def main(argv):
    if not argv:
        out(MAIN_USAGE)
        return 0
    verb, args = argv[0], argv[1:]
    try:
        if verb == "_supervise":
            return cmd_supervise(args)
        if verb == "_finish-bootout":
            return cmd_finish_bootout(args)
        if verb == "bootstrap":
            return cmd_bootstrap(args)
        if verb == "bootout":
            return cmd_bootout(args)
        if verb == "load":
            return cmd_load(args)
        if verb in ("enable", "disable"):
            return cmd_enable(args, verb)
        if verb == "kickstart":
            return cmd_kickstart(args)
        if verb == "print":
            return cmd_print(args)
        if verb == "print-disabled":
            return cmd_print_disabled(args)
        if verb == "list":
            return cmd_list(args)
        if verb == "managername":
            return cmd_managername(args)
        if verb == "_double-shutdown":
            return cmd_double_shutdown(args)
        if verb == "help":
            if args:
                if args[0] in USAGES:
                    err(f"Usage: launchctl {args[0]} {USAGES[args[0]]}")
                    return 0
                err("Usage: launchctl help <subcommand>")
                return 64
            out(MAIN_USAGE)
            return 0
        err(f"Unrecognized subcommand: {verb}")
        out(MAIN_USAGE)
        return 1
    except Exit as exc:
        return exc.code
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""
Show, in ``--diff`` change detection, each command an operation would run; and put
the deploy lock's command before the first command of every operation that changes
something (``guard_changes``).

pyinfra's ``--dry`` lists which operations would change and ``--diff`` shows file
diffs, but not the commands; a reviewer of a pull request's dry run needs to see
"bootout + bootstrap" or "kickstart -k" to know what the run will do to a live
service. Commands are shown in pyinfra's masked form, so a secret never appears.
"""

from __future__ import annotations

import functools
import shlex

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api import operation as pyinfra_operation
from pyinfra.connectors.util import CommandOutput


class ProgressCommand(StringCommand):
    """A host command whose output is the operator's progress report: each line is
    printed as it arrives (``[host] prewarm 37/120: numpy (58 files)``), at every
    verbosity. pyinfra prints a command's output only with ``-vvv``, so a long step
    would otherwise be silent; the lines go to stderr as pyinfra's own do, so
    ``--json`` keeps stdout to its JSON. The script writes progress to stdout and
    problems to stderr (shown in red); nothing secret is ever in either.
    """

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        status, output = host.run_shell_command(
            self, print_output=True, print_input=state.print_input, **connector_arguments,
        )
        # A failed command's output is printed again unless pyinfra printed it: here it
        # was, line by line, already.
        return status, output if state.print_output else CommandOutput([])


def progress(message: str, *shell_values: str) -> str:
    """A shell command printing one progress line to stdout (``ProgressCommand`` shows
    it); ``%s`` takes each of ``shell_values`` (shell expressions, expanded by the host)."""
    return f"printf {shlex.quote(message + chr(10))} {' '.join(shell_values)}".rstrip()


def describe(command) -> str:
    if isinstance(command, FileUploadCommand):
        return f"upload {command.dest}"
    if isinstance(command, FunctionCommand) and getattr(command.function, "shown_as", None):
        # A script the controller runs on the host to report its output (server_dir.reported).
        return describe(command.function.shown_as)
    if isinstance(command, FunctionCommand):
        # Runs on the controller; its docstring's first line says what it does.
        doc = (command.function.__doc__ or command.function.__name__).strip().splitlines()[0]
        return f"(on this machine) {doc}"
    text = str(command) if isinstance(command, StringCommand) else command
    lines = text.strip().splitlines()
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... ({len(lines)} line script)"


def announce(commands):
    """Yield ``commands`` unchanged, logging all of them during ``--diff`` change detection.

    pyinfra stops reading an operation at its first command when it only detects a
    change, so the whole plan is listed before the first command is yielded.
    """
    commands = list(commands)
    if state.config.DIFF and not state.is_executing:
        for command in commands:
            host.log(f"Will run: {describe(command)}", logger.info)
    yield from commands


def log_once(message: str, log_func=logger.warning) -> None:
    """Log ``message`` once per run: an operation's body runs at change detection and
    again at execution, or only at execution (``-y``, where nothing is checked first)."""
    checked_first = getattr(state, "check_for_changes", True)
    if not state.is_executing or not checked_first:
        host.log(message, log_func)


# Commands that run before the first command of every operation that changes
# something (the deploy lock: ``operations/deploy_lock.py``), set per host.
_GUARD_ATTR = "_pyinfra_devpi_guard"


def guard_changes(host_, commands) -> None:
    """From now on, every guarded operation on ``host_`` that yields anything yields
    ``commands`` first. An operation that changes nothing yields nothing still."""
    setattr(host_, _GUARD_ATTR, list(commands))


def operation(func=None, *, guarded: bool = True):
    """pyinfra's ``@operation()`` for a generator whose commands ``--diff`` shows.

    ``guarded``: the commands set by ``guard_changes`` come first whenever the
    operation yields any (``guarded=False``: for the operation that releases the lock).
    """

    def decorate(func):
        @functools.wraps(func)
        def shown(*args, **kwargs):
            commands = list(func(*args, **kwargs))
            if commands and guarded:
                commands = [*getattr(host, _GUARD_ATTR, ()), *commands]
            yield from announce(commands)

        return pyinfra_operation()(shown)

    return decorate(func) if func is not None else decorate

"""FactBatch and snapshot.prefetch: many facts in one remote command, each processed
by its own fact exactly as if pyinfra had read it alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pyinfra.api import FactBase
from pyinfra.api.exceptions import FactProcessError

from facts.batch import FactBatch, command_text
from facts.devpi import ServerDir, VenvVersions
from facts.launchd import LaunchdJob
from facts import snapshot
from facts.snapshot import FactRead

from .prepared import SHELLS



def sh(command: str, shell: str = "/bin/sh") -> tuple[int, list[str]]:
    result = subprocess.run([shell, "-c", command], capture_output=True, text=True)
    return result.returncode, result.stdout.splitlines()


class ShellHost:
    """Runs fact commands under a local shell the way pyinfra's get_fact does (non-zero
    exit: the default; output: ``process``) and records each command it ran."""

    name = "local"

    def __init__(self):
        self.ran: list[str] = []

    def get_fact(self, cls, **kwargs):
        self.ran.append(cls.__name__)
        status, lines = sh(command_text(cls, kwargs) if cls is not FactBatch else cls().command(**kwargs))
        fact = cls()
        if status != 0 or not lines:
            return fact.default()
        return fact.process(lines)


class Fails(FactBase):
    def command(self, why):
        return f"echo {why}; exit 3"

    def process(self, output):
        return output


class Garbled(FactBase):
    def command(self):
        return "echo not what I print"

    def process(self, output):
        if output != ["fine"]:
            raise FactProcessError("garbled")
        return "fine"


@pytest.mark.parametrize("shell", SHELLS)
def test_each_command_gets_exactly_its_own_lines_and_status(shell):
    commands = [
        "echo one; echo two",
        "printf 'no newline at the end'",
        "true",                       # no output at all
        "echo kept; echo",            # ends with an empty line of its own
        "echo before; exit 7; echo never",
        "cat; echo stdin is empty",   # must not read the rest of the script
    ]
    status, lines = sh(FactBatch().command(commands), shell)
    assert status == 0
    assert FactBatch().process(lines) == [
        {"status": 0, "lines": ["one", "two"]},
        {"status": 0, "lines": ["no newline at the end"]},
        {"status": 0, "lines": []},
        {"status": 0, "lines": ["kept", ""]},
        {"status": 7, "lines": ["before"]},
        {"status": 0, "lines": ["stdin is empty"]},
    ]


def test_process_refuses_results_out_of_order_or_trailing_output():
    with pytest.raises(FactProcessError):
        FactBatch().process(["@@pyinfra-devpi-fact-batch 1 0"])
    with pytest.raises(FactProcessError):
        FactBatch().process(["@@pyinfra-devpi-fact-batch 0 0", "stray"])


def test_a_fact_with_requires_command_is_not_batched():
    class NeedsTool(FactBase):
        def requires_command(self):
            return "tool"

        def command(self):
            return "tool --version"

    with pytest.raises(ValueError, match="requires_command"):
        command_text(NeedsTool, {})


def test_prefetch_answers_every_later_read_from_one_command(tmp_path):
    server_dir = tmp_path / "server-dir"
    server_dir.mkdir()
    (server_dir / ".serverversion").write_text("21\n")
    (tmp_path / "a.txt").write_text("alpha\n")
    venv = Path(sys.executable).parent.parent
    host = ShellHost()
    facts = [
        FactRead.of(ServerDir, path=str(server_dir), secret_file=str(tmp_path / "secret")),
        FactRead.of(VenvVersions, venv=str(venv)),
        FactRead.of(LaunchdJob, label="org.example.job", domain="gui/501"),
    ]
    snapshot.prefetch(host, [*facts, str(tmp_path / "a.txt"), str(tmp_path / "none")])
    assert host.ran == ["FactBatch"]

    # Each answer is what the fact gives when read on its own.
    alone = ShellHost()
    for fact in facts:
        assert snapshot.read(host, fact) == alone.get_fact(fact.fact, **fact.kwargs)
    assert snapshot.file_content(host, str(tmp_path / "a.txt")) == "alpha\n"
    assert snapshot.file_content(host, str(tmp_path / "none")) is None
    assert host.ran == ["FactBatch"]

    snapshot.prefetch(host, [*facts, str(tmp_path / "a.txt")])  # all known
    assert host.ran == ["FactBatch"]


def test_failed_or_unreadable_facts_are_read_again_alone(tmp_path):
    host = ShellHost()
    snapshot.prefetch(host, [FactRead.of(Fails, why="x"), FactRead.of(Garbled), str(tmp_path / "f")])
    assert host.ran == ["FactBatch"]
    assert snapshot.file_content(host, str(tmp_path / "f")) is None  # from the batch
    # Not memoised: pyinfra's own get_fact runs them, and reports their failure.
    assert snapshot.read(host, FactRead.of(Fails, why="x")) is None
    with pytest.raises(FactProcessError):
        snapshot.read(host, FactRead.of(Garbled))
    assert host.ran == ["FactBatch", "Fails", "Garbled"]


def test_a_single_fact_is_read_without_a_batch(tmp_path):
    host = ShellHost()
    snapshot.prefetch(host, [str(tmp_path / "f")])
    assert host.ran == ["FileContents"]
    assert snapshot.file_content(host, str(tmp_path / "f")) is None

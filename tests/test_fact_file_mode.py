"""FileMode: a file's mode and physical path, read by its real command in a local shell."""

from __future__ import annotations

import os
import subprocess

import pytest
from pyinfra.api.exceptions import FactProcessError

from facts.files import FileMode

from .prepared import gnu_only_forms


def read(path) -> dict | None:
    command = FileMode().command(path=str(path))
    assert gnu_only_forms(command) == []
    result = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True)
    return FileMode().process(result.stdout.splitlines())


@pytest.mark.parametrize(("mode", "shown"), [(0o644, "-rw-r--r--"), (0o666, "-rw-rw-rw-"), (0o600, "-rw-------")])
def test_mode_of_a_file(tmp_path, mode, shown):
    path = tmp_path / "it's a plist.plist"
    path.write_text("x")
    path.chmod(mode)
    assert read(path) == {"mode": shown, "physical": str(path), "owner": os.getuid()}


def test_missing_file_is_none(tmp_path):
    assert read(tmp_path / "nope.plist") is None


def test_physical_path_resolves_the_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.plist").write_text("x")
    os.symlink(real, tmp_path / "LaunchAgents")
    found = read(tmp_path / "LaunchAgents" / "a.plist")
    assert found["physical"] == str(real.resolve() / "a.plist")


def test_a_symlinked_file_reports_its_target_mode(tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    target.chmod(0o666)
    os.symlink(target, tmp_path / "link")
    assert read(tmp_path / "link")["mode"] == "-rw-rw-rw-"


def test_garbled_output_is_refused():
    with pytest.raises(FactProcessError):
        FileMode().process(["mode=rw"])

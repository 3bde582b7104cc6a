"""What a restore trusts (issue 22): ``pyinfra_devpi/backup_check.py`` run for real, as
the ``BackupCheck`` fact's command (under ``sh``, while planning) and as the restore's
verify step (``--hashes --verify``), against backups built in a tmp dir. Each way a
backup can make ``devpi-import`` read a file it should not refuses, naming the path."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deploys._restore import check_trust
from facts.restore import BackupCheck, check_arguments
from pyinfra_devpi import backup_check
from pyinfra_devpi.errors import DeployError

WHEEL = "root/pypi/+f/abc/hermetic_alpha-1.0-py3-none-any.whl"
SOURCE = Path(backup_check.__file__).read_text(encoding="utf-8")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Backup:
    """A backup as the backup program writes it: ``<dir>/devpi-backup-<stamp>/`` with
    ``manifest.json`` and ``export/`` (``dataindex.json`` naming one wheel)."""

    def __init__(self, root: Path):
        self.dir = root / "backups"
        self.dir.mkdir(mode=0o700)
        self.path = self.dir / "devpi-backup-20261207T031700Z"
        self.export = self.path / "export"
        (self.export / WHEEL).parent.mkdir(parents=True)
        self.path.chmod(0o700)
        self.secret = root / "devpi" / "secret"
        self.secret.parent.mkdir(mode=0o700)
        self.secret.write_bytes(b"the devpi secret, 32 bytes long!")
        self.secret.chmod(0o600)
        (self.export / WHEEL).write_bytes(b"a wheel of 32 bytes, from PyPI..")
        self.dataindex = {"dumpversion": "2", "indexes": {"root/pypi": {"files": [
            {"type": "releasefile", "projectname": "hermetic-alpha", "version": "1.0", "relpath": WHEEL,
             "entrymapping": {"hashes": {"sha256": digest((self.export / WHEEL).read_bytes())}}},
        ]}}}
        self.write_dataindex()
        self.write_manifest()

    def write_dataindex(self) -> None:
        (self.export / "dataindex.json").write_text(json.dumps(self.dataindex))

    def listing(self) -> list[dict]:
        files = []
        for path in sorted(p for p in self.export.rglob("*") if not p.is_dir()):
            data = path.read_bytes()  # follows a symlink, as the backup program's manifest_of did
            files.append({"path": str(path.relative_to(self.export)), "size": len(data), "sha256": digest(data)})
        return files

    def write_manifest(self, files: list[dict] | None = None) -> None:
        files = self.listing() if files is None else files
        (self.path / "manifest.json").write_text(json.dumps({"files": files, "file_count": len(files)}))


@pytest.fixture
def backup(tmp_path) -> Backup:
    return Backup(tmp_path)


def fact(path: Path, uid: int | None = None) -> dict:
    """The ``BackupCheck`` fact: its command under ``sh`` with this Python, its ``process``."""
    command = BackupCheck().command(str(path), sys.executable, os.getuid() if uid is None else uid)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return BackupCheck().process(result.stdout.splitlines())


def verify(path: Path, uid: int | None = None) -> subprocess.CompletedProcess:
    """The restore's verify step: the same program with ``--hashes --verify``."""
    arguments = check_arguments(str(path), os.getuid() if uid is None else uid)
    return subprocess.run(["sh", "-c", f"{sys.executable} -I -c \"$0\" {arguments} --hashes --verify", SOURCE],
                          capture_output=True, text=True, timeout=60)


def refused(path: Path, says: str, uid: int | None = None) -> None:
    """Refused while planning (the fact; the deploy's message) and by the verify step."""
    found = fact(path, uid)
    assert any(says in p for p in found["problems"]), found
    with pytest.raises(DeployError) as error:
        check_trust(str(path), found)
    assert says in str(error.value) and "nothing was changed" in str(error.value)
    result = verify(path, uid)
    assert result.returncode == 1 and says in result.stderr, result.stderr


def test_a_backup_as_the_backup_program_writes_it_is_trusted(backup):
    found = fact(backup.path)
    assert found["problems"] == [] and found["files"] == 2 and found["path"] == str(backup.path)
    check_trust(str(backup.path), found)
    result = verify(backup.path)
    assert result.returncode == 0, result.stderr
    assert "2 files" in result.stdout and "all match the manifest" in result.stdout


def test_a_symlink_to_the_devpi_secret_with_every_hash_rewritten_is_refused(backup):
    # The exfiltration: the wheel replaced by a symlink to ~/devpi/secret, its hashes in
    # dataindex.json and manifest.json rewritten to match what devpi-import would read.
    wheel = backup.export / WHEEL
    wheel.unlink()
    wheel.symlink_to(backup.secret)
    backup.dataindex["indexes"]["root/pypi"]["files"][0]["entrymapping"]["hashes"]["sha256"] = digest(
        backup.secret.read_bytes())
    backup.write_dataindex()
    backup.write_manifest()
    refused(backup.path, f"{wheel}: is a symlink (to {backup.secret})")


def test_a_backup_that_is_a_symlink_is_refused(backup, tmp_path):
    link = backup.dir / "devpi-backup-20261207T040000Z"
    link.symlink_to(backup.path)
    refused(link, f"{link}: is a symlink (to {backup.path})")


def test_a_backup_of_another_user_is_refused(backup):
    other = os.getuid() + 1  # every file is the SSH user's; here the SSH user is someone else
    found = fact(backup.path, other)
    assert f"{backup.dir}: owned by uid {os.getuid()}, not by uid {other} (the SSH user) (the backup dir)" \
        in found["problems"]
    assert any(p.startswith(f"{backup.path}: owned by uid {os.getuid()}") for p in found["problems"])
    assert any(p.startswith(f"{backup.export / WHEEL}: owned by uid") for p in found["problems"])
    refused(backup.path, f"{backup.export / WHEEL}: owned by uid {os.getuid()}", other)


@pytest.mark.parametrize("mode, who", [(0o777, "group and others"), (0o770, "group"), (0o707, "others")])
def test_a_backup_dir_writable_by_others_is_refused(backup, mode, who):
    backup.dir.chmod(mode)
    refused(backup.path, f"{backup.dir}: writable by {who} (mode {mode:o}) (the backup dir)")


def test_a_dir_above_writable_by_others_is_refused_unless_sticky(backup, tmp_path):
    above = backup.dir.parent
    above.chmod(0o777)
    refused(backup.path, f"{above}: writable by group and others (mode 777) (a dir above the backup)")
    above.chmod(0o1777)  # like /tmp: nobody else can rename what is the user's
    assert fact(backup.path)["problems"] == []


def test_a_group_writable_file_or_dir_inside_is_refused(backup):
    (backup.export / WHEEL).chmod(0o664)
    refused(backup.path, f"{backup.export / WHEEL}: writable by group (mode 664)")
    (backup.export / WHEEL).chmod(0o644)
    (backup.export / "root").chmod(0o757)
    refused(backup.path, f"{backup.export / 'root'}: writable by others (mode 757)")


def test_a_fifo_or_socket_inside_is_refused(backup, monkeypatch):
    fifo = backup.export / "root" / "pypi" / "+f" / "pipe"
    os.mkfifo(fifo, 0o600)
    refused(backup.path, f"{fifo}: is a FIFO")
    fifo.unlink()
    sock = backup.export / "s"
    # Bound by a relative name: a socket's path is limited to 108 bytes, and
    # pytest's default basetemp (as CI runs it) is longer than that here.
    monkeypatch.chdir(backup.export)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(sock.name)
        refused(backup.path, f"{sock}: is a socket")


def test_a_hard_link_inside_is_refused(backup, tmp_path):
    other = tmp_path / "devpi" / "also-mine"
    other.write_bytes(b"x" * 32)
    wheel = backup.export / WHEEL
    wheel.unlink()
    os.link(other, wheel)
    backup.write_manifest()
    refused(backup.path, f"{wheel}: has 2 hard links")


def test_a_file_beside_the_manifest_and_export_is_refused(backup):
    (backup.path / "extra.json").write_text("{}")
    refused(backup.path, f"{backup.path / 'extra.json'}: is not part of a backup")


@pytest.mark.parametrize("listed", ["/Users/alice/devpi/secret", "../../../devpi/secret", "root/../../x", "./a", "a//b",
                                    ""])
def test_a_manifest_entry_outside_the_export_is_refused(backup, listed):
    files = backup.listing()
    files.append({"path": listed, "size": 32, "sha256": digest(b"x")})
    backup.write_manifest(files)
    refused(backup.path, f"lists {listed!r}, not a relative path inside export/")


def test_a_listed_file_missing_is_refused(backup):
    (backup.export / WHEEL).unlink()
    refused(backup.path, f"{backup.export / WHEEL}: listed in the manifest, missing")


def test_an_unlisted_file_is_refused(backup):
    extra = backup.export / "root" / "pypi" / "+f" / "evil-1.0-py3-none-any.whl"
    extra.write_bytes(b"not listed")
    refused(backup.path, f"{extra}: not listed in the manifest")


def test_a_size_that_differs_is_refused_while_planning(backup):
    (backup.export / WHEEL).write_bytes(b"a different size")
    refused(backup.path, f"{backup.export / WHEEL}: 16 bytes, the manifest says 32")


def test_a_hash_that_differs_is_refused_by_the_verify_step(backup):
    # Same size, other bytes: planning reads sizes only; the verify step, before the
    # import reads anything, hashes every file.
    (backup.export / WHEEL).write_bytes(b"a wheel of 32 bytes, not PyPI's!")
    assert fact(backup.path)["problems"] == []
    result = verify(backup.path)
    assert result.returncode == 1
    assert f"{backup.export / WHEEL}: its sha256 differs from the manifest's" in result.stderr


@pytest.mark.parametrize("relpath", ["../../devpi/secret", "/Users/alice/devpi/secret", "root/pypi/+f/unlisted.whl",
                                     "dataindex.json"])
def test_a_dataindex_entry_that_is_not_a_listed_file_is_refused(backup, relpath):
    # devpi-import opens <export>/<relpath>: a relpath with .. (or absolute) leaves the backup.
    backup.dataindex["indexes"]["root/pypi"]["files"][0]["relpath"] = relpath
    backup.write_dataindex()
    backup.write_manifest()
    refused(backup.path, f"names the file {relpath!r}, which is not a file the manifest lists")


def test_no_backup_and_no_python(tmp_path):
    found = fact(tmp_path / "nothing")
    assert found["problems"] == [f"{tmp_path / 'nothing'}: No such file or directory"]
    command = BackupCheck().command(str(tmp_path), str(tmp_path / "no-python"), 0)
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert BackupCheck().process(result.stdout.splitlines()) is None
    check_trust(str(tmp_path), None)  # the deploy's converged-devpi check says what is missing


def test_a_file_name_with_a_terminal_escape_is_named_without_it(backup):
    evil = backup.export / "root" / "x\x1b[2Jy"
    evil.write_bytes(b"x")
    found = fact(backup.path)
    assert f"{backup.export}/root/x\\x1b[2Jy: not listed in the manifest" in found["problems"]
    assert "\x1b" not in verify(backup.path).stderr


def test_the_backup_programs_marker_may_be_beside_the_manifest_but_only_as_a_file(backup):
    marker = backup.path / "backup.pyinfra.json"
    marker.write_text('{"name": "devpi-backup-20261207T031700Z"}')
    assert fact(backup.path)["problems"] == []
    marker.unlink()
    marker.mkdir()
    (marker / "hidden.whl").write_bytes(b"x")
    refused(backup.path, f"{marker}: is a directory")


def test_many_problems_are_counted_and_the_first_ones_named(backup):
    for n in range(25):
        (backup.export / f"extra-{n:02d}.whl").write_bytes(b"x")
    found = fact(backup.path)
    assert found["problem_count"] == 25 and len(found["problems"]) == backup_check.SHOWN
    with pytest.raises(DeployError) as error:
        check_trust(str(backup.path), found)
    assert f"{backup.export}/extra-00.whl: not listed in the manifest" in str(error.value)
    assert "... and 5 more" in str(error.value)

"""Secret references: resolved on the controller, errors that never echo a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyinfra_devpi.secrets import SecretError, parse_secret_ref


def test_file_reference_reads_one_line(tmp_path):
    path = tmp_path / "pw"
    path.write_text("s3cret pass\n")
    assert parse_secret_ref(f"file:{path}").resolve("devpi_root_password") == "s3cret pass"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"caf\xe9 latin-1\n", "not UTF-8 text"), (b"", "the file is empty")],
)
def test_unusable_secret_file_is_a_clear_error_without_the_value(tmp_path, content, message):
    path = tmp_path / "pw"
    path.write_bytes(content)
    with pytest.raises(SecretError, match=message) as error:
        parse_secret_ref(f"file:{path}").resolve("devpi_root_password")
    assert "`devpi_root_password`" in str(error.value)
    assert "latin-1" not in str(error.value)


def test_missing_env_variable_names_it(monkeypatch):
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    with pytest.raises(SecretError, match="NO_SUCH_PW is unset"):
        parse_secret_ref("env:NO_SUCH_PW").resolve("devpi_users")


def test_the_root_password_hash_file_is_0600_from_its_first_byte(tmp_path):
    """devpi.init's own commands, run for real under a umask that would make a new file
    0644: the hash file exists 0600 (and empty) before the upload writes into it, a file a
    killed run left (0644) is made anew, and writing into it as SFTP does (open with
    O_CREAT|O_TRUNC, mode 0666 asked) keeps 0600. The file is never group/other readable."""
    import os
    import stat
    import subprocess

    from pyinfra.api.hiddenvalue import HiddenValue

    from operations import devpi
    from pyinfra_devpi.config import build_config

    from .prepared import PreparedHost, Upload, run_op

    home = tmp_path / "home"
    config = build_config({"devpi_outside_url": "https://pypi.example.org"}, str(home))
    hash_file = config.paths.root_hash_upload
    host = PreparedHost(server_dir={"exists": False, "is_dir": False, "has_data": False})
    commands = run_op(devpi.init, host, config=config, password_hash=lambda: HiddenValue("$argon2id$hash"))
    upload_at = next(i for i, c in enumerate(commands) if isinstance(c, Upload))
    assert commands[upload_at].dest == hash_file
    before_upload = commands[:upload_at]
    Path(config.paths.home).mkdir(parents=True)
    Path(hash_file).write_text("left by a killed run")
    os.chmod(hash_file, 0o644)
    for command in before_upload:
        subprocess.run(["/bin/sh", "-c", f"umask 022; {command}"], check=True)
    assert stat.S_IMODE(os.stat(hash_file).st_mode) == 0o600
    assert os.path.getsize(hash_file) == 0
    # What the SFTP server does with the upload: open the existing file for writing.
    fd = os.open(hash_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    os.write(fd, commands[upload_at].content.encode())
    os.close(fd)
    assert stat.S_IMODE(os.stat(hash_file).st_mode) == 0o600
    assert Path(hash_file).read_text() == "$argon2id$hash"

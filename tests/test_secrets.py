"""Secret references: resolved on the controller, errors that never echo a value."""

from __future__ import annotations

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

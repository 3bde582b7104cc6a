"""
Secret references: where a password comes from, resolved on the controller only.

Host data never holds a password, only a reference to one:
``op://vault/item/field`` (1Password, read with ``op read``), ``env:NAME`` or
``file:PATH``. A reference is resolved lazily, at the moment an operation needs the
value, so a rerun that needs no password never asks 1Password for one.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

from pyinfra.api.exceptions import PyinfraError

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretError(PyinfraError):
    """A secret reference that could not be resolved (the message never holds the value)."""


@dataclass(frozen=True)
class SecretRef:
    scheme: str  # "op", "env" or "file"
    target: str  # the op:// URI, the variable name or the path

    def __str__(self) -> str:
        # What the operator wrote: safe to print, it is a reference, not the value.
        return self.target if self.scheme == "op" else f"{self.scheme}:{self.target}"

    def resolve(self, key: str) -> str:
        """Read the secret on the controller. ``key`` names the host-data key in errors."""
        if self.scheme == "env":
            value = os.environ.get(self.target)
            if not value:
                raise SecretError(
                    f"host data `{key}` = 'env:{self.target}': the environment variable "
                    f"{self.target} is unset or empty on the controller; export it and rerun",
                )
            return value
        if self.scheme == "file":
            path = os.path.expanduser(self.target)
            try:
                with open(path, encoding="utf-8") as f:
                    value = f.read().rstrip("\r\n")
            except OSError as e:
                raise SecretError(
                    f"host data `{key}` = 'file:{self.target}': cannot read it on the "
                    f"controller ({e.strerror}); create the file or fix the path",
                ) from None
            except UnicodeDecodeError:
                raise SecretError(
                    f"host data `{key}` = 'file:{self.target}': the file is not UTF-8 text; "
                    "write the password into it as UTF-8",
                ) from None
            if not value:
                raise SecretError(f"host data `{key}` = 'file:{self.target}': the file is empty")
            return value
        return self._op_read(key)

    def _op_read(self, key: str) -> str:
        try:
            result = subprocess.run(
                ["op", "read", self.target],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
        except FileNotFoundError:
            raise SecretError(
                f"host data `{key}` = {self.target!r}: the 1Password CLI `op` is not on the "
                "controller's PATH; install it, or use an 'env:NAME' or 'file:PATH' reference",
            ) from None
        except subprocess.TimeoutExpired:
            raise SecretError(f"host data `{key}`: `op read {self.target}` timed out") from None
        if result.returncode != 0:
            # op's stderr describes the failure (item not found, not signed in); it
            # never contains the secret, which only ever goes to stdout.
            reason = result.stderr.strip() or f"exit code {result.returncode}"
            raise SecretError(
                f"host data `{key}`: `op read {self.target}` failed: {reason}. "
                "Sign in with `op signin` or fix the reference",
            )
        value = result.stdout
        if value.endswith("\n"):
            value = value[:-1]
        if not value:
            raise SecretError(f"host data `{key}`: `op read {self.target}` returned an empty value")
        return value


def parse_secret_ref(value: object) -> SecretRef:
    """Parse a reference; raises ``ValueError`` saying what forms are allowed."""
    allowed = "use 'op://vault/item/field', 'env:NAME' or 'file:PATH' (never the password itself)"
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a secret reference string; {allowed}")
    if value.startswith("op://"):
        parts = value[len("op://") :].split("/")
        if len(parts) < 3 or not all(parts):
            raise ValueError(f"an op:// reference needs a vault, an item and a field; {allowed}")
        return SecretRef("op", value)
    if value.startswith("env:"):
        name = value[len("env:") :]
        if not ENV_NAME_RE.fullmatch(name):
            raise ValueError(f"'env:' must be followed by a variable name; {allowed}")
        return SecretRef("env", name)
    if value.startswith("file:"):
        path = value[len("file:") :]
        if not path:
            raise ValueError(f"'file:' must be followed by a path; {allowed}")
        return SecretRef("file", path)
    # Deliberately do not echo the value: it may be a password typed in by mistake.
    raise ValueError(f"unknown secret reference scheme; {allowed}")


def hash_password(password: str) -> str:
    """Hash as devpi-server does (passlib's argon2 scheme, PHC string format).

    devpi-init accepts the hash through ``DEVPISERVER_ROOT_PASSWD_HASH``, so the
    plain password never leaves the controller.
    """
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)

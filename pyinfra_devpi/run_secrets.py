"""
Secrets read at most once per host per run.

A run may need the same password twice (root's for ``devpi-init`` and again to log
in and create the declared users and indexes), and pyinfra runs an operation's body
twice when it checks for changes first. Each reference is resolved once (1Password
asks once) and each password hashed once; the memo lives on the Host object, like
the fact snapshot, so it ends with the run.

A dry run reads no secret at all (a pull request's review job has no 1Password):
the plan says which secret each step will read when applied. A real run reads the
secrets its plan needs while planning, so a reference that cannot be read stops it
before anything changes.
"""

from __future__ import annotations

import sys

from .secrets import SecretRef, hash_password


def is_dry_run() -> bool:
    """``pyinfra ... --dry``: pyinfra 3 does not tell a deploy, so ask its command line."""
    return "--dry" in sys.argv[1:]

_ATTR = "_pyinfra_devpi_secrets"


def _memo(host) -> dict:
    memo = getattr(host, _ATTR, None)
    if memo is None:
        memo = {}
        setattr(host, _ATTR, memo)
    return memo


def resolve_once(host, ref: SecretRef, key: str) -> str:
    """``ref.resolve(key)``, remembered for the rest of the run."""
    memo = _memo(host)
    if ("value", ref) not in memo:
        memo[("value", ref)] = ref.resolve(key)
    return memo[("value", ref)]


def hash_once(host, ref: SecretRef, key: str) -> str:
    """The argon2 hash (as devpi stores it) of the secret ``ref`` points to, made once."""
    memo = _memo(host)
    if ("hash", ref) not in memo:
        memo[("hash", ref)] = hash_password(resolve_once(host, ref, key))
    return memo[("hash", ref)]

"""
The deploy's own errors. A leaf module (nothing of the package imported), so the
config, the users/indexes spec and the deploy can all raise them without a cycle.
"""

from __future__ import annotations

from pyinfra.api.exceptions import PyinfraError


class ConfigError(PyinfraError):
    """A host-data value the deploy cannot use; raised before anything is planned."""


class DeployError(PyinfraError):
    """The host is in a state the deploy must not change; the message says why."""

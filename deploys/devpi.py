"""
Converge a host's devpi mirror: ``pyinfra inventories/indri.py deploys/devpi.py``.

Run from the repository root. Configuration comes from host data in the inventory
(see docs/configuration.md).
"""

import sys
from pathlib import Path

# The project's packages (facts, operations, pyinfra_devpi) live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploys._service import devpi_service  # noqa: E402

devpi_service()

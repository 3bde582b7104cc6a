"""
Restore devpi's server dir from a backup:
``pyinfra inventories/indri.py deploys/devpi_restore.py --data devpi_restore_from=<backup>``.

Run from the repository root; see docs/operating.md, "Backups and restore".
"""

import sys
from pathlib import Path

# The project's packages (facts, operations, pyinfra_devpi) live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploys._restore import devpi_restore  # noqa: E402

devpi_restore()

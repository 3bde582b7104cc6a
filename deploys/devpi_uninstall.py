"""
Take devpi off a host: ``pyinfra inventories/indri.py deploys/devpi_uninstall.py``.

Boots the job out, removes its plist and the Caddy site block (restarting Caddy), and
keeps the server dir, venvs and logs (it says where) unless host data sets
``devpi_uninstall_purge = True`` (e.g. ``--data devpi_uninstall_purge=true``). ``--dry``
shows all of it. See docs/operating.md, "Uninstall".
"""

import sys
from pathlib import Path

# The project's packages (facts, operations, pyinfra_devpi) live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploys._uninstall import devpi_uninstall  # noqa: E402

devpi_uninstall()

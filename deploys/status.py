"""
devpi's state on a host, changing nothing and reading no secret:
``pyinfra -y inventories/indri.py deploys/status.py`` (a table), or with
``--data devpi_status_format=json`` (one JSON object per host on stdout). The run
fails when devpi is not serving, so it works as a monitoring check. See docs/operating.md, "Status".
"""

import sys
from pathlib import Path

# The project's packages (facts, operations, pyinfra_devpi) live at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deploys._status import devpi_status  # noqa: E402

devpi_status()

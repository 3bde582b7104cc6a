"""
Try the deploy on your own Mac: ``pyinfra inventories/local.py deploys/devpi.py``.

Everything lives under your home (~/devpi, ~/Library/LaunchAgents, ~/Library/Logs);
Caddy serves the block on http://127.0.0.1:8141 once your Caddyfile imports
~/.config/caddy/sites/devpi.caddy. The root password comes from the environment.
"""

hosts = [
    (
        "@local",
        {
            "devpi_root_password": "env:DEVPI_ROOT_PASSWORD",
            "devpi_caddy_site_address": "http://127.0.0.1:8141",
        },
    ),
]

"""
indri, the Mac mini: devpi as a user LaunchAgent on loopback behind Caddy.

    pyinfra inventories/indri.py deploys/devpi.py
"""

hosts = [
    (
        "indri",
        {
            "ssh_user": "erichblume",
            "devpi_label": "mcquack.eblume.devpi",
            "devpi_host": "127.0.0.1",
            "devpi_port": 3141,
            "devpi_home": "/Users/erichblume/devpi",
            "devpi_log_dir": "/Users/erichblume/Library/Logs",
            "devpi_out_log": "mcquack.devpi.out.log",
            "devpi_err_log": "mcquack.devpi.err.log",
            "devpi_server_log": "mcquack.devpi.log",
            "devpi_outside_url": "https://pypi.ops.eblu.me",
            "devpi_root_password": "op://vault/devpi/root password",
            # What the operator used to create by hand after the first install. eblume
            # already exists on indri: the deploy adopts it (records the reference,
            # leaves its password); raise password_version to push the one in 1Password.
            "devpi_users": {
                "eblume": {"password": "op://vault/devpi/eblume password"},
            },
            "devpi_indexes": {
                "eblume/dev": {"bases": ["root/pypi"]},
            },
            # Caddy's own LaunchAgent (the caddy role's `launchctl load`: gui/<uid> while
            # erichblume owns the console), kickstarted -k where it is loaded when the
            # block changes: Caddy's ports close while it restarts. The graceful choice is
            #   {"command": "/Users/erichblume/code/3rd/caddy/bin/caddy reload "
            #               "--config /Users/erichblume/.config/caddy/Caddyfile"}
            # (swaps the config in place, wherever Caddy runs), but `caddy reload` talks to
            # Caddy's admin endpoint, which the role's Caddyfile turns off (`admin off`):
            # switch to it once the admin endpoint is on (its default, localhost:2019).
            "devpi_caddy_restart": "mcquack.eblume.caddy",
        },
    ),
]

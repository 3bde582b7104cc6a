"""
devpi users and indexes declared in host data (``devpi_users`` / ``devpi_indexes``).

- ``spec``: the host-data checks (run while the config is built);
- ``plan``: declared specs + what devpi holds → the REST calls, and the script that
  applies them on the host (standard library only: it is uploaded and run there).

The fact is ``facts.users_indexes.UsersIndexes``, the operation
``operations.users_indexes.users_indexes``.
"""

# The restore's import (operations/restore.py import_command): devpi-import the backup's
# export into a new server dir beside the live one; a failure removes it.
: "${new?}" "${python?}" "${devpi_import?}" "${config_file?}" "${export?}" "${dataindex?}" "${has_root_pypi_py?}"
set -e
rm -rf "$new"
trap 'if [ "$?" -ne 0 ]; then rm -rf "$new"; fi' EXIT
(umask 077; mkdir "$new")
# An export holding root/pypi brings its settings; else devpi-import must not create
# devpi's default root/pypi, which would fetch PyPI's whole project list.
if "$python" -I -c "$has_root_pypi_py" "$dataindex"; then
  "$devpi_import" --configfile "$config_file" --serverdir "$new" "$export"
else
  "$devpi_import" --configfile "$config_file" --serverdir "$new" --no-root-pypi "$export"
fi

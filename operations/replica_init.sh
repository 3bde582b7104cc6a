# devpi-init of a replica (operations/replica.py init_script) into a transient dir beside
# the server dir, checked, then renamed into place: an empty database that follows the
# primary (no root password: users come from the primary). Never over data: an empty
# or missing server dir only.
: "${server_dir?}" "${devpi_init?}" "${config_file?}" "${primary_url?}" "${transient_suffix?}"
: "${serverversion_name?}" "${nodeinfo_name?}" "${sqlite_name?}"
set -e
. ./server_dir_place.sh
new_server_dir "$server_dir" "$transient_suffix"
printf 'devpi-init: initialising a replica of %s\n' "$primary_url"
if ! out=$("$devpi_init" --configfile "$config_file" --serverdir "$new" --role replica \
    --primary-url "$primary_url" --no-root-pypi 2>&1); then
  printf '%s\n' "$out" >&2; exit 1
fi
place_server_dir "$new" "$sd" "$serverversion_name" "$nodeinfo_name" "$sqlite_name"
printf 'devpi-init: %s is a replica of %s\n' "$sd" "$primary_url"

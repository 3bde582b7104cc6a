# devpi-init (operations/devpi.py init_script) into a transient dir beside the server dir,
# checked, then renamed into place: the server dir is either missing/empty or devpi's
# whole init. The root password hash arrives in a 0600 file (uploaded before), is read
# into devpi-init's environment and the file removed before anything else runs: never
# in argv, output or a leftover file.
: "${hash_file?}" "${server_dir?}" "${devpi_init?}" "${config_file?}" "${transient_suffix?}"
: "${serverversion_name?}" "${nodeinfo_name?}" "${sqlite_name?}"
chmod 600 "$hash_file"; DEVPISERVER_ROOT_PASSWD_HASH=$(cat "$hash_file"); rm -f "$hash_file"
export DEVPISERVER_ROOT_PASSWD_HASH
set -e
. ./server_dir_place.sh
new_server_dir "$server_dir" "$transient_suffix"
printf 'devpi-init: initialising a new server dir (root'"'"'s password hash, devpi'"'"'s database)\n'
# devpi-init's log (no secret in it) is shown only when it fails: the progress output
# stays the deploy's own lines. --no-root-pypi: the users/indexes step creates root/pypi
# with mirror_no_project_list set.
if ! out=$("$devpi_init" --configfile "$config_file" --serverdir "$new" --no-root-pypi 2>&1); then
  printf '%s\n' "$out" >&2; exit 1
fi
place_server_dir "$new" "$sd" "$serverversion_name" "$nodeinfo_name" "$sqlite_name"
printf 'devpi-init: %s is initialised\n' "$sd"

# devpi-init of a replica (operations/replica.py init_script) into a transient dir beside
# the server dir, checked, then renamed into place: an empty database that follows the
# primary (no root password: users come from the primary). Never over data: an empty
# or missing server dir only.
: "${server_dir?}" "${devpi_init?}" "${config_file?}" "${primary_url?}" "${transient_suffix?}"
: "${serverversion_name?}" "${nodeinfo_name?}" "${sqlite_name?}"
set -e
sd=$server_dir
if [ -L "$sd" ]; then sd=$(cd "$sd" && pwd -P); fi
# A transient dir found now is a killed run's: it was never live.
new=$sd$transient_suffix
rm -rf "$new"
trap 'if [ "$?" -ne 0 ]; then rm -rf "$new"; fi' EXIT
(umask 077; mkdir "$new")
printf 'devpi-init: initialising a replica of %s\n' "$primary_url"
if ! out=$("$devpi_init" --configfile "$config_file" --serverdir "$new" --role replica \
    --primary-url "$primary_url" --no-root-pypi 2>&1); then
  printf '%s\n' "$out" >&2; exit 1
fi
for x in "$serverversion_name" "$nodeinfo_name" "$sqlite_name"; do
  if [ ! -s "$new/$x" ]; then
    printf 'devpi-init left no %s in %s: the server dir was not replaced\n' "$x" "$new" >&2; exit 1
  fi
done
if [ -d "$sd" ] && ! rmdir "$sd" 2>/dev/null; then
  printf '%s is no longer empty: not replacing it with the new server dir\n' "$sd" >&2; exit 1
fi
mv "$new" "$sd"
printf 'devpi-init: %s is a replica of %s\n' "$sd" "$primary_url"

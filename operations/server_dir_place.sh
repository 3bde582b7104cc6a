# A devpi-init into a transient dir, included by devpi_init.sh and replica_init.sh: the
# dir is made beside the server dir, and devpi-init's whole init is checked, then renamed
# into place, only where the server dir is missing or empty.
#
# new_server_dir SERVER_DIR SUFFIX          sets sd (SERVER_DIR, a symlink resolved) and
#                                           new (sd SUFFIX, made empty and 0700; removed
#                                           when the script exits with a failure)
# place_server_dir NEW SERVER_DIR FILE...   FILE: what devpi-init must leave in NEW (a
#                                           failure exits)
new_server_dir() {
  sd=$1
  if [ -L "$sd" ]; then sd=$(cd "$sd" && pwd -P); fi
  new=$sd$2
  # A transient dir found now is a killed run's: it was never live.
  rm -rf "$new"
  trap 'if [ "$?" -ne 0 ]; then rm -rf "$new"; fi' EXIT
  (umask 077; mkdir "$new")
}
place_server_dir() {
  place_new=$1; place_sd=$2; shift 2
  for place_file in "$@"; do
    if [ ! -s "$place_new/$place_file" ]; then
      printf 'devpi-init left no %s in %s: the server dir was not replaced\n' "$place_file" "$place_new" >&2; exit 1
    fi
  done
  if [ -d "$place_sd" ] && ! rmdir "$place_sd" 2>/dev/null; then
    printf '%s is no longer empty: not replacing it with the new server dir\n' "$place_sd" >&2; exit 1
  fi
  mv "$place_new" "$place_sd"
}

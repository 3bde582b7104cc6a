# The end of a devpi-init into a transient dir, included by devpi_init.sh and
# replica_init.sh: devpi-init's whole init is checked, then renamed into place, and only
# where the server dir is missing or empty (a failure exits; the caller's trap removes NEW).
#
# place_server_dir NEW SERVER_DIR FILE...   FILE: what devpi-init must leave in NEW
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

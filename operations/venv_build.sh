# The venv build (operations/devpi.py build_venv_script): a new venv beside the live one,
# proved to import and to report the pinned version (and the database version the server
# dir holds), then the live venv link swapped to it with one rename; older venvs pruned.
: "${home?}" "${venvs?}" "${live?}" "${uv?}" "${sv?}" "${pending?}" "${venv_previous?}"
: "${venv_name?}" "${python?}" "${server_version?}" "${web_version?}" "${index_url?}" "${lock?}"
: "${setuptools_pin?}" "${warm?}" "${check?}" "${rename?}" "${allow_export_import?}" "${opt_in_hint?}"
: "${transient_suffix?}" "${pre_existing_prefix?}"
set -e
# A killed run's record of a venv waiting for an export/import upgrade.
rm -f "$pending"
command -v "$uv" >/dev/null 2>&1 || {
  printf 'uv not found on the target as %s: install uv or set devpi_uv to its path\n' "$uv" >&2; exit 127
}
(umask 077; mkdir -p "$home")
mkdir -p "$venvs"

. ../pyinfra_devpi/deploy_lock_process.sh
. ./venv_prune.sh

# A name no other build shares (the pid: even in the same second), and beside it a
# marker naming this shell while it builds: no prune removes it meanwhile.
new=$venvs/$venv_name-$(date +%Y%m%d%H%M%S)-$$
building=$new$building_suffix
printf 'pid=%s\nstarted=%s\nhost=%s\n' "$$" "$(dl_started $$)" "$(uname -n)" > "$building"
# A failed build removes its venv, unless the live link already points at it.
swapped=; warm_pid=
cleanup() {
  rm -f "$building"
  # (set -e holds here too: a warm-up killed by its signal must not stop the clean-up)
  if [ -n "$warm_pid" ]; then kill "$warm_pid" 2>/dev/null || true; wait "$warm_pid" 2>/dev/null || true; fi
  if [ "$1" -ne 0 ] && [ -z "$swapped" ]; then rm -rf "$new"; fi
}
trap 'cleanup $?' EXIT
# uv reads project files from the working directory: build from a neutral one.
cd "$venvs"
printf 'venv: creating %s with Python %s (uv)\n' "${new##*/}" "$python"
"$uv" venv --quiet --python "$python" "$new"
printf 'venv: installing devpi-server %s + devpi-web %s and their dependencies\n' "$server_version" "$web_version"
set -- --quiet --python "$new/bin/python"
if [ -n "$index_url" ]; then set -- "$@" --index-url "$index_url"; fi
if [ -n "$lock" ]; then
  # A complete lock (every package pinned and hashed): installed exactly, nothing resolved.
  "$uv" pip sync "$@" --require-hashes "$lock"
else
  "$uv" pip install "$@" "devpi-server==$server_version" "devpi-web==$web_version" "$setuptools_pin"
fi
printf 'venv: checking that the new venv imports and reports the pinned version\n'
# On the other core, a second interpreter writes the bytecode devpi's start needs.
"$new/bin/python" -I -W ignore -c "$warm" </dev/null >/dev/null 2>&1 & warm_pid=$!
# (pyramid's pkg_resources deprecation warning is noise in the progress output)
found=$("$new/bin/python" -I -W ignore::UserWarning -c "$check")
# The bytecode is complete before the venv goes live (its status is not the check's:
# the warm-up skips what does not import).
wait "$warm_pid" || true; warm_pid=
db=${found%% *}; version=${found#* }
if [ ! -x "$new/bin/devpi-server" ] || [ "$version" != "$server_version" ]; then
  printf 'the new venv reports devpi-server %s, expected %s\n' "$version" "$server_version" >&2; exit 1
fi
# A server dir holding another database version is refused (nothing live changed), or,
# with devpi_allow_export_import, the new venv is left beside the live one, not swapped
# in, and named in the pending file for the upgrade (upgrade.sh), which runs next.
if [ -f "$sv" ] && [ "$(head -n 1 "$sv")" != "$db" ]; then
  if [ -n "$allow_export_import" ]; then
    printf 'devpi-server %s uses database version %s but %s holds version %s: the data moves over with devpi-export and devpi-import (devpi_allow_export_import)\n' \
      "$server_version" "$db" "${sv%/*}" "$(head -n 1 "$sv")" >&2
    printf '%s\n' "$new" > "$pending"; exit 0
  fi
  printf 'devpi-server %s uses database version %s but %s holds version %s: refusing to start it on that dir; nothing live was changed. %s\n' \
    "$server_version" "$db" "${sv%/*}" "$(head -n 1 "$sv")" "$opt_in_hint" >&2
  exit 1
fi
prev=$(cd "$live" 2>/dev/null && pwd -P || true)
# A venv made by hand (a real directory) is moved aside, not deleted.
if [ -d "$live" ] && [ ! -L "$live" ]; then
  prev=$venvs/$pre_existing_prefix$(date +%Y%m%d%H%M%S)-$$; mv "$live" "$prev"
fi
link=$live$transient_suffix
rm -f "$link"
ln -s "$new" "$link"
"$new/bin/python" -I -c "$rename" "$link" "$live"
swapped=1
# Where the health gate rolls back to if this venv's devpi does not come up.
printf '%s\n' "$prev" > "$venv_previous"
prune_venvs "$venvs" "$new" "$prev" "$live" "$building"
printf 'venv: %s is live\n' "${new##*/}"

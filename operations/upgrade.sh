# The upgrade across database versions (operations/server_dir.py upgrade_script): if the
# venv build left a venv waiting for it ($pending), stop devpi, devpi-export with the live
# venv, devpi-import with the new one into a new dir, check it on a spare port, swap dirs
# and venv (the old ones kept), start, check; the old ones back on failure.
: "${pending?}" "${live?}" "${venvs?}" "${cfg?}" "${plist?}" "${url?}" "${server_dir?}"
: "${upgrade_log?}" "${err_log?}" "${venv_previous?}" "${start_job_cmd?}" "${stop_job_cmd?}"
: "${db_version_py?}" "${rename?}" "${transient_suffix?}" "${export_suffix?}" "${kept_infix?}"
: "${failed_infix?}" "${pre_existing_prefix?}"
: "${smoke?}" "${smoke_python?}" "${smoke_result?}" "${smoke_indexes?}" "${smoke_new?}"

if [ ! -f "$pending" ]; then exit 0; fi
sd=$server_dir
if [ -L "$sd" ]; then sd=$(cd "$sd" && pwd -P); fi
new=$(head -n 1 "$pending")
nsd=$sd$transient_suffix
exp=$sd$export_suffix$transient_suffix

. ./server_dir_functions.sh

stopped=; spare=
# The health gate's smoke check (real requests, by the live venv's Python): run here too,
# while the old dir can still go back, since a devpi that answers /+api may still fail them.
smoke_passes() { [ -z "$smoke" ] || "$smoke_python" -I -c "$smoke" "$url" "$smoke_result" "$smoke_new" "$smoke_indexes" >&2; }
# launchd's commands (operations/launchd.py), each in its own shell: a failure returns
# (the caller restores), never exits this one.
start_job() { /bin/sh -c "$start_job_cmd"; }
stop_job() { /bin/sh -c "$stop_job_cmd" || return $?; down "$url" "$timeout"; }
# Before the swap the live server dir was never touched: drop the new one.
fail() {
  if [ -n "$spare" ]; then kill "$spare" 2>/dev/null; fi
  rm -rf "$nsd" "$exp"
  if [ -n "$stopped" ]; then
    start_job
    up "$url" "$(uuid_of "$sd")" "$timeout" \
      && printf 'devpi runs again on the unchanged server dir %s and the previous venv\n' "$sd" >&2
  fi
  printf 'the upgrade across database versions failed; the server dir and the live venv are as they were, the new venv %s is kept\n' "$new" >&2
  exit 1
}

if [ ! -x "$new/bin/devpi-import" ]; then
  printf '%s (the venv waiting for the upgrade) is gone: rerun\n' "$new" >&2
  rm -f "$pending"; exit 1
fi
old=$(cd "$live" 2>/dev/null && pwd -P) || old=
newdb=$("$new/bin/python" -I -c "$db_version_py")
olddb=$(head -n 1 "$sd/$serverversion_name")
livedb=$("$old/bin/python" -I -c "$db_version_py" 2>/dev/null) || livedb=
if [ "$livedb" != "$olddb" ]; then
  printf '%s holds database version %s, but the live venv (%s) is no devpi-server that reads it: nothing here can export it. Export it with the devpi-server that wrote it (devpi-export), then import it into an empty server dir with this one (devpi-import)\n' \
    "$sd" "$olddb" "${old:-none}" >&2
  rm -f "$pending"; exit 1
fi
if [ ! -f "$plist" ]; then
  printf '%s is missing: the upgrade stops and starts devpi with it\n' "$plist" >&2; exit 1
fi
# A killed run's transient dirs: never live.
rm -rf "$nsd" "$exp"
# From here the host finishes on its own (the upgrade, or the old dir and venv back): a
# run whose connection goes away (hung up; its output goes nowhere) must not leave devpi
# stopped or the dirs half swapped.
trap '' HUP PIPE
t0=$(date +%s)
printf 'stopping devpi for the export (database version %s to %s)\n' "$olddb" "$newdb" >&2
stopped=1; stop_job || fail
export_import "$old" "$sd" "$new" "$nsd" "$exp" "$cfg" "$upgrade_log" || fail
check_on_spare "$new" "$nsd" "$cfg" "$exp" || fail
# The swap: the old server dir is kept under a name that says what it was.
kept=$sd$kept_infix$olddb-$(date +%Y%m%d%H%M%S)-$$
mv "$sd" "$kept" || fail
if ! mv "$nsd" "$sd"; then mv "$kept" "$sd"; fail; fi
# A venv made by hand (a real directory) is moved aside, not deleted.
if [ -d "$live" ] && [ ! -L "$live" ]; then
  old=$venvs/$pre_existing_prefix$(date +%Y%m%d%H%M%S)-$$; mv "$live" "$old"
fi
link=$live$transient_suffix
rm -f "$link"; ln -s "$new" "$link"; "$new/bin/python" -I -c "$rename" "$link" "$live"
# The health gate's venv-only rollback would pair the old venv with the new dir.
rm -f "$venv_previous"
start_job
answered=
if up "$url" "$(uuid_of "$sd")" "$timeout" && answered=1 && smoke_passes; then
  rm -rf "$exp"; rm -f "$pending"
  printf 'upgraded %s from database version %s to %s in %ss of downtime; the previous server dir is kept as %s, the previous venv as %s\n' \
    "$sd" "$olddb" "$newdb" "$(($(date +%s) - t0))" "$kept" "$old" >&2
  exit 0
fi
if [ -n "$answered" ]; then
  printf 'devpi answers from the new server dir but failed the smoke check (the requests above): putting the old server dir and venv back\n' >&2
else
  printf 'devpi did not answer from the new server dir within %ss: putting the old server dir and venv back\n' "$timeout" >&2
fi
tail -n 30 "$err_log" >&2 2>/dev/null
stop_job
failed=$sd$failed_infix$newdb-$(date +%Y%m%d%H%M%S)-$$
mv "$sd" "$failed"; mv "$kept" "$sd"
rm -f "$link"; ln -s "$old" "$link"; "$old/bin/python" -I -c "$rename" "$link" "$live"
rm -rf "$exp"; rm -f "$pending"
start_job
# The smoke check again: its record (the status shows it) is then the old venv's.
if up "$url" "$(uuid_of "$sd")" "$timeout" && smoke_passes; then
  printf 'rolled back: devpi answers again from %s with the previous venv %s; the new dir is kept as %s\n' \
    "$sd" "$old" "$failed" >&2
else
  printf 'the rollback did not bring devpi back either: see %s\n' "$err_log" >&2
fi
exit 1

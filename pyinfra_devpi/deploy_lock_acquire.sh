# Take the deploy lock for run $token, or make sure this run holds it
# (deploy_lock.acquire_script). Exits 0 holding the lock, or $lock_exit with a message:
# another live run held it for $wait seconds, or the host changed after the run read it.
# The messages (say_took_over, say_changed, say_held) are defined before this script,
# from deploy_lock.py's templates: one wording for the controller and the host.
: "${lock?}" "${owner_file?}" "${guard?}" "${serial?}" "${home?}" "${token?}" "${expect?}" "${wait?}"
: "${controller?}" "${by?}" "${lock_exit?}"
. ./deploy_lock_process.sh
. ./deploy_lock_owner.sh
# Remove the lock if it still holds $1 (the stale owner), under the takeover guard, so
# two runs never both remove a lock.
dl_takeover() {
  if mkdir "$guard" 2>/dev/null; then
    if [ -e "$lock" ] && [ "$(dl_owner)" = "$1" ]; then rm -rf "$lock"; owner=$1; say_took_over; fi
    rmdir "$guard" 2>/dev/null
  # a guard left by a run that died while taking over
  elif dl_old "$guard"; then rmdir "$guard" 2>/dev/null
  else sleep 1; fi
}
(umask 077; mkdir -p "$home") || exit 1
if [ "$(dl_field run "$(dl_owner)")" = "$token" ]; then exit 0; fi
anchor=$(dl_anchor "$controller")
me=$(printf 'run=%s\npid=%s\nstarted=%s\nhost=%s\nsince=%s\nby=%s' \
  "$token" "$anchor" "$(dl_started "$anchor")" "$(uname -n)" "$(date '+%Y-%m-%d %H:%M:%S %Z')" "$by")
end=$(( $(date +%s) + wait ))
while :; do
  if mkdir "$lock" 2>/dev/null; then
    printf '%s\n' "$me" > "$owner_file" || { rm -rf "$lock"; exit 1; }
    now=$(head -n 1 "$serial" 2>/dev/null)
    # The host changed after this run read it: its plan is out of date.
    if [ "$now" != "$expect" ] && [ "$now" != "$token" ]; then
      rm -rf "$lock"
      say_changed
      exit "$lock_exit"
    fi
    if ! { printf '%s\n' "$token" > "$serial".new && mv -f "$serial".new "$serial"; }; then rm -rf "$lock"; exit 1; fi
    exit 0
  fi
  owner=$(dl_owner)
  [ -e "$lock" ] || continue
  if [ -n "$owner" ] && [ "$(dl_field run "$owner")" = "$token" ]; then exit 0; fi
  if dl_stale; then dl_takeover "$owner"; continue; fi
  if [ "$(date +%s)" -ge "$end" ]; then
    say_held
    exit "$lock_exit"
  fi
  sleep 1
done

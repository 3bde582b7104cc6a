# Print the deploy lock's state once no other live run holds it, or after $wait seconds
# (deploy_lock.state_script): state=free|held|stale, serial=<the serial file's first
# line>, and owner_<key>=<value> for each line of the owner file. Always exits 0.
: "${lock?}" "${owner_file?}" "${serial?}" "${wait?}"
. ./deploy_lock_process.sh
. ./deploy_lock_owner.sh
end=$(( $(date +%s) + wait ))
while :; do
  owner=$(dl_owner)
  if [ ! -e "$lock" ]; then state=free; owner=
  elif dl_stale; then state=stale
  else state=held; fi
  if [ "$state" != held ] || [ "$(date +%s)" -ge "$end" ]; then break; fi
  sleep 1
done
echo "state=$state"
echo "serial=$(head -n 1 "$serial" 2>/dev/null)"
printf '%s\n' "$owner" | sed -n 's/^\([a-z]*\)=/owner_\1=/p'
true

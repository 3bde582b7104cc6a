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
# Printable ASCII only (other bytes as '?'): a damaged file must not break the output's
# UTF-8, which the whole fact batch is decoded as.
echo "serial=$(head -n 1 "$serial" 2>/dev/null | tr -d '\r\n' | LC_ALL=C tr -c '[:print:]' '?')"
printf '%s\n' "$owner" | LC_ALL=C tr -c '[:print:]\n' '?' | sed -n 's/^\([a-z]*\)=/owner_\1=/p'
true

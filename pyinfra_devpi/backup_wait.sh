# Wait while the scheduled backup holds its lock (backup.wait_for_backup): a restore or
# a database upgrade must not swap the server dir a backup exports, nor a prune remove
# the backup a restore reads. Exits 0 once no live backup holds the lock (gone, or
# stale: its process ended), else $lock_exit after $wait seconds, having changed nothing.
: "${lock?}" "${owner_file?}" "${wait?}" "${lock_exit?}" "${log?}"
. ./deploy_lock_process.sh
end=$(( $(date +%s) + wait ))
said=
while [ -e "$lock" ]; do
  owner=$(cat "$owner_file" 2>/dev/null)
  if [ -n "$owner" ]; then dl_gone "$owner" && break; else dl_old "$lock" && break; fi
  pid=$(dl_field pid "$owner"); since=$(dl_field since "$owner")
  if [ "$(date +%s)" -ge "$end" ]; then
    printf 'pyinfra-devpi: a scheduled backup (process %s, since %s) still holds %s after %ss; nothing was changed: run this again once it has finished (its log: %s)\n' \
      "${pid:-?}" "${since:-?}" "$lock" "$wait" "$log" >&2
    exit "$lock_exit"
  fi
  if [ -z "$said" ]; then
    printf 'waiting for the scheduled backup (process %s, since %s) to finish\n' "${pid:-?}" "${since:-?}" >&2
    said=1
  fi
  sleep 1
done

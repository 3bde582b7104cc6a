# The deploy lock's own functions (need $lock and $owner_file, set by the script that
# includes them, and deploy_lock_process.sh):
#   dl_owner             the owner text ('' while it is being written, or no lock)
#   dl_stale             0 when the lock exists and its owner is gone (or it has had no
#                        owner for a minute: its maker died between mkdir and writing)
#   dl_anchor CTL        the pid whose life is this run's: the nearest ancestor that is
#                        an SSH session process, or pyinfra itself (pid CTL, @local)
# shellcheck disable=SC2154
dl_owner() { cat "$owner_file" 2>/dev/null; }
dl_stale() {
  [ -e "$lock" ] || return 1
  _o=$(dl_owner)
  if [ -n "$_o" ]; then dl_gone "$_o"; else dl_old "$lock"; fi
}
dl_anchor() {
  _p=$$
  while [ -n "$_p" ] && [ "$_p" -gt 1 ] 2>/dev/null; do
    case "$(ps -o comm= -p "$_p" 2>/dev/null)" in *sshd*) echo "$_p"; return;; esac
    if [ "$_p" = "$1" ]; then echo "$_p"; return; fi
    _p=$(ps -o ppid= -p "$_p" 2>/dev/null | tr -d ' ')
  done
}

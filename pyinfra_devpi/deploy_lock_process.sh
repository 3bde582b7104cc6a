# Shell functions of the deploy lock (deploy_lock.py) and of the venv build's markers.
# The owner text is key=value lines.
#   dl_field KEY TEXT    the value of KEY in TEXT
#   dl_started PID       the process's start time as ps shows it (empty: no such process)
#   dl_gone TEXT         0 when TEXT names a process of this host that has ended (its
#                        pid is gone, or now belongs to a process started at another
#                        time); 1 when it runs, or cannot be checked from here
#   dl_old PATH          0 when PATH was last changed more than a minute ago
dl_field() { printf '%s\n' "$2" | sed -n "s/^$1=//p" | head -n 1; }
dl_started() { ps -o lstart= -p "$1" 2>/dev/null | sed 's/^ *//; s/ *$//'; }
dl_gone() {
  _h=$(dl_field host "$1"); _p=$(dl_field pid "$1"); _s=$(dl_field started "$1")
  [ "$_h" = "$(uname -n)" ] || return 1
  case "$_p" in ''|*[!0-9]*) return 1;; esac
  _n=$(dl_started "$_p")
  [ -z "$_n" ] || [ "$_n" != "$_s" ]
}
dl_old() { [ -n "$(find "$1" -prune -mmin +1 2>/dev/null)" ]; }

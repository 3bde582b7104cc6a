# The SessionProcesses fact (facts/probe.py): what the deploy lock sees of this SSH
# session's processes (its anchor, as dl_anchor finds it) and of the job $target's.
# Always exits 0.
: "${target?}"
. ../pyinfra_devpi/deploy_lock_process.sh
. ../pyinfra_devpi/deploy_lock_owner.sh
a=$(dl_anchor 0)
printf 'anchor=%s\n' "$a"
if [ -n "$a" ]; then
  printf 'anchor_comm=%s\nanchor_started=%s\n' "$(ps -o comm= -p "$a" 2>/dev/null)" "$(dl_started "$a")"
fi
printf 'self_started=%s\n' "$(dl_started $$)"
# One tab: the job's own pid, not a nested block's.
p=$(launchctl print "$target" 2>/dev/null | grep "^$(printf '\t')pid = " | head -n 1 | sed 's/.*= *//')
printf 'job_pid=%s\n' "$p"
case "$p" in [0-9]*) printf 'job_started=%s\n' "$(dl_started "$p")";; esac
true

# prune_venvs VENVS NEW PREV LIVE BUILDING: remove the deploy's older venvs from VENVS.
# Kept: NEW, PREV (physical), the one the live link LIVE points at now, and every venv
# whose builder still runs (its .building marker names a live process of this host;
# BUILDING is this build's own marker). A marker whose builder is gone is removed first,
# so its venv goes too, unless it is one of those kept (a builder killed after its swap).
# Needs dl_gone (pyinfra_devpi/deploy_lock_process.sh).
: "${venv_prefix?}" "${building_suffix?}"

prune_venvs() {
  _keep_new=$(cd "$2" && pwd -P)
  _keep_live=$(cd "$4" 2>/dev/null && pwd -P || true)
  for _m in "$1"/"$venv_prefix"*"$building_suffix"; do
    if [ -f "$_m" ] && [ "$_m" != "$5" ] && dl_gone "$(cat "$_m")"; then rm -f "$_m"; fi
  done
  for _d in "$1"/"$venv_prefix"*; do
    if [ -d "$_d" ] && [ ! -e "$_d$building_suffix" ]; then
      _p=$(cd "$_d" && pwd -P) || continue
      case "$_p" in "$_keep_new"|"$3"|"$_keep_live") ;; *) rm -rf "$_d" ;; esac
    fi
  done
}

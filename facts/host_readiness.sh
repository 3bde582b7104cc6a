# The HostReadiness fact (facts/preflight.py): the SSH user, whether the launchd $domain
# answers, df -k of the nearest existing directory of $path, the owner of each path of
# $owned (one a line) that exists, and whether sudo -n works when the run may need root
# ($root, or a path of $root_if exists) and the user is not root. Always exits 0.
: "${domain?}" "${path?}" "${owned?}" "${root?}" "${root_if?}"
printf 'uid=%s\nuser=%s\n' "$(id -u)" "$(id -un)"
printf 'domain=%s\n' "$domain"
if command -v launchctl >/dev/null 2>&1; then
  launchctl print "$domain" >/dev/null 2>&1; echo "domain_status=$?"
else echo domain_status=none; fi
d=$path
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
printf 'df_path=%s\n' "$d"
echo "@df"; df -k "$d" 2>/dev/null; echo "@end"
while IFS= read -r p; do
  [ -n "$p" ] || continue
  # (ls -n for the numeric owner: BSD and GNU alike; the name is not parsed)
  # shellcheck disable=SC2012
  if [ -e "$p" ] || [ -L "$p" ]; then printf 'owner=%s %s\n' "$(ls -lnd "$p" | awk '{print $3}')" "$p"; fi
done <<LIST
$owned
LIST
ask=$root
while IFS= read -r p; do
  if [ -z "$ask" ] && [ -n "$p" ] && [ -e "$p" ]; then ask=1; fi
done <<LIST
$root_if
LIST
if [ "$(id -u)" != 0 ] && [ -n "$ask" ]; then
  if command -v sudo >/dev/null 2>&1; then
    out=$(sudo -n true 2>&1 </dev/null); echo "sudo_status=$?"
    printf 'sudo_error=%s\n' "$(printf '%s\n' "$out" | head -n 1)"
  else echo sudo_status=missing; fi
else echo sudo_status=none; fi
true

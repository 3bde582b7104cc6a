# The restore's swap (operations/restore.py swap_command): stop devpi, put the restored
# server dir in place of the live one (kept as $keep_prefix<stamp>), start devpi, the
# health gate. When devpi does not come up on the restored dir, the previous dir goes
# back (the restored one kept as $failed_prefix<stamp>), devpi is started on it and
# waited for, and the run fails naming what failed. $stop, $start and $gate are
# commands (run with sh -c: each exits on its own).
: "${new?}" "${live?}" "${keep_prefix?}" "${failed_prefix?}" "${python?}" "${swap_py?}"
: "${loaded?}" "${stop?}" "${start?}" "${gate?}"
# Once devpi is stopped this must finish (devpi up on the restored dir, or the previous
# dir back): a controller that goes away (its SSH session gone: a hangup, output to a
# closed pipe) does not stop it halfway.
trap '' HUP PIPE
# The dir swap (restore.SWAP: new, live, keep); its output is said after it has run, so
# a closed pipe cannot fail a swap that happened.
swap() {
  said=$("$python" -I -c "$swap_py" "$1" "$2" "$3" 2>&1); swapped=$?
  if [ "$swapped" -eq 0 ]; then printf '%s\n' "$said"; else printf '%s\n' "$said" >&2; fi
  return "$swapped"
}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
keep=$keep_prefix$stamp
failed=$failed_prefix$stamp
had_live=
if [ -e "$live" ] || [ -L "$live" ]; then had_live=1; fi
if [ -n "$loaded" ]; then sh -c "$stop" || exit $?; fi
if ! swap "$new" "$live" "$keep"; then
  printf 'the restored server dir could not be swapped in: %s is as it was; devpi is started on it again\n' "$live" >&2
  sh -c "$start" && sh -c "$gate"
  exit 1
fi
if sh -c "$start"; then
  if sh -c "$gate"; then exit 0; fi
  what='did not pass the health gate'
else
  what='could not be started (launchctl bootstrap failed)'
fi
if [ -z "$had_live" ]; then
  printf 'the restore failed: devpi on the restored server dir %s %s, and there was no server dir before it to put back\n' \
    "$live" "$what" >&2
  exit 1
fi
printf 'the restore failed: devpi on the restored server dir %s: putting the previous server dir back\n' "$what" >&2
if ! sh -c "$stop"; then
  printf 'devpi could not be stopped to put the previous server dir back: the restored dir is %s, the previous one %s. Boot the job out, move %s back to %s, run deploys/devpi.py\n' \
    "$live" "$keep" "$keep" "$live" >&2
  exit 1
fi
if ! swap "$keep" "$live" "$failed"; then
  printf 'the previous server dir %s could not be put back in place of %s: move it back by hand, then run deploys/devpi.py\n' \
    "$keep" "$live" >&2
  exit 1
fi
if sh -c "$start" && sh -c "$gate"; then
  printf 'rolled back: devpi answers again from the previous server dir %s. The restore failed: devpi on the restored server dir %s; that dir is kept as %s\n' \
    "$live" "$what" "$failed" >&2
else
  printf 'the rollback did not bring devpi back either: the previous server dir is back at %s, the restored one is kept as %s\n' \
    "$live" "$failed" >&2
fi
exit 1

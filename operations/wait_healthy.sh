# The health gate (operations/devpi.py wait_healthy_script): poll GET /+api until this
# server dir's devpi answers 200, then (with $smoke) the smoke check's real requests pass;
# on failure say what answered, show the logs' tails, and (after a new venv was swapped
# in) roll back to the previous venv.
: "${api?}" "${url?}" "${timeout?}" "${every?}" "${nodeinfo?}" "${err_log?}" "${server_log?}"
: "${job?}" "${rollback?}" "${version?}" "${previous?}" "${live?}" "${target?}" "${sudo?}"
: "${suffix?}" "${rename?}" "${smoke?}" "${smoke_python?}" "${smoke_result?}" "${smoke_indexes?}"
: "${smoke_new?}"

# After a venv swap, a run killed during the gate (its connection gone) still finishes it,
# and its rollback: the output is lost, the old venv serves.
if [ -n "$rollback" ]; then trap '' HUP PIPE; fi

# devpi sends its server dir's uuid (.nodeinfo) in X-DEVPI-UUID: a 200 from another
# devpi on the port is not health.
want=
if [ -n "$nodeinfo" ]; then
  want=$(sed -n 's/.*"uuid": *"\([^"]*\)".*/\1/p' "$nodeinfo" 2>/dev/null | head -n 1)
fi

healthy() {
  start=$(date +%s); end=$((start + timeout)); said=$start; code=000; got=; exited=; pid=; down=0
  while :; do
    hdr=$(curl -s -D - -o /dev/null --max-time 5 "$api" 2>/dev/null | tr -d '\r') || true
    code=$(printf '%s\n' "$hdr" | sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' | tail -n 1)
    got=$(printf '%s\n' "$hdr" | sed -n 's/^[Xx]-[Dd][Ee][Vv][Pp][Ii]-[Uu][Uu][Ii][Dd]: *//p' | tail -n 1)
    if [ "${code:-000}" = 200 ] && { [ -z "$want" ] || [ "$got" = "$want" ]; }; then return 0; fi
    # While the pid launchd reported is alive, no launchctl; three polls in a row of a
    # job loaded but not running: devpi exited before it answered.
    if [ -n "$job" ] && { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; }; then
      # launchctl print's own top-level "pid = N" and "state = ..." lines (one tab,
      # matched by the "."; nested sections are indented deeper).
      info=$(launchctl print "$job" 2>/dev/null \
        | sed -n 's/^.pid = \([0-9][0-9]*\)$/pid=\1/p; s/^.state = \(.*\)$/state=\1/p')
      now_pid=$(printf '%s\n' "$info" | sed -n 's/^pid=//p')
      state=$(printf '%s\n' "$info" | sed -n 's/^state=//p')
      if [ -n "$now_pid" ]; then pid=$now_pid; down=0
      elif [ -n "$state" ] && [ "$state" != running ]; then
        down=$((down + 1))
        if [ "$down" -ge 3 ]; then exited=1; return 1; fi
      fi
    fi
    now=$(date +%s)
    if [ "$now" -ge "$end" ]; then return 1; fi
    if [ $((now - said)) -ge "$every" ]; then
      said=$now
      printf 'waiting for devpi on %s: %ss of %ss (last status: %s)\n' "$api" "$((now - start))" "$timeout" "${code:-000}"
    fi
    sleep 0.1
  done
}

# /+api answering is not enough: a devpi that fails real requests fails the gate too.
smoked=
passes() {
  smoked=
  healthy || return 1
  if [ -z "$smoke" ]; then return 0; fi
  "$smoke_python" -I -c "$smoke" "$url" "$smoke_result" "$smoke_new" "$smoke_indexes" && return 0
  smoked=1; return 1
}

if passes; then exit 0; fi

if [ -n "$smoked" ]; then
  printf 'devpi answers %s but failed the smoke check (the requests above): it cannot serve\n' "$api" >&2
elif [ "${code:-000}" = 200 ]; then
  printf 'another devpi answers on %s: its server dir is %s, this one'"'"'s is %s. A job under an old label, or from a previous devpi_home, holds the port: unload that job and rerun\n' \
    "$url" "${got:-unknown}" "$want" >&2
fi
if [ -n "$smoked" ]; then :
elif [ -n "$exited" ]; then
  printf 'devpi exited before it answered on %s. launchd reports for %s:\n' "$api" "$job" >&2
  launchctl print "$job" 2>/dev/null | grep -E '^.(state|runs|last exit code|last terminating signal) = ' >&2
else
  printf 'devpi did not answer 200 on %s within %ss (last status: %s).\n' "$api" "$timeout" "${code:-000}" >&2
fi
printf 'Last lines of %s:\n' "$err_log" >&2
tail -n 40 "$err_log" >&2 2>/dev/null
if [ -n "$server_log" ]; then
  printf 'Last lines of %s:\n' "$server_log" >&2
  tail -n 20 "$server_log" >&2 2>/dev/null
fi

# The new venv's devpi did not come up: the link goes back to the previous venv (one
# rename, by its Python), the job restarts and the gate waits again; the run still fails.
if [ -n "$rollback" ]; then
  prev=$(head -n 1 "$previous" 2>/dev/null || true)
  if [ -n "$prev" ] && [ -x "$prev/bin/python" ]; then
    printf 'devpi-server %s failed the health gate: rolling back to the previous venv %s\n' "$version" "$prev" >&2
    rm -f "$live$suffix"
    ln -s "$prev" "$live$suffix"
    "$prev/bin/python" -I -c "$rename" "$live$suffix" "$live"
    if [ -n "$sudo" ]; then sudo -n launchctl kickstart -k "$target"; else launchctl kickstart -k "$target"; fi
    if passes; then
      printf 'rolled back: devpi answers again from %s; devpi-server %s is not in use\n' "$prev" "$version" >&2
    else
      printf 'the rollback did not bring devpi back either (last status: %s)\n' "${code:-000}" >&2
    fi
  fi
fi
exit 1

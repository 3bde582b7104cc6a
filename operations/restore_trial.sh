# The restore's trial (operations/restore.py trial_command): devpi-server on the restored
# dir on a spare loopback port, by pid: it must answer /+api with that dir's uuid; then it
# is stopped (SIGTERM, SIGKILL after $stop_timeout seconds).
: "${new?}" "${python?}" "${devpi_server?}" "${config_file?}" "${log?}" "${free_port_py?}"
: "${nodeinfo_name?}" "${timeout?}" "${stop_timeout?}"
port=$("$python" -I -c "$free_port_py")
want=$(sed -n 's/.*"uuid": *"\([^"]*\)".*/\1/p' "$new/$nodeinfo_name" | head -n 1)
"$devpi_server" --configfile "$config_file" --serverdir "$new" --host 127.0.0.1 --port "$port" </dev/null >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null' EXIT
end=$(($(date +%s) + timeout)); ok=
while kill -0 "$pid" 2>/dev/null; do
  got=$(curl -s -D - -o /dev/null --max-time 5 "http://127.0.0.1:$port/+api" 2>/dev/null | tr -d '\r' \
    | sed -n 's/^[Xx]-[Dd][Ee][Vv][Pp][Ii]-[Uu][Uu][Ii][Dd]: *//p' | tail -n 1)
  if [ -n "$want" ] && [ "$got" = "$want" ]; then ok=1; break; fi
  if [ "$(date +%s)" -ge "$end" ]; then break; fi
  sleep 0.3
done
kill "$pid" 2>/dev/null || true
i=0
while kill -0 "$pid" 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -ge $((stop_timeout * 10)) ]; then kill -9 "$pid" 2>/dev/null || true; fi
  sleep 0.1
done
trap - EXIT
if [ -z "$ok" ]; then
  printf 'the restored server dir %s did not answer on a spare port (uuid %s); the live server dir is untouched. Last lines of %s:\n' \
    "$new" "$want" "$log" >&2
  tail -n 40 "$log" >&2; exit 1
fi
printf 'the restored server dir answered on spare port %s (uuid %s)\n' "$port" "$want" >&2

# Shell functions of the upgrade across database versions (operations/server_dir.py),
# included by upgrade.sh. Each returns non-zero with a message on stderr.
#
# up URL UUID SECONDS   wait (bounded) until URL/+api answers 200 from the devpi whose
#                       server dir has UUID (X-DEVPI-UUID)
# down URL SECONDS      wait until nothing answers there
# uuid_of DIR           the uuid in DIR's .nodeinfo
# export_import FROM_VENV FROM_DIR TO_VENV TO_DIR EXPORT_DIR CONFIG LOG
#                       devpi-export of FROM_DIR with FROM_VENV into EXPORT_DIR (which must
#                       not exist), devpi-import with TO_VENV into TO_DIR, then check TO_DIR
#                       holds devpi's three files; both tools' output goes to LOG
# check_on_spare VENV DIR CONFIG EXPORT_DIR
#                       start that devpi on a free loopback port (offline, stopped by its
#                       pid), wait for /+api from DIR's uuid and compare its indexes with
#                       the export's
# Neither touches FROM_DIR.
: "${timeout?}" "${nodeinfo_name?}" "${serverversion_name?}" "${sqlite_name?}" "${check_log?}"
: "${spare_port_py?}" "${same_indexes_py?}"

up() {
  end=$(($(date +%s) + $3))
  while :; do
    hdr=$(curl -s -D - -o /dev/null --max-time 5 "$1/+api" 2>/dev/null | tr -d '\r') || true
    code=$(printf '%s\n' "$hdr" | sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' | tail -n 1)
    got=$(printf '%s\n' "$hdr" | sed -n 's/^[Xx]-[Dd][Ee][Vv][Pp][Ii]-[Uu][Uu][Ii][Dd]: *//p' | tail -n 1)
    if [ "${code:-000}" = 200 ] && [ "$got" = "$2" ]; then return 0; fi
    if [ "$(date +%s)" -ge "$end" ]; then return 1; fi
    sleep 0.3
  done
}
down() {
  end=$(($(date +%s) + $2))
  while curl -s -o /dev/null --max-time 2 "$1/+api" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$end" ]; then return 1; fi
    sleep 0.3
  done
}
uuid_of() { sed -n 's/.*"uuid": *"\([^"]*\)".*/\1/p' "$1/$nodeinfo_name" 2>/dev/null | head -n 1; }

export_import() {
  "$1/bin/devpi-export" --configfile "$6" --serverdir "$2" "$5" >"$7" 2>&1 || {
    printf 'devpi-export of %s failed; the end of its output (%s):\n' "$2" "$7" >&2
    tail -n 30 "$7" >&2; return 1
  }
  "$3/bin/devpi-import" --configfile "$6" --serverdir "$4" "$5" >>"$7" 2>&1 || {
    printf 'devpi-import into %s failed; the end of its output (%s):\n' "$4" "$7" >&2
    tail -n 30 "$7" >&2; return 1
  }
  for x in "$serverversion_name" "$nodeinfo_name" "$sqlite_name"; do
    if [ ! -s "$4/$x" ]; then printf 'devpi-import left no %s in %s\n' "$x" "$4" >&2; return 1; fi
  done
}

check_on_spare() {
  port=$("$1/bin/python" -I -c "$spare_port_py") || return 1
  "$1/bin/devpi-server" --configfile "$3" --serverdir "$2" --host 127.0.0.1 --port "$port" \
    --offline-mode >"$4/$check_log" 2>&1 &
  spare=$!
  ok=
  if up "http://127.0.0.1:$port" "$(uuid_of "$2")" "$timeout" \
    && "$1/bin/python" -I -c "$same_indexes_py" "$4"/dataindex.json "http://127.0.0.1:$port/" >&2; then
    ok=1
  fi
  kill "$spare" 2>/dev/null; wait "$spare" 2>/dev/null; spare=
  if [ -z "$ok" ]; then
    printf 'the new server dir %s did not answer as expected on port %s; its log:\n' "$2" "$port" >&2
    tail -n 30 "$4/$check_log" >&2; return 1
  fi
}

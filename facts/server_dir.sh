# The ServerDir fact (facts/devpi.py): key=value lines and a @nodeinfo block (base64) about the
# server dir $d; with $s (the secret file), its mode and, for a server dir the deploy has
# not managed yet (no secret file), who owns its entries and which are group/world-writable.
# Always exits 0.
: "${d?}" "${s?}" "${serverversion_name?}" "${nodeinfo_name?}" "${sqlite_name?}" "${whoosh_index_name?}"
if [ ! -e "$d" ]; then echo "exists=false"
else
  echo "exists=true"
  if [ -d "$d" ]; then echo "is_dir=true"; else echo "is_dir=false"; fi
  # (ls for the mode string and the count of entries: no name is parsed)
  # shellcheck disable=SC2012
  echo "mode=$(ls -ld "$d" 2>/dev/null | cut -c1-10)"
  # shellcheck disable=SC2012
  if [ -d "$d" ]; then echo "entries=$(ls -A "$d" | wc -l | tr -d " ")"; fi
  v=$d/$serverversion_name; n=$d/$nodeinfo_name; db=$d/$sqlite_name
  # Its first line, bytes that are not printable ASCII as "?" (a damaged file must not
  # stop the fact batch: pyinfra reads output as UTF-8).
  if [ -f "$v" ]; then
    echo "has_serverversion=true"
    echo "serverversion=$(head -n 1 "$v" | tr -d '\r\n' | LC_ALL=C tr -c '[:print:]' '?')"
  fi
  if [ -f "$db" ] && [ -s "$db" ]; then echo "has_database=true"; fi
  i=$d/$whoosh_index_name
  if [ -d "$i" ]; then echo "whoosh_index_kib=$(du -sk "$i" 2>/dev/null | awk '{print $1}')"; fi
  for t in "$i"/_project_*.toc; do if [ -f "$t" ]; then echo "whoosh_project_index=true"; break; fi; done
  if [ -f "$n" ]; then echo "@nodeinfo"; base64 < "$n"; echo "@end"; fi
fi
if [ -n "$s" ]; then
  # shellcheck disable=SC2012
  if [ -f "$s" ]; then echo "secret_mode=$(ls -ld "$s" 2>/dev/null | cut -c1-10)"; else echo "secret_mode="; fi
  # Only then: a rerun walks nothing.
  if [ ! -f "$s" ] && [ -d "$d" ]; then
    u=$(id -u)
    f=$(find "$d" ! -user "$u" -print 2>/dev/null)
    w=$(find "$d" ! -type l \( -perm -020 -o -perm -002 \) -print 2>/dev/null)
    echo "foreign_count=$(printf "%s" "$f" | grep -c .)"; echo "foreign_first=$(printf "%s\n" "$f" | head -n 1)"
    echo "writable_count=$(printf "%s" "$w" | grep -c .)"; echo "writable_first=$(printf "%s\n" "$w" | head -n 1)"
  fi
fi
true

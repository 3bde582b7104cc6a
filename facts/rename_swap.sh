# The RenameSwap fact (facts/probe.py): in a temporary dir made in $home (or its nearest
# existing parent), run the restore's swap snippet $swap on two dirs with the first of
# $pythons (one a line) that runs, then renamex_np itself ($renamex_code); the temporary
# dir is removed whatever happens. Always exits 0.
: "${home?}" "${swap?}" "${pythons?}" "${version_code?}" "${renamex_code?}" "${temp_prefix?}"
. ./find_tool.sh
d=$home
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
printf 'parent=%s\n' "$d"
py=; v=
while IFS= read -r c; do
  [ -n "$c" ] || continue
  b=$(find_tool "$c") || continue; [ -n "$b" ] || continue
  v=$(py_version "$b" "$version_code")
  case "$v" in [0-9]*) py=$b; break ;; esac
done <<LIST
$pythons
LIST
printf 'python=%s\npython_version=%s\n' "$py" "$v"
if [ -z "$py" ]; then echo "skipped=no python3 that runs"; exit 0; fi
t=$(mktemp -d "$d/${temp_prefix}XXXXXX" 2>/dev/null) || { echo "skipped=cannot make a temporary dir in $d"; exit 0; }
trap 'rm -rf "$t"' EXIT
mkdir "$t/new" "$t/live" "$t/a" "$t/b"
printf new > "$t/new/which"; printf live > "$t/live/which"
out=$("$py" -I -c "$swap" "$t/new" "$t/live" "$t/keep" 2>&1 </dev/null); rc=$?
printf 'swap_exit=%s\n@swap\n%s\n@end\n' "$rc" "$out"
printf 'live_holds=%s\nkeep_holds=%s\n' "$(cat "$t/live/which" 2>/dev/null)" "$(cat "$t/keep/which" 2>/dev/null)"
printf 'renamex_np=%s\n' "$("$py" -I -c "$renamex_code" "$t/a" "$t/b" 2>&1 </dev/null | tail -n 1)"
true

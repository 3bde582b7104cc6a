# The HostTools fact (facts/host_tools.py): the first executable of each candidate list
# (one a line: a bare name on the session's PATH, ~/x under $HOME, or an absolute path),
# the version of the deploy's own uv, of the interpreter asked about, and a python3 that
# can bootstrap uv when it is needed. Always exits 0.
: "${uv_candidates?}" "${caddy_candidates?}" "${python?}" "${bootstrap_python?}"
: "${bootstrapped?}" "${pinned?}" "${version_code?}" "${version_with_venv_code?}"
. ./find_tool.sh
first_tool() {
  while IFS= read -r c; do
    [ -n "$c" ] || continue
    f=$(find_tool "$c")
    if [ -n "$f" ]; then printf '%s\n' "$f"; return 0; fi
  done <<LIST
$1
LIST
}
uv=$(first_tool "$uv_candidates")
caddy=$(first_tool "$caddy_candidates")
printf 'uv=%s\ncaddy=%s\n' "$uv" "$caddy"
# The deploy's own uv: its version decides whether it is bootstrapped again.
own=
if [ -n "$bootstrapped" ] && [ -n "$uv" ] && [ "$uv" = "$bootstrapped" ]; then
  uv_version=$("$uv" --version 2>/dev/null </dev/null | head -n 1)
  printf 'uv_version=%s\n' "$uv_version"
  own=1
  if [ -n "$pinned" ]; then
    case "$uv_version" in "uv $pinned"|"uv $pinned "*) own= ;; esac
  fi
fi
if [ -n "$python" ]; then
  py=$(find_tool "$python")
  printf 'python=%s\n' "$py"
  if [ -n "$py" ]; then
    v=$(py_version "$py" "$version_code")
    if [ "$v" = shim ]; then echo "python_shim=true"; else printf 'python_version=%s\n' "$v"; fi
  fi
fi
if [ -z "$uv" ] || [ -n "$own" ]; then
  while IFS= read -r c; do
    [ -n "$c" ] || continue
    b=$(find_tool "$c") || continue; [ -n "$b" ] || continue
    v=$(py_version "$b" "$version_with_venv_code")
    case "$v" in [0-9]*) printf 'bootstrap_python=%s\nbootstrap_python_version=%s\n' "$b" "$v"; break ;; esac
  done <<LIST
$bootstrap_python
LIST
fi
true

# Shell functions of the facts that look for programs (facts/host_tools.py, probe.py):
#   find_tool CANDIDATE...  the first candidate that is an executable file (a bare name
#                           through command -v, which also answers builtins and aliases:
#                           only an absolute answer counts; ~/x is under $HOME)
#   py_version PY CODE      what interpreter PY prints running CODE, or "shim" for macOS's
#                           placeholder python3 (no Command Line Tools: it would open an
#                           install dialog on the console and fail)
: "${macos_python_shim?}"
find_tool() {
  for c in "$@"; do
    case "$c" in \~/*) c=$HOME/${c#??} ;; esac
    case "$c" in
      */*) if [ -f "$c" ] && [ -x "$c" ]; then printf '%s\n' "$c"; return 0; fi ;;
      *) p=$(command -v "$c" 2>/dev/null) || continue
         case "$p" in /*) if [ -f "$p" ] && [ -x "$p" ]; then printf '%s\n' "$p"; return 0; fi ;; esac ;;
    esac
  done
}
py_version() {
  if [ "$1" = "$macos_python_shim" ] && [ "$(uname -s)" = Darwin ] && ! xcode-select -p >/dev/null 2>&1; then
    echo shim; return 0
  fi
  "$1" -I -c "$2" 2>/dev/null </dev/null | head -n 1
}

# Bootstrap uv (operations/preflight.py bootstrap_script): pip-install the pinned uv
# (--require-hashes, wheels only) into a scratch venv made by $py, prove it runs, and
# keep only its binary at $target: a rename over the uv an earlier release bootstrapped,
# so a run killed midway leaves that one working. Then the other releases' requirement
# files go.
: "${home?}" "${new?}" "${py?}" "${version?}" "${index_url?}" "${lock?}" "${target?}" "${staged?}"
: "${tools_dir?}" "${lock_prefix?}" "${lock_suffix?}"
set -e
(umask 077; mkdir -p "$home")
rm -rf "$new"
cleanup() { rm -rf "$new"; exit "$1"; }
trap 'cleanup $?' EXIT
cd "$home"
printf 'uv: bootstrapping uv %s from PyPI (hash-checked wheel) with %s\n' "$version" "$py"
"$py" -m venv "$new" || {
  printf '%s could not make a venv (python3 -m venv) to bootstrap uv into\n' "$py" >&2; exit 1
}
set -- --quiet --disable-pip-version-check --no-deps --only-binary=:all: --require-hashes
if [ -n "$index_url" ]; then set -- "$@" --index-url "$index_url"; fi
"$new/bin/python" -m pip install "$@" -r "$lock"
v=$("$new/bin/uv" --version 2>/dev/null || true)
case "$v" in "uv $version"|"uv $version "*) ;; *)
  printf 'the bootstrapped uv reports %s, expected uv %s\n' "$v" "$version" >&2; exit 1;;
esac
mkdir -p "${target%/*}"
cp "$new/bin/uv" "$staged"
chmod 755 "$staged"
mv -f "$staged" "$target"
for f in "$tools_dir"/"$lock_prefix"*"$lock_suffix"; do [ "$f" = "$lock" ] || rm -f "$f"; done

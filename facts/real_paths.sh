# The RealPaths fact (facts/files.py): where each path of $paths (one a line), and the
# SSH session's $HOME, land once the host resolves them: every symlink followed (at the
# path itself and at any directory on the way), the missing rest kept as written; and
# whether the file system there finds a name in another case (APFS's default does).
# Changes nothing; always exits 0.
: "${paths?}"
# $1: a path; prints its real path (the nearest existing directory resolved by cd -P,
# the part that does not exist yet appended). A loop of links stops after 40 hops.
real_of() {
  p=$1 rest='' hops=0
  while :; do
    while [ -L "$p" ] && [ "$hops" -lt 40 ]; do
      t=$(readlink "$p") || break
      hops=$((hops + 1))
      case $t in
        /*) p=$t ;;
        *) p=$(dirname "$p")/$t ;;
      esac
    done
    if [ -d "$p" ] && d=$(cd -P "$p" 2>/dev/null && pwd -P); then
      d=${d%/}$rest
      printf '%s\n' "${d:-/}"
      return
    fi
    if [ "$p" = / ] || [ -z "$p" ] || [ "$p" = . ]; then
      printf '%s\n' "${rest:-/}"
      return
    fi
    rest="/${p##*/}$rest"
    p=$(dirname "$p")
  done
}
# $1: an existing directory; prints 1 when its name in swapped case is found and is the
# same directory (a case-insensitive file system), else 0. The first name up the tree
# that has letters is tried.
folds() {
  d=$1
  while [ "$d" != / ] && [ -n "$d" ]; do
    b=${d##*/}
    v=$(printf '%s' "$b" | tr 'a-zA-Z' 'A-Za-z')
    if [ "$v" != "$b" ]; then
      up=$(dirname "$d")
      # (ls -i for the inode: BSD and GNU alike)
      # shellcheck disable=SC2012
      if [ -e "${up%/}/$v" ] && [ "$(ls -id "$d" | awk '{print $1}')" = "$(ls -id "${up%/}/$v" | awk '{print $1}')" ]; then
        echo 1
      else
        echo 0
      fi
      return
    fi
    d=$(dirname "$d")
  done
  echo 0
}
# The nearest existing directory of a real path (where its file system is).
existing_dir() {
  e=$1
  while [ ! -d "$e" ] && [ "$e" != / ]; do e=$(dirname "$e"); done
  printf '%s\n' "$e"
}
report() {
  r=$(real_of "$2")
  printf '@%s %s %s\n' "$1" "$(folds "$(existing_dir "$r")")" "$2"
  printf '%s\n' "$r"
}
report home "$HOME"
while IFS= read -r path; do
  [ -n "$path" ] || continue
  report path "$path"
done <<LIST
$paths
LIST
true

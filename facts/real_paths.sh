# The RealPaths fact (facts/files.py): where each path of $paths (one a line), and the
# SSH session's $HOME, land once the host resolves them: every symlink followed (at the
# path itself and at any directory on the way), the missing rest kept as written; and
# whether the file system there finds a name in another case (APFS's default does).
# Changes nothing; always exits 0.
: "${paths?}"
# $1: a path; sets $real to its real path (the nearest existing directory resolved by
# cd -P, the part that does not exist yet appended). A loop of links stops after 40
# hops. No subshell but readlink's: cd -P sets $PWD to the physical path (this script
# runs in a subshell of its own, so its working directory is its own).
real_of() {
  p=$1 rest='' hops=0
  while :; do
    while [ -L "$p" ] && [ "$hops" -lt 40 ]; do
      t=$(readlink "$p") || break
      hops=$((hops + 1))
      case $t in
        /*) p=$t ;;
        *) p=${p%/*}/$t ;;
      esac
    done
    if [ -d "$p" ] && cd -P "$p" 2>/dev/null; then
      real=${PWD%/}$rest
      real=${real:-/}
      existing=$PWD
      return
    fi
    case $p in
      / | '') real=${rest:-/} existing=/; return ;;
    esac
    rest="/${p##*/}$rest"
    p=${p%/*}
    [ -n "$p" ] || p=/
  done
}
# $1: an existing directory; sets $folds to 1 when its name in swapped case is found
# and is the same directory (a case-insensitive file system), else 0. The first name up
# the tree that has letters is tried; the last answer is reused for the same directory.
last_dir='' last_folds=0
folds_of() {
  if [ "$1" = "$last_dir" ]; then folds=$last_folds; return; fi
  d=$1 folds=0
  while [ "$d" != / ] && [ -n "$d" ]; do
    b=${d##*/}
    v=$(printf '%s' "$b" | tr 'a-zA-Z' 'A-Za-z')
    if [ "$v" != "$b" ]; then
      up=${d%/*}
      if [ -e "$up/$v" ]; then
        # (ls -i for the inode: BSD and GNU alike)
        # shellcheck disable=SC2012
        folds=$(ls -id "$d" "$up/$v" 2>/dev/null | awk 'NR == 1 { i = $1 } NR == 2 { print (i == $1) ? 1 : 0 }')
      fi
      break
    fi
    d=${d%/*}
  done
  last_dir=$1 last_folds=${folds:-0}
  folds=$last_folds
}
report() {
  real_of "$2"
  folds_of "$existing"
  printf '@%s %s %s\n%s\n' "$1" "$folds" "$2" "$real"
}
report home "$HOME"
while IFS= read -r path; do
  [ -n "$path" ] || continue
  report path "$path"
done <<LIST
$paths
LIST
true

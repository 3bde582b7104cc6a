# The ManagedAgents fact (facts/managed_agents.py): every plist in $dir that carries the
# deploy's marker, base64-encoded between "@file <path>" and "@end"; for each, the config
# file its job runs with (the string after "--configfile", one element a line as the
# deploy writes plists) when that carries the marker too, between "@config <path>" and
# "@end". Contents travel base64-encoded: a damaged file is the fact's to judge. Exits 0.
: "${dir?}" "${marker?}" "${suffix?}"
for f in "$dir"/*"$suffix"; do
  if [ ! -f "$f" ] || ! grep -q -F "$marker" "$f" 2>/dev/null; then continue; fi
  echo "@file $f"; base64 < "$f"; echo "@end"
  c=$(awk 'take { sub(/^[ \t]*<string>/, ""); sub(/<\/string>[ \t]*$/, ""); print; exit }
    /<string>--configfile<\/string>/ { take = 1 }' "$f" 2>/dev/null |
    sed -e 's/&lt;/</g' -e 's/&gt;/>/g' -e 's/&#34;/"/g' -e "s/&#39;/'/g" -e 's/&quot;/"/g' \
      -e "s/&apos;/'/g" -e 's/&amp;/\&/g')
  if [ -n "$c" ] && [ -f "$c" ] && grep -q -F "$marker" "$c" 2>/dev/null; then
    echo "@config $c"; base64 < "$c"; echo "@end"
  fi
done
true

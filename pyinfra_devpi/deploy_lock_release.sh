# Release the deploy lock if run $token holds it; always exits 0 (deploy_lock.release_script).
# say_not_ours is defined before this script, from deploy_lock.py's template.
: "${lock?}" "${owner_file?}" "${token?}"
. ./deploy_lock_process.sh
. ./deploy_lock_owner.sh
owner=$(dl_owner)
if [ "$(dl_field run "$owner")" = "$token" ]; then rm -rf "$lock"
elif [ -n "$owner" ]; then say_not_ours; fi
true

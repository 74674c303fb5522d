#!/bin/sh
# Claim KEY_PATH in POSIX sh and finalize it, or say who has it.
#   claim.sh KEY_PATH NAME
set -eC
if ! { command exec 3> "$1"; } 2>/dev/null; then
	echo "lost: $(head -1 "$1" 2>/dev/null || echo gone)"
	exit 0
fi
sleep 0.1	# the work
printf 'succeeded\n%s\n' "$2" >&3
exec 3>&-	# the commit
echo won

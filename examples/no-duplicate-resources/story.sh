#!/usr/bin/env bash
# No duplicate resources (the swamp request): a partially failed
# infrastructure run, re-run without creating anything twice.
#
#   story.sh MOUNTPOINT [sh|py]
#
# Starts the fake cloud API (fakecloud.py) with an outage on the first VPC
# POST; runs the creation (create.sh with `once`, or create.py with the
# oncefs module) once (it fails at the VPC), once more after the "fix",
# then three times concurrently, and finally three concurrent first runs
# of a second stack; prints what each run printed and the API's counts:
# exactly 5 resources a stack, whatever the re-runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mnt=$1 how=${2:-sh}
if [ "$how" = sh ] && ! command -v once >/dev/null; then
	echo "story.sh: once is not on PATH (export PATH=\$PWD/build:\$PATH in the" \
	     "source tree, or meson install)" >&2
	exit 2
fi
tmp=$(mktemp -d)
api_pid=
cleanup() { [ -z "$api_pid" ] || kill "$api_pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

python3 "$here/fakecloud.py" "$tmp/port" --fail-first vpcs &
api_pid=$!
for _ in $(seq 100); do [ -e "$tmp/port" ] && break; sleep 0.05; done
api=http://127.0.0.1:$(cat "$tmp/port")
wf=$mnt/infra-$how
mkdir -p "$wf"
if [ "$how" = sh ]; then create=(bash "$here/create.sh"); else create=(python3 "$here/create.py"); fi

echo "first run (the VPC POST fails):"
"${create[@]}" "$wf" "$api" 2>/dev/null && echo "  unexpected success" || echo "  failed, status $?"
echo "re-run after the fix:"
echo "  $("${create[@]}" "$wf" "$api")"
echo "three concurrent re-runs:"
pids=()
for i in 1 2 3; do "${create[@]}" "$wf" "$api" > "$tmp/out$i" & pids+=($!); done
wait "${pids[@]}"
for i in 1 2 3; do echo "  $(cat "$tmp/out$i")"; done
echo "a second stack, three concurrent first runs:"
mkdir -p "$wf-2"
pids=()
for i in 1 2 3; do "${create[@]}" "$wf-2" "$api" > "$tmp/out$i" & pids+=($!); done
wait "${pids[@]}"
for i in 1 2 3; do echo "  $(cat "$tmp/out$i")"; done
stats=$(curl -fsS "$api/stats")
echo "API: $stats"
python3 -c 'import json, sys; s = json.loads(sys.argv[1]); print("resources created: %d, POSTs received: %d" % (s["created"], s["posts"]))' "$stats"

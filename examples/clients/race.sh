#!/usr/bin/env bash
# Race copies of each client for one key each: exactly one wins.
#   race.sh WORKFLOW_DIR [COPIES]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
wf=$1 n=${2:-8}
mkdir -p "$wf"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
clients=(sh node)
if command -v go >/dev/null; then
	GOCACHE=$tmp/gocache GOPATH=$tmp/go go build -o "$tmp/claim-go" "$here/claim.go"
	clients+=(go)
fi
for c in "${clients[@]}"; do
	case $c in
	sh) cmd=(sh "$here/claim.sh") ;;
	node) cmd=(node "$here/claim.js") ;;
	go) cmd=("$tmp/claim-go") ;;
	esac
	pids=()
	for i in $(seq "$n"); do "${cmd[@]}" "$wf/keys/race-$c" "$c-$i" > "$tmp/$c.$i" & pids+=($!); done
	wait "${pids[@]}"
	won=$(cat "$tmp/$c".* | grep -c '^won$' || true)
	lost=$(cat "$tmp/$c".* | grep -c '^lost' || true)
	echo "$c: $n copies, won: $won, lost: $lost, key: $(head -1 "$wf/keys/race-$c") by $(tail -1 "$wf/keys/race-$c")"
done

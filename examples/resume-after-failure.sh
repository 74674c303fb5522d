#!/usr/bin/env bash
# A three-step job, run the way job systems run things: it fails, it is
# retried, its input changes.  With oncefs:
#   1. the first run fails in step two;
#   2. the retry, with the same input, skips step one and resumes at two;
#   3. a run with a different input starts over (on_input_change=reset);
#   4. under on_input_change=raise, a changed input is refused instead.
#
#   examples/resume-after-failure.sh [PATH/TO/oncefs]
#
# It mounts a throwaway store in a temporary directory and unmounts it at
# the end, whatever happens.
set -euo pipefail

oncefs=${1:-$(dirname "$0")/../build/oncefs}
tmp=$(mktemp -d)
mnt=$tmp/mnt
mkdir "$mnt"
cleanup() {
	cd /
	fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
"$oncefs" -o create "$tmp/state.db" "$mnt"
mkdir "$mnt/etl"
wf=$mnt/etl

# The job.  Step two fails while $FAIL_TRANSFORM is set.
extract()   { echo "extracting $1" >&2; tr a-z A-Z < "$1"; }
transform() { echo "transforming" >&2; [ -z "${FAIL_TRANSFORM:-}" ] || return 1; rev; }
load()      { echo "loading" >&2; wc -c; }

run_job() {	# $1: the input file, $2: the run's idempotency key
	local input=$1 key=$2
	(
		set -C	# '>' opens with O_EXCL: the claim
		cd "$wf"
		if ! { command exec 3> "keys/$key"; } 2>/dev/null; then
			echo "run $key: already claimed: $(head -1 "keys/$key")"
			exit 0
		fi
		set +C
		# The run's input, held on fd 4 until the run ends: another
		# run with another input waits (EBUSY) instead of mixing its
		# checkpoints with ours.
		exec 4> input.fingerprint
		if ! sha256sum "$input" | cut -c1-64 >&4 2>/dev/null; then
			echo "run $key: input changed, and the policy is raise: refused"
			echo failed >&3
			exit 2
		fi
		for step in extract transform load; do
			if [ -e "steps/$step" ]; then
				echo "run $key: $step: done before, skipped"
				continue
			fi
			case $step in
			extract) src=$input ;;
			transform) src=steps/extract ;;
			load) src=steps/transform ;;
			esac
			if $step "$src" < "$src" > "steps/$step.part"; then
				mv "steps/$step.part" "steps/$step"
				echo "run $key: $step: ran"
			else
				rm -f "steps/$step.part"
				echo "run $key: $step: FAILED"
				echo failed >&3	# dedup_on=success: the key is free again
				exit 1
			fi
		done
		printf 'succeeded\n%s\n' "$(cat steps/load)" >&3
		echo "run $key: succeeded"
	) || true
}

echo "hello world" > "$tmp/input-v1"
echo "goodbye world" > "$tmp/input-v2"

echo "== 1. first run, step two fails"
FAIL_TRANSFORM=1 run_job "$tmp/input-v1" 2026-11-21
echo "== 2. the retry, same input: resumes at step two"
run_job "$tmp/input-v1" 2026-11-21
echo "== 2b. a duplicate delivery of the same run: nothing runs"
run_job "$tmp/input-v1" 2026-11-21
echo "== 3. next run, different input, policy reset: starts over"
run_job "$tmp/input-v2" 2026-11-22
echo "== 4. policy raise, input changes again: refused"
echo raise > "$wf/policy/on_input_change"
run_job "$tmp/input-v1" 2026-11-23
echo "== the audit log"
cut -c1-150 "$wf/events"

#!/usr/bin/env python3
"""An input changed: a three-step pipeline, a crash, a resume, a new input.

    examples/input-changed.py WORKFLOW_DIR

(on a mounted oncefs; tests/integration/test_examples.py runs it on a
throwaway mount).  The story of the dotflow request, told with the oncefs
module:

  1. the first run crashes in step 2;
  2. the retry, same input, skips step 1 and finishes;
  3. a new input under on_input_change=reset starts over;
  4. a new input under reuse keeps the checkpoints;
  5. a new input under raise is refused until the old ones are removed.

It prints what ran and what was skipped, and the totals at the end.
"""
import errno
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "python"))
import oncefs  # noqa: E402

ran, skipped = [], []


def pipeline(wf, data, crash_in=None):
    """One run: claim the run's key, hold its input, the three steps."""
    run_key = "run-" + oncefs.fingerprint(data)[:16]
    try:
        claim = wf.claim(run_key)
    except oncefs.AlreadyDone as done:
        print("  run %s: done before: %s" % (run_key, done.result.decode()))
        return done.result.decode()
    with claim as c:
        wf.set_input(data)              # held until this run ends

        def step(name, fn):
            s = wf.step(name)
            if s.exists():
                skipped.append(name)
                print("  %s: skipped (checkpoint exists)" % name)
                return s.read()
            if name == crash_in:
                raise RuntimeError("crash in %s" % name)
            ran.append(name)
            print("  %s: ran" % name)
            with s as f:
                f.write(fn())
            return s.read()

        rows = step("extract", lambda: " ".join(data["rows"]))
        clean = step("transform", lambda: rows.upper())
        c.result = step("load", lambda: "loaded %d bytes: %s" % (len(clean), clean))
        wf.release_input()
    return c.result


def policy(wf, value):
    with open(os.path.join(wf.path, "policy", "on_input_change"), "w") as f:
        f.write(value + "\n")


def main():
    wf = oncefs.Workflow(sys.argv[1], create=True)
    v1 = {"rows": ["a", "b", "c"]}
    print("1. first run, crash in step 2")
    try:
        pipeline(wf, v1, crash_in="transform")
    except RuntimeError as e:
        print("  failed: %s" % e)
    wf.release_input()
    print("2. retry, same input: resumes")
    print("  result:", pipeline(wf, v1))
    print("3. new input, reset: starts over")
    print("  result:", pipeline(wf, {"rows": ["x", "y"]}))
    print("4. new input, reuse: keeps the checkpoints")
    policy(wf, "reuse")
    print("  result:", pipeline(wf, {"rows": ["p"]}))
    print("5. new input, raise: refused while checkpoints exist")
    policy(wf, "raise")
    try:
        pipeline(wf, {"rows": ["q"]})
    except OSError as e:
        assert e.errno == errno.EBUSY
        print("  refused: %s" % os.strerror(e.errno))
    for name in os.listdir(os.path.join(wf.path, "steps")):
        os.unlink(os.path.join(wf.path, "steps", name))
    print("  after rm steps/*:", pipeline(wf, {"rows": ["q"]}))
    print("steps run: %d, skipped: %d" % (len(ran), len(skipped)))


if __name__ == "__main__":
    main()

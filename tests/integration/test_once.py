"""The `once` runner over a real mount."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import MountedTest, read, run  # noqa: E402

ONCE = os.environ.get("ONCE", os.path.join(os.path.dirname(os.environ.get("ONCEFS", "build/oncefs")), "once"))


def once(*args, **kw):
    return subprocess.run([ONCE, *args], capture_output=True, text=True, **kw)


class Once(MountedTest):
    def test_runs_once_and_replays_result(self):
        r = once(self.wf, "k", "--", "sh", "-c", "echo ran; echo more")
        self.assertEqual((r.returncode, r.stdout), (0, "ran\nmore\n"))
        r = once(self.wf, "k", "--", "sh", "-c", "echo SHOULD NOT RUN")
        self.assertEqual((r.returncode, r.stdout), (0, "ran\nmore\n"))
        self.assertTrue(read(self.key("k")).startswith(b"succeeded "))

    def test_failure_passes_status_and_frees_key(self):
        r = once(self.wf, "k", "--", "sh", "-c", "echo partial; exit 7")
        self.assertEqual(r.returncode, 7)
        self.assertFalse(os.path.exists(self.key("k")))
        self.assertIn('"failed"', read(os.path.join(self.wf, "events")).decode())
        r = once(self.wf, "k", "--", "echo", "second try")
        self.assertEqual((r.returncode, r.stdout), (0, "second try\n"))
        self.assertEqual(os.getxattr(self.key("k"), "user.oncefs.attempt"), b"2")

    def test_failed_terminal_under_dedup_any(self):
        with open(os.path.join(self.wf, "policy", "dedup_on"), "w") as f:
            f.write("any\n")
        self.assertEqual(once(self.wf, "k", "--", "false").returncode, 1)
        r = once(self.wf, "k", "--", "echo", "never")
        self.assertEqual(r.returncode, 76)
        self.assertEqual(r.stdout, "")

    def test_racing_duplicates_run_once(self):
        marker = os.path.join(self.m.tmp, "runs")
        procs = [subprocess.Popen([ONCE, self.wf, "k", "--", "sh", "-c",
                                   "echo x >> %s; sleep 0.5; echo done" % marker],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        codes = sorted(p.wait() for p in procs)
        for p in procs:
            p.stdout.close()
            p.stderr.close()
        with open(marker) as f:
            self.assertEqual(f.read(), "x\n")
        self.assertEqual(codes.count(0), 1)
        self.assertEqual(codes.count(75), 7)
        # --wait: a late duplicate waits for the result instead.
        r = once("--wait", self.wf, "k", "--", "echo", "never")
        self.assertEqual((r.returncode, r.stdout), (0, "done\n"))

    def test_wait_for_in_flight(self):
        p = subprocess.Popen([ONCE, self.wf, "k", "--", "sh", "-c", "sleep 1; echo first"],
                             stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        self.assertEqual(once(self.wf, "k", "--", "true").returncode, 75)
        r = once("--wait", "--timeout", "20", self.wf, "k", "--", "echo", "second")
        self.assertEqual((r.returncode, r.stdout), (0, "first\n"))
        p.wait()
        p.stdout.close()

    def test_killed_runner_leaves_key_in_flight(self):
        with open(os.path.join(self.wf, "policy", "in_flight_ttl"), "w") as f:
            f.write("1\n")
        p = subprocess.Popen([ONCE, self.wf, "k", "--", "sleep", "29.7"])
        time.sleep(0.5)
        self.assertTrue(read(self.key("k")).startswith(b"in_flight"))
        p.send_signal(signal.SIGKILL)
        p.wait()
        subprocess.run(["pkill", "-f", "sleep 29.7"])
        time.sleep(1.5)  # the lease runs out: no handle renews it
        r = once(self.wf, "k", "--", "echo", "adopted")
        self.assertEqual((r.returncode, r.stdout), (0, "adopted\n"))
        self.assertEqual(os.getxattr(self.key("k"), "user.oncefs.attempt"), b"2")

    def test_terminated_runner_forwards_and_fails(self):
        p = subprocess.Popen([ONCE, self.wf, "k", "--", "sleep", "29.7"])
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(), 128 + signal.SIGTERM)
        self.assertFalse(os.path.exists(self.key("k")))  # failed: free again

    def test_step(self):
        r = once("--step", "s", self.wf, "--", "echo", "out")
        self.assertEqual((r.returncode, r.stdout), (0, "out\n"))
        r = once("--step", "s", self.wf, "--", "echo", "never")
        self.assertEqual((r.returncode, r.stdout), (0, "out\n"))
        r = once("--step", "t", self.wf, "--", "sh", "-c", "echo half; exit 2")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(sorted(os.listdir(os.path.join(self.wf, "steps"))), ["s"])

    def test_usage(self):
        self.assertEqual(once().returncode, 64)
        self.assertEqual(once(self.wf, "k", "echo").returncode, 64)
        self.assertEqual(once("--help").returncode, 0)


if __name__ == "__main__":
    run()

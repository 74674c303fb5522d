"""The `once` runner over a real mount."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import MountedTest, claim, errno_of, read, run, write  # noqa: E402

ONCE = os.environ.get("ONCE", os.path.join(os.path.dirname(os.environ.get("ONCEFS", "build/oncefs")), "once"))
ONCECTL = os.environ.get("ONCECTL", os.path.join(os.path.dirname(ONCE), "oncectl"))
MAN_PAGE = os.path.join(os.path.dirname(__file__), "..", "..", "doc", "once.1")


def once(*args, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run([ONCE, *args], capture_output=True, text=True, **kw)


def snapshot(top):
    """Every name under top, with its content or link target."""
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            if os.path.islink(p):
                out[p] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[p] = ("dir",)
            else:
                out[p] = ("file", read(p))
    return out


def start_time(pid):
    """A process's start time (field 22 of /proc/PID/stat), or None when it
    is gone or a zombie: a reused pid shows as another start time."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


def wait_for(cond, what, deadline=60):
    """Poll cond() until it holds; a generous deadline, never a fixed sleep."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def man_examples(path=MAN_PAGE):
    """The .EX/.EE blocks of a man page, each as [(command, [output lines])]."""
    unescape = {"\\-": "-", "\\(aq": "'", "\\(dq": '"', "\\e": "\\", "\\&": ""}
    blocks, block = [], None
    with open(path) as f:
        for line in f.read().splitlines():
            if line == ".EX":
                block = []
                continue
            if line == ".EE":
                blocks.append(block)
                block = None
                continue
            if block is None:
                continue
            text = re.sub(r"\\(\(..|.)", lambda m: unescape[m.group(0)], line)
            if text.startswith("$ "):
                block.append((text[2:], []))
            else:
                block[-1][1].append(text)
    return blocks


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

    # ---- hostile names ------------------------------------------------

    def outside(self):
        """A directory outside the mount that "../../../tmp/x" from keys/ or
        steps/ reaches, with files a hostile name would aim at."""
        d = os.path.normpath(os.path.join(self.wf, "keys", "../../../tmp/x"))
        self.assertFalse(d.startswith(self.m.path + os.sep))
        os.makedirs(d)
        with open(os.path.join(d, "victim"), "w") as f:
            f.write("secret\n")
        with open(os.path.join(d, "precious"), "w") as f:
            f.write("precious\n")
        os.symlink(os.path.join(d, "precious"), os.path.join(d, "victim2.part"))
        return d

    def test_names_that_leave_the_workflow_are_refused(self):
        d = self.outside()
        before = snapshot(d)
        r = once(self.wf, "../../../tmp/x/pwned", "--", "echo", "hi")
        self.assertEqual((r.returncode, r.stdout), (64, ""))
        r = once("--step", "../../../tmp/x/victim", self.wf, "--", "true")
        self.assertEqual((r.returncode, r.stdout), (64, ""))
        self.assertNotIn("secret", r.stderr)
        # victim2 is absent, victim2.part a symlink to a file outside.
        r = once("--step", "../../../tmp/x/victim2", self.wf, "--", "echo", "overwritten")
        self.assertEqual((r.returncode, r.stdout), (64, ""))
        self.assertEqual(snapshot(d), before)
        self.assertEqual(read(os.path.join(d, "precious")), b"precious\n")
        self.assertFalse(os.path.exists(os.path.join(d, "pwned")))

    def test_bad_names_are_usage_errors_before_anything_runs(self):
        marker = os.path.join(self.m.tmp, "ran")
        cmd = ["--", "sh", "-c", "echo x >> " + marker]
        for name in ["", ".", "..", "a/b", "/etc/passwd", "x/", "k" * 256]:
            r = once(self.wf, name, *cmd)
            self.assertEqual(r.returncode, 64, (name, r.stderr))
            self.assertIn("key name", r.stderr)
            r = once("--step", name, self.wf, *cmd)
            self.assertEqual(r.returncode, 64, (name, r.stderr))
            self.assertIn("step name", r.stderr)
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [])
        self.assertEqual(os.listdir(os.path.join(self.wf, "steps")), [])
        # Control bytes of a hostile name are escaped in the message.
        r = once(self.wf, "a/\x1b[2J", "--", "true")
        self.assertEqual(r.returncode, 64)
        self.assertNotIn("\x1b", r.stderr)
        self.assertIn("\\x1b[2J", r.stderr)
        # 255 bytes is a name; its part file name is cut to fit.
        long = "n" * 255
        r = once(self.wf, long, "--", "echo", "long key")
        self.assertEqual((r.returncode, r.stdout), (0, "long key\n"))
        r = once("--step", long, self.wf, "--", "echo", "long step")
        self.assertEqual((r.returncode, r.stdout), (0, "long step\n"))
        self.assertEqual(os.listdir(os.path.join(self.wf, "steps")), [long])

    def test_symlinked_keys_or_steps_are_not_followed(self):
        # A workflow directory (here one outside the mount) whose keys/ and
        # steps/ are symlinks: once opens them with O_NOFOLLOW.
        target = os.path.join(self.m.tmp, "target")
        fake = os.path.join(self.m.tmp, "fake-wf")
        os.makedirs(target)
        os.makedirs(fake)
        os.symlink(target, os.path.join(fake, "keys"))
        os.symlink(target, os.path.join(fake, "steps"))
        self.assertEqual(once(fake, "k", "--", "echo", "hi").returncode, 71)
        self.assertEqual(once("--step", "s", fake, "--", "echo", "hi").returncode, 71)
        self.assertEqual(os.listdir(target), [])

    # ---- SIGPIPE -------------------------------------------------------

    def test_reader_leaving_early_does_not_kill_the_claim(self):
        r = subprocess.run(["bash", "-c", "'%s' '%s' k -- sh -c 'seq 100000' | head -1" % (ONCE, self.wf)],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual((r.returncode, r.stdout), (0, "1\n"))
        status, _, result = read(self.key("k")).partition(b"\n")
        self.assertRegex(status.decode(), r"^succeeded \d+$")
        self.assertEqual(result, "".join("%d\n" % i for i in range(1, 100001)).encode())
        r = subprocess.run(["bash", "-c", "'%s' --step s '%s' -- seq 100000 | head -1" % (ONCE, self.wf)],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual((r.returncode, r.stdout), (0, "1\n"))
        self.assertEqual(len(read(os.path.join(self.wf, "steps", "s"))), len(result))

    # ---- the command dies with once -----------------------------------

    def spawn(self, *args, **kw):
        """once in the background, killed at cleanup if still running."""
        p = subprocess.Popen([ONCE, *args], **kw)

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait()
        self.addCleanup(stop)
        return p

    def command_pids(self, *names):
        """Wait for the pid files a test command writes; the pids and their
        start times, killed at cleanup if still there."""
        paths = [os.path.join(self.m.tmp, n) for n in names]
        wait_for(lambda: all(os.path.exists(p) and read(p).endswith(b"\n") for p in paths), "pid files")
        pids = [(int(read(p)), start_time(int(read(p)))) for p in paths]
        for pid, st in pids:
            self.addCleanup(self.kill_if_there, pid, st)
        return pids

    @staticmethod
    def kill_if_there(pid, st):
        try:
            if st is not None and start_time(pid) == st:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def assertGone(self, pids):
        """Each (pid, start time) gone; a start time of None: gone already."""
        wait_for(lambda: all(st is None or start_time(pid) != st for pid, st in pids), "the command to die")

    def test_killed_runner_takes_its_command_along(self):
        t = self.m.tmp
        direct = self.spawn(self.wf, "k1", "--", "sh", "-c", "echo $$ > %s/c1; exec sleep 1000" % t)
        nested = self.spawn(self.wf, "k2", "--", "sh", "-c",
                            "sleep 1000 & echo $! > %s/g2; echo $$ > %s/c2; wait" % (t, t))
        pids = self.command_pids("c1", "c2", "g2")
        self.assertTrue(all(st is not None for _, st in pids))
        direct.send_signal(signal.SIGKILL)
        nested.send_signal(signal.SIGKILL)
        direct.wait()
        nested.wait()
        self.assertGone(pids)

    def test_command_leftovers_die_when_once_exits(self):
        t = self.m.tmp
        # Normal exit: a background child the command left behind.
        r = once(self.wf, "k", "--", "sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $! > %s/g1" % t)
        self.assertEqual(r.returncode, 0)
        left = self.command_pids("g1")
        self.assertGone(left)
        # Forwarded SIGTERM: the whole group gets it, the key is failed.
        p = self.spawn(self.wf, "k2", "--", "sh", "-c",
                       "sleep 1000 & echo $! > %s/g2; echo $$ > %s/c2; wait" % (t, t))
        pids = self.command_pids("c2", "g2")
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=120), 128 + signal.SIGTERM)
        self.assertGone(pids)
        self.assertFalse(os.path.exists(self.key("k2")))

    # ---- concurrent steps ----------------------------------------------

    def test_concurrent_steps_commit_exactly_one(self):
        counter = os.path.join(self.m.tmp, "counter")
        steps = os.path.join(self.wf, "steps")
        procs = [subprocess.Popen([ONCE, "--step", "S", self.wf, "--", "sh", "-c",
                                   "echo x >> %s; sleep 0.5; echo run $$" % counter],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        committed = read(os.path.join(steps, "S")).decode()
        self.assertRegex(committed, r"^run \d+\n$")
        for out, err, code in outs:
            self.assertEqual((code, out, err), (0, committed, ""))
        self.assertEqual(os.listdir(steps), ["S"])
        with open(counter) as f:
            self.assertIn(len(f.read().split()), range(1, 5))

    def test_interrupted_step_leaves_no_part_file(self):
        steps = os.path.join(self.wf, "steps")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
            started = os.path.join(self.m.tmp, "started-%d" % sig)
            p = self.spawn("--step", "S", self.wf, "--", "sh", "-c",
                           "echo partial; echo $$ > %s; exec sleep 1000" % started, stdout=subprocess.DEVNULL)
            self.command_pids(os.path.basename(started))
            # The part file is a new checkpoint: it exists for others
            # only once committed, so wait for the command instead.
            wait_for(lambda: os.path.exists(started), "the command")
            p.send_signal(sig)
            p.wait(timeout=120)
            wait_for(lambda: os.listdir(steps) == [], "the part file to go (%s)" % signal.Signals(sig).name)

    # ---- --timeout -----------------------------------------------------

    def test_timeout_out_of_range_is_a_usage_error(self):
        fd = claim(self.key("k"))  # in flight: --wait would wait
        self.addCleanup(os.close, fd)
        for t in ["99999999999999999999", "1e300", "3153600001", "inf", "nan", "-1", "1e-400", "", "5s", " 5"]:
            r = once("--wait", "--timeout", t, self.wf, "k", "--", "echo", "never")
            self.assertEqual((r.returncode, r.stdout), (64, ""), t)
            self.assertIn("--timeout", r.stderr)
        r = once("--wait", "--timeout", "0.2", self.wf, "k", "--", "echo", "never")
        self.assertEqual((r.returncode, r.stdout), (75, ""))
        for m in ["-1", "99999999999999999999", "1073741825", "x"]:
            r = once("--max-result", m, self.wf, "j", "--", "echo", "never")
            self.assertEqual((r.returncode, r.stdout), (64, ""), m)
            self.assertIn("--max-result", r.stderr)

    # ---- outcomes ------------------------------------------------------

    def test_outcomes_exit_codes_lines_and_json(self):
        env_cmd = ["sh", "-c", 'echo "$ONCE_KEY $ONCE_GENERATION $ONCE_ATTEMPT"']
        r = once(self.wf, "k", "--", *env_cmd)
        gen = read(self.key("k")).split()[1].decode()
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "k %s 1\n" % gen, ""))
        # Skipped, succeeded: 0, or --done-status; a line that says so.
        r = once(self.wf, "k", "--", "false")
        self.assertEqual((r.returncode, r.stdout), (0, "k %s 1\n" % gen))
        self.assertRegex(r.stderr, r"^once: k: succeeded before \(generation %s, "
                         r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\): not run\n$" % gen)
        self.assertEqual(once("--done-status", "3", self.wf, "k", "--", "false").returncode, 3)
        self.assertEqual(once("--done-status", "x", self.wf, "k", "--", "false").returncode, 64)
        # --json: one object on stdout, nothing echoed.
        j = json.loads(once("--json", self.wf, "k", "--", "false").stdout)
        self.assertEqual((j["outcome"], j["status"], j["generation"], j["result"]),
                         ("skipped_succeeded", "succeeded", int(gen), "k %s 1\n" % gen))
        r = once("--json", self.wf, "fresh", "--", "sh", "-c", "echo out; exit 0")
        j = json.loads(r.stdout)
        self.assertEqual((j["outcome"], j["exit_status"], j["result"], j["attempt"]),
                         ("ran", 0, "out\n", 1))
        # A retry after a failure is attempt 2, and knows it.
        self.assertEqual(once(self.wf, "retry", "--", "false").returncode, 1)
        r = once(self.wf, "retry", "--", *env_cmd)
        self.assertTrue(r.stdout.startswith("retry ") and r.stdout.endswith(" 2\n"), r.stdout)
        # In flight: 75 and a line naming the holder.
        r = once(self.wf, "held", "--", "sh", "-c", "%s --json %s held -- true; echo $?" % (ONCE, self.wf))
        lines = r.stdout.splitlines()
        self.assertEqual(json.loads(lines[0])["outcome"], "skipped_in_flight")
        self.assertEqual(lines[1], "75")
        # Failed before under dedup_on=any: 76.
        write(os.path.join(self.wf, "policy", "dedup_on"), b"any\n")
        once(self.wf, "bad", "--", "false")
        r = once(self.wf, "bad", "--", "true")
        self.assertEqual(r.returncode, 76)
        self.assertIn("failed before", r.stderr)

    def test_the_previous_generation_after_a_crash(self):
        """A retry after an attempt that died learns which one it took over,
        to look for what that attempt may have done."""
        p = subprocess.Popen([ONCE, self.wf, "k", "--", "sleep", "30"])
        wait_for(lambda: os.path.exists(self.key("k")), "the claim")
        first = read(self.key("k")).split()[1].decode()
        p.kill()
        p.wait()
        wait_for(lambda: not os.path.exists(self.key("k")), "the abandon")
        env = ["sh", "-c", 'echo "$ONCE_ATTEMPT ${ONCE_PREVIOUS_GENERATION-none}"']
        r = once(self.wf, "k", "--", *env)
        self.assertEqual((r.returncode, r.stdout), (0, "2 %s\n" % first))
        # A first attempt has none, even when once runs inside another's run.
        r = once(self.wf, "outer", "--", ONCE, self.wf, "inner", "--", *env)
        self.assertEqual(r.stdout, "1 none\n")
        j = json.loads(once("--json", self.wf, "k2", "--", "true").stdout)
        self.assertNotIn("previous", j)

    def test_hash_key_maps_any_key_to_a_name(self):
        hostile = "https://hooks.example/v1/events?id=evt_1&sig=a/b/../c " + "x" * 300
        r = once(self.wf, hostile, "--", "true")
        self.assertEqual(r.returncode, 64)
        self.assertIn("--hash-key", r.stderr)
        r = once("--hash-key", self.wf, hostile, "--", "sh", "-c", 'echo "$ONCE_KEY"')
        name = "sha256-" + hashlib.sha256(hostile.encode()).hexdigest()
        self.assertEqual((r.returncode, r.stdout), (0, name + "\n"))
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [name])
        # The original, verbatim, with the claim and in the events.
        self.assertEqual(os.getxattr(self.key(name), "user.oncefs.original").decode(), hostile)
        notes = [e for e in self.events() if e["event"] == "note"]
        self.assertEqual(notes[0]["original"], hostile)
        show = subprocess.run([ONCECTL, "show", self.m.store, "wf", name],
                              capture_output=True, text=True)
        self.assertIn(hostile, show.stdout)
        # oncectl finds it by the original too.
        show = subprocess.run([ONCECTL, "show", "--hash-key", self.m.store, "wf", hostile],
                              capture_output=True, text=True)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn(name, show.stdout)
        # The same key again: the same name, skipped.
        r = once("--hash-key", "--json", self.wf, hostile, "--", "false")
        j = json.loads(r.stdout)
        self.assertEqual((r.returncode, j["outcome"], j["key"], j["original"]),
                         (0, "skipped_succeeded", name, hostile))

    def test_request_mismatch_is_refused(self):
        req = os.path.join(self.m.tmp, "req.json")
        with open(req, "w") as f:
            f.write('{"amount": 100}')
        r = once("--request", req, self.wf, "pay", "--", "echo", "charged 100")
        self.assertEqual((r.returncode, r.stdout), (0, "charged 100\n"))
        digest = "sha256:" + hashlib.sha256(b'{"amount": 100}').hexdigest()
        self.assertEqual(os.getxattr(self.key("pay"), "user.oncefs.request").decode(), digest)
        # The same request: the stored result.
        r = once("--request", req, self.wf, "pay", "--", "echo", "again")
        self.assertEqual((r.returncode, r.stdout), (0, "charged 100\n"))
        # Another request under the same key: 65, nothing runs.
        r = subprocess.run([ONCE, "--request", "-", self.wf, "pay", "--", "echo", "charged 999"],
                           input='{"amount": 999}', capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stdout), (65, ""))
        self.assertIn("claimed for another request", r.stderr)
        self.assertIn(digest, r.stderr)
        j = json.loads(subprocess.run([ONCE, "--json", "--request", "-", self.wf, "pay", "--", "true"],
                                      input="other", capture_output=True, text=True).stdout)
        self.assertEqual((j["outcome"], j["request"]), ("other_request", digest))
        # While in flight, too.
        p = subprocess.Popen([ONCE, "--request", req, self.wf, "slow", "--", "sleep", "30"])
        wait_for(lambda: errno_of(os.getxattr, self.key("slow"), "user.oncefs.request") == 0,
                 "the request note")
        r = subprocess.run([ONCE, "--wait", "--request", "-", self.wf, "slow", "--", "true"],
                           input="different", capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 65)
        p.kill()
        p.wait()
        # Without --request, no comparison: a plain duplicate.
        self.assertEqual(once(self.wf, "pay", "--", "true").stdout, "charged 100\n")
        self.assertEqual(once("--request", "/nonexistent", self.wf, "pay", "--", "true").returncode, 71)

    def test_a_missing_workflow_is_created(self):
        wf = os.path.join(self.m.path, "brand-new")
        r = once(wf, "k", "--", "echo", "hi")
        self.assertEqual((r.returncode, r.stdout), (0, "hi\n"))
        self.assertIn("created the workflow", r.stderr)
        self.assertTrue(os.path.isdir(os.path.join(wf, "keys")))
        # The step form too.
        wf = os.path.join(self.m.path, "new-steps")
        r = once("--step", "extract", wf, "--", "echo", "rows")
        self.assertEqual((r.returncode, r.stdout), (0, "rows\n"))
        self.assertIn("created the workflow", r.stderr)
        # Options of the key form are refused with --step, not ignored.
        for opt in (["--json"], ["--wait"], ["--hash-key"]):
            r = once(*opt, "--step", "s", wf, "--", "true")
            self.assertEqual(r.returncode, 64, opt)

    def test_a_failure_keeps_its_output(self):
        """What a failed command printed is its failure's reason: in the
        finalize event (dedup_on=success), in the key (dedup_on=any)."""
        j = json.loads(once("--json", self.wf, "f", "--", "sh", "-c",
                            "echo important diagnostic; exit 2").stdout)
        self.assertEqual((j["status"], j["exit_status"], j["result"]),
                         ("failed", 2, "important diagnostic\n"))
        fin = [e for e in self.events() if e["event"] == "finalize"][-1]
        self.assertEqual(fin["result"], "important diagnostic\n")
        write(os.path.join(self.wf, "policy", "dedup_on"), b"any\n")
        once(self.wf, "g", "--", "sh", "-c", "echo why; exit 1")
        self.assertEqual(read(self.key("g")).split(b"\n", 1)[1], b"why\n")

    def test_wait_is_woken_by_the_finalize(self):
        """--wait blocks in a read of wait/KEY: no polling, and it returns as
        soon as the holder finalizes (or claims when the holder dies)."""
        p = subprocess.Popen([ONCE, self.wf, "k", "--", "sh", "-c", "sleep 1; echo first"],
                             stdout=subprocess.PIPE, text=True)
        wait_for(lambda: os.path.exists(self.key("k")), "the claim")
        t0 = time.monotonic()
        r = once("--wait", self.wf, "k", "--", "echo", "never")
        self.assertEqual((r.returncode, r.stdout), (0, "first\n"))
        self.assertLess(time.monotonic() - t0, 5)
        p.wait()
        # The holder is killed: the waiter claims and runs.
        p = subprocess.Popen([ONCE, self.wf, "j", "--", "sleep", "30"])
        wait_for(lambda: os.path.exists(self.key("j")), "the claim")
        threading.Timer(0.5, p.kill).start()
        r = once("--wait", "--timeout", "20", self.wf, "j", "--", "echo", "second")
        self.assertEqual((r.returncode, r.stdout), (0, "second\n"))
        p.wait()
        # --timeout ends the wait: 75.
        fd = claim(self.key("t"))
        t0 = time.monotonic()
        r = once("--wait", "--timeout", "0.5", self.wf, "t", "--", "true")
        self.assertEqual(r.returncode, 75)
        self.assertIn("still in flight after waiting 0.5 s", r.stderr)
        self.assertLess(time.monotonic() - t0, 3)
        os.close(fd)

    # ---- doc/once.1 ----------------------------------------------------

    def test_man_page_examples(self):
        """Every example of doc/once.1 (its .EX blocks), as written, with the
        mount in place of /mnt/once; the lines without "$ " are the output."""
        blocks = man_examples()
        self.assertGreaterEqual(len(blocks), 5)
        env = dict(os.environ, PATH=os.path.dirname(os.path.abspath(ONCE)) + os.pathsep + os.environ["PATH"])
        for block in blocks:
            script = "\n".join(cmd for cmd, _ in block).replace("/mnt/once", self.m.path)
            want = "".join(line.replace("/mnt/once", self.m.path) + "\n" for _, out in block for line in out)
            r = subprocess.run(["bash", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env, cwd=self.m.tmp, timeout=120)
            # The times and pids of the skip lines are the run's own.
            vary = lambda t: re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "TIME",  # noqa: E731
                                    re.sub(r"pid \d+", "pid N", t))
            self.assertEqual(vary(r.stdout), vary(want), script)


if __name__ == "__main__":
    run()

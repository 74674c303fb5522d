"""A crashed holder never blocks a retry.

A claim lives as long as its holder: when the last handle of the claim is
closed with no finalize, however the holder ended (kill -9, SIGSEGV, an
uncaught Python exception, a shell under set -e, exit 3), the key is free
at once and the events say "abandon" and why.  A claim whose mount died is
free within the short lease (-o lease).  "detach" is the one way to keep a
claim past its close, to finalize it later by path.
"""
import errno
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Mount, MountedTest, claim, read, run, sh  # noqa: E402

HOLDER = r"""
import os, signal, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
print("claimed", flush=True)
how = sys.argv[2]
if how == "wait":
    sys.stdin.readline()
elif how == "segv":
    signal.signal(signal.SIGSEGV, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGSEGV)
elif how == "exit3":
    os._exit(3)
"""


def retry_until_claimed(path, limit=10.0):
    """Claim path as a retry would, every 5 ms; the seconds it took."""
    start = time.monotonic()
    while True:
        try:
            fd = claim(path)
        except FileExistsError:
            if time.monotonic() - start > limit:
                raise
            time.sleep(0.005)
            continue
        os.write(fd, b"succeeded\nthe retry")
        os.close(fd)
        return time.monotonic() - start


class Holders(MountedTest):
    def holder(self, how, name="k"):
        p = subprocess.Popen([sys.executable, "-c", HOLDER, self.key(name), how],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.assertEqual(p.stdout.readline(), "claimed\n")
        return p

    def assertRetried(self, name="k"):
        took = retry_until_claimed(self.key(name), limit=1.0)
        self.assertEqual(os.getxattr(self.key(name), "user.oncefs.attempt"), b"2")
        return took

    def test_kill9(self):
        p = self.holder("wait")
        p.kill()
        p.wait()
        took = self.assertRetried()
        print("\nkill -9 of the holder to a successful retry, same mount: %.1f ms" % (took * 1000))
        ev = [e for e in self.events() if e["event"] == "abandon"][-1]
        self.assertEqual((ev["signal"], ev["reason"], ev["pid"]), (9, "killed by SIGKILL", p.pid))

    def test_segv(self):
        p = self.holder("segv")
        p.wait()
        self.assertEqual(p.returncode, -signal.SIGSEGV)
        self.assertRetried()
        ev = [e for e in self.events() if e["event"] == "abandon"][-1]
        self.assertEqual(ev["signal"], signal.SIGSEGV)

    def test_exit_status(self):
        p = self.holder("exit3")
        p.wait()
        self.assertRetried()
        ev = [e for e in self.events() if e["event"] == "abandon"][-1]
        self.assertEqual((ev["exit_status"], ev["reason"]), (3, "exited with status 3, not finalized"))

    def test_python_exception_in_with(self):
        r = subprocess.run([sys.executable, "-c",
                            "import sys\nwith open(sys.argv[1], 'x') as f:\n    raise ValueError('boom')",
                            self.key("k")], capture_output=True, text=True)
        self.assertIn("ValueError", r.stderr)
        self.assertRetried()
        ev = self.assertAbandoned_events()
        self.assertEqual(ev["reason"], "closed without a finalize (the process runs on)")

    def assertAbandoned_events(self, name="k"):
        return [e for e in self.events() if e["event"] == "abandon" and e.get("key") == name][-1]

    def test_shell_under_set_e(self):
        for shell in ("sh", "bash"):
            name = "k-" + shell
            r = subprocess.run([shell, "-c", 'set -eC; exec 3> "$1"; false; echo succeeded >&3', shell,
                                self.key(name)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertRetried(name)
            self.assertEqual(self.assertAbandoned_events(name)["exit_status"], 1, shell)

    def test_bad_status_write(self):
        fd = claim(self.key("k"))
        self.assertErrno(errno.EINVAL, os.write, fd, b"done\n")
        os.close(fd)
        self.assertRetried()

    def test_a_forked_child_keeps_the_claim(self):
        """The claim is the open file, whoever holds it: a child that got
        the fd keeps the claim alive after its parent is killed."""
        r = sh('set -C; exec 3> keys/k; (sleep 1.5; echo succeeded >&3) >/dev/null 2>&1 & kill -9 $$',
               cwd=self.wf)
        self.assertEqual(r.returncode, -signal.SIGKILL)
        time.sleep(0.3)
        self.assertEqual(read(self.key("k")).split()[0], b"in_flight")
        deadline = time.monotonic() + 10
        while read(self.key("k")).split()[0] == b"in_flight" and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(read(self.key("k")).split()[0], b"succeeded")

    def test_a_holder_that_runs_programs(self):
        """The claim's fd is close-on-exec (Python's default): every exec
        of a child closes a copy, and the kernel waits for that FLUSH in
        the middle of the exec, when /proc/PID/stat of the child blocks.
        The daemon must not wait for it (it once did, for ever)."""
        script = ("import os, subprocess, sys\n"
                  "fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
                  "subprocess.run(['true'], check=True)\n"
                  "os.write(fd, b'succeeded\\n')\n"
                  "subprocess.run(['true'], check=True)\n"
                  "os.close(fd)\n")
        r = subprocess.run([sys.executable, "-c", script, self.key("k")], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(self.key("k")).split()[0], b"succeeded")
        self.assertNotIn("abandon", [e["event"] for e in self.events()])

    def test_the_event_names_the_holders_death_not_a_childs(self):
        """fd 3 of the shell idiom is inherited by every child: a child
        that exits 0 first must not be taken for the holder."""
        r = sh('set -C; exec 3> keys/k; true; date >/dev/null; kill -9 $$', cwd=self.wf)
        self.assertEqual(r.returncode, -signal.SIGKILL)
        self.assertRetried()
        ev = self.assertAbandoned_events()
        self.assertEqual((ev.get("signal"), ev.get("exit_status")), (9, None), ev)

    def test_rm_r_of_a_workflow(self):
        __import__("shutil").rmtree(self.wf)
        self.assertFalse(os.path.exists(self.wf))

    def test_detach_then_finalize_by_path(self):
        r = sh('set -C; echo detach > keys/k && cat keys/k', cwd=self.wf)
        self.assertEqual(r.returncode, 0, r.stderr)
        status, gen = r.stdout.split()
        self.assertEqual(status, "in_flight")
        time.sleep(0.2)
        self.assertEqual(read(self.key("k")).split(), [b"in_flight", gen.encode()])
        # The lease is in_flight_ttl (a day), not the held claim's seconds.
        self.assertGreater(int(os.getxattr(self.key("k"), "user.oncefs.expires")), time.time() + 3600)
        r = sh('echo "succeeded %s" > keys/k && cat keys/k' % gen, cwd=self.wf)
        self.assertEqual(r.stdout.split(), ["succeeded", gen])
        self.assertIn("detach", [e["event"] for e in self.events()])
        # "detach" takes no result.
        fd = claim(self.key("other"))
        self.assertErrno(errno.EINVAL, os.write, fd, b"detach\nresult")
        os.close(fd)


class FailureReason(MountedTest):
    def test_a_failure_keeps_its_reason(self):
        """Under dedup_on=success a failed key is free again; why it failed
        stays in the finalize event (cut at 2 KiB) and oncectl show."""
        fd = claim(self.key("k"))
        os.write(fd, b"failed\nTraceback: ValueError: boom\n")
        os.close(fd)
        self.assertFalse(os.path.exists(self.key("k")))
        ev = [e for e in self.events() if e["event"] == "finalize"][-1]
        self.assertEqual((ev["status"], ev["result"]), ("failed", "Traceback: ValueError: boom\n"))
        r = subprocess.run([os.environ.get("ONCECTL", "oncectl"), "show", self.m.store, "wf", "k"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("free", r.stdout)
        self.assertIn("ValueError: boom", r.stdout)
        r = subprocess.run([os.environ.get("ONCECTL", "oncectl"), "show", "--json", self.m.store, "wf", "k"],
                           capture_output=True, text=True)
        self.assertEqual(__import__("json").loads(r.stdout)["last"]["result"], "Traceback: ValueError: boom\n")
        # A long reason is cut, whole characters, and says so.
        fd = claim(self.key("long"))
        os.write(fd, b"failed\n" + "\u00e9".encode() * 3000)
        os.close(fd)
        ev = [e for e in self.events() if e["event"] == "finalize"][-1]
        self.assertEqual(ev["result"], "\u00e9" * 1024)
        self.assertTrue(ev["result_truncated"])
        # A success's result stays in the key, not in the events.
        fd = claim(self.key("ok"))
        os.write(fd, b"succeeded\nfine")
        os.close(fd)
        self.assertNotIn("result", [e for e in self.events() if e["event"] == "finalize"][-1])


class DeadMount(unittest.TestCase):
    def test_a_dead_mounts_claims_are_free_within_the_lease(self):
        """Mount A holds a claim and its daemon is killed: mount B claims
        it within the short lease, while in_flight_ttl is a day."""
        with Mount(options=("create", "lease=2")) as a:
            os.mkdir(a.p("wf"))
            b = Mount(store=a.store, options=("lease=2",), tmp=a.tmp)
            with b:
                # Held for longer than the lease: renewed, B cannot claim.
                p = subprocess.Popen([sys.executable, "-c", HOLDER, a.p("wf", "keys", "k"), "wait"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                self.assertEqual(p.stdout.readline(), "claimed\n")
                time.sleep(3)
                self.assertRaises(FileExistsError, claim, b.p("wf", "keys", "k"))
                a.kill9()
                took = retry_until_claimed(b.p("wf", "keys", "k"), limit=10)
                print("\ndaemon of the holder's mount killed -9 to a retry on another mount: "
                      "%.2f s (lease=2)" % took)
                self.assertLess(took, 2.5)
                p.kill()
                p.wait()
                # A holder killed on a live mount: B claims at once.
                a.start()
                p = subprocess.Popen([sys.executable, "-c", HOLDER, a.p("wf", "keys", "j"), "wait"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                self.assertEqual(p.stdout.readline(), "claimed\n")
                p.kill()
                p.wait()
                took = retry_until_claimed(b.p("wf", "keys", "j"), limit=1)
                print("kill -9 of the holder to a retry on another mount: %.1f ms" % (took * 1000))


if __name__ == "__main__":
    run()

"""Waiting without polling: a read of wait/K blocks until the claim on K
ends, then gives the key's content (terminal) or fails with ENOENT (the
key is free: claim it).  A waiter costs the daemon no thread, can be
interrupted, and is woken at once by a finalize on its mount, within
WAIT_POLL_MS (100 ms) by one on another mount.
"""
import errno
import os
import statistics
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Mount, MountedTest, claim, hold, read, run, write  # noqa: E402


def stats(m):
    return dict(line.split() for line in read(m.p(".stats")).decode().splitlines())


def daemon_threads(m):
    return len(os.listdir("/proc/%d/task" % m.proc.pid))


class Waiters:
    """n threads each blocked in a read of path; .results: (time, bytes or errno)."""

    def __init__(self, path, n):
        self.results = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.one, args=(path,)) for _ in range(n)]
        for t in self.threads:
            t.start()

    def one(self, path):
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                out = b""
                while True:
                    b = os.read(fd, 65536)
                    if not b:
                        break
                    out += b
            finally:
                os.close(fd)
        except OSError as e:
            out = e.errno
        with self.lock:
            self.results.append((time.monotonic(), out))

    def join(self, timeout=30):
        for t in self.threads:
            t.join(timeout)
        return self.results


class Wait(MountedTest):
    def wait_parked(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while int(stats(self.m)["waiters"]) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(int(stats(self.m)["waiters"]), n)

    def test_many_waiters_woken_by_one_finalize(self):
        k = self.key("k")
        fd = claim(k)
        threads0 = daemon_threads(self.m)
        w = Waiters(self.m.p("wf", "wait", "k"), 1000)
        self.wait_parked(1000)
        # Parked reads hold no thread of the daemon's.
        self.assertLess(daemon_threads(self.m) - threads0, 20)
        # Claims go on beside them.
        hold(self.key("other"))
        os.write(fd, b"succeeded\nthe result")
        os.close(fd)
        t0 = time.monotonic()
        res = w.join()
        self.assertEqual(len(res), 1000)
        gen = read(k).split()[1]
        self.assertEqual({r[1] for r in res}, {b"succeeded " + gen + b"\nthe result"})
        delays = sorted((r[0] - t0) * 1000 for r in res)
        print("\n1000 waiters, same mount: woken %.1f ms (median) %.1f ms (last) after the finalize"
              % (statistics.median(delays), delays[-1]))
        self.assertEqual(stats(self.m)["waiters"], "0")

    def test_one_waiter_is_woken_at_once(self):
        delays = []
        for i in range(20):
            fd = claim(self.key("k%d" % i))
            w = Waiters(self.m.p("wf", "wait", "k%d" % i), 1)
            self.wait_parked(1)
            os.write(fd, b"succeeded\n")
            os.close(fd)
            t0 = time.monotonic()
            delays.append((w.join()[0][0] - t0) * 1000)
        print("\none waiter, same mount: woken %.2f ms (median of 20) after the finalize's close"
              % statistics.median(delays))

    def test_terminal_reads_at_once_and_free_is_enoent(self):
        fd = claim(self.key("done"))
        os.write(fd, b"succeeded\nr")
        os.close(fd)
        self.assertEqual(read(self.m.p("wf", "wait", "done")), read(self.key("done")))
        self.assertErrno(errno.ENOENT, read, self.m.p("wf", "wait", "never"))
        self.assertEqual(os.listdir(self.m.p("wf", "wait")), [])
        self.assertErrno(errno.EACCES if os.getuid() else errno.EPERM,
                         os.open, self.m.p("wf", "wait", "done"), os.O_WRONLY)

    def test_every_way_a_claim_ends_free(self):
        """Abandoned, released, failed under dedup_on=success, expired:
        the waiter gets ENOENT and claims."""
        def ends(name, finish, delay=0.3):
            fd = claim(self.key(name))
            w = Waiters(self.m.p("wf", "wait", name), 3)
            self.wait_parked(3)
            time.sleep(delay)
            finish(fd)
            res = w.join()
            self.assertEqual([r[1] for r in res], [errno.ENOENT] * 3, name)
            self.assertEqual(stats(self.m)["waiters"], "0")
            os.close(claim(self.key(name)))  # the caller claims it

        ends("abandoned", os.close)

        def release(fd):
            os.unlink(self.key("released"))
            os.close(fd)
        ends("released", release)

        def fail(fd):
            os.write(fd, b"failed\nno")
            os.close(fd)
        ends("failed", fail)

        write(os.path.join(self.wf, "policy", "in_flight_ttl"), b"1\n")

        def expire(fd):
            os.write(fd, b"detach")
            os.close(fd)   # a detached claim whose lease (1 s) runs out
        ends("expired", expire)

    def test_failed_under_dedup_any_is_content(self):
        write(os.path.join(self.wf, "policy", "dedup_on"), b"any\n")
        fd = claim(self.key("k"))
        w = Waiters(self.m.p("wf", "wait", "k"), 1)
        self.wait_parked(1)
        os.write(fd, b"failed\nbroken")
        os.close(fd)
        self.assertEqual(w.join()[0][1].split(b"\n")[1], b"broken")

    def test_interrupted_by_timeout(self):
        fd = claim(self.key("k"))
        t0 = time.monotonic()
        r = subprocess.run(["timeout", "1", "cat", self.m.p("wf", "wait", "k")], capture_output=True)
        self.assertEqual(r.returncode, 124)
        self.assertLess(time.monotonic() - t0, 3)
        # SIGINT reaches a waiting cat too.
        p = subprocess.Popen(["cat", self.m.p("wf", "wait", "k")])
        self.wait_parked(1)
        p.send_signal(2)
        self.assertEqual(p.wait(timeout=5), -2)
        self.assertEqual(stats(self.m)["waiters"], "0")
        os.write(fd, b"succeeded\n")
        os.close(fd)


class OtherMount(unittest.TestCase):
    def test_a_finalize_on_another_mount_wakes_within_the_poll(self):
        with Mount() as a:
            os.mkdir(a.p("wf"))
            with Mount(store=a.store, options=(), tmp=a.tmp) as b:
                fd = claim(a.p("wf", "keys", "k"))
                w = Waiters(b.p("wf", "wait", "k"), 10)
                deadline = time.monotonic() + 10
                while stats(b)["waiters"] != "10" and time.monotonic() < deadline:
                    time.sleep(0.02)
                os.write(fd, b"succeeded\nfrom a")
                os.close(fd)
                t0 = time.monotonic()
                res = w.join()
                self.assertEqual({r[1].split(b"\n")[1] for r in res}, {b"from a"})
                delay = (max(r[0] for r in res) - t0) * 1000
                print("\nwaiters on another mount: woken %.0f ms after the finalize" % delay)
                self.assertLess(delay, 1000)


if __name__ == "__main__":
    run()

"""Durability: a reply that says success is on disk, and a failed fsync is
never forgotten.

The daemon runs under tests/faults/failsync.c (LD_PRELOAD), which can make
one fdatasync() fail, as a writeback error reaches a process once, or take
a second and a half, so that a commit is written but not yet durable.
"""
import errno
import os
import threading
import time
import unittest

from harness import Mount, claim, hold, errno_of, read, run, write

SHIM = os.environ.get("FAILSYNC", os.path.join(os.path.dirname(__file__), "../../build/tests/libfailsync.so"))


def stats(m):
    return dict(line.split() for line in read(m.p(".stats")).decode().splitlines())


class Durability(unittest.TestCase):
    def mount(self, options=("create",)):
        tmp = __import__("tempfile").mkdtemp(prefix="oncefs-dur-")
        self.fail_file = os.path.join(tmp, "fail-next-sync")
        self.lose_file = os.path.join(tmp, "lose-next-claim-reply")
        self.slow_file = os.path.join(tmp, "slow-next-sync")
        env = {"LD_PRELOAD": SHIM, "ONCEFS_FAILSYNC": self.fail_file,
               "ONCEFS_SLOWSYNC": self.slow_file, "ONCEFS_FAILREPLY": self.lose_file,
               # the sanitizer runtime need not come first for this shim
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
        m = Mount(options=options, env=env)
        m.__enter__()
        self.addCleanup(m.cleanup)
        self.addCleanup(__import__("shutil").rmtree, tmp, True)
        return m

    def test_a_failed_fsync_stops_every_later_write(self):
        """One fdatasync fails, the next would succeed: the mount must not
        take that success for the frames the failure lost."""
        m = self.mount()
        os.mkdir(m.p("wf"))
        fd = claim(m.p("wf", "keys", "before"))
        os.write(fd, b"succeeded\n")
        os.close(fd)
        open(self.fail_file, "w").close()
        self.assertEqual(errno_of(claim, m.p("wf", "keys", "lost")), errno.EIO)
        self.assertFalse(os.path.exists(self.fail_file), "the shim's failure was used")
        # The next sync would succeed: writes must still be refused.
        self.assertEqual(errno_of(claim, m.p("wf", "keys", "after")), errno.EROFS)
        self.assertEqual(errno_of(os.mkdir, m.p("wf2")), errno.EROFS)
        self.assertEqual(errno_of(write, m.p("wf", "policy", "retention"), b"60\n"), errno.EROFS)
        self.assertEqual(stats(m)["sync_failed"], "1")
        # What was durable is still read.
        self.assertEqual(read(m.p("wf", "keys", "before")).split()[0], b"succeeded")
        self.assertIn("sync", m.read_log() + "")  # the daemon said why (stderr or syslog)
        # A new mount starts over.
        m.restart()
        self.assertEqual(stats(m)["sync_failed"], "0")
        hold(m.p("wf", "keys", "after"))

    def test_a_commit_is_not_seen_before_it_is_durable(self):
        """A claim's commit is in the WAL, its fsync under way: another
        process's stat() must not report the key before the sync returns."""
        m = self.mount()
        os.mkdir(m.p("wf"))
        key = m.p("wf", "keys", "k")
        open(self.slow_file, "w").close()
        claimed = {}

        def claimer():
            claimed["fd"] = claim(key)
            claimed["at"] = time.monotonic()

        t = threading.Thread(target=claimer)
        t.start()
        seen = None
        while seen is None:
            try:
                os.stat(key)
                seen = time.monotonic()
            except FileNotFoundError:
                time.sleep(0.005)
        done = os.path.exists(self.slow_file + ".done")
        t.join()
        os.close(claimed["fd"])
        self.assertFalse(os.path.exists(self.slow_file), "the slow sync was used")
        self.assertTrue(done, "stat() saw the claim before its commit was synced")


    def test_an_idle_mount_writes_nothing(self):
        """With no client, nothing is due: no commit, no fsync, no WAL
        growth, however long the mount sits (renewals, pins, purge and
        sweep all find nothing to do)."""
        m = self.mount(("create", "sweep_interval=1"))
        os.mkdir(m.p("wf"))
        write(m.p("wf", "steps", "s"), b"x", os.O_WRONLY | os.O_CREAT)
        fd = claim(m.p("wf", "keys", "k"))
        os.write(fd, b"succeeded\n")
        os.close(fd)
        read(m.p("wf", "steps", "s"))
        # Let the background settle what the writes left due.
        time.sleep(13)
        before = stats(m)
        wal = os.stat(m.store + "-wal")
        time.sleep(3)
        after = stats(m)
        self.assertEqual((before["commits"], before["fsyncs"]), (after["commits"], after["fsyncs"]))
        self.assertEqual(os.stat(m.store + "-wal").st_size, wal.st_size)


    def test_a_claim_whose_reply_is_lost_is_free_at_once(self):
        """The reply to a claim's CREATE reaches nobody (the kernel dropped
        the request: the opener was interrupted or killed).  No RELEASE
        will come: the key must be free at once, not held by nobody for
        the lease, and the events say why."""
        m = self.mount()
        os.mkdir(m.p("wf"))
        key = m.p("wf", "keys", "k")
        open(self.lose_file, "w").close()
        # Python retries an open that says EINTR (PEP 475) at once, as a
        # retrying worker would; the abandon may come a moment after the
        # opener learnt of the failure, so a retry claims within a second.
        deadline = time.monotonic() + 2
        while True:
            try:
                hold(key)
                break
            except FileExistsError:
                self.assertLess(time.monotonic(), deadline, "the key stayed claimed by nobody")
                time.sleep(0.01)
        self.assertFalse(os.path.exists(self.lose_file), "the shim lost the reply")
        self.assertEqual(os.getxattr(key, "user.oncefs.attempt"), b"2")
        self.assertIn(b'"abandon"', read(m.p("wf", "events")))


if __name__ == "__main__":
    run()

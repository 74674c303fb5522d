"""Leases: expiry, adoption, late finalize, fencing of old handles, and
renewal by an open handle and by `touch`.

policy/in_flight_ttl is 2 seconds here.  An open claim renews itself, so
to get an open handle whose lease runs out, the daemon that holds it is
stopped (SIGSTOP, as a paused VM or a stuck daemon would be) while a
second mount of the same store watches the key expire.
"""
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Mount, MountedTest, claim, hold, read, write, run  # noqa: E402

TTL = 2


def wait_until(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def xattr(path, name):
    return os.getxattr(path, "user.oncefs." + name).decode()


def events(wf):
    data = read(os.path.join(wf, "events"))
    return [json.loads(line) for line in data.decode().splitlines()]


class Lease(MountedTest):
    def setUp(self):
        super().setUp()
        write(os.path.join(self.wf, "policy", "in_flight_ttl"), "%d\n" % TTL)

    def second_mount(self):
        b = Mount(store=self.m.store, options=(), tmp=self.m.tmp)
        b.__enter__()
        self.addCleanup(b.cleanup)
        return b

    @contextlib.contextmanager
    def stopped(self, mount):
        """The daemon of mount is stopped inside the block (and always
        continued after it)."""
        mount.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            mount.proc.send_signal(signal.SIGCONT)

    def key_names(self, wf=None):
        return os.listdir(os.path.join(wf or self.wf, "keys"))

    def wait_expired(self, path, wf=None):
        self.assertTrue(wait_until(lambda: not os.path.exists(path), TTL + 5),
                        "%s did not expire" % path)

    # ---- expiry and adoption ---------------------------------------------

    def test_expired_key_vanishes_and_is_adopted(self):
        k = self.key("k")
        fd = claim(k)
        gen1 = int(xattr(k, "generation"))
        ino1 = os.stat(k).st_ino
        self.assertEqual(xattr(k, "attempt"), "1")
        expires = int(xattr(k, "expires"))
        self.assertAlmostEqual(expires, time.time() + TTL, delta=2)
        os.write(fd, b"detach\n")
        os.close(fd)  # detached: no holder, the lease runs out
        self.assertTrue(os.path.exists(k), "closing a detached claim does not release it")
        self.assertEqual(read(k).split(), [b"in_flight", b"%d" % gen1])

        self.wait_expired(k)
        # Gone for every kind of lookup.
        self.assertNotIn("k", self.key_names())
        self.assertErrno(errno.ENOENT, os.stat, k)
        self.assertErrno(errno.ENOENT, os.open, k, os.O_RDONLY)
        self.assertErrno(errno.ENOENT, os.getxattr, k, "user.oncefs.status")
        # touch of an expired key is a create without O_EXCL: ENOENT.
        r = subprocess.run(["touch", k], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertFalse(os.path.exists(k))

        fd = claim(k)
        try:
            gen2 = int(xattr(k, "generation"))
            self.assertGreater(gen2, gen1)
            self.assertEqual(xattr(k, "attempt"), "2")
            self.assertEqual(xattr(k, "status"), "in_flight")
            self.assertEqual(read(k).split(), [b"in_flight", b"%d" % gen2])
            self.assertEqual(self.key_names(), ["k"])
            self.assertNotEqual(os.stat(k).st_ino, ino1, "each generation is its own inode")
            os.write(fd, b"succeeded\n")
        finally:
            os.close(fd)
        self.assertEqual(read(k), b"succeeded %d\n" % gen2)

        ev = events(self.wf)
        kinds = [(e["event"], e.get("generation")) for e in ev]
        self.assertIn(("claim", gen1), kinds)
        self.assertIn(("adopt", gen2), kinds)
        self.assertIn(("finalize", gen2), kinds)
        self.assertLess(kinds.index(("claim", gen1)), kinds.index(("adopt", gen2)))

    def test_expired_key_does_not_block_rmdir(self):
        k = self.key("k")
        hold(k)
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.wf)
        self.wait_expired(k)
        os.rmdir(self.wf)
        self.assertFalse(os.path.exists(self.wf))

    def late_finalize(self, sweep):
        """One rule, whether a sweep ran or not: once the lease has passed,
        the holder's late finalize is fenced (ESTALE at write()), nothing
        changes, and the next claim adopts the key at attempt 2."""
        b = self.second_mount()
        k, kb = self.key("k"), b.p("wf", "keys", "k")
        fd = claim(k)
        try:
            with self.stopped(self.m):  # no renewal while A is stopped
                self.wait_expired(kb)
                self.assertNotIn("k", os.listdir(b.p("wf", "keys")))
            # A runs again (its renewal must not revive the lease).  The
            # sweep runs from a process started only now: a fork inside
            # the stopped block would close a copy of fd there, and that
            # close waits for A.
            if sweep:
                r = subprocess.run([os.environ.get("ONCECTL", "oncectl"), "sweep", self.m.store],
                                   capture_output=True, text=True, pass_fds=(fd,))
                self.assertEqual(r.returncode, 0, r.stderr)
            time.sleep(1)
            self.assertFalse(os.path.exists(kb), "a renewal revived an expired lease")
            with self.assertRaises(OSError) as cm:
                os.write(fd, b"succeeded\nlate")
            self.assertEqual(cm.exception.errno, errno.ESTALE)
            with self.assertRaises(OSError) as cm:
                os.utime(fd)
            self.assertEqual(cm.exception.errno, errno.ESTALE)
        finally:
            os.close(fd)
        self.assertFalse(os.path.exists(kb))
        hold(kb)
        self.assertEqual(xattr(kb, "attempt"), "2")

    def test_late_finalize_before_a_sweep_is_fenced(self):
        self.late_finalize(sweep=False)

    def test_late_finalize_after_a_sweep_is_fenced(self):
        self.late_finalize(sweep=True)

    def test_old_handle_is_fenced_after_adoption(self):
        b = self.second_mount()
        k, kb = self.key("k"), b.p("wf", "keys", "k")
        old = claim(k)
        old_idle = os.open(k, os.O_WRONLY)  # a second handle of the same claim
        closed = []
        try:
            gen1 = int(xattr(k, "generation"))
            os.write(old, b"succeeded\nfrom the old holder")  # not committed yet
            with self.stopped(self.m):
                self.wait_expired(kb)
                new = claim(kb)
            try:
                gen2 = int(xattr(kb, "generation"))
                self.assertGreater(gen2, gen1)
                self.assertEqual(xattr(kb, "attempt"), "2")
                # Every write, time change and commit through the old
                # generation's handles is ESTALE and changes nothing.
                self.assertErrno(errno.ESTALE, os.write, old, b" more")
                self.assertErrno(errno.ESTALE, os.write, old_idle, b"succeeded\n")
                self.assertErrno(errno.ESTALE, os.write, old_idle, b"failed\n")
                self.assertErrno(errno.ESTALE, os.write, old_idle, b"succeeded %d\n" % gen2)
                self.assertErrno(errno.ESTALE, os.utime, old)
                self.assertErrno(errno.ESTALE, os.ftruncate, old, 0)
                self.assertErrno(errno.ESTALE, os.fsync, old)
                closed.append(old)
                self.assertErrno(errno.ESTALE, os.close, old)  # its pending finalize
                self.assertEqual(read(kb), b"in_flight %d\n" % gen2)
                self.assertEqual(read(k), b"in_flight %d\n" % gen2)
                os.write(new, b"succeeded\nfrom the adopter")
            finally:
                os.close(new)
        finally:
            for fd in (old, old_idle):
                if fd not in closed:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        self.assertEqual(read(k), b"succeeded %d\nfrom the adopter" % gen2)
        kinds = [e["event"] for e in events(self.wf)]
        self.assertIn("expire", kinds)
        self.assertIn("adopt", kinds)

    def test_fencing_is_logged(self):
        """events lists `fenced`: an operator must be able to see that a
        stale holder tried to write after its key was adopted."""
        b = self.second_mount()
        k, kb = self.key("k"), b.p("wf", "keys", "k")
        old = claim(k)
        try:
            gen1 = int(xattr(k, "generation"))
            with self.stopped(self.m):
                self.wait_expired(kb)
                hold(kb)
            self.assertErrno(errno.ESTALE, os.write, old, b"succeeded\n")
        finally:
            os.close(old)
        fenced = [e for e in events(self.wf) if e["event"] == "fenced"]
        self.assertTrue(fenced, "no fenced event in %r" % [e["event"] for e in events(self.wf)])
        self.assertEqual(fenced[-1].get("generation"), gen1)

    def test_crashed_holder_daemon_lease_expires_and_is_adopted(self):
        """The holder's mount dies with the claim open: no more renewal,
        so another mount of the store adopts the key after the ttl."""
        b = self.second_mount()
        k, kb = self.key("k"), b.p("wf", "keys", "k")
        fd = claim(k)
        gen1 = int(xattr(k, "generation"))
        self.m.kill9()
        try:
            self.assertErrno(errno.ENOTCONN, os.write, fd, b"succeeded\n")
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        self.assertEqual(read(kb), b"in_flight %d\n" % gen1)
        self.wait_expired(kb)
        fd = claim(kb)
        try:
            self.assertEqual(xattr(kb, "attempt"), "2")
            self.assertGreater(int(xattr(kb, "generation")), gen1)
            os.write(fd, b"succeeded\nadopted after a crash")
        finally:
            os.close(fd)
        self.m.start()
        self.assertEqual(read(k).split(b"\n", 1)[1], b"adopted after a crash")

    def test_release_kills_the_open_claim(self):
        """rm keys/K while the holder has it open: the holder's handle is
        dead, and its renewal must not bring the key back."""
        k = self.key("k")
        fd = claim(k)
        try:
            os.unlink(k)
            self.assertFalse(os.path.exists(k))
            time.sleep(1.5)  # several renewal rounds
            self.assertFalse(os.path.exists(k), "renewal resurrected a released key")
            self.assertNotIn("k", self.key_names())
            self.assertErrno(errno.ESTALE, os.write, fd, b"succeeded\n")
            fd2 = claim(k)
            os.write(fd2, b"succeeded\nnew holder")
            os.close(fd2)
            self.assertErrno(errno.ESTALE, os.write, fd, b"failed\n")
        finally:
            os.close(fd)
        self.assertEqual(read(k).split(b"\n", 1)[1], b"new holder")

    # ---- renewal -----------------------------------------------------------

    def test_open_claim_renews_itself(self):
        k = self.key("k")
        fd = claim(k)
        try:
            first = int(xattr(k, "expires"))
            deadline = time.time() + 2.5 * TTL
            while time.time() < deadline:
                self.assertTrue(os.path.exists(k), "an open claim expired")
                time.sleep(0.25)
            self.assertIn("k", self.key_names())
            self.assertGreater(int(xattr(k, "expires")), first)
            self.assertEqual(xattr(k, "attempt"), "1")
            os.write(fd, b"succeeded\n")
        finally:
            os.close(fd)
        self.assertEqual(read(k).split()[0], b"succeeded")
        # Routine renewals are counted, not logged.
        self.assertNotIn("renew", [e["event"] for e in events(self.wf)])
        stats = dict(line.split() for line in read(self.m.p(".stats")).decode().splitlines())
        self.assertGreater(int(stats["renewals"]), 0)

    def test_open_claim_in_another_process_renews(self):
        k = self.key("k")
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import os, sys, time\n"
             "fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
             "print('claimed', flush=True)\n"
             "time.sleep(float(sys.argv[2]))\n"
             "os.write(fd, b'succeeded\\nheld')\n"
             "os.close(fd)\n", k, str(2.5 * TTL)],
            stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(holder.stdout.readline(), "claimed\n")
            self.assertEqual(xattr(k, "holder").split()[0], str(holder.pid))
            while holder.poll() is None:
                self.assertTrue(os.path.exists(k), "a held claim expired")
                time.sleep(0.25)
            self.assertEqual(holder.wait(), 0)
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.wait()
            holder.stdout.close()
        self.assertEqual(read(k).split(b"\n", 1)[1], b"held")

    def test_touch_renews_by_path(self):
        k = self.key("k")
        hold(k)  # no open handle: only touch renews it
        first = int(xattr(k, "expires"))
        time.sleep(1.2)
        r = subprocess.run(["touch", k], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        second = int(xattr(k, "expires"))
        self.assertGreater(second, first)
        time.sleep(1.2)  # past the first lease, inside the renewed one
        self.assertTrue(os.path.exists(k), "touch did not renew the lease")
        self.assertEqual(xattr(k, "status"), "in_flight")
        self.assertIn("renew", [e["event"] for e in events(self.wf)])
        # Without further renewal it expires after all.
        self.wait_expired(k)

    def test_policy_change_keeps_live_lease(self):
        k = self.key("k")
        hold(k)
        first = int(xattr(k, "expires"))
        write(os.path.join(self.wf, "policy", "in_flight_ttl"), "3600\n")
        self.assertEqual(int(xattr(k, "expires")), first, "a live lease keeps its expiry")
        os.utime(k)  # the next renewal uses the new ttl
        self.assertGreater(int(xattr(k, "expires")), time.time() + 3000)


if __name__ == "__main__":
    run()

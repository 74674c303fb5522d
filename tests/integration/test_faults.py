"""Faults of the store's environment:

- a full disk (the store on a 2 MiB tmpfs): what cannot be stored fails
  with ENOSPC, at write() or close(), and changes nothing; everything
  acknowledged before and during is kept, across a remount; once space is
  freed, oncefs works again;
- a read-only store (a read-only bind mount; a 0444 file under a daemon
  run by a user; a FUSE `-o ro` mount): refused with a clear message, or
  writes refused with EROFS, and the store file unchanged;
- a busy store (another process holds `BEGIN IMMEDIATE`): a claim waits
  up to `-o busy_timeout`, then fails with EAGAIN and changes nothing, or
  succeeds once the lock is released; claims raced across two mounts
  while the lock is held never both win.

Every tmpfs and bind mount made here is unmounted, even when a test fails.
"""
import atexit
import errno
import hashlib
import multiprocessing
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import ONCEFS, Mount, claim, hold, read, write, errno_of, run, _is_mounted, _unmount  # noqa: E402

ctx = multiprocessing.get_context("fork")
_system_mounts = []


def _umount_system(path):
    for args in (["umount", path], ["umount", "-l", path]):
        if not _is_mounted(path):
            break
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if path in _system_mounts:
        _system_mounts.remove(path)


@atexit.register
def _umount_all_system():
    for p in reversed(list(_system_mounts)):
        _umount_system(p)


def mount_system(test, args, target):
    """mount(8) args onto target, unmounted at cleanup (and at exit)."""
    r = subprocess.run(["mount"] + args + [target], capture_output=True, text=True)
    if r.returncode != 0:
        test.skipTest("mount %s: %s" % (" ".join(args), r.stderr.strip()))
    _system_mounts.append(target)
    test.addCleanup(_umount_system, target)


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_all(path, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    """Write data with as many write() calls as it takes, then close.
    Returns (bytes acknowledged by write(), the errno of the first failing
    write() or None, the errno of close() or None)."""
    fd = os.open(path, flags, 0o644)
    done, werr, cerr = 0, None, None
    try:
        while done < len(data):
            done += os.write(fd, data[done:done + (1 << 20)])
    except OSError as e:
        werr = e.errno
    try:
        os.close(fd)
    except OSError as e:
        cerr = e.errno
    return done, werr, cerr


def fill(path):
    """Fill the filesystem of path's directory with the file path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)


def settled_room(path):
    """Free bytes on path's filesystem, once the daemon has dropped the
    private copies of closed files (RELEASE comes after close returns)."""
    last, same = None, 0
    for _ in range(200):
        vfs = os.statvfs(path)
        room = vfs.f_bavail * vfs.f_frsize
        same = same + 1 if room == last else 0
        if same == 5:
            break
        last = room
        time.sleep(0.02)
    return room


def gen_of(path):
    return int(os.getxattr(path, "user.oncefs.generation"))


class FullDisk(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="oncefs-full-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        mount_system(self, ["-t", "tmpfs", "-o", "size=2m", "tmpfs"], self.dir)
        # The store, its private copies of checkpoints and the daemon's log
        # all live on the small tmpfs.
        self.m = Mount(tmp=self.dir)
        self.m.start()
        self.addCleanup(self.m.cleanup)
        self.wf = self.m.p("wf")
        self.kept = {}      # path -> exact content that must stay
        self.absent = []    # paths that must not exist

    def keep(self, path, content):
        self.kept[path] = content

    def check_kept(self, when):
        for path, content in self.kept.items():
            self.assertEqual(read(path), content, "%s: %s" % (when, path))
        for path in self.absent:
            self.assertFalse(os.path.exists(path), "%s: %s" % (when, path))

    def assertENOSPC(self, what, code):
        self.assertEqual(code, errno.ENOSPC, "%s: expected ENOSPC, got %s" %
                         (what, errno.errorcode.get(code, code)))

    def test_full_disk(self):
        os.mkdir(self.wf)
        k = os.path.join(self.wf, "keys")
        s = os.path.join(self.wf, "steps")
        write(os.path.join(self.wf, "input.fingerprint"), "fp-1\n")  # first: it resets
        self.keep(os.path.join(self.wf, "input.fingerprint"), b"fp-1\n")
        fd = claim(os.path.join(k, "before"))
        os.write(fd, b"succeeded\nkept")
        os.close(fd)
        self.keep(os.path.join(k, "before"), b"succeeded %d\nkept" % gen_of(os.path.join(k, "before")))
        old = b"K" * 100000
        self.assertEqual(write_all(os.path.join(s, "keep"), old), (len(old), None, None))
        self.keep(os.path.join(s, "keep"), old)
        held_path = os.path.join(k, "held")
        held = claim(held_path)
        held_gen = gen_of(held_path)

        filler = os.path.join(self.dir, "filler")
        settled_room(self.dir)
        fill(filler)
        self.assertEqual(os.statvfs(self.dir).f_bavail, 0, "the tmpfs is full")

        # A result too big for the space left: close() says ENOSPC, the
        # claim stays in flight.
        os.write(held, b"succeeded\n" + b"R" * 500000)
        with self.assertRaises(OSError) as cm:
            os.close(held)
        self.assertENOSPC("close() of a finalize", cm.exception.errno)
        self.assertEqual(read(held_path), b"in_flight %d\n" % held_gen)

        # Overwriting a checkpoint: the private copy cannot grow (write()
        # fails), and what close() acknowledges is what was written.
        big = b"N" * 300000
        done, werr, cerr = write_all(os.path.join(s, "keep"), big)
        self.assertENOSPC("write() of a checkpoint", werr)
        if cerr is not None:
            self.assertENOSPC("close() of a checkpoint", cerr)
        elif done > 0:
            self.keep(os.path.join(s, "keep"), big[:done])  # "commits what it wrote"
        if cerr is None and done == 0:
            # Nothing written, nothing committed; the O_TRUNC may empty it
            # at the last close (README), if there is room for that.
            self.assertIn(read(os.path.join(s, "keep")), (old, b""))
            self.keep(os.path.join(s, "keep"), read(os.path.join(s, "keep")))
        self.check_kept("a failed checkpoint write")

        # Everything else, until each kind of change has failed: every
        # failure is ENOSPC, every success is kept.
        failures = {}
        for i in range(40):
            kind = ("claim", "step", "fingerprint", "policy", "mkdir")[i % 5]
            path = None
            try:
                if kind == "claim":
                    path = os.path.join(k, "k%d" % i)
                    fd = claim(path)
                    try:
                        os.write(fd, b"succeeded\n" + b"r" * 20000)
                    finally:
                        os.close(fd)
                    self.keep(path, b"succeeded %d\n" % gen_of(path) + b"r" * 20000)
                elif kind == "step":
                    path = os.path.join(s, "s%d" % i)
                    data = (b"step %d " % i) * 8000
                    done, werr, cerr = write_all(path, data)
                    if werr or cerr:
                        raise OSError(werr or cerr, "step")
                    self.keep(path, data)
                elif kind == "fingerprint":
                    path = os.path.join(self.wf, "input.fingerprint")
                    write(path, "fp-%d\n" % i)
                    self.keep(path, b"fp-%d\n" % i)
                    for p in list(self.kept):   # the reset hides the checkpoints
                        if p.startswith(s + "/"):
                            del self.kept[p]
                            self.absent.append(p)
                elif kind == "policy":
                    path = os.path.join(self.wf, "policy", "in_flight_ttl")
                    write(path, "%d\n" % (1000 + i))
                    self.keep(path, b"%d\n" % (1000 + i))
                else:
                    path = self.m.p("w%d" % i)
                    os.mkdir(path)
                    self.assertTrue(os.path.isdir(path))
            except OSError as e:
                self.assertENOSPC("%s %s" % (kind, path), e.errno)
                failures[kind] = failures.get(kind, 0) + 1
                if kind == "claim" and os.path.exists(path):
                    # The claim itself went through, its finalize did not.
                    self.assertEqual(read(path).split()[0], b"in_flight")
                    self.absent.append(path)  # gone after the release below
                    os.unlink(path)
                elif kind in ("claim", "mkdir"):
                    self.absent.append(path)
        self.assertIn("claim", failures, "a claim on a full disk fails")
        self.assertIn("step", failures, "a checkpoint on a full disk fails")
        self.check_kept("on the full disk")

        # Space again: everything works, nothing acknowledged is lost.
        os.unlink(filler)
        write(held_path, b"succeeded %d\nafter the disk was full" % held_gen, os.O_WRONLY)
        self.keep(held_path, b"succeeded %d\nafter the disk was full" % held_gen)
        fd = claim(os.path.join(k, "after"))
        os.write(fd, b"succeeded\n" + b"A" * 200000)
        os.close(fd)
        self.keep(os.path.join(k, "after"), b"succeeded %d\n" % gen_of(os.path.join(k, "after")) + b"A" * 200000)
        self.assertEqual(write_all(os.path.join(s, "keep"), big), (len(big), None, None))
        self.keep(os.path.join(s, "keep"), big)
        self.check_kept("after freeing space")
        self.m.restart()
        self.check_kept("after a remount")

    def test_rm_on_a_full_disk(self):
        """rm of big checkpoints on a full disk: SQLite needs room in its
        write-ahead log to delete anything, so the rm may fail; then it is
        ENOSPC and changes nothing.  Once the disk has room again, rm works
        and the store reuses the space."""
        os.mkdir(self.wf)
        s = os.path.join(self.wf, "steps")
        k = os.path.join(self.wf, "keys")
        big = {}
        for i in range(4):
            path = os.path.join(s, "big%d" % i)
            data = (b"big %d " % i) * 8000
            self.assertEqual(write_all(path, data), (len(data), None, None))
            big[path] = data
        filler = os.path.join(self.dir, "filler")
        settled_room(self.dir)
        fill(filler)
        for i in range(50):   # until a claim fails: the store is full
            try:
                hold(os.path.join(k, "fill%d" % i))
            except OSError as e:
                self.assertENOSPC("claim on a full store", e.errno)
                self.assertFalse(os.path.exists(os.path.join(k, "fill%d" % i)))
                break
        else:
            self.fail("50 claims fitted on a full disk")
        removed = []
        for path in big:
            code = errno_of(os.unlink, path)
            if code == 0:
                removed.append(path)
            else:
                self.assertENOSPC("rm of a checkpoint on a full disk", code)
        for path, data in big.items():
            if path in removed:
                self.assertFalse(os.path.exists(path))
            else:
                self.assertEqual(read(path), data, "a failed rm changes nothing")
        os.unlink(filler)
        for path in big:
            if path not in removed:
                os.unlink(path)
        # The freed pages take new results, with the disk full again.
        fill(filler)
        os.unlink(filler)
        fd = claim(os.path.join(k, "after-rm"))
        os.write(fd, b"succeeded\nfits again")
        os.close(fd)
        self.assertEqual(read(os.path.join(k, "after-rm")).split(b"\n", 1)[1], b"fits again")
        self.m.restart()
        self.assertEqual(read(os.path.join(k, "after-rm")).split(b"\n", 1)[1], b"fits again")
        self.assertEqual(os.listdir(s), [])


    def test_rm_of_a_big_checkpoint_with_little_room_left(self):
        """The way out of a full disk is to delete big checkpoints, so rm
        of one must not need room in proportion to its size: with 160 KiB
        left, rm of a 600 KB checkpoint succeeds, and claims work after."""
        os.mkdir(self.wf)
        s = os.path.join(self.wf, "steps")
        k = os.path.join(self.wf, "keys")
        data = bytes(range(256)) * 2400
        self.assertEqual(write_all(os.path.join(s, "big"), data), (len(data), None, None))
        room = settled_room(self.dir) - 160 * 1024
        if room <= 0:
            self.skipTest("not enough room on the tmpfs to set up")
        fd = os.open(os.path.join(self.dir, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"\0" * room)
        finally:
            os.close(fd)
        code = errno_of(os.unlink, os.path.join(s, "big"))
        self.assertEqual(code, 0, "rm steps/big (600 KB) with 160 KiB left: %s (SQLite's "
                         "secure_delete rewrites every page of what is deleted into the WAL)" %
                         errno.errorcode.get(code, code))
        self.assertFalse(os.path.exists(os.path.join(s, "big")))
        fd = claim(os.path.join(k, "after"))
        os.write(fd, b"succeeded\n")
        os.close(fd)


def test_user():
    """A user other than root to run a daemon as, or None."""
    for name in ("oncefs-test", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    return None


class ReadOnlyStore(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oncefs-ro-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.store = os.path.join(self.tmp, "state.db")
        with Mount(store=self.store, tmp=self.tmp) as m:
            os.mkdir(m.p("wf"))
            fd = claim(m.p("wf", "keys", "done"))
            os.write(fd, b"succeeded\nresult")
            os.close(fd)
        self.before = digest(self.store)
        self.mtime = os.stat(self.store).st_mtime_ns
        self.mnt = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self.addCleanup(lambda: _is_mounted(self.mnt) and _unmount(self.mnt))

    def assertUnchanged(self):
        self.assertEqual(digest(self.store), self.before, "the store file was modified")
        self.assertEqual(os.stat(self.store).st_mtime_ns, self.mtime, "the store file was written")

    def assertRefusedClearly(self, r):
        self.assertNotEqual(r.returncode, 0, "the mount must fail: %r" % (r,))
        self.assertFalse(_is_mounted(self.mnt))
        self.assertIn("read-only", r.stderr.lower(),
                      "the refusal names the reason: %r" % r.stderr)
        self.assertNotIn("corrupt", r.stderr.lower(), "a healthy store is not called corrupt")

    def test_read_only_bind_mount(self):
        ro = tempfile.mkdtemp(prefix="ro-", dir=self.tmp)
        mount_system(self, ["--bind", "-o", "ro", self.tmp], ro)
        if os.access(ro, os.W_OK) and not self._is_ro(ro):
            self.skipTest("the bind mount is not read-only")
        r = subprocess.run([ONCEFS, os.path.join(ro, "state.db"), self.mnt],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertRefusedClearly(r)
        self.assertUnchanged()

    @staticmethod
    def _is_ro(path):
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)

    def test_read_only_file_as_a_user(self):
        u = test_user()
        if u is None:
            self.skipTest("no user to run the daemon as")
        os.chmod(self.store, 0o444)
        os.chown(self.tmp, u.pw_uid, u.pw_gid)   # the user may create files beside it
        os.chown(self.mnt, u.pw_uid, u.pw_gid)
        self.before = digest(self.store)
        self.mtime = os.stat(self.store).st_mtime_ns
        r = subprocess.run(["setpriv", "--reuid=%d" % u.pw_uid, "--regid=%d" % u.pw_gid, "--clear-groups",
                            ONCEFS, self.store, self.mnt],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertRefusedClearly(r)
        self.assertUnchanged()

    def test_fuse_ro_mount_refuses_writes(self):
        with Mount(store=self.store, options=("ro",), tmp=self.tmp) as m:
            k = m.p("wf", "keys")
            self.assertEqual(read(os.path.join(k, "done")).split(b"\n", 1)[1], b"result")
            self.assertEqual(errno_of(claim, os.path.join(k, "new")), errno.EROFS)
            self.assertEqual(errno_of(os.unlink, os.path.join(k, "done")), errno.EROFS)
            self.assertEqual(errno_of(os.mkdir, m.p("w2")), errno.EROFS)
            self.assertEqual(errno_of(write, m.p("wf", "input.fingerprint"), "x\n"), errno.EROFS)
            self.assertEqual(errno_of(os.open, m.p("wf", "steps", "s"), os.O_WRONLY | os.O_CREAT), errno.EROFS)
        self.assertUnchanged()


# ---- a busy store ------------------------------------------------------------

LOCKER = r"""
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()            # hold the write lock until told
c.execute("ROLLBACK")
c.close()
"""


class Locker:
    """Another process holding the store's write lock (BEGIN IMMEDIATE)."""

    def __init__(self, store):
        self.p = subprocess.Popen([sys.executable, "-c", LOCKER, store], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if line.strip() != "locked":
            self.p.kill()
            self.p.wait()
            self.close_pipes()
            raise RuntimeError("the locker did not get the lock: %r" % line)

    def close_pipes(self):
        for f in (self.p.stdin, self.p.stdout):
            try:
                f.close()
            except OSError:
                pass

    def release(self):
        # The lock can be free from the moment the newline is sent: that is
        # the earliest a waiting claim may finish.
        self.released = time.monotonic()
        if self.p.poll() is None:
            self.p.stdin.write("\n")
            self.p.stdin.flush()
            self.p.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            self.release()
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.close_pipes()
        return False


def claimer(path, start, results):
    """Wait for start, claim path, report (outcome, monotonic end)."""
    start.wait(60)
    try:
        fd = claim(path)
    except OSError as e:
        results.put((errno.errorcode.get(e.errno, e.errno), time.monotonic()))
        return
    try:
        os.write(fd, b"succeeded\n%d" % os.getpid())
        os.close(fd)
        results.put(("won", time.monotonic()))
    except OSError as e:
        results.put(("won, finalize %s" % errno.errorcode.get(e.errno, e.errno), time.monotonic()))


class BusyStore(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oncefs-busy-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.store = os.path.join(self.tmp, "state.db")

    def mount(self, timeout_ms):
        m = Mount(store=self.store, tmp=self.tmp, options=("create", "busy_timeout=%d" % timeout_ms))
        m.start()
        self.addCleanup(m.cleanup)
        return m

    def race(self, paths):
        start = ctx.Event()
        results = ctx.Queue()
        procs = [ctx.Process(target=claimer, args=(p, start, results)) for p in paths]
        for p in procs:
            p.start()
        self.addCleanup(lambda: [p.kill() for p in procs if p.is_alive()])
        return start, results, procs

    def collect(self, results, procs, n):
        out = [results.get(timeout=120) for _ in range(n)]
        for p in procs:
            p.join(timeout=30)
        return out

    def test_claim_fails_with_eagain_after_the_timeout(self):
        m = self.mount(300)
        os.mkdir(m.p("wf"))
        fd = claim(m.p("wf", "keys", "existing"))
        os.write(fd, b"succeeded\nreadable while locked")
        os.close(fd)
        key = m.p("wf", "keys", "k")
        with Locker(self.store) as lock:
            t = time.monotonic()
            self.assertEqual(errno_of(claim, key), errno.EAGAIN)
            self.assertGreaterEqual(time.monotonic() - t, 0.2, "the claim waited for the lock first")
            self.assertEqual(errno_of(os.mkdir, m.p("w2")), errno.EAGAIN)
            # Readers do not need the write lock.
            self.assertEqual(read(m.p("wf", "keys", "existing")).split(b"\n", 1)[1],
                             b"readable while locked")
            self.assertFalse(os.path.exists(key), "a claim that failed changed nothing")
            lock.release()
        self.assertFalse(os.path.exists(key))
        self.assertFalse(os.path.exists(m.p("w2")))
        hold(key)   # works again
        self.assertEqual(read(key).split()[0], b"in_flight")

    def test_claim_waits_for_the_lock(self):
        m = self.mount(60000)
        os.mkdir(m.p("wf"))
        key = m.p("wf", "keys", "k")
        with Locker(self.store) as lock:
            start, results, procs = self.race([key])
            start.set()
            time.sleep(1.0)
            self.assertTrue(results.empty(), "the claim waits while the lock is held")
            lock.release()
            [(outcome, end)] = self.collect(results, procs, 1)
        self.assertEqual(outcome, "won")
        self.assertGreaterEqual(end, lock.released)
        self.assertEqual(read(key).split()[0], b"succeeded")

    def test_readers_do_not_wait_for_a_locked_store(self):
        """Another process holds the store's write lock: reading a key's
        result or a checkpoint does not wait for it (the reader's pin is
        written later), while a claim waits up to busy_timeout."""
        m = self.mount(60000)
        os.mkdir(m.p("wf"))
        fd = claim(m.p("wf", "keys", "done"))
        os.write(fd, b"succeeded\nresult")
        os.close(fd)
        write(m.p("wf", "steps", "s"), b"checkpoint", os.O_WRONLY | os.O_CREAT)
        time.sleep(11)      # the pins of those writes go idle and are dropped
        with Locker(self.store):
            t = time.monotonic()
            self.assertEqual(read(m.p("wf", "keys", "done")).split(b"\n", 1)[1], b"result")
            self.assertEqual(read(m.p("wf", "steps", "s")), b"checkpoint")
            waited = time.monotonic() - t
        # A write would have waited the whole 60 s; a read does not wait.
        self.assertLess(waited, 30, "a read waited for another process's write lock")

    def test_two_mounts_race_while_locked(self):
        """Claimers on two mounts of one store, started while another
        process holds the lock: with a long timeout exactly one wins after
        the release; with a short one, each fails with EAGAIN or one wins,
        never two."""
        for timeout_ms, locked_s in ((60000, 1.5), (300, 2.0)):
            with self.subTest(busy_timeout=timeout_ms):
                m1, m2 = self.mount(timeout_ms), self.mount(timeout_ms)
                wf = "wf%d" % timeout_ms
                os.mkdir(m1.p(wf))
                paths = [mm.p(wf, "keys", "k") for mm in (m1, m2, m1, m2)]
                with Locker(self.store) as lock:
                    start, results, procs = self.race(paths)
                    start.set()
                    time.sleep(locked_s)
                    lock.release()
                    out = self.collect(results, procs, len(paths))
                outcomes = sorted(o for o, _ in out)
                wins = outcomes.count("won")
                self.assertLessEqual(wins, 1, "two winners: %r" % outcomes)
                if timeout_ms > 10000:
                    self.assertEqual(wins, 1, outcomes)
                    self.assertEqual(outcomes.count("EEXIST"), len(paths) - 1, outcomes)
                else:
                    for o in outcomes:
                        self.assertIn(o, ("won", "EEXIST", "EAGAIN"), outcomes)
                if wins:
                    state = read(paths[0])
                    self.assertEqual(read(paths[1]), state, "both mounts see one key")
                    self.assertEqual(state.split()[0], b"succeeded")
                else:
                    self.assertFalse(os.path.exists(paths[0]), "claims that failed changed nothing")
                    self.assertFalse(os.path.exists(paths[1]))
                    hold(paths[0])   # the key is free
                    self.assertEqual(errno_of(claim, paths[1]), errno.EEXIST)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("these tests mount tmpfs and bind mounts: they need root; skipping")
        sys.exit(77)
    run()

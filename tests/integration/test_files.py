"""Checkpoints behave as files: a writer sees its own size, a new file
exists only once committed, times round-trip, odd rename flags are refused,
and mkdir says 0 when it created the workflow."""
import ctypes
import errno
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import MountedTest, Mount, read, run, write  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
AT_FDCWD = -100


def renameat2(a, b, flags):
    libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class Files(MountedTest):
    def step(self, name):
        return os.path.join(self.wf, "steps", name)

    def test_a_writer_sees_its_own_size(self):
        write(self.step("s"), b"abc", os.O_WRONLY | os.O_CREAT)
        fd = os.open(self.step("s"), os.O_RDWR)
        try:
            os.ftruncate(fd, 100000)
            self.assertEqual(os.fstat(fd).st_size, 100000)
            self.assertEqual(os.lseek(fd, 0, os.SEEK_END), 100000)
            os.pwrite(fd, b"xyz", 200000)
            self.assertEqual(os.fstat(fd).st_size, 200003)
            # copy_file_range within the file copies what the copy holds.
            n = os.copy_file_range(fd, fd, 3, 0, 300000)
            self.assertEqual(n, 3)
            self.assertEqual(os.pread(fd, 3, 300000), b"abc")
            # stat() by path from the writing process sees its copy too.
            self.assertEqual(os.stat(self.step("s")).st_size, 300003)
        finally:
            os.close(fd)
        self.assertEqual(os.stat(self.step("s")).st_size, 300003)

    def test_a_new_checkpoint_exists_once_committed(self):
        # Another process, started first: a fork after the open would
        # close a copy of the fd, and that close commits (FLUSH).
        other = subprocess.Popen(["sh", "-c", 'read x; [ -e "$1" ] && echo yes || echo no', "sh",
                                  self.step("new")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        fd = os.open(self.step("new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"half")
            self.assertEqual(os.fstat(fd).st_size, 4)
            self.assertEqual(other.communicate("go\n")[0].strip(), "no", "seen before its commit")
            self.assertNotIn("new", os.listdir(os.path.join(self.wf, "steps")))
            os.fsync(fd)
            self.assertEqual(read(self.step("new")), b"half")
        finally:
            os.close(fd)
        # touch and ": >" make an empty one at their close.
        subprocess.run(["touch", self.step("done")], check=True)
        self.assertEqual(os.stat(self.step("done")).st_size, 0)
        # ": >" (O_TRUNC, nothing written) commits at the release of its
        # last copy, which the kernel sends just after the close returned.
        subprocess.run(["bash", "-c", ': > "$1"', "bash", self.step("marker")], check=True)
        deadline = time.monotonic() + 2
        while not os.path.exists(self.step("marker")) and time.monotonic() < deadline:
            time.sleep(0.002)
        self.assertTrue(os.path.exists(self.step("marker")))

    def kill_writer(self, flags, data):
        """A child opens steps/x with flags, writes data, and is SIGKILLed
        while it holds the file; returns once it is reaped."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:        # the child never returns into the test runner
                os.close(r)
                fd = os.open(self.step("x"), flags, 0o644)
                if data:
                    os.write(fd, data)
                os.write(w, b"1")
                time.sleep(60)
            finally:
                os._exit(0)
        os.close(w)
        self.assertEqual(os.read(r, 1), b"1")
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def test_a_killed_first_writer_leaves_nothing(self):
        self.kill_writer(os.O_WRONLY | os.O_CREAT, b"partial")
        self.assertFalse(os.path.exists(self.step("x")), "a killed writer left a checkpoint")
        self.assertEqual(os.listdir(os.path.join(self.wf, "steps")), [])

    def test_a_killed_truncating_writer_leaves_nothing(self):
        """`cmd > steps/x` whose cmd is killed before it writes: the open had
        O_TRUNC and nothing was written, which a plain ": >" commits as an
        empty checkpoint at its release; a killed process commits nothing,
        so that [ -e steps/x ] never skips a step that has no data."""
        for existing in (False, True):
            if existing:
                write(self.step("x"), b"old", os.O_WRONLY | os.O_CREAT)
            self.kill_writer(os.O_WRONLY | os.O_CREAT | os.O_TRUNC, b"")
            time.sleep(0.2)     # the release comes after the exit
            if existing:
                self.assertEqual(read(self.step("x")), b"old", "a killed writer emptied it")
            else:
                self.assertFalse(os.path.exists(self.step("x")), "a killed writer left a checkpoint")
        # The one that exits without writing (": >") still makes it empty.
        subprocess.run(["bash", "-c", ': > "$1"', "bash", self.step("y")], check=True)
        deadline = time.monotonic() + 2
        while not os.path.exists(self.step("y")) and time.monotonic() < deadline:
            time.sleep(0.002)
        self.assertEqual(read(self.step("y")), b"")
        ev = [e for e in self.events() if e.get("step") == "y"]
        self.assertNotEqual(ev[-1]["pid"], 0, "the release's commit is the writer's, not pid 0")

    def test_times_round_trip(self):
        write(self.step("t"), b"t", os.O_WRONLY | os.O_CREAT)
        os.utime(self.step("t"), ns=(1_000_000_123, 2_000_000_456))
        st = os.stat(self.step("t"))
        self.assertEqual((st.st_atime_ns, st.st_mtime_ns), (1_000_000_123, 2_000_000_456))
        # Before 1970: a negative time with its nanoseconds in range.
        os.utime(self.step("t"), ns=(-1_500_000_000, -1_500_000_000))
        self.assertEqual(os.stat(self.step("t")).st_mtime_ns, -1_500_000_000)
        r = subprocess.run(["touch", "-d", "1960-01-01 00:00:00.25 UTC", self.step("t")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.stat(self.step("t")).st_mtime_ns, -315619200 * 10**9 + 250_000_000)
        # Past what 64-bit nanoseconds hold: refused, and nothing changes.
        r = subprocess.run(["touch", "-d", "2300-01-01", self.step("t")], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(os.stat(self.step("t")).st_mtime_ns, -315619200 * 10**9 + 250_000_000)
        with self.assertRaises(OSError) as cm:
            os.utime(self.wf, (0, 2**62))
        self.assertIn(cm.exception.errno, (errno.EOVERFLOW, errno.EINVAL))

    def test_rename_flags(self):
        write(self.step("a"), b"a", os.O_WRONLY | os.O_CREAT)
        write(self.step("b"), b"b", os.O_WRONLY | os.O_CREAT)
        for flags, to in ((RENAME_WHITEOUT, "c"), (RENAME_EXCHANGE, "b"),
                          (RENAME_WHITEOUT | RENAME_NOREPLACE, "c")):
            with self.assertRaises(OSError) as cm:
                renameat2(self.step("a"), self.step(to), flags)
            self.assertEqual(cm.exception.errno, errno.EINVAL, flags)
        self.assertEqual(sorted(os.listdir(os.path.join(self.wf, "steps"))), ["a", "b"])
        with self.assertRaises(FileExistsError):
            renameat2(self.step("a"), self.step("b"), RENAME_NOREPLACE)
        renameat2(self.step("a"), self.step("c"), RENAME_NOREPLACE)
        self.assertEqual(read(self.step("c")), b"a")

    def test_shared_mmap_is_refused(self):
        write(self.step("m"), b"m" * 4096, os.O_WRONLY | os.O_CREAT)
        with open(self.step("m"), "r+b") as f:
            with self.assertRaises(OSError) as cm:
                mmap.mmap(f.fileno(), 4096, mmap.MAP_SHARED)
            self.assertEqual(cm.exception.errno, errno.ENODEV)

    def test_mkdir_that_creates_says_so(self):
        """Another mount removes workflows as fast as this one makes them:
        every mkdir that created one returns 0 (never ENOENT)."""
        other = Mount(store=self.m.store, options=[], tmp=self.m.tmp).start()
        stop = time.monotonic() + 3
        bad = []

        def remover():
            while time.monotonic() < stop:
                try:
                    os.rmdir(other.p("race"))
                except OSError:
                    pass

        t = threading.Thread(target=remover)
        t.start()
        made = 0
        try:
            while time.monotonic() < stop:
                try:
                    os.mkdir(self.m.p("race"))
                    made += 1
                except FileExistsError:
                    pass
                except OSError as e:
                    bad.append(e.errno)
        finally:
            t.join()
            other.stop()
        self.assertGreater(made, 0)
        self.assertEqual(bad, [], "mkdir failed although it created the workflow")


if __name__ == "__main__":
    run()

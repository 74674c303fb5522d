"""Held readers cost the daemon nothing that grows: no fd, no connection,
no copy of the content, no snapshot that keeps the WAL from shrinking.

A user who may only read opens a checkpoint and a key with a 1 MB result
thousands of times and holds them, while the owner rewrites the
checkpoint; the daemon's fds, its memory and the WAL must stay bounded,
the owner's reads and writes must keep working, and each held reader must
still read the version it opened.  (scripts/bench-readers prints the same
figures for 10,000 readers.)"""
import os
import resource
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import sqlite_only, Mount, claim, read, run, write  # noqa: E402

NOBODY = 65534
READERS = int(os.environ.get("ONCEFS_READERS", "2000"))


def daemon_fds(m):
    return len(os.listdir("/proc/%d/fd" % m.proc.pid))


def daemon_rss_kb(m):
    with open("/proc/%d/status" % m.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hold_readers(paths, count):
    """A child, as an unprivileged user, opens each path count times and
    holds the fds until killed.  Returns (pid, the first bytes each path's
    first fd read, as a dict) once all are open."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fds = {p: [os.open(p, os.O_RDONLY) for _ in range(count)] for p in paths}
            os.write(w, b"open\n")
            # Hold them; read each path's first fd when asked (SIGUSR1).
            def report(*_):
                for p in paths:
                    data = os.pread(fds[p][0], 1 << 21, 0)
                    os.write(w, ("%s %d %d\n" % (p, len(data), data[-1] if data else -1)).encode())
                os.write(w, b"done\n")
            signal.signal(signal.SIGUSR1, report)
            while True:
                signal.pause()
        except BaseException as e:  # noqa: B902 - the child reports and exits
            os.write(w, ("error %r\n" % (e,)).encode())
        finally:
            os._exit(code)
    os.close(w)
    f = os.fdopen(r, "rb", buffering=0)
    line = f.readline()
    if line != b"open\n":
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("the reader failed: %r" % line)
    return pid, f


def ask(pid, f):
    os.kill(pid, signal.SIGUSR1)
    out = {}
    while True:
        line = f.readline().decode()
        if line == "done\n" or not line:
            return out
        path, n, last = line.split()
        out[path] = (int(n), int(last))
@sqlite_only("its write-ahead log is a file beside the store")


class HeldReaders(unittest.TestCase):
    def test_held_readers_cost_nothing_that_grows(self):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        with Mount(options=("create", "allow_other")) as m:
            os.chmod(m.tmp, 0o755)	# the reader must reach the mount
            os.mkdir(m.p("wf"))
            os.chmod(m.p("wf"), 0o755)
            step = m.p("wf", "steps", "readme")
            write(step, b"a" * (1 << 20), os.O_WRONLY | os.O_CREAT)
            key = m.p("wf", "keys", "k")
            fd = claim(key)
            os.write(fd, b"succeeded\n" + b"r" * (1 << 20))
            os.close(fd)
            key_len = len(read(key))
            read(step)
            time.sleep(0.2)
            fds0, rss0 = daemon_fds(m), daemon_rss_kb(m)

            pid, f = hold_readers([step, key], READERS)
            try:
                fds1, rss1 = daemon_fds(m), daemon_rss_kb(m)
                # The owner rewrites the checkpoint while they are held.
                for i in range(60):
                    write(step, bytes([ord("b") + i % 20]) * (1 << 20), os.O_WRONLY | os.O_TRUNC)
                wal = os.path.getsize(m.store + "-wal")
                # ... resets it, and the purge runs.
                write(m.p("wf", "input.fingerprint"), b"v2\n", os.O_WRONLY | os.O_TRUNC)
                time.sleep(1.5)
                self.assertEqual(read(m.p("wf", "keys", "k"))[:10], b"succeeded ")
                write(m.p("wf", "steps", "new"), b"x", os.O_WRONLY | os.O_CREAT)
                self.assertEqual(read(m.p("wf", "steps", "new")), b"x")
                seen = ask(pid, f)
            finally:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                f.close()
            time.sleep(0.2)
            fds2 = daemon_fds(m)
            print("\n%d readers each of a 1 MiB checkpoint and a 1 MiB key: daemon fds %d -> %d "
                  "(after: %d), RSS %d -> %d KiB, WAL %.1f MiB after 60 MiB of rewrites"
                  % (READERS, fds0, fds1, fds2, rss0, rss1, wal / 1048576.0))
            # What each held reader reads is the version it opened.
            self.assertEqual(seen[step], (1 << 20, ord("a")))
            self.assertEqual(seen[key], (key_len, ord("r")))
            self.assertLess(fds1 - fds0, 32, "held readers took daemon fds")
            self.assertLess(fds2 - fds0, 32, "the daemon kept fds after the readers left")
            self.assertLess(rss1 - rss0, 64 * 1024, "held readers took daemon memory")
            self.assertLess(wal, 32 << 20, "a held reader grew the WAL")

    def test_an_idle_mount_gives_back_a_long_wal(self):
        """A snapshot held outside the daemon (sqlite3 on the store) stops
        the checkpoints, so rewrites grow the WAL.  Commits never shrink
        it (that would hold the lock while the file system frees blocks);
        once the snapshot ends and the mount is idle, its room comes back."""
        import sqlite3
        with Mount() as m:
            os.mkdir(m.p("wf"))
            step = m.p("wf", "steps", "s")
            write(step, b"a", os.O_WRONLY | os.O_CREAT)
            outsider = sqlite3.connect(m.store, isolation_level=None)
            outsider.execute("BEGIN")
            outsider.execute("SELECT count(*) FROM keys").fetchone()
            for i in range(24):
                write(step, bytes([ord("b") + i % 20]) * (1 << 20), os.O_WRONLY | os.O_TRUNC)
            grown = os.path.getsize(m.store + "-wal")
            self.assertGreater(grown, 20 << 20, "the outside snapshot did not hold the WAL")
            outsider.execute("COMMIT")
            outsider.close()
            deadline = time.monotonic() + 10
            while os.path.getsize(m.store + "-wal") > 16 << 20 and time.monotonic() < deadline:
                time.sleep(0.2)
            print("\nWAL %.1f MiB while held, %.1f MiB once idle"
                  % (grown / 1048576.0, os.path.getsize(m.store + "-wal") / 1048576.0))
            self.assertLessEqual(os.path.getsize(m.store + "-wal"), 16 << 20)
            self.assertEqual(read(step), bytes([ord("b") + 23 % 20]) * (1 << 20))


if __name__ == "__main__":
    run()

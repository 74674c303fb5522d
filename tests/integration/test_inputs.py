"""One input at a time per workflow.

An open input.fingerprint through which a value was written holds that
value: while it stays open, writing another value is EBUSY, on this mount
and every other one sharing the store, whatever on_input_change says.  So
a run that holds its input for its whole length can never commit a
checkpoint under another run's input.  The hold ends when the file is
closed (the holder exited, crashed or was killed: the kernel closes its
files), or, when its mount died, within the mount's lease (-o lease).
"""
import errno
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import sqlite_only, Mount, MountedTest, read, write  # noqa: E402

# A run as the README writes it: claim the run's key, hold the input for
# the whole run (fd 4), then the steps, each skipped when it exists.
RUN = r"""
set -eC
cd "$1"; fp=$2
exec 3> keys/run-$fp || { cat keys/run-$fp; exit 0; }
# Another run holds another input: wait for it to end.
until { exec 4>| input.fingerprint && echo "$fp" >&4; } 2>/dev/null; do
    exec 4>&-; echo busy >&2; sleep 0.05
done
[ -e steps/extract ] || { echo "extract of $fp" >| steps/extract.part; mv steps/extract.part steps/extract; }
sleep "$3"
[ -e steps/transform ] || { { cat steps/extract; echo transformed; } >| steps/transform.part; mv steps/transform.part steps/transform; }
{ echo succeeded; cat steps/transform; } >&3
"""


def start_run(wf, fp, pause):
    return subprocess.Popen(["bash", "-c", RUN, "run", wf, fp, str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_when_free(path, data, limit=2.0):
    """write, retrying EBUSY for a moment: a hold ends at the release the
    kernel sends just after the holder's close() returned."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return write(path, data)
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.002)


class OneInput(MountedTest):
    def fp(self):
        return os.path.join(self.wf, "input.fingerprint")

    def test_two_concurrent_runs_never_mix(self):
        a = start_run(self.wf, "AAAA", 0.5)
        # A holds its input once its first checkpoint is there.
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(self.wf, "steps", "extract")):
            self.assertLess(time.monotonic(), deadline, a.stderr.read() if a.poll() else "")
            time.sleep(0.01)
        b = start_run(self.wf, "BBBB", 0)
        out_a, err_a = a.communicate(timeout=30)
        out_b, err_b = b.communicate(timeout=30)
        self.assertEqual((a.returncode, b.returncode), (0, 0), err_a + err_b)
        self.assertIn("busy", err_b)        # B waited for A's input
        self.assertEqual(read(self.key("run-AAAA")).split(b"\n", 1)[1],
                         b"extract of AAAA\ntransformed\n")
        self.assertEqual(read(self.key("run-BBBB")).split(b"\n", 1)[1],
                         b"extract of BBBB\ntransformed\n")
        self.assertEqual(read(self.fp()), b"BBBB\n")

    def test_a_held_value_refuses_another(self):
        h = open(self.fp(), "w", buffering=1)   # line buffered: one write()
        h.write("one\n")                        # set now, and held
        self.assertEqual(read(self.fp()), b"one\n")
        self.assertErrno(errno.EBUSY, write, self.fp(), b"two\n")
        self.assertErrno(errno.EBUSY, os.unlink, self.fp())
        # The same value is a resume: it changes nothing, and holds too.
        write(self.fp(), b"one\n")
        second = open(self.fp(), "w", buffering=1)
        second.write("one\n")
        h.close()
        self.assertErrno(errno.EBUSY, write, self.fp(), b"two\n")
        second.close()
        write_when_free(self.fp(), b"two\n")
        self.assertEqual(read(self.fp()), b"two\n")
        values = [e["value"] for e in self.events() if e["event"] == "fingerprint"]
        self.assertEqual(values, ["one", "two"])

    def test_a_killed_holder_lets_go(self):
        p = subprocess.Popen([sys.executable, "-c",
                              "import sys; f = open(sys.argv[1], 'w', buffering=1); "
                              "f.write('held\\n'); print('ok', flush=True); sys.stdin.read()",
                              self.fp()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.assertEqual(p.stdout.readline(), "ok\n")
        self.assertErrno(errno.EBUSY, write, self.fp(), b"other\n")
        p.kill()
        p.communicate()
        deadline = time.monotonic() + 2
        while True:
            try:
                write(self.fp(), b"other\n")
                break
            except OSError as e:
                self.assertEqual(e.errno, errno.EBUSY)
                self.assertLess(time.monotonic(), deadline, "the hold outlived its holder")
                time.sleep(0.005)
        self.assertEqual(read(self.fp()), b"other\n")

    def test_a_value_without_newline_is_set_at_close(self):
        # No line: taken whole at the flush, as before; held until release.
        with open(self.fp(), "w") as f:
            f.write("partial")
            self.assertEqual(read(self.fp()), b"")
        self.assertEqual(read(self.fp()), b"partial\n")

    def test_bad_values_take_no_hold(self):
        f = os.open(self.fp(), os.O_WRONLY)
        try:
            self.assertErrno(errno.EINVAL, os.write, f, b"bad\x01\n")
            write(self.fp(), b"fine\n")
        finally:
            os.close(f)
@sqlite_only("locks the store file from another process")


class ReleaseRetried(MountedTest):
    options = ("create", "busy_timeout=200")

    def test_a_hold_whose_release_failed_is_released_later(self):
        """The store is locked by another process when the holder closes:
        the release fails there, and the renewer deletes the hold on its
        next round instead of renewing it for ever."""
        fp = os.path.join(self.wf, "input.fingerprint")
        h = open(fp, "w", buffering=1)
        h.write("A\n")
        locker = subprocess.Popen([sys.executable, "-c",
                                   "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], "
                                   "isolation_level=None); db.execute('BEGIN IMMEDIATE'); "
                                   "print('locked', flush=True); time.sleep(1.5); db.execute('ROLLBACK')",
                                   self.m.store], stdout=subprocess.PIPE, text=True)
        self.assertEqual(locker.stdout.readline(), "locked\n")
        h.close()                       # its release meets the lock
        locker.wait()
        write_when_free(fp, b"B\n", limit=5)
        self.assertEqual(read(fp), b"B\n")

    def test_the_holder_changes_its_own_input(self):
        fp = os.path.join(self.wf, "input.fingerprint")
        fd = os.open(fp, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b"first\n")
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"second\n", 0)          # through the holding file
            self.assertEqual(read(fp), b"second\n")
            self.assertEqual(errno_of(write, fp, b"third\n"), errno.EBUSY)
        finally:
            os.close(fd)


class AcrossMounts(unittest.TestCase):
    def test_a_hold_holds_on_every_mount_and_lapses_with_its_mount(self):
        a = Mount(options=("create", "lease=2")).start()
        self.addCleanup(a.cleanup)
        b = Mount(store=a.store, tmp=a.tmp, options=("lease=2",)).start()
        self.addCleanup(b.cleanup)
        os.mkdir(a.p("wf"))
        fa, fb = a.p("wf", "input.fingerprint"), b.p("wf", "input.fingerprint")
        h = open(fa, "w", buffering=1)
        h.write("on-a\n")
        self.assertEqual(errno_of(write, fb, b"on-b\n"), errno.EBUSY)
        h.close()
        write_when_free(fb, b"on-b\n")
        self.assertEqual(read(fa), b"on-b\n")
        # Held from b, whose daemon then dies: a is free within the lease.
        h = open(fb, "w", buffering=1)
        h.write("b-again\n")
        self.assertEqual(errno_of(write, fa, b"on-a\n"), errno.EBUSY)
        b.kill9()
        start = time.monotonic()
        while errno_of(write, fa, b"on-a\n") == errno.EBUSY:
            self.assertLess(time.monotonic() - start, 10, "the dead mount's hold never lapsed")
            time.sleep(0.05)
        took = time.monotonic() - start
        print("\nthe hold of a killed mount lapsed after %.2f s (lease 2 s)" % took,
              file=sys.stderr)
        self.assertLess(took, 4)
        self.assertEqual(read(fa), b"on-a\n")
        try:
            h.close()
        except OSError:
            pass


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


if __name__ == "__main__":
    from harness import run
    run()

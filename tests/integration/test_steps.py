"""Checkpoints and input fingerprints over a real mount."""
import errno
import os
import signal
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from harness import sqlite_only, Mount, MountedTest, read, write, sh, run  # noqa: E402


class Steps(MountedTest):
    def step(self, name):
        return os.path.join(self.wf, "steps", name)

    def fp(self, value):
        write(os.path.join(self.wf, "input.fingerprint"), value)

    def policy(self, name, value):
        write(os.path.join(self.wf, "policy", name), value)

    def test_write_read_stat_ls(self):
        write(self.step("a"), b"hello\n", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        self.assertEqual(read(self.step("a")), b"hello\n")
        self.assertEqual(os.stat(self.step("a")).st_size, 6)
        self.assertEqual(sorted(os.listdir(os.path.join(self.wf, "steps"))), ["a"])
        r = sh("ls -l steps/a", cwd=self.wf)
        self.assertIn(" 6 ", r.stdout)

    def test_private_copy_append_and_no_trunc(self):
        write(self.step("a"), b"0123456789", os.O_WRONLY | os.O_CREAT)
        write(self.step("a"), b"AB", os.O_WRONLY)  # overwrite in place, no O_TRUNC
        self.assertEqual(read(self.step("a")), b"AB23456789")
        write(self.step("a"), b"!", os.O_WRONLY | os.O_APPEND)
        self.assertEqual(read(self.step("a")), b"AB23456789!")

    def test_truncate_rm_rename(self):
        write(self.step("a"), b"0123456789", os.O_WRONLY | os.O_CREAT)
        os.truncate(self.step("a"), 4)
        self.assertEqual(read(self.step("a")), b"0123")
        os.rename(self.step("a"), self.step("b"))
        self.assertFalse(os.path.exists(self.step("a")))
        self.assertEqual(read(self.step("b")), b"0123")
        write(self.step("c"), b"c", os.O_WRONLY | os.O_CREAT)
        os.rename(self.step("c"), self.step("b"))  # replaces
        self.assertEqual(read(self.step("b")), b"c")
        os.unlink(self.step("b"))
        self.assertEqual(os.listdir(os.path.join(self.wf, "steps")), [])
        self.assertErrno(errno.ENOENT, os.unlink, self.step("b"))

    def test_rename_noreplace_and_across(self):
        write(self.step("a"), b"a", os.O_WRONLY | os.O_CREAT)
        write(self.step("b"), b"b", os.O_WRONLY | os.O_CREAT)
        r = sh("mv --no-clobber -T steps/a steps/b; cat steps/b", cwd=self.wf)
        self.assertEqual(r.stdout, "b")
        os.mkdir(self.m.p("other"))
        self.assertErrno(errno.EPERM, os.rename, self.step("a"), self.m.p("other", "steps", "a"))
        self.assertErrno(errno.EPERM, os.rename, self.step("a"), os.path.join(self.wf, "keys", "a"))

    def test_part_idiom(self):
        script = """
        set -e
        [ -e steps/x ] || { printf 'x-result' > steps/x.part && mv steps/x.part steps/x; }
        [ -e steps/y ] || { false > steps/y.part && mv steps/y.part steps/y; } || true
        ls steps
        """
        r = sh(script, cwd=self.wf)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("x", r.stdout.split())
        self.assertNotIn("y", r.stdout.split())
        self.assertEqual(read(self.step("x")), b"x-result")

    def test_size_limit(self):
        self.m.restart(options=["max_checkpoint=1K"])
        write(self.step("big"), b"old", os.O_WRONLY | os.O_CREAT)
        fd = os.open(self.step("big"), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b"a" * 1024)
            self.assertErrno(errno.EFBIG, os.write, fd, b"b")
        finally:
            # Refused half way: the close says so and commits nothing.
            self.assertErrno(errno.EFBIG, os.close, fd)
        self.assertEqual(read(self.step("big")), b"old")
        write(self.step("big"), b"a" * 1024, os.O_WRONLY | os.O_TRUNC)
        self.assertEqual(os.stat(self.step("big")).st_size, 1024)

    def test_reader_keeps_its_version(self):
        write(self.step("a"), b"old" * 1000, os.O_WRONLY | os.O_CREAT)
        with open(self.step("a"), "rb") as reader:
            first = reader.read(100)
            write(self.step("a"), b"new", os.O_WRONLY | os.O_TRUNC)
            self.fp("changed")  # reset: the step vanishes
            self.assertFalse(os.path.exists(self.step("a")))
            rest = reader.read()
        self.assertEqual(first + rest, b"old" * 1000)

    def test_concurrent_writers_one_whole_result(self):
        write(self.step("a"), b"", os.O_WRONLY | os.O_CREAT)
        a = os.open(self.step("a"), os.O_WRONLY | os.O_TRUNC)
        b = os.open(self.step("a"), os.O_WRONLY | os.O_TRUNC)
        for i in range(100):
            os.write(a, b"A" * 100)
            os.write(b, b"B" * 50)
        os.close(a)
        self.assertEqual(read(self.step("a")), b"A" * 10000)
        os.close(b)
        self.assertEqual(read(self.step("a")), b"B" * 5000)

    def test_concurrent_readers_see_whole_versions(self):
        write(self.step("a"), b"0" * 65536, os.O_WRONLY | os.O_CREAT)
        stop = threading.Event()
        torn = []

        def reader():
            while not stop.is_set():
                data = read(self.step("a"))
                if len(set(data)) != 1 or len(data) != 65536:
                    torn.append(data[:20])

        t = threading.Thread(target=reader)
        t.start()
        for i in range(1, 40):
            write(self.step("a"), str(i % 10).encode() * 65536, os.O_WRONLY | os.O_TRUNC)
        stop.set()
        t.join()
        self.assertEqual(torn, [])

    def test_killed_writer_leaves_old_content(self):
        write(self.step("s"), b"old content", os.O_WRONLY | os.O_CREAT)
        p = subprocess.Popen([sys.executable, "-c", (
            "import os,sys,time\n"
            "fd=os.open(sys.argv[1], os.O_WRONLY|os.O_TRUNC)\n"
            "os.write(fd, b'partial')\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n"), self.step("s")], stdout=subprocess.PIPE)
        p.stdout.readline()
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        self.assertEqual(read(self.step("s")), b"old content")
        # A command that fails, but exits, still commits what it wrote.
        sh("{ printf partial; exit 3; } > steps/s", cwd=self.wf)
        self.assertEqual(read(self.step("s")), b"partial")

    def test_fingerprint_syntax(self):
        fpath = os.path.join(self.wf, "input.fingerprint")
        self.fp("abc\n")
        self.assertEqual(read(fpath), b"abc\n")
        for bad in (b"a" * 257, b"tab\there", b"two\nlines\n", b"\x00"):
            self.assertErrno(errno.EINVAL, write, fpath, bad)
        self.assertEqual(read(fpath), b"abc\n")
        self.fp("a" * 256)
        self.assertEqual(read(fpath), b"a" * 256 + b"\n")
        # A bare truncate changes nothing.
        os.close(os.open(fpath, os.O_WRONLY | os.O_TRUNC))
        os.truncate(fpath, 0)
        self.assertEqual(read(fpath), b"a" * 256 + b"\n")
        os.unlink(fpath)
        self.assertEqual(read(fpath), b"")

    def test_reset_hides_and_same_value_resumes(self):
        self.fp("v1")
        write(self.step("a"), b"A", os.O_WRONLY | os.O_CREAT)
        self.fp("v1")  # a resume: nothing changes
        self.assertEqual(read(self.step("a")), b"A")
        self.fp("v2")
        self.assertFalse(os.path.exists(self.step("a")))
        self.assertEqual(os.listdir(os.path.join(self.wf, "steps")), [])
        self.fp("v1")  # old checkpoints do not come back
        self.assertFalse(os.path.exists(self.step("a")))
        events = read(os.path.join(self.wf, "events")).decode()
        self.assertIn('"invalidate"', events)
        self.assertIn('"fingerprint"', events)
        self.assertIn('"checkpoint"', events)

    def test_reuse_keeps(self):
        self.policy("on_input_change", "reuse\n")
        self.fp("v1")
        write(self.step("a"), b"A", os.O_WRONLY | os.O_CREAT)
        self.fp("v2")
        self.assertEqual(read(self.step("a")), b"A")

    def test_raise_refuses_in_write(self):
        self.policy("on_input_change", "raise")
        self.fp("v1")
        write(self.step("a"), b"A", os.O_WRONLY | os.O_CREAT)
        fpath = os.path.join(self.wf, "input.fingerprint")
        fd = os.open(fpath, os.O_WRONLY | os.O_TRUNC)
        try:
            self.assertErrno(errno.EBUSY, os.write, fd, b"v2\n")
        finally:
            os.close(fd)
        self.assertEqual(read(fpath), b"v1\n")
        r = sh("echo v2 > input.fingerprint", cwd=self.wf)
        self.assertIn("busy", r.stderr.lower())
        os.unlink(self.step("a"))
        self.fp("v2")
        self.assertEqual(read(fpath), b"v2\n")

    def test_stale_writer_after_reset(self):
        self.fp("v1")
        fd = os.open(self.step("a"), os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"x")
        self.fp("v2")
        self.assertErrno(errno.ESTALE, os.write, fd, b"y")
        self.assertErrno(errno.ESTALE, os.close, fd)
        self.assertFalse(os.path.exists(self.step("a")))

    def test_other_mount_sees_reset_at_once(self):
        other = Mount(store=self.m.store, options=[], tmp=self.m.tmp).start()
        try:
            write(self.step("a"), b"A", os.O_WRONLY | os.O_CREAT)
            there = other.p("wf", "steps", "a")
            self.assertTrue(os.path.exists(there))
            self.fp("new")
            self.assertFalse(os.path.exists(there))
            r = sh("[ -e %s ] && echo yes || echo no" % there)
            self.assertEqual(r.stdout.strip(), "no")
        finally:
            other.stop()

    def test_remount_after_kill9(self):
        self.fp("v1")
        write(self.step("a"), b"A" * 5000, os.O_WRONLY | os.O_CREAT)
        self.m.kill9()
        self.m.start()
        self.assertEqual(read(self.step("a")), b"A" * 5000)
        self.assertEqual(read(os.path.join(self.wf, "input.fingerprint")), b"v1\n")
    @sqlite_only("counts the rows of the store file with sqlite3")

    def test_purge_after_reset(self):
        for i in range(50):
            write(self.step("s%d" % i), b"x" * 100, os.O_WRONLY | os.O_CREAT)
        self.fp("other")
        self.assertEqual(os.listdir(os.path.join(self.wf, "steps")), [])
        import sqlite3
        import time
        deadline = time.time() + 10
        while time.time() < deadline:
            db = sqlite3.connect(self.m.store, timeout=5)
            left = db.execute("SELECT count(*) FROM steps").fetchone()[0]
            db.close()
            if left == 0:
                break
            time.sleep(0.2)
        self.assertEqual(left, 0)


if __name__ == "__main__":
    run()

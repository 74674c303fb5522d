"""Keys over a real mount: claim, finalize, read, release, fencing."""
import errno
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import MountedTest, claim, hold, read, write, run  # noqa: E402


class Keys(MountedTest):
    def test_claim_once(self):
        fd = claim(self.key("k"))
        self.assertErrno(errno.EEXIST, claim, self.key("k"))
        self.assertEqual(read(self.key("k")).split()[0], b"in_flight")
        os.write(fd, b"succeeded\nresult bytes")
        os.close(fd)
        data = read(self.key("k"))
        status, gen = data.split(b"\n")[0].split()
        self.assertEqual(status, b"succeeded")
        self.assertEqual(data.split(b"\n", 1)[1], b"result bytes")
        self.assertEqual(os.stat(self.key("k")).st_mode & 0o777, 0o444)
        self.assertEqual(os.stat(self.key("k")).st_size, len(data))

    def test_attributes_right_after_each_step_of_a_claim(self):
        """The CREATE reply's attributes may be kept for a tick (so that the
        open asks no GETATTR); the close drops them before it returns, so a
        stat at once, through the fd or the path, sees the key as it is."""
        for i in range(200):
            path = self.key("quick%d" % i)
            fd = claim(path)
            other = os.dup(fd)          # as a child's copy of the file would be
            os.write(fd, b"succeeded\n")
            os.close(fd)                # the FLUSH finalizes
            st = os.fstat(other)        # no LOOKUP: what the kernel kept
            os.close(other)
            self.assertEqual(st.st_mode & 0o777, 0o444, i)
            st = os.stat(path)
            self.assertEqual(st.st_mode & 0o777, 0o444, i)
            self.assertEqual(st.st_size, len(read(path)), i)
        # Closed with nothing written: abandoned (at the RELEASE, which the
        # kernel sends just after close returns).
        os.close(claim(self.key("gone")))
        self.assertAbandoned("gone")

    def test_non_exclusive_create_is_enoent(self):
        self.assertErrno(errno.ENOENT, os.open, self.key("k"), os.O_CREAT | os.O_WRONLY)
        self.assertFalse(os.path.exists(self.key("k")))

    def test_bad_status_fails_write(self):
        fd = claim(self.key("k"))
        try:
            self.assertErrno(errno.EINVAL, os.write, fd, b"done\n")
            self.assertErrno(errno.EINVAL, os.write, fd, b"in_flight\n")
        finally:
            os.close(fd)
        # Nothing was finalized: the holder's close abandoned the claim.
        self.assertAbandoned("k")

    def test_wrong_generation_is_estale(self):
        fd = claim(self.key("k"))
        gen = int(read(self.key("k")).split()[1])
        self.assertErrno(errno.ESTALE, os.write, fd, b"succeeded %d\n" % (gen + 1000))
        os.write(fd, b"succeeded %d\n" % gen)
        os.close(fd)
        self.assertEqual(read(self.key("k")).split()[0], b"succeeded")

    def test_failed_frees_key_under_dedup_success(self):
        fd = claim(self.key("k"))
        os.write(fd, b"failed\n")
        os.close(fd)
        self.assertFalse(os.path.exists(self.key("k")))
        fd = claim(self.key("k"))
        self.assertEqual(os.getxattr(self.key("k"), "user.oncefs.attempt"), b"2")
        os.close(fd)

    def test_release(self):
        hold(self.key("k"))
        os.unlink(self.key("k"))
        self.assertFalse(os.path.exists(self.key("k")))
        hold(self.key("k"))

    def test_terminal_refuses_root_writes(self):
        fd = claim(self.key("k"))
        os.write(fd, b"succeeded\n")
        os.close(fd)
        self.assertErrno(errno.EPERM, write, self.key("k"), b"failed\n")
        self.assertErrno(errno.EPERM, os.truncate, self.key("k"), 0)
        self.assertErrno(errno.EPERM, os.utime, self.key("k"))
        self.assertErrno(errno.EPERM, os.chmod, self.key("k"), 0o644)


if __name__ == "__main__":
    run()

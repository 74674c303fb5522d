"""The tree: workflows at the root, rm -rf, rename, readdir cursors,
policy files, input.fingerprint, events, xattrs and modes."""
import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import STORE_KIND, MountedTest, claim, hold, read, write, sh, errno_of, run  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

DEFAULTS = {
    "on_input_change": b"reset\n",
    "dedup_on": b"success\n",
    "in_flight_ttl": b"86400\n",
    "retention": b"2592000\n",
}


def renameat2(src, dst, flags):
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src)


def finalize(path, data):
    fd = claim(path)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def events(wf):
    return [json.loads(line) for line in read(os.path.join(wf, "events")).decode().splitlines()]


class Workflows(MountedTest):
    def test_mkdir(self):
        st = os.stat(self.wf)
        self.assertEqual(st.st_mode & 0o7777, 0o777 & ~self.umask())
        self.assertEqual((st.st_uid, st.st_gid), (os.getuid(), os.getgid()))
        self.assertEqual(sorted(os.listdir(self.wf)),
                         ["events", "input.fingerprint", "keys", "policy", "steps", "wait"])
        self.assertEqual(sorted(os.listdir(self.m.path)), [".metrics", ".stats", "wf"])
        self.assertErrno(errno.EEXIST, os.mkdir, self.wf)
        self.assertErrno(errno.EEXIST, os.mkdir, self.m.p(".stats"))
        os.mkdir(self.m.p("other"), 0o700)
        self.assertEqual(os.stat(self.m.p("other")).st_mode & 0o7777, 0o700)

    @staticmethod
    def umask():
        old = os.umask(0)
        os.umask(old)
        return old

    def test_dot_names_are_reserved(self):
        for name in (".hidden", "..x", ".wf", ".stats2"):
            self.assertErrno(errno.EINVAL, os.mkdir, self.m.p(name))
            self.assertFalse(os.path.exists(self.m.p(name)))
        self.assertErrno(errno.EINVAL, os.rename, self.wf, self.m.p(".wf"))
        self.assertTrue(os.path.isdir(self.wf))

    def test_name_lengths(self):
        root = os.fsencode(self.m.path)
        longest = b"w" * 255
        os.mkdir(os.path.join(root, longest))
        self.assertIn(longest, os.listdir(root))
        k = os.path.join(root, longest, b"keys", b"k" * 255)
        hold(k)
        self.assertIn(b"k" * 255, os.listdir(os.path.join(root, longest, b"keys")))
        self.assertErrno(errno.ENAMETOOLONG, os.mkdir, os.path.join(root, b"w" * 256))
        self.assertErrno(errno.ENAMETOOLONG, os.mkdir, os.path.join(root, "é".encode() * 128))
        self.assertErrno(errno.ENAMETOOLONG, claim, os.path.join(root, b"wf", b"keys", b"k" * 256))
        self.assertErrno(errno.ENAMETOOLONG, os.rename, os.path.join(root, b"wf"), os.path.join(root, b"x" * 256))
        self.assertEqual(sorted(os.listdir(root)), sorted([b".metrics", b".stats", b"wf", longest]))
        self.assertEqual(os.listdir(os.path.join(root, b"wf", b"keys")), [])

    def test_any_bytes_in_names(self):
        root = os.fsencode(self.m.path)
        for name in (b"with space", b"new\nline", b"\xff\xfe not utf-8", "ünïcödé".encode(), b"-", b"..."):
            if name.startswith(b"."):
                continue
            os.mkdir(os.path.join(root, name))
            k = os.path.join(root, name, b"keys", name)
            finalize(k, b"succeeded\n" + name)
            self.assertEqual(read(k).split(b"\n", 1)[1], name)
            self.assertIn(name, os.listdir(os.path.join(root, name, b"keys")))
        self.assertIn(b"\xff\xfe not utf-8", os.listdir(root))
        # Their events are still JSON lines, and the size is exact in bytes.
        for name in os.listdir(root):
            if name in (b".metrics", b".stats", b"wf"):
                continue
            ev = os.path.join(root, name, b"events")
            data = read(ev)
            self.assertEqual(os.stat(ev).st_size, len(data), name)
            lines = [json.loads(line) for line in data.decode().splitlines()]
            self.assertIn("claim", [e["event"] for e in lines], name)
        # Key names may start with a dot; only "." and ".." are impossible.
        k = os.path.join(self.wf, "keys", ".dotkey")
        hold(k)
        self.assertIn(".dotkey", os.listdir(os.path.join(self.wf, "keys")))

    def test_no_regular_files_at_the_root(self):
        f = self.m.p("file")
        self.assertErrno(errno.EPERM, os.open, f, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        self.assertErrno(errno.EPERM, os.open, f, os.O_CREAT | os.O_WRONLY, 0o644)
        self.assertErrno(errno.EPERM, os.mknod, f, 0o644)
        self.assertErrno(errno.EPERM, os.symlink, "wf", f)
        self.assertErrno(errno.EPERM, os.link, os.path.join(self.wf, "events"), f)
        r = sh("echo x > file", cwd=self.m.path)
        self.assertNotEqual(r.returncode, 0)
        r = subprocess.run(["touch", f], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Operation not permitted", r.stderr)
        self.assertEqual(sorted(os.listdir(self.m.path)), [".metrics", ".stats", "wf"])
        # .stats is read-only and stays.
        self.assertErrno(errno.EPERM, os.open, self.m.p(".stats"), os.O_WRONLY)
        self.assertErrno(errno.EPERM, os.unlink, self.m.p(".stats"))
        self.assertIn(b"claims", read(self.m.p(".stats")))

    def test_stats_count_requests_and_pages(self):
        def stats():
            return {l.split()[0]: int(l.split()[1]) for l in read(self.m.p(".stats")).decode().splitlines()}
        before = stats()
        finalize(self.m.p("wf", "keys", "counted"), b"succeeded\n")
        after = stats()
        d = {k: after[k] - before.get(k, 0) for k in after}
        # One claim: a CREATE, its FLUSH and RELEASE, a WRITE, and lookups;
        # the read of .stats itself is counted too (an OPEN, READs, ...).
        self.assertEqual(d["requests_create"], 1, d)
        self.assertEqual(d["requests_write"], 1, d)
        self.assertGreaterEqual(d["requests_flush"], 1, d)
        self.assertGreaterEqual(d["requests_release"], 1, d)
        self.assertGreaterEqual(d["requests_lookup"], 1, d)
        self.assertEqual(after["requests"], sum(v for k, v in after.items()
                                                if k.startswith("requests_")))
        self.assertGreaterEqual(d["cpu_us"], 0, d)      # a counter: never goes back
        self.assertGreater(after["cpu_us"], 0, after)
        if STORE_KIND == "postgres":
            self.assertEqual(d["pages_written"], 0, d)      # the server's own
        else:
            self.assertGreater(d["pages_written"], 0, d)    # the claim's and finalize's

    def test_nothing_else_inside_a_workflow(self):
        self.assertErrno(errno.EPERM, os.open, os.path.join(self.wf, "extra"),
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        self.assertErrno(errno.EPERM, os.mkdir, os.path.join(self.wf, "sub"))
        self.assertErrno(errno.EPERM, os.mkdir, os.path.join(self.wf, "keys", "sub"))
        self.assertErrno(errno.EPERM, os.open, os.path.join(self.wf, "policy", "new_policy"),
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        self.assertEqual(sorted(os.listdir(self.wf)),
                         ["events", "input.fingerprint", "keys", "policy", "steps", "wait"])

    def test_rmdir(self):
        k = self.key("k")
        hold(k)
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.wf)
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, os.path.join(self.wf, "keys"))
        os.write(fd := os.open(k, os.O_WRONLY), b"succeeded\n")
        os.close(fd)
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.wf)
        self.assertTrue(os.path.isdir(self.wf))
        os.unlink(k)
        # Empty fixed directories: rmdir succeeds and they stay.
        for d in ("keys", "steps", "policy"):
            os.rmdir(os.path.join(self.wf, d))
            self.assertTrue(os.path.isdir(os.path.join(self.wf, d)), d)
        self.assertEqual(sorted(os.listdir(os.path.join(self.wf, "policy"))), sorted(DEFAULTS))
        hold(k)  # keys/ still works after its rmdir
        os.unlink(k)
        os.rmdir(self.wf)
        self.assertFalse(os.path.exists(self.wf))
        self.assertErrno(errno.ENOENT, os.rmdir, self.wf)
        # A new workflow of the same name starts afresh.
        os.mkdir(self.wf)
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [])
        hold(k)
        self.assertEqual(os.getxattr(k, "user.oncefs.attempt"), b"1")

    def test_rm_rf_workflow(self):
        pol = os.path.join(self.wf, "policy")
        finalize(self.key("ok"), b"succeeded\nresult")
        self.assertEqual(os.stat(self.key("ok")).st_mode & 0o777, 0o444)
        write(os.path.join(pol, "dedup_on"), "any\n")
        finalize(self.key("bad"), b"failed\n")
        self.assertEqual(os.stat(self.key("bad")).st_mode & 0o777, 0o444)
        hold(self.key("flight"))
        write(os.path.join(pol, "in_flight_ttl"), "600\n")
        write(os.path.join(pol, "on_input_change"), "raise\n")
        write(os.path.join(pol, "retention"), "60\n")
        write(os.path.join(self.wf, "input.fingerprint"), "fp\n")

        r = subprocess.run(["rm", "-rf", "wf"], cwd=self.m.path, capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertFalse(os.path.exists(self.wf))
        self.assertEqual(sorted(os.listdir(self.m.path)), [".metrics", ".stats"])

        os.mkdir(self.wf)
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [])
        for name, value in DEFAULTS.items():
            self.assertEqual(read(os.path.join(pol, name)), value, name)
        self.assertEqual(read(os.path.join(self.wf, "input.fingerprint")), b"")
        hold(self.key("ok"))

    def test_rm_rf_contents_keeps_workflow(self):
        finalize(self.key("ok"), b"succeeded\n")
        hold(self.key("flight"))
        write(os.path.join(self.wf, "policy", "dedup_on"), "any\n")
        r = sh("rm -rf keys/* policy; rm -f events input.fingerprint", cwd=self.wf)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [])
        self.assertEqual(read(os.path.join(self.wf, "policy", "dedup_on")), b"success\n")
        self.assertTrue(os.path.exists(os.path.join(self.wf, "events")))
        self.assertIn("release", [e["event"] for e in events(self.wf)])
        os.rmdir(self.wf)


class Rename(MountedTest):
    def setUp(self):
        super().setUp()
        self.wf2 = self.m.p("wf2")
        os.mkdir(self.wf2)
        finalize(self.key("a"), b"succeeded\nresult a")
        self.a_data = read(self.key("a"))

    def assert_key_a_untouched(self):
        self.assertEqual(read(self.key("a")), self.a_data)
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), ["a"])
        self.assertEqual(os.listdir(os.path.join(self.wf2, "keys")), [])

    def test_rename_of_keys_is_eperm(self):
        a = self.key("a")
        self.assertErrno(errno.EPERM, os.rename, a, self.key("b"))
        self.assertErrno(errno.EPERM, renameat2, a, self.key("b"), RENAME_NOREPLACE)
        self.assertErrno(errno.EPERM, os.rename, a, os.path.join(self.wf2, "keys", "a"))
        self.assertErrno(errno.EPERM, renameat2, a, os.path.join(self.wf2, "keys", "a"), RENAME_NOREPLACE)
        hold(self.key("c"))
        self.assertErrno(errno.EPERM, os.rename, a, self.key("c"))
        os.unlink(self.key("c"))
        self.assert_key_a_untouched()

    def test_mv_of_a_key_fails_without_copying(self):
        for dst in ("wf/keys/b", "wf2/keys/a", "wf2/keys/", "wf2/", "wf2/keys/z"):
            r = subprocess.run(["mv", "wf/keys/a", dst], cwd=self.m.path, capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0, dst)
            self.assertIn("Operation not permitted", r.stderr)
            self.assert_key_a_untouched()
        # An in_flight key does not move either, and stays claimed.
        hold(self.key("f"))
        gen = os.getxattr(self.key("f"), "user.oncefs.generation")
        r = subprocess.run(["mv", "wf/keys/f", "wf2/keys/f"], cwd=self.m.path, capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(os.getxattr(self.key("f"), "user.oncefs.generation"), gen)
        self.assertFalse(os.path.exists(os.path.join(self.wf2, "keys", "f")))

    def test_rename_of_fixed_entries_is_eperm(self):
        for name in ("events", "input.fingerprint", "keys", "policy"):
            self.assertErrno(errno.EPERM, os.rename, os.path.join(self.wf, name), os.path.join(self.wf, name + "2"))
        self.assertErrno(errno.EPERM, os.rename, os.path.join(self.wf, "policy", "dedup_on"),
                         os.path.join(self.wf, "policy", "retention"))
        self.assertErrno(errno.EPERM, os.rename, self.m.p(".stats"), self.m.p("stats"))
        self.assertErrno(errno.EPERM, os.rename, self.wf, os.path.join(self.wf2, "keys", "x"))

    def test_rename_workflow(self):
        gen = os.getxattr(self.key("a"), "user.oncefs.generation")
        os.rename(self.wf, self.m.p("renamed"))
        self.assertFalse(os.path.exists(self.wf))
        k = self.m.p("renamed", "keys", "a")
        self.assertEqual(read(k), self.a_data)
        self.assertEqual(os.getxattr(k, "user.oncefs.generation"), gen)
        self.assertEqual(events(self.m.p("renamed"))[-1]["event"], "rename")
        # The old name is free again and fresh.
        os.mkdir(self.wf)
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [])
        # With the mv command.
        r = subprocess.run(["mv", "renamed", "again"], cwd=self.m.path, capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(read(self.m.p("again", "keys", "a")), self.a_data)
        self.assertEqual(sorted(os.listdir(self.m.path)), [".metrics", ".stats", "again", "wf", "wf2"])

    def test_mv_workflow_into_a_workflow_fails_without_copying(self):
        r = subprocess.run(["mv", "wf", "wf2/"], cwd=self.m.path, capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Operation not permitted", r.stderr)
        self.assert_key_a_untouched()
        self.assertEqual(sorted(os.listdir(self.wf2)), ["events", "input.fingerprint", "keys", "policy", "steps", "wait"])

    def test_rename_workflow_noreplace(self):
        self.assertErrno(errno.EEXIST, renameat2, self.wf, self.wf2, RENAME_NOREPLACE)  # wf2 is empty
        self.assertTrue(os.path.isdir(self.wf2))
        self.assert_key_a_untouched()
        renameat2(self.wf, self.m.p("new"), RENAME_NOREPLACE)
        self.assertEqual(read(self.m.p("new", "keys", "a")), self.a_data)
        self.assertFalse(os.path.exists(self.wf))

    def test_rename_workflow_over_another(self):
        # Over a workflow with keys: ENOTEMPTY, nothing changes.
        finalize(os.path.join(self.wf2, "keys", "z"), b"succeeded\n")
        self.assertErrno(errno.ENOTEMPTY, os.rename, self.wf, self.wf2)
        self.assertTrue(os.path.exists(os.path.join(self.wf2, "keys", "z")))
        self.assert_key_a_untouched_but_wf2_has_z()
        # Over an empty workflow: replaced, as rename(2) replaces an empty directory.
        os.unlink(os.path.join(self.wf2, "keys", "z"))
        os.rename(self.wf, self.wf2)
        self.assertFalse(os.path.exists(self.wf))
        self.assertEqual(read(os.path.join(self.wf2, "keys", "a")), self.a_data)
        self.assertEqual(sorted(os.listdir(self.m.path)), [".metrics", ".stats", "wf2"])

    def assert_key_a_untouched_but_wf2_has_z(self):
        self.assertEqual(read(self.key("a")), self.a_data)
        self.assertEqual(os.listdir(os.path.join(self.wf2, "keys")), ["z"])

    def test_rename_exchange_changes_nothing_or_swaps(self):
        finalize(os.path.join(self.wf2, "keys", "z"), b"succeeded\n")
        err = errno_of(renameat2, self.wf, self.wf2, RENAME_EXCHANGE)
        if err == 0:  # a real exchange is acceptable too
            self.assertEqual(os.listdir(os.path.join(self.wf2, "keys")), ["a"])
            self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), ["z"])
        else:
            self.assertEqual(err, errno.EINVAL)
            self.assert_key_a_untouched_but_wf2_has_z()


class Readdir(MountedTest):
    options = ("create", "sync=off")  # speed only: nothing here is about durability
    N = 1200

    def setUp(self):
        super().setUp()
        self.keys = os.path.join(self.wf, "keys")
        self.names = ["k%05d" % i for i in range(self.N)]
        for n in self.names:
            hold(os.path.join(self.keys, n))

    def test_each_key_exactly_once(self):
        listed = os.listdir(self.keys)
        self.assertEqual(len(listed), self.N)
        self.assertEqual(sorted(listed), self.names)
        r = sh("ls -1 keys | sort | uniq -d; ls -1 keys | wc -l; find keys -type f | wc -l", cwd=self.wf)
        self.assertEqual(r.stdout.split(), [str(self.N), str(self.N)])
        # Small getdents buffers (many FUSE readdir requests) change nothing.
        fd = os.open(self.keys, os.O_RDONLY | os.O_DIRECTORY)
        try:
            got = []
            libc_names = self._getdents_all(fd, 512)
            got.extend(n for n in libc_names if n not in (".", ".."))
        finally:
            os.close(fd)
        self.assertEqual(sorted(got), self.names)

    @staticmethod
    def _getdents_all(fd, bufsize):
        """Names from raw getdents64 calls with a small buffer."""
        SYS_getdents64 = 217
        buf = ctypes.create_string_buffer(bufsize)
        names = []
        while True:
            n = _libc.syscall(SYS_getdents64, fd, buf, bufsize)
            if n < 0:
                raise OSError(ctypes.get_errno(), "getdents64")
            if n == 0:
                return names
            raw = buf.raw[:n]
            pos = 0
            while pos < n:
                reclen = int.from_bytes(raw[pos + 16:pos + 18], "little")
                name = raw[pos + 19:pos + reclen].split(b"\0", 1)[0]
                names.append(name.decode())
                pos += reclen

    def test_listing_while_keys_are_deleted_like_rm(self):
        """GNU rm's pattern: read a batch, delete it, read on."""
        seen = []
        with os.scandir(self.keys) as it:
            for entry in it:
                seen.append(entry.name)
                if len(seen) % 100 == 0:
                    for n in seen[-100:]:
                        os.unlink(os.path.join(self.keys, n))
        self.assertEqual(len(seen), len(set(seen)), "an entry was listed twice")
        self.assertEqual(sorted(seen), self.names, "entries were skipped")

    def test_listing_while_keys_are_added_and_removed(self):
        seen = []
        deleted, added = set(), []
        with os.scandir(self.keys) as it:
            for entry in it:
                seen.append(entry.name)
                if len(seen) % 97 == 0:
                    seen_set = set(seen)
                    unseen = [n for n in self.names if n not in seen_set and n not in deleted]
                    for n in unseen[-15:] + seen[-5:]:
                        if n not in deleted and n in self.names:
                            os.unlink(os.path.join(self.keys, n))
                            deleted.add(n)
                    for j in range(10):
                        name = "new-%d-%d" % (len(seen), j)
                        hold(os.path.join(self.keys, name))
                        added.append(name)
        self.assertEqual(len(seen), len(set(seen)), "an entry was listed twice")
        stayed = [n for n in self.names if n not in deleted]
        missing = [n for n in stayed if n not in set(seen)]
        self.assertEqual(missing, [], "entries present throughout were skipped")
        unknown = set(seen) - set(self.names) - set(added)
        self.assertEqual(unknown, set())
        self.assertEqual(sorted(os.listdir(self.keys)), sorted(stayed + added))

    def test_rm_rf_of_a_big_workflow(self):
        for n in self.names[:50]:
            write(os.path.join(self.keys, n), b"succeeded\n", os.O_WRONLY)
        r = subprocess.run(["rm", "-rf", "wf"], cwd=self.m.path, capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertFalse(os.path.exists(self.wf))

    def test_long_names(self):
        os.mkdir(self.m.p("long"))
        keys = self.m.p("long", "keys")
        names = ["%03d" % i + "x" * 252 for i in range(300)]
        for n in names:
            hold(os.path.join(keys, n))
        listed = os.listdir(keys)
        self.assertEqual(len(listed), len(names))
        self.assertEqual(sorted(listed), names)

    def test_root_listing(self):
        for i in range(300):
            os.mkdir(self.m.p("w%03d" % i))
        listed = os.listdir(self.m.path)
        self.assertEqual(len(listed), len(set(listed)))
        self.assertEqual(sorted(listed), sorted([".metrics", ".stats", "wf"] + ["w%03d" % i for i in range(300)]))


class Policy(MountedTest):
    def pol(self, name):
        return os.path.join(self.wf, "policy", name)

    def test_defaults(self):
        self.assertEqual(sorted(os.listdir(os.path.join(self.wf, "policy"))), sorted(DEFAULTS))
        for name, value in DEFAULTS.items():
            self.assertEqual(read(self.pol(name)), value)
            self.assertEqual(os.stat(self.pol(name)).st_size, len(value))

    def test_valid_values(self):
        cases = {
            "on_input_change": [b"reuse", b"raise\n", b"reset  \n", b"reuse\r\n"],
            "dedup_on": [b"any\n", b"success", b"any \t\n"],
            "in_flight_ttl": [b"60\n", b"1", b"3600  \n", b"315360000\n"],
            "retention": [b"0\n", b"3600", b"2592000\n"],
        }
        for name, values in cases.items():
            for v in values:
                write(self.pol(name), v)
                expect = v.rstrip() + b"\n"
                self.assertEqual(read(self.pol(name)), expect, (name, v))
                self.assertEqual(os.stat(self.pol(name)).st_size, len(expect))
        ev = [e for e in events(self.wf) if e["event"] == "policy"]
        self.assertEqual(ev[-1].get("value"), "2592000")

    def test_bad_values_fail_the_write(self):
        cases = {
            "on_input_change": [b"bogus\n", b"RESET\n", b" reset\n", b"reset extra\n", b"\n", b"reset\nreuse\n"],
            "dedup_on": [b"none\n", b"successful\n", b"any\x00\n", b"\n"],
            "in_flight_ttl": [b"0\n", b"-5\n", b"1.5\n", b"abc\n", b"01\n", b"+5\n", b"99999999999999\n",
                              b"1e3\n", b"10 s\n", b"\n"],
            "retention": [b"-1\n", b"x\n", b"00\n", b"99999999999999\n"],
        }
        write(self.pol("dedup_on"), b"any\n")
        write(self.pol("in_flight_ttl"), b"77\n")
        before = {n: read(self.pol(n)) for n in cases}
        events_before = read(os.path.join(self.wf, "events"))
        for name, values in cases.items():
            for v in values:
                fd = os.open(self.pol(name), os.O_WRONLY | os.O_TRUNC)
                try:
                    self.assertErrno(errno.EINVAL, os.write, fd, v)
                finally:
                    os.close(fd)  # nothing was accepted: nothing to commit
                self.assertEqual(read(self.pol(name)), before[name], (name, v))
        # Longer than any value.
        self.assertErrno(errno.EINVAL, write, self.pol("retention"), b"1" * 4096)
        self.assertEqual(read(os.path.join(self.wf, "events")), events_before, "a refused value logs nothing")
        # bash reports the write error and the value stays.
        r = sh("echo bogus > policy/dedup_on", cwd=self.wf)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("write error: Invalid argument", r.stderr)
        self.assertEqual(read(self.pol("dedup_on")), b"any\n")

    def test_value_written_in_pieces(self):
        """A value may arrive in several write()s, as from any writer
        that does not buffer; only the whole value is judged."""
        r = sh("{ printf an; printf 'y\\n'; } > policy/dedup_on", cwd=self.wf)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(read(self.pol("dedup_on")), b"any\n")
        fd = os.open(self.pol("on_input_change"), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, b"re")
            os.write(fd, b"use")
            os.write(fd, b"\n")
        finally:
            os.close(fd)
        self.assertEqual(read(self.pol("on_input_change")), b"reuse\n")

    def test_unlink_resets_default(self):
        for name, value in (("dedup_on", b"any\n"), ("in_flight_ttl", b"5\n"),
                            ("on_input_change", b"raise\n"), ("retention", b"7\n")):
            write(self.pol(name), value)
            self.assertEqual(read(self.pol(name)), value)
            os.unlink(self.pol(name))
            self.assertTrue(os.path.exists(self.pol(name)), "a policy file stays after unlink")
            self.assertEqual(read(self.pol(name)), DEFAULTS[name])
        r = sh("rm -f policy/*", cwd=self.wf)
        self.assertEqual(r.returncode, 0)
        self.assertErrno(errno.ENOENT, os.unlink, self.pol("no_such_policy"))

    def test_policy_applies_to_next_claim(self):
        write(self.pol("dedup_on"), "any\n")
        finalize(self.key("f"), b"failed\nboom")
        self.assertEqual(read(self.key("f")).split()[0], b"failed")  # terminal under any
        self.assertErrno(errno.EEXIST, claim, self.key("f"))
        write(self.pol("dedup_on"), "success\n")
        self.assertTrue(os.path.exists(self.key("f")), "existing failed keys stay when dedup_on becomes success")
        finalize(self.key("g"), b"failed\n")
        self.assertFalse(os.path.exists(self.key("g")))
        write(self.pol("in_flight_ttl"), "100\n")
        hold(self.key("t"))
        expires = int(os.getxattr(self.key("t"), "user.oncefs.expires"))
        self.assertAlmostEqual(expires, time.time() + 100, delta=3)


class Fingerprint(MountedTest):
    def fp(self):
        return os.path.join(self.wf, "input.fingerprint")

    def test_values(self):
        self.assertEqual(read(self.fp()), b"")
        self.assertEqual(os.stat(self.fp()).st_size, 0)
        write(self.fp(), "abc123\n")
        self.assertEqual(read(self.fp()), b"abc123\n")
        self.assertEqual(os.stat(self.fp()).st_size, 7)
        write(self.fp(), "no-newline")
        self.assertEqual(read(self.fp()), b"no-newline\n")
        write(self.fp(), "x" * 256)
        self.assertEqual(read(self.fp()), b"x" * 256 + b"\n")
        for bad in (b"x" * 257, b"tab\there\n", b"two\nlines\n", b"\xff\n", b"nul\x00\n"):
            self.assertErrno(errno.EINVAL, write, self.fp(), bad)
            self.assertEqual(read(self.fp()), b"x" * 256 + b"\n", bad)

    def test_same_value_and_bare_truncate_change_nothing(self):
        write(self.fp(), "v1\n")
        size = os.stat(os.path.join(self.wf, "events")).st_size
        write(self.fp(), "v1\n")
        self.assertEqual(os.stat(os.path.join(self.wf, "events")).st_size, size, "the same value is a resume")
        os.truncate(self.fp(), 0)
        self.assertEqual(read(self.fp()), b"v1\n")
        r = sh(": > input.fingerprint", cwd=self.wf)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(read(self.fp()), b"v1\n")

    def test_unlink_unsets(self):
        write(self.fp(), "v1\n")
        os.unlink(self.fp())
        self.assertTrue(os.path.exists(self.fp()))
        self.assertEqual(read(self.fp()), b"")


class Events(MountedTest):
    def ev_path(self):
        return os.path.join(self.wf, "events")

    def test_json_lines_with_key_and_policy_events(self):
        pid = os.getpid()
        finalize(self.key("a"), b"succeeded\nresult")
        gen = int(os.getxattr(self.key("a"), "user.oncefs.generation"))
        os.unlink(self.key("a"))
        write(os.path.join(self.wf, "policy", "dedup_on"), "any\n")

        data = read(self.ev_path())
        self.assertEqual(os.stat(self.ev_path()).st_size, len(data))
        self.assertTrue(data.endswith(b"\n"))
        lines = [json.loads(line) for line in data.decode().splitlines()]
        for e in lines:
            self.assertIsInstance(e, dict)
            self.assertIn("time", e)
            self.assertIn("event", e)
            time.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S")
        keyed = [(e["event"], e.get("key"), e.get("generation")) for e in lines]
        for kind in ("claim", "finalize", "release"):
            self.assertIn((kind, "a", gen), keyed)
        by_kind = {e["event"]: e for e in lines}
        self.assertEqual(by_kind["claim"]["pid"], pid)
        self.assertEqual(by_kind["claim"]["uid"], os.getuid())
        self.assertEqual(by_kind["finalize"].get("status"), "succeeded")
        self.assertIn("policy", by_kind)
        self.assertEqual(by_kind["policy"].get("value"), "any")
        order = [e["event"] for e in lines]
        self.assertLess(order.index("claim"), order.index("finalize"))
        self.assertLess(order.index("finalize"), order.index("release"))
        self.assertLess(order.index("release"), order.index("policy"))

    def test_size_is_exact_and_reads_resume(self):
        finalize(self.key("a"), b"succeeded\n")
        first = read(self.ev_path())
        size1 = os.stat(self.ev_path()).st_size
        self.assertEqual(size1, len(first))
        with open(self.ev_path(), "rb") as f:
            hold(self.key("b"))
            os.unlink(self.key("b"))
            size2 = os.fstat(f.fileno()).st_size
            f.seek(size1)
            tail = f.read()
        self.assertEqual(len(tail), size2 - size1)
        whole = read(self.ev_path())
        self.assertEqual(whole, first + tail)
        self.assertEqual([json.loads(line)["event"] for line in tail.decode().splitlines()], ["claim", "detach", "release"])
        # Reads at arbitrary offsets and sizes see the same bytes.
        fd = os.open(self.ev_path(), os.O_RDONLY)
        try:
            for off in (0, 1, 7, size1 - 1, size1, len(whole) - 1, len(whole), len(whole) + 10):
                self.assertEqual(os.pread(fd, 13, off), whole[off:off + 13], off)
        finally:
            os.close(fd)

    def test_tail_follows(self):
        tail = subprocess.Popen(["tail", "-n", "+1", "-s", "0.1", "-f", self.ev_path()],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            hold(self.key("followed"))
            deadline = time.time() + 10
            os.set_blocking(tail.stdout.fileno(), False)
            buf = b""
            while time.time() < deadline and b'"followed"' not in buf:
                chunk = tail.stdout.read()
                if chunk:
                    buf += chunk
                time.sleep(0.05)
            self.assertIn(b'"followed"', buf)
            for line in buf.splitlines():
                json.loads(line)
        finally:
            tail.kill()
            tail.wait()
            tail.stdout.close()

    def test_read_only_and_unlink_changes_nothing(self):
        finalize(self.key("a"), b"succeeded\n")
        before = read(self.ev_path())
        self.assertErrno(errno.EPERM, os.open, self.ev_path(), os.O_WRONLY)
        self.assertErrno(errno.EPERM, os.open, self.ev_path(), os.O_WRONLY | os.O_APPEND)
        self.assertErrno(errno.EPERM, os.truncate, self.ev_path(), 0)
        os.unlink(self.ev_path())
        self.assertTrue(os.path.exists(self.ev_path()))
        self.assertEqual(read(self.ev_path()), before)


class Xattrs(MountedTest):
    NAMES = ["user.oncefs.status", "user.oncefs.generation", "user.oncefs.attempt",
             "user.oncefs.expires", "user.oncefs.holder", "user.oncefs.previous"]

    def test_in_flight_and_succeeded(self):
        k = self.key("k")
        fd = claim(k)
        try:
            gen = int(read(k).split()[1])
            self.assertEqual(sorted(os.listxattr(k)), sorted(self.NAMES))
            self.assertEqual(os.getxattr(k, "user.oncefs.status"), b"in_flight")
            self.assertEqual(int(os.getxattr(k, "user.oncefs.generation")), gen)
            self.assertEqual(os.getxattr(k, "user.oncefs.attempt"), b"1")
            expires = int(os.getxattr(k, "user.oncefs.expires"))
            # Held: the short lease (-o lease, 10 s), renewed while open.
            self.assertAlmostEqual(expires, time.time() + 10, delta=5)
            # PID UID HOST: the host names the claimant across hosts.
            self.assertEqual(os.getxattr(k, "user.oncefs.holder").split(),
                             [b"%d" % os.getpid(), b"%d" % os.getuid(),
                              socket.gethostname().encode()])
            self.assertErrno(errno.ENODATA, os.getxattr, k, "user.oncefs.nope")
            self.assertErrno(errno.EPERM, os.setxattr, k, "user.oncefs.status", b"succeeded")
            # Other names are not supported (so cp -a into keys/ goes on).
            self.assertErrno(errno.ENOTSUP, os.setxattr, k, "user.other", b"x")
            self.assertErrno(errno.ENOTSUP, os.removexattr, k, "user.other")
            self.assertErrno(errno.EPERM, os.removexattr, k, "user.oncefs.status")
            os.write(fd, b"succeeded\n")
        finally:
            os.close(fd)
        self.assertEqual(os.getxattr(k, "user.oncefs.status"), b"succeeded")
        self.assertEqual(int(os.getxattr(k, "user.oncefs.generation")), gen)
        self.assertEqual(os.getxattr(k, "user.oncefs.attempt"), b"1")

    def test_holder_is_the_claimant(self):
        k = self.key("k")
        r = subprocess.run([sys.executable, "-c",
                            "import os, sys; fd = os.open(sys.argv[1], os.O_CREAT|os.O_EXCL|os.O_WRONLY); "
                            "os.write(fd, b'detach'); os.close(fd); "
                            "print(os.getpid())", k], capture_output=True, text=True, check=True)
        self.assertEqual(os.getxattr(k, "user.oncefs.holder").split()[0].decode(), r.stdout.strip())

    def test_attempt_counts_retries(self):
        k = self.key("k")
        previous = b"0"
        for i in range(1, 4):
            fd = claim(k)
            self.assertEqual(os.getxattr(k, "user.oncefs.attempt"), b"%d" % i)
            # The generation this claim took over: the failed one before.
            self.assertEqual(os.getxattr(k, "user.oncefs.previous"), previous)
            previous = os.getxattr(k, "user.oncefs.generation")
            os.write(fd, b"failed\n")
            os.close(fd)

    def test_notes_of_a_claim(self):
        k = self.key("k")
        fd = claim(k)
        try:
            self.assertErrno(errno.ENODATA, os.getxattr, k, "user.oncefs.request")
            self.assertErrno(errno.ENODATA, os.setxattr, fd, "user.oncefs.request",
                             b"r1", os.XATTR_REPLACE)
            os.setxattr(fd, "user.oncefs.request", b"sha256:abc\n")
            self.assertEqual(os.getxattr(k, "user.oncefs.request"), b"sha256:abc")
            self.assertErrno(errno.EEXIST, os.setxattr, fd, "user.oncefs.request",
                             b"r2", os.XATTR_CREATE)
            # A request is a fingerprint: printable, 1 to 256 bytes.
            for bad in (b"", b"a\x01b", b"x" * 257, b"two\nlines"):
                self.assertErrno(errno.EINVAL, os.setxattr, fd, "user.oncefs.request", bad)
            self.assertEqual(os.getxattr(k, "user.oncefs.request"), b"sha256:abc")
            # An original name: any bytes, up to 1024.
            original = "https://hooks.example/a/b?id=\u2713 ".encode() * 20
            os.setxattr(k, "user.oncefs.original", original)   # by path, too
            self.assertEqual(os.getxattr(fd, "user.oncefs.original"), original)
            self.assertErrno(errno.E2BIG, os.setxattr, fd, "user.oncefs.original",
                             b"x" * 1025)
            self.assertIn("user.oncefs.request", os.listxattr(k))
            self.assertIn("user.oncefs.original", os.listxattr(k))
            self.assertErrno(errno.EPERM, os.removexattr, k, "user.oncefs.request")
            os.write(fd, b"succeeded\n")
        finally:
            os.close(fd)
        # Terminal: still readable, no longer settable.
        self.assertEqual(os.getxattr(k, "user.oncefs.request"), b"sha256:abc")
        self.assertErrno(errno.EPERM, os.setxattr, k, "user.oncefs.request", b"r3")
        notes = [e for e in self.events() if e["event"] == "note"]
        self.assertEqual([("request" in e, "original" in e) for e in notes],
                         [(True, False), (False, True)])
        self.assertEqual(notes[1]["original"], original.decode())
        # The next claim starts with none.
        os.unlink(k)
        fd = claim(k)
        try:
            self.assertErrno(errno.ENODATA, os.getxattr, k, "user.oncefs.request")
            self.assertNotIn("user.oncefs.original", os.listxattr(k))
        finally:
            os.close(fd)

    def test_mtime_is_the_last_change(self):
        k = self.key("k")
        t0 = time.time()
        fd = claim(k)
        claimed = os.stat(k).st_mtime
        self.assertAlmostEqual(claimed, t0, delta=2)
        time.sleep(0.05)
        os.write(fd, b"succeeded\n")
        os.close(fd)
        self.assertGreater(os.stat(k).st_mtime, claimed)
        self.assertAlmostEqual(os.stat(k).st_mtime, time.time(), delta=2)

    def test_not_on_other_files(self):
        self.assertEqual(os.listxattr(self.wf), [])
        self.assertErrno(errno.ENODATA, os.getxattr, self.wf, "user.oncefs.status")


class Modes(MountedTest):
    def test_chmod_chown_workflow(self):
        os.chmod(self.wf, 0o700)
        self.assertEqual(os.stat(self.wf).st_mode & 0o7777, 0o700)
        os.chown(self.wf, 1234, 5678)
        st = os.stat(self.wf)
        self.assertEqual((st.st_uid, st.st_gid), (1234, 5678))
        r = subprocess.run(["chmod", "750", self.wf], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.stat(self.wf).st_mode & 0o7777, 0o750)
        r = subprocess.run(["chown", "0:0", self.wf], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.stat(self.wf).st_uid, 0)

    def test_chmod_chown_key_is_eperm(self):
        k = self.key("k")
        hold(k)
        mode = os.stat(k).st_mode
        self.assertErrno(errno.EPERM, os.chmod, k, 0o600)
        self.assertErrno(errno.EPERM, os.chown, k, 1234, 1234)
        r = subprocess.run(["chmod", "600", k], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(os.stat(k).st_mode, mode)
        write(k, b"succeeded\n", os.O_WRONLY)
        self.assertErrno(errno.EPERM, os.chmod, k, 0o644)
        self.assertErrno(errno.EPERM, os.chown, k, 1234, 1234)
        self.assertEqual(os.stat(k).st_mode & 0o777, 0o444)


if __name__ == "__main__":
    run()

"""Opening stores: the oncefs binary run as a user would (without -f, so
the exit status is the mount's verdict), on missing, foreign, corrupt and
newer stores, which it must refuse without touching them."""
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import ONCEFS, Mount, claim, read, write, run, _is_mounted, _unmount  # noqa: E402


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def daemons(mnt):
    """Pids of oncefs processes serving mnt."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"oncefs" and os.fsencode(mnt) in argv:
            pids.append(int(pid))
    return pids


def sidecars(path):
    return sorted(p for p in (path + "-wal", path + "-shm", path + "-journal") if os.path.exists(p))


class Store(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oncefs-store-test-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        self.addCleanup(self.unmount)

    def unmount(self):
        if _is_mounted(self.mnt):
            _unmount(self.mnt)
        # The detached daemon exits once unmounted.
        deadline = time.time() + 20
        while daemons(self.mnt) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(daemons(self.mnt), [], "the daemon outlived its mount")

    def oncefs(self, store, *options, mnt=None):
        """Run the daemon as a user would: it forks, and exits with the
        verdict of the mount."""
        args = [ONCEFS]
        if options:
            args += ["-o", ",".join(options)]
        args += [store, mnt or self.mnt]
        return subprocess.run(args, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def assertRefused(self, r, *phrases):
        self.assertNotEqual(r.returncode, 0, "the mount must fail: %r" % (r,))
        self.assertFalse(_is_mounted(self.mnt), "nothing may be mounted")
        self.assertEqual(daemons(self.mnt), [], "a refused mount leaves no daemon")
        self.assertTrue(r.stderr.strip(), "a refusal says why")
        for phrase in phrases:
            self.assertIn(phrase.lower(), r.stderr.lower())

    def make_store(self, path, more_keys=0):
        """A real store with a workflow, a policy and a finalized key."""
        with Mount(store=path, options=("create", "sync=off"), tmp=self.tmp) as m:
            os.mkdir(m.p("wf"))
            write(m.p("wf", "policy", "dedup_on"), "any\n")
            fd = claim(m.p("wf", "keys", "k"))
            os.write(fd, b"succeeded\nkept")
            os.close(fd)
            for i in range(more_keys):
                fd = claim(m.p("wf", "keys", "more-%d" % i))
                os.write(fd, b"succeeded\n" + b"r" * 500)
                os.close(fd)
            return read(m.p("wf", "keys", "k"))

    @staticmethod
    def root_page(path, table):
        db = sqlite3.connect("file:%s?immutable=1" % path, uri=True)
        try:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            root = db.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]
        finally:
            db.close()
        return page_size, root

    def test_missing_store_without_create(self):
        store = os.path.join(self.tmp, "missing.db")
        r = self.oncefs(store)
        self.assertRefused(r, "missing.db", "create")
        self.assertFalse(os.path.exists(store), "no store is created without -o create")
        self.assertEqual(sidecars(store), [])

    def test_missing_directory_with_create(self):
        store = os.path.join(self.tmp, "no", "such", "dir", "state.db")
        r = self.oncefs(store, "create")
        self.assertRefused(r)
        self.assertFalse(os.path.exists(os.path.dirname(store)))

    def test_create_then_daemon_mode_mount(self):
        store = os.path.join(self.tmp, "new.db")
        r = self.oncefs(store, "create")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(_is_mounted(self.mnt), "exit 0 means mounted")
        os.mkdir(os.path.join(self.mnt, "wf"))
        fd = claim(os.path.join(self.mnt, "wf", "keys", "k"))
        os.write(fd, b"succeeded\n")
        os.close(fd)
        self.unmount()
        self.assertFalse(_is_mounted(self.mnt))
        # Mounted again, without create: the state is there.
        r = self.oncefs(store)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(os.path.join(self.mnt, "wf", "keys", "k")).split()[0], b"succeeded")

    def test_empty_file_without_create(self):
        store = os.path.join(self.tmp, "empty.db")
        open(store, "wb").close()
        r = self.oncefs(store)
        self.assertRefused(r, "empty.db")
        self.assertEqual(os.path.getsize(store), 0)

    def test_foreign_sqlite_database(self):
        store = os.path.join(self.tmp, "other.db")
        db = sqlite3.connect(store)
        db.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices(total) VALUES (12.5)")
        db.commit()
        db.close()
        before = digest(store)
        for options in ((), ("create",)):
            r = self.oncefs(store, *options)
            self.assertRefused(r, "not an oncefs store")
            self.assertEqual(digest(store), before, "options %r modified the file" % (options,))
            self.assertEqual(sidecars(store), [])
        db = sqlite3.connect(store)
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "delete")
        self.assertEqual(db.execute("SELECT total FROM invoices").fetchall(), [(12.5,)])
        db.close()

    def test_random_bytes(self):
        store = os.path.join(self.tmp, "random.db")
        with open(store, "wb") as f:
            f.write(os.urandom(64 * 1024))
        before = digest(store)
        for options in ((), ("create",)):
            r = self.oncefs(store, *options)
            self.assertRefused(r)
            self.assertEqual(digest(store), before, "options %r modified the file" % (options,))
            self.assertEqual(sidecars(store), [])

    def test_text_file(self):
        store = os.path.join(self.tmp, "notes.txt")
        with open(store, "w") as f:
            f.write("SQLite format 3 is not what this is\n" * 100)
        before = digest(store)
        r = self.oncefs(store)
        self.assertRefused(r)
        self.assertEqual(digest(store), before)

    def test_newer_schema_is_refused(self):
        store = os.path.join(self.tmp, "state.db")
        self.make_store(store)
        db = sqlite3.connect(store)
        db.execute("PRAGMA user_version = 99")
        db.commit()
        db.close()
        self.assertEqual(sidecars(store), [])
        before = digest(store)
        for options in ((), ("create",)):
            r = self.oncefs(store, *options)
            self.assertRefused(r, "99")
            self.assertEqual(digest(store), before, "options %r modified the file" % (options,))
            self.assertEqual(sidecars(store), [])
        db = sqlite3.connect(store)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 99)
        db.close()

    def test_store_without_schema_version_is_refused(self):
        store = os.path.join(self.tmp, "state.db")
        self.make_store(store)
        db = sqlite3.connect(store)
        db.execute("PRAGMA user_version = 0")
        db.commit()
        db.close()
        before = digest(store)
        r = self.oncefs(store)
        self.assertRefused(r)
        self.assertEqual(digest(store), before)

    def test_truncated_store_is_refused(self):
        store = os.path.join(self.tmp, "state.db")
        self.make_store(store, more_keys=500)
        self.assertEqual(sidecars(store), [])
        with open(store, "r+b") as f:
            f.truncate(os.path.getsize(store) // 2)
        before = digest(store)
        r = self.oncefs(store)
        self.assertRefused(r, "corrupt")
        self.assertEqual(digest(store), before)

    def test_store_with_a_corrupt_table_is_refused(self):
        """A smashed b-tree page of the keys or workflows table: the store
        is corrupt, so it must be refused, not mounted to answer EIO."""
        for table in ("keys", "workflows"):
            store = os.path.join(self.tmp, "state-%s.db" % table)
            self.make_store(store, more_keys=200)
            page_size, root = self.root_page(store, table)
            with open(store, "r+b") as f:
                f.seek((root - 1) * page_size)
                f.write(b"\xa5" * page_size)
            before = digest(store)
            r = self.oncefs(store)
            if r.returncode == 0:
                errs = {}
                for what, fn in (("ls", lambda: os.listdir(self.mnt)),
                                 ("ls keys", lambda: os.listdir(os.path.join(self.mnt, "wf", "keys")))):
                    try:
                        fn()
                    except OSError as e:
                        errs[what] = e.strerror
                self.unmount()
                self.fail("a store with a corrupt %s table was mounted (exit 0); then: %r" % (table, errs))
            self.assertRefused(r, "corrupt")
            self.assertEqual(digest(store), before)

    def test_postgresql_is_refused_clearly(self):
        for url in ("postgresql://user@db.example/once", "postgres://localhost/once"):
            r = self.oncefs(url)
            self.assertRefused(r, "postgresql")
            self.assertFalse(os.path.exists(url.split(":")[0] + ":"))
        self.assertEqual(sorted(os.listdir(self.tmp)), ["mnt"])

    def test_store_named_like_postgres_is_a_file(self):
        """A relative store path beginning with "postgres" is a SQLite file
        like any other: every write works."""
        r = subprocess.run([ONCEFS, "-o", "create", "postgres-jobs.db", self.mnt], cwd=self.tmp,
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        os.mkdir(os.path.join(self.mnt, "wf"))
        write(os.path.join(self.mnt, "wf", "steps", "s"), b"data", os.O_WRONLY | os.O_CREAT)
        self.assertEqual(read(os.path.join(self.mnt, "wf", "steps", "s")), b"data")
        fd = claim(os.path.join(self.mnt, "wf", "keys", "k"))
        os.write(fd, b"succeeded\n")
        os.close(fd)
        self.assertTrue(os.path.exists(os.path.join(self.tmp, "postgres-jobs.db")))

    def test_values_out_of_range_are_refused(self):
        """A store whose policy values were edited out of range: the mount
        refuses it, naming the value, and leaves it as it was; a running
        mount answers EIO for that workflow and keeps serving the rest."""
        store = os.path.join(self.tmp, "state.db")
        for column, value in (("on_input_change", 7), ("dedup_on", -1), ("in_flight_ttl", 0)):
            with self.subTest(column=column):
                if os.path.exists(store):
                    os.unlink(store)
                self.make_store(store)
                with Mount(store=store, options=(), tmp=self.tmp) as m:
                    os.mkdir(m.p("good"))
                    db = sqlite3.connect(store, timeout=10)
                    db.execute("UPDATE workflows SET %s = ? WHERE name = ?" % column, (value, b"wf"))
                    db.commit()
                    db.close()
                    for path in (m.p("wf", "policy"), m.p("wf", "keys")):
                        with self.assertRaises(OSError) as cm:
                            os.listdir(path)
                        self.assertEqual(cm.exception.errno, __import__("errno").EIO)
                    r = subprocess.run(["ls", "-l", m.p("wf", "policy")], capture_output=True)
                    self.assertNotEqual(r.returncode, 0)
                    self.assertEqual(sorted(os.listdir(m.p("good"))),
                                     ["events", "input.fingerprint", "keys", "policy", "steps", "wait"])
                    self.assertIn(column, m.read_log())
                before = digest(store)
                r = self.oncefs(store)
                self.assertRefused(r, column, "out of range")
                self.assertEqual(digest(store), before)
                # oncectl reports the row, and does not crash.
                r = subprocess.run([os.environ.get("ONCECTL", "oncectl"), "ls", store],
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, 1, r)
                self.assertIn(column, r.stderr)
                self.assertIn("out of range", r.stderr)

    def test_directory_as_store(self):
        store = os.path.join(self.tmp, "adir")
        os.mkdir(store)
        r = self.oncefs(store, "create")
        self.assertRefused(r)
        self.assertEqual(os.listdir(store), [])

    def test_existing_store_keeps_state(self):
        store = os.path.join(self.tmp, "state.db")
        content = self.make_store(store)
        for options in ((), ("create",)):
            with Mount(store=store, options=options, tmp=self.tmp) as m:
                self.assertEqual(read(m.p("wf", "keys", "k")), content)
                self.assertEqual(read(m.p("wf", "policy", "dedup_on")), b"any\n")
                self.assertEqual(os.listdir(m.p("wf", "keys")), ["k"])

    def test_bad_options_are_refused(self):
        store = os.path.join(self.tmp, "state.db")
        for opt in ("sync=sometimes", "max_result=lots", "max_checkpoint=-1"):
            r = self.oncefs(store, "create", opt)
            self.assertRefused(r, opt.split("=")[0])
            self.assertFalse(os.path.exists(store), opt)

    def test_missing_mountpoint_is_refused(self):
        store = os.path.join(self.tmp, "state.db")
        content = self.make_store(store)
        r = self.oncefs(store, mnt=os.path.join(self.tmp, "no-such-mnt"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no-such-mnt", r.stderr)
        self.assertEqual(daemons(os.path.join(self.tmp, "no-such-mnt")), [])
        r = self.oncefs(store)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read(os.path.join(self.mnt, "wf", "keys", "k")), content)


if __name__ == "__main__":
    run()

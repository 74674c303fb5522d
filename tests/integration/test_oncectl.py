"""oncectl against a real store, mounted and not, and the background sweep."""
import json
import os
import shlex
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import sqlite_only, Mount, MountedTest, claim, hold, read, write, run, _is_mounted  # noqa: E402

ONCECTL = os.environ.get("ONCECTL", os.path.join(os.path.dirname(os.environ.get("ONCEFS", "build/oncefs")), "oncectl"))


def ctl(*args):
    return subprocess.run([ONCECTL, *args], capture_output=True, text=True)


def ctlb(*args):
    """oncectl with bytes arguments; stdout as bytes."""
    return subprocess.run([os.fsencode(ONCECTL), *[a if isinstance(a, bytes) else a.encode() for a in args]],
                          capture_output=True)


def policy(wf, name, value):
    write(os.path.join(wf, "policy", name), value + "\n")


class Oncectl(MountedTest):
    def populate(self):
        fd = claim(self.key("done"))
        os.write(fd, b"succeeded\nthe result\n")
        os.close(fd)
        self.held = claim(self.key("running"))
        write(os.path.join(self.wf, "steps", "s1"), b"checkpoint", os.O_WRONLY | os.O_CREAT)

    def test_ls_show_events_while_mounted(self):
        self.populate()
        r = ctl("ls", self.m.store)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("wf", r.stdout)
        r = ctl("ls", "--json", self.m.store)
        self.assertEqual(json.loads(r.stdout)[0]["name"], "wf")
        r = ctl("ls", "--json", self.m.store, "wf")
        data = json.loads(r.stdout)
        keys = {k["name"]: k for k in data["keys"]}
        self.assertEqual(keys["done"]["status"], "succeeded")
        self.assertEqual(keys["running"]["status"], "in_flight")
        self.assertEqual(data["steps"][0]["name"], "s1")
        self.assertEqual(data["steps"][0]["size"], 10)
        r = ctl("show", self.m.store, "wf", "done")
        self.assertIn("succeeded", r.stdout)
        self.assertIn("the result", r.stdout)
        r = ctl("show", "--json", self.m.store, "wf", "done")
        self.assertEqual(json.loads(r.stdout)["result"], "the result\n")
        self.assertEqual(ctl("show", self.m.store, "wf", "nope").returncode, 1)
        self.assertEqual(ctl("ls", self.m.store, "nope").returncode, 1)
        r = ctl("events", "--json", self.m.store, "wf")
        events = [json.loads(line)["event"] for line in r.stdout.splitlines()]
        self.assertEqual(events[:3], ["create", "claim", "finalize"])
        self.assertEqual(r.stdout.encode(), read(os.path.join(self.wf, "events")))
        r = ctl("events", "--since", "1h", self.m.store, "wf")
        self.assertIn("finalize", r.stdout)
        r = ctl("events", "--since", "2999-01-01", self.m.store, "wf")
        self.assertEqual(r.stdout, "")
        self.assertEqual(ctl("events", "--since", "yesterday", self.m.store, "wf").returncode, 2)
        os.close(self.held)

    def test_json_names_are_utf8_or_hex(self):
        """--json writes UTF-8 names as the characters they are, and names
        that are not UTF-8 as FIELD_hex (the daemon's events convention)."""
        root = os.fsencode(self.m.path)
        cafe = "caf\u00e9".encode()                       # b"caf\xc3\xa9"
        os.mkdir(root + b"/" + cafe)
        os.mkdir(root + b"/\xff")
        keys = os.fsencode(self.wf) + b"/keys/"
        names = {
            "\u00e9": "r\u00e9sum\u00e9\n",           # é, and a UTF-8 result
            "\U0001d11e-\u65e5": "ok",               # four- and three-byte characters
            "tab\tnl\nq\"b\\\x7f\x01": "",        # control characters, quote, backslash
        }
        for name, result in names.items():
            fd = claim(keys + name.encode())
            os.write(fd, b"succeeded\n" + result.encode())
            os.close(fd)
        fd = claim(keys + b"\xff\xfe")                 # not UTF-8, and a result that is not either
        os.write(fd, b"succeeded\n\xc3\x28")
        os.close(fd)
        write(os.fsencode(self.wf) + b"/steps/\xc3\xa9tape", b"x", os.O_WRONLY | os.O_CREAT)

        r = ctlb("ls", "--json", self.m.store)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(cafe, r.stdout)                          # as is, not \u00c3\u00a9
        self.assertNotIn(b"\\u00c3", r.stdout)
        wfs = json.loads(r.stdout.decode("utf-8"))
        self.assertEqual(sorted(w.get("name", "") for w in wfs), ["", "caf\u00e9", "wf"])
        self.assertEqual([w["name_hex"] for w in wfs if "name_hex" in w], ["ff"])

        r = ctlb("ls", "--json", self.m.store, "wf")
        self.assertEqual(r.returncode, 0, r.stderr)
        data = json.loads(r.stdout.decode("utf-8"))
        got = sorted(k["name"] for k in data["keys"] if "name" in k)
        self.assertEqual(got, sorted(names))
        self.assertEqual([k["name_hex"] for k in data["keys"] if "name_hex" in k], ["fffe"])
        self.assertEqual([s["name"] for s in data["steps"]], ["\u00e9tape"])

        for name, result in names.items():
            r = ctlb("show", "--json", self.m.store, "wf", name.encode())
            self.assertEqual(r.returncode, 0, r.stderr)
            shown = json.loads(r.stdout.decode("utf-8"))
            self.assertEqual((shown["workflow"], shown["key"], shown["result"]), ("wf", name, result))
        r = ctlb("show", "--json", self.m.store, "wf", b"\xff\xfe")
        self.assertEqual(r.returncode, 0, r.stderr)
        shown = json.loads(r.stdout.decode("utf-8"))
        self.assertEqual((shown["key_hex"], shown["result_hex"]), ("fffe", "c328"))
        self.assertNotIn("key", shown)
        r = ctlb("show", "--json", self.m.store, cafe, b"nope")
        self.assertEqual(r.returncode, 1)
        r = ctlb("ls", "--json", self.m.store, cafe)
        self.assertEqual(json.loads(r.stdout.decode("utf-8")), {"keys": [], "steps": []})
        # events --json is the events file itself, byte for byte
        r = ctlb("events", "--json", self.m.store, "wf")
        self.assertEqual(r.stdout, read(os.path.join(self.wf, "events")))
        for line in r.stdout.decode("utf-8").splitlines():
            json.loads(line)

    def test_reads_create_nothing(self):
        """A store nobody has open: oncectl's read commands leave no -wal or
        -shm beside it, and a foreign WAL database is refused the same way."""
        self.populate()
        os.close(self.held)
        self.m.stop()
        side = lambda p: [x for x in (p + "-wal", p + "-shm") if os.path.exists(x)]  # noqa: E731
        self.assertEqual(side(self.m.store), [])
        for args in (("ls",), ("show", "wf", "done"), ("events", "wf"), ("check",)):
            r = ctl(*args[:1], self.m.store, *args[1:])
            self.assertEqual(r.returncode, 0, (args, r.stderr))
            self.assertEqual(side(self.m.store), [], args)
        other = os.path.join(self.m.tmp, "other.db")
        db = sqlite3.connect(other)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE t(x)")
        db.commit()
        db.close()
        self.assertEqual(side(other), [])
        r = ctl("ls", other)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(side(other), [], "a refused store got files beside it")
    @sqlite_only("edits the store file with sqlite3")

    def test_check(self):
        self.populate()
        r = ctl("check", self.m.store)
        self.assertEqual((r.returncode, r.stdout.strip().split()[-1]), (0, "ok"), r.stdout + r.stderr)
        os.close(self.held)
        self.m.stop()
        db = sqlite3.connect(self.m.store)
        db.execute("UPDATE keys SET generation = 999 WHERE name = CAST('done' AS BLOB)")
        db.execute("UPDATE steps SET size = 3")
        db.commit()
        db.close()
        r = ctl("check", self.m.store)
        self.assertEqual(r.returncode, 1)
        self.assertIn("beyond the sequence", r.stdout)
        self.assertIn("says 3 bytes, its content", r.stdout)

    def test_progress_on_a_terminal_only(self):
        self.populate()
        os.close(self.held)
        for cmd in (["check"], ["sweep", "--dry-run"]):
            # On a pipe: nothing but the result.
            r = ctl(*cmd, self.m.store)
            self.assertEqual((r.returncode, r.stderr), (0, ""), r.stderr)
            # On a terminal (script(1) gives it one): a line that says
            # what is going on, rewritten in place, cleared at the end.
            r = subprocess.run(["script", "-qec", shlex.join([ONCECTL] + cmd + [self.m.store]),
                                "/dev/null"], capture_output=True, timeout=60)
            out = r.stdout.decode()
            self.assertEqual(r.returncode, 0, out)
            self.assertIn("\r\x1b[K", out)
            self.assertRegex(out, "checking (the database's integrity|oncefs's invariants)"
                             if cmd[0] == "check" else "sweeping: ")
            self.assertRegex(out, r"\(\d+\.\d s\)")

    def test_init_and_refusals(self):
        path = os.path.join(self.m.tmp, "new.db")
        r = ctl("init", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(ctl("check", path).returncode, 0)
        self.assertEqual(ctl("ls", os.path.join(self.m.tmp, "missing.db")).returncode, 3)
        other = os.path.join(self.m.tmp, "other.db")
        sqlite3.connect(other).execute("CREATE TABLE t(x)").connection.commit()
        self.assertEqual(ctl("init", other).returncode, 3)
        self.assertEqual(ctl("frobnicate", path).returncode, 2)
        self.assertEqual(ctl().returncode, 2)
        self.assertEqual(ctl("--help").returncode, 0)
        self.assertEqual(ctl("--version").returncode, 0)

    def test_sweep_expired_and_retired(self):
        policy(self.wf, "in_flight_ttl", "1")
        hold(self.key("abandoned"))
        fd = claim(self.key("old"))
        os.write(fd, b"succeeded\n")
        os.close(fd)
        write(os.path.join(self.wf, "input.fingerprint"), "v1")
        write(os.path.join(self.wf, "steps", "s"), b"x", os.O_WRONLY | os.O_CREAT)
        write(os.path.join(self.wf, "input.fingerprint"), "v2")  # s is now old
        time.sleep(1.2)
        r = ctl("sweep", "--dry-run", self.m.store)
        self.assertIn("would remove: 1 expired claims, 0 keys past retention", r.stdout)
        self.assertTrue(os.path.exists(self.key("old")))
        policy(self.wf, "retention", "0")
        r = ctl("sweep", self.m.store)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("removed: 1 expired claims", r.stdout)
        self.assertIn("keys past retention", r.stdout)
        self.assertFalse(os.path.exists(self.key("old")))  # retention 0: retired
        events = read(os.path.join(self.wf, "events")).decode()
        # retention 0 drops the log too, but for what the sweep itself wrote
        for line in events.splitlines():
            json.loads(line)
        self.assertEqual(os.stat(os.path.join(self.wf, "events")).st_size, len(events.encode()))
        self.assertEqual(ctl("check", self.m.store).returncode, 0)
        # the abandoned claim keeps its attempt count
        hold(self.key("abandoned"))
    @sqlite_only("edits the store file with sqlite3")

    def test_background_sweep(self):
        self.m.restart(options=["sweep_interval=1"])
        policy(self.wf, "in_flight_ttl", "1")
        for i in range(300):
            hold(self.key("k%d" % i))
        deadline = time.time() + 15
        while time.time() < deadline:
            db = sqlite3.connect(self.m.store, timeout=5)
            left = db.execute("SELECT count(*) FROM keys WHERE status = 1").fetchone()[0]
            db.close()
            if left == 0:
                break
            time.sleep(0.3)
        self.assertEqual(left, 0)
        self.assertIn('"expire"', read(os.path.join(self.wf, "events")).decode())
        self.assertEqual(ctl("check", self.m.store).returncode, 0)


def unprivileged_user():
    for name in ("oncefs-test", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    return None


def _umount(path):
    for args in (["umount", path], ["umount", "-l", path]):
        if not _is_mounted(path):
            return
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
@sqlite_only("a store file in a directory the user cannot write")


class ReadOnlyDirectory(unittest.TestCase):
    """Read commands (ls, show, events, check) on a healthy store whose
    directory cannot be written: a read-only bind mount, or a directory the
    invoking user may read but not write."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oncefs-ctl-ro-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.store = os.path.join(self.tmp, "state.db")
        with Mount(store=self.store, tmp=self.tmp) as m:
            os.mkdir(m.p("wf"))
            fd = claim(m.p("wf", "keys", "done"))
            os.write(fd, b"succeeded\nthe result\n")
            os.close(fd)
        os.chmod(self.store, 0o644)
        # The daemon's last connection removed them: the store is not in use.
        self.assertFalse(os.path.exists(self.store + "-wal"))
        self.assertFalse(os.path.exists(self.store + "-shm"))
        self.ro = tempfile.mkdtemp(prefix="ro-", dir=self.tmp)
        r = subprocess.run(["mount", "--bind", "-o", "ro", self.tmp, self.ro], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("mount --bind -o ro: " + r.stderr.strip())
        self.addCleanup(_umount, self.ro)
        self.ro_store = os.path.join(self.ro, "state.db")
        self.assertFalse(os.access(self.ro, os.W_OK))

    def as_user(self, *args):
        u = unprivileged_user()
        if u is None:
            self.skipTest("no unprivileged user")
        return subprocess.run(["setpriv", "--reuid=%d" % u.pw_uid, "--regid=%d" % u.pw_gid, "--clear-groups",
                               ONCECTL, *args], capture_output=True, text=True)

    def assertReads(self, store, runner=ctl):
        r = runner("ls", store)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("wf", r.stdout)
        r = runner("ls", "--json", store, "wf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["keys"][0]["name"], "done")
        r = runner("show", "--json", store, "wf", "done")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["result"], "the result\n")
        r = runner("events", store, "wf")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("finalize", r.stdout)
        r = runner("check", store)
        self.assertEqual((r.returncode, r.stdout.split()[-1:]), (0, ["ok"]), r.stdout + r.stderr)

    def test_while_mounted(self):
        """A daemon has the store open, so its -wal and -shm exist: SQLite
        (>= 3.22) reads a WAL database through a read-only -shm."""
        with Mount(store=self.store, options=(), tmp=self.tmp):
            self.assertTrue(os.path.exists(self.ro_store + "-shm"))
            self.assertReads(self.ro_store)
            self.assertReads(self.store, self.as_user)

    def test_refusal_names_the_reason(self):
        """Until the store can read it (below), the refusal says why, and
        does not call a healthy store corrupt."""
        for r in (ctl("ls", self.ro_store), self.as_user("ls", self.store)):
            if r.returncode == 0:
                continue
            self.assertEqual(r.returncode, 3)
            self.assertNotIn("corrupt", r.stderr)
            self.assertNotIn("not an oncefs store", r.stderr)
            self.assertIn("read-only", r.stderr)
            self.assertIn("-shm", r.stderr)
        self.assertFalse(os.path.exists(self.store + "-shm"))

    # A read-only open of a WAL store that no one has open (no -shm) would
    # need SQLite to create STORE-shm; store_open() instead opens it
    # immutable under an OFD read lock on SQLite's SHARED bytes and checks
    # at the end of each read that no -wal appeared (see open_untouched()).
    def test_not_in_use_behind_a_read_only_bind_mount(self):
        self.assertReads(self.ro_store)

    def test_not_in_use_in_a_directory_the_user_cannot_write(self):
        self.assertReads(self.store, self.as_user)


if __name__ == "__main__":
    run()

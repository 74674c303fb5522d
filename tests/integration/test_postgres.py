"""PostgreSQL stores, against a real server (tests/integration/pgserver.py).

Each way a PostgreSQL store can be wrong gets one clear line and a
non-zero exit, from the daemon and from oncectl alike; a database it can
use mounts, named in any of libpq's forms, with -o create making the
schema once.  (The whole suite also runs on PostgreSQL: meson's
"postgres" suite; mounts on many hosts: test_hosts.py.)
"""
import errno
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pgserver  # noqa: E402
from harness import ONCEFS  # noqa: E402

ONCECTL = os.environ.get("ONCECTL", os.path.join(os.path.dirname(ONCEFS), "oncectl"))


@unittest.skipUnless(pgserver.available(), "no PostgreSQL server binaries (scripts/deps installs postgresql)")
class Refusals(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgserver.PgServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.stop()

    def setUp(self):
        self.mnt = tempfile.mkdtemp(prefix="oncefs-pg-mnt-")
        self.addCleanup(os.rmdir, self.mnt)
        self.addCleanup(self.unmount)

    def unmount(self):
        """Whatever a test left mounted (a refusal that mounted) goes."""
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)

    def run_refused(self, argv, env):
        """Run argv, which should fail; a daemon that mounts instead is
        unmounted, and then fails the test."""
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            if os.path.ismount(self.mnt):
                self.unmount()
                p.wait(timeout=30)
                p.communicate()
                self.fail("%s mounted instead of refusing" % argv)
            time.sleep(0.02)
        if p.poll() is None:
            p.kill()
        out, err = p.communicate()
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    def refused(self, name, want, env=None, options="create", ctl_args=()):
        """oncefs and oncectl both refuse name with one line holding want."""
        e = dict(os.environ, PGPASSWORD=pgserver.PASSWORD, PGCONNECT_TIMEOUT="5")
        e.pop("PGSERVICEFILE", None)
        e.update(env or {})
        ctl = "init" if "create" in options else "ls"     # init creates, as -o create
        for argv in ([ONCEFS, "-f", "-o", options, name, self.mnt],
                     [ONCECTL, ctl, name, *ctl_args]):
            r = self.run_refused(argv, e)
            lines = r.stderr.strip().splitlines()
            self.assertNotEqual(r.returncode, 0, argv)
            self.assertEqual(len(lines), 1, r.stderr)
            self.assertIn(want, lines[0], argv)
        return lines[0]

    def url(self, db="postgres"):
        return self.pg.url(db, password=None)

    def test_a_password_in_the_name_is_refused(self):
        self.refused(self.pg.url(), "holds a password")
        self.refused("host=127.0.0.1 port=%d dbname=postgres user=oncefs password=x" % self.pg.port,
                     "holds a password")

    def test_a_wrong_password(self):
        self.refused(self.url(), "password authentication failed", env={"PGPASSWORD": "wrong"})

    def test_a_missing_database(self):
        self.refused(self.url("nope"), 'database "nope" does not exist')

    def test_an_unreachable_server(self):
        self.refused(self.pg.url(port=pgserver._free_port(), password=None), "Connection refused")

    def test_no_store_without_create(self):
        line = self.refused(self.url(), "holds no oncefs store", options="sync=full")
        self.assertIn("-o create", line)

    def test_a_newer_schema(self):
        self.pg.psql("CREATE DATABASE newer")
        self.pg.psql("CREATE SCHEMA oncefs; CREATE TABLE oncefs.meta(name text PRIMARY KEY, value text);"
                     "INSERT INTO oncefs.meta VALUES ('schema_version', '99')", db="newer")
        self.refused(self.url("newer"), "newer than this oncefs")

    def mounts(self, name, env=None, options="create", then=None, ctl_args=()):
        """oncefs mounts name, a claim works, and oncectl reads it back;
        then(mountpoint), when given, runs while it is mounted."""
        e = dict(os.environ, PGPASSWORD=pgserver.PASSWORD, PGCONNECT_TIMEOUT="5")
        e.pop("PGSERVICEFILE", None)
        e.update(env or {})
        d = subprocess.Popen([ONCEFS, "-f", "-o", options, name, self.mnt], env=e,
                             stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(300):
                if os.path.ismount(self.mnt) or d.poll() is not None:
                    break
                time.sleep(0.05)
            self.assertTrue(os.path.ismount(self.mnt), d.stderr.read() if d.poll() is not None else "")
            wf = os.path.join(self.mnt, "wf-%d" % os.getpid())
            if not os.path.isdir(wf):
                os.mkdir(wf)
            key = os.path.join(wf, "keys", "k%d" % time.monotonic_ns())
            with open(key, "x") as f:
                f.write("succeeded\nok")
            with open(key) as f:
                self.assertTrue(f.read().startswith("succeeded "))
            if then:
                then(self.mnt)
        finally:
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
            d.wait(timeout=30)
            d.stderr.close()
        r = subprocess.run([ONCECTL, "ls", name, *ctl_args], capture_output=True, text=True,
                           env=e, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("wf-%d" % os.getpid(), r.stdout)
        return r.stdout

    def test_every_form_of_a_name_mounts(self):
        self.pg.psql("CREATE DATABASE forms")
        self.mounts(self.url("forms"))                  # -o create makes the schema
        self.mounts(self.url("forms"), options="sync=full")     # and then it is there
        self.mounts("postgres://oncefs@127.0.0.1:%d/forms" % self.pg.port)
        self.mounts("host=127.0.0.1 port=%d dbname=forms user=oncefs" % self.pg.port)
        services = os.path.join(self.pg.tmp, "services")
        with open(services, "w") as f:
            f.write("[jobs]\nhost=127.0.0.1\nport=%d\ndbname=forms\nuser=oncefs\n" % self.pg.port)
        self.mounts("service=jobs", env={"PGSERVICEFILE": services})
        self.mounts(self.pg.socket_url("forms"))

    def test_one_database_holds_a_store_per_schema(self):
        self.pg.psql("CREATE DATABASE schemas")
        url = self.url("schemas")

        def make_wf(name):
            return lambda mnt: os.mkdir(os.path.join(mnt, name))
        self.mounts(url, options="create,pg_schema=team_a", then=make_wf("only-a"),
                    ctl_args=("--pg-schema", "team_a"))
        self.mounts(url, options="create,pg_schema=team_b", then=make_wf("only-b"),
                    ctl_args=("--pg-schema", "team_b"))
        a = self.mounts(url, options="pg_schema=team_a", ctl_args=("--pg-schema", "team_a"))
        b = self.mounts(url, options="pg_schema=team_b", ctl_args=("--pg-schema", "team_b"))
        self.assertIn("only-a", a)
        self.assertNotIn("only-b", a)
        self.assertIn("only-b", b)
        self.assertNotIn("only-a", b)
        tables = self.pg.psql("SELECT table_schema, count(*) FROM information_schema.tables "
                              "WHERE table_name = 'keys' GROUP BY 1 ORDER BY 1", db="schemas")
        self.assertEqual(tables.split(), ["team_a|1", "team_b|1"])   # no schema oncefs made
        # A schema that is not there is no store, whatever the database holds.
        self.refused(url, "holds no oncefs store (schema team_c)", options="pg_schema=team_c",
                     ctl_args=("--pg-schema", "team_c"))

    def test_a_schema_of_another_role_is_refused(self):
        """Tables (and triggers on them) that another role controls would
        run its code with the mount's rights: a schema must be the mount's
        role's own.  (The test server's oncefs is a superuser, a member of
        every role: a plain role connects here.)"""
        self.pg.psql("CREATE ROLE attacker; CREATE ROLE victim LOGIN PASSWORD '%s'"
                     % pgserver.PASSWORD)
        self.pg.psql("CREATE DATABASE owners OWNER victim")
        self.pg.psql("CREATE SCHEMA trap AUTHORIZATION attacker; "
                     "GRANT USAGE, CREATE ON SCHEMA trap TO victim", db="owners")
        url = self.pg.url("owners", user="victim", password=None)
        self.refused(url, "belongs to the role attacker", options="create,pg_schema=trap",
                     ctl_args=("--pg-schema", "trap"))
        self.assertEqual(self.pg.psql("SELECT count(*) FROM information_schema.tables "
                                      "WHERE table_schema = 'trap'", db="owners").strip(), "0")
        self.refused(url, "nor public", options="create,pg_schema=public",
                     ctl_args=("--pg-schema", "public"))
        # Its own schema it uses.
        self.mounts(url, options="create,pg_schema=mine", ctl_args=("--pg-schema", "mine"))

    def test_a_schema_name_that_needs_quoting_is_refused(self):
        for bad in ("Team", "a;drop", "pg_catalog", "1st", "x" * 64, ""):
            self.refused(self.url(), "a schema's name is", options="create,pg_schema=" + bad,
                         ctl_args=("--pg-schema", bad))
        self.assertEqual(self.pg.psql("SELECT count(*) FROM information_schema.schemata "
                                      "WHERE schema_name NOT LIKE 'pg_%' AND schema_name "
                                      "NOT IN ('public', 'information_schema', 'oncefs')").strip(),
                         "0")

    def test_pg_schema_on_a_sqlite_store_is_refused(self):
        db = os.path.join(self.mnt + "-x.db")
        self.addCleanup(lambda: os.path.exists(db) and os.unlink(db))
        self.refused(db, "pg_schema is for a PostgreSQL store", options="create,pg_schema=a",
                     ctl_args=("--pg-schema", "a"))
        self.assertFalse(os.path.exists(db))

    def test_a_serialization_failure_is_tried_again(self):
        """A claim the server rolls back with SQLSTATE 40001 (as CockroachDB's
        SERIALIZABLE does under contention; injected here by a trigger that
        fails while a sequence, which no rollback turns back, is low) is
        sent again: the open succeeds.  One that keeps failing is EAGAIN
        after 8 tries, and leaves no key."""
        self.pg.psql("CREATE DATABASE conflicts")
        url = self.url("conflicts")
        self.mounts(url)            # the schema, and a workflow
        self.pg.psql("CREATE SEQUENCE public.injected; "
                     "CREATE TABLE public.fail_below(n bigint); "
                     "INSERT INTO public.fail_below VALUES (3); "
                     "CREATE FUNCTION public.conflict() RETURNS trigger LANGUAGE plpgsql AS $$ "
                     "BEGIN IF nextval('public.injected') <= (SELECT n FROM public.fail_below) "
                     "THEN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END IF; "
                     "RETURN NEW; END $$; "
                     "CREATE TRIGGER conflict BEFORE INSERT ON oncefs.keys FOR EACH ROW "
                     "EXECUTE FUNCTION public.conflict()", db="conflicts")

        def claims(mnt):
            # mounts() has claimed a key first: three failures, then it.
            keys = os.path.join(mnt, "wf-%d" % os.getpid(), "keys")
            self.assertEqual(self.pg.psql("SELECT last_value FROM public.injected",
                                          db="conflicts").strip(), "4")
            with open(os.path.join(keys, "tried-again"), "x") as f:
                f.write("succeeded\n")
            self.pg.psql("UPDATE public.fail_below SET n = 1000000", db="conflicts")
            with self.assertRaises(OSError) as cm:
                open(os.path.join(keys, "never"), "x").close()
            self.assertEqual(cm.exception.errno, errno.EAGAIN)
            self.assertEqual(self.pg.psql("SELECT last_value FROM public.injected",
                                          db="conflicts").strip(), str(5 + 8))
            self.assertFalse(os.path.exists(os.path.join(keys, "never")))
            self.pg.psql("DROP TRIGGER conflict ON oncefs.keys", db="conflicts")
            with open(os.path.join(keys, "never"), "x") as f:   # and then it works
                f.write("succeeded\n")
            # The same failure raised by the COMMIT itself (a deferred trigger
            # fires there, as a serializable commit fails): tried again too.
            self.pg.psql("UPDATE public.fail_below SET n = (SELECT last_value FROM "
                         "public.injected) + 3; "
                         "CREATE CONSTRAINT TRIGGER late AFTER INSERT ON oncefs.keys "
                         "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                         "EXECUTE FUNCTION public.conflict()", db="conflicts")
            start = int(self.pg.psql("SELECT last_value FROM public.injected",
                                     db="conflicts"))
            with open(os.path.join(keys, "at-commit"), "x") as f:
                f.write("succeeded\n")
            self.assertEqual(int(self.pg.psql("SELECT last_value FROM public.injected",
                                              db="conflicts")), start + 4)
            self.pg.psql("DROP TRIGGER late ON oncefs.keys", db="conflicts")
        self.mounts(url, options="sync=full", then=claims)
        self.assertEqual(self.pg.psql("SELECT count(*) FROM oncefs.keys WHERE name IN "
                                      "('tried-again', 'never', 'at-commit') AND status = 2",
                                      db="conflicts").strip(), "3")

    def test_a_schema_of_an_older_version_is_refused(self):
        self.pg.psql("CREATE DATABASE older")
        self.pg.psql("CREATE SCHEMA oncefs; CREATE TABLE oncefs.meta(name text PRIMARY KEY, value text);"
                     "INSERT INTO oncefs.meta VALUES ('schema_version', '2')", db="older")
        self.refused(self.url("older"), "schema version 2")


    def test_a_schema_of_version_3_is_upgraded_by_a_mount_that_writes(self):
        self.pg.psql("CREATE DATABASE three")
        self.mounts(self.url("three"))
        # What version 3 had: no last_writes, no holder_host.
        self.pg.psql("DROP TABLE oncefs.last_writes; ALTER TABLE oncefs.keys DROP COLUMN "
                     "holder_host; UPDATE oncefs.meta SET value = '3' "
                     "WHERE name = 'schema_version'", db="three")
        e = dict(os.environ, PGPASSWORD=pgserver.PASSWORD)
        r = subprocess.run([ONCECTL, "ls", self.url("three")], capture_output=True, text=True,
                           env=e, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)      # read-only: read as it is
        self.assertEqual(self.pg.psql("SELECT value FROM oncefs.meta", db="three").strip(), "3")
        self.mounts(self.url("three"), options="sync=full")
        self.assertEqual(self.pg.psql("SELECT value FROM oncefs.meta", db="three").strip(), "4")
        self.assertEqual(self.pg.psql("SELECT count(*) FROM oncefs.last_writes", db="three").strip(),
                         "0")   # an unmount leaves no rows behind

    def test_an_operation_is_one_round_trip(self):
        """What each step of a claim's life costs, counted by the mount."""
        def round_trips(mnt):
            with open(os.path.join(mnt, ".stats")) as f:
                return int(next(l for l in f if l.startswith("round_trips ")).split()[1])

        def measure(mnt):
            wf = os.path.join(mnt, "wf-%d" % os.getpid())
            costs = {}
            for i in range(4):
                k = os.path.join(wf, "keys", "rt%d" % i)
                steps = [("claim", lambda: os.open(k, os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
                         ("write", lambda: os.write(fd, b"succeeded\n")),
                         ("finalize", lambda: os.close(fd))]
                for what, fn in steps:
                    before = round_trips(mnt)
                    r = fn()
                    if what == "claim":
                        fd = r
                    if i:       # the first uses prepare statements on a connection
                        costs.setdefault(what, set()).add(round_trips(mnt) - before)
            print("\nround trips (PostgreSQL): open(O_EXCL) %s (the path's LOOKUPs, the "
                  "GETATTR of keys/ the kernel asks after a CREATE, and the claim), write %s "
                  "(its checks), close %s (the finalize)"
                  % (sorted(costs["claim"]), sorted(costs["write"]), sorted(costs["finalize"])))
            # The claim (CREATE) and the finalize (FLUSH) are one flight each; the
            # rest of an open is one statement per request the kernel sends.
            self.assertLessEqual(max(costs["claim"]), 5, costs)
            self.assertEqual(costs["write"], {1}, costs)
            self.assertEqual(costs["finalize"], {1}, costs)
            # A checkpoint: its close stages the content, then swaps it in.
            for i in range(4):
                before = round_trips(mnt)
                fd = os.open(os.path.join(wf, "steps", "s%d" % i), os.O_WRONLY | os.O_CREAT)
                opened = round_trips(mnt)
                os.write(fd, b"x" * 1000)
                written = round_trips(mnt)
                os.close(fd)
                if i:
                    costs.setdefault("step open", set()).add(opened - before)
                    costs.setdefault("step write", set()).add(written - opened)
                    costs.setdefault("step commit", set()).add(round_trips(mnt) - written)
            print("round trips (PostgreSQL): a checkpoint's open %s, write %s, close %s "
                  "(staging the content, and the commit)"
                  % (sorted(costs["step open"]), sorted(costs["step write"]),
                     sorted(costs["step commit"])))
            # Staging one chunk (its content row, the chunk, the pin) and
            # one flight for the swap; it was 12 as a transaction of rows.
            self.assertLessEqual(max(costs["step commit"]), 6, costs)
            # A fingerprint is set by a transaction of row statements still.
            for i in range(3):
                fp = os.path.join(wf, "input.fingerprint")
                before = round_trips(mnt)
                with open(fp, "w") as f:
                    f.write("sha256:%064x\n" % i)
                if i:
                    costs.setdefault("fingerprint", set()).add(round_trips(mnt) - before)
            print("round trips (PostgreSQL): a fingerprint's open, write and close %s"
                  % sorted(costs["fingerprint"]))
        self.pg.psql("CREATE DATABASE trips")
        self.mounts(self.url("trips"), then=measure)

if __name__ == "__main__":
    unittest.main(verbosity=2)

"""PostgreSQL stores, against a real server (tests/integration/pgserver.py).

This build cannot keep a store in PostgreSQL yet (issue 11): what it does
is connect and check, so that each way a PostgreSQL store can be wrong
gets one clear line and a non-zero exit, from the daemon and from
oncectl alike, and a store it could use is refused saying why.
"""
import os
import subprocess
import sys
import tempfile
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

    def refused(self, name, want, env=None, options="create"):
        """oncefs and oncectl both refuse name with one line holding want."""
        e = dict(os.environ, PGPASSWORD=pgserver.PASSWORD, PGCONNECT_TIMEOUT="5")
        e.pop("PGSERVICEFILE", None)
        e.update(env or {})
        ctl = "init" if "create" in options else "ls"     # init creates, as -o create
        for argv in ([ONCEFS, "-f", "-o", options, name, self.mnt], [ONCECTL, ctl, name]):
            r = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=60,
                               stdin=subprocess.DEVNULL)
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
        self.assertNotIn("-o create", line)     # no advice that cannot work yet

    def test_a_newer_schema(self):
        self.pg.psql("CREATE DATABASE newer")
        self.pg.psql("CREATE SCHEMA oncefs; CREATE TABLE oncefs.meta(name text PRIMARY KEY, value text);"
                     "INSERT INTO oncefs.meta VALUES ('schema_version', '99')", db="newer")
        self.refused(self.url("newer"), "newer than this oncefs")

    def test_a_usable_database_is_refused_saying_why(self):
        line = self.refused(self.url(), "cannot keep a store there yet")
        self.assertIn("PostgreSQL 15", line)
        # Every form of a name: URL, postgres://, connection string, service.
        self.refused("postgres://oncefs@127.0.0.1:%d/postgres" % self.pg.port, "cannot keep a store")
        self.refused("host=127.0.0.1 port=%d dbname=postgres user=oncefs" % self.pg.port,
                     "cannot keep a store")
        services = os.path.join(self.pg.tmp, "services")
        with open(services, "w") as f:
            f.write("[jobs]\nhost=127.0.0.1\nport=%d\ndbname=postgres\nuser=oncefs\n" % self.pg.port)
        self.refused("service=jobs", "cannot keep a store", env={"PGSERVICEFILE": services})


if __name__ == "__main__":
    unittest.main(verbosity=2)

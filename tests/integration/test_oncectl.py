"""oncectl against a real store, mounted and not, and the background sweep."""
import json
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Mount, MountedTest, claim, read, write, run  # noqa: E402

ONCECTL = os.environ.get("ONCECTL", os.path.join(os.path.dirname(os.environ.get("ONCEFS", "build/oncefs")), "oncectl"))


def ctl(*args):
    return subprocess.run([ONCECTL, *args], capture_output=True, text=True)


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
        os.close(claim(self.key("abandoned")))
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
        fd = claim(self.key("abandoned"))
        os.close(fd)

    def test_background_sweep(self):
        self.m.restart(options=["sweep_interval=1"])
        policy(self.wf, "in_flight_ttl", "1")
        for i in range(300):
            os.close(claim(self.key("k%d" % i)))
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


if __name__ == "__main__":
    run()

"""Mounts on several hosts sharing one PostgreSQL store.

A host is a daemon in a mount namespace of its own (unshare -m): its
mount is seen only there, and the test runs its clients inside with
nsenter.  A daemon that dies takes its namespace, and so its mount, with
it: nothing is left mounted whatever fails.  Every host talks to one
private PostgreSQL server (pgserver.py) over loopback.

What is checked: one winner per round of racing claims from every host,
with generations unique across hosts; a stalled daemon (SIGSTOP past its
lease) whose key another host adopts, whose late finalize is ESTALE while
the adopter's result stands; hosts whose clocks are an hour off either
way (libfaketime) that agree with the others on every lease, because the
clock is the database's; the daemons' connections killed
(pg_terminate_backend) and the server restarted (pg_ctl restart -m
immediate) during a storm of claims: no acknowledged claim lost, no key
with two winners.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import pgserver  # noqa: E402
from harness import ONCEFS  # noqa: E402

ONCECTL = os.environ.get("ONCECTL", os.path.join(os.path.dirname(ONCEFS), "oncectl"))
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

# A client run on a host: claim each key named on the command line, in
# order, and say for each what happened, as one JSON line:
#   {"key": K, "won": true, "generation": G, "finalized": true} or
#   {"key": K, "won": false, "errno": E}
CLAIMER = r"""
import errno, json, os, socket, sys
wf, keys = sys.argv[1], sys.argv[2:]
for k in keys:
    path = os.path.join(wf, "keys", k)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as e:
        print(json.dumps({"key": k, "won": False, "errno": e.errno}), flush=True)
        continue
    out = {"key": k, "won": True, "host": socket.gethostname()}
    try:
        out["generation"] = int(os.getxattr(path, "user.oncefs.generation"))
        out["holder"] = os.getxattr(path, "user.oncefs.holder").decode()
        os.write(fd, b"succeeded\n" + k.encode())
        os.close(fd)
        out["finalized"] = True
    except OSError as e:
        out["finalized"] = False
        out["errno"] = e.errno
    print(json.dumps(out), flush=True)
"""


class Host:
    """One oncefs daemon in a mount namespace of its own, and a UTS
    namespace whose host name is host-NAME."""

    def __init__(self, url, tmp, name, options=("create", "lease=2"), env=None):
        self.name = name
        self.mnt = os.path.join(tmp, name)
        os.mkdir(self.mnt)
        self.log = open(os.path.join(tmp, name + ".log"), "ab")
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(
            ["unshare", "-m", "-u", "--propagation", "private", "--", "sh", "-c",
             'hostname "$0" && exec "$@"', "host-" + name, ONCEFS, "-f", "-o",
             ",".join(options), url, self.mnt],
            stdout=self.log, stderr=self.log, env=e)
        deadline = time.time() + 30
        while not self.mounted():
            if self.proc.poll() is not None:
                raise RuntimeError("%s: oncefs exited %d: %s" % (name, self.proc.returncode, self.read_log()))
            if time.time() > deadline:
                raise RuntimeError("%s did not mount: %s" % (name, self.read_log()))
            time.sleep(0.05)

    def read_log(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def run(self, argv, timeout=120, **kw):
        """argv inside this host's mount namespace."""
        return subprocess.run(["nsenter", "-t", str(self.proc.pid), "-m", "-u", "--"] + argv,
                              capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, argv, stdin=None):
        return subprocess.Popen(["nsenter", "-t", str(self.proc.pid), "-m", "-u", "--"] + argv,
                                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def mounted(self):
        if self.proc.poll() is not None:
            return False
        return self.run(["mountpoint", "-q", self.mnt], timeout=10).returncode == 0

    def p(self, *parts):
        return os.path.join(self.mnt, *parts)

    def claimer(self, wf, keys):
        return self.popen([sys.executable, "-c", CLAIMER, self.p(wf)] + list(keys))

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            self.run(["fusermount3", "-u", self.mnt], timeout=30)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def results(procs):
    """The JSON lines of claimer processes, all of them."""
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out += [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return out


@unittest.skipUnless(pgserver.available() and shutil.which("unshare") and shutil.which("nsenter"),
                     "needs PostgreSQL's server binaries, unshare and nsenter")
class Hosts(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = pgserver.PgServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.stop()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oncefs-hosts-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.db = "h%d" % (abs(hash(self.id())) % 10**8)
        self.pg.psql("CREATE DATABASE %s" % self.db)
        self.url = self.pg.socket_url(self.db)
        self.hosts = []

    def tearDown(self):
        for h in self.hosts:
            h.stop()
        for h in self.hosts:
            with open(h.log.name, errors="replace") as f:
                log = f.read()
            # A sanitizer report in any daemon fails the test.
            self.assertNotIn("ERROR: AddressSanitizer", log, h.name)
            self.assertNotIn("runtime error:", log, h.name)

    def host(self, name, **kw):
        h = Host(self.url, self.tmp, name, **kw)
        self.hosts.append(h)
        return h

    def sql(self, query):
        return self.pg.psql(query, db=self.db)

    def stored(self):
        """Every key in the store: name -> (status, generation)."""
        rows = self.sql("SELECT encode(name, 'escape'), status, generation FROM oncefs.keys")
        out = {}
        for line in rows.splitlines():
            name, status, gen = line.split("|")
            out[name] = (int(status), int(gen))
        return out

    def test_races_across_hosts_have_one_winner(self):
        hosts = [self.host("a"), self.host("b"), self.host("c")]
        self.assertEqual(hosts[0].run(["mkdir", hosts[0].p("wf")]).returncode, 0)
        keys = ["k%03d" % i for i in range(60)]
        # Two claimers per host, each trying every key in the same order.
        procs = [h.claimer("wf", keys) for h in hosts for _ in range(2)]
        got = results(procs)
        self.assertEqual(len(got), 6 * len(keys))
        winners = {}
        for r in got:
            if r["won"]:
                self.assertTrue(r["finalized"], r)
                self.assertNotIn(r["key"], winners, "two winners of %s" % r["key"])
                winners[r["key"]] = r["generation"]
                # user.oncefs.holder: PID UID HOST, the claimant's host.
                self.assertTrue(r["host"].startswith("host-"), r)
                self.assertEqual(r["holder"].split()[2], r["host"], r)
            else:
                self.assertEqual(r["errno"], 17, r)     # EEXIST
        self.assertEqual(sorted(winners), keys)
        self.assertEqual(len(set(winners.values())), len(keys), "a generation given twice")
        stored = self.stored()
        for k, g in winners.items():
            self.assertEqual(stored[k], (2, g))         # succeeded, the winner's generation
        # Each host reads every result, whoever wrote it, and who held it.
        claimant = next(r["holder"] for r in got if r["won"] and r["key"] == "k042")
        for h in hosts:
            r = h.run(["cat", h.p("wf", "keys", "k042")])
            self.assertEqual(r.stdout, "succeeded %d\nk042" % winners["k042"])
            r = h.run([sys.executable, "-c", "import os, sys; sys.stdout.write(os.getxattr("
                       "sys.argv[1], 'user.oncefs.holder').decode())", h.p("wf", "keys", "k042")])
            self.assertEqual(r.stdout, claimant, r.stderr)
        print("\n3 hosts x 2 claimers, %d keys: %d winners, %d generations" %
              (len(keys), len(winners), len(set(winners.values()))))

    def test_a_stalled_daemon_is_fenced_and_the_adopter_stands(self):
        a, b = self.host("a"), self.host("b")
        self.assertEqual(a.run(["mkdir", a.p("wf")]).returncode, 0)
        # A's worker claims and holds the key open, then A's daemon stalls.
        holder = a.popen([sys.executable, "-c", r"""
import os, sys
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
print(int(os.getxattr(path, "user.oncefs.generation")), flush=True)
sys.stdin.readline()
try:
    os.write(fd, b"succeeded\nfrom a")
    os.close(fd)
    print("ok", flush=True)
except OSError as e:
    print("errno", e.errno, flush=True)
""", a.p("wf", "keys", "job")], stdin=subprocess.PIPE)
        gen_a = int(holder.stdout.readline())
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(3)                               # past lease=2
            r = b.run([sys.executable, "-c", CLAIMER, b.p("wf"), "job"])
            adopted = json.loads(r.stdout)
            self.assertTrue(adopted["won"], adopted)
            self.assertGreater(adopted["generation"], gen_a)
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        # A's worker goes on and finalizes late: fenced, with ESTALE.
        out, _ = holder.communicate(input="\n", timeout=60)
        self.assertEqual(out.strip(), "errno 116", out)
        for h in (a, b):
            r = h.run(["cat", h.p("wf", "keys", "job")])
            self.assertEqual(r.stdout, "succeeded %d\njob" % adopted["generation"], h.name)
        self.assertEqual(self.stored()["job"], (2, adopted["generation"]))
        print("\nstalled past its lease: generation %d fenced (ESTALE), adopter's %d stands"
              % (gen_a, adopted["generation"]))

    @unittest.skipUnless(os.path.exists(FAKETIME), "needs libfaketime (Debian's faketime)")
    def test_hosts_whose_clocks_are_off_agree_on_leases(self):
        skew = {"LD_PRELOAD": FAKETIME, "FAKETIME_NO_CACHE": "1",
                "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
        late = self.host("late", env=dict(skew, FAKETIME="-1h"))
        early = self.host("early", env=dict(skew, FAKETIME="+1h"))
        right = self.host("right")
        self.assertEqual(right.run(["mkdir", right.p("wf")]).returncode, 0)
        for holder_host, name in ((late, "a"), (early, "b"), (right, "c")):
            # Held past three leases (lease=2): renewed on the holder's host.
            hold = holder_host.popen([sys.executable, "-c", r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
print("held", flush=True)
time.sleep(7)
""", holder_host.p("wf", "keys", name)])
            self.assertEqual(hold.stdout.readline().strip(), "held")
            try:
                time.sleep(3)
                # Every other host sees the claim live, whatever its clock.
                for other in (late, early, right):
                    if other is holder_host:
                        continue
                    r = other.run([sys.executable, "-c", CLAIMER, other.p("wf"), name])
                    self.assertEqual(json.loads(r.stdout)["errno"], 17,
                                     "%s took %s's claim on %s" % (other.name, holder_host.name, name))
            finally:
                hold.kill()
                hold.communicate()
        # The times in the events are the database's: none an hour off.
        r = late.run(["cat", late.p("wf", "events")])
        now = time.time()
        for line in r.stdout.splitlines():
            t = time.mktime(time.strptime(json.loads(line)["time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            self.assertLess(abs(t - now), 600, line)

    def storm(self, disrupt):
        """Claims from two hosts while disrupt() runs; what was acknowledged."""
        hosts = [self.host("a"), self.host("b")]
        self.assertEqual(hosts[0].run(["mkdir", hosts[0].p("wf")]).returncode, 0)
        keys = ["s%04d" % i for i in range(400)]
        procs = [h.claimer("wf", keys) for h in hosts for _ in range(2)]
        time.sleep(0.5)
        disrupt()
        got = results(procs)
        acked = {}
        for r in got:
            if r["won"] and r["finalized"]:
                self.assertNotIn(r["key"], acked, "two acknowledged winners of %s" % r["key"])
                acked[r["key"]] = r["generation"]
        stored = self.stored()
        lost = [k for k, g in acked.items() if stored.get(k) != (2, g)]
        self.assertEqual(lost, [], "acknowledged finalizes lost")
        errors = {}
        for r in got:
            if not (r["won"] and r["finalized"]):
                errors[r.get("errno")] = errors.get(r.get("errno"), 0) + 1
        # Both hosts still work afterwards, by themselves.
        for h in hosts:
            r = h.run([sys.executable, "-c", CLAIMER, h.p("wf"), "after-" + h.name])
            self.assertTrue(json.loads(r.stdout)["won"], r.stdout + r.stderr + h.read_log())
        return len(acked), errors

    def test_a_server_that_is_down_is_waited_for_then_eagain(self):
        h = self.host("a", options=("create", "lease=2", "busy_timeout=1500"))
        self.assertEqual(h.run(["mkdir", h.p("wf")]).returncode, 0)
        self.pg.halt()
        try:
            t0 = time.monotonic()
            r = h.run([sys.executable, "-c", CLAIMER, h.p("wf"), "down"])
            took = time.monotonic() - t0
        finally:
            self.pg.resume()
        out = json.loads(r.stdout)
        self.assertFalse(out["won"], out)
        self.assertEqual(out["errno"], errno.EAGAIN, out)
        # It waited busy_timeout for the server, and not for ever.
        self.assertGreaterEqual(took, 1.4)
        self.assertLess(took, 30)
        # Back by itself, without a remount; the key was never claimed.
        r = h.run([sys.executable, "-c", CLAIMER, h.p("wf"), "down", "after"])
        got = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertTrue(all(g["won"] and g["finalized"] for g in got), r.stdout + h.read_log())
        print("\nserver down: a claim failed EAGAIN after %.1f s (busy_timeout=1.5 s); "
              "claims work again once it is back" % took)

    def test_connections_killed_during_a_claim_storm(self):
        def kill():
            for _ in range(5):
                self.pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = '%s' AND pid <> pg_backend_pid()" % self.db)
                time.sleep(0.3)
        acked, errors = self.storm(kill)
        print("\nconnections killed 5 times: %d claims acknowledged, 0 lost, 0 double; "
              "other outcomes %s" % (acked, errors))

    def test_the_server_restarted_during_a_claim_storm(self):
        def restart():
            # -l: the new server must not hold pg_ctl's output pipes open.
            r = self.pg._as_postgres(os.path.join(self.pg.bin, "pg_ctl"), "-D", self.pg.data,
                                     "-l", os.path.join(self.pg.tmp, "server.log"),
                                     "-m", "immediate", "-w", "-t", "60", "restart")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        acked, errors = self.storm(restart)
        print("\nserver restarted (immediate): %d claims acknowledged, 0 lost, 0 double; "
              "other outcomes %s" % (acked, errors))


if __name__ == "__main__":
    unittest.main(verbosity=2)

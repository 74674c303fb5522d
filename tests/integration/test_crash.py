"""The crash harness (tests/crash/driver.py), short: concurrent clients,
the daemon killed with SIGKILL 20 times at random moments and remounted on
the same store; after every remount, nothing acknowledged is lost, no
checkpoint is torn, no key had two owners, no generation is reused.
scripts/crash-test runs the long version.

The checker itself is tested first, on histories made up here: a checker
that accepts everything would pass any daemon.  OneOpenOneClaim checks,
without a crash, the one thing the crash test found: an open(O_EXCL) must
make exactly the claims it reports."""
import json
import multiprocessing
import os
import random
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crash"))
from harness import Mount, claim, read, run  # noqa: E402
import driver  # noqa: E402
from driver import INF, Gens, key_step, linearize, solo_step, step_step, version_bytes, version_of  # noqa: E402

KILLS = int(os.environ.get("CRASH_KILLS", "20"))


def op(kind, start, end, res, **kw):
    return dict(id=kw.pop("id", "%s@%s" % (kind, start)), kind=kind, start=start,
                end=INF if res is None else end, res=res, **kw)


def key_ok(ops, before, after, gens=None):
    gens = gens or Gens()
    return linearize(ops, before, key_step, driver.key_final(gens, after), gens)


class Checker(unittest.TestCase):
    def test_acknowledged_claim_must_survive(self):
        c = op("claim", 0, 1, "ok", tok="c1")
        self.assertTrue(key_ok([c], None, ("in_flight", 17)))
        self.assertFalse(key_ok([c], None, None), "a lost claim is caught")

    def test_maybe_claim_may_or_may_not_survive(self):
        c = op("claim", 0, None, None, tok="c1")
        self.assertTrue(key_ok([c], None, None))
        self.assertTrue(key_ok([c], None, ("in_flight", 17)))

    def test_two_owners(self):
        a = op("claim", 0, 2, "ok", tok="a")
        b = op("claim", 1, 3, "ok", tok="b")
        self.assertFalse(key_ok([a, b], None, ("in_flight", 5)))
        rel = op("release", 1.5, 1.7, "ok")
        self.assertTrue(key_ok([a, rel, b], None, ("in_flight", 5)))
        self.assertFalse(key_ok([a, b, dict(rel, start=4, end=5)], None, None),
                         "a release after both claims does not excuse them")

    def test_two_owners_check_takes_either_order(self):
        """The explicit two-owners check: a claim that started first may
        have been the later one."""
        r = driver.Run.__new__(driver.Run)
        r.violations, r.out = [], open(os.devnull, "w")
        self.addCleanup(r.out.close)
        ops = [op("claim", 0, 10, "ok", tok="a", obj="key:x", id="a", worker=0),
               op("claim", 1, 2, "ok", tok="b", obj="key:x", id="b", worker=1),
               op("release", 3, 4, "ok", obj="key:x", id="r", worker=2)]
        self.assertEqual(r.two_owners(0, {"key:x": ops}), [])
        self.assertEqual(len(r.two_owners(0, {"key:x": ops[:2]})), 1)

    def test_finalize(self):
        c = op("claim", 0, 1, "ok", tok="c")
        f = op("finalize", 2, 3, "ok", tok="c", status="succeeded", result=b"r")
        gens = Gens()
        gens.of_tok["c"] = 9
        self.assertTrue(key_ok([c, f], None, ("succeeded", 9, b"r"), gens))
        self.assertFalse(key_ok([c, f], None, ("in_flight", 9), gens), "a lost finalize is caught")
        self.assertFalse(key_ok([c, f], None, ("succeeded", 9, b"other"), gens))
        self.assertFalse(key_ok([c, f], None, ("succeeded", 10, b"r"), gens), "another generation")
        failed = dict(f, status="failed", result=b"")
        self.assertTrue(key_ok([c, failed], None, None), "failed under dedup_on=success frees the key")
        stale = dict(f, res="ESTALE")
        self.assertFalse(key_ok([c, stale], None, ("in_flight", 9), gens), "no reason to be fenced")
        rel = op("release", 1.2, 1.5, "ok")
        self.assertTrue(key_ok([c, rel, stale], None, None, gens))

    def test_finalize_by_path(self):
        f = op("finalize_path", 0, 1, "ok", gen=4, result=b"x")
        self.assertTrue(key_ok([f], ("in_flight", 4), ("succeeded", 4, b"x")))
        self.assertFalse(key_ok([f], ("in_flight", 5), ("succeeded", 5, b"x")))
        self.assertTrue(key_ok([dict(f, res="ESTALE")], ("in_flight", 5), ("in_flight", 5)))

    def test_release(self):
        r = op("release", 0, 1, "ok")
        self.assertTrue(key_ok([r], ("succeeded", 3, b""), None))
        self.assertFalse(key_ok([r], ("succeeded", 3, b""), ("succeeded", 3, b"")), "a lost release")
        self.assertFalse(key_ok([r], None, None), "released what was not there")

    def test_untouched_state_must_stay(self):
        self.assertTrue(key_ok([], ("in_flight", 3), ("in_flight", 3)))
        self.assertFalse(key_ok([], ("in_flight", 3), None))

    def test_checkpoints(self):
        g = Gens()
        same = lambda want: (lambda s: s == want)  # noqa: E731
        cr = op("create", 0, 1, "ok")
        cm = op("commit", 1, 2, "ok", v="v1")
        self.assertTrue(linearize([cr, cm], None, step_step, same("v1"), g))
        self.assertFalse(linearize([cr, cm], None, step_step, same(""), g), "a lost commit")
        self.assertFalse(linearize([cr, cm], "v0", step_step, same("v0"), g))
        maybe = dict(cm, res=None, end=INF)
        for final in ("v0", "v1"):
            self.assertTrue(linearize([cr, maybe], "v0", step_step, same(final), g))
        self.assertFalse(linearize([op("create", 0, None, None)], None, step_step, same(""), g),
                         "a create never committed leaves no checkpoint")
        self.assertFalse(linearize([cr], None, step_step, same(""), g),
                         "an acknowledged create alone leaves no checkpoint")
        rd = op("read", 3, 4, ("version", "v0"))
        self.assertFalse(linearize([cr, cm, rd], None, step_step, same("v1"), g), "a stale read")

    def test_torn_content_is_recognized(self):
        a, b = version_bytes("r1.w0.1"), version_bytes("r1.w1.2")
        self.assertEqual(version_of(a), "r1.w0.1")
        self.assertEqual(version_of(b""), "")
        n = min(len(a), len(b)) // 2 or 1
        self.assertIsNone(version_of(a[:n] + b[n:]))
        self.assertIsNone(version_of(a[:-1]))

    def test_solo_reset(self):
        g = Gens()
        init = ("", (), ())
        ops = [op("create", 0, 1, "ok", step="a"), op("commit", 1, 2, "ok", step="a", v="v"),
               op("fp_write", 3, 4, "ok", value="in-1")]
        self.assertTrue(linearize(ops, init, solo_step, lambda s: s == ("in-1", (), ()), g))
        self.assertFalse(linearize(ops, init, solo_step, lambda s: s == ("in-1", (("a", "v"),), ()), g),
                         "a reset that did not happen")


ctx = multiprocessing.get_context("fork")


def _claimer(path, seconds, q):
    ok = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            fd = claim(path)
        except OSError:
            continue
        ok += 1
        os.close(fd)
    q.put((os.getpid(), ok))


def _releaser(path, seconds, q):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            os.unlink(path)
        except OSError:
            pass
    q.put(None)


class OneOpenOneClaim(unittest.TestCase):
    """What the crash test's linearizability check found, without a crash:
    each open(O_CREAT|O_EXCL) that returns makes one claim, and one that
    fails makes none, even while other processes release the key.  The
    events log names the pid of every claim; it must hold as many claims
    of a process as its open() calls returned."""

    def test_claims_in_events_match_successful_opens(self):
        with Mount() as m:
            os.mkdir(m.p("wf"))
            k = m.p("wf", "keys", "k")
            q = ctx.Queue()
            procs = [ctx.Process(target=_claimer, args=(k, 6, q)) for _ in range(2)] + \
                    [ctx.Process(target=_releaser, args=(k, 6, q)) for _ in range(4)]
            for p in procs:
                p.start()
            out = [q.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(timeout=30)
            events = [json.loads(line) for line in read(m.p("wf", "events")).decode().splitlines()]
            for pid, ok in (o for o in out if o):
                claims = [e["generation"] for e in events if e["event"] == "claim" and e["pid"] == pid]
                self.assertEqual(len(claims), ok,
                                 "process %d: open(O_EXCL) succeeded %d times, the events log has %d "
                                 "claims by it: an open() made a claim it did not return (after "
                                 "CREATE, the kernel's permission check sends GETATTR for the new "
                                 "key; if a concurrent rm released it, GETATTR says ESTALE and the "
                                 "VFS retries the whole open, which claims again)" % (pid, ok, len(claims)))


class Crash(unittest.TestCase):
    def test_kills(self):
        seed = int(os.environ.get("CRASH_SEED", random.randrange(1 << 32)))
        print("crash test: seed %d (CRASH_SEED=%d to repeat the choices)" % (seed, seed))
        r = driver.Run(workers=4, seed=seed)
        ok = r.run(KILLS)
        print(r.summary())
        self.assertEqual(r.kills, KILLS)
        self.assertTrue(ok, "\n\n".join(r.violations[:5]))
        self.assertGreater(r.known, 100 * KILLS // 10, "the clients did some work")


if __name__ == "__main__":
    run()

"""Claims raced by many separate processes, on one mount and across two
mounts that share one store: exactly one O_EXCL create wins each key,
every other one gets EEXIST."""
import errno
import json
import multiprocessing
import os
import queue
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Mount, MountedTest, claim, hold, read, write, sh, run  # noqa: E402

PROCS = 32
ROUNDS = 40
RESULT_TIMEOUT = 120

# Separate processes (fork, not threads): each has its own pid, its own
# file table and its own FUSE requests.
ctx = multiprocessing.get_context("fork")


def racer(index, paths, barrier, results):
    """For every round: wait for all racers, then try to claim paths[round].

    The winner finalizes with its own pid as the result, so the test can
    check that the key holds the winner's claim.  Every outcome goes to
    results as (round, index, pid, outcome), outcome "win" or an errno.
    """
    pid = os.getpid()
    for rnd, path in enumerate(paths):
        try:
            barrier.wait(timeout=RESULT_TIMEOUT)
        except Exception as e:  # broken barrier: report and stop
            results.put((rnd, index, pid, "barrier: %r" % e))
            return
        try:
            fd = claim(path)
        except OSError as e:
            results.put((rnd, index, pid, e.errno))
            continue
        except Exception as e:
            results.put((rnd, index, pid, repr(e)))
            continue
        try:
            os.write(fd, b"succeeded\n%d" % pid)
            os.close(fd)
            results.put((rnd, index, pid, "win"))
        except OSError as e:
            results.put((rnd, index, pid, "win, then finalize failed: %s" % e))


def race(test, paths_of_racer, rounds):
    """Run PROCS racers; paths_of_racer(i) lists the path each round for
    racer i.  Returns {round: [(index, pid, outcome), ...]}."""
    barrier = ctx.Barrier(PROCS)
    results = ctx.Queue()
    procs = [ctx.Process(target=racer, args=(i, paths_of_racer(i), barrier, results))
             for i in range(PROCS)]
    for p in procs:
        p.start()
    by_round = {r: [] for r in range(rounds)}
    try:
        for _ in range(PROCS * rounds):
            rnd, index, pid, outcome = results.get(timeout=RESULT_TIMEOUT)
            by_round[rnd].append((index, pid, outcome))
    except queue.Empty:
        test.fail("racers stopped reporting: %r" % {r: len(v) for r, v in by_round.items()})
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    test.assertEqual(len({p.pid for p in procs}), PROCS, "racers are separate processes")
    return by_round


def check_rounds(test, by_round, read_key):
    """One winner a round, EEXIST for the others, the key is the winner's."""
    for rnd, outcomes in sorted(by_round.items()):
        test.assertEqual(len(outcomes), PROCS)
        winners = [(i, pid) for i, pid, o in outcomes if o == "win"]
        others = [(i, o) for i, pid, o in outcomes if o != "win"]
        test.assertEqual(len(winners), 1, "round %d: winners %r, others %r" % (rnd, winners, others))
        bad = [(i, o if isinstance(o, str) else errno.errorcode.get(o, o))
               for i, o in others if o != errno.EEXIST]
        test.assertEqual(bad, [], "round %d: losers must get EEXIST" % rnd)
        data = read_key(rnd, winners[0][0])
        first, result = data.split(b"\n", 1)
        test.assertEqual(first.split()[0], b"succeeded")
        test.assertEqual(result, b"%d" % winners[0][1], "round %d: the key holds the winner's claim" % rnd)


class Race(MountedTest):
    def test_32_processes_one_key_per_round(self):
        paths = [self.key("round-%d" % r) for r in range(ROUNDS)]
        by_round = race(self, lambda i: paths, ROUNDS)
        check_rounds(self, by_round, lambda rnd, winner: read(paths[rnd]))
        gens = [int(read(p).split()[1]) for p in paths]
        self.assertEqual(len(set(gens)), ROUNDS, "every claim has its own generation")
        self.assertEqual(sorted(os.listdir(os.path.join(self.wf, "keys"))),
                         sorted(os.path.basename(p) for p in paths))
        # One claim per key: attempt 1 everywhere.
        for p in paths:
            self.assertEqual(os.getxattr(p, "user.oncefs.attempt"), b"1")

    def test_race_after_release(self):
        """Released keys are claimable again, still by exactly one racer."""
        path = self.key("reused")
        by_round = race(self, lambda i: [path], 1)
        check_rounds(self, by_round, lambda rnd, w: read(path))
        gen1 = int(read(path).split()[1])
        os.unlink(path)
        by_round = race(self, lambda i: [path], 1)
        check_rounds(self, by_round, lambda rnd, w: read(path))
        gen2 = int(read(path).split()[1])
        self.assertGreater(gen2, gen1)

    def test_race_to_adopt_expired_and_failed_keys(self):
        """Adoption (an expired lease) and re-claim (a failed key) update
        the key's row instead of inserting one: still exactly one winner."""
        write(os.path.join(self.wf, "policy", "in_flight_ttl"), "1\n")
        expired = [self.key("expired-%d" % r) for r in range(5)]
        failed = [self.key("failed-%d" % r) for r in range(5)]
        old = {}
        for p in expired:
            hold(p)
            old[p] = int(os.getxattr(p, "user.oncefs.generation"))
        for p in failed:
            fd = claim(p)
            old[p] = int(os.getxattr(p, "user.oncefs.generation"))
            os.write(fd, b"failed\n")
            os.close(fd)
        deadline = time.time() + 10
        while any(os.path.exists(p) for p in expired) and time.time() < deadline:
            time.sleep(0.1)
        paths = expired + failed
        by_round = race(self, lambda i: paths, len(paths))
        check_rounds(self, by_round, lambda rnd, w: read(paths[rnd]))
        for p in paths:
            self.assertEqual(os.getxattr(p, "user.oncefs.attempt"), b"2", p)
            self.assertGreater(int(os.getxattr(p, "user.oncefs.generation")), old[p])
        kinds = [json.loads(line)["event"] for line in read(os.path.join(self.wf, "events")).decode().splitlines()]
        self.assertEqual(kinds.count("adopt"), len(expired))


class TwoMounts(unittest.TestCase):
    """Two daemons on the same store file."""

    def setUp(self):
        self.a = Mount()
        self.a.__enter__()
        self.addCleanup(self.a.cleanup)
        self.b = Mount(store=self.a.store, options=(), tmp=self.a.tmp)
        self.b.__enter__()
        self.addCleanup(self.b.cleanup)
        os.mkdir(self.a.p("wf"))

    def both(self, *parts):
        return self.a.p("wf", "keys", *parts), self.b.p("wf", "keys", *parts)

    def test_workflow_visible_on_both(self):
        self.assertTrue(os.path.isdir(self.b.p("wf", "keys")))
        self.assertEqual(sorted(os.listdir(self.b.path)), [".metrics", ".stats", "wf"])

    def test_claims_raced_across_mounts(self):
        names = ["k%d" % r for r in range(ROUNDS)]
        # Even racers go through mount A, odd ones through mount B.
        mounts = (self.a, self.b)
        by_round = race(self, lambda i: [mounts[i % 2].p("wf", "keys", n) for n in names], ROUNDS)
        check_rounds(self, by_round, lambda rnd, w: read(mounts[w % 2].p("wf", "keys", names[rnd])))
        # Both mounts see the same keys with the same content.
        for n in names:
            pa, pb = self.both(n)
            self.assertEqual(read(pa), read(pb))
        self.assertEqual(sorted(os.listdir(self.a.p("wf", "keys"))), sorted(names))
        self.assertEqual(sorted(os.listdir(self.b.p("wf", "keys"))), sorted(names))
        # One audit log, appended to by both daemons: whole JSON lines, one
        # claim and one finalize per key, and an exact size on both mounts.
        for m in (self.a, self.b):
            ev = m.p("wf", "events")
            data = read(ev)
            self.assertEqual(os.stat(ev).st_size, len(data))
            kinds = [json.loads(line)["event"] for line in data.decode().splitlines()]
            self.assertEqual(kinds.count("claim"), ROUNDS)
            self.assertEqual(kinds.count("finalize"), ROUNDS)

    def test_claim_on_one_mount_blocks_the_other(self):
        pa, pb = self.both("k")
        fd = claim(pa)
        try:
            self.assertTrue(os.path.exists(pb))
            with self.assertRaises(FileExistsError):
                claim(pb)
            self.assertEqual(read(pb).split()[0], b"in_flight")
            os.write(fd, b"succeeded\nfrom A")
        finally:
            os.close(fd)
        self.assertEqual(read(pb).split(b"\n", 1)[1], b"from A")
        # Released on B: A must not serve the old key from a cache.
        os.unlink(pb)
        self.assertFalse(os.path.exists(pa))
        hold(pa)
        self.assertEqual(read(pb).split()[0], b"in_flight")
        with self.assertRaises(FileExistsError):
            claim(pb)

    def test_no_stale_view_across_mounts(self):
        a, b = self.a, self.b
        # Workflows: create, rename, remove on A; B follows at once.
        os.mkdir(a.p("x"))
        self.assertTrue(os.path.isdir(b.p("x", "keys")))
        os.rename(a.p("x"), a.p("y"))
        self.assertFalse(os.path.exists(b.p("x")))
        self.assertTrue(os.path.isdir(b.p("y", "keys")))
        os.rmdir(a.p("y"))
        self.assertFalse(os.path.exists(b.p("y")))
        os.mkdir(a.p("y"))
        self.assertEqual(os.listdir(b.p("y", "keys")), [])
        # Policy values and their sizes.
        write(a.p("wf", "policy", "in_flight_ttl"), "123456\n")
        self.assertEqual(read(b.p("wf", "policy", "in_flight_ttl")), b"123456\n")
        self.assertEqual(os.stat(b.p("wf", "policy", "in_flight_ttl")).st_size, 7)
        # Modes.
        os.chmod(a.p("wf"), 0o711)
        self.assertEqual(os.stat(b.p("wf")).st_mode & 0o777, 0o711)
        # Keys: finalize on A, B sees the mode and size; release on A, and
        # bash -C on B (which stat()s first) claims at once.
        pa, pb = self.both("k")
        fd = claim(pa)
        self.assertEqual(os.stat(pb).st_mode & 0o777, 0o644 & 0o711)
        os.write(fd, b"succeeded\nresult")
        os.close(fd)
        self.assertEqual(os.stat(pb).st_mode & 0o777, 0o444 & 0o711)
        self.assertEqual(os.stat(pb).st_size, len(read(pa)))
        os.unlink(pa)
        r = sh("set -C; exec 3> keys/k && echo detach >&3 && echo claimed", cwd=b.p("wf"))
        self.assertEqual(r.stdout, "claimed\n", r.stderr)
        self.assertEqual(read(pa).split()[0], b"in_flight")
        # The events log: B reports the exact size of what A appended.
        ev_a, ev_b = a.p("wf", "events"), b.p("wf", "events")
        data = read(ev_b)
        self.assertEqual(os.stat(ev_b).st_size, len(data))
        self.assertEqual(data, read(ev_a))


if __name__ == "__main__":
    run()

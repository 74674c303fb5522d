"""State across unmount/remount and across kill -9 of the daemon: every
acknowledged claim and finalize survives, generations are never reused,
and a holder can finalize by path with "STATUS GENERATION"."""
import errno
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import MountedTest, claim, hold, read, write, sh, run  # noqa: E402

ctx = multiprocessing.get_context("fork")


def gen_of(path):
    return int(os.getxattr(path, "user.oncefs.generation"))


def finalize(path, data):
    fd = claim(path)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def events(wf):
    return [json.loads(line) for line in read(os.path.join(wf, "events")).decode().splitlines()]


class Remount(MountedTest):
    def test_finalize_by_path_after_remount(self):
        gens = {}
        for name in ("py", "bash", "bare", "wrong"):
            hold(self.key(name))  # the holder notes the generation
            gens[name] = gen_of(self.key(name))
        self.m.restart()

        for name, g in gens.items():
            self.assertEqual(read(self.key(name)), b"in_flight %d\n" % g)
        # By path, with the generation the holder noted.
        write(self.key("py"), b"succeeded %d\nresult after remount" % gens["py"])
        self.assertEqual(read(self.key("py")), b"succeeded %d\nresult after remount" % gens["py"])
        r = sh('echo "succeeded %d" >| keys/bash' % gens["bash"], cwd=self.wf)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertEqual(read(self.key("bash")), b"succeeded %d\n" % gens["bash"])
        # The generation is optional.
        write(self.key("bare"), b"failed\n", os.O_WRONLY)
        self.assertFalse(os.path.exists(self.key("bare")), "failed under dedup_on=success frees the key")
        # Another generation is ESTALE at write(), and nothing changes.
        fd = os.open(self.key("wrong"), os.O_WRONLY)
        try:
            self.assertErrno(errno.ESTALE, os.write, fd, b"succeeded %d\n" % (gens["wrong"] + 1))
            self.assertErrno(errno.ESTALE, os.write, fd, b"succeeded %d\n" % gens["py"])
        finally:
            os.close(fd)
        self.assertEqual(read(self.key("wrong")), b"in_flight %d\n" % gens["wrong"])

    def test_generations_never_reused_across_remounts(self):
        seen = []
        for i in range(3):
            k = self.key("k")
            fd = claim(k)
            seen.append(gen_of(k))
            self.assertEqual(os.getxattr(k, "user.oncefs.attempt"), b"%d" % (i + 1))
            os.write(fd, b"failed\n")  # frees the key (dedup_on=success)
            os.close(fd)
            self.m.restart()
        hold(self.key("k"))
        seen.append(gen_of(self.key("k")))
        os.unlink(self.key("k"))  # a release, then a remount
        self.m.restart()
        hold(self.key("k"))
        seen.append(gen_of(self.key("k")))
        self.assertEqual(seen, sorted(set(seen)), "generations grow and never repeat: %r" % seen)

    def test_state_survives_remount(self):
        pol = os.path.join(self.wf, "policy")
        write(os.path.join(pol, "dedup_on"), "any\n")
        write(os.path.join(pol, "in_flight_ttl"), "600\n")
        write(os.path.join(pol, "on_input_change"), "reuse\n")
        write(os.path.join(self.wf, "input.fingerprint"), "abc123\n")
        finalize(self.key("ok"), b"succeeded\nthe result")
        finalize(self.key("bad"), b"failed\nwhy")
        hold(self.key("open"))
        os.chmod(self.wf, 0o750)
        before = read(os.path.join(self.wf, "events"))
        self.m.restart()
        self.assertEqual(read(os.path.join(pol, "dedup_on")), b"any\n")
        self.assertEqual(read(os.path.join(pol, "in_flight_ttl")), b"600\n")
        self.assertEqual(read(os.path.join(pol, "on_input_change")), b"reuse\n")
        self.assertEqual(read(os.path.join(self.wf, "input.fingerprint")), b"abc123\n")
        self.assertEqual(read(self.key("ok")).split(b"\n", 1)[1], b"the result")
        self.assertEqual(read(self.key("bad")).split(b"\n", 1)[1], b"why")
        self.assertEqual(read(self.key("open")).split()[0], b"in_flight")
        self.assertEqual(os.stat(self.wf).st_mode & 0o7777, 0o750)
        self.assertEqual(sorted(os.listdir(os.path.join(self.wf, "keys"))), ["bad", "ok", "open"])
        after = read(os.path.join(self.wf, "events"))
        self.assertTrue(after.startswith(before), "the audit log survives a remount")


class Kill9(MountedTest):
    def test_kill9_keeps_everything_acknowledged(self):
        other = self.m.p("other")
        os.mkdir(other)
        write(os.path.join(other, "policy", "dedup_on"), "any\n")
        write(os.path.join(self.wf, "input.fingerprint"), "fp-1\n")
        expect = {}
        for i in range(20):
            finalize(self.key("done-%d" % i), b"succeeded\nresult %d" % i)
            expect[self.key("done-%d" % i)] = b"succeeded %d\nresult %d" % (gen_of(self.key("done-%d" % i)), i)
        for i in range(5):
            hold(self.key("flight-%d" % i))
            expect[self.key("flight-%d" % i)] = b"in_flight %d\n" % gen_of(self.key("flight-%d" % i))
        k = os.path.join(other, "keys", "failed")
        finalize(k, b"failed\nterminal under any")
        expect[k] = b"failed %d\nterminal under any" % gen_of(k)
        finalize(self.key("released"), b"succeeded\n")
        os.unlink(self.key("released"))
        # A claim still held open when the daemon dies.
        held_path = self.key("held")
        held = claim(held_path)
        held_gen = gen_of(held_path)
        expect[held_path] = b"in_flight %d\n" % held_gen

        self.m.kill9()
        try:
            self.assertErrno(errno.ENOTCONN, os.write, held, b"succeeded\n")
        finally:
            try:
                os.close(held)
            except OSError:
                pass
        self.m.start()

        for path, data in expect.items():
            self.assertEqual(read(path), data, path)
        self.assertFalse(os.path.exists(self.key("released")))
        self.assertEqual(read(os.path.join(other, "policy", "dedup_on")), b"any\n")
        self.assertEqual(read(os.path.join(self.wf, "input.fingerprint")), b"fp-1\n")
        # The holder recovers by path, with the generation it noted.
        write(held_path, b"succeeded %d\nafter the crash" % held_gen, os.O_WRONLY)
        self.assertEqual(read(held_path), b"succeeded %d\nafter the crash" % held_gen)
        # New claims get new generations.
        hold(self.key("new"))
        self.assertGreater(gen_of(self.key("new")), max(gen_of(p) for p in expect))
        self.assertEqual([e["event"] for e in events(self.wf)[-2:]], ["claim", "detach"])


def worker(keys_dir, tag, log_path, stop_after):
    """Claim and finalize keys until the mount dies; log every step that
    was acknowledged (returned success) before anything else happens."""
    with open(log_path, "w", buffering=1) as log:
        for n in range(stop_after):
            path = os.path.join(keys_dir, "%s-%d" % (tag, n))
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except OSError as e:
                log.write("error claim %d %d\n" % (n, e.errno))
                return
            log.write("claimed %d\n" % n)
            try:
                os.write(fd, b"succeeded\n%s %d" % (tag.encode(), n))
            except OSError as e:
                log.write("error write %d %d\n" % (n, e.errno))
                try:
                    os.close(fd)
                except OSError:
                    pass
                return
            try:
                os.close(fd)
            except OSError as e:
                log.write("error close %d %d\n" % (n, e.errno))
                return
            log.write("finalized %d\n" % n)


class Kill9UnderLoad(MountedTest):
    WORKERS = 4

    def read_logs(self, logs):
        out = {}
        for tag, path in logs.items():
            with open(path) as f:
                out[tag] = f.read().splitlines()
        return out

    def test_kill9_while_clients_claim_and_finalize(self):
        keys_dir = os.path.join(self.wf, "keys")
        logs = {"w%d" % i: os.path.join(self.m.tmp, "worker-%d.log" % i) for i in range(self.WORKERS)}
        procs = [ctx.Process(target=worker, args=(keys_dir, tag, path, 100000))
                 for tag, path in logs.items()]
        for p in procs:
            p.start()
        try:
            # Kill once every worker has had a few finalizes acknowledged.
            deadline = time.time() + 60
            while time.time() < deadline:
                lines = self.read_logs(logs) if all(os.path.exists(p) for p in logs.values()) else {}
                if lines and all(sum(l.startswith("finalized") for l in v) >= 20 for v in lines.values()):
                    break
                time.sleep(0.05)
            self.m.kill9()
            for p in procs:
                p.join(timeout=30)
        finally:
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
        self.m.start()

        lines = self.read_logs(logs)
        names = set(os.listdir(keys_dir))
        total = 0
        for tag, log in lines.items():
            self.assertTrue(log and log[-1].startswith("error"), "%s stopped with an error: %r" % (tag, log[-3:]))
            errs = [int(l.split()[3]) for l in log if l.startswith("error")]
            self.assertIn(errs[0], (errno.ENOTCONN, errno.ENOENT, errno.ECONNABORTED, errno.EIO),
                          "%s: %r" % (tag, log[-1]))
            for line in log:
                what, n = line.split()[:2]
                path = os.path.join(keys_dir, "%s-%s" % (tag, n))
                if what == "claimed":
                    self.assertIn("%s-%s" % (tag, n), names, "an acknowledged claim was lost")
                elif what == "finalized":
                    total += 1
                    data = read(path)
                    first, result = data.split(b"\n", 1)
                    self.assertEqual(first.split()[0], b"succeeded", "an acknowledged finalize was lost: %s" % path)
                    self.assertEqual(result, b"%s %s" % (tag.encode(), n.encode()))
        self.assertGreaterEqual(total, 20 * self.WORKERS)
        # Every key that exists is one a worker tried; none is torn.
        for name in names:
            data = read(os.path.join(keys_dir, name))
            status = data.split()[0]
            self.assertIn(status, (b"in_flight", b"succeeded"), name)
            if status == b"succeeded":
                tag, n = name.split("-")
                self.assertEqual(data.split(b"\n", 1)[1], b"%s %s" % (tag.encode(), n.encode()))


class Kill9UnderLoadSyncNormal(Kill9UnderLoad):
    """sync=normal trades power-loss durability, not crash durability."""
    options = ("create", "sync=normal")


if __name__ == "__main__":
    run()

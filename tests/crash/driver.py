#!/usr/bin/env python3
"""The crash harness: concurrent clients against a mounted oncefs, the
daemon killed with SIGKILL at random moments, remounted on the same store,
and every acknowledged operation checked against a model of DESIGN.md.

    tests/crash/driver.py [--kills N] [--seed S] [--workers W] [--minutes M]

One round: mount (the same store every time), read the whole state back,
check it against the previous round's history, start W client processes,
let them run for a random moment, SIGKILL the daemon, wait for the clients
(they see ENOTCONN / ECONNABORTED and stop), clean up the dead mount.

What the clients do, each operation timed (CLOCK_MONOTONIC) and recorded
with its outcome; an outcome is known when the syscalls returned (success
or an errno), "maybe" when the daemon died under it:

  workflow "shared" (on_input_change=reuse, dedup_on=success), all clients
  at once on a few names:
    keys/K    claim (O_CREAT|O_EXCL), then finalize through the claim's fd
              (write "succeeded\\nRESULT" or "failed", close), release (rm),
              or keep it in flight; release of any key; read; finalize by
              path with "succeeded GEN" of a claim that a crash orphaned
    steps/S   checkpoint writes with distinctive whole contents (up to
              ~600 KB, so several FUSE writes), reads
    input.fingerprint  writes and reads
  workflow "solo-I" (reset, dedup_on=any), client I alone: fingerprint
  changes that reset the checkpoints, checkpoint writes and removals,
  claims finalized to terminal keys, releases.

The checks, per object (a key, a checkpoint, a fingerprint, a solo
workflow): there is an order of the operations that respects real time,
in which every operation with a known outcome has exactly that outcome
under the sequential rules of DESIGN.md, "maybe" operations happen or not,
and which ends in the state read after the remount (a linearizability
check, Wing & Gong).  That covers: no acknowledged claim, finalize,
release, checkpoint or fingerprint lost; no key with two owners at once.
Besides, explicitly: a checkpoint's content is always one version written
whole (never torn); no two successful claims share a generation; a
generation observed after a remount is above every one observed before.

A finalize or checkpoint is acknowledged by the close() that commits it,
or by an fsync() that returned.

The exit status is 0 when every check passed; violations are printed with
the history that shows them, and for a key the daemon's events about it.
--tolerate-double-claims accepts one known bug (an open(O_EXCL) that
claims twice, see tests/integration/test_crash.py) so that a long run can
exercise everything else while it is open.
"""
import argparse
import errno
import hashlib
import os
import pickle
import random
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import multiprocessing  # noqa: E402

from harness import Mount, read, write  # noqa: E402

ctx = multiprocessing.get_context("fork")

# The daemon died under the syscall: the outcome is unknown.
DEAD = {errno.ENOTCONN, errno.ECONNABORTED}
INF = float("inf")

SHARED_KEYS = ["k%02d" % i for i in range(12)]
SHARED_STEPS = ["s%d" % i for i in range(6)]
SOLO_STEPS = ["a", "b", "c"]
SOLO_KEYS = ["j0", "j1", "j2", "j3"]
SOLO_FPS = ["", "in-1", "in-2", "in-3"]


class Dead(Exception):
    """The mount died under an operation: stop this client."""


def close_once(fd):
    """Close the fd held in the list fd (once); returns the OSError or None."""
    if fd[0] is None:
        return None
    f, fd[0] = fd[0], None
    try:
        os.close(f)
    except OSError as e:
        return e
    return None


# ---- checkpoint versions ---------------------------------------------------

def version_bytes(vid):
    """The whole content of checkpoint version vid (a string): a header
    naming it, then filler derived from it, so that any mix of two versions
    shows."""
    h = hashlib.sha256(vid.encode()).digest()
    length = int.from_bytes(h[:4], "big") % 4096
    if h[4] % 4 == 0:
        length += int.from_bytes(h[5:8], "big") % (600 * 1024)
    head = b"oncefs-crash %s %d\n" % (vid.encode(), length)
    block = hashlib.sha256(h).digest() * 64
    body = (block * (length // len(block) + 1))[:length]
    return head + body


def version_of(data):
    """The version id whose whole content data is, "" for empty, or None
    for anything else (a torn or foreign content)."""
    if data == b"":
        return ""
    if not data.startswith(b"oncefs-crash "):
        return None
    vid = data.split(b" ", 2)[1].decode(errors="replace")
    return vid if version_bytes(vid) == data else None


# ---- the client ----------------------------------------------------------

class Client:
    def __init__(self, mnt, rnd, index, orphans, seed):
        self.mnt = mnt
        self.rnd = rnd
        self.index = index
        self.orphans = orphans  # {key name: generation} of in_flight shared keys
        self.rng = random.Random(seed)
        self.seq = 0
        self.hist = []
        self.solo_writes = 0

    def p(self, *parts):
        return os.path.join(self.mnt, *parts)

    def new_id(self):
        self.seq += 1
        return "r%d.w%d.%d" % (self.rnd, self.index, self.seq)

    def record(self, obj, kind, start, res, **args):
        """res: "ok", an errno name, a value (reads), or None (maybe)."""
        op = dict(id=args.pop("oid", None) or self.new_id(), obj=obj, kind=kind,
                  start=start, end=time.monotonic() if res is not None else INF,
                  res=res, worker=self.index, **args)
        self.hist.append(op)
        if res is None:
            raise Dead()
        return op

    def fail(self, obj, kind, start, e, **args):
        """An OSError: known errno, or maybe when the daemon died."""
        if e.errno in DEAD:
            self.record(obj, kind, start, None, **args)
        op = self.record(obj, kind, start, errno.errorcode.get(e.errno, str(e.errno)), **args)
        if e.errno == errno.EIO:
            # The kernel fails a direct-I/O write() in flight with EIO when
            # the daemon dies: the checker decides by the time of the kill.
            raise Dead()
        return op

    # -- shared keys --
    def claim(self):
        name = self.rng.choice(SHARED_KEYS)
        obj = "key:shared:" + name
        oid = self.new_id()
        t = time.monotonic()
        try:
            fd = os.open(self.p("shared", "keys", name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except OSError as e:
            self.fail(obj, "claim", t, e, oid=oid, tok=oid)
            return
        op = self.record(obj, "claim", t, "ok", oid=oid, tok=oid)
        fd = [fd]  # closed exactly once, by whoever closes it
        try:
            try:
                op["gen"] = int(os.getxattr(fd[0], "user.oncefs.generation"))
            except OSError as e:
                if e.errno in DEAD:
                    raise Dead()
                # released by another client already: the generation is gone
            r = self.rng.random()
            if r < 0.45:
                self.finalize_fd(fd, obj, oid, "succeeded")
            elif r < 0.65:
                self.finalize_fd(fd, obj, oid, "failed")
            elif r < 0.8:
                self.release(name)
            else:
                # Left in flight: detached, so that its close does not
                # abandon it (the state stays in_flight(tok)).
                try:
                    os.write(fd[0], b"detach\n")
                except OSError as e:
                    if e.errno in DEAD:
                        raise Dead()
        finally:
            close_once(fd)

    def finalize_fd(self, fd, obj, tok, status):
        """Write a status (and result) through the claim's fd, and close it."""
        result = b"" if status == "failed" else b"result of %s" % tok.encode()
        data = status.encode() + b"\n" + result
        args = dict(tok=tok, status=status, result=result)
        t = time.monotonic()
        synced = False
        try:
            if self.rng.random() < 0.3:
                os.write(fd[0], data[:4])  # a status line in two pieces
                os.write(fd[0], data[4:])
            else:
                os.write(fd[0], data)
            if self.rng.random() < 0.2:
                os.fsync(fd[0])     # commits: acknowledged from here on
                synced = True
        except OSError as e:
            self.fail(obj, "finalize", t, e, **args)
            return
        if synced:
            op = self.record(obj, "finalize", t, "ok", **args)
            close_once(fd)          # nothing new to commit
            return op
        err = close_once(fd)
        if err:
            self.fail(obj, "finalize", t, err, **args)
            return
        self.record(obj, "finalize", t, "ok", **args)

    def release(self, name=None):
        name = name or self.rng.choice(SHARED_KEYS)
        obj = "key:shared:" + name
        t = time.monotonic()
        try:
            os.unlink(self.p("shared", "keys", name))
        except OSError as e:
            self.fail(obj, "release", t, e)
            return
        self.record(obj, "release", t, "ok")

    def read_key(self):
        name = self.rng.choice(SHARED_KEYS)
        obj = "key:shared:" + name
        t = time.monotonic()
        try:
            data = read(self.p("shared", "keys", name))
        except OSError as e:
            if e.errno == errno.ESTALE:
                return  # a generation replaced between lookup and open: says nothing
            self.fail(obj, "read", t, e)
            return
        self.record(obj, "read", t, ("content", data))

    def finalize_path(self):
        if not self.orphans:
            return self.claim()
        name = self.rng.choice(sorted(self.orphans))
        gen = self.orphans[name]
        obj = "key:shared:" + name
        result = b"finalized by path in round %d" % self.rnd
        t = time.monotonic()
        try:
            fd = os.open(self.p("shared", "keys", name), os.O_WRONLY)
        except OSError as e:
            self.fail(obj, "finalize_path", t, e, gen=gen, result=result)
            return
        try:
            os.write(fd, b"succeeded %d\n" % gen + result)
        except OSError as e:
            try:
                os.close(fd)
            except OSError:
                pass
            self.fail(obj, "finalize_path", t, e, gen=gen, result=result)
            return
        try:
            os.close(fd)
        except OSError as e:
            self.fail(obj, "finalize_path", t, e, gen=gen, result=result)
            return
        self.record(obj, "finalize_path", t, "ok", gen=gen, result=result)

    # -- shared steps --
    def write_step(self, wf, name, obj):
        vid = self.new_id()
        data = version_bytes(vid)
        t = time.monotonic()
        try:
            fd = os.open(self.p(wf, "steps", name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            self.fail(obj, "create", t, e, step=name)
            return
        self.record(obj, "create", t, "ok", step=name)
        t = time.monotonic()
        at = "write"
        try:
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view[:self.rng.choice((4096, 65536, 1 << 20))])
                    view = view[n:]
                at = "fsync"
                if self.rng.random() < 0.2:
                    os.fsync(fd)    # commits: acknowledged from here on
                    self.record(obj, "commit", t, "ok", step=name, v=vid)
                    return
            except OSError as e:
                self.fail(obj, "commit", t, e, step=name, v=vid, at=at)
                return
        finally:
            try:
                os.close(fd)
                closed = None
            except OSError as e:
                closed = e
        if closed is not None:
            self.fail(obj, "commit", t, closed, step=name, v=vid, at="close")
            return
        self.record(obj, "commit", t, "ok", step=name, v=vid)

    def read_step(self, wf, name, obj):
        t = time.monotonic()
        try:
            data = read(self.p(wf, "steps", name))
        except OSError as e:
            if e.errno == errno.ESTALE:
                return
            self.fail(obj, "read", t, e, step=name)
            return
        v = version_of(data)
        if v is None:
            self.record(obj, "read", t, ("torn", data[:200], len(data)), step=name)
        else:
            self.record(obj, "read", t, ("version", v), step=name)

    # -- fingerprints --
    def write_fp(self, wf, value, obj):
        t = time.monotonic()
        try:
            if value:
                write(self.p(wf, "input.fingerprint"), value + "\n")
            else:
                os.unlink(self.p(wf, "input.fingerprint"))  # unset
        except OSError as e:
            self.fail(obj, "fp_write", t, e, value=value)
            return
        self.record(obj, "fp_write", t, "ok", value=value)

    def read_fp(self, wf, obj):
        t = time.monotonic()
        try:
            data = read(self.p(wf, "input.fingerprint"))
        except OSError as e:
            self.fail(obj, "fp_read", t, e)
            return
        self.record(obj, "fp_read", t, ("value", data.decode(errors="replace").rstrip("\n")))

    # -- the solo workflow: one client, one object --
    def solo(self):
        wf = "solo-%d" % self.index
        obj = "solo:%d" % self.index
        r = self.rng.random()
        if r < 0.15:
            self.write_fp(wf, self.rng.choice(SOLO_FPS), obj)
        elif r < 0.5:
            self.write_step(wf, self.rng.choice(SOLO_STEPS), obj)
        elif r < 0.6:
            name = self.rng.choice(SOLO_STEPS)
            t = time.monotonic()
            try:
                os.unlink(self.p(wf, "steps", name))
            except OSError as e:
                self.fail(obj, "remove", t, e, step=name)
                return
            self.record(obj, "remove", t, "ok", step=name)
        elif r < 0.7:
            self.read_step(wf, self.rng.choice(SOLO_STEPS), obj)
        elif r < 0.9:
            name = self.rng.choice(SOLO_KEYS)
            oid = self.new_id()
            t = time.monotonic()
            try:
                fd = os.open(self.p(wf, "keys", name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except OSError as e:
                self.fail(obj, "claim", t, e, key=name, oid=oid, tok=oid)
                return
            self.record(obj, "claim", t, "ok", key=name, oid=oid, tok=oid)
            fd = [fd]
            try:
                if self.rng.random() < 0.7:
                    status = self.rng.choice(("succeeded", "failed"))
                    result = b"solo %s" % oid.encode()
                    args = dict(key=name, tok=oid, status=status, result=result)
                    t = time.monotonic()
                    try:
                        os.write(fd[0], status.encode() + b"\n" + result)
                    except OSError as e:
                        self.fail(obj, "finalize", t, e, **args)
                        return
                    err = close_once(fd)
                    if err:
                        self.fail(obj, "finalize", t, err, **args)
                        return
                    self.record(obj, "finalize", t, "ok", **args)
                else:
                    try:    # left in flight: detached (see claim())
                        os.write(fd[0], b"detach\n")
                    except OSError as e:
                        if e.errno in DEAD:
                            raise Dead()
            finally:
                close_once(fd)
        else:
            name = self.rng.choice(SOLO_KEYS)
            t = time.monotonic()
            try:
                os.unlink(self.p(wf, "keys", name))
            except OSError as e:
                self.fail(obj, "release", t, e, key=name)
                return
            self.record(obj, "release", t, "ok", key=name)

    def step(self):
        r = self.rng.random()
        if r < 0.30:
            self.claim()
        elif r < 0.40:
            self.release()
        elif r < 0.47:
            self.read_key()
        elif r < 0.52:
            self.finalize_path()
        elif r < 0.67:
            name = self.rng.choice(SHARED_STEPS)
            self.write_step("shared", name, "step:shared:" + name)
        elif r < 0.72:
            name = self.rng.choice(SHARED_STEPS)
            self.read_step("shared", name, "step:shared:" + name)
        elif r < 0.76:
            self.write_fp("shared", "fp-%s" % self.new_id(), "fp:shared")
        elif r < 0.78:
            self.read_fp("shared", "fp:shared")
        else:
            self.solo()


def client_main(mnt, rnd, index, orphans, seed, out, deadline):
    c = Client(mnt, rnd, index, orphans, seed)
    try:
        while time.monotonic() < deadline:
            c.step()
    except Dead:
        pass
    except BaseException as e:  # a bug of the client: report it
        c.hist.append(dict(id="crash", obj="client", kind="exception", res=repr(e),
                           start=0, end=0, worker=index))
    c.hist.append(dict(id="pid", obj="client", kind="pid", res=os.getpid(), start=0, end=0, worker=index))
    with open(out, "wb") as f:
        pickle.dump(c.hist, f)
    os._exit(0)


# ---- the models (the sequential rules of DESIGN.md) --------------------------
#
# step(state, op, known) -> list of possible next states when op (with its
# outcome op["res"]) happens in state; [] when that outcome is impossible.
# Outcome None ("maybe") accepts every outcome.  States are hashable.

class Gens:
    """The generations learned: claim token -> generation (when known)."""

    def __init__(self):
        self.of_tok = {}

    def matches(self, tok, gen):
        """Can the claim named tok have generation gen?"""
        if isinstance(tok, int):
            return tok == gen
        known = self.of_tok.get(tok)
        return known is None or known == gen


def key_step(state, op, gens, dedup_any=False):
    """A key.  state: None | ("in_flight", tok) | (status, tok, result);
    tok is a claim's id (this round) or a generation (an earlier round)."""
    res, kind = op["res"], op["kind"]

    def ok(new, *allowed):
        if res is None or res in allowed:
            return [new]
        return []

    if kind == "claim":
        if state is None:
            return ok(("in_flight", op["tok"]), "ok")
        return ok(state, "EEXIST")
    if kind == "ghost":
        # --tolerate-double-claims: the first of two claims one open() made
        return [("in_flight", op["tok"])] if state is None else []
    if kind == "finalize":
        if state is not None and state[0] == "in_flight" and state[1] == op["tok"]:
            if op["status"] == "failed" and not dedup_any:
                return ok(None, "ok")
            return ok((op["status"], op["tok"], op["result"]), "ok")
        if state is not None and state[0] != "in_flight" and state[1] == op["tok"]:
            return ok(state, "EPERM", "EACCES")
        return ok(state, "ESTALE")
    if kind == "finalize_path":
        # open(O_WRONLY), write "succeeded GEN", close.  The open binds the
        # generation of its moment, so a release or a new claim before the
        # write shows as ESTALE: that is the outcome in the later state.
        if state is None:
            return ok(state, "ENOENT", "ESTALE")
        if state[0] != "in_flight":
            return ok(state, "EPERM", "EACCES", "ESTALE")
        if isinstance(state[1], int) and state[1] == op["gen"]:
            return ok(("succeeded", state[1], op["result"]), "ok")
        return ok(state, "ESTALE")
    if kind == "release":
        if state is None:
            return ok(state, "ENOENT")
        return ok(None, "ok")
    if kind == "read":
        if res is None:
            return [state]
        if res == "ENOENT":
            return [state] if state is None else []
        if state is None or not isinstance(res, tuple):
            return []
        first, _, rest = res[1].partition(b"\n")
        parts = first.split(b" ")
        if len(parts) != 2 or not parts[1].isdigit():
            return []
        status, gen = parts[0].decode(), int(parts[1])
        if status != state[0] or not gens.matches(state[1], gen):
            return []
        if rest != (b"" if state[0] == "in_flight" else state[2]):
            return []
        return [state]
    raise ValueError(kind)


def step_step(state, op, gens):
    """A shared checkpoint (never removed, fingerprint policy reuse).
    state: None (absent) | version id ("" for empty)."""
    res, kind = op["res"], op["kind"]
    if kind == "create":
        # An open with O_CREAT|O_TRUNC changes nothing by itself: a new
        # checkpoint exists from its first commit, an old one keeps its
        # content until the writer commits.
        if res not in (None, "ok"):
            return []
        return [state]
    if kind == "commit":
        if res not in (None, "ok"):
            return []
        return [op["v"]]
    if kind == "read":
        if res is None:
            return [state]
        if res == "ENOENT":
            return [state] if state is None else []
        if res[0] == "version" and res[1] == state:
            return [state]
        return []
    raise ValueError(kind)


def fp_step(state, op, gens):
    """The shared fingerprint (a register; "" is unset)."""
    res, kind = op["res"], op["kind"]
    if kind == "fp_write":
        # EBUSY: another writer's open file held the value (one input at
        # a time), or a killed mount's hold had not lapsed: no change.
        if res == "EBUSY":
            return [state]
        return [op["value"]] if res in (None, "ok") else []
    if kind == "fp_read":
        if res is None or (res[0] == "value" and res[1] == state):
            return [state]
        return []
    raise ValueError(kind)


def solo_step(state, op, gens):
    """A workflow used by one client: (fingerprint, steps, keys), steps and
    keys as sorted tuples of (name, value); on_input_change=reset,
    dedup_on=any."""
    fp, steps, keys = state
    steps, keys = dict(steps), dict(keys)
    res, kind = op["res"], op["kind"]

    def ok(*allowed):
        return res is None or res in allowed

    def pack(fp, steps, keys):
        return (fp, tuple(sorted(steps.items())), tuple(sorted(keys.items())))

    if kind == "fp_write":
        if res == "EBUSY":
            return [state]	# a killed mount's hold, not lapsed yet
        if not ok("ok"):
            return []
        if op["value"] != fp:
            steps = {}
        return [pack(op["value"], steps, keys)]
    if kind == "create":
        # Changes nothing until the writer's commit (see step_step).
        if not ok("ok"):
            return []
        return [state]
    if kind == "commit":
        if not ok("ok"):
            return []
        # The first commit creates the checkpoint; a reset between the
        # open and the commit makes the writer stale instead.
        steps[op["step"]] = op["v"]
        return [pack(fp, steps, keys)]
    if kind == "remove":
        if op["step"] in steps:
            if not ok("ok"):
                return []
            del steps[op["step"]]
            return [pack(fp, steps, keys)]
        return [state] if ok("ENOENT") else []
    if kind == "read":
        got = None if res is None else res
        if got is None:
            return [state]
        if got == "ENOENT":
            return [state] if op["step"] not in steps else []
        return [state] if got[0] == "version" and steps.get(op["step"]) == got[1] else []
    if kind in ("claim", "finalize", "release"):
        name = op["key"]
        nexts = key_step(keys.get(name), op, gens, dedup_any=True)
        out = []
        for n in nexts:
            k2 = dict(keys)
            if n is None:
                k2.pop(name, None)
            else:
                k2[name] = n
            out.append(pack(fp, steps, k2))
        return out
    raise ValueError(kind)


# ---- the checker -----------------------------------------------------------

def linearize(ops, init, step, final, gens, budget=2000000):
    """Is there an order of ops that respects real time (an op may come
    before another only if it started before the other ended), gives every
    op with a known outcome that outcome, may leave out "maybe" ops, and
    ends in a state for which final(state) holds?  Returns True, False, or
    None when the search budget ran out."""
    n = len(ops)
    ops = sorted(ops, key=lambda o: o["start"])
    # An optional op ("ghost") constrains nothing, and can only come before
    # the op it belongs to (its "of").
    ends = [INF if o["res"] == "optional" else o["end"] for o in ops]
    index = {o["id"]: i for i, o in enumerate(ops)}
    of = [index.get(o.get("of"), -1) for o in ops]
    required = 0
    for i, o in enumerate(ops):
        if o["res"] is not None and o["res"] != "optional":
            required |= 1 << i
    seen = set()
    work = [0]

    def search(done, state):
        key = (done, state)
        if key in seen:
            return False
        seen.add(key)
        work[0] += 1
        if work[0] > budget:
            raise TimeoutError()
        if done & required == required and final(state):
            return True
        min_end = INF
        for i in range(n):
            if not done >> i & 1 and ends[i] < min_end:
                min_end = ends[i]
        for i in range(n):
            if done >> i & 1:
                continue
            if ops[i]["start"] > min_end:
                break
            if of[i] >= 0 and done >> of[i] & 1:
                continue
            for nxt in step(state, ops[i], gens):
                if search(done | 1 << i, nxt):
                    return True
        return False

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 4 * n + 1000))
    try:
        return search(0, init)
    except TimeoutError:
        return None
    finally:
        sys.setrecursionlimit(old)


# ---- the state, read back after a remount -----------------------------------

def parse_key(data):
    first, _, rest = data.partition(b"\n")
    status, gen = first.split(b" ")
    status = status.decode()
    if status == "in_flight":
        return ("in_flight", int(gen))
    return (status, int(gen), rest)


def read_state(m, workers):
    """Everything the checks compare, read through the mount."""
    st = {"torn": []}
    for k in SHARED_KEYS:
        try:
            st["key:shared:" + k] = parse_key(read(m.p("shared", "keys", k)))
        except FileNotFoundError:
            st["key:shared:" + k] = None
    for s in SHARED_STEPS:
        try:
            data = read(m.p("shared", "steps", s))
        except FileNotFoundError:
            st["step:shared:" + s] = None
            continue
        v = version_of(data)
        if v is None:
            st["torn"].append(("shared", s, len(data), data[:120]))
        st["step:shared:" + s] = v
    st["fp:shared"] = read(m.p("shared", "input.fingerprint")).decode().rstrip("\n")
    for i in range(workers):
        wf = "solo-%d" % i
        fp = read(m.p(wf, "input.fingerprint")).decode().rstrip("\n")
        steps, keys = {}, {}
        for s in os.listdir(m.p(wf, "steps")):
            data = read(m.p(wf, "steps", s))
            v = version_of(data)
            if v is None:
                st["torn"].append((wf, s, len(data), data[:120]))
            steps[s] = v
        for k in os.listdir(m.p(wf, "keys")):
            keys[k] = parse_key(read(m.p(wf, "keys", k)))
        st["solo:%d" % i] = (fp, tuple(sorted(steps.items())), tuple(sorted(keys.items())))
    return st


def key_final(gens, observed):
    """final() for a key: the model state is the one read back."""
    def same(state):
        if state is None or observed is None:
            return state is observed
        if state[0] != observed[0] or not gens.matches(state[1], observed[1]):
            return False
        return state[0] == "in_flight" or state[2] == observed[2]
    return same


def solo_final(gens, observed):
    def same(state):
        fp, steps, keys = state
        if fp != observed[0] or steps != observed[1]:
            return False
        if [k for k, _ in keys] != [k for k, _ in observed[2]]:
            return False
        return all(key_final(gens, o)(s) for (_, s), (_, o) in zip(keys, observed[2]))
    return same


# ---- a run -----------------------------------------------------------------

class Run:
    def __init__(self, workers, seed, out=sys.stdout, tmp=None, tolerate_double_claims=False):
        self.tolerate_double_claims = tolerate_double_claims
        self.max_violations = 20
        self.workers = workers
        self.rng = random.Random(seed)
        self.seed = seed
        self.out = out
        self.tmp = tempfile.mkdtemp(prefix="oncefs-crash-", dir=tmp)
        # A claim that a killed daemon left in flight keeps its lease
        # through the restart: the checker knows no expiry.
        self.m = Mount(tmp=self.tmp, options=["create", "lease=86400"])
        self.violations = []
        self.kills = 0
        self.ops = 0          # operations recorded
        self.known = 0        # of them, with a known outcome (checked)
        self.maybe = 0        # in flight at a kill
        self.maybe_kinds = {}
        self.acked = 0        # succeeded
        self.objects = 0      # per-round object histories checked
        self.max_gen = 0      # the highest generation seen before this round
        self.all_gens = {}    # generation -> the claim that got it
        self.state = None

    def log(self, msg):
        print(msg, file=self.out, flush=True)

    def violation(self, msg):
        self.violations.append(msg)
        self.log("VIOLATION: " + msg)

    def setup(self):
        self.m.start()
        os.mkdir(self.m.p("shared"))
        write(self.m.p("shared", "policy", "on_input_change"), "reuse\n")
        for i in range(self.workers):
            os.mkdir(self.m.p("solo-%d" % i))
            write(self.m.p("solo-%d" % i, "policy", "dedup_on"), "any\n")
        self.state = read_state(self.m, self.workers)

    def round(self, rnd, hold):
        """Run the clients for `hold` seconds, kill the daemon, return the
        history."""
        orphans = {k[len("key:shared:"):]: v[1] for k, v in self.state.items()
                   if k.startswith("key:shared:") and v is not None and v[0] == "in_flight"}
        outs = [os.path.join(self.tmp, "hist-%d-%d" % (rnd, i)) for i in range(self.workers)]
        deadline = time.monotonic() + hold + 60
        procs = [ctx.Process(target=client_main,
                             args=(self.m.path, rnd, i, orphans, self.rng.random(), outs[i], deadline))
                 for i in range(self.workers)]
        for p in procs:
            p.start()
        time.sleep(hold)
        self.killed_at = time.monotonic()
        self.m.proc.kill()   # SIGKILL; the mount stays until the clients stopped
        self.m.proc.wait()
        hung = []
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                hung.append(p.pid)
                p.kill()
                p.join()
        self.m.kill9()       # the daemon is dead already: this unmounts
        self.kills += 1
        if hung:
            self.violation("round %d: clients %s did not stop within 60 s of the kill" % (rnd, hung))
        hist = []
        for o in outs:
            try:
                with open(o, "rb") as f:
                    hist += pickle.load(f)
                os.unlink(o)
            except (OSError, EOFError) as e:
                self.violation("round %d: a client left no history (%s)" % (rnd, e))
        return hist

    def two_owners(self, rnd, by_obj):
        """Two acknowledged claims of one key with nothing that could have
        freed it between them, in either order: their messages."""
        out = []
        for obj, ops in by_obj.items():
            if not obj.startswith("key:"):
                continue
            claims = sorted((o for o in ops if o["kind"] == "claim" and o["res"] == "ok"),
                            key=lambda o: o["end"])
            for a, b in zip(claims, claims[1:]):
                frees = [o for o in ops if
                         (o["start"] < b["end"] and o["end"] > a["start"] or
                          o["start"] < a["end"] and o["end"] > b["start"]) and
                         (o["kind"] == "release" and o["res"] in (None, "ok") or
                          o["kind"] == "finalize" and o.get("status") == "failed" and
                          o["res"] in (None, "ok"))]
                if not frees:
                    out.append("round %d: %s has two owners: claims %s and %s both succeeded "
                               "with no release or failure between them" % (rnd, obj, a["id"], b["id"]))
        return out

    def check(self, rnd, hist, after):
        """Check a round's history against the state before and after."""
        gens = Gens()
        by_obj = {}
        pids = {op["worker"]: op["res"] for op in hist if op["kind"] == "pid"}
        hist = [op for op in hist if op["kind"] != "pid"]
        for op in hist:
            # EIO from an operation the kill interrupted (see Client.fail):
            # in flight at the kill, so maybe.  Any other EIO stays an error.
            if op["res"] == "EIO" and op["end"] >= self.killed_at:
                op.update(res=None, end=INF, eio_at_kill=True)
        for op in hist:
            if op["kind"] == "exception":
                self.violation("round %d: client %d raised %s" % (rnd, op["worker"], op["res"]))
                continue
            self.ops += 1
            if op["res"] is None:
                self.maybe += 1
                self.maybe_kinds[op["kind"]] = self.maybe_kinds.get(op["kind"], 0) + 1
            else:
                self.known += 1
                if op["res"] == "ok" or isinstance(op["res"], tuple):
                    self.acked += 1
            if isinstance(op["res"], tuple) and op["res"][0] == "torn":
                self.violation("round %d: torn checkpoint read by %s: %d bytes, %r..." %
                               (rnd, op["id"], op["res"][2], op["res"][1][:80]))
            if op["kind"] == "claim" and op.get("gen") is not None:
                gens.of_tok[op["tok"]] = op["gen"]
            by_obj.setdefault(op["obj"], []).append(op)

        for where, name, size, head in after["torn"]:
            self.violation("round %d: torn checkpoint %s/steps/%s after the remount: %d bytes, %r" %
                           (rnd, where, name, size, head[:80]))

        # Generations: unique, and above every one seen before the remount.
        round_gens = []
        for op in hist:
            if op["kind"] == "claim" and op.get("gen") is not None:
                g = op["gen"]
                round_gens.append(g)
                if g in self.all_gens:
                    self.violation("round %d: generation %d given to two claims: %s and %s (%s)" %
                                   (rnd, g, self.all_gens[g], op["id"], op["obj"]))
                self.all_gens[g] = "%s (%s)" % (op["id"], op["obj"])
                if g <= self.max_gen:
                    self.violation("round %d: claim %s got generation %d, not above %d seen before" %
                                   (rnd, op["id"], g, self.max_gen))
        for k, v in after.items():
            if k.startswith("key:") and v is not None:
                round_gens.append(v[1])
            elif k.startswith("solo:"):
                round_gens += [s[1] for _, s in v[2]]
        if round_gens:
            self.max_gen = max(self.max_gen, max(round_gens))

        for msg in self.two_owners(rnd, by_obj):
            self.violation(msg)

        if self.tolerate_double_claims:
            # A known bug: one open(O_EXCL) may claim twice when a release
            # slips between its CREATE and the kernel's GETATTR (see the
            # report); let each successful claim have had a first claim
            # that something released (whatever the open() returned).
            for obj, ops in by_obj.items():
                if obj.startswith("key:shared:"):
                    ops += [dict(o, id=o["id"] + "#ghost", kind="ghost", res="optional",
                                 tok=o["tok"] + "#ghost", of=o["id"]) for o in ops
                            if o["kind"] == "claim" and o["res"] in ("ok", "EEXIST")]
        objects = {k for k in after if k != "torn"}
        for obj in sorted(objects | set(by_obj)):
            ops = by_obj.get(obj, [])
            before, observed = self.state.get(obj), after.get(obj)
            if obj.startswith("key:"):
                stepf = key_step
                final = key_final(gens, observed)
            elif obj.startswith("step:"):
                stepf, final = step_step, (lambda s, o=observed: s == o)
            elif obj.startswith("fp:"):
                stepf, final = fp_step, (lambda s, o=observed: s == o)
            else:
                stepf, final = solo_step, solo_final(gens, observed)
            self.objects += 1
            ok = linearize(ops, before, stepf, final, gens)
            if ok is None:
                self.log("round %d: %s: %d operations, search budget exhausted (not counted as a violation)"
                         % (rnd, obj, len(ops)))
            elif not ok:
                lines = ["round %d: %s: no order of its operations explains what was acknowledged and "
                         "the state after the remount" % (rnd, obj),
                         "  before the round: %s" % short(before),
                         "  the daemon was SIGKILLed at %.3f ms" % (
                             (self.killed_at - min([o["start"] for o in ops], default=self.killed_at)) * 1e3),
                         "  after the remount: %s" % short(observed)]
                t0 = min([o["start"] for o in ops], default=0)
                shown = sorted(ops, key=lambda o: o["start"])
                if len(shown) > 120:
                    lines.append("  (the last 120 of %d operations)" % len(shown))
                    shown = shown[-120:]
                for o in shown:
                    args = {k: short(v) for k, v in o.items()
                            if k not in ("id", "obj", "kind", "start", "end", "res", "worker")}
                    lines.append("  %-14s %-13s %9.3f..%-9s -> %-10s %s" % (
                        o["id"], o["kind"], (o["start"] - t0) * 1e3,
                        "maybe" if o["end"] == INF else "%.3f" % ((o["end"] - t0) * 1e3),
                        "MAYBE" if o["res"] is None else short(o["res"]), args))
                if obj.startswith("key:shared:"):
                    lines += self.key_events(obj[len("key:shared:"):], pids)
                self.violation("\n".join(lines))
        self.state = after

    def key_events(self, name, pids):
        """The end of the shared workflow's events about key `name`, to
        show what the daemon logged (clients by pid: %s)."""
        try:
            lines = read(self.m.p("shared", "events")).decode(errors="replace").splitlines()
        except OSError as e:
            return ["  (events unreadable: %s)" % e]
        mine = [line for line in lines if '"key":"%s"' % name in line]
        who = {v: "w%d" % k for k, v in pids.items()}
        out = ["  events of %s (the last 40; clients by pid: %s):" % (
            name, ", ".join("w%d=%d" % kv for kv in sorted(pids.items())))]
        for line in mine[-40:]:
            for pid, w in who.items():
                line = line.replace('"pid":%d,' % pid, '"pid":%d(%s),' % (pid, w))
            out.append("    " + line)
        return out

    def run(self, kills, minutes=None):
        started = time.monotonic()
        self.setup()
        try:
            for rnd in range(1, kills + 1):
                if minutes and time.monotonic() - started > minutes * 60:
                    self.log("time limit reached after %d kills" % (rnd - 1))
                    break
                hold = self.rng.uniform(0.02, 0.6)
                hist = self.round(rnd, hold)
                self.m.start()
                after = read_state(self.m, self.workers)
                self.check(rnd, hist, after)
                if rnd % 50 == 0:
                    self.log("%d kills, %d operations checked, %d violations" %
                             (rnd, self.known, len(self.violations)))
                if len(self.violations) > self.max_violations:
                    self.log("too many violations: stopping")
                    break
            self.m.stop()
        finally:
            self.m.cleanup()
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.elapsed = time.monotonic() - started
        return not self.violations

    def summary(self):
        return ("crash test: %d kills survived in %.0f s; %d operations recorded, %d with a known "
                "outcome checked (%d acknowledged), %d in flight at a kill (maybe); %d object "
                "histories checked; highest generation %d; %d violations" %
                (self.kills, self.elapsed, self.ops, self.known, self.acked, self.maybe,
                 self.objects, self.max_gen, len(self.violations)) +
                "\nin flight at the kills: " +
                ", ".join("%s %d" % kv for kv in sorted(self.maybe_kinds.items())))


def short(v):
    if isinstance(v, bytes):
        return repr(v[:40]) + ("...(%d)" % len(v) if len(v) > 40 else "")
    if isinstance(v, tuple):
        return "(" + ", ".join(short(x) for x in v) + ")"
    return repr(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=None, help="stop early after this long")
    ap.add_argument("--tolerate-double-claims", action="store_true",
                    help="accept that one open(O_EXCL) may have claimed twice, its first claim "
                         "released by another client (a known bug), to exercise the other checks")
    ap.add_argument("--max-violations", type=int, default=20, help="stop after more than this many")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    print("crash test: seed %d, %d clients, up to %d kills" % (seed, a.workers, a.kills), flush=True)
    r = Run(a.workers, seed, tolerate_double_claims=a.tolerate_double_claims)
    r.max_violations = a.max_violations
    ok = r.run(a.kills, a.minutes)
    print(r.summary())
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())

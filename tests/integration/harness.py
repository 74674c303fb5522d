"""Mount a real oncefs for a test, and always unmount it.

Every integration test imports this module.  `Mount` starts the daemon
built by meson (path in $ONCEFS) on a store in a fresh temporary
directory and waits until the mount is live; leaving the `with` block,
or any failure inside it, unmounts and stops the daemon.  A test process
that dies still leaves nothing behind: the atexit hook unmounts what is
left, and `run()` exits 77 (skip) only when FUSE cannot work at all.
"""
import atexit
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ONCEFS = os.environ.get("ONCEFS", os.path.join(os.path.dirname(__file__), "../../build/oncefs"))
_live = []

# Which store the suite runs on: "sqlite" (files), or "postgres", where
# each store a test names by a file gets a database of its own on one
# private server (pgserver.py) that this process starts and stops.
STORE_KIND = os.environ.get("ONCEFS_TEST_STORE", "sqlite")
_pg = None
_pg_dbs = {}


def pg_server():
    global _pg
    if _pg is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import pgserver
        _pg = pgserver.PgServer().start()
    return _pg


def store_name(path):
    """The store a test names by a SQLite file: that file, or on
    PostgreSQL the URL of a database made for it (the same for the same
    path, so that mounts that share a file share a database)."""
    if STORE_KIND != "postgres" or "://" in path or "=" in path:
        return path
    path = os.path.realpath(path)
    if path not in _pg_dbs:
        db = "t%d" % (len(_pg_dbs) + 1)
        pg_server().psql("CREATE DATABASE %s" % db)
        _pg_dbs[path] = pg_server().socket_url(db)
    return _pg_dbs[path]


def sqlite_only(why):
    """A test of what only a SQLite file has (say what)."""
    return unittest.skipIf(STORE_KIND == "postgres", "SQLite only: " + why)


def fuse_available():
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


def _is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def _unmount(path):
    for cmd in (["fusermount3", "-u", "-q", path], ["umount", "-l", path]):
        if not _is_mounted(path):
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Mount:
    """A mounted oncefs; `store` may be shared by several Mounts."""

    def __init__(self, store=None, options=("create",), tmp=None, env=None):
        self.tmp = tmp or tempfile.mkdtemp(prefix="oncefs-test-")
        self.own_tmp = tmp is None
        self.store = store_name(store or os.path.join(self.tmp, "state.db"))
        self.options = list(options)
        self.path = tempfile.mkdtemp(prefix="mnt-", dir=self.tmp)
        self.proc = None
        self.env = env

    def start(self):
        args = [ONCEFS, "-f"]
        if self.options:
            args += ["-o", ",".join(self.options)]
        args += [self.store, self.path]
        self.log = open(os.path.join(self.tmp, "oncefs-%d.log" % len(_live)), "ab")
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)
        _live.append(self)
        deadline = time.time() + 20
        while not _is_mounted(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError("oncefs exited with %d: %s" % (self.proc.returncode, self.read_log()))
            if time.time() > deadline:
                raise RuntimeError("oncefs did not mount")
            time.sleep(0.01)
        return self

    def read_log(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode(errors="replace")

    def kill9(self):
        """SIGKILL the daemon, as a crash would, and clean up the dead mount."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        _unmount(self.path)
        self.log.close()
        if self in _live:
            _live.remove(self)
        self.proc = None

    def stop(self):
        if self.proc is None:
            return
        _unmount(self.path)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = "hung"
        self.log.close()
        if self in _live:
            _live.remove(self)
        self.proc = None
        if code != 0:
            # A sanitizer report or a crash of the daemon fails the test.
            raise RuntimeError("oncefs exited with %s:\n%s" % (code, self.read_log()))

    def restart(self, options=None):
        self.stop()
        if options is not None:
            self.options = list(options)
        return self.start()

    def p(self, *parts):
        return os.path.join(self.path, *parts)

    def cleanup(self):
        self.stop()
        if self.own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc):
        self.cleanup()
        return False


@atexit.register
def _unmount_all():
    for m in list(_live):
        try:
            m.stop()
        except Exception:
            pass


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data, flags=os.O_WRONLY | os.O_TRUNC):
    """write() then close(), raising OSError from either."""
    fd = os.open(path, flags)
    try:
        os.write(fd, data if isinstance(data, bytes) else data.encode())
    finally:
        os.close(fd)


def claim(path):
    """O_CREAT|O_EXCL: returns the open fd, raises FileExistsError."""
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)


def hold(path):
    """Claim and detach: the claim stays in flight after its close, for
    in_flight_ttl (what `set -C; echo detach > K` does).  Returns the
    generation."""
    fd = claim(path)
    try:
        os.write(fd, b"detach\n")
    finally:
        os.close(fd)
    return int(read(path).split()[1])


def sh(script, cwd=None, check=False):
    """Run a bash script; returns CompletedProcess with text output."""
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=check)


def errno_of(fn, *args, **kw):
    """The errno fn raises, or 0."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return 0


class MountedTest(unittest.TestCase):
    """A test case with a fresh mount in self.m and a workflow in self.wf."""

    options = ("create",)

    def setUp(self):
        self.m = Mount(options=self.options)
        self.m.__enter__()
        self.addCleanup(self.m.cleanup)
        self.wf = self.m.p("wf")
        os.mkdir(self.wf)

    def key(self, name):
        return os.path.join(self.wf, "keys", name)

    def events(self):
        """The workflow's events, parsed."""
        return [json.loads(line) for line in read(os.path.join(self.wf, "events")).splitlines()]

    def assertAbandoned(self, name):
        """The claim on key `name` was closed with nothing finalized: the
        key is free, and the events say "abandon"."""
        # The kernel sends the release just after close() returns.
        deadline = time.monotonic() + 2
        while os.path.exists(self.key(name)) and time.monotonic() < deadline:
            time.sleep(0.002)
        self.assertFalse(os.path.exists(self.key(name)), "the claim was not abandoned")
        lines = [json.loads(line) for line in read(os.path.join(self.wf, "events")).splitlines()]
        last = [e for e in lines if e.get("key") == name][-1]
        self.assertEqual(last["event"], "abandon", last)
        return last

    def assertErrno(self, code, fn, *args, **kw):
        got = errno_of(fn, *args, **kw)
        self.assertEqual(got, code, "expected %s, got %s" % (errno.errorcode.get(code), errno.errorcode.get(got, got)))


def run():
    if not fuse_available():
        print("FUSE is not available: skipping")
        sys.exit(77)
    unittest.main(verbosity=2)

"""A private PostgreSQL server for the tests: Debian's postgresql, started
with initdb + pg_ctl as the postgres user in a temporary directory,
listening on a socket there and on a loopback port, stopped (and removed)
at the end even when a test fails or the test process is killed by an
exception.  No mock of PostgreSQL anywhere.

    with PgServer() as pg:
        pg.url("postgres")        # postgresql://oncefs@127.0.0.1:PORT/postgres
        pg.psql("SELECT 1")

`available()` says whether the binaries are installed (scripts/deps
installs them); a test that needs a server and has none skips, saying so.
"""
import atexit
import glob
import os
import pwd
import shutil
import sys
import signal
import socket
import subprocess
import tempfile
import time

PASSWORD = "oncefs-test-password"


def bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(found[-1]) if found else None


def available():
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return bindir() is not None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_running = []


def _stop_all():
    for server in list(_running):
        server.stop()


atexit.register(_stop_all)


def _on_sigterm(signum, frame):
    # meson's timeout sends SIGTERM: exit through atexit, which stops the server.
    sys.exit(128 + signum)


class PgServer:
    def __init__(self):
        self.bin = bindir()
        self.tmp = tempfile.mkdtemp(prefix="oncefs-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.sock = os.path.join(self.tmp, "sock")
        self.port = None
        self.started = False

    def _as_postgres(self, *argv, **kw):
        cmd = list(argv)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, **kw)

    def start(self):
        pw = pwd.getpwnam("postgres")
        os.chmod(self.tmp, 0o755)
        os.mkdir(self.sock)
        if os.geteuid() == 0:
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
        pwfile = os.path.join(self.tmp, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        r = self._as_postgres(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "oncefs",
                              "--pwfile", pwfile, "-A", "scram-sha-256", "--auth-local=trust",
                              "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        if r.returncode:
            raise RuntimeError("initdb failed: " + r.stdout + r.stderr)
        self.port = _free_port()
        opts = ("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s "
                "-c fsync=on -c synchronous_commit=on -c max_connections=100"
                % (self.port, self.sock))
        self.opts = opts
        r = self._as_postgres(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-o", opts,
                              "-l", os.path.join(self.tmp, "server.log"), "-w", "-t", "60", "start")
        if r.returncode:
            raise RuntimeError("pg_ctl start failed: %s%s%s" % (r.stdout, r.stderr, self.log()))
        self.started = True
        _running.append(self)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        return self

    def halt(self):
        """Stop the server (its data stays) until resume()."""
        r = self._as_postgres(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast",
                              "-w", "-t", "60", "stop")
        if r.returncode:
            raise RuntimeError("pg_ctl stop failed: " + r.stdout + r.stderr)

    def resume(self):
        r = self._as_postgres(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-o", self.opts,
                              "-l", os.path.join(self.tmp, "server.log"), "-w", "-t", "60", "start")
        if r.returncode:
            raise RuntimeError("pg_ctl start failed: " + r.stdout + r.stderr)

    def log(self):
        try:
            with open(os.path.join(self.tmp, "server.log")) as f:
                return f.read()
        except OSError:
            return ""

    def url(self, db="postgres", user="oncefs", password=PASSWORD, host="127.0.0.1", port=None):
        auth = user + (":" + password if password else "")
        return "postgresql://%s@%s:%d/%s" % (auth, host, port or self.port, db)

    def socket_url(self, db="postgres"):
        """Over the private socket (trusted locally: no password)."""
        return "postgresql://oncefs@/%s?host=%s&port=%d" % (db, self.sock, self.port)

    def psql(self, sql, db="postgres"):
        r = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At",
                            "-h", self.sock, "-p", str(self.port), "-U", "oncefs", "-d", db,
                            "-c", sql], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("psql %r: %s" % (sql, r.stderr))
        return r.stdout

    def stop(self):
        if self.started:
            self._as_postgres(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate",
                              "-w", "-t", "60", "stop")
            self.started = False
        if self in _running:
            _running.remove(self)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

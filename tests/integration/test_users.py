"""Users and permissions: a mount made by root with `-o allow_other`, used
by an unprivileged user.  The kernel checks modes (oncefs always mounts with
default_permissions); a workflow's owner and mode govern its keys, steps
and policy files.  Without allow_other, no other user sees the mount.

The user `oncefs-test` is created when missing (and removed again); the
file is skipped (77) only when no user can be made.  Commands run as the
user through setpriv(1)."""
import atexit
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import Mount, claim, read, run  # noqa: E402

USER = "oncefs-test"
_created = []


def ensure_user():
    """The test user's pwd entry, creating the user if needed; None when
    that is impossible."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    if os.geteuid() != 0 or not shutil.which("useradd"):
        return None
    r = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", USER], capture_output=True, text=True)
    if r.returncode != 0:
        print("useradd %s: %s" % (USER, r.stderr.strip()))
        return None
    _created.append(USER)
    return pwd.getpwnam(USER)


@atexit.register
def _remove_user():
    for u in _created:
        subprocess.run(["userdel", u], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Run as the user: a list of [action, path, data] in, a list of outcomes
# ("ok", a value, or an errno name) out, as JSON.
AGENT = r"""
import errno, json, os, sys
out = []
for action, path, data in json.loads(sys.argv[1]):
    try:
        if action == "stat":
            os.stat(path); r = "ok"
        elif action == "listdir":
            r = sorted(os.listdir(path))
        elif action == "read":
            with open(path, "rb") as f:
                r = f.read().decode(errors="replace")
        elif action == "claim":
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            if data is not None:
                os.write(fd, data.encode())
            os.close(fd); r = "ok"
        elif action == "write":        # finalize by path, or a policy value
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, data.encode())
            finally:
                os.close(fd)
            r = "ok"
        elif action == "open_write":
            os.close(os.open(path, os.O_WRONLY)); r = "ok"
        elif action == "create":
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.write(fd, data.encode()); os.close(fd); r = "ok"
        elif action == "unlink":
            os.unlink(path); r = "ok"
        elif action == "mkdir":
            os.mkdir(path); r = "ok"
        elif action == "rmdir":
            os.rmdir(path); r = "ok"
        elif action == "chmod":
            os.chmod(path, int(data, 8)); r = "ok"
        elif action == "chown":
            os.chown(path, int(data), -1); r = "ok"
        elif action == "touch":
            os.utime(path); r = "ok"
        elif action == "truncate":
            os.truncate(path, 0); r = "ok"
        elif action == "getxattr":
            r = os.getxattr(path, data).decode()
        else:
            r = "bad action"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno))
    out.append(r)
print(json.dumps(out))
"""


class Users(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.user = ensure_user()
        if cls.user is None:
            raise unittest.SkipTest("no unprivileged user can be made")

    def setUp(self):
        # A directory the user may pass through to reach the mountpoint.
        self.tmp = tempfile.mkdtemp(prefix="oncefs-users-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def mount(self, *options):
        m = Mount(tmp=self.tmp, options=("create",) + options)
        m.store = os.path.join(self.tmp, "state-%d.db" % len(os.listdir(self.tmp)))
        m.start()
        self.addCleanup(m.cleanup)
        return m

    def as_user(self, *actions):
        """Run actions as the user; returns their outcomes."""
        u = self.user
        r = subprocess.run(["setpriv", "--reuid=%d" % u.pw_uid, "--regid=%d" % u.pw_gid, "--clear-groups",
                            sys.executable, "-c", AGENT, json.dumps([list(a) + [None] * (3 - len(a))
                                                                      for a in actions])],
                           capture_output=True, text=True, timeout=120, cwd="/")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def assertAsUser(self, expected, *actions):
        got = self.as_user(*actions)
        self.assertEqual(got, expected, "as %s: %s" % (USER, list(zip(actions, got))))

    def finalized(self, path, data=b"succeeded\nroot's result"):
        fd = claim(path)
        os.write(fd, data)
        os.close(fd)

    def test_private_workflow(self):
        """A root workflow with mode 0700: the user can do nothing in it."""
        m = self.mount("allow_other")
        wf = m.p("private")
        os.mkdir(wf)
        os.chmod(wf, 0o700)
        k = os.path.join(wf, "keys")
        self.finalized(os.path.join(k, "done"))
        held = claim(os.path.join(k, "held"))   # in flight, held by root
        self.addCleanup(os.close, held)
        self.assertAsUser(["ok", "ok"], ("stat", m.path), ("stat", wf))
        self.assertAsUser(
            ["EACCES"] * 10,
            ("claim", os.path.join(k, "new")),
            ("write", os.path.join(k, "held"), "succeeded\n"),   # finalize
            ("unlink", os.path.join(k, "done")),                 # release
            ("unlink", os.path.join(k, "held")),
            ("read", os.path.join(k, "done")),
            ("listdir", k),
            ("read", os.path.join(wf, "events")),
            ("create", os.path.join(wf, "steps", "s"), "x"),
            ("write", os.path.join(wf, "policy", "dedup_on"), "any\n"),
            ("write", os.path.join(wf, "input.fingerprint"), "v2\n"))
        self.assertAsUser(["EPERM", "EACCES", "EACCES"],
                          ("chmod", wf, "777"), ("mkdir", m.p("mine")), ("rmdir", wf))
        # Nothing changed.
        self.assertEqual(sorted(os.listdir(k)), ["done", "held"])
        self.assertEqual(read(os.path.join(k, "held")).split()[0], b"in_flight")
        self.assertEqual(read(os.path.join(wf, "policy", "dedup_on")), b"success\n")
        self.assertEqual(os.listdir(os.path.join(wf, "steps")), [])

    def test_readable_workflow(self):
        """A root workflow with mode 0755: the user reads, and changes nothing."""
        m = self.mount("allow_other")
        wf = m.p("public")
        os.mkdir(wf)
        os.chmod(wf, 0o755)
        k = os.path.join(wf, "keys")
        self.finalized(os.path.join(k, "done"))
        held = claim(os.path.join(k, "held"))
        self.addCleanup(os.close, held)
        out = self.as_user(("read", os.path.join(k, "done")), ("listdir", k),
                           ("read", os.path.join(wf, "policy", "dedup_on")))
        self.assertTrue(out[0].startswith("succeeded "), out)
        self.assertEqual(out[1:], [["done", "held"], "success\n"])
        self.assertAsUser(
            ["EACCES"] * 7,
            ("claim", os.path.join(k, "new")),
            ("write", os.path.join(k, "held"), "succeeded\n"),
            ("unlink", os.path.join(k, "held")),
            ("unlink", os.path.join(k, "done")),
            ("create", os.path.join(wf, "steps", "s"), "x"),
            ("write", os.path.join(wf, "policy", "dedup_on"), "any\n"),
            ("touch", os.path.join(k, "held")))
        self.assertEqual(sorted(os.listdir(k)), ["done", "held"])
        self.assertEqual(read(os.path.join(k, "held")).split()[0], b"in_flight")

    def test_chown_gives_the_workflow_to_the_user(self):
        m = self.mount("allow_other")
        wf = m.p("theirs")
        os.mkdir(wf)
        os.chmod(wf, 0o700)
        k = os.path.join(wf, "keys")
        self.assertAsUser(["EACCES"], ("claim", os.path.join(k, "job")))
        os.chown(wf, self.user.pw_uid, self.user.pw_gid)
        self.assertEqual(os.stat(wf).st_uid, self.user.pw_uid)
        out = self.as_user(
            ("claim", os.path.join(k, "job"), "detach"),             # in flight after its close
            ("getxattr", os.path.join(k, "job"), "user.oncefs.holder"),
            ("claim", os.path.join(k, "ok"), "succeeded\nuser's result"),
            ("read", os.path.join(k, "ok")),
            ("create", os.path.join(wf, "steps", "s"), "checkpoint"),
            ("read", os.path.join(wf, "steps", "s")),
            ("write", os.path.join(wf, "policy", "dedup_on"), "any\n"),
            ("chmod", wf, "750"))
        self.assertEqual(out[0], "ok")
        self.assertIn(str(self.user.pw_uid), out[1], "the holder is the user")
        self.assertEqual(out[2], "ok")
        self.assertTrue(out[3].startswith("succeeded ") and out[3].endswith("\nuser's result"), out[3])
        self.assertEqual(out[4:], ["ok", "checkpoint", "ok", "ok"])
        # A terminal key refuses the owner's writes with EACCES (root: EPERM).
        self.assertAsUser(["EACCES"] * 4,
                          ("open_write", os.path.join(k, "ok")),
                          ("write", os.path.join(k, "ok"), "succeeded\n"),
                          ("touch", os.path.join(k, "ok")),
                          ("truncate", os.path.join(k, "ok")))
        # Releasing it is the owner's operator action.
        self.assertAsUser(["ok", "ok"], ("unlink", os.path.join(k, "ok")),
                          ("claim", os.path.join(k, "ok"), "failed\n"))
        self.assertEqual(read(os.path.join(wf, "policy", "dedup_on")), b"any\n")
        self.assertEqual(os.stat(wf).st_mode & 0o777, 0o750)
        # Only root gives a workflow away; the mount's root stays root's.
        self.assertAsUser(["EPERM", "EPERM", "EACCES"], ("chown", wf, "0"), ("chmod", m.path, "777"),
                          ("mkdir", m.p("another")))
        self.assertEqual(os.stat(wf).st_uid, self.user.pw_uid)

    def test_allow_other_as_root_needs_no_fuse_conf(self):
        """root may mount with allow_other whatever /etc/fuse.conf says."""
        try:
            with open("/etc/fuse.conf") as f:
                conf = [line.split("#")[0].strip() for line in f]
        except OSError:
            conf = []
        m = self.mount("allow_other")
        os.mkdir(m.p("open"))
        os.chmod(m.p("open"), 0o777)
        self.assertAsUser(["ok", "ok"],
                          ("stat", m.p("open")), ("claim", m.p("open", "keys", "k"), "succeeded\n"))
        if "user_allow_other" not in conf:
            print("(/etc/fuse.conf has no user_allow_other: root needed none)")

    def test_without_allow_other_the_mount_is_invisible(self):
        m = self.mount()
        os.mkdir(m.p("wf"))
        os.chmod(m.p("wf"), 0o777)
        self.assertAsUser(["EACCES", "EACCES", "EACCES"], ("stat", m.path), ("stat", m.p("wf")),
                          ("claim", m.p("wf", "keys", "k")))
        self.assertFalse(os.path.exists(m.p("wf", "keys", "k")))


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("these tests create a user and run commands as it: they need root; skipping")
        sys.exit(77)
    if ensure_user() is None:
        print("no unprivileged user can be made: skipping")
        sys.exit(77)
    run()

"""Real clients over a real mount: bash (with and without noclobber),
python's open(..., "x"), node's fs, coreutils, and a non-root user."""
import errno
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import MountedTest, claim, hold, read, write, sh, run  # noqa: E402

# The idiom from DESIGN.md, without the steps: claim on fd 3 (noclobber
# makes '>' an O_EXCL open), record the input, finalize, close.  $HOLD, if
# set, is a fifo the script waits on while it holds the claim.
IDIOM = r'''
set -eC
mkdir -p "$1" && cd "$1"
exec 3> keys/2026-11-21 || { cat keys/2026-11-21; exit 0; }
echo claimed
printf '%s\n' "$2" >| input.fingerprint
if [ -n "$HOLD" ]; then read -r _ < "$HOLD"; fi
echo succeeded >&3
exec 3>&-
echo done
'''

NODE = shutil.which("node")


def bash(script, *args, cwd=None, env=None):
    return subprocess.run(["bash", "-c", script, "bash"] + list(args), cwd=cwd, env=env,
                          capture_output=True, text=True)


def node(script, *args):
    return subprocess.run([NODE, "-e", script] + list(args), capture_output=True, text=True)


class Bash(MountedTest):
    def etl(self, *parts):
        return self.m.p("nightly-etl", *parts)

    def test_idiom_runs_once(self):
        k = self.etl("keys", "2026-11-21")
        r = bash(IDIOM, self.etl(), "fp-1")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "claimed\ndone\n", ""))
        gen = int(os.getxattr(k, "user.oncefs.generation"))
        self.assertEqual(read(k), b"succeeded %d\n" % gen)
        self.assertEqual(read(self.etl("input.fingerprint")), b"fp-1\n")
        # The re-run reads the stored result and exits 0 without running.
        r = bash(IDIOM, self.etl(), "fp-2")
        self.assertEqual((r.returncode, r.stdout), (0, "succeeded %d\n" % gen))
        self.assertIn("cannot overwrite existing file", r.stderr)
        self.assertEqual(read(self.etl("input.fingerprint")), b"fp-1\n")

    def test_idiom_duplicate_while_in_flight(self):
        k = self.etl("keys", "2026-11-21")
        fifo = os.path.join(self.m.tmp, "hold")
        os.mkfifo(fifo)
        first = subprocess.Popen(["bash", "-c", IDIOM, "bash", self.etl(), "fp"],
                                 env=dict(os.environ, HOLD=fifo), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            self.assertEqual(first.stdout.readline(), "claimed\n")
            gen = int(os.getxattr(k, "user.oncefs.generation"))
            dup = bash(IDIOM, self.etl(), "fp")
            self.assertEqual((dup.returncode, dup.stdout), (0, "in_flight %d\n" % gen))
            self.assertIn("cannot overwrite existing file", dup.stderr)
            with open(fifo, "w") as f:
                f.write("go\n")
            out, err = first.communicate(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
        self.assertEqual((first.returncode, out, err), (0, "done\n", ""))
        self.assertEqual(read(k), b"succeeded %d\n" % gen)

    def test_many_shells_race_with_noclobber(self):
        procs = [subprocess.Popen(["bash", "-c", "set -C; exec 3> \"$1\" && echo detach >&3 && echo won", "bash", self.key("k")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(16)]
        outs = [p.communicate(timeout=60) for p in procs]
        won = [o for o, e in outs if o == "won\n"]
        self.assertEqual(len(won), 1, outs)
        for o, e in outs:
            if o != "won\n":
                self.assertTrue("cannot overwrite existing file" in e or "File exists" in e, e)

    def test_garbage_is_a_write_error_and_key_stays_in_flight(self):
        k = self.key("k")
        hold(k)
        gen = int(os.getxattr(k, "user.oncefs.generation"))
        for script in ("echo garbage > keys/k", "echo in_flight > keys/k", "echo done > keys/k",
                       "printf 'succeeded %d\\n' {} > keys/k".format(gen + 1)):
            r = sh(script, cwd=self.wf)
            self.assertNotEqual(r.returncode, 0, script)
            self.assertIn("write error", r.stderr, script)
            self.assertEqual(read(k), b"in_flight %d\n" % gen, script)

    def test_garbage_on_the_claim_fd_then_a_good_status(self):
        r = sh("set -eC; exec 3> keys/k; echo garbage >&3 || echo refused; echo succeeded >&3; exec 3>&-",
               cwd=self.wf)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "refused\n")
        self.assertIn("write error: Invalid argument", r.stderr)
        self.assertEqual(read(self.key("k")).split()[0], b"succeeded")

    def test_create_without_noclobber_is_enoent(self):
        r = sh("echo x > keys/new", cwd=self.wf)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("No such file or directory", r.stderr)
        r = sh("echo succeeded > keys/new2", cwd=self.wf)
        self.assertNotEqual(r.returncode, 0)
        r = subprocess.run(["touch", self.key("new3")], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        with self.assertRaises(FileNotFoundError):
            open(self.key("new4"), "w")
        with self.assertRaises(FileNotFoundError):
            open(self.key("new5"), "a")
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [])
        self.assertNotIn("claim", read(os.path.join(self.wf, "events")).decode())

    def test_finalize_with_result_and_read_back(self):
        r = sh("set -C; exec 3> keys/k; printf 'succeeded\\nline one\\nline two\\n' >&3; exec 3>&-; cat keys/k",
               cwd=self.wf)
        self.assertEqual(r.returncode, 0, r.stderr)
        first, rest = r.stdout.split("\n", 1)
        self.assertEqual(first.split()[0], "succeeded")
        self.assertEqual(rest, "line one\nline two\n")
        r = sh("head -n1 keys/k | cut -d' ' -f1; ls -l keys/k | cut -c1-10", cwd=self.wf)
        self.assertEqual(r.stdout.split(), ["succeeded", "-r--r--r--"])
        # A terminal key refuses root's touch, truncate and rewrite too.
        before = (os.stat(self.key("k")).st_mtime_ns, read(self.key("k")))
        for cmd in (["touch", "keys/k"], ["truncate", "-s", "0", "keys/k"],
                    ["bash", "-c", "echo failed > keys/k"], ["bash", "-c", "echo failed >| keys/k"]):
            r = subprocess.run(cmd, cwd=self.wf, capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0, cmd)
            self.assertIn("Operation not permitted", r.stderr, cmd)
        self.assertEqual((os.stat(self.key("k")).st_mtime_ns, read(self.key("k"))), before)


class MaxResult(MountedTest):
    options = ("create", "max_result=16")

    def test_result_too_big_is_efbig_at_write(self):
        r = sh("set -C; exec 3> keys/big; printf 'succeeded\\n%s' 01234567890123456 >&3; exec 3>&-; cat keys/big",
               cwd=self.wf)
        self.assertIn("File too large", r.stderr)
        # bash's printf writes "succeeded\n" and the result in two write()s;
        # once one is refused for its size, the handle commits nothing.
        # Its holder closed it with nothing finalized: the claim is free.
        self.assertAbandoned("big")
        fd = claim(self.key("ok"))
        try:
            self.assertErrno(errno.EFBIG, os.write, fd, b"succeeded\n" + b"x" * 17)
        finally:
            self.assertErrno(errno.EFBIG, os.close, fd)
        self.assertAbandoned("ok")
        # A handle that stayed within the limit commits.
        fd = claim(self.key("ok"))
        os.write(fd, b"succeeded\n" + b"x" * 16)
        os.close(fd)
        self.assertEqual(read(self.key("ok")).split(b"\n", 1)[1], b"x" * 16)


class Python(MountedTest):
    def test_open_x_claims_once(self):
        k = self.key("k")
        f = open(k, "x")
        with self.assertRaises(FileExistsError):
            open(k, "x")
        other = subprocess.run([sys.executable, "-c",
                                "import sys\ntry:\n open(sys.argv[1], 'x')\nexcept FileExistsError:\n"
                                " print(open(sys.argv[1]).read().split()[0])\n", k],
                               capture_output=True, text=True)
        self.assertEqual(other.stdout, "in_flight\n", other.stderr)
        with f:
            f.write("succeeded\n")
            f.write("the result")
        self.assertEqual(read(k).split(b"\n", 1)[1], b"the result")
        with self.assertRaises(FileExistsError):
            open(k, "x")

    def test_design_example(self):
        script = r'''
import sys
path = sys.argv[1]
try:
    key = open(path, "x")
except FileExistsError:
    print(open(path).read())
    raise SystemExit(0)
with key:
    try:
        result = "computed"
        if sys.argv[2] == "fail":
            raise RuntimeError("boom")
    except BaseException:
        key.write("failed\n")
        raise
    key.write("succeeded\n" + result)
print("ran")
'''
        k = self.key("2026-11-21")
        r = subprocess.run([sys.executable, "-c", script, k, "fail"], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("boom", r.stderr)
        self.assertFalse(os.path.exists(k), "a failure frees the key under dedup_on=success")
        r = subprocess.run([sys.executable, "-c", script, k, "ok"], capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stdout), (0, "ran\n"), r.stderr)
        r = subprocess.run([sys.executable, "-c", script, k, "ok"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("succeeded "))
        self.assertIn("computed", r.stdout)
        self.assertEqual(os.getxattr(k, "user.oncefs.attempt"), b"2")

    def test_buffered_stale_write_raises_at_close(self):
        k = self.key("k")
        f = open(k, "x")
        gen = int(os.getxattr(k, "user.oncefs.generation"))
        f.write("succeeded %d\n" % (gen + 1))  # buffered: reaches the daemon at close
        with self.assertRaises(OSError) as cm:
            f.close()
        self.assertEqual(cm.exception.errno, errno.ESTALE)
        # Nothing was finalized, and the claim's handle is closed.
        self.assertEqual(self.assertAbandoned("k")["generation"], gen)

    def test_oversize_result_commits_nothing(self):
        """A result over max_result (1 MiB) is EFBIG and changes nothing.
        The kernel splits one big write() into several FUSE writes: the
        ones that fit must not be committed as a truncated result."""
        k = self.key("big")
        result = "y" * ((1 << 20) + 1)
        with self.assertRaises(OSError) as cm:
            with open(k, "x") as f:
                f.write("succeeded\n" + result)
        self.assertEqual(cm.exception.errno, errno.EFBIG)
        # Nothing committed (no truncated result): the claim is abandoned.
        self.assertAbandoned("big")

    def test_oversize_single_write_syscall(self):
        k = self.key("big")
        data = b"succeeded\n" + b"x" * ((1 << 20) + 1)
        fd = claim(k)
        errors = []
        try:
            done = 0
            while done < len(data):  # what any write-all loop does
                try:
                    done += os.write(fd, data[done:])
                except OSError as e:
                    errors.append(e.errno)
                    break
        finally:
            try:
                os.close(fd)
            except OSError as e:
                errors.append(e.errno)
        self.assertIn(errno.EFBIG, errors)
        # No truncated result was committed: the claim is abandoned.
        self.assertAbandoned("big")

    def test_largest_result(self):
        k = self.key("big")
        result = b"z" * (1 << 20)
        with open(k, "xb") as f:
            f.write(b"succeeded\n" + result)
        self.assertEqual(read(k).split(b"\n", 1)[1], result)

    def test_status_line_in_pieces(self):
        k = self.key("k")
        fd = claim(k)
        try:
            for piece in (b"succ", b"eed", b"ed", b"\nres", b"ult"):
                os.write(fd, piece)
        finally:
            os.close(fd)
        self.assertEqual(read(k).split(b"\n", 1)[1], b"result")


@unittest.skipUnless(NODE, "node is not installed")
class Node(MountedTest):
    def test_open_wx_claims_once(self):
        k = self.key("k")
        js = r'''
const fs = require('fs');
const k = process.argv[1];
const out = {};
const fd = fs.openSync(k, 'wx');
out.claimed = true;
try { fs.openSync(k, 'wx'); out.second = 'opened'; } catch (e) { out.second = e.code; }
try { fs.writeSync(fd, 'garbage\n'); out.garbage = 'written'; } catch (e) { out.garbage = e.code; }
fs.writeSync(fd, 'succeeded\nfrom node');
fs.closeSync(fd);
try { fs.openSync(k, 'wx'); out.third = 'opened'; } catch (e) { out.third = e.code; }
out.content = fs.readFileSync(k, 'utf8');
console.log(JSON.stringify(out));
'''
        r = node(js, k)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["second"], "EEXIST")
        self.assertEqual(out["garbage"], "EINVAL")
        self.assertEqual(out["third"], "EEXIST")
        self.assertTrue(out["content"].startswith("succeeded "))
        self.assertTrue(out["content"].endswith("\nfrom node"))

    def test_second_node_process_gets_eexist(self):
        k = self.key("k")
        fd = claim(k)
        try:
            r = node("try { require('fs').openSync(process.argv[1], 'wx'); console.log('opened'); }"
                     " catch (e) { console.log(e.code); }", k)
            self.assertEqual(r.stdout, "EEXIST\n", r.stderr)
        finally:
            os.close(fd)

    def test_estale_is_unknown_system_error_116(self):
        k = self.key("k")
        hold(k)
        gen = int(os.getxattr(k, "user.oncefs.generation"))
        js = r'''
const fs = require('fs');
const [k, line] = process.argv.slice(1);
const out = {};
try { fs.writeFileSync(k, line); out.sync = 'ok'; } catch (e) { out.sync = [e.code, e.errno, e.message]; }
fs.promises.writeFile(k, line).then(
  () => { out.promise = 'ok'; },
  (e) => { out.promise = [e.code, e.errno, e.message]; }
).then(() => console.log(JSON.stringify(out)));
'''
        r = node(js, k, "succeeded %d\n" % (gen + 1))
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        for how in ("sync", "promise"):
            code, num, message = out[how]
            self.assertEqual(num, -errno.ESTALE, how)
            self.assertIn("Unknown system error -116", message, how)
        self.assertEqual(read(k), b"in_flight %d\n" % gen)


class OtherUser(MountedTest):
    """A non-root user on a mount with allow_other: the kernel checks
    permissions (default_permissions), so writes to 0444 keys are EACCES."""
    options = ("create", "allow_other")
    UID = 65534

    def setUp(self):
        super().setUp()
        os.chmod(self.m.tmp, 0o755)
        os.chmod(self.wf, 0o777)

    def as_user(self, script):
        def drop():
            os.setgid(self.UID)
            os.setuid(self.UID)
        return subprocess.run(["bash", "-c", script], cwd=self.wf, preexec_fn=drop,
                              capture_output=True, text=True)

    def test_user_claims_and_finalizes(self):
        r = self.as_user("set -C; exec 3> keys/u && echo succeeded >&3 && exec 3>&- && cat keys/u")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("succeeded "))
        holder = os.getxattr(self.key("u"), "user.oncefs.holder").split()
        self.assertEqual(holder[1], b"%d" % self.UID)

    def test_terminal_key_is_eacces_for_a_user(self):
        k = self.key("k")
        fd = claim(k)
        os.write(fd, b"succeeded\n")
        os.close(fd)
        before = read(k)
        r = self.as_user("python3 -c 'import os, sys\n"
                         "for fn in (lambda: os.open(\"keys/k\", os.O_WRONLY), lambda: os.truncate(\"keys/k\", 0),"
                         " lambda: os.utime(\"keys/k\")):\n"
                         "    try:\n        fn(); print(0)\n    except OSError as e: print(e.errno)'")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), [str(errno.EACCES)] * 3)
        self.assertErrno(errno.EPERM, write, k, b"failed\n")  # root: the daemon refuses
        self.assertEqual(read(k), before)

    def test_user_cannot_use_a_private_workflow(self):
        os.chmod(self.wf, 0o700)
        r = self.as_user("set -C; exec 3> keys/x")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Permission denied", r.stderr)
        self.assertEqual(os.listdir(os.path.join(self.wf, "keys")), [])


if __name__ == "__main__":
    run()

"""The shell examples of the documentation, run as they are written.

Every example is taken from its file at test time, so that the docs cannot
drift from what is tested: the ```sh blocks of README.md, and the .nf/.fi
blocks of the EXAMPLES sections of doc/oncefs.8 and doc/oncectl.1 (with
the roff escapes undone).  The only change made to an example is the
place: /var/lib/oncefs/state.db and /mnt/once become a fresh store and
mount point of the test.  Each example runs under dash (POSIX sh,
/bin/sh on Debian) and under bash.  An example that no test knows fails
the suite: add a test for it.

The commands the examples call as placeholders (run_the_job, run-job,
extract, load) are small scripts on $PATH that record each run, print a
result, exit with $JOB_STATUS, and, when $JOB_GATE is set, tell the test
they started and wait for it (FIFOs, no clock), so that a test can look at
the key while the job runs.
"""
import errno
import hashlib
import json
import os
import re
import contextlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import ONCEFS, Mount, _is_mounted, _unmount, claim, errno_of, read, run, write  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.dirname(os.path.abspath(ONCEFS))
ONCECTL = os.path.abspath(os.environ.get("ONCECTL", os.path.join(BUILD, "oncectl")))
ONCE = os.path.abspath(os.environ.get("ONCE", os.path.join(BUILD, "once")))
SHELLS = [s for s in ("dash", "bash") if shutil.which(s)]

STORE_IN_DOCS = "/var/lib/oncefs/state.db"
MOUNT_IN_DOCS = "/mnt/once"


# ---- the examples, from the files ---------------------------------------------

def readme_sh_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S)


def deroff(line):
    for a, b in (("\\(aq", "'"), ("\\(dq", '"'), ("\\-", "-"), ("\\&", ""), ("\\e", "\\")):
        line = line.replace(a, b)
    return line


def man_examples(page):
    """[(the text before the block, the block)] of the EXAMPLES section."""
    with open(os.path.join(ROOT, "doc", page)) as f:
        lines = f.read().split("\n")
    out, inside, block, before, section = [], False, [], [], False
    for line in lines:
        if line.startswith(".SH"):
            section = line.split(None, 1)[1:] == ["EXAMPLES"]
            continue
        if not section:
            continue
        if line == ".nf":
            inside, block = True, []
        elif line == ".fi":
            inside = False
            out.append((" ".join(before), "\n".join(block) + "\n"))
            before = []
        elif inside:
            block.append(deroff(line))
        elif not line.startswith("."):
            before.append(deroff(line))
        else:
            before.append(deroff(line.split(None, 1)[1]) if " " in line else "")
    return out


def localize(script, store, mnt):
    return script.replace(STORE_IN_DOCS, store).replace(MOUNT_IN_DOCS, mnt)


# ---- the placeholders ------------------------------------------------------------

JOB = r"""#!/bin/sh
# A placeholder job of the docs: records the run, prints a result.
echo "$(basename "$0")" >> "$DOCS_RUNS"
if [ -n "$JOB_GATE" ]; then
    echo started > "$JOB_GATE.started"     # the test reads this...
    read go < "$JOB_GATE.go"               # ...looks at the key, then lets go
fi
case "$(basename "$0")" in
    load) printf 'loaded %s\n' "$(cat)" ;;
    extract) echo extracted ;;
    *) echo "rows: 42" ;;
esac
exit "${JOB_STATUS:-0}"
"""


class DocsTest(unittest.TestCase):
    def setUp(self):
        if not SHELLS:
            self.skipTest("neither dash nor bash")
        self.tmp = tempfile.mkdtemp(prefix="oncefs-docs-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.bin = os.path.join(self.tmp, "bin")
        os.mkdir(self.bin)
        for name in ("run_the_job", "run-job", "extract", "load"):
            path = os.path.join(self.bin, name)
            with open(path, "w") as f:
                f.write(JOB)
            os.chmod(path, 0o755)
        # The examples call the tools by name: those of this build.
        for name, path in (("oncefs", os.path.abspath(ONCEFS)), ("oncectl", ONCECTL), ("once", ONCE)):
            os.symlink(path, os.path.join(self.bin, name))
        self.runs_file = os.path.join(self.tmp, "runs")
        open(self.runs_file, "w").close()
        self.payload = os.path.join(self.tmp, "payload.json")
        with open(self.payload, "w") as f:
            f.write('{"rows": 42}')

    def env(self, **extra):
        env = dict(os.environ, PATH=self.bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
                   DOCS_RUNS=self.runs_file, PAYLOAD=self.payload)
        env.pop("JOB_GATE", None)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def runs(self):
        with open(self.runs_file) as f:
            return f.read().split()

    def sh(self, shell, script, **extra):
        return subprocess.run([shell, "-c", script], capture_output=True, text=True,
                              env=self.env(**extra), cwd=self.tmp, stdin=subprocess.DEVNULL, timeout=300)

    @contextlib.contextmanager
    def started(self, shell, script, **extra):
        """Run script with a gated job: yields (process, gate path).  On the
        way out, a script still running is killed with its job (its own
        process group), so that nothing holds the mount."""
        gate = os.path.join(self.tmp, "gate")
        for end in (".started", ".go"):
            if os.path.exists(gate + end):
                os.unlink(gate + end)
            os.mkfifo(gate + end)
        p = subprocess.Popen([shell, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=self.env(JOB_GATE=gate, **extra), cwd=self.tmp, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        try:
            yield p, gate
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()

    def wait_started(self, p, gate):
        """Until the job has started (or the script has exited without it)."""
        fd = os.open(gate + ".started", os.O_RDONLY | os.O_NONBLOCK)
        try:
            while not select.select([fd], [], [], 1.0)[0]:
                if p.poll() is not None:
                    out, err = p.communicate()
                    self.fail("the example exited (%d) before the job started: %s%s" % (p.returncode, out, err))
            self.assertEqual(os.read(fd, 64).strip(), b"started")
        finally:
            os.close(fd)

    def release(self, gate):
        with open(gate + ".go", "w") as f:
            f.write("go\n")

    def ctl(self, *args):
        return subprocess.run([ONCECTL, *args], capture_output=True, text=True)

    def events(self, store, wf):
        r = self.ctl("events", "--json", store, wf)
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line) for line in r.stdout.splitlines()]


def wait_no_daemon_on(store, limit=20):
    """Until no oncefs process has store on its command line (an unmounted
    daemon closes its store, then exits)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"oncefs" and store.encode() in argv:
                busy = True
                break
        if not busy:
            return
        time.sleep(0.02)


def the_block(blocks, needle):
    found = [b for b in blocks if needle in b]
    assert len(found) == 1, "one example with %r, found %d" % (needle, len(found))
    return found[0]


# ---- README.md ----------------------------------------------------------------------

class Readme(DocsTest):
    def test_every_sh_block_is_tested(self):
        blocks = readme_sh_blocks()
        known = [the_block(blocks, "keys/2026-11-21"), the_block(blocks, "steps/extract")]
        self.assertEqual(len(blocks), len(known), "an untested ```sh example in README.md")

    def keys_example(self, m):
        return localize(the_block(readme_sh_blocks(), "keys/2026-11-21"), m.store, m.path)

    def test_keys_example(self):
        """First run claims and finalizes; a duplicate exits 0 and prints the
        stored result without running the job; a failing job finalizes
        failed (and, under dedup_on=success, frees the key for a retry)."""
        for shell in SHELLS:
            with self.subTest(shell=shell), Mount(tmp=tempfile.mkdtemp(dir=self.tmp)) as m:
                script = self.keys_example(m)
                key = m.p("nightly-etl", "keys", "2026-11-21")
                open(self.runs_file, "w").close()
                r = self.sh(shell, script)
                self.assertEqual((r.returncode, r.stderr), (0, ""), r)
                self.assertEqual(self.runs(), ["run_the_job"])
                stored = read(key).decode()
                self.assertRegex(stored, r"^succeeded \d+\nrows: 42\n$")

                r = self.sh(shell, script)                     # the duplicate
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, stored, ""), r)
                self.assertEqual(self.runs(), ["run_the_job"])

                os.unlink(key)                                 # release: run again, and fail
                r = self.sh(shell, script, JOB_STATUS=3)
                self.assertEqual(r.returncode, 1, r)
                self.assertEqual(self.runs(), ["run_the_job"] * 2)
                self.assertFalse(os.path.exists(key))          # failed frees it (dedup_on=success)
                fin = [e for e in self.events(m.store, "nightly-etl") if e["event"] == "finalize"]
                self.assertEqual([e["status"] for e in fin], ["succeeded", "failed"])

                r = self.sh(shell, script)                     # the retry
                self.assertEqual((r.returncode, r.stderr), (0, ""), r)
                self.assertTrue(read(key).startswith(b"succeeded"))

    def test_keys_example_holds_the_claim_while_the_job_runs(self):
        for shell in SHELLS:
            with self.subTest(shell=shell), Mount(tmp=tempfile.mkdtemp(dir=self.tmp)) as m:
                script = self.keys_example(m)
                key = m.p("nightly-etl", "keys", "2026-11-21")
                open(self.runs_file, "w").close()
                with self.started(shell, script) as (p, gate):
                    self.wait_started(p, gate)
                    self.assertTrue(read(key).startswith(b"in_flight"))
                    self.assertRaises(FileExistsError, claim, key)
                    r = self.sh(shell, script)                 # a duplicate meanwhile
                    self.assertEqual(r.returncode, 0, r)
                    self.assertTrue(r.stdout.startswith("in_flight"), r)
                    self.release(gate)
                    out, err = p.communicate(timeout=300)
                    self.assertEqual((p.returncode, err), (0, ""))
                self.assertTrue(read(key).startswith(b"succeeded"))
                self.assertEqual(self.runs(), ["run_the_job"])

    def steps_example(self, m):
        return localize(the_block(readme_sh_blocks(), "steps/extract"), m.store, m.path)

    def test_steps_example_resumes(self):
        for shell in SHELLS:
            with self.subTest(shell=shell), Mount(tmp=tempfile.mkdtemp(dir=self.tmp)) as m:
                os.mkdir(m.p("nightly-etl"))
                open(self.runs_file, "w").close()
                script = self.steps_example(m)
                r = self.sh(shell, script)
                self.assertEqual(r.returncode, 0, r)
                steps = m.p("nightly-etl", "steps")
                self.assertEqual(read(os.path.join(steps, "extract")), b"extracted\n")
                self.assertEqual(read(os.path.join(steps, "load")), b"loaded extracted\n")
                self.assertEqual(sorted(os.listdir(steps)), ["extract", "load"])
                self.assertEqual(self.runs(), ["extract", "load"])
                r = self.sh(shell, script)                     # a re-run skips both
                self.assertEqual(r.returncode, 0, r)
                self.assertEqual(self.runs(), ["extract", "load"])

    def test_steps_example_sets_and_holds_the_fingerprint(self):
        shell = SHELLS[0]
        want = hashlib.sha256(b'{"rows": 42}').hexdigest()
        with Mount(tmp=tempfile.mkdtemp(dir=self.tmp)) as m:
            os.mkdir(m.p("nightly-etl"))
            fp = m.p("nightly-etl", "input.fingerprint")
            with self.started(shell, self.steps_example(m)) as (p, gate):
                for step in ("extract", "load"):
                    self.wait_started(p, gate)
                    self.assertEqual(read(fp).decode(), want + "\n")
                    # Held while the run goes on: another input waits.
                    self.assertEqual(errno_of(write, fp, b"another\n"), errno.EBUSY)
                    self.release(gate)
                out, err = p.communicate(timeout=300)
                self.assertEqual((p.returncode, err), (0, ""))
            write(fp, b"another\n")       # the run ended: free


class Examples(unittest.TestCase):
    def test_resume_after_failure(self):
        """examples/resume-after-failure.sh, as a user runs it."""
        script = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                              "resume-after-failure.sh")
        r = subprocess.run(["bash", script, os.path.abspath(ONCEFS)], capture_output=True,
                           text=True, timeout=300, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [line for line in r.stdout.splitlines() if line.startswith("run ")]
        self.assertEqual(lines, [
            "run 2026-11-21: extract: ran",
            "run 2026-11-21: transform: FAILED",
            "run 2026-11-21: extract: done before, skipped",
            "run 2026-11-21: transform: ran",
            "run 2026-11-21: load: ran",
            "run 2026-11-21: succeeded",
            "run 2026-11-21: already claimed: succeeded 2",
            "run 2026-11-22: extract: ran",
            "run 2026-11-22: transform: ran",
            "run 2026-11-22: load: ran",
            "run 2026-11-22: succeeded",
            "run 2026-11-23: input changed, and the policy is raise: refused",
        ])


class Options(unittest.TestCase):
    def test_every_daemon_option_is_documented_with_its_default(self):
        """Each option of `oncefs --help` is a row of the README's options
        table, with the same default, and is in oncefs(8)."""
        r = subprocess.run([ONCEFS, "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        ours = r.stdout.split("oncefs options:", 1)[1].split("\n\n", 1)[0]
        options = {}
        for m in re.finditer(r"^  -o ([a-z_]+)(.*?)(?=^  -o |\Z)", ours, re.M | re.S):
            d = re.search(r"\(default (\w+)", m.group(2))
            options[m.group(1)] = d.group(1) if d else None
        self.assertIn("sweep_interval", options)
        with open(os.path.join(ROOT, "README.md")) as f:
            rows = dict(re.findall(r"^\| `([a-z_]+)[^`]*` \| `?([^`|]*)`? \|", f.read(), re.M))
        with open(os.path.join(ROOT, "doc", "oncefs.8")) as f:
            page = deroff(f.read())
        for name, default in options.items():
            with self.subTest(option=name):
                self.assertIn(name, rows, "README.md's options table lacks %s" % name)
                if default is not None:
                    self.assertEqual(rows[name].strip(), default)
                self.assertIn("-o " + name, page.replace('"', "").replace("\\fB", "").replace("\\fR", ""))


# ---- doc/oncefs.8 and doc/oncectl.1 ---------------------------------------------------

class ManPages(DocsTest):
    def setUp(self):
        super().setUp()
        self.store = os.path.join(self.tmp, "state.db")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        self.addCleanup(_unmount, self.mnt)     # the examples mount it themselves

    def oncefs8(self):
        blocks = man_examples("oncefs.8")
        scripts = [b for ctx, b in blocks if "/etc/fstab" not in ctx]
        fstab = [b for ctx, b in blocks if "/etc/fstab" in ctx]
        self.assertEqual((len(scripts), len(fstab)), (1, 1), "an untested example in oncefs(8)")
        return localize(scripts[0], self.store, self.mnt), fstab[0]

    def key_row(self):
        # The daemon may still be closing the store after the unmount.
        deadline = time.monotonic() + 5
        while True:
            r = self.ctl("show", "--json", self.store, "nightly", "2026-11-21")
            if r.returncode != 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        row = json.loads(r.stdout) if r.returncode == 0 else None
        # A key that is free again (failed under dedup_on=success) is none.
        return None if row and row["status"] == "free" else row

    def test_oncefs8_example(self):
        """Mounts, claims, runs the job once, finalizes, unmounts; run again,
        it is a duplicate that prints the stored status."""
        for shell in SHELLS:
            with self.subTest(shell=shell):
                script, _ = self.oncefs8()
                # The last subtest's daemon may still be closing the store
                # (it removes its -wal as it goes): wait for it to exit.
                wait_no_daemon_on(self.store)
                for f in (self.store, self.store + "-wal", self.store + "-shm"):
                    try:
                        os.unlink(f)
                    except FileNotFoundError:
                        pass
                open(self.runs_file, "w").close()
                r = self.sh(shell, script)
                self.assertEqual((r.returncode, r.stderr), (0, ""), r)
                self.assertFalse(_is_mounted(self.mnt))
                self.assertEqual(self.runs(), ["run-job"])
                self.assertEqual(self.key_row()["status"], "succeeded")
                r = self.sh(shell, script)
                self.assertEqual(r.returncode, 0, r)
                self.assertTrue(r.stdout.startswith("succeeded "), r)
                self.assertEqual(self.runs(), ["run-job"])
                self.assertFalse(_is_mounted(self.mnt))

    def test_oncefs8_example_holds_the_claim_while_the_job_runs(self):
        for shell in SHELLS:
            with self.subTest(shell=shell):
                script, _ = self.oncefs8()
                if os.path.exists(self.store):
                    os.unlink(self.store)
                open(self.runs_file, "w").close()
                with self.started(shell, script) as (p, gate):
                    self.wait_started(p, gate)
                    key = os.path.join(self.mnt, "nightly", "keys", "2026-11-21")
                    self.assertTrue(read(key).startswith(b"in_flight"), "the job runs unclaimed")
                    self.assertRaises(FileExistsError, claim, key)
                    self.release(gate)
                    p.communicate(timeout=300)
                    self.assertEqual(p.returncode, 0)
                self.assertEqual(self.runs(), ["run-job"])
                self.assertEqual(self.key_row()["status"], "succeeded")

    def test_oncefs8_example_failing_job(self):
        for shell in SHELLS:
            with self.subTest(shell=shell):
                script, _ = self.oncefs8()
                if os.path.exists(self.store):
                    os.unlink(self.store)
                r = self.sh(shell, script, JOB_STATUS=1)
                self.assertEqual(r.returncode, 0, r)
                self.assertFalse(_is_mounted(self.mnt))
                self.assertIsNone(self.key_row())          # failed frees it (dedup_on=success)
                fin = [e for e in self.events(self.store, "nightly") if e["event"] == "finalize"]
                self.assertEqual([e["status"] for e in fin], ["failed"])

    def test_oncefs8_fstab_line(self):
        """The fstab line's fields and options, mounted through mount(8) with
        this build's daemon (mount(8) finds fuse.oncefs only in /sbin and
        /usr/sbin paths, so the type becomes fuse with the daemon's path)."""
        _, line = self.oncefs8()
        fields = line.split()
        self.assertEqual(len(fields), 6, line)
        what, where, fstype, options, freq, passno = fields
        self.assertEqual((what, where, fstype, freq, passno),
                         (STORE_IN_DOCS, MOUNT_IN_DOCS, "fuse.oncefs", "0", "0"))
        self.assertEqual(self.ctl("init", self.store).returncode, 0)
        r = subprocess.run(["mount", "-t", "fuse", "%s#%s" % (os.path.abspath(ONCEFS), self.store), self.mnt,
                            "-o", options], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(_is_mounted(self.mnt))
        os.mkdir(os.path.join(self.mnt, "wf"))
        subprocess.run(["umount", self.mnt], check=True)

    def test_oncectl1_examples(self):
        blocks = man_examples("oncectl.1")
        self.assertEqual(len(blocks), 1, "an untested example in oncectl(1)")
        script, _ = self.oncefs8()
        self.assertEqual(self.sh(SHELLS[0], script).returncode, 0)     # a store with the example's key
        lines = [ln for ln in blocks[0][1].splitlines() if ln.strip()]
        expect = {"ls": "2026-11-21", "show": "succeeded", "events": "finalize", "sweep": "would remove"}
        self.assertEqual(sorted(ln.split()[1] for ln in lines), sorted(expect))
        for shell in SHELLS:
            for line in lines:
                with self.subTest(shell=shell, example=line):
                    self.assertEqual(line.split()[0], "oncectl")
                    # the oncectl of this build (the one under test), by $PATH
                    r = self.sh(shell, localize(line, self.store, self.mnt))
                    self.assertEqual((r.returncode, r.stderr), (0, ""), r)
                    self.assertIn(expect[line.split()[1]], r.stdout)


class Kubernetes(unittest.TestCase):
    """doc/kubernetes: the DaemonSet that mounts oncefs on every node, and a
    job that uses it.  The manifests are parsed (Debian's python3-yaml), what
    they grant is checked against what the README says a user must grant,
    and the job's script runs against a real mount, twice."""

    DIR = os.path.join(os.path.dirname(__file__), "..", "..", "doc", "kubernetes")

    def load(self, name):
        r = subprocess.run(["/usr/bin/python3", "-c",
                            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
                            os.path.join(self.DIR, name)], capture_output=True, text=True)
        if r.returncode and "No module named 'yaml'" in r.stderr:
            self.skipTest("needs python3-yaml (scripts/deps installs it)")
        self.assertEqual(r.returncode, 0, r.stderr)
        return {d["kind"]: d for d in json.loads(r.stdout)}

    def test_the_daemonset_mounts_the_shared_store_on_every_node(self):
        ds = self.load("oncefs-node.yaml")["DaemonSet"]
        pod = ds["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        self.assertTrue(c["securityContext"]["privileged"])
        self.assertIn("SYS_ADMIN", c["securityContext"]["capabilities"]["add"])
        vols = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        self.assertEqual(vols["fuse"]["hostPath"]["path"], "/dev/fuse")
        self.assertEqual(mounts["mnt"]["mountPropagation"], "Bidirectional")
        self.assertEqual(c["command"][0], "/usr/local/sbin/oncefs")
        store, mountpoint = c["command"][-2:]
        self.assertEqual(mountpoint, mounts["mnt"]["mountPath"])
        self.assertTrue(store.startswith("postgresql://"))
        self.assertNotIn(":", store.split("//")[1].split("@")[0], "a password in the store's name")
        self.assertEqual(c["env"][0]["valueFrom"]["secretKeyRef"]["key"], "password")

    def test_the_job_sees_the_mount_and_runs_once(self):
        job = self.load("example-job.yaml")["Job"]
        pod = job["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        (vm,) = c["volumeMounts"]
        self.assertEqual(vm["mountPropagation"], "HostToContainer")
        self.assertEqual(pod["volumes"][0]["hostPath"]["path"], "/var/lib/oncefs/mnt")
        script = c["command"][2].replace(vm["mountPath"], "MNT")
        with Mount() as m:
            out = [subprocess.run(["sh", "-c", script.replace("MNT", m.path)], capture_output=True,
                                  text=True, timeout=60) for _ in range(2)]
        self.assertEqual([r.returncode for r in out], [0, 0], [r.stderr for r in out])
        self.assertIn("running the load", out[0].stdout)
        self.assertNotIn("running the load", out[1].stdout)
        self.assertTrue(out[1].stdout.startswith("succeeded "), out[1].stdout)


if __name__ == "__main__":
    run()

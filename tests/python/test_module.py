"""The oncefs Python module (tools/python/oncefs) over a real mount.

Run by pytest (Debian's python3-pytest); the module is imported from the
source tree unless ONCEFS_PYTHONPATH names an installed one.
"""
import errno
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

import oncefs  # noqa: E402  (conftest.py put it on the path)


@pytest.fixture
def wf(mount):
    with oncefs.Workflow(mount.p("job"), create=True) as w:
        yield w


def events(wf):
    with open(os.path.join(wf.path, "events")) as f:
        return [json.loads(line) for line in f]


def test_clean_exit_succeeds_with_the_result(wf):
    with wf.claim("k") as c:
        assert (c.attempt, c.previous) == (1, None)
        assert c.generation > 0
        c.result = "rows: 42"
    key = wf.read("k")
    assert (key.status, key.generation, key.result) == ("succeeded", c.generation, b"rows: 42")
    with pytest.raises(oncefs.AlreadyDone) as e:
        wf.claim("k")
    assert isinstance(e.value, FileExistsError)
    assert (e.value.status, e.value.generation, e.value.result) == ("succeeded", c.generation, b"rows: 42")


def test_an_exception_fails_with_its_traceback_and_goes_on(wf):
    with pytest.raises(ZeroDivisionError):
        with wf.claim("k"):
            1 / 0
    # dedup_on=success: free again; the failure's reason is in the events.
    assert wf.read("k") is None
    fin = [e for e in events(wf) if e["event"] == "finalize"][-1]
    assert fin["status"] == "failed"
    assert "ZeroDivisionError" in fin["result"]
    with wf.claim("k") as c:
        assert c.attempt == 2
        assert c.previous is not None


def test_a_huge_traceback_is_bounded(wf):
    with open(os.path.join(wf.path, "policy", "dedup_on"), "w") as f:
        f.write("any\n")
    with pytest.raises(ValueError):
        with wf.claim("k"):
            raise ValueError("x" * 100000)
    key = wf.read("k")
    assert key.status == "failed"
    assert len(key.result) <= oncefs.FAILURE_MAX
    assert key.result.endswith(b"x\n")
    with pytest.raises(oncefs.AlreadyDone) as e:
        wf.claim("k")
    assert e.value.status == "failed"


def test_a_crash_is_abandoned_and_the_retry_knows(wf):
    code = ("import os, sys; sys.path.insert(0, sys.argv[2]); import oncefs; "
            "c = oncefs.claim(sys.argv[1], 'k'); print(c.generation, flush=True); os.kill(os.getpid(), 9)")
    r = subprocess.run([sys.executable, "-c", code, wf.path, os.path.dirname(oncefs.__path__[0])],
                       capture_output=True, text=True)
    first = int(r.stdout)
    deadline = time.monotonic() + 2
    while True:
        try:
            c = wf.claim("k")
            break
        except oncefs.InFlight:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    with c:
        assert (c.attempt, c.previous) == (2, first)


def test_in_flight_and_wait(wf):
    holder = wf.claim("k")
    with pytest.raises(oncefs.InFlight) as e:
        wf.claim("k")
    assert e.value.holder_pid == os.getpid()
    with pytest.raises(TimeoutError):
        wf.wait("k", timeout=0.2)
    pid = os.fork()
    if pid == 0:
        # The child must never return into pytest, whatever happens.
        try:
            time.sleep(0.3)
            holder.finalize("succeeded", "done")
        finally:
            os._exit(0)
    holder.close()      # the child's copy keeps the claim
    key = oncefs.wait(wf.path, "k", timeout=20)
    os.waitpid(pid, 0)
    assert (key.status, key.result) == ("succeeded", b"done")
    assert wf.wait("absent") is None


def racer(path, n, out):
    wf = oncefs.Workflow(path)
    try:
        with wf.claim("race") as c:
            time.sleep(0.05)
            c.result = str(n)
        out.put("won")
    except oncefs.InFlight:
        out.put("in_flight")
    except oncefs.AlreadyDone:
        out.put("done")


def test_racing_claimants_one_winner(wf):
    q = multiprocessing.Queue()
    ps = [multiprocessing.Process(target=racer, args=(wf.path, i, q)) for i in range(8)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(30)
    got = sorted(q.get() for _ in ps)
    assert got.count("won") == 1
    assert wf.read("race").status == "succeeded"


def test_request_mismatch(wf):
    with wf.claim("pay", request={"amount": 100}) as c:
        c.result = "charged"
    with pytest.raises(oncefs.AlreadyDone):
        wf.claim("pay", request={"amount": 100})
    with pytest.raises(oncefs.OtherRequest) as e:
        wf.claim("pay", request={"amount": 999})
    assert e.value.theirs == "sha256:" + oncefs.fingerprint({"amount": 100})
    # A str is its UTF-8 bytes, as once --request would hash them.
    with wf.claim("text", request="payload"):
        pass
    assert os.getxattr(wf.key_path("text"), "user.oncefs.request").decode() == \
        "sha256:" + hashlib.sha256(b"payload").hexdigest()
    # The same fingerprint as once --request of the same bytes.
    with wf.claim("raw", request=b'{"a":1}'):
        pass
    assert os.getxattr(wf.key_path("raw"), "user.oncefs.request").decode() == \
        "sha256:" + hashlib.sha256(b'{"a":1}').hexdigest()


def test_hash_key(wf):
    hostile = "https://hooks.example/x?id=1/../../etc " + "y" * 400
    with pytest.raises(ValueError):
        wf.claim(hostile)
    with wf.claim(hostile, hash_key=True) as c:
        c.result = "ok"
    assert c.name == "sha256-" + hashlib.sha256(hostile.encode()).hexdigest()
    assert os.getxattr(wf.key_path(hostile, hash_key=True), "user.oncefs.original").decode() == hostile
    with pytest.raises(oncefs.AlreadyDone):
        wf.claim(hostile, hash_key=True)


def test_step_commits_only_on_a_clean_exit(wf):
    with pytest.raises(RuntimeError):
        with wf.step("extract") as f:
            f.write("half")
            raise RuntimeError("crash in the middle")
    assert os.listdir(os.path.join(wf.path, "steps")) == []
    with wf.step("extract") as f:
        f.write("whole")
    assert wf.step("extract").read() == "whole"
    assert os.listdir(os.path.join(wf.path, "steps")) == ["extract"]


def test_step_decorator_skips_a_done_step(wf):
    calls = []

    @wf.step("transform")
    def transform(x):
        calls.append(x)
        return "t(%s)" % x

    assert transform(1) == "t(1)"
    assert transform(2) == "t(1)"       # skipped: its checkpoint
    assert calls == [1]

    @wf.step("blob", binary=True)
    def blob():
        return b"\x00\x01"

    assert blob() == b"\x00\x01"
    assert blob() == b"\x00\x01"


def test_set_input_is_canonical_and_held(wf, mount):
    a = wf.set_input({"b": [1, 2], "a": "x"})
    assert a == oncefs.fingerprint({"a": "x", "b": [1, 2]})
    assert a == hashlib.sha256(b'{"a":"x","b":[1,2]}').hexdigest()
    with open(os.path.join(wf.path, "input.fingerprint")) as f:
        assert f.read() == a + "\n"
    with wf.step("s") as f:
        f.write("under a")
    other = oncefs.Workflow(wf.path)
    with pytest.raises(OSError) as e:
        other.set_input({"different": True})
    assert e.value.errno == errno.EBUSY
    assert other.set_input({"a": "x", "b": [1, 2]}) == a     # the same input: a resume
    other.release_input()
    # The holder may change its own input, through the file that holds it.
    b = wf.set_input({"b": 1})
    with open(os.path.join(wf.path, "input.fingerprint")) as f:
        assert f.read() == b + "\n"
    for i in range(200):            # never EBUSY from its own hold
        wf.set_input({"i": i})
    wf.release_input()
    deadline = time.monotonic() + 2  # the hold ends just after the close
    while True:
        try:
            other.set_input({"different": True})            # free: reset
            break
        except OSError as e:
            assert e.errno == errno.EBUSY and time.monotonic() < deadline
            time.sleep(0.005)
    assert os.listdir(os.path.join(wf.path, "steps")) == []
    other.close()


def readme_module_example():
    with open(os.path.join(HERE, "..", "..", "README.md")) as f:
        text = f.read()
    blocks = [b for b in text.split("```python\n")[1:] if "import oncefs" in b]
    assert len(blocks) == 1
    return blocks[0].split("```")[0]


def test_the_readme_example(mount):
    code = readme_module_example().replace("/mnt/once", mount.path)
    done = []
    env = {"extract": lambda: "rows\n", "load": lambda rows: done.append(rows) or "loaded " + rows}
    exec(compile(code, "README.md", "exec"), env)
    wf = oncefs.Workflow(mount.p("nightly-etl"))
    assert wf.read("2026-11-21").result == b"loaded rows\n"
    assert done == ["rows\n"]
    # A re-run prints the stored result and runs nothing.
    printed = []
    exec(compile(code, "README.md", "exec"), dict(env, print=printed.append))
    assert printed == ["loaded rows\n"]
    assert done == ["rows\n"]

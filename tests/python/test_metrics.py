"""The mount's .metrics, parsed by a real Prometheus parser (Debian's
python3-prometheus-client), and `oncectl stats --prometheus`."""
import os
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import claim  # noqa: E402  (conftest.py put it on the path)

ONCECTL = os.environ.get("ONCECTL", os.path.join(os.path.dirname(os.environ.get("ONCEFS", "build/oncefs")),
                                                 "oncectl"))

COUNTERS = ["claims", "adoptions", "conflicts", "finalizes", "releases", "renewals", "fenced",
            "checkpoints", "store_commits", "store_fsyncs", "store_round_trips"]
GAUGES = ["waiters", "store_max_write_seconds", "store_max_maintenance_seconds", "store_sync_failed"]
HISTOGRAMS = ["claim_duration_seconds", "finalize_duration_seconds",
              "checkpoint_commit_duration_seconds"]


def families(text):
    """By family name: the parser names a counter without its _total."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_parse_and_count(mount):
    os.mkdir(mount.p("wf"))
    for i in range(5):
        fd = claim(mount.p("wf", "keys", "k%d" % i))
        os.write(fd, b"succeeded\n")
        os.close(fd)
    with pytest.raises(FileExistsError):
        claim(mount.p("wf", "keys", "k0"))
    with open(mount.p("wf", "steps", "s"), "w") as f:
        f.write("x")
    with open(mount.p(".metrics")) as f:
        text = f.read()
    assert os.stat(mount.p(".metrics")).st_size == len(text.encode())
    fam = families(text)
    for name in COUNTERS:
        assert fam["oncefs_" + name].type == "counter", name
    for name in GAUGES:
        assert fam["oncefs_" + name].type == "gauge", name
    for name in HISTOGRAMS:
        assert fam["oncefs_" + name].type == "histogram", name
        assert fam["oncefs_" + name].documentation
    value = {s.name: s.value for f in fam.values() for s in f.samples if not s.labels}
    assert value["oncefs_claims_total"] == 5
    # The kernel refuses an O_EXCL create of a name its LOOKUP found
    # without asking the daemon: such a conflict is not counted.
    conflicts = value["oncefs_conflicts_total"]
    assert conflicts in (0, 1)
    assert value["oncefs_finalizes_total"] == 5
    assert value["oncefs_checkpoints_total"] == 1
    assert value["oncefs_claim_duration_seconds_count"] == 5 + conflicts
    assert value["oncefs_finalize_duration_seconds_count"] == 5
    assert value["oncefs_checkpoint_commit_duration_seconds_count"] == 1
    assert 0 < value["oncefs_claim_duration_seconds_sum"] < 60
    buckets = [s for s in fam["oncefs_claim_duration_seconds"].samples if s.name.endswith("_bucket")]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] == 5 + conflicts
    assert buckets[-1].labels["le"] == "+Inf"
    # .stats says the same in its own words.
    with open(mount.p(".stats")) as f:
        stats = dict(line.split() for line in f)
    assert (stats["claims"], stats["conflicts"]) == ("5", str(int(conflicts)))


def test_oncectl_stats(mount):
    r = subprocess.run([ONCECTL, "stats", mount.path, "--prometheus"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert families(r.stdout)["oncefs_claims"].type == "counter"
    r = subprocess.run([ONCECTL, "stats", mount.path], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("claims 0\n")
    r = subprocess.run([ONCECTL, "stats", "/tmp"], capture_output=True, text=True)
    assert r.returncode == 3 and "not a mounted oncefs" in r.stderr


def test_metrics_is_read_only(mount):
    for flags in (os.O_WRONLY, os.O_RDWR):
        with pytest.raises(PermissionError):
            os.open(mount.p(".metrics"), flags)
    with pytest.raises(FileExistsError):
        os.mkdir(mount.p(".metrics"))
    assert sorted(os.listdir(mount.path)) == [".metrics", ".stats"]

"""The runnable stories of examples/, each on a throwaway mount, so that
none can rot: they print their figures, and the figures are checked."""
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import MountedTest, run  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
# ONCEFS_EXAMPLES: an installed copy (scripts/test runs them from one too).
EXAMPLES = os.environ.get("ONCEFS_EXAMPLES") or os.path.join(ROOT, "examples")
ONCE = os.environ.get("ONCE", os.path.join(os.path.dirname(os.environ.get("ONCEFS", "build/oncefs")), "once"))


def example(*parts):
    return os.path.join(EXAMPLES, *parts)


class Stories(MountedTest):
    def run_example(self, *argv, timeout=300):
        env = dict(os.environ, PATH=os.path.dirname(os.path.abspath(ONCE)) + os.pathsep + os.environ["PATH"])
        r = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        print("\n" + r.stdout, file=sys.stderr)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_an_input_changed(self):
        out = self.run_example(sys.executable, example("input-changed.py"), self.m.p("etl"))
        self.assertIn("  failed: crash in transform", out)
        resume = out.split("2. retry")[1].split("3. ")[0]
        self.assertIn("extract: skipped", resume)
        self.assertIn("transform: ran", resume)
        self.assertIn("refused: Device or resource busy", out)
        self.assertIn("steps run: 9, skipped: 4", out)

    def test_no_duplicate_resources(self):
        for how in ("sh", "py"):
            with self.subTest(how=how):
                out = self.run_example("bash", example("no-duplicate-resources", "story.sh"),
                                       self.m.path, how)
                ids = re.findall(r"^  (vpc=.*)$", out, re.M)
                self.assertEqual(len(ids), 7, out)
                self.assertEqual(set(ids[:4]),
                                 {"vpc=vpc-1 tag=tag-1 droplets=droplet-1,droplet-2 lb=lb-1"})
                self.assertEqual(len(set(ids[4:])), 1)
                self.assertIn("resources created: 10, POSTs received: 11", out)

    def test_a_redelivering_queue(self):
        out = self.run_example(sys.executable, example("redelivering-queue.py"), self.m.p("queue"),
                               "200", "4")
        m = re.search(r"processed: (\d+), skipped_succeeded: (\d+), skipped_in_flight: (\d+)", out)
        processed, done, in_flight = map(int, m.groups())
        self.assertEqual((processed, done + in_flight), (200, 400))
        self.assertIn("side effects: 200, distinct messages: 200", out)

    def test_clients_race_with_one_winner(self):
        if not shutil.which("go"):
            print("go is not installed (scripts/deps installs golang-go): the Go client is skipped",
                  file=sys.stderr)
        out = self.run_example("bash", example("clients", "race.sh"), self.m.p("clients"), "8")
        lines = out.splitlines()
        self.assertEqual(len(lines), 3 if shutil.which("go") else 2, out)
        for line in lines:
            self.assertRegex(line, r"^\w+: 8 copies, won: 1, lost: 7, key: succeeded \d+ by \w+-\d$")


class ScheduledJob(unittest.TestCase):
    def test_the_timer_and_its_unit_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("no systemd-analyze")
        r = subprocess.run(["systemd-analyze", "verify", os.path.join(ROOT, "doc", "nightly-etl.service"),
                            os.path.join(ROOT, "doc", "nightly-etl.timer")], capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (0, ""), r.stderr)


if __name__ == "__main__":
    run()

"""Running oncefs like a filesystem: mount(8), fstab, a systemd unit, man pages."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import ONCEFS, _is_mounted, _unmount, read, run  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ONCEFS_ABS = os.path.abspath(ONCEFS)


class MountCommand(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="oncefs-mount-")
        self.mnt = os.path.join(self.tmp, "mnt")
        os.mkdir(self.mnt)
        self.store = os.path.join(self.tmp, "state.db")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.addCleanup(_unmount, self.mnt)

    def use(self):
        """The mount works: claim a key through it, then unmount."""
        self.assertTrue(_is_mounted(self.mnt))
        os.makedirs(os.path.join(self.mnt, "wf"), exist_ok=True)
        fd = os.open(os.path.join(self.mnt, "wf", "keys", "k"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, b"succeeded\n")
        os.close(fd)
        self.assertTrue(read(os.path.join(self.mnt, "wf", "keys", "k")).startswith(b"succeeded"))
        subprocess.run(["umount", self.mnt], check=True)
        self.assertFalse(_is_mounted(self.mnt))

    def test_mount_t_fuse_with_path(self):
        r = subprocess.run(["mount", "-t", "fuse", "%s#%s" % (ONCEFS_ABS, self.store), self.mnt,
                            "-o", "create,sync=normal"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.use()

    def test_mount_t_fuse_oncefs(self):
        link = "/usr/local/sbin/oncefs"
        if os.path.lexists(link) and os.path.realpath(link) != ONCEFS_ABS:
            self.skipTest("another oncefs is installed in /usr/local/sbin")
        if not os.path.lexists(link):
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(ONCEFS_ABS, link)
            self.addCleanup(os.unlink, link)
        r = subprocess.run(["mount", "-t", "fuse.oncefs", self.store, self.mnt, "-o", "create"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.use()
        # The store must exist without -o create: a typo never starts an empty store.
        r = subprocess.run(["mount", "-t", "fuse.oncefs", self.store + "x", self.mnt],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no store", r.stderr)
        self.assertFalse(_is_mounted(self.mnt))

    def test_fstab_line(self):
        subprocess.run([os.path.join(os.path.dirname(ONCEFS_ABS), "oncectl"), "init", self.store],
                       check=True, capture_output=True)
        fstab = os.path.join(self.tmp, "fstab")
        with open(fstab, "w") as f:
            f.write("%s#%s %s fuse defaults,sync=full,busy_timeout=2000 0 0\n"
                    % (ONCEFS_ABS, self.store, self.mnt))
        r = subprocess.run(["mount", "--fstab", fstab, self.mnt], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.use()

    def test_unknown_option_is_an_error(self):
        r = subprocess.run([ONCEFS_ABS, "-o", "create,frobnicate", self.store, self.mnt],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("frobnicate", r.stderr)
        self.assertFalse(os.path.exists(self.store))
        r = subprocess.run([ONCEFS_ABS, "--help"], capture_output=True, text=True)
        for opt in ("create", "sync=", "max_result=", "max_checkpoint=", "busy_timeout=",
                    "sweep_interval=", "allow_other"):
            self.assertIn(opt, r.stdout)

    def test_systemd_unit(self):
        unit = os.path.join(ROOT, "doc", "oncefs.mount")
        with open(unit) as f:
            text = f.read()
        fields = dict(re.findall(r"^(What|Where|Type|Options)=(.*)$", text, re.M))
        self.assertEqual(fields["Type"], "fuse.oncefs")
        self.assertEqual(fields["Where"], "/mnt/once")
        if shutil.which("systemd-analyze"):
            copy = os.path.join(self.tmp, "mnt-once.mount")
            shutil.copy(unit, copy)
            r = subprocess.run(["systemd-analyze", "verify", copy], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # What systemd would run for it, with the paths of this test.
        subprocess.run([os.path.join(os.path.dirname(ONCEFS_ABS), "oncectl"), "init", self.store],
                       check=True, capture_output=True)
        r = subprocess.run(["mount", "-t", "fuse", "%s#%s" % (ONCEFS_ABS, self.store), self.mnt,
                            "-o", fields["Options"]], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.use()


class ManPages(unittest.TestCase):
    def test_render(self):
        if not shutil.which("man"):
            self.skipTest("man is not installed")
        for page in ("oncefs.8", "oncectl.1", "once.1"):
            r = subprocess.run(["man", "--warnings", "-l", os.path.join(ROOT, "doc", page)],
                               capture_output=True, text=True, env=dict(os.environ, MANPAGER="cat", PAGER="cat"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr.strip(), "", page)
            self.assertIn("NAME", r.stdout)
            self.assertIn("SYNOPSIS", r.stdout)


if __name__ == "__main__":
    run()

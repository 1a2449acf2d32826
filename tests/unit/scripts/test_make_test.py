"""`make test` tells the truth: both suites run whatever the first gives (a failed build
included), both summaries are printed, and the exit status says whether either failed.

cmake and ctest are replaced by fakes on PATH, so this runs in a second; scripts/run-tests
and the Makefile are the real ones."""
import os
import subprocess
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

FAKE_CMAKE = r"""#!/bin/sh
# -S SRC -B DIR ...: configure; --build DIR ...: build. A DIR holding "broken" fails.
dir=
while [ $# -gt 0 ]; do
    case $1 in -B|--build) dir=$2; shift ;; esac
    shift
done
mkdir -p "$dir"
if [ -e "$dir/broken" ]; then echo "fake cmake: error in $dir" >&2; exit 2; fi
touch "$dir/CMakeCache.txt"
"""

FAKE_CTEST = r"""#!/bin/sh
# Records that it ran (and with what), then prints what ./ctest-result says.
echo "$*" > ran
if [ -e failing ]; then
    echo "90% tests passed, 1 tests failed out of 10"
    echo
    echo "The following tests FAILED:"
    echo "	  7 - integration/test_fake (Failed)"
    echo "Errors while running CTest"
    exit 8
fi
echo "100% tests passed, 0 tests failed out of 10"
"""


class MakeTestTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="mesh-make-test-")
        self.addCleanup(self.tmp.cleanup)
        bindir = os.path.join(self.tmp.name, "bin")
        os.makedirs(bindir)
        for name, text in (("cmake", FAKE_CMAKE), ("ctest", FAKE_CTEST)):
            path = os.path.join(bindir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        self.env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"])
        self.env.pop("MAKEFLAGS", None)
        self.env.pop("MAKELEVEL", None)
        self.release = os.path.join(self.tmp.name, "release")
        self.asan = os.path.join(self.tmp.name, "asan")
        os.makedirs(self.release)
        os.makedirs(self.asan)

    def run_tests(self):
        return subprocess.run([os.path.join(ROOT, "scripts", "run-tests"), self.release,
                               self.asan], capture_output=True, text=True, env=self.env,
                              timeout=60)

    def test_make_test_runs_the_suite_runner(self):
        r = subprocess.run(["make", "-n", "-C", ROOT, "test"], capture_output=True, text=True,
                           env=self.env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("scripts/run-tests", r.stdout)
        with open(os.path.join(ROOT, ".ci", "run")) as f:
            self.assertIn("make test\n", f.read())

    def test_a_failed_release_build_still_runs_asan(self):
        open(os.path.join(self.release, "broken"), "w").close()
        r = self.run_tests()
        out = r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0, out)
        self.assertTrue(os.path.exists(os.path.join(self.asan, "ran")), out)
        with open(os.path.join(self.asan, "ran")) as f:
            self.assertIn("-LE packaging", f.read())
        summary = r.stdout.split("==== summary\n")[-1]
        self.assertIn("release", summary)
        self.assertIn("the build FAILED", summary)
        self.assertIn("asan-ubsan", summary)
        self.assertIn("100% tests passed, 0 tests failed out of 10", summary)

    def test_a_failed_test_fails_the_run_and_both_summaries_show(self):
        open(os.path.join(self.release, "failing"), "w").close()
        r = self.run_tests()
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        summary = r.stdout.split("==== summary\n")[-1]
        self.assertIn("release", summary)
        self.assertIn("1 tests failed out of 10", summary)
        self.assertIn("integration/test_fake", summary)
        self.assertIn("100% tests passed", summary)
        self.assertTrue(os.path.exists(os.path.join(self.asan, "ran")))

    def test_asan_failure_alone_fails_the_run(self):
        open(os.path.join(self.asan, "failing"), "w").close()
        r = self.run_tests()
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_all_passing_exits_zero(self):
        r = self.run_tests()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout.split("==== summary\n")[-1].count("passed: 100%"), 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)

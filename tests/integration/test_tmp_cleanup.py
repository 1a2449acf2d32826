"""Tests clean up after themselves: a test file that starts agents, a controller and keeps
files of its own leaves nothing in the temporary directory once it has run, and no agent
runs on after its test, even one whose setUp failed (unittest skips tearDown then)."""
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

# A small test file like the others: agents through AgentTest, a controller, a tempfile
# directory of its own, an agent that exits on its own and one left running at the end.
CHILD = r'''
import os, socket, tempfile
from controllertest import Controller
from meshtest import Agent, AgentTest, main

class T(AgentTest):
    def test_one(self):
        own = tempfile.mkdtemp(prefix="mesh-own-")
        with open(os.path.join(own, "x"), "w") as f:
            f.write("x")
        a = self.agent(services={"api.json": {"service": {"name": "api", "endpoints": [
            {"address": "127.0.0.1", "port": 9}]}}})
        a.start()
        bad = self.agent(name="bad")
        bad.write_raw_config("{")
        bad.config = None
        bad.expected_exit = 1
        bad.write_config = lambda config=None: None
        bad.start(wait_ready=False)
        bad.proc.wait(timeout=30)
        c = Controller().start()
        c.stop()

    def test_two(self):
        self.agent().start()

class SetUpFails(AgentTest):
    def setUp(self):
        super().setUp()
        self.busy = socket.socket()
        self.busy.bind(("127.0.0.1", 0))
        self.busy.listen()
        self.addCleanup(self.busy.close)
        self.agent(services={"app.json": {"service": {"name": "app", "port": 9, "upstreams": [
            {"service": "api", "bind_port": self.busy.getsockname()[1]}]}}}).start()

    def test_never_runs(self):
        pass

if __name__ == "__main__":
    main()
'''


def running_under(directory):
    """Processes whose command line names `directory` (an agent's config under it)."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if directory.encode() in f.read():
                    found.append(int(pid))
        except (OSError, ValueError):
            pass
    return found


class TmpCleanupTest(unittest.TestCase):
    def test_a_test_file_leaves_nothing_behind(self):
        with tempfile.TemporaryDirectory(prefix="mesh-tmpcheck-") as tmp:
            child = os.path.join(tmp, "child")
            os.makedirs(child)
            script = os.path.join(tmp, "test_child.py")
            with open(script, "w") as f:
                f.write(CHILD)
            env = dict(os.environ, TMPDIR=child,
                       PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
            env.pop("MESH_KEEP_TMP", None)
            r = subprocess.run([sys.executable, script], capture_output=True, text=True,
                               env=env, cwd=HERE, timeout=240)
            # The one failure is the setUp that is meant to fail (the agent is never ready).
            self.assertIn("FAILED (failures=1)", r.stderr, r.stdout + r.stderr)
            self.assertIn("FAIL: test_never_runs", r.stderr)
            self.assertIn("Ran 3 tests", r.stderr)
            self.assertEqual(sorted(os.listdir(child)), [], "left in the temporary directory")
            self.assertEqual(running_under(child), [], "agents still running")


if __name__ == "__main__":
    unittest.main(verbosity=2)

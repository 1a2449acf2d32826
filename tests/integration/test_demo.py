#!/usr/bin/env python3
"""`make demo` (scripts/demo): when one of its fixed ports is taken it says which and starts
nothing; attached to a terminal it keeps the whole mesh running after the tour, and Ctrl-C
stops it all and exits 0. The demo's ports are fixed: when another program (another demo)
holds them, the full run skips, saying so."""
import os
import pty
import select
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from meshtest import BUILD, SLOW

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEMO = os.path.join(ROOT, "scripts", "demo")
# What runs once the tour is over: controller, agent A, host B's agent, the three backends.
RUNNING = [("127.0.0.1", 15443), ("127.0.0.1", 15000), ("127.0.0.1", 15100),
           ("127.0.0.1", 18081), ("127.0.0.1", 18082), ("127.0.0.1", 18083),
           ("127.0.0.1", 19001), ("127.0.0.2", 15008)]


def ports_in_use():
    r = subprocess.run([os.path.join(ROOT, "scripts", "demo-ports"),
                        os.path.join(ROOT, "examples")], capture_output=True, text=True)
    return r.stderr.strip() if r.returncode else None


def answers(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class DemoTest(unittest.TestCase):
    def test_taken_port_stops_it_before_anything_starts(self):
        taken = ports_in_use()
        if taken:
            raise unittest.SkipTest("the demo's ports are in use here already:\n" + taken)
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 15443))
        blocker.listen()
        with tempfile.TemporaryDirectory(prefix="mesh-demo-") as build:
            try:
                r = subprocess.run([DEMO, build], capture_output=True, text=True, timeout=60)
            finally:
                blocker.close()
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn("127.0.0.1:15443 (mesh-controller)", r.stderr)
            self.assertIn("taken", r.stderr)
            self.assertEqual(os.listdir(build), [], "the demo made files before stopping")
        self.assertNotIn("Starting", r.stdout)
        self.assertFalse(answers("127.0.0.1", 18081), "a backend was started")

    def test_the_mesh_runs_until_ctrl_c_which_exits_0(self):
        taken = ports_in_use()
        if taken:
            raise unittest.SkipTest("the demo's ports are in use here already:\n" + taken)
        master, slave = pty.openpty()  # a terminal on stdin: the demo waits for Ctrl-C
        proc = subprocess.Popen([DEMO, os.path.abspath(BUILD)], stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        os.close(slave)
        out = b""
        try:
            deadline = time.monotonic() + 240 * SLOW
            while b"Ctrl-C to stop" not in out:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, out.decode(errors="replace"))
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    self.assertTrue(chunk or proc.poll() is None,
                                    "the demo ended:\n" + out.decode(errors="replace"))
                    out += chunk
                self.assertIsNone(proc.poll(), out.decode(errors="replace"))
            # Host B's payments reached this host through the controller's catalog, with no
            # file here naming it, and answered over mTLS.
            self.assertIn(b"shop/payments, from the controller: 127.0.0.2 port 18083", out)
            self.assertIn(b"hello from payments", out)
            self.assertFalse(os.path.exists(os.path.join(ROOT, "examples", "services.d",
                                                         "payments.json")))
            # The whole mesh keeps running while it waits (checked twice, a moment apart).
            for _ in range(2):
                for host, port in RUNNING:
                    self.assertTrue(answers(host, port), f"{host}:{port} is not running\n"
                                    + out.decode(errors="replace"))
                time.sleep(1)
            self.assertIsNone(proc.poll())
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
            rest, _ = proc.communicate(timeout=60 * SLOW)
            out += rest
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            os.close(master)
        self.assertEqual(proc.returncode, 0, out.decode(errors="replace")[-3000:])
        for host, port in RUNNING:
            self.assertFalse(answers(host, port), f"{host}:{port} still runs after Ctrl-C")


if __name__ == "__main__":
    unittest.main(verbosity=2)

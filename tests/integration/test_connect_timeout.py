"""Connect timeouts, against an endpoint that swallows SYNs: in a private network namespace
(unshare --net), 10.255.0.0/24 leaves through one end of a veth pair towards a neighbour
that does not exist, so SYNs go out and nothing ever answers. Nothing outside is touched."""
import json
import os
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs inside the namespace.
INSIDE = r'''
import json, os, subprocess, sys, time
sys.path.insert(0, HERE)
for cmd in (["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "hole0", "type", "veth", "peer", "name", "hole1"],
            ["ip", "link", "set", "hole0", "up"], ["ip", "link", "set", "hole1", "up"],
            ["ip", "addr", "add", "10.254.0.1/24", "dev", "hole0"],
            ["ip", "route", "add", "10.255.0.0/24", "dev", "hole0"],
            ["ip", "neigh", "add", "10.255.0.1", "lladdr", "02:00:00:00:00:01", "dev", "hole0",
             "nud", "permanent"]):
    subprocess.run(cmd, check=True)
from backends import Backend, greet
from meshtest import Agent, free_port
b = Backend("alive").start()
port = free_port()
a = Agent(services={
    "app.json": {"service": {"name": "app", "port": free_port(),
                             "upstreams": [{"service": "api", "bind_port": port}]}},
    "api.json": {"service": {"name": "api", "endpoints": [
        {"address": "10.255.0.1", "port": 80}, {"address": "127.0.0.1", "port": b.port}]}}})
a.write_resource("api.json", {"kind": "DestinationPolicy", "name": "api", "spec": {
    "connect_timeout": "300ms", "connect_retries": 1,
    "outlier_detection": {"consecutive_failures": 2}}})
a.start()
out = {"calls": []}
for i in range(8):
    t = time.monotonic()
    name = greet(port, timeout=10)
    out["calls"].append([name, round(time.monotonic() - t, 3)])
out["failures"] = a.metric("mesh_proxy_connect_failures_total", destination="default/api")
out["retries"] = a.metric("mesh_proxy_connect_retries_total", destination="default/api")
out["ejections"] = a.metric("mesh_proxy_ejections_total", destination="default/api")
out["exit"] = a.stop()
b.stop()
print(json.dumps(out))
'''


class ConnectTimeoutTest(unittest.TestCase):
    def test_timeout_moves_to_another_endpoint(self):
        if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
            raise unittest.SkipTest("needs root, unshare(1) and ip(8) for a private network")
        r = subprocess.run(["unshare", "--net", sys.executable, "-c",
                            f"HERE = {HERE!r}\n" + INSIDE],
                           capture_output=True, text=True, timeout=120, env=dict(os.environ))
        if r.returncode != 0 and ("Operation not permitted" in r.stderr or
                                  "RTNETLINK answers" in r.stderr):
            raise unittest.SkipTest("network namespaces or dummy links are not allowed here: " +
                                    r.stderr.strip().splitlines()[-1])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(out["exit"], 0)
        calls = out["calls"]
        # Every call reaches the live endpoint; none is lost to the black hole.
        self.assertEqual([c[0] for c in calls], ["alive"] * len(calls), calls)
        # Calls sent to the black hole first waited one connect timeout (300 ms) and moved on.
        slow = [c for c in calls if c[1] >= 0.28]
        self.assertGreaterEqual(len(slow), 1, calls)
        self.assertTrue(all(c[1] < 2.0 for c in calls), calls)
        self.assertEqual(out["failures"], len(slow))
        self.assertEqual(out["retries"], len(slow))
        # Two timeouts in a row eject it: the later calls are all fast.
        self.assertGreaterEqual(out["ejections"], 1)
        self.assertTrue(all(c[1] < 0.28 for c in calls[-3:]), calls)


if __name__ == "__main__":
    unittest.main(verbosity=2)

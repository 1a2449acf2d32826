"""Native journald entries under systemd (JOURNAL_STREAM), read from a private journal socket.

systemd is not PID 1 here, so the test gives the agent a journal socket of its own: in a
private mount namespace (unshare) a tmpfs hides /run/systemd and a datagram socket takes
the place of journald's at /run/systemd/journal/socket.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from meshtest import AGENT

HELPER = r'''
import json, os, signal, socket, subprocess, sys, time
agent, config, out = sys.argv[1:4]
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
os.makedirs("/run/systemd", exist_ok=True)
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
os.makedirs("/run/systemd/journal")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
stderr = open(out + ".stderr", "w")
st = os.fstat(stderr.fileno())
env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
p = subprocess.Popen([agent, "--config", config], env=env, stderr=stderr, stdout=stderr)
entries = []
sock.settimeout(0.2)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    try:
        data = sock.recv(65536)
    except socket.timeout:
        continue
    # journald's native protocol: KEY=value lines, or KEY, a 64-bit little-endian size and
    # the raw value for values that hold a newline.
    fields, pos = {}, 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        line = data[pos:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            pos = nl + 1
        else:
            k = line
            size = int.from_bytes(data[nl + 1:nl + 9], "little")
            v = data[nl + 9:nl + 9 + size]
            pos = nl + 9 + size + 1
        fields[k.decode()] = v.decode()
    entries.append(fields)
    if fields.get("MESSAGE", "").startswith("ready:"):
        p.send_signal(signal.SIGTERM)
    if fields.get("MESSAGE") == "stopped":
        break
code = p.wait(timeout=20)
json.dump({"code": code, "entries": entries}, open(out, "w"))
'''


class JournalTest(unittest.TestCase):
    def test_native_journal_entries(self):
        if os.geteuid() != 0 or not shutil.which("unshare"):
            raise unittest.SkipTest("needs root and unshare(1) for a private /run/systemd")
        tmp = tempfile.mkdtemp(prefix="mesh-journal-")
        services = os.path.join(tmp, "services.d")
        os.makedirs(services)
        with open(os.path.join(services, "bad.json"), "w") as f:
            f.write('{"service": {"name": "x"}}')
        config = os.path.join(tmp, "agent.json")
        with open(config, "w") as f:
            f.write('{"node": {"name": "j1"}, "state_dir": "%s/state", "admin": {"listen": '
                    '"127.0.0.1:0"}, "registries": [{"type": "static", "directory": "%s"}]}'
                    % (tmp, services))
        helper = os.path.join(tmp, "helper.py")
        with open(helper, "w") as f:
            f.write(HELPER)
        out = os.path.join(tmp, "out.json")
        r = subprocess.run(["unshare", "--mount", sys.executable, helper, AGENT, config, out],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and "Operation not permitted" in r.stderr:
            raise unittest.SkipTest("mount namespaces are not allowed here: " + r.stderr.strip())
        self.assertEqual(r.returncode, 0, r.stderr)
        import json
        with open(out) as f:
            result = json.load(f)
        self.assertEqual(result["code"], 0)
        entries = result["entries"]
        self.assertTrue(entries, "no journal entries")
        for e in entries:
            for key in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "MESH_MODULE", "CODE_FILE",
                        "CODE_LINE", "CODE_FUNC"):
                self.assertIn(key, e)
            self.assertEqual(e["SYSLOG_IDENTIFIER"], "mesh-agent")
        ready = [e for e in entries if e["MESSAGE"].startswith("ready:")]
        self.assertEqual(ready[0]["PRIORITY"], "6")
        self.assertEqual(ready[0]["MESH_MODULE"], "agent")
        bad = [e for e in entries if e.get("MESH_FILE") == "bad.json"]
        self.assertTrue(bad, "the invalid file's entry carries MESH_FILE")
        self.assertEqual(bad[0]["PRIORITY"], "4")
        # Nothing went to stderr: the journal got it all.
        with open(out + ".stderr") as f:
            self.assertEqual(f.read(), "")


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""Native journald entries under systemd (JOURNAL_STREAM), read from a private journal socket.

systemd is not PID 1 here, so the test gives the agent a journal socket of its own: in a
private mount namespace (unshare) a tmpfs hides /run/systemd and a datagram socket takes
the place of journald's at /run/systemd/journal/socket.

Where that cannot be done (not root, no unshare(1), or a container or chroot whose / is no
mount point, so that mount propagation cannot change), the test says so and skips: a probe
does exactly those steps first, and only a failure after a probe that worked is a defect.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from meshtest import AGENT, free_port

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


# The steps the helper takes before it starts the agent, tried on their own.
PROBE = "mount --make-rprivate / && mkdir -p /run/systemd && mount -t tmpfs tmpfs /run/systemd"


def private_run_systemd():
    """None when this machine lets a test hide /run/systemd in a private mount namespace,
    else why not (for the skip message)."""
    if os.geteuid() != 0:
        return "needs root for a private mount namespace"
    if not shutil.which("unshare"):
        return "needs unshare(1) (util-linux) for a private mount namespace"
    r = subprocess.run(["unshare", "--mount", "sh", "-c", PROBE], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        return ("this machine cannot make a private mount namespace with its own "
                f"/run/systemd (a container or chroot whose / is no mount point?): "
                f"`unshare --mount sh -c '{PROBE}'` said: {r.stderr.strip()}")
    return None


class JournalTest(unittest.TestCase):
    def test_native_journal_entries(self):
        why = private_run_systemd()
        if why:
            raise unittest.SkipTest(why)
        tmpdir = tempfile.TemporaryDirectory(prefix="mesh-journal-")
        self.addCleanup(tmpdir.cleanup)
        tmp = tmpdir.name
        services = os.path.join(tmp, "services.d")
        os.makedirs(services)
        with open(os.path.join(services, "bad.json"), "w") as f:
            f.write('{"service": {"name": "x"}}')
        config = os.path.join(tmp, "agent.json")
        with open(config, "w") as f:
            # A Consul agent nobody runs: the registry is down (an event with a message id).
            f.write('{"node": {"name": "j1"}, "state_dir": "%s/state", "admin": {"listen": '
                    '"127.0.0.1:0"}, "readiness": {"registry_sync_timeout": "1s"}, '
                    '"registries": [{"type": "static", "directory": "%s"}, {"type": "consul", '
                    '"name": "consul", "address": "127.0.0.1:%d"}]}'
                    % (tmp, services, free_port()))
        helper = os.path.join(tmp, "helper.py")
        with open(helper, "w") as f:
            f.write(HELPER)
        out = os.path.join(tmp, "out.json")
        r = subprocess.run(["unshare", "--mount", sys.executable, helper, AGENT, config, out],
                           capture_output=True, text=True, timeout=60)
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
        # The events operators alert on carry a MESSAGE_ID (docs/systemd.md) and their fields.
        self.assertEqual(ready[0]["MESSAGE_ID"], "892b17840525439698cf34935aaea8b5")
        down = [e for e in entries if e.get("MESSAGE_ID") == "b2f03ba6c82244fda5d2450f394b12b6"]
        self.assertTrue(down, "no registry-down entry")
        self.assertEqual(down[0]["MESH_REGISTRY"], "consul")
        self.assertEqual(down[0]["PRIORITY"], "4")
        # Nothing went to stderr: the journal got it all.
        with open(out + ".stderr") as f:
            self.assertEqual(f.read(), "")


CHROOT = r"""
set -eu
root=$1; shift
for d in usr etc dev proc tmp "$@"; do
    mkdir -p "$root/$d"
    mount --rbind "/$d" "$root/$d"
done
for l in bin lib lib64 sbin; do
    [ -e "$root/$l" ] || ln -s "usr/$l" "$root/$l"
done
mkdir -p "$root/run"
shift $#
cd /
exec chroot "$root" env PYTHONDONTWRITEBYTECODE=1 MESH_AGENT_BIN="$MESH_AGENT_BIN" \
    python3 "$TEST" -v JournalTest.test_native_journal_entries
"""


class WhereItCannotRunTest(unittest.TestCase):
    def test_skips_with_a_reason_in_a_chroot(self):
        """In a chroot whose / is no mount point (as on a machine where the test first
        failed), unshare cannot change mount propagation: the journal test skips and says
        why instead of failing."""
        why = private_run_systemd()
        if why:
            raise unittest.SkipTest("cannot build the chroot to try it in: " + why)
        if not shutil.which("chroot"):
            raise unittest.SkipTest("needs chroot(8) (coreutils)")
        with tempfile.TemporaryDirectory(prefix="mesh-journal-chroot-") as tmp:
            root = os.path.join(tmp, "root")
            os.makedirs(root)
            # The directories the test and the agent live in, by their top-level name.
            here = os.path.abspath(__file__)
            tops = sorted({p.split(os.sep)[1] for p in (here, os.path.abspath(AGENT))}
                          - {"usr", "etc", "dev", "proc", "tmp"})
            r = subprocess.run(["unshare", "--mount", "sh", "-c", CHROOT, "chroot", root] + tops,
                               capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, TEST=here,
                                        MESH_AGENT_BIN=os.path.abspath(AGENT)))
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("skipped", out)
        self.assertIn("cannot change root filesystem propagation", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)

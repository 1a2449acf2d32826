"""Helpers for integration tests: start the real mesh-agent, talk to it, stop it.

Readiness comes from the agent itself (sd_notify on a NOTIFY_SOCKET the test owns), never
from sleeps. Set MESH_AGENT_WRAPPER (e.g. "valgrind --error-exitcode=99 --leak-check=full")
to run every agent under a checker; a non-zero exit on SIGTERM then fails the test.

Every temporary file a test process makes (tempfile's, and TMPDIR for the processes it
starts) goes under one directory that is removed when the process exits: a run leaves
nothing behind in /tmp. MESH_KEEP_TMP=1 keeps it (its path is printed).
"""
import atexit
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

BUILD = os.environ.get("MESH_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
AGENT = os.environ.get("MESH_AGENT_BIN", os.path.join(BUILD, "agent", "mesh-agent"))
WRAPPER = shlex.split(os.environ.get("MESH_AGENT_WRAPPER", ""))
# Under a checker everything is slower: stretch the waits, never the assertions.
SLOW = 8.0 if WRAPPER else 1.0
# An upper bound on how long something may take in a test (a change reaching the data plane,
# a timeout firing, the event loop answering) tells one mechanism from another: a push from
# a poll, a timer from a hang, a loop that keeps up from one that stalls. It is never a
# performance figure (those come from bench/), so it holds on a sanitizer build (MESH_SANITIZED,
# several times slower) and on a loaded two-core machine running the suite with -j2.
LATITUDE = SLOW * (3.0 if os.environ.get("MESH_SANITIZED") else 1.0) * 2.0


def within(test, t0, bound, what):
    """Fails test when more than bound * LATITUDE seconds passed since t0 (time.monotonic())."""
    took = time.monotonic() - t0
    test.assertLess(took, bound * LATITUDE, f"{what} took {took:.2f} s")
    return took


def _session_tmp():
    """One temporary directory for this test process and what it starts, removed at its
    exit (by the process that made it, not by a forked child)."""
    path = tempfile.mkdtemp(prefix="mesh-test-")
    tempfile.tempdir = path
    os.environ["TMPDIR"] = path
    owner = os.getpid()

    def remove():
        if os.getpid() != owner:
            return
        if os.environ.get("MESH_KEEP_TMP"):
            print(f"meshtest: kept the temporary files in {path}")
            return
        shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


SESSION_TMP = _session_tmp()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A loopback TCP port that was free a moment ago, chosen below the kernel's ephemeral
    range: ports the kernel hands out on its own (a fake server binding port 0, the source
    port of any outgoing connection, in this test or one running beside it) can then never
    be the port a test is about to listen on."""
    hi = min(_ephemeral_low(), 32768) - 1
    for _ in range(200):
        port = random.randint(20000, hi)
        if port in _handed_out:
            continue  # this process may not have bound it yet
        with socket.socket() as s:
            try:
                # The wildcard address: free on every address (tests listen on 127.0.0.2 too).
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise AssertionError("no free port below the ephemeral range")


_handed_out = set()


def wait_for(predicate, timeout=5.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a true value; fails after timeout seconds."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def settled(test, read, want):
    """Asserts read() reaches want. A request is counted on its worker thread just after the
    response's last byte is written, while /metrics is served by the main thread: a client
    can ask before the count moves, so wait for it (a count past want still fails)."""
    try:
        wait_for(lambda: read() == want, what=f"the count {want}")
    except AssertionError:
        test.assertEqual(read(), want)


class Notify:
    """A NOTIFY_SOCKET the agent reports to, as systemd would provide."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        if os.path.exists(self.path):
            os.unlink(self.path)  # a restarted agent gets a fresh socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def _drain(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return False
        fields = {}
        for line in data.decode().splitlines():
            key, _, value = line.partition("=")
            fields[key] = value
        self.messages.append(fields)
        return True

    def wait(self, key, value=None, timeout=10.0, start=0):
        """Waits for a message with key (=value); returns (index, message)."""
        deadline = time.monotonic() + timeout * SLOW
        i = start
        while True:
            while i < len(self.messages):
                m = self.messages[i]
                if key in m and (value is None or m[key] == value):
                    return i, m
                i += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} from the agent; got {self.messages}")
            self._drain(min(left, 0.2))

    def count(self, key, value=None, window=1.0):
        """Collects messages for `window` seconds and counts those with key (=value)."""
        end = time.monotonic() + window
        while time.monotonic() < end:
            self._drain(max(0.0, end - time.monotonic()))
        return sum(1 for m in self.messages if key in m and (value is None or m[key] == value))

    def close(self):
        self.sock.close()


class Agent:
    """One mesh-agent process with its own config, service directory and state dir."""

    def __init__(self, config=None, services=None, env=None, args=(), name="agent"):
        self.tmp = tempfile.mkdtemp(prefix=f"mesh-{name}-")
        self.services_dir = os.path.join(self.tmp, "services.d")
        self.resources_dir = os.path.join(self.tmp, "resources.d")
        self.state_dir = os.path.join(self.tmp, "state")
        os.makedirs(self.services_dir)
        os.makedirs(self.resources_dir)
        self.admin_port = free_port()
        self.config_path = os.path.join(self.tmp, "agent.json")
        self.config = {
            "node": {"name": name, "zone": "zone-a"},
            "state_dir": self.state_dir,
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{free_port()}"},
            "registries": [{"type": "static", "name": "files", "directory": self.services_dir,
                            "poll_interval": "0"}],
            "resources_dir": self.resources_dir,
            "proxy": {"workers": 2},
        }
        if config:
            self.config.update(config)
        for fname, content in (services or {}).items():
            self.write_service(fname, content)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.args = list(args)
        self.proc = None
        self.notify = None
        self.expected_exit = 0  # checked for every run by AgentTest.tearDown
        self.exits = []
        self.log_path = os.path.join(self.tmp, "agent.log")

    # -- files --
    def write_config(self, config=None):
        with open(self.config_path + ".tmp", "w") as f:
            json.dump(config if config is not None else self.config, f, indent=2)
        os.rename(self.config_path + ".tmp", self.config_path)

    def write_raw_config(self, text):
        with open(self.config_path, "w") as f:
            f.write(text)

    def write_service(self, fname, content):
        path = os.path.join(self.services_dir, fname)
        with open(path + ".tmp", "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        os.rename(path + ".tmp", path)  # atomic, as configuration management does it

    def write_resource(self, fname, content):
        path = os.path.join(self.resources_dir, fname)
        with open(path + ".tmp", "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        os.rename(path + ".tmp", path)

    def remove_service(self, fname):
        os.unlink(os.path.join(self.services_dir, fname))

    # -- process --
    def start(self, wait_ready=True):
        self.write_config()
        self.notify = Notify(self.tmp)
        self.env["NOTIFY_SOCKET"] = self.notify.path
        self.log = open(self.log_path, "w")
        cmd = WRAPPER + [AGENT, "--config", self.config_path] + self.args
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self):
        try:
            self.notify.wait("READY", "1")
        except AssertionError:
            raise AssertionError(f"agent not ready; log:\n{self.logs()}")

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        """SIGHUP; waits for RELOADING=1 and the READY=1 after it. Returns those messages."""
        start = len(self.notify.messages)
        self.signal(signal.SIGHUP)
        i, reloading = self.notify.wait("RELOADING", "1", start=start)
        _, ready = self.notify.wait("READY", "1", start=i + 1)
        return reloading, ready

    def stop(self, timeout=20.0):
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"agent did not stop; log:\n{self.logs()}")
        self.exits.append(code)
        self.log.close()
        while self.notify._drain(0.01):  # what it said on the way out
            pass
        self.notify.close()
        return code

    def close(self):
        """Releases the log and notify socket of an agent that has exited."""
        if self.notify:
            self.notify.close()
        if getattr(self, "log", None) and not self.log.closed:
            self.log.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def remove_files(self):
        """Removes the agent's directory (config, state, logs) once it has exited."""
        if self.proc and self.proc.poll() is None:
            return
        if not os.environ.get("MESH_KEEP_TMP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- admin API --
    def url(self, path):
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def get(self, path, method="GET"):
        """Returns (status, headers, body bytes)."""
        req = urllib.request.Request(self.url(path), method=method)
        try:
            with urllib.request.urlopen(req, timeout=5 * SLOW) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path):
        status, _, body = self.get(path)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body!r}")
        return json.loads(body)

    def metric(self, name, **labels):
        """The value of one sample of /metrics, or None."""
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        text = self.get("/metrics")[2].decode()
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == name or (want and key == f"{name}{{{want}}}"):
                return float(value)
        return None

    def services(self):
        return {f"{s['namespace']}/{s['name']}": s for s in self.json("/v1/services")["services"]}


def promtool_input(body):
    """body without the istio_request_duration_milliseconds family: promtool's lint wants
    seconds in a name, but the name is Istio's and dashboards query it (docs/metrics.md).
    Only that family is left out; everything else is checked."""
    families = body.split(b"# HELP ")
    kept = [f for f in families if not f.startswith(b"istio_request_duration_milliseconds ")]
    return b"# HELP ".join(kept)


def check_promtool(test, body):
    """Runs `promtool check metrics` over a /metrics page; skips (saying why) without it."""
    import shutil
    promtool = shutil.which("promtool")
    if not promtool:
        raise unittest.SkipTest("promtool is not installed (scripts/install-deps installs it)")
    r = subprocess.run([promtool, "check", "metrics"], input=promtool_input(body),
                       capture_output=True)
    test.assertEqual(r.returncode, 0, r.stdout + r.stderr)
    test.assertEqual(r.stdout + r.stderr, b"", "promtool reported problems")


class AgentTest(unittest.TestCase):
    """Stops every agent a test started and checks that each exited cleanly."""

    def setUp(self):
        self.agents = []
        # Cleanups run even when setUp fails (tearDown does not): no agent outlives its test.
        self.addCleanup(self._kill_leftover_agents)

    def _kill_leftover_agents(self):
        for a in self.agents:
            if a.proc and a.proc.poll() is None:
                a.kill()
                a.close()
            a.remove_files()

    def agent(self, *args, **kwargs):
        a = Agent(*args, **kwargs)
        self.agents.append(a)
        return a

    def tearDown(self):
        failures = []
        for a in self.agents:
            if a.proc and a.proc.poll() is None:
                a.stop()
            elif a.proc and not a.exits:
                a.exits.append(a.proc.returncode)
                a.close()
            for code in a.exits:
                if code != a.expected_exit:
                    failures.append(f"agent exited with {code}, expected {a.expected_exit}; "
                                    f"log:\n{a.logs()}")
            a.remove_files()
        if failures:
            self.fail("\n".join(failures))


class BackendTest(AgentTest):
    """An AgentTest whose backends (self.backend(...), or appended to self.backends) are
    stopped at its end; backend_class makes them."""

    backend_class = None

    def setUp(self):
        super().setUp()
        self.backends = []

    def tearDown(self):
        for b in self.backends:
            b.stop()
        super().tearDown()

    def backend(self, name, **kw):
        b = self.backend_class(name, **kw).start()
        self.backends.append(b)
        return b


def main():
    unittest.main(verbosity=2)

"""A mesh-controller process for tests, and an HTTPS client for its API."""
import http.client
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time

from meshtest import BUILD, WRAPPER, Notify, free_port, wait_for

CONTROLLER = os.path.join(BUILD, "controller", "mesh-controller")
MESHCTL = os.path.join(BUILD, "controller", "meshctl")
TD = "mesh.test"


class Controller:
    def __init__(self, config=None, state_dir=None):
        self.tmp = tempfile.mkdtemp(prefix="mesh-controller-")
        self.state_dir = state_dir or os.path.join(self.tmp, "state")
        self.port = free_port()
        self.config = {"listen": f"127.0.0.1:{self.port}", "state_dir": self.state_dir,
                       "trust_domain": TD, "cert_ttl": "1h"}
        self.config.update(config or {})
        self.config_path = os.path.join(self.tmp, "controller.json")
        self.log_path = os.path.join(self.tmp, "controller.log")
        self.proc = None
        self.args = []  # more command-line arguments

    @property
    def ca(self):
        return os.path.join(self.state_dir, "ca.crt")

    @property
    def admin_token(self):
        with open(os.path.join(self.state_dir, "admin.token")) as f:
            return f.read().strip()

    def start(self):
        with open(self.config_path, "w") as f:
            json.dump(self.config, f)
        self.log = open(self.log_path, "a")
        self.notify = Notify(tempfile.mkdtemp(prefix="mesh-controller-notify-"))
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        self.proc = subprocess.Popen(WRAPPER + [CONTROLLER, "--config", self.config_path,
                                                *self.args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.notify.wait("READY", "1")  # as systemd's Type=notify waits for it
        wait_for(lambda: self.up(), timeout=10, what="the controller's API")
        return self

    def up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"controller exited {self.proc.returncode}:\n{self.logs()}")
        try:
            return self.request("GET", "/healthz")[0] == 200
        except (OSError, ssl.SSLError):
            return False

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=20)
            assert code == 0, f"controller exited {code}:\n{self.logs()}"
        self.close()

    def close(self):
        """Releases the log and notify socket of a controller that has exited."""
        for f in (getattr(self, "log", None), getattr(self, "notify", None)):
            if f:
                f.close()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.close()

    def context(self, cert=None, key=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def exchange(self, method, path, body=None, headers=None, cert=None, key=None,
                 source=None, timeout=10):
        """One HTTPS request; body is bytes, str or a JSON document. source: the local IP
        to connect from (127.0.0.2 is another client on the same host). Returns (status,
        headers, body bytes)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.context(cert, key),
                                           source_address=(source, 0) if source else None)
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def request(self, method, path, body=None, admin=False, cert=None, key=None, token=None,
                source=None):
        """Returns (status, JSON answer or text)."""
        headers = {"Content-Type": "application/json"}
        if admin or token:
            headers["Authorization"] = f"Bearer {token or self.admin_token}"
        status, _, data = self.exchange(method, path, body, headers, cert, key, source)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode()

    def metric(self, name, **labels):
        """The value of one sample of the controller's /metrics, or None."""
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        status, _, data = self.exchange("GET", "/metrics")
        if status != 200:
            raise AssertionError(f"GET /metrics: {status} {data!r}")
        for line in data.decode().splitlines():
            if line.startswith("#"):
                continue
            k, _, value = line.rpartition(" ")
            if k == name or (want and k == f"{name}{{{want}}}"):
                return float(value)
        return None

    def meshctl(self, *args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([MESHCTL, "-s", f"https://127.0.0.1:{self.port}", "--ca", self.ca,
                               "--token-file", os.path.join(self.state_dir, "admin.token"),
                               *args], capture_output=True, text=True, env=e, timeout=30)


def csr(directory, name):
    """A key and CSR made with the openssl command line; returns (csr text, key path)."""
    key = os.path.join(directory, f"{name}.key")
    req = os.path.join(directory, f"{name}.csr")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", req, "-subj", f"/O=test/CN={name}"],
                   check=True, capture_output=True)
    with open(req) as f:
        return f.read(), key

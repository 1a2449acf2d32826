"""Workloads for the attack tests: a real nginx, for attacks whose effect depends on how a
real server reads what the agent forwards (request smuggling, path confusion), and a raw
upstream that answers every request with bytes of the test's choosing (a hostile server).

nginx runs unprivileged in the foreground from a temporary prefix, on a free loopback port,
with keep-alive on. Every location answers with its name and the request line as nginx
understood it; the access log records each request nginx served, so a test can tell what
reached the workload and what did not. `/admin` is the location a policy protects.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile

from meshtest import SLOW, free_port, wait_for
from servers import ThreadedServer

CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format served '$request_method $request_uri $status';
    access_log {tmp}/access.log served;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        merge_slashes on;
        location / {{ return 200 "public $request_method $request_uri\\n"; }}
        location /admin {{ return 200 "ADMIN $request_method $request_uri\\n"; }}
        location = /empty {{ return 204; }}
    }}
}}
"""


def nginx_path():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)


class Nginx:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="mesh-nginx-")
        self.port = free_port()
        self.proc = None

    def start(self):
        binary = nginx_path()
        if not binary:
            raise AssertionError("nginx is not installed (scripts/install-deps installs it)")
        conf = os.path.join(self.tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(tmp=self.tmp, port=self.port))
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w")
        self.proc = subprocess.Popen([binary, "-p", self.tmp, "-c", conf, "-e", "stderr"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._listening, what="nginx listening")
        return self

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited: {self.logs()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def logs(self):
        with open(os.path.join(self.tmp, "stderr.log")) as f:
            return f.read()

    def served(self):
        """The requests nginx answered so far, as 'METHOD URI STATUS' lines."""
        try:
            with open(os.path.join(self.tmp, "access.log")) as f:
                return [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def sync(self, port, host="web"):
        """What nginx served before a marker request sent now through `port` (the agent):
        nginx serves in order, so whatever reached it earlier is logged by then."""
        s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        s.sendall(b"GET /sync-marker HTTP/1.1\r\nHost: " + host.encode() +
                  b"\r\nConnection: close\r\n\r\n")
        status = read_response(s)[0]
        s.close()
        if status != 200:
            raise AssertionError(f"the marker request got {status}")
        served = wait_for(lambda: (lambda s: s if any("/sync-marker" in x for x in s) else None)(
            self.served()), what="the marker request in nginx's access log")
        return [x for x in served if "/sync-marker" not in x]

    def wait_served(self, n):
        """Waits until nginx logged at least n requests; returns them."""
        return wait_for(lambda: (lambda s: s if len(s) >= n else None)(self.served()),
                        what=f"{n} requests in nginx's access log")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_response(sock, buf=b""):
    """Reads one HTTP/1.1 response with a Content-Length (or none: no body) from sock.
    Returns (status, headers dict, body, rest of buf), or (None, ...) at a close."""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            return None, {}, b"", buf
        buf += d
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    while len(buf) < n:
        d = sock.recv(65536)
        if not d:
            return None, headers, buf, b""
        buf += d
    return status, headers, buf[:n], buf[n:]


class RawBackend(ThreadedServer):
    """An upstream that answers each request head with `response` (raw bytes), whatever
    the request was; `requests` counts the heads it read."""

    def __init__(self, response):
        super().__init__()
        self.response = response
        self.requests = 0

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                _, _, buf = buf.partition(b"\r\n\r\n")
                with self.lock:
                    self.requests += 1
                c.sendall(self.response)
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(c)
            c.close()

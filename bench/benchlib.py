"""Shared pieces of the bench scripts (see ../shared/BENCHMARKING.md).

Load generator pinned to CPU 0; backend and proxy under test pinned to CPU 1; one worker
each; every target measured in the same run, rounds rotated; medians; steal recorded.
"""
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOFILE = 200000


def need(*tools):
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (scripts/install-deps installs them)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile():
    """Raises the open-file limit as far as allowed; returns it (children inherit it)."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def max_proxied(limit):
    """Connections a proxy can hold: two descriptors each, and some to spare."""
    return (limit - 200) // 2


def pinned(cpu, cmd):
    return ["taskset", "-c", str(cpu)] + cmd


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Procs:
    """Processes this bench started; every one is stopped by its PID."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def nginx_backend(tmp, procs, port, cpu=1):
    """nginx from Debian returning a small fixed body, keep-alive, its own prefix."""
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
master_process off;
worker_rlimit_nofile {NOFILE};
daemon off;
error_log {tmp}/nginx-error.log crit;
pid {tmp}/nginx.pid;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_header_timeout 300s;
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 "hello world\\n"; }} }}
}}
""")
    p = procs.start(pinned(cpu, ["nginx", "-c", conf, "-p", tmp]))
    wait_port(port)
    return p


def nginx_proxy(tmp, procs, listen_port, backend_port, cpu=1):
    """nginx as a reverse proxy: proxy_pass with upstream keep-alive, one worker."""
    conf = os.path.join(tmp, "nginx-proxy.conf")
    prefix = os.path.join(tmp, "nginx-proxy")
    os.makedirs(prefix, exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
master_process off;
worker_rlimit_nofile {NOFILE};
daemon off;
error_log {prefix}/error.log crit;
pid {prefix}/nginx.pid;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream b {{ server 127.0.0.1:{backend_port}; keepalive 256; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{listen_port} backlog=4096;
    location / {{
      proxy_pass http://b;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
    p = procs.start(pinned(cpu, ["nginx", "-c", conf, "-p", prefix]))
    wait_port(listen_port)
    return p


def haproxy(tmp, procs, listen_port, backend_port, mode="tcp", cpu=1, maxconn=9000):
    cfg = os.path.join(tmp, f"haproxy-{mode}.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn {maxconn}
defaults
  mode {mode}
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  {"option http-keep-alive" if mode == "http" else ""}
listen l
  bind 127.0.0.1:{listen_port}
  server s1 127.0.0.1:{backend_port}
""")
    p = procs.start(pinned(cpu, ["haproxy", "-f", cfg]))
    wait_port(listen_port)
    return p


def cpu_seconds(pid):
    """On-CPU time (user + system) of a process and its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def steal_ticks():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    total = sum(int(x) for x in fields[1:9])
    return int(fields[8]), total


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v = float(m.group(1))
    return v * {"us": 1, "ms": 1000, "s": 1000000}[m.group(2)]


def wrk(port, conns, seconds, script=None, path="/"):
    """Runs wrk pinned to CPU 0; returns requests/s, requests, latency percentiles (us)."""
    cmd = pinned(0, ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"])
    if script:
        cmd += ["-s", script]
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    pct = {m.group(1): parse_latency(m.group(2))
           for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    return {"rps": rps, "requests": reqs, "p50": pct.get("50"), "p99": pct.get("99"),
            "errors": (errors.group(1) if errors else "") + (f" non2xx={non2xx.group(1)}" if non2xx else "")}


def measured(pid, port, conns, seconds, script=None):
    """One wrk run with the target's CPU time and the machine's steal over it."""
    st0, tot0 = steal_ticks()
    c0 = cpu_seconds(pid)
    r = wrk(port, conns, seconds, script)
    r["cpu_s"] = cpu_seconds(pid) - c0
    st1, tot1 = steal_ticks()
    r["steal_pct"] = 100.0 * (st1 - st0) / max(1, tot1 - tot0)
    r["cpu_us_per_req"] = 1e6 * r["cpu_s"] / max(1, r["requests"])
    return r


def syscalls_per_request(pid, port, seconds=3):
    """strace -c -f over a separate, untimed run; syscalls per request."""
    out = os.path.join(tempfile.gettempdir(), f"strace-{pid}.txt")
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = wrk(port, 32, seconds)
    st.send_signal(signal.SIGINT)
    st.wait(timeout=30)
    with open(out) as f:
        text = f.read()
    os.unlink(out)
    total = re.search(r"100\.00\s+\S+\s+\S+\s+(\d+)", text)
    return int(total.group(1)) / max(1, r["requests"]) if total else float("nan")


PACED_LUA = """
-- About 1,000 requests/s over 16 connections, each waiting a random 8-24 ms:
-- jitter keeps connections from firing in bursts (see BENCHMARKING.md).
math.randomseed(os.time())
function delay()
  return math.random(8, 24)
end
"""


def paced_script(tmp):
    path = os.path.join(tmp, "paced.lua")
    with open(path, "w") as f:
        f.write(PACED_LUA)
    return path


def rotations(targets, rounds):
    for r in range(rounds):
        k = r % len(targets)
        yield r + 1, targets[k:] + targets[:k]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def hold_idle(port, n, admin_url=None, expect=None):
    """Opens n idle connections to port; returns the sockets (caller closes)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def admin_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)

#!/usr/bin/env python3
"""HTTP/2 from clients (docs/http2.md): h2c with prior knowledge on an HTTP listener, each
stream a request through the HTTP/1.1 pipeline to an HTTP/1.1 backend and back. Clients:
curl --http2-prior-knowledge, nghttp (nghttp2-client) and raw frames with python3-h2
(h2client.py under /usr/bin/python3)."""
import json
import os
import re
import shutil
import subprocess

from httptest import HttpTest
from meshtest import SLOW, main, settled, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"


def have_h2():
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import h2"], capture_output=True).returncode == 0


def h2client(test, scenario, port, arg=None):
    """Runs a python3-h2 scenario (h2client.py); skips with the reason when it cannot run."""
    if not have_h2():
        test.skipTest("python3-h2 is not installed for /usr/bin/python3 (apt-get install "
                      "python3-h2)")
    cmd = [SYSTEM_PYTHON, os.path.join(HERE, "h2client.py"), scenario, str(port)]
    if arg is not None:
        cmd.append(str(arg))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60 * SLOW)
    test.assertEqual(r.returncode, 0, r.stderr)
    return json.loads(r.stdout)


def curl_h2(test, port, path, *args):
    """curl with prior knowledge; returns (status, headers dict, body text, http version)."""
    if not shutil.which("curl"):
        test.skipTest("curl is not installed")
    r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "-H", "Host: api",
                        "-w", "\n%{http_version}", *args, f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=30 * SLOW)
    test.assertEqual(r.returncode, 0, r.stderr)
    head, _, rest = r.stdout.partition("\n\n")  # text mode: CRLF reads as LF
    body, _, version = rest.rpartition("\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body, version


class Http2Test(HttpTest):
    def test_curl_get_and_post_reach_an_http11_backend(self):
        b = self.backend("b1")
        self.http_agent([b])
        status, h, body, version = curl_h2(self, self.port, "/hello?x=1", "-H", "X-Custom: yes")
        self.assertEqual((status, version), (200, "2"))
        echo = json.loads(body)
        self.assertEqual((echo["backend"], echo["method"], echo["target"]),
                         ("b1", "GET", "/hello?x=1"))
        self.assertEqual(echo["headers"]["host"], "api")
        self.assertEqual(echo["headers"]["x-custom"], "yes")
        # The backend's connection-specific fields do not reach an HTTP/2 client.
        self.assertEqual(h["x-backend"], "b1")
        for hop in ("connection", "keep-alive", "x-drop-me", "transfer-encoding"):
            self.assertNotIn(hop, h)
        status, _, body, _ = curl_h2(self, self.port, "/post", "--data-binary", "a body")
        echo = json.loads(body)
        self.assertEqual((status, echo["method"], echo["body"]), (200, "POST", "a body"))
        # A chunked response from the backend comes back as DATA frames.
        status, _, body, _ = curl_h2(self, self.port, "/c?chunked=1")
        self.assertEqual((status, json.loads(body)["target"]), (200, "/c?chunked=1"))
        # A body delimited by the backend's close, and HEAD.
        status, _, body, _ = curl_h2(self, self.port, "/n?nolength=1")
        self.assertEqual((status, json.loads(body)["target"]), (200, "/n?nolength=1"))
        status, h, body, _ = curl_h2(self, self.port, "/h", "-I")
        self.assertEqual((status, body.strip()), (200, ""))

    def test_large_bodies_both_ways(self):
        # Bodies far over the flow-control windows and the write high-water marks: DATA
        # frames wait for WINDOW_UPDATEs and the upstream for the client, in both directions.
        b = self.backend("b1")
        a = self.http_agent([b])
        status, _, body, _ = curl_h2(self, self.port, "/big?size=3000000")
        self.assertEqual((status, len(body)), (200, 3000000))
        path = os.path.join(a.tmp, "upload")
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 21))
        status, _, body, _ = curl_h2(self, self.port, "/up?size=2", "--data-binary", "@" + path)
        self.assertEqual((status, body), (200, "xx"))
        with open(path, "rb") as f:
            self.assertEqual(b.requests[-1][3], f.read())

    def test_stopping_sends_goaway(self):
        if not have_h2():
            self.skipTest("python3-h2 is not installed for /usr/bin/python3")
        b = self.backend("b1")
        a = self.http_agent([b])
        p = subprocess.Popen([SYSTEM_PYTHON, os.path.join(HERE, "h2client.py"), "hold",
                              str(self.port)], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(p.stdout.readline().strip(), "ready")
            self.assertEqual(a.stop(), 0)
            out = json.loads(p.stdout.readline())
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
        self.assertEqual(out, {"first": 200, "goaway": 0, "closed": True})  # NO_ERROR

    def test_access_log_and_metrics_count_streams(self):
        b = self.backend("b1")
        a = self.agent(services=self.services([b]))
        log = os.path.join(a.tmp, "access.log")
        a.config["proxy"]["access_log"] = log
        a.start()
        wait_for(lambda: self.listening(self.port), what="the HTTP listener")
        for i in range(3):
            self.assertEqual(curl_h2(self, self.port, f"/m{i}")[0], 200)
        def read():
            if not os.path.exists(log):
                return []
            with open(log) as f:
                return [json.loads(x) for x in f.read().splitlines()]
        wait_for(lambda: len(read()) >= 3, timeout=5 * SLOW, what="access log lines")
        lines = read()
        self.assertEqual([x["protocol"] for x in lines], ["HTTP/2"] * 3)
        self.assertEqual(sorted(x["path"] for x in lines), ["/m0", "/m1", "/m2"])
        settled(self, lambda: a.metric("mesh_http_requests_total", destination="default/api",
                                       code_class="2xx"), 3)

    def test_nghttp_streams_on_one_connection(self):
        if not shutil.which("nghttp"):
            self.skipTest("nghttp is not installed (apt-get install nghttp2-client)")
        b = self.backend("b1")
        a = self.http_agent([b])
        # Half of them with 400 kB responses: their DATA frames interleave on the connection.
        urls = [f"http://127.0.0.1:{self.port}/s{i}" + ("?size=400000" if i % 2 else "")
                for i in range(8)]
        r = subprocess.run(["nghttp", "-n", "-v", "-H", ":authority: api", *urls],
                           capture_output=True, text=True, timeout=30 * SLOW)
        self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr)
        self.assertEqual(r.stdout.count(":status: 200"), 8, r.stdout[-2000:])
        self.assertEqual(b.count(), 8)
        targets = sorted(req[1].split("?")[0] for req in b.requests)
        self.assertEqual(targets, sorted(f"/s{i}" for i in range(8)))
        data = sum(int(n) for n in re.findall(r"recv DATA frame <length=(\d+)", r.stdout))
        self.assertGreater(data, 4 * 400000)
        self.assertEqual(a.metric("mesh_proxy_http2_connections_total"), 1)  # one connection
        self.assertEqual(a.metric("mesh_proxy_http2_streams_total"), 8)

    def test_streams_are_served_concurrently(self):
        b = self.backend("b1")
        self.http_agent([b])
        out = h2client(self, "interleaved", self.port)
        # Stream 3 is answered while stream 1's body is still coming.
        self.assertTrue(out["one_open_when_three_done"])
        self.assertEqual((out["three"]["status"], out["three"]["echo"]["target"]),
                         (200, "/three"))
        self.assertEqual((out["one"]["status"], out["one"]["echo"]["body"]), (200, "1234567890"))

    def test_body_without_content_length(self):
        b = self.backend("b1")
        self.http_agent([b])
        out = h2client(self, "post_unsized", self.port, "/up")
        self.assertEqual((out["status"], out["echo"]["body"]), (200, "first-second"))

    def test_route_on_path_applies_to_streams(self):
        b = self.backend("b1")
        rules = [{"match": [{"path": {"prefix": "/direct/"}}],
                  "direct_response": {"status": 200, "body": "from the route"}}]
        self.http_agent([b], route={"rules": rules})
        status, _, body, _ = curl_h2(self, self.port, "/direct/x")
        self.assertEqual((status, body), (200, "from the route"))
        status, _, body, _ = curl_h2(self, self.port, "/other")
        self.assertEqual((status, json.loads(body)["backend"]), (200, "b1"))
        self.assertEqual(b.count(), 1)

    def test_retry_applies_to_streams(self):
        b1, b2 = self.backend("b1"), self.backend("b2")
        b1.default_query = {"status": "503"}
        route = {"rules": [{"destinations": [{"service": "api"}],
                            "retries": {"attempts": 3, "retry_on": ["5xx"],
                                        "backoff_base": "1ms", "backoff_max": "5ms"}}]}
        a = self.http_agent([b1, b2], route=route)
        for i in range(6):
            status, _, body, _ = curl_h2(self, self.port, f"/r{i}")
            self.assertEqual((status, json.loads(body)["backend"]), (200, "b2"))
        self.assertEqual(a.metric("mesh_http_retries_total", destination="default/api"),
                         b1.count())


if __name__ == "__main__":
    main()

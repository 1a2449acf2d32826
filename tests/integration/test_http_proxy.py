#!/usr/bin/env python3
"""The HTTP/1.1 data plane with real backends: proxying, headers, keep-alive and pools,
the shared listener, and the protocol's corners (pipelining, 100-continue, HEAD, 204,
chunked bodies, HTTP/1.0, upgrades), access log and metrics."""
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

from httptest import HttpTest, raw
from meshtest import SLOW, main, promtool_input, wait_for


class HttpProxyTest(HttpTest):
    def test_proxies_and_rewrites_headers(self):
        b = self.backend("b1")
        self.http_agent([b])
        c = self.client()
        status, h, echo = c.echo("/hello?x=1", headers={
            "Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5",
            "TE": "trailers", "X-B3-TraceId": "463ac35c9f6413ad", "B3": "463ac35c9f6413ad-1"})
        self.assertEqual(status, 200)
        self.assertEqual(echo["backend"], "b1")
        self.assertEqual(echo["target"], "/hello?x=1")
        sent = echo["headers"]
        for hop in ("x-hop", "keep-alive", "te", "connection"):
            self.assertNotIn(hop, sent, f"hop-by-hop header {hop} was forwarded")
        self.assertEqual(sent["x-b3-traceid"], "463ac35c9f6413ad")  # B3 passes through
        self.assertEqual(sent["b3"], "463ac35c9f6413ad-1")
        self.assertRegex(sent["x-request-id"],
                         r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
        self.assertRegex(sent["traceparent"], r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
        # The backend's own hop-by-hop headers do not reach the client either.
        self.assertNotIn("x-drop-me", h)
        self.assertEqual(h["x-backend"], "b1")
        # A given request id is kept; a valid traceparent is continued with a new span.
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        _, _, echo = c.echo("/", headers={"X-Request-Id": "abc-123", "traceparent": tp})
        self.assertEqual(echo["headers"]["x-request-id"], "abc-123")
        out = echo["headers"]["traceparent"]
        self.assertTrue(out.startswith("00-0af7651916cd43dd8448eb211c80319c-"), out)
        self.assertNotEqual(out, tp)
        # An invalid one starts a new trace.
        _, _, echo = c.echo("/", headers={"traceparent": "00-zz-yy-01"})
        self.assertNotIn("zz", echo["headers"]["traceparent"])
        c.close()

    def test_keep_alive_reuses_upstream_connections(self):
        b = self.backend("b1")
        self.http_agent([b], config={"proxy": {"workers": 1}})
        c = self.client()
        for i in range(50):
            status, _, echo = c.echo(f"/n{i}")
            self.assertEqual((status, echo["target"]), (200, f"/n{i}"))
        c.close()
        self.assertEqual(b.count(), 50)
        self.assertLessEqual(b.connections, 2, "the upstream pool did not keep the connection")

    def test_pool_idle_timeout_and_server_close(self):
        b = self.backend("b1")
        a = self.http_agent([b], config={"proxy": {"workers": 1}},
                            policy={"connection_pool": {"idle_timeout": "500ms"}})
        c = self.client()
        self.assertEqual(c.echo("/")[0], 200)
        wait_for(lambda: b.closed >= 1, timeout=5 * SLOW, what="idle upstream connection closed")
        # A new request opens a new connection.
        self.assertEqual(c.echo("/")[0], 200)
        self.assertEqual(b.connections, 2)
        c.close()
        del a

    def test_shared_listener_routes_by_host(self):
        b = self.backend("b1")
        other = self.backend("other")
        extra = {"other.json": {"service": {"name": "other", "namespace": "shop", "endpoints": [
            {"address": "127.0.0.1", "port": other.port}]}}}
        self.http_agent([b], extra=extra)
        for host, want in [("api", "b1"), ("api.default", "b1"), ("API.default.svc:8080", "b1"),
                           ("api.default.svc.cluster.local", "b1"), ("other", "other"),
                           ("other.shop", "other"), ("other.shop.svc.cluster.local:80", "other")]:
            c = self.client(self.shared_port, host)
            status, _, echo = c.echo("/")
            self.assertEqual((status, echo["backend"]), (200, want), host)
            c.close()
        for host in ("nothing", "api.nowhere", "api.default.elsewhere"):
            c = self.client(self.shared_port, host)
            status, h, body = c.request()
            self.assertEqual(status, 404, host)
            self.assertEqual(h["x-mesh-response-flags"], "NR")
            c.close()

    def test_no_endpoints_is_503_no_healthy_upstream(self):
        dead = self.backend("dead")
        dead.stop()  # nothing listens: connect failures
        a = self.http_agent([dead])
        c = self.client()
        status, h, _ = c.request()
        c.close()
        self.assertEqual(status, 503)
        self.assertIn("UF", h["x-mesh-response-flags"])
        a.write_service("api.json", {"service": {"name": "api", "endpoints": [
            {"address": "127.0.0.1", "port": dead.port, "health": "unhealthy"}]}})
        def flags():
            c = self.client()
            try:
                return c.request()[1].get("x-mesh-response-flags")
            finally:
                c.close()

        wait_for(lambda: flags() == "UH", what="no eligible endpoint")

    def test_pipelined_requests_answer_in_order(self):
        b = self.backend("b1")
        self.http_agent([b])
        reqs = b"".join(b"GET /p%d?delay=%d HTTP/1.1\r\nHost: api\r\n\r\n" % (i, 30 - 10 * i)
                        for i in range(3))
        out = raw(self.port, reqs + b"GET /last HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        targets = re.findall(rb'"target": "([^"]+)"', out)
        self.assertEqual(targets, [b"/p0?delay=30", b"/p1?delay=20", b"/p2?delay=10", b"/last"])
        self.assertEqual(out.count(b"HTTP/1.1 200"), 4)

    def test_expect_100_continue(self):
        b = self.backend("b1")
        self.http_agent([b])
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(5 * SLOW)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        self.assertEqual(s.recv(100), b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        data = b""
        while b'"body"' not in data:
            data += s.recv(65536)
        s.close()
        self.assertIn(b'"body": "hello"', data)
        self.assertNotIn(b'"expect"', data)  # answered here, not passed on

    def test_bodies_head_204_304_chunked(self):
        b = self.backend("b1")
        self.http_agent([b])
        c = self.client()
        status, _, echo = c.echo("/", body=b"x" * 100000, headers={"Content-Length": "100000"})
        self.assertEqual((status, len(echo["body"])), (200, 100000))
        # A chunked request body reaches the backend whole.
        c.conn.putrequest("POST", "/chunked", skip_host=True)
        c.conn.putheader("Host", "api")
        c.conn.putheader("Transfer-Encoding", "chunked")
        c.conn.endheaders()
        c.conn.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = c.conn.getresponse()
        self.assertEqual(json.loads(r.read())["body"], "hello world")
        status, h, body = c.request("HEAD", "/")
        self.assertEqual((status, body), (200, b""))
        self.assertIn("content-length", h)
        for st in (204, 304):
            status, _, body = c.request("GET", f"/?status={st}")
            self.assertEqual((status, body), (st, b""))
        status, h, body = c.request("GET", "/?chunked=1&size=3000")
        self.assertEqual((status, h.get("transfer-encoding"), len(body)), (200, "chunked", 3000))
        status, _, body = c.request("GET", "/?nolength=1&size=777")
        self.assertEqual((status, len(body)), (200, 777))
        c.close()
        self.assertEqual(self.client().echo("/after")[0], 200)

    def test_http10_client(self):
        b = self.backend("b1")
        self.http_agent([b])
        out = raw(self.port, b"GET /old HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:100])
        self.assertIn(b"connection: close", out.lower())
        self.assertIn(b'"host": "api"', out)  # the upstream request got a Host
        # A chunked response reaches an HTTP/1.0 client decoded, ended by the close.
        out = raw(self.port, b"GET /?chunked=1&size=1000 HTTP/1.0\r\nHost: api\r\n\r\n")
        head, _, body = out.partition(b"\r\n\r\n")
        self.assertNotIn(b"chunked", head.lower())
        self.assertEqual(body, b"x" * 1000)
        # Keep-alive when asked for.
        out = raw(self.port, b"GET /a HTTP/1.0\r\nHost: api\r\nConnection: keep-alive\r\n\r\n"
                             b"GET /b HTTP/1.0\r\nHost: api\r\n\r\n")
        self.assertEqual(out.count(b"HTTP/1.1 200"), 2)
        self.assertIn(b"connection: keep-alive", out.lower())

    def test_websocket_upgrade_becomes_a_tunnel(self):
        b = self.backend("b1")
        self.http_agent([b])
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(5 * SLOW)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: api\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        self.assertIn(b"upgrade: websocket", head.lower())
        for msg in (b"\x81\x05hello", b"any bytes at all \x00\xff"):
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += s.recv(4096)
            self.assertEqual(got, msg)
        s.close()

    def test_access_log_and_metrics(self):
        b = self.backend("b1")
        log = os.path.join(self.backends[0].name + "-access.log")
        a = self.agent(services=self.services([b]))
        log = os.path.join(a.tmp, "access.log")
        a.config["proxy"]["access_log"] = log
        a.start()
        self.port = int(self.port)
        wait_for(lambda: self.listening(self.port))
        c = self.client()
        c.echo("/ok", headers={"X-Request-Id": "req-1"})
        c.request("GET", "/?status=503")
        c.request("GET", "/?status=404")
        c.close()
        wait_for(lambda: os.path.exists(log) and len(open(log).read().splitlines()) >= 3,
                 what="access log lines")
        lines = [json.loads(x) for x in open(log).read().splitlines()]
        first = lines[0]
        for key in ("time", "method", "authority", "path", "status", "response_flags",
                    "duration_ms", "upstream_host", "bytes_received", "bytes_sent",
                    "request_id", "trace_id"):
            self.assertIn(key, first)
        self.assertEqual((first["method"], first["path"], first["status"], first["request_id"]),
                         ("GET", "/ok", 200, "req-1"))
        self.assertEqual(first["upstream_host"], f"127.0.0.1:{b.port}")
        self.assertRegex(first["trace_id"], r"^[0-9a-f]{32}$")
        self.assertEqual([x["status"] for x in lines], [200, 503, 404])
        labels = {"destination": "default/api"}
        self.assertEqual(a.metric("mesh_http_requests_total", **labels, code_class="2xx"), 1)
        self.assertEqual(a.metric("mesh_http_requests_total", **labels, code_class="4xx"), 1)
        self.assertEqual(a.metric("mesh_http_requests_total", **labels, code_class="5xx"), 1)
        self.assertEqual(a.metric("mesh_http_request_duration_seconds_count", **labels), 3)
        if shutil.which("promtool"):
            text = a.get("/metrics")[2]
            r = subprocess.run(["promtool", "check", "metrics"], input=promtool_input(text),
                               capture_output=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        else:
            print("skipped promtool: not installed")
        # Reload to another file: new lines go there.
        log2 = os.path.join(a.tmp, "access2.log")
        a.config["proxy"]["access_log"] = log2
        a.write_config()
        a.reload()
        self.client().echo("/second")
        wait_for(lambda: os.path.exists(log2) and "/second" in open(log2).read())

    def test_drain_on_stop_finishes_the_request(self):
        b = self.backend("b1")
        a = self.http_agent([b])
        result = {}

        def slow():
            result["r"] = self.client().request("GET", "/?delay=700")

        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: b.count() >= 0 and a.metric("mesh_proxy_active_connections") >= 1)
        time.sleep(0.1)
        self.assertEqual(a.stop(), 0)
        t.join()
        self.assertEqual(result["r"][0], 200)
        self.assertEqual(result["r"][1].get("connection"), "close")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Request smuggling through `Connection` (issue #13, critical).

The agent used to remove every header that `Connection` names, Content-Length,
Transfer-Encoding and Host included, and then forward the body without framing: a real
server (nginx here) read the body as a second request that was never routed or authorized
(a `GET /admin` past a `deny /admin` policy), and its response, left on the pooled upstream
connection, went to the next client. Such requests are refused (400, connection closed)
before anything is forwarded; responses that try the same are refused (502) and their
upstream connection is closed."""
import socket
import threading

from httptest import HttpTest, raw
from meshtest import SLOW, free_port, main, wait_for
from nginx_backend import Nginx, RawBackend, read_response

SMUGGLED = b"GET /admin/secret HTTP/1.1\r\nHost: web\r\n\r\n"
# A smuggled head left open: the next client's request on that upstream connection ends it,
# and that client gets the answer to the smuggled request instead of its own.
SMUGGLED_PREFIX = b"GET /admin/secret HTTP/1.1\r\nX-Swallow: "


def attack(connection_value, framing=None, body=SMUGGLED):
    """POST /public whose framing header is named by Connection, the body a request."""
    framing = framing or b"Content-Length: %d\r\n" % len(body)
    return (b"POST /public HTTP/1.1\r\nHost: web\r\n" + framing +
            b"Connection: " + connection_value + b"\r\n\r\n" + body)


def chunked(body):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


class SmugglingTest(HttpTest):
    def setUp(self):
        super().setUp()
        self.nginx = Nginx().start()

    def tearDown(self):
        super().tearDown()
        self.nginx.stop()

    def inbound_agent(self, workers=1):
        """An agent whose local service 'web' is nginx behind an HTTP inbound listener
        guarded by `deny /admin`; one worker, so that every request shares one pool."""
        self.port = free_port()
        svc = {"web.json": {"service": {"name": "web", "protocol": "http",
                                        "port": self.nginx.port, "inbound_port": self.port,
                                        "inbound_address": "127.0.0.1"}}}
        a = self.agent(services=svc, config={"proxy": {"workers": workers}})
        a.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "web", "spec": {
            "deny": [{"match": [{"path": {"prefix": "/admin"}}]}]}})
        a.start()
        wait_for(lambda: self.listening(self.port), what="the inbound listener")
        return a

    def test_policy_holds_for_a_plain_request(self):
        self.inbound_agent()
        out = raw(self.port, b"GET /admin/secret HTTP/1.1\r\nHost: web\r\nConnection: close"
                             b"\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 403"), out)
        self.assertEqual(self.nginx.sync(self.port), [])

    def test_connection_may_not_remove_framing_or_host(self):
        self.inbound_agent()
        cases = [
            ("Connection: content-length", attack(b"content-length")),
            ("Connection: Content-Length among others",
             attack(b"keep-alive, Content-Length, x-foo")),
            ("Connection: transfer-encoding",
             attack(b"transfer-encoding", b"Transfer-Encoding: chunked\r\n", chunked(SMUGGLED))),
            ("Connection: host", attack(b"host")),
        ]
        failures = []
        for name, data in cases:
            out = raw(self.port, data)
            if not out.startswith(b"HTTP/1.1 400") or b"connection: close" not in out.lower():
                failures.append(f"{name}: got {out[:120]!r}, want 400 and a close")
            if b"ADMIN" in out:
                failures.append(f"{name}: the smuggled request was answered: {out!r}")
        self.assertEqual(failures, [])
        self.assertEqual(self.nginx.sync(self.port), [], "a smuggling request reached nginx")

    def test_smuggled_response_never_reaches_other_clients(self):
        """The victims scenario: attacks among 20 clients sharing one pooled upstream."""
        self.inbound_agent(workers=1)
        victims, rounds, attacks = 20, 10, 20
        wrong, attacker = [], []
        lock = threading.Lock()
        go = threading.Event()

        def victim(i):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10 * SLOW)
            go.wait()
            rest = b""
            for n in range(rounds):
                s.sendall(b"GET /v%d-%d HTTP/1.1\r\nHost: web\r\n\r\n" % (i, n))
                status, _, body, rest = read_response(s, rest)
                if status != 200 or body != b"public GET /v%d-%d\n" % (i, n):
                    with lock:
                        wrong.append((i, n, status, body))
                    break
            s.close()

        def attack_loop():
            go.wait()
            for n in range(attacks):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10 * SLOW)
                s.sendall(attack(b"content-length", body=SMUGGLED if n % 2 else SMUGGLED_PREFIX))
                status, _, body, _ = read_response(s)
                with lock:
                    attacker.append(status)
                s.close()

        threads = [threading.Thread(target=victim, args=(i,)) for i in range(victims)]
        threads.append(threading.Thread(target=attack_loop))
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(timeout=30 * SLOW)
        self.assertEqual(wrong, [], "victims got responses that were not theirs")
        served = self.nginx.sync(self.port)
        self.assertEqual(len([s for s in served if "GET /v" in s]), victims * rounds)
        self.assertFalse([s for s in served if "/admin" in s], "a smuggled request was served")
        self.assertFalse([s for s in served if s.startswith("POST")], served)
        self.assertEqual(attacker, [400] * attacks)

    def test_framing_is_regenerated_for_the_upstream(self):
        """Bodies still reach nginx whole, framed by the agent: a normal POST works."""
        self.inbound_agent()
        body = b"x" * 100
        out = raw(self.port, b"POST /p HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n"
                             b"Connection: keep-alive, close\r\n\r\n" + body)
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out)
        self.assertIn(b"public POST /p", out)
        out = raw(self.port, b"POST /c HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n"
                             b"Connection: close\r\n\r\n" + chunked(body))
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out)
        self.assertEqual(self.nginx.wait_served(2), ["POST /p 200", "POST /c 200"])


class ResponseSmugglingTest(HttpTest):
    def run_backend(self, response):
        b = RawBackend(response).start()
        self.backends.append(b)
        self.http_agent([b], config={"proxy": {"workers": 1}})
        return b

    def test_response_connection_naming_framing_is_refused(self):
        smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nsmuggle"
        for value in (b"content-length", b"Transfer-Encoding"):
            with self.subTest(value=value):
                if value == b"content-length":
                    body = b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled
                else:
                    body = b"Transfer-Encoding: chunked\r\n\r\n" + chunked(smuggled)
                b = self.run_backend(b"HTTP/1.1 200 OK\r\nConnection: " + value + b"\r\n" +
                                     body)
                s = socket.create_connection(("127.0.0.1", self.port), timeout=10 * SLOW)
                s.sendall(b"GET /a HTTP/1.1\r\nHost: api\r\n\r\n")
                status, h, rbody, rest = read_response(s)
                self.assertEqual(status, 502, rbody)
                self.assertEqual(h.get("x-mesh-response-flags"), "UPE")
                # The client connection goes on, and never sees the smuggled response.
                s.sendall(b"GET /b HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
                status2, _, rbody2, _ = read_response(s, rest)
                s.close()
                self.assertEqual(status2, 502, rbody2)
                self.assertNotIn(b"smuggle", rbody + rbody2)
                self.assertEqual(b.requests, 2)
                for a in self.agents:
                    a.stop()
                self.agents = []
                b.stop()
                self.backends.remove(b)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Attacks on mesh-controller's HTTPS server before any credential is checked (issue #13):
request bodies over 16 KB that freed the parsed request under it, writes without a
credential that were never answered, and a flood of them that filled every connection
slot for good (sockets left in CLOSE_WAIT)."""
import json
import os
import socket
import ssl
import time
import unittest

from controllertest import Controller
from meshtest import main, wait_for

ATTACKER = "127.0.0.2"  # another client on the same host: loopback answers 127/8


def resources_file(path, size):
    """A valid {"resources": [...]} file of at least `size` bytes."""
    items, n = [], 0
    while True:
        items.append({"kind": "Route", "name": f"api-{n}", "namespace": "shop",
                      "spec": {"service": f"api-{n}", "rules": [
                          {"match": [{"path": {"prefix": f"/v{n}/"}}],
                           "destinations": [{"service": f"api-{n}"}]}]}})
        n += 1
        text = json.dumps({"resources": items}, indent=1)
        if len(text) >= size:
            break
    with open(path, "w") as f:
        f.write(text)
    return n


def close_wait(port):
    """Sockets of a local listener on `port` left in CLOSE_WAIT (the peer closed, we did
    not), from /proc/net/tcp."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "08":
                n += 1
    return n


class PreauthTest(unittest.TestCase):
    def setUp(self):
        self.c = Controller().start()

    def tearDown(self):
        self.c.stop()  # a crash (ASan) or a hang fails here too

    def test_a_125_kb_file_applies(self):
        path = os.path.join(self.c.tmp, "big.json")
        n = resources_file(path, 125 * 1024)
        r = self.c.meshctl("apply", "-f", path)
        self.assertEqual(r.returncode, 0, r.stderr + self.c.logs()[-2000:])
        self.assertIn(f"applied route.shop.api-{n - 1}", r.stdout)
        s, doc = self.c.request("GET", "/v1/resources", admin=True)
        self.assertEqual((s, len(doc["resources"])), (200, n))

    def test_bodies_of_every_size_across_16k_get_their_answer(self):
        # Unauthenticated: each must be refused for what it is (401), whatever its size.
        for n in list(range(15900, 16600, 7)) + [32768, 65536, 200000]:
            body = b"{" + b" " * (n - 2) + b"}"
            s, _, data = self.c.exchange("PUT", "/v1/resources", body, timeout=10)
            self.assertEqual(s, 401, f"a {n}-byte body: {s} {data[:200]!r}")
            self.assertIn(b"admin token is required", data)
        # And with the admin token, a large valid body is read whole.
        path = os.path.join(self.c.tmp, "r.json")
        resources_file(path, 40000)
        with open(path, "rb") as f:
            body = f.read()
        s, _, data = self.c.exchange("PUT", "/v1/resources", body, headers={
            "Authorization": f"Bearer {self.c.admin_token}"})
        self.assertEqual(s, 200, data[:300])

    def test_writes_without_a_credential_are_answered(self):
        for method, path in (("PUT", "/v1/resources"),
                             ("DELETE", "/v1/resources/Route/shop/api"),
                             ("POST", "/v1/resources"), ("PATCH", "/v1/resources/x/y/z")):
            s, body = self.c.request(method, path, {"kind": "Route"})
            self.assertEqual(s, 401, f"{method} {path}: {body}")
            self.assertIn("admin token is required", body["error"])

    def test_flood_of_unauthenticated_writes_does_not_take_the_controller_down(self):
        # The attack: 4,096 connections (max_connections), the first ones each with an
        # unauthenticated PUT, all kept open. (The rest only connect: a TLS handshake each
        # would make the test slow, and they hold a slot all the same.)
        ctx = ssl.create_default_context(cafile=self.c.ca)
        req = (b"PUT /v1/resources HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 2\r\n\r\n{}")
        held, puts, answered, cut = [], [], 0, 0
        t0 = time.monotonic()
        for i in range(4096):
            try:
                s = socket.create_connection(("127.0.0.1", self.c.port), timeout=5,
                                             source_address=(ATTACKER, 0))
                if i < 200:
                    s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
                    s.sendall(req)
                    puts.append(s)
                held.append(s)
            except (OSError, ssl.SSLError):
                cut += 1
        elapsed = time.monotonic() - t0
        try:
            # Another client is served at once, by the API and by meshctl.
            self.assertTrue(self.c.up(), self.c.logs()[-2000:])
            r = self.c.meshctl("token", "list")
            self.assertEqual(r.returncode, 0, r.stderr)
            for s in puts[-32:]:  # the latest are answered, not left hanging
                try:
                    s.settimeout(2)
                    answered += s.recv(4096).startswith(b"HTTP/1.1 401")
                except (OSError, ssl.SSLError):
                    pass
            self.assertGreater(answered, 0, "no flood request got its 401")
            # The flood holds no more than one client's share of the connections.
            active = self.c.metric("mesh_controller_http_connections_active")
            self.assertLessEqual(active, 200)
            self.assertGreater(self.c.metric("mesh_controller_http_connections_evicted_total") +
                               self.c.metric("mesh_controller_http_connections_refused_total"), 0)
        finally:
            for s in held:
                s.close()
        # Once the attacker lets go, nothing is left half-closed on the controller's side.
        wait_for(lambda: close_wait(self.c.port) == 0, timeout=15,
                 what="no socket of the controller left in CLOSE_WAIT")
        print(f"flood: 4096 connections ({len(puts)} with a PUT) in {elapsed:.1f} s, "
              f"{answered} of the last 32 PUTs answered, {cut} cut during the handshake")

    def test_slow_idle_and_endless_connections_are_cut(self):
        self.c.stop()
        self.c.config.update({"header_timeout": "1s", "idle_timeout": "1s",
                              "connection_timeout": "3s"})
        self.c.start()
        ctx = ssl.create_default_context(cafile=self.c.ca)

        def connect():
            raw = socket.create_connection(("127.0.0.1", self.c.port), timeout=20)
            return ctx.wrap_socket(raw, server_hostname="127.0.0.1")

        def read_all(s):
            data = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, ssl.SSLError):
                    break
                if not chunk:
                    break
                data += chunk
            return data

        # A head that never ends: 408 at the header deadline, then closed.
        slow = connect()
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        t0 = time.monotonic()
        self.assertTrue(read_all(slow).startswith(b"HTTP/1.1 408"))
        self.assertLess(time.monotonic() - t0, 10)
        # An idle connection is closed.
        idle = connect()
        t0 = time.monotonic()
        self.assertEqual(read_all(idle), b"")
        self.assertLess(time.monotonic() - t0, 10)
        # A connection kept busy forever is closed at its total deadline.
        busy = connect()
        t0, last = time.monotonic(), b""
        while time.monotonic() - t0 < 20:
            try:
                busy.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                last = busy.recv(4096)
            except (OSError, ssl.SSLError):
                break
            if not last or b"Connection: close" in last:
                break
            time.sleep(0.2)
        self.assertTrue(not last or b"Connection: close" in last, last)
        self.assertLess(time.monotonic() - t0, 15)
        for s in (slow, idle, busy):
            s.close()


if __name__ == "__main__":
    main()

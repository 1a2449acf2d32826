#!/usr/bin/env python3
"""Malformed and hostile requests: each is answered with the fitting error, the connection
closes, and nothing reaches the backend. Also the request-head (slowloris) timeout."""
import socket
import time

from httptest import HttpTest, raw
from meshtest import within, SLOW, main

H = b"Host: api\r\n"
OK = b"GET / HTTP/1.1\r\n" + H

CASES = [
    # (name, bytes, expected status)
    ("CL with TE", OK + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE with CL", OK + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("two different CLs", OK + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("CL with a sign", OK + b"Content-Length: +5\r\n\r\nhello", 400),
    ("CL not a number", OK + b"Content-Length: abc\r\n\r\n", 400),
    ("CL too large", OK + b"Content-Length: 99999999999999999999999\r\n\r\n", 400),
    ("CL negative", OK + b"Content-Length: -1\r\n\r\n", 400),
    ("TE chunked twice", OK + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE unknown coding", OK + b"Transfer-Encoding: gzip\r\n\r\n", 501),
    ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400),
    ("obs-fold", OK + b"X-A: b\r\n c\r\n\r\n", 400),
    ("fold as the first header", b"GET / HTTP/1.1\r\n Host: api\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : api\r\n\r\n", 400),
    ("bad header name", OK + b"X@A: b\r\n\r\n", 400),
    ("empty header name", OK + b": b\r\n\r\n", 400),
    ("NUL in a value", OK + b"X-A: b\x00c\r\n\r\n", 400),
    ("DEL in a value", OK + b"X-A: b\x7fc\r\n\r\n", 400),
    ("bare CR in a value", OK + b"X-A: b\rc\r\n\r\n", 400),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: api\n\n", 400),
    ("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", OK + H + b"\r\n", 400),
    ("double space in the request line", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("space in the target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("control byte in the target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("bad method", b"G@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("HTTP/0.9 request line", b"GET /\r\n\r\n", 400),
    ("not HTTP", b"GET / HTTX/1.1\r\n" + H + b"\r\n", 400),
    ("HTTP/2.0 in a 1.1 request line", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("URI too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("head too large", OK + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
     + b"\r\n", 431),
    ("too many headers", OK + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    ("Expect other than 100-continue", OK + b"Expect: 200-ok\r\n\r\n", 417),
    ("bad chunk size", OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size overflow", OK + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 20 + b"\r\n",
     400),
    ("no CRLF after chunk data",
     OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    ("bad chunk extension", OK + b"Transfer-Encoding: chunked\r\n\r\n5;=\r\nhello\r\n0\r\n\r\n",
     400),
]


class MalformedTest(HttpTest):
    def test_malformed_requests_are_refused_and_never_forwarded(self):
        b = self.backend("b1")
        self.http_agent([b])
        self.assertGreaterEqual(len(CASES), 30)
        failures = []
        for name, data, want in CASES:
            for port in (self.port, self.shared_port):
                out = raw(port, data)
                status = int(out[9:12]) if out.startswith(b"HTTP/1.1 ") else None
                closes = b"connection: close" in out.lower()
                if status != want or not closes:
                    failures.append(f"{name} on :{port}: got {out[:80]!r}, want {want} and a "
                                    f"close")
        self.assertEqual(failures, [])
        time.sleep(0.2)
        self.assertEqual(b.requests, [], "a malformed request reached the backend")
        self.assertEqual(b.connections, 0)
        # The agent still works.
        self.assertEqual(self.client().echo("/")[0], 200)

    def test_request_head_timeout(self):
        b = self.backend("b1")
        self.http_agent([b], config={"proxy": {"workers": 2,
                                               "http": {"request_header_timeout": "500ms"}}})
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(5 * SLOW)
        t = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: api\r\nX-Slow: ")
        for _ in range(3):  # a byte now and then does not extend the deadline
            time.sleep(0.1)
            s.sendall(b"a")
        out = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            out += d
        s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 408"), out)
        within(self, t, 2, "the 408")
        self.assertEqual(b.requests, [])
        # An idle keep-alive connection is closed without a word.
        out = raw(self.port, b"", read_timeout=3)
        self.assertEqual(out, b"")


if __name__ == "__main__":
    main()

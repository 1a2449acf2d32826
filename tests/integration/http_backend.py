"""A real HTTP/1.1 test backend that can be told to fail, delay or echo.

Raw sockets and a thread per connection, so that every byte is ours: keep-alive, chunked
bodies both ways, 101 upgrades, bad responses and abrupt closes are all possible. The
request's query decides what happens (each may be combined):

  status=N      answer with status N
  fail=P        answer 503 with probability P percent
  delay=MS      wait before answering
  chunked=1     send the body chunked
  nolength=1    send the body without a length, then close
  close=1       close without answering
  bad=1         send an invalid response head
  size=N        a body of N bytes ('x') instead of the JSON echo

Without them it answers 200 with a JSON echo of the request: backend name, method, target,
headers (lower-cased names; repeated ones joined with ", "), body. A request with
"Upgrade: websocket" gets 101 and an echo of raw bytes. /health answers `health_status`.
"""
import json
import random
import socket
import time
import urllib.parse

from servers import ThreadedServer


class HttpBackend(ThreadedServer):
    def __init__(self, name, port=None, seed=1):
        super().__init__(port)
        self.name = name
        self.requests = []      # (method, target, headers, body)
        self.closed = 0
        self.health_status = 200
        self.default_query = {}  # applied when the request has no query of its own
        self.rng = random.Random(seed)

    @property
    def connections(self):
        return self.accepted

    def count(self):
        with self.lock:
            return len(self.requests)

    # ---- reading requests ----

    @staticmethod
    def _read_until(c, buf, marker):
        while marker not in buf:
            d = c.recv(65536)
            if not d:
                return None, buf
            buf += d
        i = buf.index(marker) + len(marker)
        return buf[:i], buf[i:]

    def _read_body(self, c, buf, headers):
        if "chunked" in headers.get("transfer-encoding", ""):
            body = b""
            while True:
                line, buf = self._read_until(c, buf, b"\r\n")
                if line is None:
                    return None, buf
                size = int(line.split(b";")[0].strip(), 16)
                while len(buf) < size + 2:
                    d = c.recv(65536)
                    if not d:
                        return None, buf
                    buf += d
                body += buf[:size]
                buf = buf[size + 2:]
                if size == 0:
                    return body, buf
        n = int(headers.get("content-length", "0"))
        while len(buf) < n:
            d = c.recv(65536)
            if not d:
                return None, buf
            buf += d
        return buf[:n], buf[n:]

    def _serve(self, c):
        buf = b""
        try:
            while True:
                head, buf = self._read_until(c, buf, b"\r\n\r\n")
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if not line:
                        continue
                    k, v = line.split(":", 1)
                    k = k.strip().lower()
                    headers[k] = headers[k] + ", " + v.strip() if k in headers else v.strip()
                body, buf = self._read_body(c, buf, headers)
                if body is None:
                    return
                with self.lock:
                    self.requests.append((method, target, headers, body))
                if not self._answer(c, method, target, version, headers, body):
                    return
                if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
                    return
        except (OSError, ValueError):
            return
        finally:
            with self.lock:
                self.closed += 1
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    # ---- answering ----

    def _answer(self, c, method, target, version, headers, body):
        url = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(url.query)) or dict(self.default_query)
        if "delay" in q:
            time.sleep(int(q["delay"]) / 1000)
        if q.get("close"):
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return False
        if q.get("bad"):
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
            return False
        if headers.get("upgrade", "").lower() == "websocket":
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\n\r\n")
            while True:
                d = c.recv(65536)
                if not d:
                    return False
                c.sendall(d)
        status = int(q.get("status", 200))
        if url.path == "/health":
            status = self.health_status
        with self.lock:
            failing = "fail" in q and self.rng.random() * 100 < float(q["fail"])
        if failing:
            status = 503
        if "size" in q:
            payload = b"x" * int(q["size"])
        else:
            payload = json.dumps({"backend": self.name, "method": method, "target": target,
                                  "headers": headers, "body": body.decode("latin-1")}).encode()
        no_body = method == "HEAD" or status in (204, 304)
        hdrs = [f"HTTP/1.1 {status} X", "Content-Type: application/json",
                f"X-Backend: {self.name}", "X-Drop-Me: yes", "Connection: keep-alive, x-drop-me"]
        if q.get("nolength"):
            hdrs[-1] = "Connection: close"
            c.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode() + payload)
            return False
        if q.get("chunked") and not no_body:
            hdrs.append("Transfer-Encoding: chunked")
            half = len(payload) // 2
            data = b""
            for part in (payload[:half], payload[half:]):
                if part:
                    data += b"%x\r\n" % len(part) + part + b"\r\n"
            data += b"0\r\n\r\n"
            c.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode() + data)
            return True
        if status in (204, 304):
            c.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode())
            return True
        hdrs.append(f"Content-Length: {len(payload)}")
        c.sendall(("\r\n".join(hdrs) + "\r\n\r\n").encode() + (b"" if no_body else payload))
        return True


def serve_forever(argv):
    """`python3 http_backend.py NAME PORT [key=value ...]`: an HttpBackend in a process of its
    own (a test can then SIGSTOP or kill -9 it); the key=value pairs are its default query.
    Prints "ready" once listening."""
    import sys
    name, port = argv[1], int(argv[2])
    b = HttpBackend(name, port=port)
    b.default_query = dict(kv.split("=", 1) for kv in argv[3:])
    b.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)


if __name__ == "__main__":
    import sys
    serve_forever(sys.argv)

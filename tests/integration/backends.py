"""Real TCP backends for the data-plane tests: servers in threads of the test process.

A Backend greets each connection with its name and a newline, then echoes what it gets.
Other modes: "stream" sends `stream_bytes` as fast as the peer takes them; "echo_then_bye"
echoes until the client half-closes, then sends "bye" and closes.
"""
import socket
import time

from servers import ThreadedServer


class Backend(ThreadedServer):
    backlog = 1024
    reset_on_stop = True  # stop() is a crashed backend

    def __init__(self, name, port=None, host="127.0.0.1", mode="greet_echo", stream_bytes=0):
        super().__init__(port, host)
        self.name = name
        self.mode = mode
        self.stream_bytes = stream_bytes

    def _serve(self, c):
        try:
            if self.mode == "stream":
                chunk = b"x" * 65536
                left = self.stream_bytes
                while left > 0:
                    c.sendall(chunk[:min(left, len(chunk))])
                    left -= len(chunk)
                return
            c.sendall(self.name.encode() + b"\n")
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            if self.mode == "echo_then_bye":
                c.sendall(b"bye")
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass


def greet(port, source=None, timeout=5.0, keep=False):
    """Connects through the agent and returns the backend's name (and the socket if keep).

    Returns None when the connection is closed before any greeting (a refusal)."""
    s = socket.socket()
    s.settimeout(timeout)
    if source:
        s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(100)
        if not chunk:
            s.close()
            return (None, None) if keep else None
        data += chunk
    name = data.decode().strip()
    if keep:
        return name, s
    s.close()
    return name


def echo_roundtrip(s, payload=b"ping\n"):
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got == payload


def wait_closed(s, timeout):
    """True when the peer closes s within timeout seconds."""
    s.settimeout(timeout)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except OSError:
        return True


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def now():
    return time.monotonic()

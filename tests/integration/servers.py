"""The socket plumbing the test backends share: a listener whose connections are served
each on its own thread, and a stop that closes them all (RST, or a clean shutdown)."""
import socket
import threading

from meshtest import free_port


class ThreadedServer:
    """Subclasses implement _serve(conn); `accepted` counts connections."""

    backlog = 512
    reset_on_stop = False  # True: close with RST, as a crashed process would

    def __init__(self, port=None, host="127.0.0.1"):
        self.host = host
        self.port = port or free_port()
        self.accepted = 0
        self.lock = threading.Lock()
        self.conns = set()
        self.sock = None
        self.thread = None

    def start(self):
        # An IPv6 host ("::") takes IPv4 too (IPV6_V6ONLY off, Linux's default).
        s = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(self.backlog)
        self.sock = s
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Closes the listener and every connection."""
        if self.sock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                if self.reset_on_stop:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
                else:
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        if self.thread:
            self.thread.join(timeout=5)

    def _accept_loop(self):
        sock = self.sock
        while True:
            try:
                c, _ = sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        raise NotImplementedError

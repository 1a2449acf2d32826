"""Shared pieces of the HTTP data-plane tests: an agent whose local service 'app' calls
'api' over HTTP (per-upstream port and the shared listener), real backends, a client."""
import http.client
import json
import socket

from http_backend import HttpBackend
from meshtest import SLOW, BackendTest, free_port, wait_for


class Client:
    """A keep-alive HTTP/1.1 client on one connection (http.client)."""

    def __init__(self, port, host="api"):
        self.port = port
        self.host = host
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)

    def request(self, method="GET", path="/", body=None, headers=None):
        """Returns (status, headers dict with lower-case names, body bytes)."""
        h = {"Host": self.host}
        h.update(headers or {})
        try:
            self.conn.request(method, path, body=body, headers=h)
            r = self.conn.getresponse()
            data = r.read()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()
            raise
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def echo(self, path="/", **kw):
        status, headers, body = self.request(path=path, **kw)
        return status, headers, (json.loads(body) if status == 200 and body else body)

    def close(self):
        self.conn.close()


def raw(port, data, read_timeout=5.0, shut=False):
    """Sends raw bytes, returns every byte answered until the agent closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(read_timeout * SLOW)
    s.sendall(data)
    if shut:
        s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except socket.timeout:
        pass
    s.close()
    return out


class HttpTest(BackendTest):
    backend_class = HttpBackend

    def services(self, backends, labels=None, extra=None):
        eps = []
        for i, b in enumerate(backends):
            e = {"address": "127.0.0.1", "port": b.port}
            if labels:
                e["labels"] = labels[i]
            eps.append(e)
        self.port = free_port()
        svc = {"app.json": {"service": {"name": "app", "port": free_port(), "upstreams": [
                   {"service": "api", "bind_port": self.port, "protocol": "http"}]}},
               "api.json": {"service": {"name": "api", "protocol": "http", "endpoints": eps}}}
        svc.update(extra or {})
        return svc

    def http_agent(self, backends, labels=None, route=None, policy=None, config=None,
                   extra=None):
        """Starts an agent proxying 'api' (the backends) on self.port; route/policy specs."""
        a = self.agent(config=config, services=self.services(backends, labels, extra))
        if route is not None:
            a.write_resource("route.json", {"kind": "Route", "name": "api", "spec": route})
        if policy is not None:
            a.write_resource("policy.json", {"kind": "DestinationPolicy", "name": "api",
                                             "spec": policy})
        a.start()
        self.shared_port = int(a.config["listeners"]["outbound_http"].rsplit(":", 1)[1])
        wait_for(lambda: self.listening(self.port), what="the HTTP listener")
        return a

    @staticmethod
    def listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def client(self, port=None, host="api"):
        return Client(port or self.port, host)

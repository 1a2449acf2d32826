#!/usr/bin/env python3
"""Listeners and readiness: READY=1 and /readyz wait until every listener is bound; a
listener that cannot bind where it moves to keeps serving where it was (and says so); a
reload that moves one onto a busy port fails and changes nothing; upstream listeners come
back from the last-known-good state when the service files are missing at start."""
import http.client
import shutil
import socket

from backends import Backend, greet
from meshtest import SLOW, BackendTest, free_port, main, wait_for


def busy_port():
    """A listening socket on a loopback port nobody else may take; (socket, port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", free_port()))
    s.listen()
    return s, s.getsockname()[1]


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class ListenerTest(BackendTest):
    backend_class = Backend

    def services(self, backend, bind_port):
        return {"app.json": self.app(bind_port),
                "api.json": {"service": {"name": "api", "endpoints": [
                    {"address": backend.host, "port": backend.port}]}}}

    def app(self, bind_port):
        return {"service": {"name": "app", "port": 9,
                            "upstreams": [{"service": "api", "bind_port": bind_port}]}}

    def failed(self, a, port):
        return [l for l in a.json("/v1/proxy")["listeners"]
                if l["address"] == f"127.0.0.1:{port}" and l["state"] == "failed"]

    def test_not_ready_while_a_listener_cannot_bind(self):
        b = self.backend("b0")
        blocker, port = busy_port()
        a = self.agent(services=self.services(b, port)).start(wait_ready=False)
        try:
            why = wait_for(lambda: a.get("/readyz")[2].decode() if
                           f"cannot listen on 127.0.0.1:{port}" in a.get("/readyz")[2].decode()
                           else None, what="/readyz naming the listener")
            self.assertIn("default/app -> default/api", why)
            self.assertIn("in use", why)
            self.assertEqual(a.get("/readyz")[0], 503)
            self.assertEqual(a.notify.count("READY", "1", window=0.5), 0, "READY=1 was sent")
            st = a.json("/v1/status")
            self.assertFalse(st["ready"])
            self.assertIn(f"cannot listen on 127.0.0.1:{port}", st["status"])
            self.assertIn(f"cannot listen on 127.0.0.1:{port}", a.notify.messages[-1]["STATUS"])
            self.assertEqual(a.metric("mesh_agent_ready"), 0)
            self.assertEqual(a.metric("mesh_proxy_listeners", state="failed"), 1)
        finally:
            blocker.close()
        a.wait_ready()  # the retry binds it
        self.assertEqual(greet(port), "b0")
        self.assertEqual(a.get("/readyz")[0], 200)
        self.assertEqual(a.metric("mesh_proxy_listeners", state="failed"), 0)

    def test_reload_onto_a_busy_port_fails_and_the_old_listener_serves(self):
        b = self.backend("b0")
        a = self.agent(services=self.services(b, free_port())).start()
        old = int(a.config["listeners"]["outbound_http"].rsplit(":", 1)[1])
        blocker, port = busy_port()
        try:
            a.config["listeners"]["outbound_http"] = f"127.0.0.1:{port}"
            a.write_config()
            _, ready = a.reload()
            self.assertIn("reload FAILED", ready["STATUS"])
            st = a.json("/v1/status")
            self.assertEqual(st["reload"]["last_result"], "failed")
            self.assertIn(f"cannot listen on 127.0.0.1:{port} for listeners.outbound_http",
                          st["reload"]["last_error"])
            self.assertEqual(a.metric("mesh_agent_config_last_reload_successful"), 0)
            self.assertEqual(a.get("/readyz")[0], 200)
            # The old shared listener still answers (a Host it does not know: 404 from it).
            c = http.client.HTTPConnection("127.0.0.1", old, timeout=5 * SLOW)
            c.request("GET", "/", headers={"Host": "nothing.example"})
            self.assertEqual(c.getresponse().status, 404)
            c.close()
            self.assertEqual(a.json("/v1/config")["listeners"]["outbound_http"],
                             f"127.0.0.1:{old}")
        finally:
            blocker.close()

    def test_upstream_moved_onto_a_busy_port_keeps_serving_where_it_was(self):
        b = self.backend("b0")
        first = free_port()
        a = self.agent(services=self.services(b, first)).start()
        self.assertEqual(greet(first), "b0")
        blocker, port = busy_port()
        try:
            a.write_service("app.json", self.app(port))
            wait_for(lambda: self.failed(a, port), what="the listener that cannot move")
            self.assertIn("in use", self.failed(a, port)[0]["error"])
            self.assertEqual(greet(first), "b0")  # still serving where it was
            self.assertEqual(a.get("/readyz")[0], 503)
            self.assertIn(f"cannot listen on 127.0.0.1:{port}", a.get("/readyz")[2].decode())
            self.assertEqual(a.metric("mesh_proxy_listeners", state="failed"), 1)
            self.assertIn(f"cannot move to 127.0.0.1:{port}", a.logs())
        finally:
            blocker.close()
        wait_for(lambda: listening(port) and greet(port) == "b0", timeout=15,
                 what="the listener on its new port once free")
        wait_for(lambda: not listening(first), what="the old port closed")
        wait_for(lambda: a.get("/readyz")[0] == 200, what="ready again")
        self.assertEqual(a.metric("mesh_proxy_listeners", state="failed"), 0)

    def test_upstream_listeners_come_back_from_the_last_known_good_state(self):
        b = self.backend("b0")
        port = free_port()
        a = self.agent(services=self.services(b, port),
                       config={"readiness": {"registry_sync_timeout": "1s"}}).start()
        self.assertEqual(greet(port), "b0")
        a.stop()
        # At the next start the service files are gone (a volume not mounted yet).
        shutil.rmtree(a.services_dir)
        a.start()
        self.assertIn("last-known-good", a.logs())
        self.assertEqual(greet(port), "b0")
        self.assertIn("default/api", a.services())
        local = a.json("/v1/local")["services"]
        self.assertEqual([(l["namespace"], l["name"]) for l in local], [("default", "app")])


if __name__ == "__main__":
    main()

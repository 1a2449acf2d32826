"""The TCP data plane against real backends: balancing, health, draining, limits, reloads."""
import json
import os
import signal
import socket
import threading
import time

from backends import Backend, echo_roundtrip, greet, rss_kb, wait_closed
from meshtest import SLOW, BackendTest, free_port, main, wait_for


def tcp_listeners(status):
    """The per-upstream and inbound listeners of /v1/proxy (not the shared HTTP one)."""
    return [l for l in status["listeners"] if l["kind"] != "outbound_http"]


class ProxyTest(BackendTest):
    backend_class = Backend

    def api_endpoints(self, backends, weights=None, zones=None, health=None):
        eps = []
        for i, b in enumerate(backends):
            e = {"address": b.host, "port": b.port}
            if weights:
                e["weight"] = weights[i]
            if zones:
                e["zone"] = zones[i]
            if health:
                e["health"] = health[i]
            eps.append(e)
        return {"service": {"name": "api", "endpoints": eps}}

    def proxied(self, backends, policy=None, weights=None, zones=None, config=None, inbound=None,
                zone="zone-a"):
        """An agent whose local service 'app' calls 'api' (the backends) on self.port."""
        self.port = free_port()
        app = {"name": "app", "port": inbound.port if inbound else free_port(),
               "upstreams": [{"service": "api", "bind_port": self.port}]}
        if inbound:
            self.inbound_port = free_port()
            app["inbound_port"] = self.inbound_port
            app["inbound_address"] = "127.0.0.1"
        a = self.agent(config=config, services={
            "app.json": {"service": app},
            "api.json": self.api_endpoints(backends, weights, zones)})
        a.config["node"]["zone"] = zone
        if policy is not None:
            a.write_resource("api.json", {"kind": "DestinationPolicy", "name": "api",
                                          "spec": policy})
        return a.start()

    def count(self, n, **kw):
        counts = {}
        for _ in range(n):
            name = greet(self.port, **kw)
            counts[name] = counts.get(name, 0) + 1
        return counts

    # ---- balancing ----

    def test_round_robin_weighted(self):
        b1, b2 = self.backend("b1"), self.backend("b2")
        self.proxied([b1, b2], weights=[3, 1])
        c = self.count(2000)
        self.assertNotIn(None, c)
        # Two workers each run a smooth round robin: 75 % +- 3 %.
        self.assertTrue(1440 <= c["b1"] <= 1560, c)

    def test_random(self):
        bs = [self.backend(f"b{i}") for i in range(3)]
        self.proxied(bs, policy={"load_balancer": "random"}, weights=[1, 1, 2])
        c = self.count(3000)
        self.assertTrue(1350 <= c["b2"] <= 1650, c)    # 50 % +- 5 %
        self.assertTrue(600 <= c["b0"] <= 900, c)      # 25 % +- 5 %

    def test_least_request_balances_open_connections(self):
        bs = [self.backend(f"b{i}") for i in range(3)]
        a = self.proxied(bs, policy={"load_balancer": "least_request"})
        # Ten waves of 300 connections held open together: 3,000 connections in all.
        for wave in range(10):
            held = [greet(self.port, keep=True) for _ in range(300)]
            c = {}
            for name, _ in held:
                c[name] = c.get(name, 0) + 1
            # Two choices on open connections keep the three within a few of each other.
            self.assertEqual(sum(c.values()), 300, c)
            for name in ("b0", "b1", "b2"):
                self.assertTrue(85 <= c.get(name, 0) <= 115, f"wave {wave}: {c}")
            self.assertEqual(a.metric("mesh_proxy_connections_active",
                                      destination="default/api"), 300)
            for _, s in held:
                s.close()
            wait_for(lambda: a.metric("mesh_proxy_connections_active",
                                      destination="default/api") == 0,
                     what="connections to close")

    def test_ring_hash_keeps_clients(self):
        bs = [self.backend(f"b{i}") for i in range(3)]
        self.proxied(bs, policy={"load_balancer": "ring_hash"})
        seen = {}
        for x in range(2, 62):  # 60 clients, 50 connections each: 3,000
            source = f"127.0.0.{x}"
            names = {greet(self.port, source=source) for _ in range(50)}
            self.assertEqual(len(names), 1, f"{source} moved between {names}")
            seen[source] = names.pop()
        spread = {}
        for name in seen.values():
            spread[name] = spread.get(name, 0) + 1
        self.assertEqual(len(spread), 3, spread)   # 60 clients over 3 endpoints

    def test_zone_aware_with_failover(self):
        local1, local2, remote = self.backend("a1"), self.backend("a2"), self.backend("b1")
        a = self.proxied([local1, local2, remote], zones=["zone-a", "zone-a", "zone-b"],
                         policy={"zone_aware": {"min_healthy_percent": 60},
                                 "health_check": {"interval": "100ms", "timeout": "50ms",
                                                  "unhealthy_threshold": 1}})
        c = self.count(200)
        self.assertEqual(set(c), {"a1", "a2"})  # the local zone only
        local1.stop()
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="default/api") == 2,
                 what="the check to mark a1 down")
        c = self.count(200)
        # One of two local endpoints healthy (50 % < 60 %): every zone takes traffic.
        self.assertEqual(set(c), {"a2", "b1"}, c)

    # ---- failures ----

    def test_killing_a_backend_under_load_loses_no_connection(self):
        bs = [self.backend(f"b{i}") for i in range(3)]
        a = self.proxied(bs, policy={"outlier_detection": {"consecutive_failures": 3,
                                                           "base_ejection_time": "30s"}})
        results = []
        for i in range(1500):
            if i == 300:
                bs[1].stop()
            results.append(greet(self.port))
        self.assertNotIn(None, results)  # connect retries moved every one of them
        after = results[300:]
        self.assertNotIn("b1", after)
        self.assertEqual(a.metric("mesh_proxy_ejections_total", destination="default/api"), 1)
        failures = a.metric("mesh_proxy_connect_failures_total", destination="default/api")
        # Once ejected, nobody tries b1 again: failures stop at the ejection threshold
        # (counted by each of the two workers at most).
        self.assertLessEqual(failures, 6)
        for _ in range(300):
            greet(self.port)
        self.assertEqual(a.metric("mesh_proxy_connect_failures_total", destination="default/api"),
                         failures)
        status = a.json("/v1/proxy")
        ep = [e for d in status["destinations"] if d["destination"] == "default/api"
              for e in d["endpoints"] if e["port"] == bs[1].port][0]
        self.assertFalse(ep["eligible"])
        self.assertGreater(ep["ejected_for_ms"], 0)

    def test_no_endpoint_is_a_clear_refusal(self):
        b = self.backend("b0")
        a = self.proxied([b])
        b.stop()
        self.assertIsNone(greet(self.port))
        self.assertEqual(a.metric("mesh_proxy_no_endpoint_total", destination="default/api"), 0)
        a.write_service("api.json", {"service": {"name": "api", "endpoints": [
            {"address": "127.0.0.1", "port": b.port, "health": "unhealthy"}]}})
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="default/api") == 0,
                 what="the endpoint to turn unhealthy")
        wait_for(lambda: greet(self.port) is None and
                 a.metric("mesh_proxy_no_endpoint_total", destination="default/api") >= 1,
                 what="a refusal counted as no endpoint")
        # Every endpoint draining (terminating, still serving): they take new connections
        # rather than none, as kube-proxy does when no endpoint is ready.
        b = self.backend("b0", port=b.port)
        a.write_service("api.json", {"service": {"name": "api", "endpoints": [
            {"address": "127.0.0.1", "port": b.port, "health": "draining"}]}})
        wait_for(lambda: greet(self.port) == "b0", what="the draining endpoint serving")

    def test_active_health_checks(self):
        b1, b2 = self.backend("b1"), self.backend("b2")
        a = self.proxied([b1, b2], policy={"health_check": {
            "interval": "100ms", "timeout": "50ms", "healthy_threshold": 2,
            "unhealthy_threshold": 2}})
        port2 = b2.port
        b2.stop()
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="default/api") == 1,
                 what="the check to mark b2 down")
        failures = a.metric("mesh_proxy_connect_failures_total", destination="default/api")
        c = self.count(100)
        self.assertEqual(c, {"b1": 100})
        self.assertEqual(a.metric("mesh_proxy_connect_failures_total", destination="default/api"),
                         failures)  # the checker kept clients off it
        b2 = Backend("b2", port=port2).start()
        self.backends.append(b2)
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="default/api") == 2,
                 what="b2 to pass its checks again")
        self.assertIn("b2", self.count(50))
        self.assertGreater(a.metric("mesh_proxy_health_checks_total"), 4)

    # ---- connections ----

    def test_half_close_is_propagated(self):
        b = self.backend("b0", mode="echo_then_bye")
        self.proxied([b])
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"abc")
        s.shutdown(socket.SHUT_WR)  # the backend sees EOF, yet can still answer
        data = b""
        while True:
            d = s.recv(1024)
            if not d:
                break
            data += d
        s.close()
        self.assertEqual(data, b"b0\nabcbye")

    def test_removed_endpoint_drains(self):
        b1, b2 = self.backend("b1"), self.backend("b2")
        a = self.proxied([b1, b2], policy={"drain_timeout": "1500ms"})
        held = []
        while len(held) < 4:
            name, s = greet(self.port, keep=True)
            held.append((name, s))
        b1_conns = [s for name, s in held if name == "b1"]
        self.assertTrue(b1_conns)
        a.write_service("api.json", self.api_endpoints([b2]))
        wait_for(lambda: len(a.services()["default/api"]["endpoints"]) == 1, what="b1's removal")
        time.sleep(0.3)
        for s in b1_conns:  # still serving while they drain
            self.assertTrue(echo_roundtrip(s))
        self.assertEqual(self.count(50), {"b2": 50})  # nothing new goes to b1
        for s in b1_conns:
            self.assertTrue(wait_closed(s, 3 * SLOW))
        for name, s in held:
            if name == "b2":
                self.assertTrue(echo_roundtrip(s))  # the others are untouched
            s.close()
        self.assertEqual(a.metric("mesh_proxy_drained_total", destination="default/api"),
                         len(b1_conns))

    def test_idle_timeout(self):
        b = self.backend("b0")
        a = self.proxied([b], policy={"idle_timeout": "300ms"})
        name, s = greet(self.port, keep=True)
        self.assertTrue(echo_roundtrip(s))
        t0 = time.monotonic()
        self.assertTrue(wait_closed(s, 3 * SLOW))
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(a.metric("mesh_proxy_idle_timeouts_total", destination="default/api"), 1)

    def test_connection_cap(self):
        b = self.backend("b0")
        a = self.proxied([b], config={"proxy": {"workers": 2, "max_connections": 4}})
        held = [greet(self.port, keep=True)[1] for _ in range(4)]
        self.assertIsNone(greet(self.port))  # refused: closed at once
        self.assertEqual(a.metric("mesh_proxy_refused_total"), 1)
        wait_for(lambda: "proxy.max_connections (4) are open" in a.logs(), what="a warning")
        held.pop().close()
        wait_for(lambda: greet(self.port) is not None, what="room again")
        for s in held:
            s.close()

    def test_circuit_breaker(self):
        b = self.backend("b0")
        a = self.proxied([b], policy={"max_connections": 2})
        held = [greet(self.port, keep=True)[1] for _ in range(2)]
        self.assertIsNone(greet(self.port))
        self.assertEqual(a.metric("mesh_proxy_circuit_breaker_refusals_total",
                                  destination="default/api"), 1)
        wait_for(lambda: "(circuit breaker)" in a.logs(), what="a warning")
        for s in held:
            s.close()

    def test_slow_reader_keeps_memory_bounded(self):
        b = self.backend("big", mode="stream", stream_bytes=512 * 1024 * 1024)
        a = self.proxied([b])
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        base = rss_kb(a.proc.pid)
        got = 0
        deadline = time.monotonic() + 3
        peak = base
        while time.monotonic() < deadline:
            data = s.recv(16384)
            if not data:
                break
            got += len(data)
            time.sleep(0.002)  # a slow reader: about 8 MB/s against a fast writer
            peak = max(peak, rss_kb(a.proc.pid))
        s.close()
        self.assertGreater(got, 1024 * 1024,
                           f"the stream ended after {got} bytes; agent log:\n{a.logs()}")
        # Reading stops at the high-water mark: a few buffers, not the backend's 512 MB.
        self.assertLess(peak - base, 8 * 1024, f"RSS grew from {base} to {peak} kB")

    def test_sighup_under_load_drops_nothing(self):
        bs = [self.backend(f"b{i}") for i in range(2)]
        a = self.proxied(bs)
        failures, done, count = [], threading.Event(), [0]

        def load():
            while not done.is_set():
                try:
                    name, s = greet(self.port, keep=True)
                    if name is None or not echo_roundtrip(s):
                        failures.append(name)
                    s.close()
                    count[0] += 1
                except OSError as e:
                    failures.append(str(e))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            # A long-lived connection must survive every reload too.
            name, long_lived = greet(self.port, keep=True)
            for i in range(5):
                time.sleep(0.2)
                a.config["log"] = {"level": "debug" if i % 2 else "info"}
                a.write_config()
                a.reload()
                self.assertTrue(echo_roundtrip(long_lived))
            time.sleep(0.2)
        finally:  # a failure must not leave the load running (the process would never end)
            done.set()
            for t in threads:
                t.join()
        long_lived.close()
        self.assertEqual(failures, [])
        self.assertGreater(count[0], 100)

    def test_registry_change_on_reload_keeps_listeners(self):
        # The registry is replaced (its config changed): its services' listeners stay up.
        bs = [self.backend(f"b{i}") for i in range(2)]
        a = self.proxied(bs)
        failures, done = [], threading.Event()

        def load():
            while not done.is_set():
                try:
                    if greet(self.port) is None:
                        failures.append("refused")
                except OSError as e:
                    failures.append(str(e))

        t = threading.Thread(target=load)
        t.start()
        for interval in ("7s", "8s", "9s"):
            time.sleep(0.15)
            a.config["registries"][0]["poll_interval"] = interval
            a.write_config()
            a.reload()
        time.sleep(0.3)
        done.set()
        t.join()
        self.assertEqual(failures, [])
        self.assertEqual(a.json("/v1/status")["reload"]["succeeded"], 3)

    # ---- listeners ----

    def test_inbound_forwards_to_the_workload(self):
        workload = self.backend("workload")
        b = self.backend("b0")
        a = self.proxied([b], inbound=workload)
        self.assertEqual(greet(self.inbound_port), "workload")
        # The catalog publishes the inbound port as the local service's endpoint.
        ep = a.services()["default/app"]["endpoints"][0]
        self.assertEqual(ep["port"], self.inbound_port)

    def test_listener_that_cannot_bind_is_reported_and_retried(self):
        b = self.backend("b0")
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        self.port = blocker.getsockname()[1]
        a = self.agent(services={
            "app.json": {"service": {"name": "app", "port": free_port(),
                                     "upstreams": [{"service": "api", "bind_port": self.port}]}},
            "api.json": self.api_endpoints([b])}).start(wait_ready=False)
        # Not ready while it cannot bind (test_listeners.py); reported all the same.
        st = wait_for(lambda: tcp_listeners(a.json("/v1/proxy")) and a.json("/v1/proxy"),
                      what="the listener in the status")
        self.assertEqual(tcp_listeners(st)[0]["state"], "failed")
        self.assertIn("in use", tcp_listeners(st)[0]["error"])
        self.assertEqual(a.metric("mesh_proxy_listeners", state="failed"), 1)
        self.assertIn(f"cannot listen on 127.0.0.1:{self.port}", a.logs())
        blocker.close()
        a.wait_ready()
        wait_for(lambda: tcp_listeners(a.json("/v1/proxy"))[0]["state"] == "listening",
                 timeout=10, what="the retry to bind")
        self.assertEqual(greet(self.port), "b0")

    def test_status_and_policy_changes(self):
        bs = [self.backend(f"b{i}") for i in range(2)]
        a = self.proxied(bs)
        st = a.json("/v1/proxy")
        self.assertEqual(st["workers"], 2)
        self.assertEqual(tcp_listeners(st)[0]["description"], "default/app -> default/api")
        d = [d for d in st["destinations"] if d["destination"] == "default/api"][0]
        self.assertEqual(d["load_balancer"], "round_robin")
        a.write_resource("api.json", {"kind": "DestinationPolicy", "name": "api",
                                      "spec": {"load_balancer": "ring_hash"}})
        wait_for(lambda: [d for d in a.json("/v1/proxy")["destinations"]
                          if d["destination"] == "default/api"][0]["load_balancer"] == "ring_hash",
                 what="the new policy")
        # A broken policy file keeps the last good one.
        a.write_resource("api.json", '{"kind": "DestinationPolicy", "name": "api", "spec": '
                                     '{"load_balancer": "fastest"}}')
        wait_for(lambda: "fastest" in a.logs(), what="the error")
        self.assertIn('$.spec.load_balancer: expected one of "round_robin"', a.logs())
        self.assertEqual([d for d in a.json("/v1/proxy")["destinations"]
                          if d["destination"] == "default/api"][0]["load_balancer"], "ring_hash")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""HTTP resilience against backends that fail the way processes do (issue 13): one stopped
with SIGSTOP (a black hole: connects and writes succeed, nothing answers), one killed with
-9 under load, one restarting while the other is ejected. Backends run in processes of their
own so that they can be stopped and killed. Assertions are on counts and outcomes, never on
how fast a loaded machine is."""
import os
import signal
import subprocess
import sys
import threading
import time

from http_backend import HttpBackend
from httptest import Client, HttpTest
from meshtest import SLOW, free_port, main, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
PER_TRY_S = 5.0  # DestinationPolicy per_try_timeout's default


class ProcBackend:
    """An HttpBackend in a child process; stop() ends it whatever state it is in."""

    def __init__(self, name, **query):
        self.name = name
        self.port = free_port()
        args = [sys.executable, os.path.join(HERE, "http_backend.py"), name, str(self.port)]
        args += [f"{k}={v}" for k, v in query.items()]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=HERE)
        if self.proc.stdout.readline().strip() != b"ready":
            raise AssertionError(f"backend {name} did not start")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


class Load:
    """n clients on keep-alive connections, each sending GETs in a loop until stopped;
    records (start, seconds, status or error) of every request."""

    def __init__(self, port, n, path="/"):
        self.port, self.path = port, path
        self.results = []
        self.lock = threading.Lock()
        self.running = True
        self.threads = [threading.Thread(target=self._run) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self):
        c = Client(self.port)
        while self.running:
            t0 = time.monotonic()
            try:
                status = c.request(path=self.path)[0]
            except Exception as e:  # a failure of any kind is a lost request
                status = repr(e)
                c = Client(self.port)
            with self.lock:
                self.results.append((t0, time.monotonic() - t0, status))
        c.close()

    def count(self, since=0.0):
        with self.lock:
            return sum(1 for t0, _, _ in self.results if t0 >= since)

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join()
        return self.results


class ResilienceTest(HttpTest):
    def proc_backend(self, name, **query):
        b = ProcBackend(name, **query)
        self.backends.append(b)
        return b

    def black_hole(self, lb):
        """16 clients; one of two backends is SIGSTOPped. Every request must still succeed,
        and only the few that were already on their way to it (or raced its ejection) may
        wait for the per-try timeout: the traffic as a whole keeps flowing."""
        good, stuck = self.proc_backend("good"), self.proc_backend("stuck")
        a = self.http_agent([good, stuck], policy={"load_balancer": lb})
        load = Load(self.port, 16)
        wait_for(lambda: load.count() >= 200, timeout=30, what="the load running")
        stuck.signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        # Not all stuck: a thousand requests complete while it stays stopped. Before the fix
        # every client sat on the stopped backend until the route's 15 s timeout.
        try:
            wait_for(lambda: load.count(since=t_stop) >= 1000 and
                     time.monotonic() - t_stop > PER_TRY_S * 1.5, timeout=60,
                     what="traffic flowing around the stopped backend")
        finally:
            stuck.signal(signal.SIGCONT)
            results = load.stop()
        during = [r for r in results if r[0] >= t_stop - 1]
        errors = [r[2] for r in results if r[2] != 200]
        delayed = [r for r in during if r[1] >= PER_TRY_S * 0.9]
        print(f"{lb}: {len(during)} requests while stopped, {len(delayed)} waited for the "
              f"per-try timeout, errors: {errors[:5]}")
        self.assertEqual(errors, [])
        # At most one per client (those sent before its ejection), not a stall of each.
        self.assertLessEqual(len(delayed), 16)
        self.assertGreaterEqual(len(during), 1000)
        ejected = a.metric("mesh_proxy_ejections_total", destination="default/api")
        self.assertGreaterEqual(ejected, 1)  # the per-try timeouts counted against it
        self.assertGreater(a.metric("mesh_http_timeouts_total", destination="default/api"), 0)
        return len(delayed)

    def test_black_hole_round_robin(self):
        self.black_hole("round_robin")

    def test_black_hole_least_request(self):
        self.black_hole("least_request")

    def test_kill_9_under_load_loses_no_idempotent_request(self):
        """Two backends taking 20 ms a request, 16 clients: about 8 requests are on each
        backend at any moment. kill -9 of one resets all of its requests at once; each must
        be retried on the other (the budget may not stop them)."""
        b1, b2 = self.proc_backend("b1", delay="20"), self.proc_backend("b2", delay="20")
        a = self.http_agent([b1, b2])
        load = Load(self.port, 16)
        wait_for(lambda: load.count() >= 300, timeout=30, what="the load running")
        b2.signal(signal.SIGKILL)
        t_kill = time.monotonic()
        try:
            wait_for(lambda: load.count(since=t_kill) >= 300, timeout=60,
                     what="load after the kill")
        finally:
            results = load.stop()
        errors = [r[2] for r in results if r[2] != 200]
        retries = a.metric("mesh_http_retries_total", destination="default/api")
        print(f"{len(results)} requests, {retries} retries, errors: {errors[:5]}")
        self.assertEqual(errors, [])
        self.assertGreater(retries, 0)  # it really did fail some

    def test_retry_leaves_the_failed_endpoint_for_another_zone(self):
        """Zone-aware: the only endpoint in this node's zone resets every request. Its retry
        must go to the other zone's endpoint, never to the one that just failed."""
        local, remote = self.backend("local"), self.backend("remote")
        local.default_query = {"close": "1"}
        svc = self.services([local, remote])
        svc["api.json"]["service"]["endpoints"][0]["zone"] = "zone-a"
        svc["api.json"]["service"]["endpoints"][1]["zone"] = "zone-b"
        a = self.agent(services=svc)
        a.write_resource("policy.json", {"kind": "DestinationPolicy", "name": "api", "spec": {
            "outlier_detection": {"enabled": False}}})
        a.start()
        wait_for(lambda: self.listening(self.port), what="the HTTP listener")
        c = self.client()
        for i in range(10):
            status, _, echo = c.echo("/")
            self.assertEqual(status, 200, echo)
            self.assertEqual(echo["backend"], "remote")
        c.close()
        self.assertEqual(local.count(), 10)  # once each, never retried there

    def test_retry_falls_back_to_an_ejected_endpoint(self):
        """Of two endpoints, one was ejected (and is fine again) while the other now resets
        every request: retries go to the ejected one rather than back to the failing one."""
        x, y = self.backend("x"), self.backend("y")
        y.default_query = {"status": "500"}
        a = self.http_agent([x, y], policy={
            "outlier_detection": {"consecutive_5xx": 1, "base_ejection_time": "1h"}})
        c = self.client()
        wait_for(lambda: c.request()[0] == 200 and
                 a.metric("mesh_proxy_endpoints_ejected", destination="default/api") == 1,
                 what="y ejected")
        y.default_query = {}
        x.default_query = {"close": "1"}
        before = x.count()
        for _ in range(5):
            status, _, echo = c.echo("/")
            self.assertEqual(status, 200, echo)
            self.assertEqual(echo["backend"], "y")
        c.close()
        self.assertEqual(x.count() - before, 5)  # one try each on x, then y


if __name__ == "__main__":
    main()

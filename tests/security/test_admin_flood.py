#!/usr/bin/env python3
"""Attacks on the agent's admin port (issue #13): 64 idle connections used to lock out
/healthz and /readyz for 60 s, renewably, so kubelet or systemd would restart a healthy
agent. Health endpoints must answer while the port is flooded with idle, slow and
endless connections."""
import socket
import threading
import time

from meshtest import AgentTest, main


class AdminFloodTest(AgentTest):
    def setUp(self):
        super().setUp()
        self.a = self.agent().start()

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.a.admin_port), timeout=5)

    def probe(self, path):
        """One request on a new connection; the status, or the error."""
        try:
            return self.a.get(path)[0]
        except OSError as e:
            return repr(e)

    def test_idle_connections_do_not_lock_out_health(self):
        idle = [self.connect() for _ in range(200)]  # more than the admin port's slots
        try:
            for path in ("/healthz", "/readyz", "/healthz", "/metrics"):
                self.assertEqual(self.probe(path), 200, path)
        finally:
            for s in idle:
                s.close()
        self.assertGreater(self.a.metric("mesh_admin_connections_evicted_total"), 0)

    def test_health_answers_under_a_renewing_flood(self):
        stop = threading.Event()
        opened = [0]

        def flood(slow):
            # New connections all along, none closed: each one the server accepts would
            # hold a slot until its deadline.
            held = []
            while not stop.is_set():
                if len(held) < 1500:
                    try:
                        s = self.connect()
                        if slow:  # a head that never ends, a byte now and then
                            s.sendall(b"GET /metrics HTTP/1.1\r\nX: ")
                        held.append(s)
                        opened[0] += 1
                    except OSError:
                        pass
                for s in held[-50::10] if slow else []:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass
                # About 50 a second each: far more than it takes to hold every slot (they
                # were held for 60 s), and a probe is never the oldest one waiting even if
                # the machine stalls it between its connect and its request.
                time.sleep(0.02)
            for s in held:
                s.close()

        threads = [threading.Thread(target=flood, args=(slow,)) for slow in (False, True)]
        for t in threads:
            t.start()
        try:
            while opened[0] < 150:
                time.sleep(0.05)
            failures = []
            for i in range(40):
                for path in ("/healthz", "/readyz"):
                    status = self.probe(path)
                    if status != 200:
                        failures.append((i, path, status))
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(failures, [], f"with {opened[0]} flood connections opened")


if __name__ == "__main__":
    main()

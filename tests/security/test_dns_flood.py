#!/usr/bin/env python3
"""Attacks on the agent's DNS responder (docs/dns.md): whatever a local client sends, mesh
names keep answering, memory stays bounded and the agent keeps running.

- a flood of random datagrams mixed with queries;
- more TCP connections than allowed, idle ones, and one that sends queries without ever
  reading the answers;
- a flood of forwarded queries at a silent upstream: past max_forwarded they get SERVFAIL
  at once instead of piling up."""
import os
import random
import socket
import struct
import threading
import time

from meshtest import AgentTest, free_port, main, wait_for


def query(name, qtype=1, qid=0x1234):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def rcode(reply):
    return struct.unpack("!H", reply[2:4])[0] & 0xF


class DnsFloodTest(AgentTest):
    def start(self, **extra):
        self.port = free_port()
        # An upstream that never answers: a bound UDP socket nobody reads.
        self.silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.silent.bind(("127.0.0.1", 0))
        self.addCleanup(self.silent.close)
        cfg = {"enabled": True, "listen": f"127.0.0.1:{self.port}",
               "upstreams": ["127.0.0.1:%d" % self.silent.getsockname()[1]],
               "upstream_timeout": "500ms"}
        cfg.update(extra)
        self.a = self.agent(config={"dns_responder": cfg}, services={"api.json": {"service": {
            "name": "api", "namespace": "shop",
            "endpoints": [{"address": "127.0.0.1", "port": 9}]}}})
        self.a.start()

    def ask(self, name="api.shop", qtype=1, timeout=5.0):
        """One UDP query; the reply, or None."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            qid = random.randrange(65536)
            s.sendto(query(name, qtype, qid), ("127.0.0.1", self.port))
            try:
                while True:
                    r = s.recv(65535)
                    if r[:2] == struct.pack("!H", qid):
                        return r
            except socket.timeout:
                return None

    def rss_kb(self):
        with open(f"/proc/{self.a.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def assert_answers(self):
        r = self.ask()
        self.assertIsNotNone(r, "no answer for a mesh name")
        self.assertEqual(rcode(r), 0)
        self.assertEqual(struct.unpack("!H", r[6:8])[0], 1)

    def test_datagram_flood(self):
        self.start()
        rng = random.Random(16)
        stop = threading.Event()

        def flood():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                valid = query("api.shop")
                while not stop.is_set():
                    for _ in range(200):
                        kind = rng.randrange(4)
                        if kind == 0:
                            msg = os.urandom(rng.randrange(0, 600))
                        elif kind == 1:  # a valid query with bytes flipped
                            b = bytearray(valid)
                            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                            msg = bytes(b)
                        elif kind == 2:  # a query cut short
                            msg = valid[:rng.randrange(len(valid))]
                        else:
                            msg = valid
                        try:
                            s.sendto(msg, ("127.0.0.1", self.port))
                        except OSError:
                            pass
                    time.sleep(0.001)

        threads = [threading.Thread(target=flood) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            rss0 = self.rss_kb()
            # A client that asks again, as resolvers do: a datagram the full socket buffer
            # dropped is no fault, a responder that never gets to answer is.
            answered = 0
            for _ in range(40):
                if self.ask(timeout=0.5) is not None:
                    answered += 1
                    if answered == 3:
                        break
            self.assertGreater(answered, 0, "mesh names went unanswered under the flood")
            self.assertLess(self.rss_kb() - rss0, 32 * 1024, "memory grew under the flood")
        finally:
            stop.set()
            for t in threads:
                t.join()
        # The socket buffer may still be full of the flood: ask again as resolvers do.
        wait_for(lambda: self.ask(timeout=1.0), timeout=30, what="an answer after the flood")
        self.assert_answers()
        self.assertGreater(self.a.metric("mesh_dns_responder_queries_total", kind="malformed"),
                           100)
        self.assertIsNone(self.a.proc.poll())

    def test_tcp_connections_limited_and_idle_ones_closed(self):
        self.start(max_tcp_connections=8, tcp_idle_timeout="500ms")
        held = [socket.create_connection(("127.0.0.1", self.port), timeout=5)
                for _ in range(40)]
        try:
            wait_for(lambda: (self.a.metric("mesh_dns_responder_tcp_refused_total") or 0) >= 32,
                     what="connections past the limit closed")
            self.assert_answers()
            # The admitted ones, idle, are closed after the idle timeout (500 ms).
            wait_for(lambda: self.a.metric("mesh_dns_responder_tcp_connections") == 0,
                     timeout=10, what="idle connections closed")
            for s in held[:8]:
                self.assertEqual(s.recv(1), b"")
        finally:
            for s in held:
                s.close()
        # A new connection is served again.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
            q = query("api.shop", qid=5)
            c.sendall(struct.pack("!H", len(q)) + q)
            n = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
            self.assertEqual(c.recv(n, socket.MSG_WAITALL)[:2], b"\x00\x05")

    def test_client_that_never_reads(self):
        self.start()
        c = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        q = query("api.shop", 255)
        batch = (struct.pack("!H", len(q)) + q) * 1000
        rss0 = self.rss_kb()
        closed = False
        t0 = time.monotonic()
        try:
            # Answers (twice the size of the queries) pile up until the agent gives up.
            while time.monotonic() - t0 < 30:
                c.sendall(batch)
        except OSError:
            closed = True  # reset: the agent closed it
        finally:
            c.close()
        self.assertTrue(closed, "the agent kept a client that never reads")
        self.assertLess(self.rss_kb() - rss0, 32 * 1024)
        self.assert_answers()

    def test_forwarded_flood_against_a_silent_upstream(self):
        self.start(max_forwarded=8)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            for i in range(100):
                s.sendto(query(f"n{i}.example.test", qid=i), ("127.0.0.1", self.port))
            # The first 8 wait for the silent upstream; the 92 past the limit get SERVFAIL at
            # once, so all of theirs come first; the 8 fail when the upstream's tries run out.
            order = []
            for _ in range(100):
                r = s.recv(512)
                self.assertEqual(rcode(r), 2)
                order.append(struct.unpack("!H", r[:2])[0])
            self.assertEqual(sorted(order[:92]), list(range(8, 100)))
            self.assertEqual(sorted(order[92:]), list(range(8)))
        self.assert_answers()
        self.assertEqual(self.a.metric("mesh_dns_responder_queries_total", kind="failed"), 100)


if __name__ == "__main__":
    main()

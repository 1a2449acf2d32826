#!/usr/bin/env python3
"""Slow DNS-over-TCP clients (slowloris) against the agent's responder (docs/dns.md, "TCP";
RFC 7766 6.2.3): every connection slot held by clients that trickle a message one byte at a
time must not lock out a legitimate client, and bytes that never make a whole message must
not keep a connection open.

- 64 connections (the limit) each trickle a message's bytes; a new client is still
  answered: the oldest idle connection is closed to make room for it;
- the trickling connections are closed by the idle timeout: only whole messages restart
  it, not single bytes."""
import socket
import struct
import threading

from meshtest import AgentTest, free_port, main, wait_for


def query(name, qtype=1, qid=0x1234):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


class DnsSlowlorisTest(AgentTest):
    def start(self, **extra):
        self.port = free_port()
        cfg = {"enabled": True, "listen": f"127.0.0.1:{self.port}",
               "upstreams": ["127.0.0.1:9"]}
        cfg.update(extra)
        self.a = self.agent(config={"dns_responder": cfg}, services={"api.json": {"service": {
            "name": "api", "namespace": "shop",
            "endpoints": [{"address": "127.0.0.1", "port": 9}]}}})
        self.a.start()

    def slow_clients(self, n):
        """n connections that each announce a 64-byte message and then trickle it, one byte
        every 0.5 s, until stopped or closed by the agent."""
        conns = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            c.sendall(b"\x00\x40")
            conns.append(c)
        wait_for(lambda: self.a.metric("mesh_dns_responder_tcp_connections") == n,
                 what=f"{n} slow connections admitted")
        stop = threading.Event()

        def trickle():
            while not stop.wait(0.5):
                for c in conns:
                    try:
                        c.send(b"\x00")
                    except OSError:
                        pass

        t = threading.Thread(target=trickle)
        t.start()

        def done():
            stop.set()
            t.join()
            for c in conns:
                c.close()
        self.addCleanup(done)
        return conns

    def ask_tcp(self, qid):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
            q = query("api.shop", qid=qid)
            c.sendall(struct.pack("!H", len(q)) + q)
            head = c.recv(2, socket.MSG_WAITALL)
            self.assertEqual(len(head), 2, "the connection was closed without an answer")
            n = struct.unpack("!H", head)[0]
            r = c.recv(n, socket.MSG_WAITALL)
            self.assertEqual(r[:2], struct.pack("!H", qid))
            self.assertEqual(struct.unpack("!H", r[6:8])[0], 1)

    def test_legitimate_client_answered_while_slots_are_held(self):
        self.start(max_tcp_connections=64, tcp_idle_timeout="60s")
        self.slow_clients(64)
        for i in range(3):
            self.ask_tcp(100 + i)
        self.assertIsNone(self.a.proc.poll())

    def test_trickled_bytes_do_not_keep_a_connection(self):
        # The message would be whole after 32 s; the idle timeout (2 s) closes them first.
        self.start(max_tcp_connections=64, tcp_idle_timeout="2s")
        self.slow_clients(16)
        wait_for(lambda: self.a.metric("mesh_dns_responder_tcp_connections") == 0,
                 timeout=20, what="trickling connections closed by the idle timeout")
        self.ask_tcp(7)


if __name__ == "__main__":
    main()

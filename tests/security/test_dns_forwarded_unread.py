#!/usr/bin/env python3
"""A DNS-over-TCP client that sends forwarded queries with big answers and never reads them
(docs/dns.md, "Limits"): when its unwritten answers pass the limit the agent closes the
connection, while an upstream answer for that same connection is being handled. The agent
must free each of the connection's queries once (no use after free, no double free: run
under ASan in build-asan), keep its count of queries in flight right, and keep answering."""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

from fake_dns import FakeDns  # noqa: E402
from meshtest import AgentTest, free_port, main, wait_for  # noqa: E402


def query(name, qtype=1, qid=0x1234):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def rcode(reply):
    return struct.unpack("!H", reply[2:4])[0] & 0xF


class DnsForwardedUnreadTest(AgentTest):
    def test_client_that_never_reads_forwarded_answers(self):
        up = FakeDns().start()
        self.addCleanup(up.stop)
        up.set_txt("big.example.test", ["x" * 250] * 240)  # ~60 KB answer over TCP
        up.set("small.example.test", ["192.0.2.7"])
        port = free_port()
        a = self.agent(config={"dns_responder": {
            "enabled": True, "listen": f"127.0.0.1:{port}", "upstreams": [up.server],
            "upstream_timeout": "2s"}})
        a.start()
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", port))
        q = query("big.example.test", 16, 7)
        closed = False
        deadline = time.monotonic() + 60
        try:
            # Two forwarded queries at a time: the second answer finds the first unwritten.
            while time.monotonic() < deadline and a.proc.poll() is None:
                c.sendall((struct.pack("!H", len(q)) + q) * 2)
                if (a.metric("mesh_dns_responder_queries_total", kind="forwarded") or 0) >= 12:
                    break
                time.sleep(0.2)
            # The agent closes the connection that never reads.
            c.settimeout(0.2)
            while time.monotonic() < deadline and a.proc.poll() is None and not closed:
                try:
                    c.sendall((struct.pack("!H", len(q)) + q) * 2)
                    time.sleep(0.2)
                except OSError:
                    closed = True
        except OSError:
            closed = True
        finally:
            c.close()
        self.assertIsNone(a.proc.poll(), "the agent died:\n" + a.logs()[-3000:])
        self.assertTrue(closed, "the agent kept a client that never reads")
        # Each query was counted out once: none is left in flight, the count is not negative.
        wait_for(lambda: a.metric("mesh_dns_responder_forwarded_inflight") == 0,
                 what="no forwarded query left in flight")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            s.sendto(query("small.example.test", 1, 99), ("127.0.0.1", port))
            r = s.recv(512)
            self.assertEqual(r[:2], b"\x00\x63")
            self.assertEqual(rcode(r), 0)
        self.assertIsNone(a.proc.poll())
        self.assertNotIn("AddressSanitizer", a.logs())


if __name__ == "__main__":
    main()

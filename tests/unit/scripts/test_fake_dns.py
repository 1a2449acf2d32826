"""tests/fakes/fake_dns.py answers as RFC 1035, 2308, 3596 and 6891 say, also where c-ares
(which the integration tests run against it) never looks: malformed queries, other opcodes,
EDNS versions, negative answers with their SOA."""
import os
import socket
import struct
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "fakes"))

from fake_dns import FakeDns  # noqa: E402


def query(name, qtype=1, qid=0x1234, flags=0x0100, opt_version=None, extra=b""):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    ar = 0 if opt_version is None else 1
    msg = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, ar) + labels + struct.pack("!HH", qtype, 1)
    if opt_version is not None:
        msg += b"\0" + struct.pack("!HHIH", 41, 1232, opt_version << 16, 0)
    return msg + extra


def header(reply):
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    return {"id": qid, "qr": flags >> 15, "aa": (flags >> 10) & 1, "rd": (flags >> 8) & 1,
            "rcode": flags & 0xF, "qd": qd, "an": an, "ns": ns, "ar": ar}


class FakeDnsTest(unittest.TestCase):
    def setUp(self):
        self.dns = FakeDns()
        self.dns.set("api.svc.test", ["127.0.0.2", "127.0.0.3", "::1"], ttl=7)

    def test_answers_a_and_aaaa_with_the_ttl(self):
        q = query("API.svc.test")
        r = self.dns.answer(q)
        h = header(r)
        self.assertEqual((h["id"], h["qr"], h["aa"], h["rd"], h["rcode"]), (0x1234, 1, 1, 1, 0))
        self.assertEqual((h["qd"], h["an"], h["ns"], h["ar"]), (1, 2, 0, 0))
        self.assertEqual(r[12:len(q)], q[12:])  # the question, as asked
        rr = r[len(q):]
        name, rtype, rclass, ttl, rdlen = struct.unpack("!HHHIH", rr[:12])
        self.assertEqual((name, rtype, rclass, ttl, rdlen), (0xC00C, 1, 1, 7, 4))
        self.assertEqual(socket.inet_ntoa(rr[12:16]), "127.0.0.2")
        h6 = header(self.dns.answer(query("api.svc.test", qtype=28)))
        self.assertEqual(h6["an"], 1)

    def test_negative_answers_carry_the_soa(self):
        for name, qtype, rcode in (("gone.svc.test", 1, 3), ("api.svc.test", 15, 0)):
            h = header(self.dns.answer(query(name, qtype)))
            self.assertEqual((h["rcode"], h["an"], h["ns"]), (rcode, 0, 1), name)

    def test_malformed_and_unsupported_queries(self):
        self.assertIsNone(self.dns.answer(b"\0" * 11))          # no header: nothing to say
        self.assertIsNone(self.dns.answer(query("a.test", flags=0x8000)))  # a response
        self.assertEqual(header(self.dns.answer(query("a.test", extra=b"x")))["rcode"], 1)
        compressed = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c" + b"\0\x01\0\x01"
        self.assertEqual(header(self.dns.answer(compressed))["rcode"], 1)
        two = struct.pack("!HHHHHH", 1, 0, 2, 0, 0, 0) + query("a.test")[12:] * 2
        self.assertEqual(header(self.dns.answer(two))["rcode"], 1)
        self.assertEqual(header(self.dns.answer(query("a.test", flags=0x1000)))["rcode"], 4)

    def test_edns(self):
        r = self.dns.answer(query("api.svc.test", opt_version=0))
        self.assertEqual(header(r)["ar"], 1)
        self.assertEqual(r[-11:-8], b"\0\0\x29")  # root owner, type OPT
        bad = self.dns.answer(query("api.svc.test", opt_version=1))
        h = header(bad)
        self.assertEqual((h["rcode"], h["an"], h["ar"]), (0, 0, 1))
        self.assertEqual(struct.unpack("!I", bad[-6:-2])[0] >> 24, 1)  # BADVERS (16) >> 4

    def test_failure_modes(self):
        self.dns.fail("servfail")
        self.assertEqual(header(self.dns.answer(query("api.svc.test")))["rcode"], 2)
        self.dns.fail("refused")
        self.assertEqual(header(self.dns.answer(query("api.svc.test")))["rcode"], 5)
        self.dns.fail("timeout")
        self.assertIsNone(self.dns.answer(query("api.svc.test")))
        self.dns.fail(None)
        self.assertEqual(header(self.dns.answer(query("api.svc.test")))["rcode"], 0)
        self.assertEqual(self.dns.queries("api.svc.test", 1), 4)

    def test_big_answers_truncated_over_udp_whole_over_tcp(self):
        self.dns.set_txt("big.svc.test", ["x" * 200] * 10, ttl=9)
        r = self.dns.answer(query("big.svc.test", qtype=16))
        h = header(r)
        self.assertEqual((h["rcode"], h["an"], h["qd"]), (0, 0, 1))
        self.assertTrue(struct.unpack("!H", r[2:4])[0] & 0x0200, "TC set")
        r = self.dns.answer(query("big.svc.test", qtype=16), tcp=True)
        h = header(r)
        self.assertEqual((h["rcode"], h["an"]), (0, 10))
        self.assertFalse(struct.unpack("!H", r[2:4])[0] & 0x0200)
        self.assertGreater(len(r), 2000)
        # A TXT name has no address: NODATA for A.
        h = header(self.dns.answer(query("big.svc.test")))
        self.assertEqual((h["rcode"], h["an"], h["ns"]), (0, 0, 1))
        # Over TCP for real: length-prefixed, two queries on one connection.
        self.dns.start()
        try:
            with socket.create_connection(("127.0.0.1", self.dns.port), timeout=5) as c:
                for qid in (1, 2):
                    q = query("big.svc.test", qtype=16, qid=qid)
                    c.sendall(struct.pack("!H", len(q)) + q)
                for qid in (1, 2):
                    n = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
                    r = c.recv(n, socket.MSG_WAITALL)
                    self.assertEqual(header(r)["id"], qid)
                    self.assertEqual(header(r)["an"], 10)
            self.assertEqual(self.dns.tcp_queries(), 2)
        finally:
            self.dns.stop()

    def test_over_udp(self):
        self.dns.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.sendto(query("api.svc.test"), ("127.0.0.1", self.dns.port))
                self.assertEqual(header(s.recv(512))["an"], 2)
        finally:
            self.dns.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)

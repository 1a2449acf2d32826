"""A strict fake DNS server for tests: UDP on 127.0.0.1, authoritative for the names a test
gives it, written from RFC 1035 (4.1 message format, 3.2 RR types A, 4.1.4 compression),
RFC 3596 (AAAA), RFC 2308 (negative answers) and RFC 6891 (EDNS0 OPT).

- A query is one question of class IN (QDCOUNT 1, QR 0, OPCODE 0, no compression in it,
  at most one OPT record in the additional section); anything else is answered FORMERR
  (or NOTIMP for another opcode), as RFC 1035 4.1.1 says, when its header can be read,
  and dropped when it cannot.
- A name the test set answers A and AAAA from its addresses, with the test's TTL, the
  question echoed and each answer's owner a compression pointer to it. A type the name has
  no address of is NODATA (NOERROR, no answer) with an SOA in the authority section; an
  unknown name is NXDOMAIN with the same SOA (RFC 2308 3: its MINIMUM is the negative TTL).
- A query with an OPT record gets one back (version 0, payload 1232); a version other than
  0 gets BADVERS (RFC 6891 6.1.3).
- A name may also have TXT records (RFC 1035 3.3.14: character-strings of at most 255
  bytes each), which can make an answer of any size. Over UDP an answer longer than 512
  bytes, or the query's EDNS0 payload size, is sent as the header and question alone with
  TC set (RFC 1035 4.2.1, RFC 2181 9); the client asks again over TCP on the same port,
  where every answer is whole (RFC 7766: two-byte length prefix, several queries per
  connection).

Test hooks: set(name, addrs, ttl), set_txt(name, texts, ttl), remove(name), fail(mode) with
"servfail", "refused" or "timeout" (no answer at all) for every name or one, queries(name,
qtype) to count what was asked (tcp_queries() those over TCP), and `server`
("127.0.0.1:PORT") for the agent's dns.servers.
"""
import ipaddress
import socket
import struct
import threading

TYPE_A, TYPE_AAAA, TYPE_SOA, TYPE_OPT, TYPE_TXT = 1, 28, 6, 41, 16
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # extended RCODE: 1 in the OPT's upper bits, 0 in the header


class FormatError(Exception):
    pass


def read_name(msg, off):
    """Reads an uncompressed name (a query has nothing to point at). Returns (labels, end)."""
    labels, total = [], 0
    while True:
        if off >= len(msg):
            raise FormatError("name runs past the message")
        n = msg[off]
        if n & 0xC0:
            raise FormatError("compression or an extended label in a query")
        off += 1
        if n == 0:
            return labels, off
        if off + n > len(msg):
            raise FormatError("label runs past the message")
        total += n + 1
        if total > 254:  # 255 octets with the root's zero length (RFC 1035 2.3.4)
            raise FormatError("name longer than 255 octets")
        labels.append(msg[off:off + n])
        off += n


def encode_name(labels):
    return b"".join(bytes([len(lb)]) + lb for lb in labels) + b"\0"


class FakeDns:
    ZONE_SOA_TTL = 5  # the SOA's own TTL and its MINIMUM (the negative-caching TTL)

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.lock = threading.Lock()
        self.names = {}      # lowercase name -> (addrs, ttl)
        self.txts = {}       # lowercase name -> ([bytes], ttl)
        self.tcp_asked = 0
        self.tcp = None
        self.failing = {}    # lowercase name or None (all) -> mode
        self.asked = []      # (name, qtype)
        self.sock = None
        self.thread = None

    # -- test hooks --
    def set(self, name, addrs, ttl=1):
        with self.lock:
            self.names[name.lower().rstrip(".")] = ([ipaddress.ip_address(a) for a in addrs],
                                                    int(ttl))

    def set_txt(self, name, texts, ttl=1):
        with self.lock:
            self.txts[name.lower().rstrip(".")] = ([t.encode() if isinstance(t, str) else t
                                                    for t in texts], int(ttl))

    def remove(self, name):
        with self.lock:
            self.names.pop(name.lower().rstrip("."), None)
            self.txts.pop(name.lower().rstrip("."), None)

    def tcp_queries(self):
        with self.lock:
            return self.tcp_asked

    def fail(self, mode="servfail", name=None):
        """mode None ends the failure."""
        assert mode in (None, "servfail", "refused", "timeout")
        with self.lock:
            key = name.lower().rstrip(".") if name else None
            if mode is None:
                self.failing.pop(key, None)
            else:
                self.failing[key] = mode

    def queries(self, name=None, qtype=None):
        with self.lock:
            return sum(1 for n, t in self.asked
                       if (name is None or n == name.lower()) and (qtype is None or t == qtype))

    @property
    def server(self):
        return f"{self.host}:{self.port}"

    # -- lifecycle --
    def start(self):
        # UDP and TCP on one port: bind TCP first, then UDP on its port (retrying if taken).
        for _ in range(20):
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((self.host, 0))
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((self.host, t.getsockname()[1]))
                break
            except OSError:
                s.close()
                t.close()
        t.listen(16)
        self.port = s.getsockname()[1]
        self.sock = s
        self.tcp = t
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        self.tcp_thread = threading.Thread(target=self._tcp_loop, daemon=True)
        self.tcp_thread.start()
        return self

    def _tcp_loop(self):
        while self.tcp:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True).start()

    def _tcp_conn(self, conn):
        def read(n):
            data = b""
            while len(data) < n:
                chunk = conn.recv(n - len(data))
                if not chunk:
                    return None
                data += chunk
            return data
        with conn:
            conn.settimeout(30)
            try:
                while True:
                    head = read(2)
                    if head is None:
                        return
                    msg = read(struct.unpack("!H", head)[0])
                    if msg is None:
                        return
                    with self.lock:
                        self.tcp_asked += 1
                    out = self.answer(msg, tcp=True)
                    if out is not None:
                        conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    def stop(self):
        if self.sock:
            s, self.sock = self.sock, None
            # Wake the reader with a datagram it ignores, then close.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as w:
                try:
                    w.sendto(b"", (self.host, self.port))
                except OSError:
                    pass
            self.thread.join(5)
            s.close()
        if self.tcp:
            t, self.tcp = self.tcp, None
            try:
                t.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            t.close()
            self.tcp_thread.join(5)

    def _loop(self):
        while self.sock:
            try:
                msg, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            if not self.sock:
                return
            out = self.answer(msg)
            if out is not None:
                try:
                    self.sock.sendto(out, peer)
                except OSError:
                    pass

    # -- the protocol --
    def answer(self, msg, tcp=False):
        """The reply to one query (a datagram, or a TCP message), or None to send nothing."""
        if len(msg) < 12:
            return None  # not even a header: nothing to answer to
        qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
        if flags & 0x8000:
            return None  # a response: never answer those
        opcode = (flags >> 11) & 0xF
        rd = flags & 0x0100

        def header(rcode, n_an=0, n_ns=0, n_ar=0, n_qd=1, aa=True, tc=False):
            f = (0x8000 | (opcode << 11) | (0x0400 if aa else 0) | (0x0200 if tc else 0) | rd
                 | 0x0080 | rcode)
            return struct.pack("!HHHHHH", qid, f, n_qd, n_an, n_ns, n_ar)

        if opcode != 0:
            return header(NOTIMP, n_qd=0, aa=False)
        try:
            if qd != 1 or an != 0 or ns != 0 or ar > 1:
                raise FormatError("not one question without answers")
            labels, off = read_name(msg, 12)
            if off + 4 > len(msg):
                raise FormatError("question truncated")
            qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
            qend = off + 4
            opt = None
            if ar:
                olabels, o = read_name(msg, qend)
                if olabels or o + 10 > len(msg):
                    raise FormatError("additional record is not an OPT for the root")
                rtype, payload, ttl, rdlen = struct.unpack("!HHIH", msg[o:o + 10])
                if rtype != TYPE_OPT or o + 10 + rdlen != len(msg):
                    raise FormatError("additional record is not an OPT")
                opt = (payload, (ttl >> 16) & 0xFF)
            elif qend != len(msg):
                raise FormatError("trailing bytes")
        except FormatError:
            return header(FORMERR, n_qd=0, aa=False)
        question = msg[12:qend]
        name = b".".join(labels).decode("ascii", "replace").lower()
        with self.lock:
            self.asked.append((name, qtype))
            mode = self.failing.get(name, self.failing.get(None))
            entry = self.names.get(name)
            txt = self.txts.get(name)
        opt_rr = b""
        if opt is not None:
            ext_rcode = 0
            if opt[1] != 0:
                ext_rcode = BADVERS >> 4
            opt_rr = b"\0" + struct.pack("!HHIH", TYPE_OPT, 1232, ext_rcode << 24, 0)
            if opt[1] != 0:
                return header(BADVERS & 0xF, n_ar=1, aa=False) + question + opt_rr
        n_ar = 1 if opt_rr else 0
        if mode == "timeout":
            return None
        if mode in ("servfail", "refused"):
            rc = SERVFAIL if mode == "servfail" else REFUSED
            return header(rc, n_ar=n_ar, aa=False) + question + opt_rr
        if qclass != CLASS_IN:
            return header(REFUSED, n_ar=n_ar, aa=False) + question + opt_rr
        if entry is None and txt is None:
            return header(NXDOMAIN, n_ns=1, n_ar=n_ar) + question + self._soa(labels) + opt_rr
        addrs, ttl = entry if entry else ([], 0)
        want = {TYPE_A: 4, TYPE_AAAA: 6}.get(qtype)
        records = b""
        n = 0
        for a in addrs:
            if a.version != want:
                continue
            rdata = a.packed
            # The owner points at the question's name (offset 12, RFC 1035 4.1.4).
            records += struct.pack("!HHHIH", 0xC00C, qtype, CLASS_IN, ttl, len(rdata)) + rdata
            n += 1
        if qtype == TYPE_TXT and txt:
            for t in txt[0]:
                rdata = b"".join(bytes([len(t[i:i + 255])]) + t[i:i + 255]
                                 for i in range(0, max(len(t), 1), 255))
                records += struct.pack("!HHHIH", 0xC00C, TYPE_TXT, CLASS_IN, txt[1],
                                       len(rdata)) + rdata
                n += 1
        if n == 0:
            return header(NOERROR, n_ns=1, n_ar=n_ar) + question + self._soa(labels) + opt_rr
        out = header(NOERROR, n_an=n, n_ar=n_ar) + question + records + opt_rr
        limit = max(512, opt[0]) if opt is not None else 512
        if not tcp and len(out) > limit:
            return header(NOERROR, n_ar=n_ar, tc=True) + question + opt_rr
        return out

    def _soa(self, labels):
        """The SOA of the zone: the name's parent (or the name itself when it is one label)."""
        zone = labels[1:] if len(labels) > 1 else labels
        mname = encode_name([b"ns"] + zone)
        rname = encode_name([b"hostmaster"] + zone)
        t = self.ZONE_SOA_TTL
        rdata = mname + rname + struct.pack("!IIIII", 1, 3600, 600, 86400, t)
        return encode_name(zone) + struct.pack("!HHIH", TYPE_SOA, CLASS_IN, t, len(rdata)) + rdata


if __name__ == "__main__":
    import argparse
    import time

    p = argparse.ArgumentParser(description="Serve names on 127.0.0.1 until killed.")
    p.add_argument("records", nargs="*", help="name=addr[,addr...]")
    p.add_argument("--ttl", type=int, default=5)
    args = p.parse_args()
    d = FakeDns().start()
    for r in args.records:
        n, a = r.split("=", 1)
        d.set(n, a.split(","), args.ttl)
    print(d.server, flush=True)
    while True:
        time.sleep(3600)

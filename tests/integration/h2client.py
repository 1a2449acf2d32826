"""Raw HTTP/2 frames to the agent with python3-h2 (Debian's; importable under /usr/bin/python3
only, so the tests run this file as a program): `/usr/bin/python3 h2client.py SCENARIO PORT
[ARG]` prints one JSON object with what happened. Prior knowledge (h2c), no TLS.

Scenarios:
  get PATH              one GET
  post_unsized PATH     a POST whose body has no content-length (two DATA frames)
  interleaved           stream 1 sends half a body, stream 3 a GET that is answered while
                        stream 1 is still open, then stream 1 ends and is answered
  rapid_reset N         N times HEADERS then RST_STREAM(CANCEL); reports the GOAWAY
  big_headers BYTES     a GET with a header list of BYTES, then a normal GET on the same
                        connection
  hold                  a GET, then "ready" on stdout, then waits for the server's GOAWAY
                        and its close (the agent stopping)
  too_many_streams N    N streams opened at once (bodies pending, before the server's
                        SETTINGS are read); reports which were reset, then finishes the rest
  cancel_uploads        streams POST to /slow/ and are cancelled with their DATA unread,
                        until the connection's window is used up; then stream B POSTs 1 KiB
                        to /fast; reports B
  waiting_upload        stream A POSTs to /slow/ until flow control stops it, then stream B
                        POSTs 1 KiB to /fast; reports B, and whether A had been answered
  made_you_reset N      N times HEADERS (POST, content-length: 1) then 2 bytes of DATA: the
                        server resets each stream (MadeYouReset); reports the GOAWAY
  no_end_stream PATH    a POST whose body never ends (5 of 10 bytes); reports the response
                        and the server's RST_STREAM
  odd_targets           a GET with :scheme "x" and an absolute :path naming another host,
                        one with :scheme "x" and an origin :path, then a normal GET;
                        reports the three
  zero_window PATH      SETTINGS_INITIAL_WINDOW_SIZE=0, then a GET: the body cannot come;
                        reports the response head, the server's RST_STREAM and the close
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class Client:
    def __init__(self, port, authority="api"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.authority = authority
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}  # id -> {"status", "headers", "body", "ended", "reset"}
        self.goaway = None
        self.closed = False
        self.ping_acks = 0

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, method, path, extra=()):
        return [(":method", method), (":scheme", "http"), (":authority", self.authority),
                (":path", path)] + list(extra)

    def start(self, method, path, extra=(), end=True):
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = {"status": None, "headers": {}, "body": b"", "ended": False,
                             "reset": None}
        self.conn.send_headers(sid, self.headers(method, path, extra), end_stream=end)
        self.flush()
        return sid

    def pump(self, until):
        """Reads frames until until() is true or the connection closes."""
        while not until() and not self.closed:
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                data = b""
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            for e in events:
                st = self.streams.get(getattr(e, "stream_id", None))
                if isinstance(e, h2.events.ResponseReceived) and st is not None:
                    st["headers"] = dict(e.headers)
                    st["status"] = int(st["headers"][":status"])
                elif isinstance(e, h2.events.DataReceived):
                    if st is not None:
                        st["body"] += e.data
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, h2.events.StreamEnded) and st is not None:
                    st["ended"] = True
                elif isinstance(e, h2.events.StreamReset) and st is not None:
                    st["reset"] = e.error_code
                elif isinstance(e, h2.events.PingAckReceived):
                    self.ping_acks += 1
                elif isinstance(e, h2.events.ConnectionTerminated):
                    self.goaway = int(e.error_code)
            try:
                self.flush()
            except OSError:
                self.closed = True

    def send_body(self, sid, data, end=False, wait=True):
        """Sends data as flow control lets it (waiting for WINDOW_UPDATEs when wait), returns
        how many bytes went."""
        sent = 0
        while sent < len(data) and not self.closed:
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                    len(data) - sent)
            if n <= 0:
                if not wait:
                    break
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            self.conn.send_data(sid, data[sent:sent + n],
                                end_stream=end and sent + n == len(data))
            sent += n
        self.flush()
        return sent

    def round_trip(self):
        """A PING and its ACK: the server has read what went before."""
        want = self.ping_acks + 1
        self.conn.ping(b"barrier!")
        self.flush()
        self.pump(lambda: self.ping_acks >= want)

    def done(self, sid):
        st = self.streams[sid]
        return lambda: st["ended"] or st["reset"] is not None

    def result(self, sid):
        st = self.streams[sid]
        body = st["body"]
        try:
            echo = json.loads(body) if body.startswith(b"{") else None
        except ValueError:
            echo = None
        return {"status": st["status"], "ended": st["ended"], "reset": st["reset"],
                "headers": st["headers"], "echo": echo, "body": body.decode("latin-1")}


def main(argv):
    scenario, port = argv[1], int(argv[2])
    arg = argv[3] if len(argv) > 3 else None
    c = Client(port)
    out = {}
    if scenario == "get":
        sid = c.start("GET", arg)
        c.pump(c.done(sid))
        out = c.result(sid)
    elif scenario == "post_unsized":
        sid = c.start("POST", arg, end=False)
        c.conn.send_data(sid, b"first-")
        c.conn.send_data(sid, b"second", end_stream=True)
        c.flush()
        c.pump(c.done(sid))
        out = c.result(sid)
    elif scenario == "interleaved":
        s1 = c.start("POST", "/one", [("content-length", "10")], end=False)
        c.conn.send_data(s1, b"12345")
        c.flush()
        s3 = c.start("GET", "/three")
        c.pump(c.done(s3))
        out["three"] = c.result(s3)
        out["one_open_when_three_done"] = not c.streams[s1]["ended"]
        c.conn.send_data(s1, b"67890", end_stream=True)
        c.flush()
        c.pump(c.done(s1))
        out["one"] = c.result(s1)
    elif scenario == "rapid_reset":
        for _ in range(int(arg)):
            if c.closed or c.goaway is not None:
                break
            try:
                sid = c.start("GET", "/reset")
                c.conn.reset_stream(sid, error_code=8)  # CANCEL
                c.flush()
            except (OSError, h2.exceptions.ProtocolError):
                break
        c.pump(lambda: c.goaway is not None)
        c.pump(lambda: False)  # then the close
        out = {"goaway": c.goaway, "closed": c.closed}
    elif scenario == "big_headers":
        size = int(arg)
        extra = [(f"x-big-{i}", "v" * 1000) for i in range(size // 1040 + 1)]
        sid = c.start("GET", "/big", extra)
        c.pump(c.done(sid))
        out["big"] = c.result(sid)
        sid = c.start("GET", "/after")
        c.pump(c.done(sid))
        out["after"] = c.result(sid)
    elif scenario == "odd_targets":
        for key, scheme, path in (("absolute", "x", "http://other/admin"),
                                  ("scheme", "x", "/ok"), ("after", "http", "/after")):
            sid = c.conn.get_next_available_stream_id()
            c.streams[sid] = {"status": None, "headers": {}, "body": b"", "ended": False,
                              "reset": None}
            c.conn.send_headers(sid, [(":method", "GET"), (":scheme", scheme),
                                      (":authority", "api"), (":path", path)],
                                end_stream=True)
            c.flush()
            c.pump(c.done(sid))
            out[key] = c.result(sid)
    elif scenario == "hold":
        sid = c.start("GET", "/first")
        c.pump(c.done(sid))
        print("ready", flush=True)
        c.sock.settimeout(120)
        c.pump(lambda: False)  # until the close
        out = {"first": c.result(sid)["status"], "goaway": c.goaway, "closed": c.closed}
    elif scenario == "too_many_streams":
        sids = [c.start("POST", f"/s{i}", [("content-length", "1")], end=False)
                for i in range(int(arg))]
        c.pump(lambda: any(c.streams[s]["reset"] is not None for s in sids))
        out["reset"] = [c.streams[s]["reset"] for s in sids]
        for s in sids:
            if c.streams[s]["reset"] is None:
                c.conn.send_data(s, b"x", end_stream=True)
        c.flush()
        c.pump(lambda: all(c.done(s)() for s in sids))
        out["status"] = [c.streams[s]["status"] for s in sids]
    elif scenario == "cancel_uploads":
        # Streams to /slow/ with HEADERS, a DATA frame and RST_STREAM(CANCEL) in one write
        # (the server reads them at once: the bytes are unread when the stream closes), until
        # they used up the connection's window; then stream B POSTs 1 KiB to /fast.
        out["cancelled"] = 0
        while c.conn.outbound_flow_control_window > 0 and out["cancelled"] < 64:
            a = c.start("POST", "/slow/a", [("content-length", str(256 * 1024))], end=False)
            n = min(c.conn.local_flow_control_window(a), 4096)  # one read of the server
            c.conn.send_data(a, b"a" * n)
            c.conn.reset_stream(a, error_code=8)  # CANCEL
            c.flush()
            out["cancelled"] += 1
        b = c.start("POST", "/fast/b", [("content-length", "1024")], end=False)
        c.send_body(b, b"b" * 1024, end=True)
        c.pump(c.done(b))
        out["b"] = c.result(b)
    elif scenario == "waiting_upload":
        # Stream A POSTs to /slow/ as far as flow control lets it: its stream connection
        # takes 64 KiB for retries while the upstream waits, then a window's worth stays
        # unread. (Two round trips with no window opened: A is stuck.) Then stream B POSTs
        # 1 KiB to /fast on the same connection.
        a = c.start("POST", "/slow/a", [("content-length", str(1 << 20))], end=False)
        out["a_sent"] = 0
        while not c.closed and out["a_sent"] < (1 << 20):
            out["a_sent"] += c.send_body(a, b"a" * ((1 << 20) - out["a_sent"]), wait=False)
            c.round_trip()
            c.round_trip()
            if c.conn.local_flow_control_window(a) <= 0:
                break
        b = c.start("POST", "/fast/b", [("content-length", "1024")], end=False)
        c.send_body(b, b"b" * 1024, end=True)
        c.pump(c.done(b))
        out["b"] = c.result(b)
        out["a_answered_when_b_done"] = c.streams[a]["status"] is not None
    elif scenario == "made_you_reset":
        for _ in range(int(arg)):
            if c.closed or c.goaway is not None:
                break
            try:
                sid = c.start("POST", "/myr", [("content-length", "1")], end=False)
                c.conn.send_data(sid, b"xy")  # over its content-length: the server resets it
                c.flush()
            except (OSError, h2.exceptions.ProtocolError):
                break
        c.pump(lambda: c.goaway is not None)
        c.pump(lambda: False)  # then the close
        out = {"goaway": c.goaway, "closed": c.closed}
    elif scenario == "no_end_stream":
        sid = c.start("POST", arg, [("content-length", "10")], end=False)
        c.conn.send_data(sid, b"12345")
        c.flush()
        c.pump(lambda: c.streams[sid]["reset"] is not None)
        out = c.result(sid)
    elif scenario == "zero_window":
        c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c.flush()
        sid = c.start("GET", arg)
        c.pump(lambda: c.streams[sid]["reset"] is not None)
        out = c.result(sid)
        c.pump(lambda: False)  # then the close (no stream open: the idle timeout)
        out["closed"] = c.closed
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)

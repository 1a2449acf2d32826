"""A trace collector on loopback that takes spans the way a real one does and checks them
field by field (Python stdlib only):

- OTLP/HTTP, JSON encoding: POST /v1/traces, Content-Type application/json, an
  ExportTraceServiceRequest as the OTLP specification's JSON mapping writes it (keys in
  lowerCamelCase, trace and span ids as lower-case hex, enums as numbers, 64-bit integers as
  decimal strings). Answers 200 with an ExportTraceServiceResponse ({}), 400 for a body it
  cannot take, 415 for another content type.
- Zipkin v2: POST /api/v2/spans, a JSON array of spans (zipkin-api's zipkin2-api.yaml: ids
  as lower-case hex, kind CLIENT/SERVER/PRODUCER/CONSUMER, timestamp and duration in
  microseconds, tags a map of strings). Answers 202, or 400.

Stricter than a collector in one way: a key the formats do not define is refused, so that a
misspelt field cannot pass unnoticed.

The test can make it answer with a status of its choice (`fail_status`) or wait before
answering (`delay`), to play a collector that is down or slow.
"""
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEX = re.compile(r"^[0-9a-f]+$")
DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")
# 2020-01-01 and 2100-01-01 in Unix nanoseconds: a timestamp outside is in the wrong unit.
MIN_NS, MAX_NS = 1577836800 * 10**9, 4102444800 * 10**9


class Invalid(Exception):
    pass


def _need(cond, where, what):
    if not cond:
        raise Invalid(f"{where}: {what}")


def _keys(obj, where, allowed, required=()):
    _need(isinstance(obj, dict), where, "expected an object")
    for k in obj:
        _need(k in allowed, where, f"unknown field '{k}'")
    for k in required:
        _need(k in obj, where, f"missing '{k}'")


def _hex_id(v, where, digits, allow_empty=False):
    if allow_empty and v == "":
        return
    _need(isinstance(v, str) and len(v) == digits and HEX.match(v), where,
          f"expected {digits} lower-case hex digits, got {v!r}")
    _need(v.strip("0") != "", where, "an all-zero id is invalid")


def _uint64(v, where):
    """proto3 JSON: a 64-bit integer is a decimal string (a number is accepted too)."""
    if isinstance(v, bool):
        raise Invalid(f"{where}: expected a uint64, got {v!r}")
    if isinstance(v, int):
        return v
    _need(isinstance(v, str) and DECIMAL.match(v), where, f"expected a uint64, got {v!r}")
    n = int(v)
    _need(n < 2**64, where, "out of range for a uint64")
    return n


def _any_value(v, where):
    _keys(v, where, {"stringValue", "boolValue", "intValue", "doubleValue", "arrayValue",
                     "kvlistValue", "bytesValue"})
    _need(len(v) == 1, where, "expected exactly one of the AnyValue fields")
    (k, x), = v.items()
    if k == "stringValue":
        _need(isinstance(x, str), where, "stringValue must be a string")
    elif k == "boolValue":
        _need(isinstance(x, bool), where, "boolValue must be a boolean")
    elif k == "intValue":
        if isinstance(x, str):
            _need(re.match(r"^-?(0|[1-9][0-9]*)$", x), where, f"bad intValue {x!r}")
            x = int(x)
        _need(isinstance(x, int) and not isinstance(x, bool) and -2**63 <= x < 2**63, where,
              "intValue must be an int64")
    elif k == "doubleValue":
        _need(isinstance(x, (int, float)) and not isinstance(x, bool), where,
              "doubleValue must be a number")
    return x


def _attributes(attrs, where):
    _need(isinstance(attrs, list), where, "expected an array of KeyValue")
    out = {}
    for i, kv in enumerate(attrs):
        w = f"{where}[{i}]"
        _keys(kv, w, {"key", "value"}, ("key", "value"))
        _need(isinstance(kv["key"], str) and kv["key"], w, "key must be a non-empty string")
        _need(kv["key"] not in out, w, f"duplicate attribute '{kv['key']}'")
        out[kv["key"]] = _any_value(kv["value"], f"{w}.value")
    return out


def validate_otlp(doc):
    """Checks an ExportTraceServiceRequest; returns its spans as dicts (attributes as a
    dict, with 'service' from the resource)."""
    spans = []
    _keys(doc, "$", {"resourceSpans"})
    rss = doc.get("resourceSpans", [])
    _need(isinstance(rss, list), "$.resourceSpans", "expected an array")
    for i, rs in enumerate(rss):
        w = f"$.resourceSpans[{i}]"
        _keys(rs, w, {"resource", "scopeSpans", "schemaUrl"})
        res = rs.get("resource", {})
        _keys(res, f"{w}.resource", {"attributes", "droppedAttributesCount"})
        rattrs = _attributes(res.get("attributes", []), f"{w}.resource.attributes")
        _need(isinstance(rattrs.get("service.name"), str), f"{w}.resource",
              "service.name (a string) is required")
        sss = rs.get("scopeSpans", [])
        _need(isinstance(sss, list), f"{w}.scopeSpans", "expected an array")
        for j, ss in enumerate(sss):
            w2 = f"{w}.scopeSpans[{j}]"
            _keys(ss, w2, {"scope", "spans", "schemaUrl"})
            if "scope" in ss:
                _keys(ss["scope"], f"{w2}.scope", {"name", "version", "attributes",
                                                   "droppedAttributesCount"})
                for k in ("name", "version"):
                    _need(isinstance(ss["scope"].get(k, ""), str), f"{w2}.scope.{k}",
                          "expected a string")
            _need(isinstance(ss.get("spans", []), list), f"{w2}.spans", "expected an array")
            for k, sp in enumerate(ss.get("spans", [])):
                spans.append(_otlp_span(sp, f"{w2}.spans[{k}]", rattrs["service.name"]))
    return spans


def _otlp_span(sp, w, service):
    _keys(sp, w, {"traceId", "spanId", "traceState", "parentSpanId", "flags", "name", "kind",
                  "startTimeUnixNano", "endTimeUnixNano", "attributes",
                  "droppedAttributesCount", "events", "droppedEventsCount", "links",
                  "droppedLinksCount", "status"},
          ("traceId", "spanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano"))
    _hex_id(sp["traceId"], f"{w}.traceId", 32)
    _hex_id(sp["spanId"], f"{w}.spanId", 16)
    _hex_id(sp.get("parentSpanId", ""), f"{w}.parentSpanId", 16, allow_empty=True)
    _need(sp.get("parentSpanId") != sp["spanId"], w, "a span cannot be its own parent")
    _need(isinstance(sp["name"], str) and sp["name"], f"{w}.name", "a non-empty string")
    _need(isinstance(sp["kind"], int) and not isinstance(sp["kind"], bool)
          and 0 <= sp["kind"] <= 5, f"{w}.kind", f"a SpanKind number (0..5), got {sp['kind']!r}")
    start = _uint64(sp["startTimeUnixNano"], f"{w}.startTimeUnixNano")
    end = _uint64(sp["endTimeUnixNano"], f"{w}.endTimeUnixNano")
    _need(MIN_NS <= start <= MAX_NS, f"{w}.startTimeUnixNano",
          f"{start} is not Unix nanoseconds of this century")
    _need(start <= end, f"{w}.endTimeUnixNano", "before the start")
    attrs = _attributes(sp.get("attributes", []), f"{w}.attributes")
    status = sp.get("status", {})
    _keys(status, f"{w}.status", {"code", "message"})
    code = status.get("code", 0)
    _need(isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 2,
          f"{w}.status.code", "a StatusCode number (0..2)")
    return {"format": "otlp", "traceId": sp["traceId"], "spanId": sp["spanId"],
            "parentSpanId": sp.get("parentSpanId", ""), "name": sp["name"], "kind": sp["kind"],
            "start_ns": start, "end_ns": end, "attributes": attrs, "status": code,
            "service": service}


def _endpoint(e, where):
    _keys(e, where, {"serviceName", "ipv4", "ipv6", "port"})
    _need(isinstance(e.get("serviceName", ""), str), f"{where}.serviceName", "a string")
    port = e.get("port", 0)
    _need(isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535,
          f"{where}.port", "a port number")


def validate_zipkin(doc):
    """Checks a list of Zipkin v2 spans; returns them as dicts."""
    _need(isinstance(doc, list), "$", "expected an array of spans")
    out = []
    for i, sp in enumerate(doc):
        w = f"$[{i}]"
        _keys(sp, w, {"traceId", "id", "parentId", "kind", "name", "timestamp", "duration",
                      "localEndpoint", "remoteEndpoint", "annotations", "tags", "debug",
                      "shared"}, ("traceId", "id"))
        t = sp["traceId"]
        _need(isinstance(t, str) and len(t) in (16, 32) and HEX.match(t), f"{w}.traceId",
              "16 or 32 lower-case hex digits")
        _hex_id(sp["id"], f"{w}.id", 16)
        if "parentId" in sp:
            _hex_id(sp["parentId"], f"{w}.parentId", 16)
            _need(sp["parentId"] != sp["id"], w, "a span cannot be its own parent")
        _need(sp.get("kind", "CLIENT") in ("CLIENT", "SERVER", "PRODUCER", "CONSUMER"),
              f"{w}.kind", f"CLIENT, SERVER, PRODUCER or CONSUMER, got {sp.get('kind')!r}")
        _need(isinstance(sp.get("name", ""), str), f"{w}.name", "a string")
        ts, dur = sp.get("timestamp"), sp.get("duration")
        _need(isinstance(ts, int) and not isinstance(ts, bool)
              and MIN_NS // 1000 <= ts <= MAX_NS // 1000, f"{w}.timestamp",
              f"epoch microseconds, got {ts!r}")
        _need(isinstance(dur, int) and not isinstance(dur, bool) and dur >= 1, f"{w}.duration",
              f"microseconds, at least 1, got {dur!r}")
        for k in ("localEndpoint", "remoteEndpoint"):
            if k in sp:
                _endpoint(sp[k], f"{w}.{k}")
        tags = sp.get("tags", {})
        _need(isinstance(tags, dict), f"{w}.tags", "an object")
        for k, v in tags.items():
            _need(isinstance(v, str), f"{w}.tags.{k}", f"tag values are strings, got {v!r}")
        for k in ("debug", "shared"):
            _need(isinstance(sp.get(k, False), bool), f"{w}.{k}", "a boolean")
        out.append({"format": "zipkin", "traceId": t, "spanId": sp["id"],
                    "parentSpanId": sp.get("parentId", ""), "name": sp.get("name", ""),
                    "kind": sp.get("kind"), "timestamp": ts, "duration": dur, "tags": tags,
                    "service": sp.get("localEndpoint", {}).get("serviceName", "")})
    return out


class FakeCollector:
    def __init__(self):
        self.lock = threading.Lock()
        self.otlp = []     # spans taken
        self.zipkin = []
        self.requests = {"otlp": 0, "zipkin": 0}
        self.rejected = []  # (path, status, reason)
        self.fail_status = 0  # answer every export with this status (0: take it)
        self.delay = 0.0      # seconds to wait before answering
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, status, body=b"", ctype="application/json"):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the exporter gave up waiting (a slow collector)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                kind = {"/v1/traces": "otlp", "/api/v2/spans": "zipkin"}.get(self.path)
                if not kind:
                    self._answer(404, b"{}")
                    return
                with collector.lock:
                    collector.requests[kind] += 1
                    fail, delay = collector.fail_status, collector.delay
                if delay:
                    time.sleep(delay)
                if fail:
                    self._answer(fail, b'{"message":"unavailable"}')
                    return
                ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
                if ctype != "application/json":
                    self._reject(kind, 415, f"content type {ctype!r}")
                    return
                try:
                    doc = json.loads(body.decode("utf-8"))
                    spans = validate_otlp(doc) if kind == "otlp" else validate_zipkin(doc)
                except (ValueError, UnicodeDecodeError, Invalid) as e:
                    self._reject(kind, 400, str(e))
                    return
                with collector.lock:
                    getattr(collector, kind).extend(spans)
                if kind == "otlp":
                    self._answer(200, b"{}")
                else:
                    self._answer(202)

            def _reject(self, kind, status, why):
                with collector.lock:
                    collector.rejected.append((kind, status, why))
                self._answer(status, json.dumps({"message": why}).encode())

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def otlp_url(self):
        return f"http://127.0.0.1:{self.port}/v1/traces"

    @property
    def zipkin_url(self):
        return f"http://127.0.0.1:{self.port}/api/v2/spans"

    def spans(self, kind):
        with self.lock:
            return list(getattr(self, kind))

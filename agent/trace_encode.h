/*
 * The two wire formats of exported spans (docs/tracing.md), written straight into a buffer:
 *
 * - OTLP/HTTP with the JSON encoding: an ExportTraceServiceRequest (resourceSpans, one per
 *   service.name, each with one scopeSpans), ids as lower-case hex, kind as the SpanKind
 *   number, times as decimal strings of Unix nanoseconds, intValue as a decimal string.
 * - Zipkin's v2 JSON: an array of spans, kind CLIENT or SERVER, timestamp and duration in
 *   microseconds, localEndpoint.serviceName, tags as a map of strings.
 *
 * Both carry the attributes of OpenTelemetry's HTTP semantic conventions for client and
 * server spans. Pure functions; any thread.
 */
#ifndef MESH_AGENT_TRACE_ENCODE_H
#define MESH_AGENT_TRACE_ENCODE_H

#include <stddef.h>

#include "common/buf.h"
#include "proxy/trace.h"

/* Appends the request body for spans[0..n) to out. Returns 0, -ENOMEM or -EMSGSIZE. */
int mesh_trace_encode_otlp(const struct mesh_span *spans, size_t n, struct mesh_buf *out);
int mesh_trace_encode_zipkin(const struct mesh_span *spans, size_t n, struct mesh_buf *out);

#endif

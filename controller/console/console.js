// The mesh console: reads the controller's admin API and draws it. No library, no
// external URL; the admin token stays in this tab's sessionStorage and goes in the
// Authorization header of each call. The console only reads (GET): changes are meshctl's.
"use strict";

const REFRESH_MS = 5000;
const $ = (sel) => document.querySelector(sel);
let view = "graph";
let timer = null;

function el(tag, attrs, text) {
  // The SVG namespace is taken from the page's own <svg>: no URL appears in the console.
  const e = tag.startsWith("svg:")
    ? document.createElementNS($("#graph").namespaceURI, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function num(v, digits) {
  if (v === undefined || v === null || v < 0) return "–";
  return v >= 100 ? v.toFixed(0) : v.toFixed(digits === undefined ? 2 : digits);
}

function pct(ratio) {
  return ratio === undefined ? "–" : (100 * ratio).toFixed(1) + " %";
}

function ago(unixSeconds) {
  const s = Math.round(unixSeconds - Date.now() / 1000);
  const a = Math.abs(s);
  const text = a < 120 ? a + " s" : a < 7200 ? Math.round(a / 60) + " min"
             : a < 172800 ? Math.round(a / 3600) + " h" : Math.round(a / 86400) + " d";
  return s >= 0 ? "in " + text : text + " ago";
}

function iso(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().replace(".000", "");
}

class Unauthorized extends Error {}

async function api(path) {
  const token = sessionStorage.getItem("mesh-token") || "";
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token },
                                cache: "no-store", credentials: "omit" });
  if (r.status === 401) throw new Unauthorized((await r.json()).error);
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function fill(table, rows) {
  const body = $(table + " tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = el("tr");
    for (const c of cells) {
      const td = typeof c === "object" ? el("td", c.attrs, c.text) : el("td", {}, c);
      tr.append(td);
    }
    return tr;
  }));
}

// ---- the graph: services in columns by their depth along the calls ----

function layout(nodes, edges, width) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < nodes.length; round++) { // longest path, cycles cut short
    let moved = false;
    for (const e of edges) {
      if (e.source !== e.destination && depth.get(e.destination) < depth.get(e.source) + 1) {
        depth.set(e.destination, depth.get(e.source) + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.id)] ||= []).push(n);
  const pos = new Map();
  const dx = width / (columns.length + 1);
  columns.forEach((col, c) => col.forEach((n, i) => {
    pos.set(n.id, { x: dx * (c + 1), y: 90 + i * 130 });
  }));
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  return { pos, height: 90 + tallest * 130 };
}

function drawGraph(g) {
  const svg = $("#graph");
  const width = Math.max(svg.clientWidth || 900, 600);
  const nodes = g.nodes.slice().sort((a, b) => a.id.localeCompare(b.id));
  const edges = g.edges.slice().sort((a, b) =>
    (a.source + a.destination).localeCompare(b.source + b.destination));
  const { pos, height } = layout(nodes, edges, width);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.height = height + "px";
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                    markerWidth: 8, markerHeight: 8, orient: "auto" });
  marker.append(el("svg:path", { d: "M0,0 L10,5 L0,10 z" }));
  defs.append(marker);
  const parts = [defs];
  const R = 24;
  for (const e of edges) {
    const a = pos.get(e.source), b = pos.get(e.destination);
    if (!a || !b) continue;
    const len = Math.hypot(b.x - a.x, b.y - a.y) || 1;
    const ux = (b.x - a.x) / len, uy = (b.y - a.y) / len;
    const x1 = a.x + ux * R, y1 = a.y + uy * R, x2 = b.x - ux * (R + 2), y2 = b.y - uy * (R + 2);
    const mx = (x1 + x2) / 2 + uy * 40, my = (y1 + y2) / 2 - ux * 40; // bent to the left
    const rps = e.requests_per_s ?? e.tcp_connections_per_s ?? 0;
    const failing = (e.error_ratio || 0) > 0;
    const group = el("svg:g", {
      class: "edge" + (failing ? " failing" : "") + (rps > 0 ? "" : " idle"),
      "data-source": e.source, "data-destination": e.destination, "data-protocol": e.protocol,
      "data-requests-per-s": rps, "data-error-ratio": e.error_ratio ?? 0,
      "data-reporter": e.reporter });
    group.append(el("svg:path", { d: `M${x1},${y1} Q${mx},${my} ${x2},${y2}`,
                                  "marker-end": "url(#arrow)" }));
    const label = e.protocol === "tcp"
      ? `${num(e.tcp_connections_per_s)} conn/s · ${num(e.tcp_bytes_per_s, 0)} B/s`
      : `${num(e.requests_per_s)} req/s · ${pct(e.error_ratio)} err` +
        (e.latency_ms_p99 !== undefined ? ` · p99 ${num(e.latency_ms_p99, 1)} ms` : "");
    group.append(el("svg:text", { x: (x1 + 2 * mx + x2) / 4, y: (y1 + 2 * my + y2) / 4 - 6 },
                    label)); // above the curve's middle
    const title = el("svg:title", {}, `${e.source} → ${e.destination} (${e.protocol}, ` +
                     `counted by the ${e.reporter})`);
    group.append(title);
    parts.push(group);
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const group = el("svg:g", { class: `node ${n.health}${n.in_mesh ? "" : " outside"}`,
                                "data-id": n.id, "data-health": n.health,
                                transform: `translate(${p.x},${p.y})` });
    group.append(el("svg:circle", { r: R }));
    group.append(el("svg:text", { y: R + 16, class: "name" }, n.name));
    group.append(el("svg:text", { y: R + 30, class: "ns" }, n.namespace));
    group.append(el("svg:title", {}, `${n.id}: ${n.health}, ` +
                    `${num(n.requests_per_s)} req/s in, ${pct(n.error_ratio)} errors`));
    parts.push(group);
  }
  svg.replaceChildren(...parts);
  svg.dataset.nodes = nodes.length;
  svg.dataset.edges = edges.length;
  svg.dataset.ready = "1";
}

function drawServices(g) {
  const nodes = g.nodes.slice().sort((a, b) => a.id.localeCompare(b.id));
  fill("#services-table", nodes.map((n) => [
    n.id, { text: n.health, attrs: { class: n.health } }, (n.agents || []).join(", "),
    { text: num(n.requests_per_s), attrs: { class: "num" } },
    { text: pct(n.error_ratio), attrs: { class: "num" } },
    { text: num(n.latency_ms_p50, 1), attrs: { class: "num" } },
    { text: num(n.latency_ms_p99, 1), attrs: { class: "num" } },
    { text: num(n.latency_ms_mean, 1), attrs: { class: "num" } },
    { text: num(n.tcp_connections_per_s), attrs: { class: "num" } },
    { text: num(n.tcp_bytes_per_s, 0), attrs: { class: "num" } },
  ]));
}

function drawAgents(doc) {
  const agents = doc.agents.slice().sort((a, b) => a.node.localeCompare(b.node));
  fill("#agents-table", agents.map((a) => [
    a.node, { text: a.state, attrs: { class: a.state } }, a.version || "–",
    a.address ? `${a.address}:${a.inbound_port}` : "–",
    `${a.config_index ?? "–"}/${doc.config_index}`,
    (a.local_services || []).map((s) => `${s.namespace}/${s.name}`).join(", ") || "–",
    a.oldest_cert_expiry ? `${iso(a.oldest_cert_expiry)} (${ago(a.oldest_cert_expiry)})` : "–",
    a.last_report_s !== undefined ? a.last_report_s + " s ago" : "never",
  ]));
}

function drawCerts(doc) {
  const now = Date.now() / 1000;
  const certs = doc.certs.slice().sort((a, b) => a.not_after - b.not_after);
  fill("#certs-table", certs.map((c) => {
    const life = c.not_after - (c.issued_at || c.not_after);
    const cls = c.not_after <= now ? "expired"
              : c.not_after - now < life / 4 ? "soon" : "healthy";
    return [c.identity, c.node, c.serial, c.issued_at ? iso(c.issued_at) : "–",
            { text: `${iso(c.not_after)} (${ago(c.not_after)})`,
              attrs: { class: cls, "data-not-after": c.not_after } }];
  }));
}

function drawResources(doc) {
  fill("#resources-table", doc.resources.map((r) => [
    r.kind, r.namespace || "default", r.name,
    { text: JSON.stringify(r.spec || {}), attrs: { class: "spec" } }]));
}

const VIEWS = {
  graph: ["/v1/graph", drawGraph],
  services: ["/v1/graph", drawServices],
  agents: ["/v1/agents", drawAgents],
  certs: ["/v1/certs", drawCerts],
  resources: ["/v1/resources", drawResources],
};

function askToken(message) {
  $("#views").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
}

async function refresh() {
  clearTimeout(timer);
  const [path, draw] = VIEWS[view];
  // No call without a token: a wrong one counts against this client (and slows it down).
  if (!sessionStorage.getItem("mesh-token")) return askToken("");
  try {
    const doc = await api(path);
    $("#login").hidden = true;
    $("#views").hidden = false; // shown first: the graph is laid out to its width
    draw(doc);
    $("#status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    if (err instanceof Unauthorized) {
      sessionStorage.removeItem("mesh-token");
      return askToken(err.message); // no polling until a token is given
    }
    $("#status").textContent = "cannot reach the controller: " + err.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function show(name) {
  view = name;
  for (const b of document.querySelectorAll("#tabs button"))
    b.classList.toggle("on", b.dataset.view === name);
  for (const s of document.querySelectorAll(".view"))
    s.hidden = s.id !== "view-" + name;
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("#tabs button"))
    b.addEventListener("click", () => show(b.dataset.view));
  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("mesh-token", $("#token").value.trim());
    $("#token").value = "";
    refresh();
  });
  refresh();
});

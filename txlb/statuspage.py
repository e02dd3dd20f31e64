"""
The admin listener's HTML status page, for operators.

One self-contained page, in the spirit of HAProxy's stats page: a table of
the backends that refreshes itself every two seconds from the admin API's
JSON C{status}.  Everything is inline (style, script, no fonts or icons),
because neither this machine nor an operator's network may reach anything
else.  The page is static: the script does the rendering, so the server
side has nothing to keep in step with the JSON.

The script fetches C{status} by a I{relative} URL, so the page works under
any prefix a reverse proxy puts in front of it, as long as the JSON is its
sibling: mount the page at C{b""} and the JSON at C{b"status"} of the same
parent.  Every value reaches the DOM through C{textContent}, never
C{innerHTML}: a backend's last error is text that other parties shape.  A
Content-Security-Policy that allows only this page's own script and style,
by hash, backs that up, and also stops the page from loading anything from
elsewhere.
"""

from __future__ import annotations

import base64
import hashlib

from twisted.web import pages, server
from twisted.web.resource import Resource

__all__ = ["StatusPage"]

_STYLE = """
:root {
  color-scheme: light dark;
  --fg: #1f2328; --muted: #59636e; --bg: #ffffff; --line: #d1d9e0; --stripe: #f6f8fa;
  --up: #1a7f37; --up-bg: #dafbe1; --down: #cf222e; --down-bg: #ffebe9;
  --draining: #9a6700; --draining-bg: #fff8c5;
}
@media (prefers-color-scheme: dark) {
  :root {
    --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --line: #3d444d; --stripe: #151b23;
    --up: #3fb950; --up-bg: #12261e; --down: #f85149; --down-bg: #2d1214;
    --draining: #d29922; --draining-bg: #272115;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; padding: 1.5rem 2rem; color: var(--fg); background: var(--bg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
}
h1 { margin: 0 0 .25rem; font-size: 1.4rem; font-weight: 600; }
#summary {
  display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; margin: 0 0 1rem; color: var(--muted);
}
#summary b { color: var(--fg); font-weight: 600; }
#error, #insecure, .noscript {
  margin: 0 0 1rem; padding: .6rem .9rem; border: 1px solid var(--down); border-radius: 6px;
  color: var(--down); background: var(--down-bg); font-weight: 600;
}
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.stale { opacity: .45; }
th, td {
  padding: .45rem .6rem; border-bottom: 1px solid var(--line);
  text-align: left; white-space: nowrap;
}
th {
  position: sticky; top: 0; background: var(--bg); color: var(--muted);
  font-size: .78rem; font-weight: 600; text-transform: uppercase; letter-spacing: .03em;
}
tbody tr:nth-child(even) { background: var(--stripe); }
.num { text-align: right; }
.address { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.state {
  display: inline-block; min-width: 7.5em; padding: .05rem .55rem; border-radius: 999px;
  font-weight: 600; font-size: .85rem;
}
.state::before { content: "●"; margin-right: .35em; }
.state-up { color: var(--up); background: var(--up-bg); }
.state-down { color: var(--down); background: var(--down-bg); }
.state-draining { color: var(--draining); background: var(--draining-bg); }
.state-unknown { color: var(--muted); background: var(--stripe); }
.failed { color: var(--down); }
/* Messages wrap: they are read, not compared down a column like numbers. */
.message { min-width: 9rem; white-space: normal; overflow-wrap: anywhere; }
.last-error { min-width: 13rem; color: var(--muted); }
.empty { color: var(--muted); text-align: center; }
h2 { margin: 1.5rem 0 .5rem; font-size: 1.1rem; font-weight: 600; }
#charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr)); gap: 1rem; }
.card { padding: .6rem .8rem; border: 1px solid var(--line); border-radius: 6px; }
.card h3 { margin: 0 0 .4rem; font: 600 .9rem ui-monospace, "DejaVu Sans Mono", monospace; }
.chart { display: grid; grid-template-columns: 7.5rem 1fr; align-items: center; gap: .5rem; }
.chart-label { color: var(--muted); font-size: .8rem; font-variant-numeric: tabular-nums; }
.chart svg { width: 100%; height: 2.2rem; }
.chart polyline { fill: none; stroke: var(--up); stroke-width: 1.5; }
.chart line { stroke: var(--line); stroke-width: 1; }
#shadow-table { width: auto; }
footer { margin-top: 1rem; color: var(--muted); font-size: .85rem; }
a { color: inherit; }
"""

_SCRIPT = r"""
"use strict";
// Poll the JSON next to this page and render it.  Values only ever reach the
// DOM as textContent, and a failed fetch says so instead of leaving old
// numbers on screen as if they were current.
const REFRESH_MS = 2000;
const TIMEOUT_MS = 5000;
const STATES = ["up", "down", "draining"];
const COLUMNS = 12;
// Five minutes of samples, one a poll.
const HISTORY = 150;
const SVG = "http://www.w3.org/2000/svg";
const history = new Map();
let previous = new Map();
const $ = (id) => document.getElementById(id);
let lastUpdate = null;

function show(value, format) {
  if (value === null || value === undefined) return "\u2013";
  return format && typeof value === "number" ? format(value) : String(value);
}

const oneDecimal = (n) => n.toFixed(1);
const percent = (n) => (n * 100).toFixed(1) + " %";
const milliseconds = (n) => n.toFixed(1) + " ms";

function duration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60), r = s % 60;
  if (d) return d + "d " + h + "h " + m + "m";
  if (h) return h + "h " + m + "m " + r + "s";
  if (m) return m + "m " + r + "s";
  return r + "s";
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function render(status) {
  const counts = {up: 0, down: 0, draining: 0};
  const rows = status.backends.map((b) => {
    const row = document.createElement("tr");
    const state = STATES.includes(b.state) ? b.state : "unknown";
    if (state in counts) counts[state] += 1;
    cell(row, show(b.address) + (b.tls ? " (TLS)" : ""), "address");
    const badge = document.createElement("span");
    badge.className = "state state-" + state;
    badge.textContent = show(b.state);
    row.insertCell().append(badge);
    cell(row, show(b.weight), "num");
    // Slots in use, out of the backend's limit (--max-conn) when it has one.
    cell(row, show(b.active) + (b.limit ? " / " + b.limit : ""), "num");
    cell(row, show(b.requestsPerSecond, oneDecimal), "num");
    cell(row, show(b.requests), "num");
    cell(row, show(b.errors), "num");
    cell(row, show(b.failures), "num");
    cell(row, show(b.latencyMs, milliseconds), "num");
    cell(row, show(b.load, percent), "num");
    const health = show(b.health);
    cell(row, health, health.startsWith("failed") ? "message failed" : "message");
    cell(row, show(b.lastError), "message last-error");
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    cell(row, "no backends", "empty").colSpan = COLUMNS;
    rows.push(row);
  }
  $("backends").replaceChildren(...rows);
  $("algorithm").textContent = show(status.algorithm);
  $("listen").textContent = show(status.listen);
  $("insecure").hidden = status.backendTLS !== "insecure";
  $("uptime").textContent = show(status.uptime, duration);
  const queue = status.queue;
  $("queue").textContent = queue ? queue.length + " waiting (at most " + queue.max + ")" : "\u2013";
  $("version").textContent = show(status.version);
  const total = status.backends.length;
  $("health").textContent =
    counts.up + " up, " + counts.down + " down, " + counts.draining + " draining";
  document.title = "txlb: " + counts.up + "/" + total + " up";
  lastUpdate = new Date();
  $("updated").textContent = lastUpdate.toLocaleTimeString();
}

// The 99th percentile, in ms, of the requests between two cumulative
// histograms (counts per bound, then all), interpolated within its bucket
// as Prometheus' histogram_quantile does; null if none ended.
function p99(bounds, before, after) {
  if (!Array.isArray(before) || !Array.isArray(after) || before.length !== after.length) {
    return null;
  }
  const counts = after.map((count, i) => count - before[i]);
  const total = counts[counts.length - 1];
  if (!(total > 0)) return null;
  const rank = 0.99 * total;
  const i = counts.findIndex((count) => count >= rank);
  if (i >= bounds.length) return bounds[bounds.length - 1] * 1000;
  const lower = i ? bounds[i - 1] : 0;
  const below = i ? counts[i - 1] : 0;
  return (lower + (bounds[i] - lower) * (rank - below) / (counts[i] - below)) * 1000;
}

function remember(status) {
  const seen = new Map();
  for (const b of status.backends) {
    const address = String(b.address);
    const samples = history.get(address) || [];
    samples.push({
      rps: b.requestsPerSecond,
      p99: p99(status.latencyBounds || [], previous.get(address), b.latencyBuckets),
      active: b.active,
      limit: b.limit,
      load: b.load,
    });
    history.set(address, samples.slice(-HISTORY));
    seen.set(address, b.latencyBuckets);
  }
  for (const address of history.keys()) {
    if (!seen.has(address)) history.delete(address);
  }
  previous = seen;
}

function svg(tag, attributes) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  return element;
}

// One line chart of the last HISTORY samples, newest at the right, scaled
// to its largest value; a missing value breaks the line.
function chart(title, samples, key, format) {
  const values = samples.map((s) => (typeof s[key] === "number" ? s[key] : null));
  const top = Math.max(0, ...values.filter((v) => v !== null)) || 1;
  const row = document.createElement("div");
  row.className = "chart chart-" + key;
  const label = document.createElement("span");
  label.className = "chart-label";
  label.textContent = title + " " + show(values[values.length - 1], format);
  const picture = svg("svg", {viewBox: "0 0 300 40", preserveAspectRatio: "none"});
  picture.append(svg("line", {x1: 0, y1: 39.5, x2: 300, y2: 39.5}));
  let points = [];
  const flush = () => {
    if (points.length) picture.append(svg("polyline", {points: points.join(" ")}));
    points = [];
  };
  values.forEach((value, i) => {
    if (value === null) return flush();
    const x = 300 - (values.length - 1 - i) * 300 / (HISTORY - 1);
    points.push(x.toFixed(1) + "," + (38 - value / top * 36).toFixed(1));
  });
  flush();
  row.append(label, picture);
  return row;
}

function renderCharts() {
  const cards = [];
  for (const [address, samples] of history) {
    const card = document.createElement("div");
    card.className = "card";
    const heading = document.createElement("h3");
    heading.textContent = address;
    card.append(
      heading,
      chart("req/s", samples, "rps", oneDecimal),
      chart("p99", samples, "p99", milliseconds),
      chart("in flight", samples, "active"),
      chart("load", samples, "load", percent),
    );
    // With --max-conn, the limit (learnt, with auto) over time.
    if (samples.some((s) => s.limit)) card.append(chart("limit", samples, "limit"));
    cards.push(card);
  }
  $("charts").replaceChildren(...cards);
}

function renderShadow(status) {
  const shadow = status.shadow;
  $("shadow-section").hidden = !shadow;
  if (!shadow) return;
  $("shadow-name").textContent = show(shadow.algorithm);
  $("shadow-agreement").textContent =
    show(shadow.agreement, percent) + " of " + show(shadow.compared) + " picks";
  $("shadow-errors").textContent = show(shadow.errors);
  const picks = shadow.picks || {};
  const total = Object.values(picks).reduce((a, b) => a + b, 0);
  const rows = status.backends.map((b) => {
    const row = document.createElement("tr");
    const count = picks[b.address] || 0;
    cell(row, show(b.address), "address");
    cell(row, show(count), "num");
    cell(row, total ? percent(count / total) : "\u2013", "num");
    return row;
  });
  $("shadow-backends").replaceChildren(...rows);
}

function unavailable(reason) {
  const error = $("error");
  error.hidden = reason === null;
  $("table").classList.toggle("stale", reason !== null);
  if (reason === null) return;
  error.textContent = "status unavailable: " + reason +
    (lastUpdate ? " (the table below is from " + lastUpdate.toLocaleTimeString() + ")" : "");
  document.title = "txlb: status unavailable";
}

async function refresh() {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  try {
    const response = await fetch("status", {cache: "no-store", signal: controller.signal});
    if (!response.ok) {
      throw new Error(("HTTP " + response.status + " " + response.statusText).trim());
    }
    let status;
    try {
      status = await response.json();
    } catch (e) {
      throw new Error("the answer is not JSON");
    }
    if (!status || !Array.isArray(status.backends)) {
      throw new Error("the answer has no list of backends");
    }
    render(status);
    remember(status);
    renderCharts();
    renderShadow(status);
    unavailable(null);
  } catch (e) {
    unavailable(e.name === "AbortError" ? "no answer within " + TIMEOUT_MS / 1000 + " s"
                                        : e.message);
  } finally {
    clearTimeout(timer);
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
"""

_BODY = """
<h1>txlb</h1>
<p id="summary">
  <span>algorithm <b id="algorithm">\u2013</b></span>
  <span>listening on <b id="listen">\u2013</b></span>
  <span>up for <b id="uptime">\u2013</b></span>
  <span>version <b id="version">\u2013</b></span>
  <span>backends <b id="health">\u2013</b></span>
  <span>queue <b id="queue">\u2013</b></span>
  <span>updated <b id="updated">never</b></span>
</p>
<p id="error" role="alert" hidden></p>
<p id="insecure" role="alert" hidden>TLS to backends is NOT VERIFIED
  (--backend-insecure): any certificate is accepted.</p>
<noscript><p class="noscript">This page needs JavaScript. The same data is at
  <a href="status">status</a>, as JSON.</p></noscript>
<table id="table">
  <thead><tr>
    <th>Backend</th><th>State</th><th class="num">Weight</th>
    <th class="num" title="requests in flight, out of the limit (--max-conn)">Active</th>
    <th class="num">Req/s</th><th class="num" title="since start">Requests</th>
    <th class="num" title="since start">Errors</th>
    <th class="num" title="failures in a row, on real traffic">Fails</th>
    <th class="num">Latency</th><th class="num" title="as the backend reports it">Load</th>
    <th title="the last active check">Health</th>
    <th>Last error</th>
  </tr></thead>
  <tbody id="backends"><tr><td class="empty" colspan="12">loading\u2026</td></tr></tbody>
</table>
<section id="shadow-section" hidden>
  <h2>Shadow policy <span id="shadow-name">\u2013</span></h2>
  <p id="shadow-summary">agrees with the live policy on <b id="shadow-agreement">\u2013</b>;
    errors <b id="shadow-errors">\u2013</b>. Requests it would have sent:</p>
  <table id="shadow-table">
    <thead><tr><th>Backend</th><th class="num">Picks</th><th class="num">Share</th></tr></thead>
    <tbody id="shadow-backends"></tbody>
  </table>
</section>
<h2>Last five minutes</h2>
<div id="charts"></div>
<footer>Refreshes every 2 s. The same data, as JSON: <a href="status">status</a>.</footer>
"""


def _hash(source: str) -> str:
    """
    The CSP source expression that allows exactly this inline text.
    """
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


_PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>txlb status</title>\n"
    f"<style>{_STYLE}</style>\n</head>\n<body>{_BODY}<script>{_SCRIPT}</script>\n</body>\n</html>\n"
).encode()

# Only this page's own script and style run, and the only connection it may
# open is to its own origin (the relative status URL).
_CSP = (
    f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
).encode("ascii")


class StatusPage(Resource):
    """
    The HTML status page: a leaf that answers C{GET} and C{HEAD} with the
    same static document.

    Mount it where its relative C{status} URL reaches the admin API's JSON,
    i.e. beside it: C{root.putChild(b"", StatusPage())} next to
    C{root.putChild(b"status", ...)}.  A deeper path under the page (C{/x}
    below a leaf) gets 404, since the page's relative URL would point at the
    wrong place from there.
    """

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        if request.postpath:
            return pages.notFound().render(request)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        # Operators must never see a cached page that then polls from a
        # different build; the data itself is fetched with no-store too.
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Security-Policy", _CSP)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        return _PAGE

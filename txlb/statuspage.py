"""
The admin listener's HTML status page, for operators.

One self-contained page, in the spirit of HAProxy's stats page: tables of
the backends that refresh themselves every two seconds from the admin API's
JSON C{status}, and charts of the last five minutes, which the first poll
fills from the history the admin API keeps (L{txlb.history}).  Everything is
inline (style, script, no fonts or icons), because neither this machine nor
an operator's network may reach anything else.  The page is static: the
script does the rendering, so the server side has nothing to keep in step
with the JSON.

The page has a section per pool (the status JSON's C{pools}), each with
its name, its algorithm and its backends, and the route table (C{routes}):
each route's label, its conditions and action in a few words, and the
requests it matched.  The site of one pool, C{default}, and no routes (the
command line's backends) shows neither pool names nor routes: it looks as
it did before there were pools.  A table is rendered from a list of
columns, each saying when it applies (the weight only under an algorithm
that uses weights, the actions only with the admin token), and the line
under a pool's name from a list of facts: a new column or fact is one
entry.  Rows are updated in place, so a weight being typed survives the
refresh.  The charts and the shadow policy's counts are per pool too: one
address may be a backend of two pools, with its own counts in each.

With the admin token, entered once in the page and kept in the tab's
C{sessionStorage}, the page drains, restores and reweights backends through
the admin API, each in its own pool (C{pools/NAME/backends/...}, or
C{backends/...} for the pool C{default}), sending the token as
C{Authorization: Bearer}; without it, the page is read-only.  See
L{txlb.admin.refuseChange} for why that header, with C{Sec-Fetch-Site} and
C{Origin} checks, keeps other sites' pages from making changes through an
operator's browser.

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
  --draining: #9a6700; --draining-bg: #fff8c5; --accent: #0969da;
}
@media (prefers-color-scheme: dark) {
  :root {
    --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --line: #3d444d; --stripe: #151b23;
    --up: #3fb950; --up-bg: #12261e; --down: #f85149; --down-bg: #2d1214;
    --draining: #d29922; --draining-bg: #272115; --accent: #4493f8;
  }
}
* { box-sizing: border-box; }
/* Elements laid out below (flex) must still hide when hidden. */
[hidden] { display: none !important; }
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
#admin {
  display: flex; flex-wrap: wrap; align-items: center; gap: .4rem 1rem; margin: 0 0 1rem;
  color: var(--muted);
}
#admin form { display: flex; gap: .4rem; align-items: center; margin: 0; }
#admin-message.failed { color: var(--down); font-weight: 600; }
button, input {
  font: inherit; color: var(--fg); background: var(--bg);
  border: 1px solid var(--line); border-radius: 6px; padding: .15rem .55rem;
}
button { cursor: pointer; }
button:hover { border-color: var(--accent); }
input.weight { width: 4.5em; text-align: right; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
.stale table { opacity: .45; }
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
.last-error { min-width: 11rem; color: var(--muted); }
.empty { color: var(--muted); text-align: center; }
h2 { margin: 1.5rem 0 .5rem; font-size: 1.1rem; font-weight: 600; }
.note { margin: -.25rem 0 .75rem; color: var(--muted); font-size: .85rem; }
.chart-grid {
  display: grid; grid-template-columns: repeat(auto-fill, minmax(24rem, 1fr)); gap: 1rem;
}
.chart-group + .chart-group { margin-top: 1rem; }
h3.chart-pool { margin: 0 0 .5rem; font-size: 1rem; font-weight: 600; }
.pool-name { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.pool-facts {
  display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; margin: -.25rem 0 .6rem; color: var(--muted);
}
.pool-facts .failed { font-weight: 600; }
.shadow h3 { margin: 1rem 0 .5rem; font-size: 1rem; font-weight: 600; }
.card { padding: .6rem .8rem; border: 1px solid var(--line); border-radius: 6px; }
.card h3 { margin: 0 0 .4rem; font: 600 .9rem ui-monospace, "DejaVu Sans Mono", monospace; }
.chart, .axis {
  display: grid; grid-template-columns: 6.5rem 3.2rem 1fr; align-items: stretch; gap: .4rem;
}
.chart { margin-bottom: .35rem; }
.chart-label { align-self: center; color: var(--muted); font-size: .8rem; }
.chart-scale {
  display: flex; flex-direction: column; justify-content: space-between; text-align: right;
  color: var(--muted); font-size: .7rem; line-height: 1;
}
.chart svg { width: 100%; height: 3rem; }
.chart polyline {
  fill: none; stroke: var(--up); stroke-width: 1.5; stroke-linecap: round; stroke-linejoin: round;
}
.chart line { stroke: var(--line); stroke-width: 1; }
.chart line.grid { stroke-dasharray: 2 3; }
.axis-ticks { position: relative; height: 1rem; color: var(--muted); font-size: .7rem; }
.axis-ticks span { position: absolute; top: 0; transform: translateX(-50%); white-space: nowrap; }
.axis-ticks span:first-child { transform: none; }
.axis-ticks span:last-child { transform: translateX(-100%); }
.shadow-table { width: auto; }
#routes-table .message { min-width: 14rem; }
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
const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "txlb-admin-token";
const $ = (id) => document.getElementById(id);
let lastUpdate = null;
// The history's samples, oldest first, and how far apart and back they go.
let samples = [];
let interval = 2;
let span = 300;
// What the admin API said of changes, and the token given in this tab.
let access = {token: false, authorized: false};
let token = null;
try {
  token = sessionStorage.getItem(TOKEN_KEY);
} catch (e) {
  // Storage disabled: the token lasts as long as the page.
}

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

function element(tag, className, text) {
  const made = document.createElement(tag);
  if (className) made.className = className;
  if (text !== undefined) made.textContent = text;
  return made;
}

function button(text, className, action) {
  const made = element("button", className, text);
  made.type = "button";
  made.addEventListener("click", action);
  return made;
}

function plural(count, word) {
  return count + " " + word + (count === 1 ? "" : "s");
}

// The table's columns: each has a heading, a cell it keeps up to date
// (text(backend), or update(td, backend, pool), false to fall back on the
// text), and says when it applies to a pool (the weight only under an
// algorithm that uses weights, the actions only with the admin token).
const COLUMNS = [
  {key: "address", title: "Backend", className: "address",
   text: (b) => show(b.address) + (b.tls ? " (TLS)" : "")},
  {key: "state", title: "State", update: updateState},
  {key: "weight", title: "Weight", className: "num", when: (pool) => pool.usesWeights,
   text: (b) => show(b.weight),
   update: (td, b, pool) => access.authorized ? updateWeight(td, b, pool) : false},
  {key: "active", title: "Active", tip: "requests in flight, out of the limit (--max-conn)",
   className: "num", text: (b) => show(b.active) + (b.limit ? " / " + b.limit : "")},
  {key: "rps", title: "Req/s", className: "num",
   text: (b) => show(b.requestsPerSecond, oneDecimal)},
  {key: "requests", title: "Requests", tip: "since start", className: "num",
   text: (b) => show(b.requests)},
  {key: "errors", title: "Errors", className: "num",
   tip: "since start: requests that ended in an error of the backend's, + failed health checks",
   text: (b) => show(b.errors) + (b.checkFailures ? " + " + plural(b.checkFailures, "check") : "")},
  {key: "failures", title: "Fails", tip: "failures in a row, on real traffic", className: "num",
   text: (b) => show(b.failures)},
  {key: "latency", title: "Latency", className: "num",
   text: (b) => show(b.latencyMs, milliseconds)},
  {key: "load", title: "Load", tip: "as the backend reports it", className: "num",
   text: (b) => show(b.load, percent)},
  {key: "health", title: "Health", tip: "the last active check",
   text: (b) => show(b.health),
   className: (b) => String(b.health).startsWith("failed") ? "message failed" : "message"},
  {key: "lastError", title: "Last error", tip: "of a request or a health check",
   className: "message last-error",
   text: (b) => b.lastError === null || b.lastError === undefined ? "\u2013"
     : String(b.lastError) + (typeof b.lastErrorAge === "number"
                              ? " (" + duration(b.lastErrorAge) + " ago)" : "")},
  {key: "actions", title: "Actions", when: () => access.authorized, update: updateActions},
];

function updateState(td, b) {
  const state = STATES.includes(b.state) ? b.state : "unknown";
  let badge = td.firstChild;
  if (!badge) td.append(badge = element("span"));
  badge.className = "state state-" + state;
  badge.textContent = show(b.state);
}

// With the token, the weight is a field and a button; a weight being typed
// is left alone until it is set.
function updateWeight(td, b, pool) {
  let input = td.querySelector("input");
  if (!input) {
    input = element("input", "weight");
    input.type = "number";
    input.min = 1;
    input.max = 1000;
    input.step = 1;
    input.setAttribute("aria-label", "weight of " + b.address);
    input.addEventListener("input", () => { input.dataset.edited = "yes"; });
    const set = button("Set", "set-weight", () => {
      const weight = Number(input.value);
      if (!Number.isInteger(weight) || weight < 1 || weight > 1000) {
        say("weight must be a whole number from 1 to 1000", true);
        return;
      }
      change("PATCH", pool.name, td.dataset.address, "", {weight: weight},
             "weight " + weight + " for " + where(pool.name, td.dataset.address))
        .then((ok) => { if (ok) delete input.dataset.edited; });
    });
    td.replaceChildren(input, " ", set);
  }
  td.dataset.address = b.address;
  if (document.activeElement !== input && !input.dataset.edited) input.value = b.weight;
}

// Drain, or restore a draining backend, in its own pool: one address may
// be a backend of two pools.
function updateActions(td, b, pool) {
  const draining = b.state === "draining";
  let action = td.firstChild;
  if (!action || action.dataset.draining !== String(draining)) {
    const named = where(pool.name, b.address);
    action = draining
      ? button("Restore", "restore", () =>
          change("PATCH", pool.name, b.address, "", {draining: false}, "restore " + named))
      : button("Drain", "drain", () =>
          change("POST", pool.name, b.address, "/drain", undefined, "drain " + named));
    action.dataset.draining = String(draining);
    td.replaceChildren(action);
  }
}

// The pools the status describes, each with its name, algorithm and
// backends.
function poolsOf(status) {
  return Array.isArray(status.pools) ? status.pools : [];
}

// Whether the page names the pools: not for the site of one pool,
// "default", and no routes (the command line's backends), which looks as
// it did before there were pools.
let titled = false;

function isTitled(status, pools) {
  const routes = Array.isArray(status.routes) ? status.routes : [];
  return pools.length > 1 || routes.length > 0 || pools.some((p) => p.name !== "default");
}

// A backend as the messages name it: in its pool, when there are pools.
function where(pool, address) {
  return titled ? address + " in pool " + pool : address;
}

function counted(backends) {
  const counts = {up: 0, down: 0, draining: 0};
  for (const b of backends) if (b.state in counts) counts[b.state] += 1;
  return counts;
}

function health(counts) {
  return counts.up + " up, " + counts.down + " down, " + counts.draining + " draining";
}

// What the line under a pool's name says of it, in order; each says when
// it applies.
const POOL_FACTS = [
  {key: "algorithm", text: (pool) => "algorithm " + show(pool.algorithm)},
  {key: "backends",
   text: (pool) => plural(pool.backends.length, "backend") + ": " + health(counted(pool.backends))},
  {key: "queue", when: (pool) => pool.maxConn && pool.queue,
   text: (pool) => "queue " + pool.queue.length + " waiting (at most " + pool.queue.max + ")"},
  {key: "insecure", when: (pool) => pool.backendTLS === "insecure", className: "failed",
   text: () => "TLS to backends NOT VERIFIED"},
];

// One pool's section: its name and facts when the page names pools, a
// table whose columns follow the pool and the access, whose rows follow
// its backends, updated in place, and its shadow policy's counts.
const sections = new Map();

function renderPool(pool) {
  let section = sections.get(pool.name);
  if (!section) {
    section = {root: element("section", "pool"), rows: new Map(), columns: "",
               head: element("div", "pool-head"), table: element("table", "backends"),
               shadow: element("div", "shadow")};
    section.root.dataset.pool = pool.name;
    section.root.replaceChildren(section.head, section.table, section.shadow);
    sections.set(pool.name, section);
  }
  section.head.hidden = !titled;
  if (titled) {
    const title = element("h2", "pool-title", "Pool ");
    title.append(element("span", "pool-name", String(pool.name)));
    const facts = element("p", "pool-facts");
    for (const fact of POOL_FACTS) {
      if (fact.when && !fact.when(pool)) continue;
      facts.append(element("span", fact.className || "", fact.text(pool)));
    }
    section.head.replaceChildren(title, facts);
  }
  const columns = COLUMNS.filter((column) => !column.when || column.when(pool));
  const names = columns.map((column) => column.key).join(" ");
  if (section.columns !== names) {
    const head = element("tr");
    for (const column of columns) {
      const th = element("th", column.className === "num" ? "num" : "", column.title);
      if (column.tip) th.title = column.tip;
      head.append(th);
    }
    const table = element("table", "backends");
    table.append(element("thead"), element("tbody"));
    table.tHead.append(head);
    section.table.replaceWith(table);
    section.table = table;
    section.rows.clear();
    section.columns = names;
  }
  const body = section.table.tBodies[0];
  const seen = new Set();
  for (const b of pool.backends) {
    const address = String(b.address);
    seen.add(address);
    if (!section.rows.has(address)) {
      const row = element("tr");
      for (const column of columns) row.insertCell();
      section.rows.set(address, row);
    }
    const row = section.rows.get(address);
    columns.forEach((column, c) => {
      const td = row.cells[c];
      if (!column.update || column.update(td, b, pool) === false) td.textContent = column.text(b);
      const className = typeof column.className === "function" ? column.className(b)
                                                                : column.className;
      td.className = className || "";
    });
  }
  for (const [address, row] of section.rows) {
    if (!seen.has(address)) section.rows.delete(address);
  }
  // Rows are moved only when their order changed: a moved row loses the
  // focus of a weight being typed.
  const rows = pool.backends.map((b) => section.rows.get(String(b.address)));
  if (!rows.length) {
    const row = element("tr");
    const td = row.insertCell();
    td.className = "empty";
    td.colSpan = columns.length;
    td.textContent = "no backends";
    rows.push(row);
  }
  if (rows.length !== body.rows.length || rows.some((row, i) => body.rows[i] !== row)) {
    body.replaceChildren(...rows);
  }
  renderShadow(section.shadow, pool);
  return section.root;
}

// The routes, in order: what each matches and does, in a few words, from
// the table the file gives, and the requests it matched.
function anyOf(value) {
  return [].concat(value).map(String).join(" or ");
}

// A header's or a query's table: each name with its value, "*" any.
function pairs(table, separator) {
  return Object.entries(table || {}).map(([name, value]) =>
    value === "*" ? name + " (any value)" : name + separator + value).join(", ");
}

const CONDITIONS = [
  {key: "host", text: (v) => "host " + anyOf(v)},
  {key: "path", text: (v) => "path " + v},
  {key: "path-prefix", text: (v) => "path-prefix " + v},
  {key: "path-regex", text: (v) => "path-regex " + v},
  {key: "method", text: (v) => "method " + anyOf(v)},
  {key: "header", text: (v) => "header " + pairs(v, ": ")},
  {key: "query", text: (v) => "query " + pairs(v, "=")},
  {key: "client", text: (v) => "client " + anyOf(v)},
];

// Each condition of a route, all of which must hold, or "every request".
function conditions(config) {
  const said = CONDITIONS.filter((c) => config[c.key] !== undefined)
    .map((c) => c.text(config[c.key]));
  return said.length ? said.join("; ") : "every request";
}

function action(config) {
  let said;
  if (config.pool !== undefined) said = "pool " + config.pool;
  else if (config.split !== undefined) {
    said = "split " + Object.entries(config.split).map(([p, w]) => p + " " + w).join(", ") +
      (config["split-key"] ? " by " + config["split-key"] : "");
  } else if (config.respond !== undefined) said = "respond " + config.respond;
  else if (config.redirect !== undefined) {
    said = "redirect " + (config["redirect-status"] || 308) + " " + config.redirect;
  } else if (config.router !== undefined) said = "router " + config.router;
  else said = "\u2013";
  if (config.mirror !== undefined) {
    const share = config["mirror-percent"];
    said += "; mirror " + config.mirror + (share === undefined ? "" : " " + share + " %");
  }
  const rewrites = ["strip-prefix", "set-host", "request-headers", "response-headers"]
    .filter((key) => config[key] !== undefined && config[key] !== false)
    .map((key) => typeof config[key] === "string" ? key + " " + config[key] : key);
  if (rewrites.length) said += "; rewrites " + rewrites.join(", ");
  return said;
}

const ROUTE_COLUMNS = [
  {key: "label", title: "Route", className: "address", text: (r) => show(r.label)},
  {key: "conditions", title: "Conditions", className: "message",
   text: (r) => conditions(r.config || {})},
  {key: "action", title: "Action", className: "message", text: (r) => action(r.config || {})},
  {key: "requests", title: "Requests", tip: "matched since start", className: "num",
   text: (r) => show(r.requests)},
];

function renderRoutes(status) {
  const routes = Array.isArray(status.routes) ? status.routes : [];
  $("routes-section").hidden = !routes.length;
  if (!$("routes-head").cells.length) {
    for (const column of ROUTE_COLUMNS) {
      const th = element("th", column.className === "num" ? "num" : "", column.title);
      if (column.tip) th.title = column.tip;
      $("routes-head").append(th);
    }
  }
  $("routes").replaceChildren(...routes.map((route) => {
    const row = element("tr");
    for (const column of ROUTE_COLUMNS) {
      row.append(element("td", column.className, column.text(route)));
    }
    return row;
  }));
}

function render(status) {
  const pools = poolsOf(status);
  titled = isTitled(status, pools);
  const backends = pools.flatMap((pool) => pool.backends);
  const counts = counted(backends);
  for (const name of sections.keys()) {
    if (!pools.some((pool) => pool.name === name)) sections.delete(name);
  }
  $("pools").replaceChildren(...pools.map(renderPool));
  renderRoutes(status);
  $("algorithm").textContent = show(status.algorithm);
  $("algorithm-summary").hidden = titled;
  $("pool-summary").hidden = !titled;
  $("pool-count").textContent = String(pools.length);
  $("listen").textContent = show([].concat(status.listen).join(", "));
  const insecure = pools.filter((pool) => pool.backendTLS === "insecure");
  $("insecure").hidden = !insecure.length;
  $("insecure-pools").textContent = titled && insecure.length
    ? " In " + (insecure.length === 1 ? "pool " : "pools ") +
      insecure.map((pool) => pool.name).join(", ") + "."
    : "";
  $("uptime").textContent = show(status.uptime, duration);
  const queue = status.queue;
  $("queue").textContent = queue ? queue.length + " waiting (at most " + queue.max + ")" : "\u2013";
  $("version").textContent = show(status.version);
  $("etcd-summary").hidden = !status.etcd;
  if (status.etcd) {
    $("etcd").textContent =
      (status.etcd.connected ? "connected" : "NOT CONNECTED") +
      ", revision " + status.etcd.revision;
  }
  $("health").textContent = health(counts);
  document.title = "txlb: " + counts.up + "/" + backends.length + " up";
  lastUpdate = new Date();
  $("updated").textContent = lastUpdate.toLocaleTimeString();
}

// Changes: with the token, drain, restore and weight; without, read-only.
function say(text, failed) {
  const message = $("admin-message");
  message.textContent = text;
  message.classList.toggle("failed", !!failed);
}

function renderAdmin() {
  $("admin").hidden = false;
  $("unlock").hidden = !access.token || access.authorized;
  $("lock").hidden = !access.authorized;
  $("admin-state").textContent = !access.token
    ? "Read-only: changes from this page need txlb started with --admin-token."
    : access.authorized ? "Changes enabled: drain, restore and weight below."
                        : "Read-only. Enter the admin token to drain, restore and reweight.";
}

function remember(value) {
  token = value;
  try {
    if (value === null) sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, value);
  } catch (e) {
    // Storage disabled: kept in the page only.
  }
}

function authorization() {
  return token === null ? {} : {Authorization: "Bearer " + token};
}

// The admin API's path of a pool's backends: the pool "default"'s without
// its name, as before there were pools.
function poolPath(pool) {
  return pool === "default" ? "" : "pools/" + encodeURIComponent(pool) + "/";
}

// Make a change of a backend of a pool through the admin API, say how it
// went, and refresh; true if it was made.
async function change(method, pool, address, suffix, body, what) {
  const headers = authorization();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let ok = false;
  try {
    const url = poolPath(pool) + "backends/" + encodeURIComponent(address) + suffix;
    const response = await fetch(url, {
      method: method, cache: "no-store", headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (e) {
      answer = null;
    }
    if (!response.ok) {
      throw new Error(answer && answer.error ? answer.error : "HTTP " + response.status);
    }
    say(what + ": done");
    ok = true;
  } catch (e) {
    say(what + ": " + e.message, true);
  }
  refresh();
  return ok;
}

// The charts: each a line over the last five minutes against a time axis,
// its scale from 0 to a round number at least its floor, so that noise
// stays small.
const CHARTS = [
  {key: "rps", title: "req/s", format: oneDecimal, floor: 10, scale: String},
  {key: "p99", title: "p99", format: milliseconds, floor: 50, scale: (n) => n + " ms"},
  {key: "active", title: "in flight", floor: 10, scale: String},
  {key: "load", title: "load", format: percent, floor: 1, scale: (n) => n * 100 + " %"},
  // With --max-conn: the backend's limit (learnt, with auto).
  {key: "limit", title: "limit", floor: 10, scale: String, when: (b) => b.limit},
];

// The smallest 1, 2 or 5 times a power of ten at least value.
function roundUp(value) {
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 5, 10]) {
    if (step * power >= value * (1 - 1e-9)) return Number((step * power).toPrecision(1));
  }
}

function add(history) {
  if (!history) return;
  interval = history.interval || interval;
  span = history.span || span;
  const last = samples.length ? samples[samples.length - 1].time : -Infinity;
  for (const sample of history.samples || []) if (sample.time > last) samples.push(sample);
  const newest = samples.length ? samples[samples.length - 1].time : 0;
  samples = samples.filter((sample) => sample.time > newest - span);
}

function svg(tag, attributes) {
  const made = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) made.setAttribute(name, value);
  return made;
}

function chart(spec, pool, address, newest) {
  const points = samples.map((sample) => {
    const values = ((sample.pools || {})[pool] || {})[address];
    const value = values ? values[spec.key] : null;
    return {time: sample.time, value: typeof value === "number" ? value : null};
  });
  const known = points.filter((p) => p.value !== null).map((p) => p.value);
  const top = roundUp(Math.max(spec.floor, ...known));
  const row = element("div", "chart chart-" + spec.key);
  const last = points.length ? points[points.length - 1].value : null;
  const scale = element("span", "chart-scale");
  scale.append(element("span", "chart-top", spec.scale(top)), element("span", "chart-zero", "0"));
  const picture = svg("svg", {viewBox: "0 0 300 60", preserveAspectRatio: "none"});
  for (let minute = 1; minute < span / 60; minute++) {
    const x = 300 - minute * 60 * 300 / span;
    picture.append(svg("line", {x1: x, y1: 0, x2: x, y2: 60, class: "grid",
                                "vector-effect": "non-scaling-stroke"}));
  }
  picture.append(svg("line", {x1: 0, y1: 30, x2: 300, y2: 30, class: "grid",
                              "vector-effect": "non-scaling-stroke"}));
  picture.append(svg("line", {x1: 0, y1: 59.5, x2: 300, y2: 59.5,
                              "vector-effect": "non-scaling-stroke"}));
  let line = [];
  let previous = null;
  // A value alone between two gaps is drawn as a dot.
  const flush = () => {
    if (line.length === 1) line.push(line[0]);
    if (line.length) {
      picture.append(svg("polyline", {points: line.join(" "),
                                      "vector-effect": "non-scaling-stroke"}));
    }
    line = [];
  };
  // A missing value, or a gap in the samples, breaks the line.
  for (const point of points) {
    if (point.value === null || (previous !== null && point.time - previous > 2.5 * interval)) {
      flush();
    }
    previous = point.time;
    if (point.value === null) continue;
    const x = 300 - (newest - point.time) * 300 / span;
    line.push(x.toFixed(1) + "," + (58 - Math.min(point.value / top, 1) * 56).toFixed(1));
  }
  flush();
  row.append(element("span", "chart-label", spec.title + " " + show(last, spec.format)),
             scale, picture);
  return row;
}

function axis() {
  const row = element("div", "axis");
  const ticks = element("div", "axis-ticks");
  const minutes = Math.round(span / 60);
  for (let minute = minutes; minute >= 0; minute--) {
    const tick = element("span", "", minute ? "\u2212" + minute + " min" : "now");
    tick.style.left = (100 - minute * 60 * 100 / span) + "%";
    ticks.append(tick);
  }
  row.append(element("span"), element("span"), ticks);
  return row;
}

// A card per backend, grouped by pool (under the pool's name when the page
// names pools): one address in two pools has a card in each.
function renderCharts(status) {
  const newest = samples.length ? samples[samples.length - 1].time : 0;
  const groups = poolsOf(status).map((pool) => {
    const group = element("div", "chart-group");
    group.dataset.pool = pool.name;
    const grid = element("div", "chart-grid");
    grid.append(...pool.backends.map((b) => {
      const card = element("div", "card");
      card.dataset.address = String(b.address);
      card.append(element("h3", "", String(b.address)),
                  ...CHARTS.filter((spec) => !spec.when || spec.when(b))
                    .map((spec) => chart(spec, pool.name, String(b.address), newest)),
                  axis());
      return card;
    }));
    if (titled) group.append(element("h3", "chart-pool", "Pool " + pool.name));
    group.append(grid);
    return group;
  });
  $("charts").replaceChildren(...groups);
}

// A pool's shadow policy: its agreement with the live one, and the
// requests it would have sent to each backend; nothing without one.
function renderShadow(holder, pool) {
  const shadow = pool.shadow;
  holder.hidden = !shadow;
  if (!shadow) {
    holder.replaceChildren();
    return;
  }
  const title = element(titled ? "h3" : "h2", "shadow-title", "Shadow policy ");
  title.append(element("span", "shadow-name", show(shadow.algorithm)));
  const summary = element("p", "shadow-summary", "agrees with the live policy on ");
  summary.append(
    element("b", "shadow-agreement",
            show(shadow.agreement, percent) + " of " + show(shadow.compared) + " picks"),
    "; errors ", element("b", "shadow-errors", show(shadow.errors)),
    ". Requests it would have sent:");
  const picks = shadow.picks || {};
  const total = Object.values(picks).reduce((a, b) => a + b, 0);
  const table = element("table", "shadow-table");
  const head = element("tr");
  head.append(element("th", "", "Backend"), element("th", "num", "Picks"),
              element("th", "num", "Share"));
  table.append(element("thead"), element("tbody"));
  table.tHead.append(head);
  table.tBodies[0].append(...pool.backends.map((b) => {
    const row = element("tr");
    const count = picks[b.address] || 0;
    row.append(element("td", "address", show(b.address)), element("td", "num", show(count)),
               element("td", "num", total ? percent(count / total) : "\u2013"));
    return row;
  }));
  holder.replaceChildren(title, summary, table);
}

function unavailable(reason) {
  const error = $("error");
  error.hidden = reason === null;
  $("pools").classList.toggle("stale", reason !== null);
  if (reason === null) return;
  error.textContent = "status unavailable: " + reason +
    (lastUpdate ? " (the table below is from " + lastUpdate.toLocaleTimeString() + ")" : "");
  document.title = "txlb: status unavailable";
}

let timer = null;
let asked = 0;
let shown = 0;

async function refresh() {
  clearTimeout(timer);
  const ticket = ++asked;
  const controller = new AbortController();
  const abort = setTimeout(() => controller.abort(), TIMEOUT_MS);
  const since = samples.length ? samples[samples.length - 1].time : 0;
  try {
    const response = await fetch("status?since=" + since, {
      cache: "no-store", signal: controller.signal, headers: authorization()});
    if (!response.ok) {
      throw new Error(("HTTP " + response.status + " " + response.statusText).trim());
    }
    let status;
    try {
      status = await response.json();
    } catch (e) {
      throw new Error("the answer is not JSON");
    }
    if (!status || !Array.isArray(status.pools)) {
      throw new Error("the answer has no list of pools");
    }
    // An answer overtaken by a later one is dropped.
    if (ticket < shown) return;
    shown = ticket;
    access = status.admin || {token: false, authorized: false};
    if (token !== null && !access.authorized) {
      remember(null);
      say("the admin token was refused", true);
    }
    add(status.history);
    render(status);
    renderAdmin();
    renderCharts(status);
    unavailable(null);
  } catch (e) {
    unavailable(e.name === "AbortError" ? "no answer within " + TIMEOUT_MS / 1000 + " s"
                                        : e.message);
  } finally {
    clearTimeout(abort);
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_MS);
  }
}

$("unlock").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = $("token");
  remember(field.value);
  field.value = "";
  say("");
  refresh();
});
$("lock").addEventListener("click", () => {
  remember(null);
  access = {token: access.token, authorized: false};
  say("");
  refresh();
});

refresh();
"""

_BODY = """
<h1>txlb</h1>
<p id="summary">
  <span id="algorithm-summary">algorithm <b id="algorithm">\u2013</b></span>
  <span id="pool-summary" hidden>pools <b id="pool-count">\u2013</b></span>
  <span>listening on <b id="listen">\u2013</b></span>
  <span>up for <b id="uptime">\u2013</b></span>
  <span>version <b id="version">\u2013</b></span>
  <span>backends <b id="health">\u2013</b></span>
  <span>queue <b id="queue">\u2013</b></span>
  <span id="etcd-summary" hidden>etcd <b id="etcd">\u2013</b></span>
  <span>updated <b id="updated">never</b></span>
</p>
<p id="error" role="alert" hidden></p>
<p id="insecure" role="alert" hidden>TLS to backends is NOT VERIFIED
  (--backend-insecure): any certificate is accepted.<span id="insecure-pools"></span></p>
<noscript><p class="noscript">This page needs JavaScript. The same data is at
  <a href="status">status</a>, as JSON.</p></noscript>
<div id="admin" hidden>
  <span id="admin-state"></span>
  <form id="unlock" hidden>
    <input id="token" type="password" autocomplete="off" required placeholder="admin token"
      aria-label="admin token">
    <button type="submit">Unlock changes</button>
  </form>
  <button id="lock" type="button" hidden>Lock</button>
  <span id="admin-message" role="status"></span>
</div>
<section id="routes-section" hidden>
  <h2>Routes</h2>
  <p class="note">In order: the first whose conditions all hold takes the request.</p>
  <table id="routes-table">
    <thead><tr id="routes-head"></tr></thead>
    <tbody id="routes"></tbody>
  </table>
</section>
<div id="pools"><p class="empty">loading\u2026</p></div>
<h2>Last five minutes</h2>
<p class="note">Sampled every 2 s by txlb itself, so the charts show the last five minutes
  as soon as the page opens. Each scale starts at 0 and reaches at least 10 req/s, 50 ms,
  10 requests in flight and 100 % load.</p>
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

# Only this page's own script and style run, and the only connections it may
# open are to its own origin (the relative status and backends URLs).
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

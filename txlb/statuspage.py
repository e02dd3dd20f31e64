"""
The admin listener's HTML status page, for operators.

One self-contained page, in the spirit of HAProxy's stats page: a table of
the backends that refreshes itself every two seconds from the admin API's
JSON C{status}, and charts of the last five minutes, which the first poll
fills from the history the admin API keeps (L{txlb.history}).  Everything is
inline (style, script, no fonts or icons), because neither this machine nor
an operator's network may reach anything else.  The page is static: the
script does the rendering, so the server side has nothing to keep in step
with the JSON.

The table is rendered from a list of pools, each with its algorithm and
backends, and from a list of columns, each saying when it applies (the
weight only under an algorithm that uses weights, the actions only with the
admin token): today there is one pool, the balancer's.  Rows are updated in
place, so a weight being typed survives the refresh.

With the admin token, entered once in the page and kept in the tab's
C{sessionStorage}, the page drains, restores and reweights backends through
the admin API, sending the token as C{Authorization: Bearer}; without it,
the page is read-only.  See L{txlb.admin.refuseChange} for why that header,
with C{Sec-Fetch-Site} and C{Origin} checks, keeps other sites' pages from
making changes through an operator's browser.

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
#charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(24rem, 1fr)); gap: 1rem; }
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

// The table's columns: each has a heading, a cell it keeps up to date, and
// says when it applies to a pool (the weight only under an algorithm that
// uses weights, the actions only with the admin token).
const COLUMNS = [
  {key: "address", title: "Backend", className: "address",
   text: (b) => show(b.address) + (b.tls ? " (TLS)" : "")},
  {key: "state", title: "State", update: updateState},
  {key: "weight", title: "Weight", className: "num", when: (pool) => pool.usesWeights,
   text: (b) => show(b.weight), update: (td, b) => access.authorized ? updateWeight(td, b) : false},
  {key: "active", title: "Active", tip: "requests in flight", className: "num",
   text: (b) => show(b.active)},
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
function updateWeight(td, b) {
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
      change("PATCH", td.dataset.address, "", {weight: weight},
             "weight " + weight + " for " + td.dataset.address)
        .then((ok) => { if (ok) delete input.dataset.edited; });
    });
    td.replaceChildren(input, " ", set);
  }
  td.dataset.address = b.address;
  if (document.activeElement !== input && !input.dataset.edited) input.value = b.weight;
}

function updateActions(td, b) {
  const draining = b.state === "draining";
  let action = td.firstChild;
  if (!action || action.dataset.draining !== String(draining)) {
    action = draining
      ? button("Restore", "restore", () =>
          change("PATCH", b.address, "", {draining: false}, "restore " + b.address))
      : button("Drain", "drain", () =>
          change("POST", b.address, "/drain", undefined, "drain " + b.address));
    action.dataset.draining = String(draining);
    td.replaceChildren(action);
  }
}

// The pools the status describes, each with its algorithm and backends:
// today the balancer's one.
function poolsOf(status) {
  return [{name: "", algorithm: status.algorithm, usesWeights: status.usesWeights !== false,
           backends: status.backends}];
}

// One pool's section: a table whose columns follow the pool and the access,
// whose rows follow its backends, updated in place.
const sections = new Map();

function renderPool(pool) {
  let section = sections.get(pool.name);
  if (!section) {
    section = {root: element("section", "pool"), rows: new Map(), columns: ""};
    section.root.dataset.pool = pool.name;
    sections.set(pool.name, section);
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
    section.root.replaceChildren(table);
    section.rows.clear();
    section.columns = names;
  }
  const body = section.root.querySelector("tbody");
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
      if (!column.update || column.update(td, b) === false) td.textContent = column.text(b);
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
  return section.root;
}

function render(status) {
  const counts = {up: 0, down: 0, draining: 0};
  for (const b of status.backends) if (b.state in counts) counts[b.state] += 1;
  $("pools").replaceChildren(...poolsOf(status).map(renderPool));
  $("algorithm").textContent = show(status.algorithm);
  $("listen").textContent = show([].concat(status.listen).join(", "));
  $("insecure").hidden = status.backendTLS !== "insecure";
  $("uptime").textContent = show(status.uptime, duration);
  $("version").textContent = show(status.version);
  $("etcd-summary").hidden = !status.etcd;
  if (status.etcd) {
    $("etcd").textContent =
      (status.etcd.connected ? "connected" : "NOT CONNECTED") +
      ", revision " + status.etcd.revision;
  }
  const total = status.backends.length;
  $("health").textContent =
    counts.up + " up, " + counts.down + " down, " + counts.draining + " draining";
  document.title = "txlb: " + counts.up + "/" + total + " up";
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

// Make a change through the admin API, say how it went, and refresh; true
// if it was made.
async function change(method, address, suffix, body, what) {
  const headers = authorization();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let ok = false;
  try {
    const response = await fetch("backends/" + encodeURIComponent(address) + suffix, {
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

function chart(spec, address, newest) {
  const points = samples.map((sample) => {
    const values = sample.backends[address];
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

function renderCharts(status) {
  const newest = samples.length ? samples[samples.length - 1].time : 0;
  const cards = status.backends.map((b) => {
    const card = element("div", "card");
    card.dataset.address = String(b.address);
    card.append(element("h3", "", String(b.address)),
                ...CHARTS.map((spec) => chart(spec, String(b.address), newest)), axis());
    return card;
  });
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
    const row = element("tr");
    const count = picks[b.address] || 0;
    row.append(element("td", "address", show(b.address)), element("td", "num", show(count)),
               element("td", "num", total ? percent(count / total) : "\u2013"));
    return row;
  });
  $("shadow-backends").replaceChildren(...rows);
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
    if (!status || !Array.isArray(status.backends)) {
      throw new Error("the answer has no list of backends");
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
    renderShadow(status);
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
  <span>algorithm <b id="algorithm">\u2013</b></span>
  <span>listening on <b id="listen">\u2013</b></span>
  <span>up for <b id="uptime">\u2013</b></span>
  <span>version <b id="version">\u2013</b></span>
  <span>backends <b id="health">\u2013</b></span>
  <span id="etcd-summary" hidden>etcd <b id="etcd">\u2013</b></span>
  <span>updated <b id="updated">never</b></span>
</p>
<p id="error" role="alert" hidden></p>
<p id="insecure" role="alert" hidden>TLS to backends is NOT VERIFIED
  (--backend-insecure): any certificate is accepted.</p>
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
<div id="pools"><p class="empty">loading\u2026</p></div>
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

"""
The HTML status page: its HTTP response in memory with C{treq.testing}; the
page itself rendered by a real headless Chromium (Debian's C{chromium})
against a loopback listener that serves a fake of the admin API's JSON; and
the page used as an operator uses it (the token typed, buttons clicked)
against the real admin API, through the DevTools protocol
(L{tests.devtools}).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import math
import os
import re
import signal
import struct
import subprocess
from html.parser import HTMLParser
from typing import Any

import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from tests.devtools import CHROMIUM, HEADLESS, SETSID, Browser
from tests.helpers import CONFIG, GET, OK, ServiceHarness
from txlb.admin import AdminResource, AdminSite
from txlb.statuspage import StatusPage

# The JSON the admin API's GET status returns (txlb/admin.py).
EXAMPLE: dict[str, Any] = {
    "version": "0.1.0",
    "uptime": 12.5,
    "algorithm": "weighted",
    "usesWeights": True,
    "listen": "tcp:8080",
    "admin": {"token": False, "authorized": False},
    "backends": [
        {
            "address": "localhost:8081",
            "weight": 1,
            "state": "up",
            "active": 0,
            "requests": 120,
            "failures": 0,
            "lastError": None,
            "lastErrorAge": None,
            "health": "passed",
            "requestsPerSecond": 3.2,
            "errors": 1,
            "checkFailures": 0,
            "latencyMs": 1.4,
        },
        {
            "address": "localhost:8082",
            "weight": 3,
            "state": "draining",
            "active": 2,
            "requests": 340,
            "failures": 2,
            "lastError": "Connection was refused",
            "lastErrorAge": 75.2,
            "health": "failed: status 500",
            "requestsPerSecond": 0.0,
            "errors": 7,
            "checkFailures": 0,
            "latencyMs": None,
        },
    ],
}

# The header and the two rows EXAMPLE renders as, column by column.
EXAMPLE_HEADER = [
    "Backend",
    "State",
    "Weight",
    "Active",
    "Req/s",
    "Requests",
    "Errors",
    "Fails",
    "Latency",
    "Load",
    "Health",
    "Last error",
]
EXAMPLE_ROWS = [
    ["localhost:8081", "up", "1", "0", "3.2", "120", "1", "0", "1.4 ms", "–", "passed", "–"],
    [
        "localhost:8082",
        "draining",
        "3",
        "2",
        "0.0",
        "340",
        "7",
        "2",
        "–",
        "–",
        "failed: status 500",
        "Connection was refused (1m 15s ago)",
    ],
]

SCRIPT = "<script>alert(1)</script>"

#: When the newest sample of the fake histories was taken.
NOW = 1_800_000_000.0


def history(count: int, **values: Any) -> dict[str, Any]:
    """
    A history of C{count} samples 2 s apart, the newest at L{NOW}: the
    first backend's are C{values}, each a function of the sample's index
    (from 0, the oldest) or a constant; the second backend's none.
    """
    samples = []
    for k in range(count):
        first = {
            key: (value(k) if callable(value) else value)
            for key, value in {"rps": 0.0, "p99": None, "active": 0, "load": None, **values}.items()
        }
        backends = {
            "localhost:8081": first,
            "localhost:8082": {"rps": 0.0, "p99": None, "active": 2, "load": None},
        }
        samples.append(
            {
                "time": NOW - 2 * (count - 1 - k),
                "backends": backends,
                "pools": {"default": backends},
            }
        )
    return {"interval": 2.0, "span": 300.0, "samples": samples}


class FakeStatus(Resource):
    """
    The admin API's C{status}: a fixed JSON answer, then, after
    C{failAfter} answers, C{503}.  A C{history} in it is the whole ring:
    each answer has the samples after the C{since} asked for.

    @ivar since: The C{since} of each request, in order.
    """

    isLeaf = True

    def __init__(self, payload: dict[str, Any], failAfter: int | None = None) -> None:
        super().__init__()
        self.payload = payload
        self.failAfter = failAfter
        self.requests = 0
        self.since: list[float] = []

    def render_GET(self, request: server.Request) -> bytes:
        self.requests += 1
        if self.failAfter is not None and self.requests > self.failAfter:
            request.setResponseCode(503)
            return b"admin API is down\n"
        since = float(request.args[b"since"][0])
        self.since.append(since)
        answer = onePool(self.payload)
        if "history" in answer:
            whole = answer["history"]
            answer["history"] = {
                **whole,
                "samples": [s for s in whole["samples"] if s["time"] > since],
            }
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(answer).encode()


def onePool(payload: dict[str, Any]) -> dict[str, Any]:
    """
    C{payload} as the admin API answers for the site of one pool and no
    routes (the command line's backends), unless it has its own pools:
    the top level's algorithm, backends and shadow are the pool
    C{default}'s.
    """
    if "pools" in payload:
        return dict(payload)
    pool = {
        "name": "default",
        "algorithm": payload["algorithm"],
        "usesWeights": payload["usesWeights"],
        "backendTLS": payload.get("backendTLS", "verified"),
        "shadow": payload.get("shadow"),
        "backends": payload["backends"],
    }
    return {**payload, "pools": [pool], "routes": []}


def withHistory(count: int, **values: Any) -> dict[str, Any]:
    """
    L{EXAMPLE} with a L{history} of C{count} samples of C{values}.
    """
    return {**copy.deepcopy(EXAMPLE), "history": history(count, **values)}


def backendOf(address: str, **changes: Any) -> dict[str, Any]:
    """
    The first backend of L{EXAMPLE} at C{address}, with C{changes}.
    """
    return {**copy.deepcopy(EXAMPLE["backends"][0]), "address": address, **changes}


def poolOf(
    name: str, algorithm: str, backends: list[dict[str, Any]], **more: Any
) -> dict[str, Any]:
    """
    A pool as C{/status} lists it.
    """
    pool = {
        "name": name,
        "algorithm": algorithm,
        "usesWeights": algorithm not in ("roundrobin", "leastconn"),
        "backendTLS": "verified",
        "shadow": None,
        "backends": backends,
    }
    return {**pool, **more}


#: Routes as C{/status} lists them: their label, their table as the file
#: gives it, and the requests each matched.
ROUTES: list[dict[str, Any]] = [
    {
        "label": "api",
        "config": {"name": "api", "host": "api.example.com", "path-prefix": "/v1", "pool": "api"},
        "requests": 12,
    },
    {
        "label": "2",
        "config": {"path-prefix": "/internal", "respond": 403, "body": "no"},
        "requests": 3,
    },
    {
        "label": "3",
        "config": {
            "host": ["a.example.com", "*.b.example.com"],
            "method": ["GET", "HEAD"],
            "header": {"X-Canary": "1", "X-Debug": "*"},
            "query": {"debug": "1"},
            "client": "10.0.0.0/8",
            "redirect": "https://{host}{uri}",
            "redirect-status": 301,
        },
        "requests": 0,
    },
    {
        "label": "4",
        "config": {
            "path": "/login",
            "split": {"api": 95, "web": 5},
            "split-key": "cookie:session",
            "mirror": "web",
            "mirror-percent": 10,
            "set-host": "internal",
            "request-headers": {"remove": ["X-Debug"]},
        },
        "requests": 40,
    },
    {
        "label": "5",
        "config": {"path-regex": "/r/[0-9]+", "router": "mycompany.routing:ByTenant"},
        "requests": 1,
    },
    {"label": "6", "config": {"pool": "web"}, "requests": 100},
]

#: A site of two pools, C{api} and C{web}, with C{localhost:8081} in both,
#: and L{ROUTES}; at the top, the first pool's (there is no C{default}).
TWO_POOLS: dict[str, Any] = {
    **copy.deepcopy(EXAMPLE),
    "algorithm": "ewma",
    "pools": [
        poolOf(
            "api",
            "ewma",
            [backendOf("localhost:8081"), backendOf("localhost:8082", state="down", weight=2)],
        ),
        poolOf(
            "web",
            "roundrobin",
            [backendOf("localhost:8081", requests=7, state="draining")],
            backendTLS="insecure",
        ),
    ],
    "routes": ROUTES,
}
TWO_POOLS["backends"] = TWO_POOLS["pools"][0]["backends"]


def sections(dom: str) -> dict[str, tuple[str, RenderedPage]]:
    """
    Each pool's section of the page, by the pool's name: its markup, and
    its backends table's headings and rows.
    """
    return {
        html.unescape(name): (section, RenderedPage(section))
        for name, section in re.findall(
            r'<section class="pool" data-pool="([^"]*)">(.*?)</section>', dom, re.DOTALL
        )
    }


def routeRows(dom: str) -> list[list[str]]:
    """
    The route table's rows, as cell texts.
    """
    [body] = re.findall(r'<tbody id="routes">(.*?)</tbody>', dom, re.DOTALL)
    return [
        [html.unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


def adminTree(status: Resource) -> Resource:
    """
    The page mounted as the README says: at C{/}, beside C{/status}.
    """
    root = Resource()
    root.putChild(b"", StatusPage())
    root.putChild(b"status", status)
    return root


class ResponseTests(SynchronousTestCase):
    """
    What C{GET /} answers, in memory.
    """

    def get(self, url: str = "http://admin/", method: str = "GET") -> tuple[Any, bytes]:
        stub = StubTreq(adminTree(FakeStatus(EXAMPLE)))
        response = self.successResultOf(stub.request(method, url))
        return response, self.successResultOf(response.content())

    def script(self, body: bytes) -> str:
        [script] = re.findall(rb"<script>(.*?)</script>", body, re.DOTALL)
        return script.decode()

    def test_html(self) -> None:
        """
        The page is HTML in UTF-8 that no cache keeps: an operator must never
        get yesterday's page.
        """
        response, body = self.get()
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("Content-Type"), ["text/html; charset=utf-8"]
        )
        self.assertEqual(response.headers.getRawHeaders("Cache-Control"), ["no-store"])
        self.assertTrue(body.startswith(b"<!doctype html>"))
        self.assertIn(b'<meta charset="utf-8">', body)

    def test_noExternalURLs(self) -> None:
        """
        Nothing is loaded from elsewhere: no absolute or protocol-relative
        URL anywhere, no C{src} at all, no stylesheet link, no CSS import.
        """
        _, body = self.get()
        # The SVG namespace is a name, not something fetched.
        body = body.replace(b'"http://www.w3.org/2000/svg"', b"")
        self.assertNotIn(b"http://", body)
        self.assertNotIn(b"https://", body)
        self.assertEqual(re.findall(rb"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:|//)""", body), [])
        self.assertEqual(re.findall(rb"\bsrc\s*=", body), [])
        self.assertNotIn(b"<link", body)
        self.assertNotIn(b"@import", body)
        self.assertNotIn(b"url(", body)

    def test_relativeURLs(self) -> None:
        """
        The script fetches C{status} and changes C{backends/...} relative
        to the page, with no-store, so the page works under any prefix.
        """
        script = self.script(self.get()[1])
        self.assertEqual(
            re.findall(r"fetch\(([^,]*), \{\s*([^}]*)\}", script),
            [
                (
                    "url",
                    'method: method, cache: "no-store", headers: headers,\n      '
                    "body: body === undefined ? undefined : JSON.stringify(body),\n    ",
                ),
                (
                    '"status?since=" + since',
                    'cache: "no-store", signal: controller.signal, headers: authorization()',
                ),
            ],
        )
        self.assertNotIn("/status", script)
        self.assertNotIn('"/backends', script)
        self.assertIn(
            'const url = poolPath(pool) + "backends/" + encodeURIComponent(address) + suffix;',
            script,
        )
        self.assertIn('"pools/" + encodeURIComponent(pool) + "/"', script)
        self.assertNotIn('"/pools', script)
        self.assertIn("timer = setTimeout(refresh, REFRESH_MS)", script)
        self.assertIn("const REFRESH_MS = 2000;", script)

    def test_textOnly(self) -> None:
        """
        The script never parses data as HTML: every value goes in as text.
        """
        script = self.script(self.get()[1])
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            self.assertNotIn(sink, script)
        self.assertIn("textContent", script)

    def test_contentSecurityPolicy(self) -> None:
        """
        The policy allows exactly the page's own inline script and style, by
        hash, and connections to its own origin only.
        """
        response, body = self.get()
        [policy] = response.headers.getRawHeaders("Content-Security-Policy")
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))

        def allowed(tag: bytes) -> str:
            [source] = re.findall(b"<%s>(.*?)</%s>" % (tag, tag), body, re.DOTALL)
            return f"'sha256-{base64.b64encode(hashlib.sha256(source).digest()).decode()}'"

        self.assertEqual(directives["default-src"], "'none'")
        self.assertEqual(directives["script-src"], allowed(b"script"))
        self.assertEqual(directives["style-src"], allowed(b"style"))
        self.assertEqual(directives["connect-src"], "'self'")
        self.assertEqual(response.headers.getRawHeaders("X-Content-Type-Options"), ["nosniff"])

    def test_head(self) -> None:
        """
        C{HEAD} gets the same headers and no body.
        """
        response, body = self.get(method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("Content-Type"), ["text/html; charset=utf-8"]
        )
        self.assertEqual(response.headers.getRawHeaders("Cache-Control"), ["no-store"])
        self.assertEqual(body, b"")

    def test_otherMethods(self) -> None:
        """
        The page changes nothing, so it takes no C{POST}.
        """
        response, _ = self.get(method="POST")
        self.assertEqual(response.code, 405)

    def test_deeperPath(self) -> None:
        """
        A path below the page is 404, not the page: from there its relative
        C{status} would name the wrong resource.
        """
        root = Resource()
        root.putChild(b"dashboard", StatusPage())
        stub = StubTreq(root)
        page = self.successResultOf(stub.get("http://admin/dashboard"))
        deeper = self.successResultOf(stub.get("http://admin/dashboard/x"))
        self.assertEqual((page.code, deeper.code), (200, 404))
        self.successResultOf(page.content())
        self.successResultOf(deeper.content())


class RenderedPage(HTMLParser):
    """
    The parts of a dumped DOM the tests check: the backends table's
    headings and rows as cell texts, the text of each element with an
    C{id}, the attributes of those, the tags inside the table's body, and
    how many scripts there are.
    """

    VOID = frozenset({"area", "base", "br", "col", "hr", "img", "input", "link", "meta", "wbr"})

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self.text: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str | None]] = {}
        self.tagsInBody: set[str] = set()
        self.scripts = 0
        self._open: list[str | None] = []
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.scripts += tag == "script"
        if "backends-body" in self._open:
            self.tagsInBody.add(tag)
            if tag == "tr":
                self.rows.append([])
            elif tag == "td":
                self.rows[-1].append("")
        elif "backends" in self._open and tag == "th":
            self.header.append("")
        if tag in self.VOID:
            return
        identifier = attributes.get("id")
        if tag == "table" and attributes.get("class") == "backends":
            identifier = "backends"
        elif tag == "tbody" and "backends" in self._open:
            identifier = "backends-body"
        if identifier is not None:
            self.text[identifier] = ""
            self.attributes[identifier] = attributes
        self._open.append(identifier)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for identifier in self._open:
            if identifier is not None:
                self.text[identifier] += data
        if "backends-body" in self._open:
            if self.rows and self.rows[-1]:
                self.rows[-1][-1] += data
        elif "backends" in self._open and self.header:
            self.header[-1] += data


def runChromium(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    """
    Run Chromium to the end, in its own process group so that a hang
    kills its helpers too.  Blocking: call it in a thread.
    """
    process = subprocess.Popen(
        arguments,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"chromium ran for over 60 s:\n{stderr[-2000:]}") from None
    return subprocess.CompletedProcess(arguments, process.returncode, stdout, stderr)


def charts(dom: str) -> dict[str, dict[str, Any]]:
    """
    Each chart of the first backend's card, by its key: its label, the top
    of its scale, and the points of each of its lines as (x, y) pairs.
    """
    card = dom.split('<div class="card"')[1]
    found = {}
    for key, chart in re.findall(r'<div class="chart chart-(\w+)">(.*?)</svg>', card, re.DOTALL):
        [label] = re.findall(r'<span class="chart-label">([^<]*)</span>', chart)
        [top] = re.findall(r'<span class="chart-top">([^<]*)</span>', chart)
        lines = [
            [tuple(float(n) for n in point.split(",")) for point in points.split()]
            for points in re.findall(r'<polyline points="([^"]*)"', chart)
        ]
        found[key] = {"label": label, "top": top, "lines": lines}
    return found


class BrowserTests(TestCase):
    """
    The page in headless Chromium, served over loopback by the real reactor
    while Chromium runs in a thread.  C{--virtual-time-budget} lets 5
    seconds of page time pass (three fetches) as fast as the page allows.
    """

    skip = None if CHROMIUM else "Debian's chromium is not installed; .ci/run installs it"

    def serve(self, status: FakeStatus) -> str:
        port = reactor.listenTCP(0, server.Site(adminTree(status)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/"

    async def chromium(self, url: str, *options: str) -> str:
        """
        Load C{url} in a fresh profile and give back what Chromium printed.
        """
        profile = self.mktemp()
        os.makedirs(profile)
        assert CHROMIUM is not None
        arguments = [
            CHROMIUM,
            *HEADLESS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *options,
            url,
        ]
        result = await deferToThread(runChromium, arguments)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        return result.stdout

    async def render(self, status: FakeStatus) -> tuple[RenderedPage, str]:
        dom = await self.chromium(self.serve(status), "--dump-dom")
        return RenderedPage(dom), dom

    async def test_table(self) -> None:
        """
        The example status renders as one row per backend, with the state
        as a word, the weights, a dash for null, and the last error's age;
        the top line names the algorithm, the listen address, the uptime
        and the version.
        """
        status = FakeStatus(EXAMPLE)
        page, _ = await self.render(status)
        self.assertEqual(page.header, EXAMPLE_HEADER)
        self.assertEqual(page.rows, EXAMPLE_ROWS)
        self.assertEqual(page.text["algorithm"], "weighted")
        self.assertEqual(page.text["listen"], "tcp:8080")
        self.assertEqual(page.text["uptime"], "12s")
        self.assertEqual(page.text["version"], "0.1.0")
        self.assertEqual(page.text["health"], "1 up, 0 down, 1 draining")
        self.assertIn("hidden", page.attributes["error"])
        self.assertIn("hidden", page.attributes["insecure"])
        self.assertNotIn("stale", page.attributes["pools"].get("class") or "")
        self.assertGreaterEqual(status.requests, 2, "the page did not refresh")

    async def test_limitsAndQueue(self) -> None:
        """
        A backend with a limit (C{--max-conn}) shows its slots in use out of
        it; the top line shows the queue.
        """
        payload = copy.deepcopy(EXAMPLE)
        payload["queue"] = {"length": 3, "max": 1000}
        payload["backends"][1]["limit"] = 10
        page, _ = await self.render(FakeStatus(payload))
        self.assertEqual([row[3] for row in page.rows], ["0", "2 / 10"])
        self.assertEqual(page.text["queue"], "3 waiting (at most 1000)")

    async def test_weightHidden(self) -> None:
        """
        Under an algorithm that ignores weights (round robin, least
        connections), the weight column is left out.
        """
        payload = {**copy.deepcopy(EXAMPLE), "algorithm": "roundrobin", "usesWeights": False}
        page, _ = await self.render(FakeStatus(payload))
        self.assertEqual(page.header, [h for h in EXAMPLE_HEADER if h != "Weight"])
        self.assertEqual(page.rows, [row[:2] + row[3:] for row in EXAMPLE_ROWS])

    async def test_healthCheckFailure(self) -> None:
        """
        A backend the health checks took down shows its failed checks with
        its errors, and the check's failure as its last error.
        """
        payload = copy.deepcopy(EXAMPLE)
        payload["backends"][0].update(
            state="down",
            errors=0,
            checkFailures=3,
            health="failed: status 500",
            lastError="health check: status 500",
            lastErrorAge=4.2,
        )
        page, _ = await self.render(FakeStatus(payload))
        self.assertEqual(
            page.rows[0],
            [
                "localhost:8081",
                "down",
                "1",
                "0",
                "3.2",
                "120",
                "0 + 3 checks",
                "0",
                "1.4 ms",
                "–",
                "failed: status 500",
                "health check: status 500 (4s ago)",
            ],
        )

    async def test_readOnly(self) -> None:
        """
        Without a token configured, the page says changes need one, and
        offers none.
        """
        page, dom = await self.render(FakeStatus(EXAMPLE))
        self.assertEqual(
            page.text["admin-state"],
            "Read-only: changes from this page need txlb started with --admin-token.",
        )
        self.assertIn("hidden", page.attributes["unlock"])
        self.assertNotIn("<button", dom.split('id="pools"')[1].split("</table>")[0])

    async def test_insecureTLS(self) -> None:
        """
        With C{--backend-insecure}, a warning shows above the table; an
        C{https://} backend is marked TLS.
        """
        payload = copy.deepcopy(EXAMPLE)
        payload["backendTLS"] = "insecure"
        payload["backends"][0]["tls"] = True
        page, _ = await self.render(FakeStatus(payload))
        self.assertNotIn("hidden", page.attributes["insecure"])
        self.assertEqual(
            " ".join(page.text["insecure"].split()),
            "TLS to backends is NOT VERIFIED (--backend-insecure): any certificate is accepted.",
        )
        self.assertEqual([row[0] for row in page.rows], ["localhost:8081 (TLS)", "localhost:8082"])

    async def test_escaped(self) -> None:
        """
        Values that look like markup appear as text: no element comes from
        the data, and the only script is the page's own.
        """
        payload = copy.deepcopy(EXAMPLE)
        payload["algorithm"] = SCRIPT
        payload["backends"][0].update(address=SCRIPT, lastError=SCRIPT, state="<b>up</b>")
        page, dom = await self.render(FakeStatus(payload))
        self.assertEqual(page.text["algorithm"], SCRIPT)
        self.assertEqual(page.rows[0][0], SCRIPT)
        self.assertEqual(page.rows[0][1], "<b>up</b>")
        self.assertEqual(page.rows[0][-1], SCRIPT)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", dom)
        self.assertEqual(page.tagsInBody, {"tr", "td", "span"})
        self.assertEqual(page.scripts, 1)
        self.assertIn('class="state state-unknown"', dom)

    async def test_unavailable(self) -> None:
        """
        When the status stops answering, the page says so, with the reason,
        and greys out the last table instead of passing it off as current.
        """
        page, _ = await self.render(FakeStatus(EXAMPLE, failAfter=1))
        self.assertTrue(
            page.text["error"].startswith(
                "status unavailable: HTTP 503 Service Unavailable (the table below is from "
            ),
            page.text["error"],
        )
        self.assertNotIn("hidden", page.attributes["error"])
        self.assertIn("stale", page.attributes["pools"]["class"] or "")
        self.assertEqual(page.rows, EXAMPLE_ROWS)

    async def test_neverAvailable(self) -> None:
        """
        A status that never answers leaves no table to show, only the reason.
        """
        page, _ = await self.render(FakeStatus(EXAMPLE, failAfter=0))
        self.assertEqual(page.text["error"], "status unavailable: HTTP 503 Service Unavailable")
        self.assertEqual((page.rows, page.text["pools"]), ([], "loading…"))

    async def test_historyOnFirstLoad(self) -> None:
        """
        The first poll asks for the whole history and the charts draw it at
        once: five minutes of samples, the oldest near the left edge, the
        newest at the right, each labelled with its newest value; later
        polls ask only for what is newer.
        """
        status = FakeStatus(
            withHistory(150, rps=lambda k: float(k % 10), active=3, load=0.25, p99=4.0)
        )
        _, dom = await self.render(status)
        self.assertEqual(status.since[:2], [0.0, NOW])
        drawn = charts(dom)
        self.assertEqual(
            [(key, chart["label"]) for key, chart in drawn.items()],
            [
                ("rps", "req/s 9.0"),
                ("p99", "p99 4.0 ms"),
                ("active", "in flight 3"),
                ("load", "load 25.0 %"),
            ],
        )
        [line] = drawn["rps"]["lines"]
        self.assertEqual(len(line), 150)
        self.assertEqual((line[0][0], line[-1][0]), (2.0, 300.0))
        # The rps line: 0, 1, ..., 9 again and again, on a scale of 10.
        self.assertEqual([y for _, y in line[:10]], [round(58 - k / 10 * 56, 1) for k in range(10)])

    async def test_axisAndScale(self) -> None:
        """
        Each card has a time axis from five minutes ago to now, and each
        chart a scale from 0 to its top.
        """
        _, dom = await self.render(FakeStatus(withHistory(150, rps=40.0, active=12)))
        card = dom.split('<div class="card"')[1]
        self.assertEqual(
            re.findall(r'<div class="axis-ticks">(.*?)</div>', card),
            [
                "".join(
                    f'<span style="left: {left}%;">{text}</span>'
                    for left, text in [
                        (0, "−5 min"),
                        (20, "−4 min"),
                        (40, "−3 min"),
                        (60, "−2 min"),
                        (80, "−1 min"),
                        (100, "now"),
                    ]
                )
            ],
        )
        self.assertEqual(re.findall(r'<span class="chart-zero">([^<]*)</span>', card), ["0"] * 4)
        self.assertEqual(
            [chart["top"] for chart in charts(dom).values()], ["50", "50 ms", "20", "100 %"]
        )

    async def test_floor(self) -> None:
        """
        A scale never goes below its floor, so that 3 to 7 ms of p99 noise
        stays a flat line at the bottom of a 50 ms scale; a real rise
        raises the scale to a round number above it.
        """
        noise = withHistory(150, p99=lambda k: 3.0 + k % 5)
        drawn = charts((await self.render(FakeStatus(noise)))[1])
        self.assertEqual(drawn["p99"]["top"], "50 ms")
        ys = [y for _, y in drawn["p99"]["lines"][0]]
        self.assertEqual(
            (min(ys), max(ys)), (round(58 - 7 / 50 * 56, 1), round(58 - 3 / 50 * 56, 1))
        )
        self.assertEqual(drawn["rps"]["top"], "10")
        self.assertEqual(drawn["active"]["top"], "10")
        spike = withHistory(150, p99=lambda k: 180.0 if k == 100 else 4.0)
        drawn = charts((await self.render(FakeStatus(spike)))[1])
        self.assertEqual(drawn["p99"]["top"], "200 ms")
        self.assertEqual(min(y for _, y in drawn["p99"]["lines"][0]), round(58 - 180 / 200 * 56, 1))

    async def test_gap(self) -> None:
        """
        Samples missing (the admin API did not answer) or a value unknown
        (no request ended) break the line rather than bridge the gap.
        """
        payload = withHistory(20, rps=1.0, p99=lambda k: None if k == 5 else 2.0)
        del payload["history"]["samples"][10:13]
        drawn = charts((await self.render(FakeStatus(payload)))[1])
        self.assertEqual([len(line) for line in drawn["rps"]["lines"]], [10, 7])
        self.assertEqual([len(line) for line in drawn["p99"]["lines"]], [5, 4, 7])

    async def test_limitChart(self) -> None:
        """
        A backend with a limit (C{--max-conn}, learnt with C{auto}) gets a
        chart of it from the history too; one without, none.
        """
        payload = withHistory(150, limit=lambda k: min(2 ** (k // 10), 10))
        payload["backends"][0]["limit"] = 10
        _, dom = await self.render(FakeStatus(payload))
        drawn = charts(dom)
        self.assertEqual(drawn["limit"]["label"], "limit 10")
        self.assertEqual(drawn["limit"]["top"], "10")
        [line] = drawn["limit"]["lines"]
        self.assertEqual(len(line), 150)
        second = dom.split('<div class="card"')[2]
        self.assertNotIn("chart-limit", second)

    async def test_shadow(self) -> None:
        """
        With a shadow policy, the page shows its agreement and the requests
        it would have sent to each backend; without one, nothing of it.
        """
        payload = copy.deepcopy(EXAMPLE)
        payload["shadow"] = {
            "algorithm": "ewma",
            "compared": 200,
            "agreement": 0.4,
            "picks": {"localhost:8081": 150, "localhost:8082": 50},
            "errors": 0,
        }
        _, dom = await self.render(FakeStatus(payload))
        [shadow] = re.findall(r'<div class="shadow">(.*?)</div>', dom, re.DOTALL)
        self.assertEqual(
            re.sub(r"<[^>]*>", "", shadow.split("<table")[0]),
            "Shadow policy ewma"
            "agrees with the live policy on 40.0 % of 200 picks; errors 0."
            " Requests it would have sent:",
        )
        self.assertIn('<h2 class="shadow-title">', shadow)
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", shadow)
        self.assertEqual(
            cells, ["localhost:8081", "150", "75.0 %", "localhost:8082", "50", "25.0 %"]
        )
        _, dom = await self.render(FakeStatus(EXAMPLE))
        self.assertIn('<div class="shadow" hidden="">', dom)
        self.assertNotIn("Shadow policy", dom.split("<script>")[0])

    async def test_onePoolNotNamed(self) -> None:
        """
        The site of one pool, C{default}, and no routes (the command
        line's backends) shows no pool heading and no route table: it
        looks as it did before there were pools.
        """
        page, dom = await self.render(FakeStatus(EXAMPLE))
        self.assertIn("hidden", page.attributes["routes-section"])
        self.assertIn("hidden", page.attributes["pool-summary"])
        self.assertNotIn("hidden", page.attributes["algorithm-summary"])
        [(markup, _)] = sections(dom).values()
        self.assertTrue(markup.startswith('<div class="pool-head" hidden=""></div><table'))
        self.assertNotIn('class="chart-pool"', dom.split("<script>")[0])

    async def test_twoPools(self) -> None:
        """
        Two pools render as two sections, each under its name with its
        algorithm and its backends' states, each with its own backends
        (one address in both) and its own columns (no weight under round
        robin); the line at the top counts the pools and every pool's
        backends, and names the pool whose TLS is not verified.
        """
        page, dom = await self.render(FakeStatus(TWO_POOLS))
        found = sections(dom)
        self.assertEqual(list(found), ["api", "web"])
        heads = {}
        for name, (markup, _) in found.items():
            [title] = re.findall(r'<h2 class="pool-title">(.*?)</h2>', markup)
            [facts] = re.findall(r'<p class="pool-facts">(.*?)</p>', markup)
            heads[name] = [re.sub(r"<[^>]*>", "", title), *re.findall(r">([^<]+)</span>", facts)]
        self.assertEqual(
            heads,
            {
                "api": ["Pool api", "algorithm ewma", "2 backends: 1 up, 1 down, 0 draining"],
                "web": [
                    "Pool web",
                    "algorithm roundrobin",
                    "1 backend: 0 up, 0 down, 1 draining",
                    "TLS to backends NOT VERIFIED",
                ],
            },
        )
        api, web = found["api"][1], found["web"][1]
        self.assertEqual(api.header, EXAMPLE_HEADER)
        self.assertEqual(
            [row[:3] for row in api.rows],
            [["localhost:8081", "up", "1"], ["localhost:8082", "down", "2"]],
        )
        self.assertEqual(web.header, [h for h in EXAMPLE_HEADER if h != "Weight"])
        self.assertEqual(
            [row[:4] for row in web.rows], [["localhost:8081", "draining", "0", "3.2"]]
        )
        self.assertEqual(web.rows[0][4], "7")
        self.assertEqual(page.text["pool-count"], "2")
        self.assertIn("hidden", page.attributes["algorithm-summary"])
        self.assertEqual(page.text["health"], "1 up, 1 down, 1 draining")
        self.assertEqual(page.text["insecure-pools"], " In pool web.")

    async def test_routeTable(self) -> None:
        """
        The route table lists the routes in order: each one's label, its
        conditions and its action in a few words, and the requests it
        matched.
        """
        page, dom = await self.render(FakeStatus(TWO_POOLS))
        self.assertNotIn("hidden", page.attributes["routes-section"])
        self.assertEqual(
            routeRows(dom),
            [
                ["api", "host api.example.com; path-prefix /v1", "pool api", "12"],
                ["2", "path-prefix /internal", "respond 403", "3"],
                [
                    "3",
                    "host a.example.com or *.b.example.com; method GET or HEAD;"
                    " header X-Canary: 1, X-Debug (any value); query debug=1; client 10.0.0.0/8",
                    "redirect 301 https://{host}{uri}",
                    "0",
                ],
                [
                    "4",
                    "path /login",
                    "split api 95, web 5 by cookie:session; mirror web 10 %;"
                    " rewrites set-host internal, request-headers",
                    "40",
                ],
                ["5", "path-regex /r/[0-9]+", "router mycompany.routing:ByTenant", "1"],
                ["6", "every request", "pool web", "100"],
            ],
        )

    async def test_poolsEscaped(self) -> None:
        """
        Pool names and routes' values that look like markup appear as
        text.
        """
        payload = copy.deepcopy(TWO_POOLS)
        payload["pools"][1]["name"] = SCRIPT
        payload["routes"] = [
            {"label": "1", "config": {"path": SCRIPT, "pool": SCRIPT}, "requests": 0}
        ]
        _, dom = await self.render(FakeStatus(payload))
        self.assertEqual(list(sections(dom)), ["api", SCRIPT])
        self.assertEqual(routeRows(dom), [["1", "path " + SCRIPT, "pool " + SCRIPT, "0"]])
        self.assertEqual(dom.split("<script>")[0].count("<script"), 0)

    async def test_chartsByPool(self) -> None:
        """
        The charts are grouped by pool, each under its name, and each
        pool's card of one address draws that pool's samples.
        """
        payload = copy.deepcopy(TWO_POOLS)
        samples = history(20, rps=40.0)["samples"]
        for sample in samples:
            sample["pools"] = {
                "api": sample["backends"],
                "web": {"localhost:8081": {"rps": 2.0, "p99": None, "active": 1, "load": None}},
            }
        payload["history"] = {"interval": 2.0, "span": 300.0, "samples": samples}
        _, dom = await self.render(FakeStatus(payload))
        groups = dict(
            re.findall(
                r'<div class="chart-group" data-pool="(\w+)">(.*?)(?=<div class="chart-group"|$)',
                dom.split("<script>")[0],
                re.DOTALL,
            )
        )
        self.assertEqual(list(groups), ["api", "web"])
        for name, rps in (("api", "40.0"), ("web", "2.0")):
            self.assertTrue(groups[name].startswith(f'<h3 class="chart-pool">Pool {name}</h3>'))
            drawn = charts(groups[name])
            self.assertEqual(drawn["rps"]["label"], f"req/s {rps}", name)
            self.assertEqual(len(drawn["rps"]["lines"][0]), 20, name)

    async def test_screenshot(self) -> None:
        """
        Chromium paints the page into a PNG of the window's size (kept as
        C{_trial_temp/.../status.png} to look at).
        """
        payload = withHistory(
            150,
            rps=lambda k: 30.0 + 10 * math.sin(k / 8),
            p99=lambda k: 4.0 + k % 3 if k < 100 else 120.0 + k % 7,
            active=lambda k: k % 4,
            load=lambda k: 0.2 + k / 300,
        )
        payload["backends"].append(
            {
                **EXAMPLE["backends"][0],
                "address": "localhost:8083",
                "state": "down",
                "health": "failed: timeout",
                "checkFailures": 4,
                "lastError": "health check: timeout",
                "lastErrorAge": 3.0,
                "latencyMs": 2003.25,
            }
        )
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "status.png")
        await self.chromium(
            self.serve(FakeStatus(payload)), f"--screenshot={path}", "--window-size=1200,900"
        )
        with open(path, "rb") as png:
            data = png.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(struct.unpack(">II", data[16:24]), (1200, 900))


class RecordingSite(AdminSite):
    """
    The admin site, remembering each request it answered: its method, path,
    status, and the headers a browser says where it comes from with.
    """

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.seen: list[tuple[bytes, bytes, int, bytes | None, bytes | None]] = []

    def log(self, request: Any) -> None:
        self.seen.append(
            (
                request.method,
                request.uri,
                request.code,
                request.getHeader(b"sec-fetch-site"),
                request.getHeader(b"authorization"),
            )
        )

    def changes(self) -> list[tuple[bytes, bytes, int, bytes | None, bytes | None]]:
        return [seen for seen in self.seen if seen[0] not in (b"GET", b"HEAD")]


#: A page of another site that tries to drain a backend through the
#: operator's browser: a form (in a frame, so the page stays), a no-cors
#: fetch, and a fetch with a guessed token (which needs a CORS preflight).
ATTACK = """<!doctype html>
<html><body>
<iframe name="sink"></iframe>
<form id="form" method="post" target="sink" action="{url}">
  <input name="draining" value="true">
</form>
<script>
document.getElementById("form").submit();
fetch("{url}", {{method: "POST", mode: "no-cors", body: '{{"draining": true}}'}}).catch(() => 0);
fetch("{url}", {{method: "POST", headers: {{"Authorization": "Bearer s3cret"}}}}).catch(() => 0);
</script>
</body></html>
"""


class Page(Resource):
    """
    One fixed HTML page.
    """

    isLeaf = True

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html.encode()

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return self.html


class OperatorTests(TestCase):
    """
    The page as an operator uses it, in headless Chromium driven over the
    DevTools protocol, against the real admin API of a balancer (in memory)
    served over loopback.
    """

    skip = (
        None
        if CHROMIUM and SETSID
        else "Debian's chromium (and util-linux's setsid) are needed; .ci/run installs them"
    )

    def setUp(self) -> None:
        self.harness = ServiceHarness(
            self, CONFIG.replace('"roundrobin"', '"weighted"') + 'admin-token = "s3cret"\n'
        )

    def serve(self, token: str | None = "s3cret") -> str:
        self.site = RecordingSite(AdminResource(self.harness.service, token))
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}/"

    async def browser(self, url: str) -> Browser:
        profile = self.mktemp()
        os.makedirs(profile)
        browser = Browser(profile, "--window-size=1400,900")
        self.addCleanup(lambda: Deferred.fromCoroutine(browser.close()))
        await browser.open(url)
        await browser.waitFor("document.querySelectorAll('table.backends tbody tr').length === 2")
        return browser

    async def unlock(self, browser: Browser, token: str) -> None:
        await browser.waitFor("!document.getElementById('unlock').hidden")
        await browser.type("#token", token)
        await browser.click("#unlock button")

    async def test_readOnlyWithoutToken(self) -> None:
        """
        Until the token is entered, the page offers no change: only the
        field for the token.
        """
        browser = await self.browser(self.serve())
        await browser.waitFor("!document.getElementById('unlock').hidden")
        self.assertEqual(
            await browser.evaluate(
                "document.querySelectorAll('button.drain, button.restore, input.weight').length"
            ),
            0,
        )
        self.assertEqual(
            await browser.evaluate("document.getElementById('admin-state').textContent"),
            "Read-only. Enter the admin token to drain, restore and reweight.",
        )
        self.assertEqual(self.site.changes(), [])

    async def test_drainRestoreWeight(self) -> None:
        """
        With the token, each backend has drain (then restore) and a weight
        to set, which change the balancer through the admin API; the page
        sends the token as a bearer header from its own origin.
        """
        browser = await self.browser(self.serve())
        await self.unlock(browser, "s3cret")
        await browser.waitFor("document.querySelectorAll('button.drain').length === 2")
        first, second = self.harness.backends
        await browser.click("tr:first-child button.drain")
        await browser.waitFor("document.querySelector('tr:first-child button.restore')")
        self.assertEqual(
            await browser.evaluate("document.getElementById('admin-message').textContent"),
            "drain 127.0.0.1:8081: done",
        )
        self.assertTrue(first.draining)
        await browser.click("tr:first-child button.restore")
        await browser.waitFor("document.querySelector('tr:first-child button.drain')")
        self.assertFalse(first.draining)
        await browser.click("tr:last-child input.weight")
        await browser.evaluate("document.activeElement.select()")
        await browser.send("Input.insertText", {"text": "7"})
        await browser.click("tr:last-child button.set-weight")
        await browser.waitFor(
            "document.getElementById('admin-message').textContent"
            " === 'weight 7 for 127.0.0.1:8082: done'"
        )
        self.assertEqual((first.weight, second.weight), (1, 7))
        self.assertEqual(
            self.site.changes(),
            [
                (
                    b"POST",
                    b"/backends/127.0.0.1%3A8081/drain",
                    200,
                    b"same-origin",
                    b"Bearer s3cret",
                ),
                (b"PATCH", b"/backends/127.0.0.1%3A8081", 200, b"same-origin", b"Bearer s3cret"),
                (b"PATCH", b"/backends/127.0.0.1%3A8082", 200, b"same-origin", b"Bearer s3cret"),
            ],
        )

    async def test_wrongToken(self) -> None:
        """
        A wrong token is refused at once, and the page stays read-only.
        """
        browser = await self.browser(self.serve())
        await self.unlock(browser, "guess")
        await browser.waitFor(
            "document.getElementById('admin-message').textContent === 'the admin token was refused'"
        )
        self.assertEqual(
            await browser.evaluate("document.querySelectorAll('button.drain').length"), 0
        )
        self.assertEqual(await browser.evaluate("document.getElementById('unlock').hidden"), False)

    async def test_lock(self) -> None:
        """
        Lock forgets the token: the changes go, the field comes back.
        """
        browser = await self.browser(self.serve())
        await self.unlock(browser, "s3cret")
        await browser.waitFor("document.querySelectorAll('button.drain').length === 2")
        await browser.click("#lock")
        await browser.waitFor(
            "document.querySelectorAll('button.drain').length === 0"
            " && !document.getElementById('unlock').hidden"
        )
        self.assertIsNone(await browser.evaluate("sessionStorage.getItem('txlb-admin-token')"))

    async def test_realHistory(self) -> None:
        """
        The real admin API's history fills the real page's charts on its
        first load: the page and the JSON agree on its shape.
        """
        harness = ServiceHarness(self, CONFIG + 'admin = "tcp:9000:interface=127.0.0.1"\n')
        for _ in range(20):
            # One request to each backend between two samples.
            for _ in range(2):
                channel, _ = harness.client(GET)
                harness.backend()[0].dataReceived(OK)
                channel.connectionLost(Failure(ConnectionDone()))
            harness.reactor.advance(2)
        [admin] = [
            listener.factory.resource
            for listener in harness.service.listeners
            if isinstance(getattr(listener, "factory", None), AdminSite)
        ]
        port = reactor.listenTCP(0, AdminSite(admin), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        browser = await self.browser(f"http://127.0.0.1:{port.getHost().port}/")
        lengths = await browser.waitFor(
            "[...document.querySelectorAll('.card:first-child polyline')]"
            ".map((line) => line.getAttribute('points').split(' ').length)"
        )
        # The samples of the 20 steps (the memory clock's start is 0, which
        # the first poll's since=0 leaves out); no load was reported.
        self.assertEqual(lengths, [20, 20, 20])

    async def test_crossSiteRefused(self) -> None:
        """
        Another site's page cannot drain a backend through the operator's
        browser: its form and its no-cors fetch are refused with 403 (the
        browser says they are cross-site), and its fetch with a token never
        gets past the CORS preflight, which the admin API refuses.
        """
        admin = self.serve()
        target = admin + "backends/127.0.0.1:8081/drain"
        attacker = server.Site(Page(ATTACK.format(url=target)))
        port = reactor.listenTCP(0, attacker, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        profile = self.mktemp()
        os.makedirs(profile)
        browser = Browser(profile)
        self.addCleanup(lambda: Deferred.fromCoroutine(browser.close()))
        # localhost and 127.0.0.1 are different sites.
        await browser.open(f"http://localhost:{port.getHost().port}/")
        for _ in range(200):
            if len(self.site.changes()) >= 3:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual(
            sorted((method, code, site) for method, _, code, site, _ in self.site.changes()),
            [
                (b"OPTIONS", 403, b"cross-site"),
                (b"POST", 403, b"cross-site"),
                (b"POST", 403, b"cross-site"),
            ],
        )
        self.assertFalse(self.harness.backends[0].draining)


#: A site of two pools with C{127.0.0.1:8081} in both, and three routes.
SITE = """
listen = "tcp:8080"
admin-token = "s3cret"

[pools.api]
algo = "weighted"
backends = ["127.0.0.1:8081", "127.0.0.1:8082"]

[pools.web]
algo = "weighted"
backends = ["127.0.0.1:8081"]

[[routes]]
name = "api"
host = "api.example.com"
pool = "api"

[[routes]]
name = "internal"
path-prefix = "/internal"
respond = 403

[[routes]]
pool = "web"
"""


class PoolOperatorTests(TestCase):
    """
    The page of a site of two pools and routes as an operator uses it, in
    headless Chromium, against the real admin API (in memory) served over
    loopback.
    """

    skip = OperatorTests.skip

    def setUp(self) -> None:
        self.harness = ServiceHarness(self, SITE)
        self.site = RecordingSite(AdminResource(self.harness.service, "s3cret"))
        port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/"

    async def browser(self) -> Browser:
        profile = self.mktemp()
        os.makedirs(profile)
        browser = Browser(profile, "--window-size=1400,900")
        self.addCleanup(lambda: Deferred.fromCoroutine(browser.close()))
        await browser.open(self.url)
        await browser.waitFor("document.querySelectorAll('section.pool tbody tr').length === 3")
        return browser

    async def state(self, path: str) -> str:
        """
        The state of a backend, as the admin API gives it at C{path}.
        """
        response = await treq.get(self.url + path, pool=HTTPConnectionPool(reactor, False))
        self.assertEqual(response.code, 200, path)
        return str((await response.json())["state"])

    def send(self, host: str, path: str) -> bytes:
        """
        A request through the balancer, answered by its backend if it
        reaches one: what the client got.
        """
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        channel, client = self.harness.client(request)
        if self.harness.reactor.tcpClients:
            backend, _ = self.harness.backend()
            # Not kept alive: each request has a connection of its own.
            backend.dataReceived(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            self.harness.reactor.advance(0)
        channel.connectionLost(Failure(ConnectionDone()))
        return client.value()

    async def test_drainInSecondPool(self) -> None:
        """
        Drain, clicked on a backend of the second pool, drains that pool's
        backend only: the same address in the first pool stays up.
        """
        browser = await self.browser()
        await browser.waitFor("!document.getElementById('unlock').hidden")
        await browser.type("#token", "s3cret")
        await browser.click("#unlock button")
        await browser.waitFor("document.querySelectorAll('button.drain').length === 3")
        await browser.click('section[data-pool="web"] tr:first-child button.drain')
        await browser.waitFor("document.querySelector('section[data-pool=\"web\"] button.restore')")
        self.assertEqual(
            await browser.evaluate("document.getElementById('admin-message').textContent"),
            "drain 127.0.0.1:8081 in pool web: done",
        )
        self.assertEqual(
            await browser.evaluate(
                "[...document.querySelectorAll('section.pool')].map((s) =>"
                " s.dataset.pool + ' ' + [...s.querySelectorAll('.state')]"
                ".map((e) => e.textContent).join(' '))"
            ),
            ["api up up", "web draining"],
        )
        self.assertEqual(await self.state("pools/web/backends/127.0.0.1:8081"), "draining")
        self.assertEqual(await self.state("pools/api/backends/127.0.0.1:8081"), "up")
        self.assertEqual(
            [(method, uri, code) for method, uri, code, _, _ in self.site.changes()],
            [(b"POST", b"/pools/web/backends/127.0.0.1%3A8081/drain", 200)],
        )

    async def test_routeCounts(self) -> None:
        """
        The route table shows each route's requests, and follows them as
        more are made.
        """
        self.assertTrue(self.send("www.example.com", "/internal/x").startswith(b"HTTP/1.1 403"))
        self.assertTrue(self.send("api.example.com", "/v1").startswith(b"HTTP/1.1 200"))
        browser = await self.browser()
        rows = (
            "[...document.querySelectorAll('#routes tr')].map((row) =>"
            " [...row.cells].map((cell) => cell.textContent))"
        )
        self.assertEqual(
            await browser.waitFor(rows + ".length === 3 && " + rows),
            [
                ["api", "host api.example.com", "pool api", "1"],
                ["internal", "path-prefix /internal", "respond 403", "1"],
                ["3", "every request", "pool web", "0"],
            ],
        )
        for _ in range(2):
            self.assertTrue(self.send("www.example.com", "/").startswith(b"HTTP/1.1 200"))
        self.assertEqual(
            await browser.waitFor(f"{rows}[2][3] === '2' && {rows}.map((row) => row[3])"),
            ["1", "1", "2"],
        )

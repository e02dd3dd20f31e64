"""
The HTML status page: its HTTP response in memory with C{treq.testing}, and
the page itself rendered by a real headless Chromium (Debian's C{chromium})
against a loopback listener that serves a fake of the admin API's JSON.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
from html.parser import HTMLParser
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import server
from twisted.web.resource import Resource

from txlb.statuspage import StatusPage

# The JSON the admin API's GET status returns (txlb/admin.py).
EXAMPLE: dict[str, Any] = {
    "version": "0.1.0",
    "uptime": 12.5,
    "algorithm": "weighted",
    "listen": "tcp:8080",
    "backends": [
        {
            "address": "localhost:8081",
            "weight": 1,
            "state": "up",
            "active": 0,
            "requests": 120,
            "failures": 0,
            "lastError": None,
            "health": "passed",
            "requestsPerSecond": 3.2,
            "errors": 1,
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
            "health": "failed: status 500",
            "requestsPerSecond": 0.0,
            "errors": 7,
            "latencyMs": None,
        },
    ],
}

# The two rows EXAMPLE renders as, column by column: backend, state, weight,
# active, req/s, requests, errors, fails, latency, load, health, last error.
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
        "Connection was refused",
    ],
]

SCRIPT = "<script>alert(1)</script>"


class FakeStatus(Resource):
    """
    The admin API's C{status}: a fixed JSON answer, then, after
    C{failAfter} answers, C{503}.
    """

    isLeaf = True

    def __init__(self, payload: dict[str, Any], failAfter: int | None = None) -> None:
        super().__init__()
        self.payload = payload
        self.failAfter = failAfter
        self.requests = 0

    def render_GET(self, request: server.Request) -> bytes:
        self.requests += 1
        if self.failAfter is not None and self.requests > self.failAfter:
            request.setResponseCode(503)
            return b"admin API is down\n"
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(self.payload).encode()


class ChangingStatus(FakeStatus):
    """
    The admin API's C{status} answering each of C{payloads} in turn, then
    the last again and again.
    """

    def __init__(self, payloads: list[dict[str, Any]]) -> None:
        super().__init__(payloads[0])
        self.payloads = payloads

    def render_GET(self, request: server.Request) -> bytes:
        self.payload = self.payloads[min(self.requests, len(self.payloads) - 1)]
        return super().render_GET(request)


def polls(count: int) -> list[dict[str, Any]]:
    """
    C{count} answers of a balancer whose first backend, reporting a load of
    0.25, ends 100 requests between two polls, all in 2.5 to 5 ms (so
    their p99 is 2.5 + 0.99 * 2.5 = 4.975 ms), at k requests/s by the kth
    poll; and a shadow policy.
    """
    answers = []
    for k in range(1, count + 1):
        payload = copy.deepcopy(EXAMPLE)
        payload["latencyBounds"] = [0.001, 0.0025, 0.005, 0.01]
        first, second = payload["backends"]
        first.update(
            requestsPerSecond=float(k),
            active=k,
            load=0.25,
            latencyBuckets=[0, 0, 100 * (k - 1), 100 * (k - 1), 100 * (k - 1)],
        )
        second.update(latencyBuckets=None)
        payload["shadow"] = {
            "algorithm": "ewma",
            "compared": 200,
            "agreement": 0.4,
            "picks": {"localhost:8081": 150, "localhost:8082": 50},
            "errors": 0,
        }
        answers.append(payload)
    return answers


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

    def test_relativeStatusURL(self) -> None:
        """
        The script fetches C{status} relative to the page, with no-store,
        so the page works under any prefix.
        """
        script = self.script(self.get()[1])
        self.assertEqual(
            re.findall(r"fetch\(([^,]*), \{([^}]*)\}", script),
            [('"status"', 'cache: "no-store", signal: controller.signal')],
        )
        self.assertNotIn("/status", script)
        self.assertIn("setTimeout(refresh, REFRESH_MS)", script)
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


CHROMIUM = shutil.which("chromium")


class RenderedPage(HTMLParser):
    """
    The parts of a dumped DOM the tests check: the table's rows as cell
    texts, the text of each element with an C{id}, the classes of the
    table, the tags inside the table body, and how many scripts there are.
    """

    VOID = frozenset({"area", "base", "br", "col", "hr", "img", "input", "link", "meta", "wbr"})

    def __init__(self, dom: str) -> None:
        super().__init__()
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
        if "backends" in self._open:
            self.tagsInBody.add(tag)
            if tag == "tr":
                self.rows.append([])
            elif tag == "td":
                self.rows[-1].append("")
        if tag in self.VOID:
            return
        identifier = attributes.get("id")
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
        if "backends" in self._open and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


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
            "--headless",
            "--no-sandbox",  # root cannot use Chromium's sandbox
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
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
        as a word, the weights, and a dash for null; the top line names the
        algorithm, the listen address, the uptime and the version.
        """
        status = FakeStatus(EXAMPLE)
        page, _ = await self.render(status)
        self.assertEqual(page.rows, EXAMPLE_ROWS)
        self.assertEqual(page.text["algorithm"], "weighted")
        self.assertEqual(page.text["listen"], "tcp:8080")
        self.assertEqual(page.text["uptime"], "12s")
        self.assertEqual(page.text["version"], "0.1.0")
        self.assertEqual(page.text["health"], "1 up, 0 down, 1 draining")
        self.assertIn("hidden", page.attributes["error"])
        self.assertIn("hidden", page.attributes["insecure"])
        self.assertNotIn("stale", page.attributes["table"].get("class") or "")
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
        self.assertIn("stale", page.attributes["table"]["class"] or "")
        self.assertEqual(page.rows, EXAMPLE_ROWS)

    async def test_neverAvailable(self) -> None:
        """
        A status that never answers leaves no table to show, only the reason.
        """
        page, _ = await self.render(FakeStatus(EXAMPLE, failAfter=0))
        self.assertEqual(page.text["error"], "status unavailable: HTTP 503 Service Unavailable")
        self.assertEqual(page.rows, [["loading…"]])

    async def test_charts(self) -> None:
        """
        Each backend gets a card of line charts over the polls: requests/s,
        the p99 of the requests that ended between two polls (none before
        the second, so that line starts there), requests in flight and the
        reported load, each labelled with its last value.
        """
        status = ChangingStatus(polls(10))
        _, dom = await self.render(status)
        count = status.requests
        self.assertGreaterEqual(count, 2, "the page did not refresh")
        self.assertEqual(
            re.findall(r'<span class="chart-label">([^<]*)</span>', dom),
            [
                f"req/s {count}.0",
                "p99 5.0 ms",
                f"in flight {count}",
                "load 25.0 %",
                "req/s 0.0",
                "p99 –",
                "in flight 2",
                "load –",
            ],
        )
        lines = re.findall(r'<polyline points="([^"]*)"></polyline>', dom)
        # The first backend's four lines (p99's a point short), then the
        # second's two (it has no p99 and no load).
        self.assertEqual(
            [len(points.split()) for points in lines],
            [count, count - 1, count, count, count, count],
        )
        # Newest at the right edge; the largest value at the top.
        self.assertTrue(lines[0].endswith(" 300.0,2.0"), lines[0])

    async def test_limitChart(self) -> None:
        """
        A backend with a limit (C{--max-conn}, learnt with C{auto}) gets a
        chart of it over the polls too; one without, none.
        """
        answers = polls(6)
        for k, payload in enumerate(answers, 1):
            payload["backends"][1]["limit"] = min(2**k, 10)
        status = ChangingStatus(answers)
        _, dom = await self.render(status)
        last = f"limit {min(2 ** min(status.requests, 6), 10)}"
        labels = re.findall(r'<span class="chart-label">([^<]*)</span>', dom)
        self.assertEqual([label for label in labels if label.startswith("limit")], [last])
        self.assertEqual(labels[-1], last)

    async def test_shadow(self) -> None:
        """
        With a shadow policy, the page shows its agreement and the requests
        it would have sent to each backend; without one, nothing of it.
        """
        page, dom = await self.render(ChangingStatus(polls(1)))
        self.assertEqual(page.text["shadow-name"], "ewma")
        self.assertEqual(page.text["shadow-agreement"], "40.0 % of 200 picks")
        self.assertEqual(page.text["shadow-errors"], "0")
        self.assertNotIn("hidden", page.attributes["shadow-section"])
        cells = re.findall(r"<td[^>]*>([^<]*)</td>", dom.split('id="shadow-backends"')[1])
        self.assertEqual(
            cells[:6], ["localhost:8081", "150", "75.0 %", "localhost:8082", "50", "25.0 %"]
        )
        page, _ = await self.render(FakeStatus(EXAMPLE))
        self.assertIn("hidden", page.attributes["shadow-section"])

    async def test_screenshot(self) -> None:
        """
        Chromium paints the page into a PNG of the window's size (kept as
        C{_trial_temp/.../status.png} to look at).
        """
        payload = copy.deepcopy(EXAMPLE)
        payload["backends"].append(
            {
                **EXAMPLE["backends"][0],
                "address": "localhost:8083",
                "state": "down",
                "health": "failed: timeout",
                "lastError": "Connection was refused by other side: 111: Connection refused.",
                "latencyMs": 2003.25,
            }
        )
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "status.png")
        await self.chromium(
            self.serve(FakeStatus(payload)), f"--screenshot={path}", "--window-size=1200,700"
        )
        with open(path, "rb") as png:
            data = png.read()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(struct.unpack(">II", data[16:24]), (1200, 700))

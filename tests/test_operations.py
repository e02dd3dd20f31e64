"""
Operations: the configuration file and its reload, the admin API, the
metrics and the JSON access log.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from treq.testing import StubTreq
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from tests.helpers import CONFIG, GET, OK, Harness, ServiceHarness
from txlb import config
from txlb.admin import AdminResource, AdminSite, refuseChange
from txlb.algorithms.roundrobin import RoundRobin
from txlb.metrics import Metrics
from txlb.refusals import REASONS
from txlb.service import adminURL
from txlb.tap import Options, makeService
from txlb.workers.workeradmin import mergeMetrics, workerMetrics


class ConfigArgumentsTests(SynchronousTestCase):
    """
    A file's settings become the command line they stand for.
    """

    parameters = {"listen", "backends", "retries", "health-path", "config", "demo"}
    flags = {"via", "forwarded"}

    def test_table(self) -> None:
        """
        Strings, numbers, lists of backends and flags become arguments.
        """
        table = [
            ('listen = "tcp:9090"', ["--listen", "tcp:9090"]),
            ("retries = 3", ["--retries", "3"]),
            ('backends = ["a:1=2", "b:2"]', ["--backends", "a:1=2,b:2"]),
            ('backends = "a:1,b:2"', ["--backends", "a:1,b:2"]),
            ("via = true\nforwarded = false", ["--via"]),
            ("", []),
        ]
        for text, expected in table:
            self.assertEqual(config.arguments(text, self.parameters, self.flags), expected, text)

    def test_errors(self) -> None:
        """
        Bad files are refused with a reason.
        """
        table = [
            ("listen = ", "not valid TOML"),
            ("colour = 1", "unknown setting 'colour'"),
            ("config = 'x'", "unknown setting 'config'"),
            ("demo = true", "unknown setting 'demo'"),
            ("via = 1", "via: expected true or false, not 1"),
            ("retries = true", "retries: expected a string or a number, not True"),
            ("backends = [1]", 'backends: expected a list of "HOST:PORT[=WEIGHT]" strings'),
            ("[health]\npath = '/h'", "unknown setting 'health'"),
        ]
        for text, reason in table:
            with self.assertRaises(config.ConfigError) as caught:
                config.arguments(text, self.parameters, self.flags)
            self.assertIn(reason, str(caught.exception), text)


class ConfigFileTests(SynchronousTestCase):
    def parse(self, text: str, *args: str) -> Options:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        options = Options()
        options.parseOptions(["--config", path, *args])
        return options

    def test_settings(self) -> None:
        """
        The file's settings are used.
        """
        options = self.parse(CONFIG)
        self.assertEqual(options["listen"], ["tcp:8080"])
        self.assertEqual(
            [(b.address, b.weight) for b in options["backends"]],
            [("127.0.0.1:8081", 1), ("127.0.0.1:8082", 2)],
        )
        self.assertEqual(options["retries"], 1)

    def test_commandLineOverrides(self) -> None:
        """
        Options given on the command line override the file's.
        """
        options = self.parse(CONFIG, "--retries", "4", "--algo", "iphash")
        self.assertEqual((options["retries"], options["algo"]), (4, "iphash"))

    def test_checkedLikeCommandLine(self) -> None:
        """
        A bad value in the file gets the same one-line error as on the
        command line, naming the file.
        """
        with self.assertRaises(SystemExit) as caught:
            self.parse('backends = ["a:0"]')
        self.assertEqual(
            caught.exception.code,
            "txlb: --backends: 'a:0': bad port '0' (expected 1-65535) (see twistd txlb --help)",
        )

    def test_unknownSetting(self) -> None:
        """
        An unknown setting is answered with the nearest known one, if one is
        near; the command line's own options (C{config}, C{demo}) are not
        suggested.
        """
        table = [
            ('helth-path = "/h"', "unknown setting 'helth-path': did you mean health-path?"),
            ("retry = 2", "unknown setting 'retry': did you mean retries?"),
            ("colour = 1", "unknown setting 'colour'"),
            ("demos = true", "unknown setting 'demos'"),
        ]
        for text, reason in table:
            path = self.mktemp()
            with open(path, "w", encoding="utf-8") as file:
                file.write('backends = ["a:1"]\n' + text)
            with self.assertRaises(SystemExit) as caught:
                Options().parseOptions(["--config", path])
            self.assertEqual(
                caught.exception.code,
                f"txlb: --config {path}: {reason} (see twistd txlb --help)",
                text,
            )

    def test_missingFile(self) -> None:
        """
        A file that cannot be read is refused in one line.
        """
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--config", "/nonexistent/txlb.toml"])
        self.assertIn("txlb: --config /nonexistent/txlb.toml: [Errno 2]", caught.exception.code)

    def test_example(self) -> None:
        """
        The commented example shipped with txlb is valid.
        """
        from pathlib import Path

        example = Path(__file__).parent.parent / "txlb.example.toml"
        options = Options.fromFile(str(example), [])
        self.assertEqual(options["algo"], "weighted")


class ReloadTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        A valid file is applied: new backends, weights, algorithm and
        settings for new requests; the reload is counted.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.write(
            CONFIG.replace('"roundrobin"', '"weighted"')
            .replace("retries = 1", "retries = 0")
            .replace('"127.0.0.1:8082=2"', '"127.0.0.1:8083=3"')
        )
        self.assertTrue(harness.service.reload())
        self.assertEqual(
            [(b.address, b.weight) for b in harness.backends],
            [("127.0.0.1:8081", 1), ("127.0.0.1:8083", 3)],
        )
        self.assertEqual(harness.resource.algorithm.name, "weighted")
        self.assertEqual(harness.resource.settings.retries, 0)
        self.assertIn(
            b'txlb_config_reloads_total{result="success"} 1.0',
            harness.resource.metrics.exposition(),
        )

    def test_algorithmOptions(self) -> None:
        """
        A reload applies the slow start, the load header and the hash
        options; a backend the file adds starts its slow start.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.write(
            CONFIG.replace('"roundrobin"', '"hash"').replace(
                '"127.0.0.1:8082=2"', '"127.0.0.1:8083"'
            )
            + 'slow-start = 20\nhash-key = "header:X-User"\nload-header = "X-Load"\n'
        )
        harness.reactor.advance(5)
        self.assertTrue(harness.service.reload())
        resource = harness.resource
        self.assertEqual(resource.pool.slowStart, 20)
        self.assertEqual(resource.algorithm.kind, "header")
        self.assertEqual(resource.settings.loadField, b"x-load")
        self.assertEqual([b.upSince for b in resource.pool.backends], [float("-inf"), 5])

    def test_logsChanges(self) -> None:
        """
        A reload's log line says what it changed: the algorithm, the
        backends added, removed, reweighted and no longer drained (the
        admin API's changes undone too), and each option, old -> new.
        """
        harness = ServiceHarness(
            self,
            'algo = "roundrobin"\n'
            'backends = ["127.0.0.1:8081", "127.0.0.1:8082=2", "127.0.0.1:8084"]\n'
            "retries = 1\n",
        )
        harness.backends[2].draining = True
        harness.write(
            'algo = "weighted"\n'
            'shadow-algo = "p2c"\n'
            'backends = ["127.0.0.1:8082=3", "127.0.0.1:8084", "https://127.0.0.1:8083=4"]\n'
            "retries = 0\n"
            "forwarded-for = true\n"
            'health-path = "/health"\n'
        )
        self.assertTrue(harness.service.reload())
        self.assertIn(
            f"Reloaded {harness.path}: algorithm roundrobin -> weighted; shadow none -> p2c;"
            " forwarded-for off -> on; health-path none -> /health; retries 1 -> 0;"
            " 127.0.0.1:8082 weight 2 -> 3; 127.0.0.1:8084 no longer draining;"
            " added https://127.0.0.1:8083 (weight 4); removed 127.0.0.1:8081",
            harness.messages(),
        )

    def test_logsRepeatableOptions(self) -> None:
        """
        DNS names and servers show as written.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.write(
            CONFIG + 'backends-dns = ["_http._tcp.web.test", "api.test:80"]\n'
            'dns-server = ["127.0.0.1:5353", "[::1]"]\n'
        )
        self.assertTrue(harness.service.reload())
        self.assertIn(
            f"Reloaded {harness.path}: backends-dns none -> _http._tcp.web.test, api.test:80;"
            " dns-server none -> 127.0.0.1:5353, [::1]:53",
            harness.messages(),
        )

    def test_logsNothingChanged(self) -> None:
        """
        A reload that changes nothing says so.
        """
        harness = ServiceHarness(self, CONFIG)
        self.assertTrue(harness.service.reload())
        self.assertIn(f"Reloaded {harness.path}: nothing changed", harness.messages())

    def test_invalid(self) -> None:
        """
        An invalid file is logged with the reason, and the running
        configuration stays.
        """
        harness = ServiceHarness(self, CONFIG)
        before = harness.resource.algorithm
        harness.write('backends = ["127.0.0.1:8081=0"]')
        self.assertFalse(harness.service.reload())
        self.assertIs(harness.resource.algorithm, before)
        self.assertIn(
            "Reload failed, the configuration stays as it was: --backends: '127.0.0.1:8081=0': "
            "the weight must be a whole number from 1 to 1000",
            harness.messages(),
        )
        self.assertIn(
            b'txlb_config_reloads_total{result="failure"} 1.0',
            harness.resource.metrics.exposition(),
        )

    def test_countersKept(self) -> None:
        """
        A backend that stays keeps its counts.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        kept = harness.backends[0]
        harness.write(CONFIG.replace("retries = 1", "retries = 2"))
        harness.service.reload()
        self.assertIs(harness.backends[0], kept)
        self.assertEqual(kept.requests, 1)

    def test_removedWhileInFlight(self) -> None:
        """
        A request in flight on a backend the reload removes finishes there,
        on the same client connection, which serves the next request on the
        remaining backend.
        """
        harness = ServiceHarness(self, CONFIG)
        channel, client = harness.client(GET)
        removed, _ = harness.backend()
        self.assertEqual(removed.transport.getPeer().port, 8081)
        harness.write(CONFIG.replace('"127.0.0.1:8081", ', ""))
        harness.service.reload()
        removed.dataReceived(OK)
        self.assertTrue(client.value().endswith(b"\r\n\r\nok"))
        self.assertFalse(client.disconnecting)
        channel.dataReceived(GET)
        second, _ = harness.backend()
        self.assertEqual(second.transport.getPeer().port, 8082)

    def test_healthChecksTurnedOff(self) -> None:
        """
        A reload that turns active checks off forgets their verdicts.
        """
        harness = ServiceHarness(self, CONFIG + 'health-path = "/health"\n')
        harness.backends[1].healthy = False
        harness.backends[1].health = "failed: status 503"
        harness.service.reload()
        self.assertEqual([(b.healthy, b.health) for b in harness.backends], [(True, None)] * 2)

    def test_healthChecksApplied(self) -> None:
        """
        A reload applies new health-check, passive-check and connect-timeout
        settings.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.write(
            CONFIG + 'health-path = "/h"\nmax-fails = 7\nfail-timeout = 3\nconnect-timeout = 1.5\n'
        )
        harness.service.reload()
        self.assertEqual(harness.service.pools["default"]._health.path, "/h")  # type: ignore[union-attr]
        self.assertEqual((harness.pool.maxFails, harness.pool.failTimeout), (7, 3.0))
        self.assertEqual(harness.resource.client.connectTimeout, 1.5)

    def test_clientTimeout(self) -> None:
        """
        A reload changes the idle timeout of new client connections.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.write(CONFIG + "client-timeout = 2\n")
        harness.service.reload()
        self.assertEqual(harness.site.timeOut, 2.0)

    def test_undrains(self) -> None:
        """
        A reload applies the file as it is: a backend the admin API drained
        serves again if the file lists it.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.backends[0].draining = True
        harness.service.reload()
        self.assertFalse(harness.backends[0].draining)

    def test_listenNeedsRestart(self) -> None:
        """
        A new listening address is not applied, and says so.
        """
        harness = ServiceHarness(self, CONFIG)
        harness.write(CONFIG.replace("tcp:8080", "tcp:9090"))
        harness.service.reload()
        self.assertEqual(harness.service.config["listen"], ["tcp:8080"])
        self.assertIn("--listen changes need a restart; it stays 'tcp:8080'", harness.messages())

    def test_withoutConfig(self) -> None:
        """
        Without --config there is nothing to reload, and that is logged.
        """
        options = Options()
        options.parseOptions(["--backends", "127.0.0.1:8081"])
        service = makeService(options, MemoryReactorClock())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertFalse(service.reload())  # type: ignore[attr-defined]
        self.assertEqual(len(events), 1)


class AdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = ServiceHarness(self, CONFIG)
        self.admin = StubTreq(AdminResource(self.harness.service, "s3cret"))

    def call(
        self, method: str, path: str, body: Any = None, token: str | None = "s3cret"
    ) -> tuple[int, Any]:
        headers = Headers()
        if token is not None:
            headers.addRawHeader(b"Authorization", b"Bearer " + token.encode())
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        response = self.successResultOf(
            self.admin.request(method, f"http://admin{path}", headers=headers, data=data)
        )
        content = self.successResultOf(response.content())
        if response.headers.getRawHeaders(b"content-type") == [b"application/json"]:
            return response.code, json.loads(content)
        return response.code, content

    def test_status(self) -> None:
        """
        /status describes the balancer and every backend.
        """
        self.harness.client(GET)
        code, status = self.call("GET", "/status", token=None)
        self.assertEqual(code, 200)
        self.assertEqual(
            (status["algorithm"], status["listen"], status["version"]),
            ("roundrobin", ["tcp:8080"], "0.1.0"),
        )
        first = status["backends"][0]
        self.assertEqual(
            {
                k: first[k]
                for k in ("address", "weight", "state", "active", "requests", "health", "latencyMs")
            },
            {
                "address": "127.0.0.1:8081",
                "weight": 1,
                "state": "up",
                "active": 1,
                "requests": 0,
                "health": None,
                "latencyMs": None,
            },
        )

    def test_backends(self) -> None:
        """
        C{GET /backends} lists the backends as C{/status} does, and C{GET
        /backends/HOST:PORT} gives one; neither needs the token.
        """
        self.harness.client(GET)
        _, status = self.call("GET", "/status")
        listed = [
            {k: v for k, v in backend.items() if k != "latencyBuckets"}
            for backend in status["backends"]
        ]
        self.assertEqual(self.call("GET", "/backends", token=None), (200, {"backends": listed}))
        self.assertEqual(self.call("GET", "/backends/127.0.0.1:8082", token=None), (200, listed[1]))
        self.assertEqual(
            self.call("GET", "/backends/127.0.0.1:9999"),
            (404, {"error": "no backend 127.0.0.1:9999"}),
        )

    def test_head(self) -> None:
        """
        C{HEAD} is answered wherever C{GET} is, without the token, with the
        status and length C{GET} has and no body; elsewhere, 405.
        """
        for path in ("/", "/status", "/metrics", "/backends", "/backends/127.0.0.1:8081"):
            get = self.successResultOf(self.admin.get(f"http://admin{path}"))
            head = self.successResultOf(self.admin.head(f"http://admin{path}"))
            self.assertEqual((get.code, head.code), (200, 200), path)
            body = self.successResultOf(get.content())
            self.assertEqual(self.successResultOf(head.content()), b"", path)
            self.assertEqual(
                head.headers.getRawHeaders(b"content-length"), [b"%d" % len(body)], path
            )
        for path, code in (("/algorithm", 405), ("/nothing", 404)):
            head = self.successResultOf(self.admin.head(f"http://admin{path}"))
            self.assertEqual(head.code, code, path)

    def test_statusLoadAndLatencies(self) -> None:
        """
        /status gives each backend's reported load (faded with time, null if
        none) and its requests counted in the latency buckets (null before
        the first), with the buckets' bounds.
        """
        harness = self.harness
        harness.client(GET)
        backend, _ = harness.backend()
        harness.reactor.advance(0.003)
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nX-Txlb-Load: 0.5\r\nContent-Length: 2\r\n\r\nok")
        harness.reactor.advance(10)
        _, status = self.call("GET", "/status", token=None)
        self.assertEqual(status["latencyBounds"][:4], [0.001, 0.0025, 0.005, 0.01])
        first, second = status["backends"]
        self.assertEqual(first["load"], round(0.5 * math.exp(-1), 3))
        self.assertEqual(first["latencyBuckets"], [0, 0, 1, *[1] * 12])
        self.assertEqual((second["load"], second["latencyBuckets"]), (None, None))
        self.assertIsNone(status["shadow"])

    def test_metrics(self) -> None:
        """
        /metrics counts known traffic by backend and code, with latencies,
        active requests, up, and retries.
        """
        harness = self.harness
        for _ in range(2):
            harness.client(GET)
            backend, _ = harness.backend()
            backend.dataReceived(OK)
        harness.client(GET)
        code, text = self.call("GET", "/metrics", token=None)
        self.assertEqual(code, 200)
        for line in [
            b'txlb_requests_total{backend="127.0.0.1:8081",code="200",pool="default"} 1.0',
            b'txlb_requests_total{backend="127.0.0.1:8082",code="200",pool="default"} 1.0',
            b'txlb_request_duration_seconds_count{backend="127.0.0.1:8081",pool="default"} 1.0',
            b'txlb_backend_active_requests{backend="127.0.0.1:8081",pool="default"} 1.0',
            b'txlb_backend_up{backend="127.0.0.1:8082",pool="default"} 1.0',
            b'txlb_retries_total{pool="default"} 0.0',
        ]:
            self.assertIn(line, text)

    def test_add(self) -> None:
        """
        POST /backends adds a backend that new requests reach.
        """
        code, added = self.call("POST", "/backends", {"address": "127.0.0.1:8083", "weight": 2})
        self.assertEqual((code, added["address"], added["weight"]), (201, "127.0.0.1:8083", 2))
        self.assertEqual([b.port for b in self.harness.backends], [8081, 8082, 8083])
        self.assertEqual(self.harness.resource.algorithm.backends, tuple(self.harness.backends))

    def test_addBad(self) -> None:
        """
        Bad additions get 400 or 409 with a JSON error.
        """
        table = [
            ({"address": "127.0.0.1:0"}, 400, "'127.0.0.1:0': bad port '0' (expected 1-65535)"),
            ({"address": "x:1", "weight": 0}, 400, "weight must be a whole number from 1 to 1000"),
            (
                {"address": "x:1", "weight": 1001},
                400,
                "weight must be a whole number from 1 to 1000",
            ),
            (
                {"address": "x:1", "weight": True},
                400,
                "weight must be a whole number from 1 to 1000",
            ),
            ({"weight": 1}, 400, 'expected {"address": "HOST:PORT", "weight": N}'),
            (b"{not json", 400, "the body is not JSON"),
            ([1], 400, "the body must be a JSON object"),
            ({"address": "127.0.0.1:8081"}, 409, "127.0.0.1:8081 is already a backend"),
        ]
        for body, code, error in table:
            got, answer = self.call("POST", "/backends", body)
            self.assertEqual(got, code, body)
            self.assertIn(error, answer["error"])

    def test_weight(self) -> None:
        """
        PATCH sets a weight, which the algorithm uses at once.
        """
        code, changed = self.call("PATCH", "/backends/127.0.0.1:8082", {"weight": 5})
        self.assertEqual((code, changed["weight"]), (200, 5))
        self.assertEqual(self.harness.backends[1].weight, 5)

    def test_drain(self) -> None:
        """
        A drained backend gets no new requests; the one in flight finishes,
        and the status shows it counting down.
        """
        harness = self.harness
        harness.client(GET)
        inFlight, _ = harness.backend()
        code, drained = self.call("POST", "/backends/127.0.0.1:8081/drain")
        self.assertEqual((code, drained["state"], drained["active"]), (200, "draining", 1))
        harness.client(GET)
        other, _ = harness.backend()
        self.assertEqual(other.transport.getPeer().port, 8082)
        other.dataReceived(OK)
        harness.client(GET)
        self.assertEqual(harness.reactor.tcpClients, [])
        other.dataReceived(OK)
        self.assertEqual([b.requests for b in harness.backends], [0, 2])
        inFlight.dataReceived(OK)
        _, status = self.call("GET", "/status", token=None)
        self.assertEqual(
            (status["backends"][0]["state"], status["backends"][0]["active"]), ("draining", 0)
        )

    def test_remove(self) -> None:
        """
        DELETE removes a backend; removing the last one is refused.
        """
        self.assertEqual(self.call("DELETE", "/backends/127.0.0.1:8081")[0], 200)
        self.assertEqual([b.port for b in self.harness.backends], [8082])
        code, answer = self.call("DELETE", "/backends/127.0.0.1:8082")
        self.assertEqual((code, answer["error"]), (409, "cannot remove the last backend"))

    def test_unknownBackend(self) -> None:
        """
        A backend that is not there gets 404.
        """
        self.assertEqual(self.call("PATCH", "/backends/127.0.0.1:9999", {"weight": 2})[0], 404)

    def test_authRequired(self) -> None:
        """
        Changes without the token, or with a wrong one, get 401; reads need
        none.
        """
        for token in (None, "wrong"):
            code, answer = self.call("POST", "/backends", {"address": "x:1"}, token=token)
            self.assertEqual(code, 401)
            self.assertEqual(answer["error"], "changes need Authorization: Bearer TOKEN")
        self.assertEqual([b.port for b in self.harness.backends], [8081, 8082])
        self.assertEqual(self.call("GET", "/status", token=None)[0], 200)

    def test_statusPage(self) -> None:
        """
        / is the HTML status page.
        """
        code, page = self.call("GET", "/", token=None)
        self.assertEqual(code, 200)
        self.assertIn(b'fetch("status?since="', page)

    def test_crossSiteWithoutToken(self) -> None:
        """
        Without a token, a change a browser sends from a web page (it
        carries Origin) is refused; one from a command-line client is not.
        """
        admin = StubTreq(AdminResource(self.harness.service, None))
        for origin, code in [(b"http://evil.example", 403), (None, 200)]:
            headers = Headers()
            if origin is not None:
                headers.addRawHeader(b"Origin", origin)
            response = self.successResultOf(
                admin.post("http://admin/backends/127.0.0.1:8081/drain", headers=headers)
            )
            self.assertEqual(response.code, code)
        self.assertTrue(self.harness.backends[0].draining)

    def test_notFoundAndNotAllowed(self) -> None:
        """
        Unknown paths get 404 and wrong methods 405, in JSON.
        """
        self.assertEqual(self.call("GET", "/nothing")[0], 404)
        self.assertEqual(self.call("DELETE", "/status")[0], 405)


class AdminStatusTests(SynchronousTestCase):
    """
    What C{/status} gives the status page: the history, whether changes
    need a token and the request carries it, whether the algorithm uses
    weights, and each backend's failed checks.
    """

    def setUp(self) -> None:
        self.harness = ServiceHarness(
            self, CONFIG + 'admin = "tcp:9000:interface=127.0.0.1"\nadmin-token = "s3cret"\n'
        )
        [admin] = [
            listener
            for listener in self.harness.service.listeners
            if isinstance(getattr(listener, "factory", None), AdminSite)
        ]
        self.admin = StubTreq(admin.factory.resource)

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        headers = Headers()
        if token is not None:
            headers.addRawHeader(b"Authorization", b"Bearer " + token.encode())
        response = self.successResultOf(self.admin.get(f"http://admin{path}", headers=headers))
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_history(self) -> None:
        """
        The service samples every backend every 2 seconds from its start;
        C{?since=T} sends the samples taken after C{T}, and the status
        without it none.
        """
        harness = self.harness
        start = harness.reactor.seconds()
        harness.client(GET)
        harness.backend()[0].dataReceived(OK)
        for _ in range(3):
            harness.reactor.advance(2)
        # (The memory reactor's clock starts at 0.)
        _, status = self.get("/status?since=-1")
        history = status["history"]
        self.assertEqual((history["interval"], history["span"]), (2.0, 300.0))
        self.assertEqual(
            [sample["time"] - start for sample in history["samples"]], [0.0, 2.0, 4.0, 6.0]
        )
        self.assertEqual(
            history["samples"][1]["backends"]["127.0.0.1:8081"],
            {"rps": 0.1, "p99": 0.99, "active": 0, "load": None, "limit": 0},
        )
        _, status = self.get(f"/status?since={start + 4}")
        self.assertEqual([s["time"] - start for s in status["history"]["samples"]], [6.0])
        self.assertNotIn("history", self.get("/status")[1])

    def test_badSince(self) -> None:
        """
        A C{since} that is not a number gets 400 and one line.
        """
        self.assertEqual(
            self.get("/status?since=yesterday"),
            (400, {"error": "since must be a number of seconds"}),
        )

    def test_adminAccess(self) -> None:
        """
        The status says whether changes need a token, and whether this
        request carried it (a wrong one is no error: reads need none).
        """
        for token, authorized in [(None, False), ("wrong", False), ("s3cret", True)]:
            code, status = self.get("/status", token)
            self.assertEqual(
                (code, status["admin"]), (200, {"token": True, "authorized": authorized})
            )
        admin = StubTreq(AdminResource(self.harness.service, None))
        response = self.successResultOf(admin.get("http://admin/status"))
        status = json.loads(self.successResultOf(response.content()))
        self.assertEqual(status["admin"], {"token": False, "authorized": False})

    def test_usesWeights(self) -> None:
        """
        The status says whether the algorithm in use reads the weights.
        """
        self.assertIs(self.get("/status")[1]["usesWeights"], False)
        self.harness.service.switchAlgorithm({"algo": "weighted"})
        self.assertIs(self.get("/status")[1]["usesWeights"], True)

    def test_lastError(self) -> None:
        """
        Each backend's failed checks are counted, and its last error comes
        with its age in seconds.
        """
        backend = self.harness.backends[0]
        backend.checked(self.harness.reactor.seconds(), "status 503")
        self.harness.reactor.advance(1.5)
        first = self.get("/status")[1]["backends"][0]
        self.assertEqual(
            {key: first[key] for key in ("checkFailures", "lastError", "lastErrorAge", "errors")},
            {
                "checkFailures": 1,
                "lastError": "health check: status 503",
                "lastErrorAge": 1.5,
                "errors": 0,
            },
        )


class RefuseChangeTests(SynchronousTestCase):
    """
    Which changes a browser may make (cross-site request forgery), as a
    table.
    """

    def request(self, headers: dict[bytes, bytes]) -> Any:
        request = DummyRequest([b"backends"])
        request.method = b"POST"
        request.requestHeaders.setRawHeaders(b"host", [b"127.0.0.1:9000"])
        for name, value in headers.items():
            request.requestHeaders.setRawHeaders(name, [value])
        return request

    def test_table(self) -> None:
        """
        With a token, the token decides, unless a browser says the change
        comes from another site's page (C{Sec-Fetch-Site}, or else an
        C{Origin} that is not the host asked); without a token, no change
        from a browser passes, and one from a command-line client does.
        """
        bearer = {b"authorization": b"Bearer s3cret"}
        crossSite = "changes from another site's page are refused"
        page = "changes from a web page need --admin-token"
        noToken = "changes need Authorization: Bearer TOKEN"
        table: list[tuple[str | None, dict[bytes, bytes], Any]] = [
            ("s3cret", bearer, None),
            ("s3cret", {}, (401, noToken)),
            ("s3cret", {b"authorization": b"Bearer wrong"}, (401, noToken)),
            ("s3cret", {**bearer, b"sec-fetch-site": b"same-origin"}, None),
            ("s3cret", {**bearer, b"sec-fetch-site": b"none"}, None),
            ("s3cret", {**bearer, b"sec-fetch-site": b"cross-site"}, (403, crossSite)),
            ("s3cret", {**bearer, b"sec-fetch-site": b"same-site"}, (403, crossSite)),
            ("s3cret", {b"sec-fetch-site": b"cross-site"}, (403, crossSite)),
            ("s3cret", {**bearer, b"origin": b"http://127.0.0.1:9000"}, None),
            ("s3cret", {**bearer, b"origin": b"http://evil.example"}, (403, crossSite)),
            ("s3cret", {**bearer, b"origin": b"http://127.0.0.1:9001"}, (403, crossSite)),
            ("s3cret", {**bearer, b"origin": b"null"}, (403, crossSite)),
            (None, {}, None),
            (None, {b"origin": b"http://evil.example"}, (403, crossSite)),
            (None, {b"origin": b"http://127.0.0.1:9000"}, (403, page)),
            (None, {b"sec-fetch-site": b"same-origin"}, (403, page)),
            (None, {b"sec-fetch-site": b"cross-site"}, (403, crossSite)),
        ]
        for token, headers, expected in table:
            self.assertEqual(refuseChange(self.request(headers), token), expected, (token, headers))


class AdminOptionTests(SynchronousTestCase):
    def test_refusesOpenWithoutToken(self) -> None:
        """
        An admin listener on a non-loopback address needs a token.
        """
        for description in ["tcp:9000", "tcp:9000:interface=0.0.0.0", "tcp6:9000:interface=\\:\\:"]:
            with self.assertRaises(SystemExit) as caught:
                Options().parseOptions(["--demo", "--admin", description])
            self.assertIn("is not loopback-only: give --admin-token", caught.exception.code)

    def test_loopbackOrToken(self) -> None:
        """
        Loopback addresses and UNIX sockets need no token; anything with a
        token is accepted.
        """
        for args in [
            ["--admin", "tcp:9000:interface=127.0.0.1"],
            ["--admin", "tcp6:9000:interface=\\:\\:1"],
            ["--admin", "unix:/tmp/txlb-admin.sock"],
            ["--admin", "tcp:9000", "--admin-token", "t"],
        ]:
            Options().parseOptions(["--demo", *args])

    def test_adminListens(self) -> None:
        """
        makeService listens for the admin API where --admin says.
        """
        options = Options()
        options.parseOptions(["--demo", "--admin", "tcp:9000:interface=127.0.0.1"])
        reactor = MemoryReactorClock()
        service = makeService(options, reactor)
        service.privilegedStartService()
        self.assertIn(
            (9000, "127.0.0.1"), [(port, interface) for port, _, _, interface in reactor.tcpServers]
        )

    def test_adminLogged(self) -> None:
        """
        The start says where the admin API and status page are, with the
        URL to open.
        """
        options = Options()
        options.parseOptions(["--demo", "--admin", "tcp:9000:interface=127.0.0.1"])
        service = makeService(options, MemoryReactorClock())
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIn(
            "Admin API and status page on tcp:9000:interface=127.0.0.1 (http://127.0.0.1:9000/)",
            [formatEvent(event) for event in events],
        )

    def test_adminURL(self) -> None:
        """
        The admin listener's URL, from its description: on this machine for
        every address; none for a UNIX socket, systemd's or port 0.
        """
        table = [
            ("tcp:9000:interface=127.0.0.1", "http://127.0.0.1:9000/"),
            ("tcp:port=9000:interface=10.0.0.5", "http://10.0.0.5:9000/"),
            ("tcp:9000", "http://127.0.0.1:9000/"),
            ("tcp6:9000:interface=\\:\\:1", "http://[::1]:9000/"),
            ("tcp6:9000", "http://[::1]:9000/"),
            ("ssl:9443:privateKey=k.pem:interface=127.0.0.1", "https://127.0.0.1:9443/"),
            ("tcp:0:interface=127.0.0.1", None),
            ("unix:/run/txlb-admin.sock", None),
            ("systemd:domain=INET:index=1", None),
        ]
        self.assertEqual([(d, adminURL(d)) for d, _ in table], table)


class MetricsTests(SynchronousTestCase):
    """
    The counters and statistics after known traffic.
    """

    def test_retries(self) -> None:
        """
        Each retry is counted.
        """
        from twisted.internet.error import ConnectionRefusedError

        harness = Harness(self)
        harness.client(GET)
        harness.refuse(ConnectionRefusedError())
        harness.backend()[0].dataReceived(OK)
        self.assertIn(
            b'txlb_retries_total{pool="default"} 1.0', harness.resource.metrics.exposition()
        )

    def test_healthChecks(self) -> None:
        """
        Each active check is counted by backend and result, and its verdict
        shows on the backend.
        """
        from treq.testing import RequestTraversalAgent
        from twisted.web.resource import Resource

        from txlb.health import HealthChecker

        class Failing(Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                request.setResponseCode(503)
                return b""

        harness = Harness(self)
        checker = HealthChecker(
            harness.pool,
            "/h",
            harness.reactor,
            agent=RequestTraversalAgent(Failing()),
            metrics=harness.resource.metrics,
        )
        checker.startService()
        self.addCleanup(checker.stopService)
        text = harness.resource.metrics.exposition()
        self.assertIn(
            b'txlb_health_checks_total{backend="127.0.0.1:8081",pool="default",result="failed"} 1.0',
            text,
        )
        self.assertEqual(harness.backends[0].health, "failed: status 503")

    def test_backendStatistics(self) -> None:
        """
        A backend counts its requests, errors, last error, latency and rate.
        """
        harness = Harness(self, count=1)
        harness.reactor.advance(100)
        harness.client(GET)
        backend, _ = harness.backend()
        harness.reactor.advance(0.01)
        backend.dataReceived(OK)
        harness.client(GET)
        harness.reactor.advance(0.03)
        backend.dataReceived(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
        harness.reactor.advance(1)
        stats = harness.backends[0]
        self.assertEqual((stats.requests, stats.errors, stats.lastError), (2, 1, "status 500"))
        self.assertAlmostEqual(stats.latencyMs, 0.9 * 10 + 0.1 * 30)  # type: ignore[arg-type]
        self.assertAlmostEqual(stats.requestsPerSecond(harness.reactor.seconds()), 0.2)
        self.assertIn(
            b'txlb_backend_up{backend="127.0.0.1:8081",pool="default"} 1.0',
            harness.resource.metrics.exposition(),
        )
        harness.backends[0].healthy = False
        self.assertIn(
            b'txlb_backend_up{backend="127.0.0.1:8081",pool="default"} 0.0',
            harness.resource.metrics.exposition(),
        )


class JSONAccessLogTests(SynchronousTestCase):
    def test_object(self) -> None:
        """
        With the JSON access log, each request is one JSON object with its
        timings, sizes, retries and termination flag.
        """
        harness = Harness(self, accessLog="json")
        harness.client(b"POST /order HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nid=42")
        harness.reactor.advance(0.002)
        backend, _ = harness.backend()
        harness.reactor.advance(0.003)
        backend.dataReceived(OK)
        (line,) = harness.accessLog() or [""]
        self.assertEqual(
            json.loads(line),
            {
                "client": "10.0.0.7",
                "method": "POST",
                "target": "/order",
                "backend": "127.0.0.1:8081",
                "status": 200,
                "bytesIn": 5,
                "bytesOut": 2,
                "connectMs": 2.0,
                "firstByteMs": 5.0,
                "totalMs": 5.0,
                "queueMs": None,
                "retries": 0,
                "flag": "-",
                "error": None,
                "route": None,
                "pool": "default",
            },
        )

    def test_flags(self) -> None:
        """
        Each way a request can end has its flag.
        """
        from twisted.internet.error import ConnectionLost, ConnectionRefusedError
        from twisted.python.failure import Failure

        cases = []
        harness = Harness(self, accessLog="json", retries=0)
        harness.client(GET)
        harness.refuse(ConnectionRefusedError())
        cases.append("UF")
        harness.client(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        backend, _ = harness.backend()
        backend.connectionLost(Failure(ConnectionLost()))
        cases.append("UR")
        channel, _ = harness.client(GET)
        harness.backend()
        channel.connectionLost(Failure(ConnectionLost()))
        cases.append("DC")
        harness.client(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
        harness.backend()
        harness.reactor.advance(30)
        cases.append("UT")
        for backend in harness.backends:
            backend.healthy = False
        harness.client(GET)
        harness.refuse(ConnectionRefusedError())
        cases.append("UH")
        self.assertEqual([json.loads(line)["flag"] for line in harness.accessLog()], cases)


#: Where the metrics are documented.
METRICS_DOCS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


class MetricsDocumentedTests(SynchronousTestCase):
    """
    The documentation's table of metrics against the metrics themselves.
    """

    def table(self) -> str:
        text = METRICS_DOCS.read_text(encoding="utf-8")
        section = text[text.index("\n## Metrics\n") :]
        return section[: section.index("\n## ", 1)]

    def test_everyMetric(self) -> None:
        """
        Every metric txlb exposes (a shadow policy's, a mirror pool's, the
        client limits', a fleet member's, and the supervisor's under
        C{--workers}, too) has its row, and every row is one txlb exposes.
        """
        harness = Harness(self)
        harness.resource.useShadow("ewma", lambda backends: RoundRobin(backends))
        harness.resource.metrics.addMirror(harness.resource.name)
        limits = SimpleNamespace(
            rateLimited=0, routeRateLimited={"api": 0}, refusedConnections=0, untrackedConnections=0
        )
        limited = Metrics(harness.reactor, lambda: ())
        limited.clientLimits = limits  # type: ignore[assignment]
        limited.followEtcd(SimpleNamespace(connected=True, revision=1, problems={}))
        exposed = {
            line.split()[2]
            for line in (
                harness.resource.metrics.exposition().decode()
                + limited.exposition().decode()
                + mergeMetrics([], workerMetrics([True], [0])).decode()
            ).splitlines()
            if line.startswith("# TYPE ") and not line.split()[2].endswith("_created")
        }
        documented = {
            name
            for line in self.table().splitlines()
            if line.startswith("| `txlb_")
            for name in re.findall(r"`(txlb_\w+)`", line.split("|")[1])
        }
        self.assertEqual(documented, exposed)

    def test_everyRefusalReason(self) -> None:
        """
        The row of C{txlb_client_refusals_total} names each of its reasons.
        """
        [row] = [
            line
            for line in self.table().splitlines()
            if line.startswith("| `txlb_client_refusals_total`")
        ]
        named = re.findall(r"`(\w+)`", row.split("|")[3])
        self.assertEqual(sorted(named), sorted(REASONS))

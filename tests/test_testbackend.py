"""
Tests for L{txlb.testbackend}, the backend the README and C{--demo} use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import treq
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from txlb.testbackend import (
    BackendResource,
    makeBackendService,
    makeBackendSite,
    portsFromEnvironment,
    registrationsFromEnvironment,
    resourceFromEnvironment,
)

_ORIGIN = b"http://backend.example"

TAC = Path(__file__).parent.parent / "backend_server.tac"

# What the twistd console script does; without sys.path's "" as it has none.
_RUN_TWISTD = "import sys; sys.path.remove(''); from twisted.scripts.twistd import run; run()"


@implementer(IBodyProducer)
class _BytesProducer:
    """
    Write a body at once, so the in-memory agent needs no reactor
    (L{FileBodyProducer} would wait on the global cooperator).
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _InMemoryTestCase(SynchronousTestCase):
    """
    Helpers that send requests to an in-memory L{BackendResource}.
    """

    def request(
        self,
        method: bytes,
        target: bytes,
        headers: Headers | None = None,
        body: bytes | None = None,
    ) -> tuple[int, Headers, bytes]:
        """
        Send one request over a real L{HTTPChannel} in memory; C{target} is
        a path on L{_ORIGIN} or an absolute URL.  Unlike treq, the agent
        sends C{method} as given (treq upper-cases it), which the lower-case
        test needs.
        """
        agent = RequestTraversalAgent(BackendResource())
        producer = None if body is None else _BytesProducer(body)
        url = target if target.startswith(b"http:") else _ORIGIN + target
        d = agent.request(method, url, headers, producer)
        agent.flush()
        response = self.successResultOf(d)
        content = treq.content(response)
        agent.flush()
        return response.code, response.headers, self.successResultOf(content)

    def echo(
        self,
        method: bytes = b"GET",
        target: bytes = b"/echo",
        headers: Headers | None = None,
        body: bytes | None = None,
    ) -> dict[str, Any]:
        """
        What C{/echo} says it received for the given request.
        """
        code, responseHeaders, content = self.request(method, target, headers, body)
        self.assertEqual(code, 200, content)
        self.assertEqual(responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])
        result: dict[str, Any] = json.loads(content)
        return result

    def stubGet(self, url: str) -> bytes:
        """
        GET C{url} with L{StubTreq} and return the body.
        """
        stub = StubTreq(BackendResource())
        d = stub.get(url)  # type: ignore[attr-defined]
        d.addCallback(treq.content)
        stub.flush()
        body: bytes = self.successResultOf(d)
        return body


class PingTests(_InMemoryTestCase):
    """
    C{/ping} names the port the request arrived on.
    """

    def test_pingNamesPort(self) -> None:
        """
        The body is C{pong from backend :<port>}; StubTreq's fake server
        address takes its port from the URL.
        """
        self.assertEqual(
            self.stubGet("http://backend.example:8081/ping"),
            b"pong from backend :8081\n",
        )

    def test_pingDefaultPort(self) -> None:
        """
        Without a port in the URL, StubTreq reports port 80.
        """
        self.assertEqual(self.stubGet("http://backend.example/ping"), b"pong from backend :80\n")

    def test_pingContentType(self) -> None:
        """
        The answer is UTF-8 plain text with status 200.
        """
        code, headers, _ = self.request(b"GET", b"/ping")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])

    def test_headNoBody(self) -> None:
        """
        HEAD gets GET's Content-Length and no body.
        """
        code, headers, content = self.request(b"HEAD", b"/ping")
        self.assertEqual(
            (code, headers.getRawHeaders(b"content-length"), content),
            (200, [b"%d" % len(b"pong from backend :80\n")], b""),
        )


class EchoTests(_InMemoryTestCase):
    """
    C{/echo} reports exactly what arrived.
    """

    def test_method(self) -> None:
        """
        The method is reported.
        """
        self.assertEqual(self.echo(b"PATCH")["method"], "PATCH")

    def test_customMethods(self) -> None:
        """
        Methods Twisted's per-method dispatch would refuse still reach
        C{/echo}.
        """
        for method in [b"PURGE", b"X-CUSTOM", b"DELETE", b"OPTIONS"]:
            self.assertEqual(self.echo(method)["method"], method.decode())

    def test_lowerCaseMethod(self) -> None:
        """
        A lower-case method is reported as sent, not upper-cased.
        """
        self.assertEqual(self.echo(b"get")["method"], "get")

    def test_rawTarget(self) -> None:
        """
        The request-target is reported byte for byte, query string included,
        with no decoding or normalisation.
        """
        self.assertEqual(self.echo(target=b"/echo?x=%7e&y=&z")["target"], "/echo?x=%7e&y=&z")

    def test_version(self) -> None:
        """
        The HTTP version is reported.
        """
        self.assertEqual(self.echo()["version"], "HTTP/1.1")

    def test_port(self) -> None:
        """
        The port the request arrived on is reported as a number.
        """
        self.assertEqual(self.echo()["port"], 80)

    def test_repeatedHeaders(self) -> None:
        """
        Each value of a repeated header is its own pair, in order.
        """
        headers = Headers({b"Cookie": [b"a=1", b"b=2"], b"X-Other": [b"o"]})
        received = self.echo(headers=headers)["headers"]
        self.assertEqual(
            [pair for pair in received if pair[0] in ("Cookie", "X-Other")],
            [["Cookie", "a=1"], ["Cookie", "b=2"], ["X-Other", "o"]],
        )

    def test_hostHeader(self) -> None:
        """
        Headers the client adds (here Host) are reported too.
        """
        self.assertIn(["Host", "backend.example"], self.echo()["headers"])

    def test_body(self) -> None:
        """
        Every byte value of the body, UTF-8 or not, survives as one latin-1
        character.
        """
        body = bytes(range(256)) + b"\xff\xfe"
        echoed = self.echo(b"POST", body=body)["body"]
        self.assertEqual(echoed.encode("latin-1"), body)

    def test_emptyBody(self) -> None:
        """
        No body is an empty string.
        """
        self.assertEqual(self.echo()["body"], "")


class NotFoundTests(_InMemoryTestCase):
    """
    Paths other than C{/ping} and C{/echo} are 404.
    """

    def test_otherPaths(self) -> None:
        """
        Neighbouring and unrelated paths are 404 with a plain-text body.
        """
        for target in [b"/", b"/pingx", b"/ping/", b"/echo/more", b"/nope"]:
            code, headers, content = self.request(b"GET", target)
            self.assertEqual(code, 404, target)
            self.assertEqual(
                headers.getRawHeaders(b"content-type"),
                [b"text/plain; charset=utf-8"],
            )
            self.assertTrue(content)

    def test_queryOnPing(self) -> None:
        """
        A query string does not change the routing.
        """
        code, _, _ = self.request(b"GET", b"/ping?x=1")
        self.assertEqual(code, 200)


class LoggingTests(_InMemoryTestCase):
    """
    One log line per request, with the fields as keywords.
    """

    def test_logLine(self) -> None:
        """
        The event carries port, method, target and status.
        """
        with capturedLogs() as events:
            self.request(b"PURGE", b"http://backend.example:8082/nope?q")
        ours = [e for e in events if e.get("log_namespace") == "txlb.testbackend"]
        self.assertEqual(len(ours), 1)
        self.assertEqual(
            {k: ours[0][k] for k in ("port", "method", "target", "status")},
            {"port": 8082, "method": "PURGE", "target": "/nope?q", "status": 404},
        )
        self.assertEqual(ours[0]["log_format"], "backend :{port} {method} {target} -> {status}")


class PortsFromEnvironmentTests(SynchronousTestCase):
    """
    C{BACKEND_PORTS} parsing.
    """

    def test_default(self) -> None:
        """
        Without C{BACKEND_PORTS}, the ports are 8081-8083.
        """
        self.assertEqual(portsFromEnvironment({}), [8081, 8082, 8083])

    def test_osEnviron(self) -> None:
        """
        With no argument, C{os.environ} is read.
        """
        self.patch(os, "environ", {"BACKEND_PORTS": "9001"})
        self.assertEqual(portsFromEnvironment(), [9001])

    def test_custom(self) -> None:
        """
        The listed ports are returned in order.
        """
        self.assertEqual(portsFromEnvironment({"BACKEND_PORTS": "9002,9001"}), [9002, 9001])

    def test_whitespace(self) -> None:
        """
        Spaces around ports are ignored.
        """
        self.assertEqual(portsFromEnvironment({"BACKEND_PORTS": " 9001 , 9002\t"}), [9001, 9002])

    def assertBad(self, value: str, message: str) -> None:
        """
        C{BACKEND_PORTS=value} raises L{ValueError} with C{message}.
        """
        e = self.assertRaises(ValueError, portsFromEnvironment, {"BACKEND_PORTS": value})
        self.assertEqual(str(e), message)
        self.assertNotIn("\n", str(e))

    def test_notANumber(self) -> None:
        """
        A non-number is named.
        """
        self.assertBad("8081,abc", "BACKEND_PORTS: 'abc' is not a port number")

    def test_negative(self) -> None:
        """
        A sign is not a digit.
        """
        self.assertBad("-1", "BACKEND_PORTS: '-1' is not a port number")

    def test_nonAsciiDigits(self) -> None:
        """
        Digits from other scripts are refused, though C{int()} would take them.
        """
        self.assertBad("\u0661", "BACKEND_PORTS: '\u0661' is not a port number")

    def test_zero(self) -> None:
        """
        Port 0 is refused: it would listen somewhere unpredictable.
        """
        self.assertBad("0", "BACKEND_PORTS: 0 is not in 1-65535")

    def test_tooLarge(self) -> None:
        """
        Ports above 65535 are refused.
        """
        self.assertBad("65536", "BACKEND_PORTS: 65536 is not in 1-65535")

    def test_empty(self) -> None:
        """
        An empty (or blank) list is refused.
        """
        self.assertBad(" ", "BACKEND_PORTS is empty; expected e.g. 8081,8082,8083")

    def test_emptyItem(self) -> None:
        """
        An empty item, e.g. from a trailing comma, is named.
        """
        self.assertBad("8081,", "BACKEND_PORTS: '' is not a port number")

    def test_duplicate(self) -> None:
        """
        A port listed twice is named.
        """
        self.assertBad("8081,8082,8081", "BACKEND_PORTS: 8081 is listed twice")


class DelayAndLoadTests(SynchronousTestCase):
    """
    A port can answer late, and report a load.
    """

    def get(self, resource: BackendResource, url: bytes) -> list[Any]:
        """
        Start a GET of C{url}; the list gets the response when it comes.
        """
        agent = RequestTraversalAgent(resource)
        responses: list[Any] = []
        agent.request(b"GET", url).addCallback(responses.append)
        agent.flush()
        self.flush = agent.flush
        return responses

    def test_delay(self) -> None:
        """
        A port with a delay answers that many seconds later; the others at
        once.
        """
        clock = Clock()
        resource = BackendResource({8083: 0.5}, reactor=clock)
        self.assertEqual(len(self.get(resource, b"http://b.example:8082/ping")), 1)
        late = self.get(resource, b"http://b.example:8083/ping")
        clock.advance(0.25)
        self.flush()
        self.assertEqual(late, [])
        clock.advance(0.25)
        self.flush()
        self.assertEqual(self.successResultOf(treq.content(late[0])), b"pong from backend :8083\n")
        self.assertEqual(late[0].length, 24)

    def test_delayChangedLive(self) -> None:
        """
        A delay changed while running applies to the next request.
        """
        clock = Clock()
        resource = BackendResource(reactor=clock)
        self.assertEqual(len(self.get(resource, b"http://b.example:8083/ping")), 1)
        resource.delays[8083] = 0.5
        self.assertEqual(self.get(resource, b"http://b.example:8083/ping"), [])

    def test_clientGone(self) -> None:
        """
        A client that leaves before a delayed answer cancels it.
        """
        clock = Clock()
        resource = BackendResource({8083: 1.0}, reactor=clock)
        agent = RequestTraversalAgent(resource)
        d = agent.request(b"GET", b"http://b.example:8083/ping")
        agent.flush()
        d.cancel()
        self.failureResultOf(d)
        agent.flush()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_load(self) -> None:
        """
        A port with a load reports it in C{X-Txlb-Load}; the others do not.
        """
        resource = BackendResource(loads={8083: "0.9"})
        (loaded,) = self.get(resource, b"http://b.example:8083/ping")
        (plain,) = self.get(resource, b"http://b.example:8082/ping")
        self.assertEqual(loaded.headers.getRawHeaders(b"x-txlb-load"), [b"0.9"])
        self.assertIsNone(plain.headers.getRawHeaders(b"x-txlb-load"))

    def test_fromEnvironment(self) -> None:
        """
        C{BACKEND_DELAY_MS} and C{BACKEND_LOAD} give per-port delays (in
        milliseconds) and loads; unset, there are none.
        """
        resource = resourceFromEnvironment(
            [8081, 8082, 8083],
            {"BACKEND_DELAY_MS": "8081:1, 8083:10", "BACKEND_LOAD": "8083:0.9"},
        )
        self.assertEqual(
            (resource.delays, resource.loads), ({8081: 0.001, 8083: 0.01}, {8083: "0.9"})
        )
        empty = resourceFromEnvironment([8081], {})
        self.assertEqual((empty.delays, empty.loads), ({}, {}))

    def test_badEnvironment(self) -> None:
        """
        Bad values are named in one line.
        """
        table = [
            (
                {"BACKEND_DELAY_MS": "10"},
                "BACKEND_DELAY_MS: '10' is not PORT:VALUE for one of [8081]",
            ),
            (
                {"BACKEND_DELAY_MS": "9999:1"},
                "BACKEND_DELAY_MS: '9999:1' is not PORT:VALUE for one of [8081]",
            ),
            ({"BACKEND_DELAY_MS": "8081:1,8081:2"}, "BACKEND_DELAY_MS: port 8081 is listed twice"),
            (
                {"BACKEND_DELAY_MS": "8081:x"},
                "BACKEND_DELAY_MS: 'x' is not a delay in milliseconds (0-60000)",
            ),
            (
                {"BACKEND_DELAY_MS": "8081:-1"},
                "BACKEND_DELAY_MS: '-1' is not a delay in milliseconds (0-60000)",
            ),
            ({"BACKEND_LOAD": "8081:2"}, "BACKEND_LOAD: '2' is not a load from 0 to 1"),
            ({"BACKEND_LOAD": "8081:high"}, "BACKEND_LOAD: 'high' is not a load from 0 to 1"),
        ]
        for environ, message in table:
            e = self.assertRaises(ValueError, resourceFromEnvironment, [8081], environ)
            self.assertEqual(str(e), message)


class CapacityTests(SynchronousTestCase):
    """
    A port with a capacity serves that many requests at a time at its
    usual speed, and slows down past it.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.agent = RequestTraversalAgent(
            BackendResource({8081: 0.1}, reactor=self.clock, capacities={8081: 2, 8082: 1})
        )
        self.answered: list[tuple[str, float]] = []

    def get(self, name: str, port: int = 8081) -> Deferred[Any]:
        """
        Send a request; when its answer comes, C{name} and the time are
        listed in L{answered}.
        """
        d = self.agent.request(b"GET", b"http://b.example:%d/ping" % port)
        d.addCallback(lambda _: self.answered.append((name, self.clock.seconds())))
        self.agent.flush()
        return d

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.agent.flush()

    def test_slowerPastCapacity(self) -> None:
        """
        Within the capacity, a request takes the port's delay; each request
        in flight beyond it, itself included, adds one delay more.
        """
        for name in "abcd":
            self.get(name)
        resource = self.agent._rootResource
        self.assertEqual(resource.inFlight[8081], 4)
        for _ in range(3):
            self.advance(0.1)
        self.assertEqual(
            sorted((name, round(moment, 6)) for name, moment in self.answered),
            [("a", 0.1), ("b", 0.1), ("c", 0.2), ("d", 0.3)],
        )
        self.assertEqual((resource.inFlight[8081], resource.mostInFlight[8081]), (0, 4))

    def test_backToSpeed(self) -> None:
        """
        Once the requests in flight are answered, the port is at its usual
        speed again.
        """
        for name in "abc":
            self.get(name)
        for _ in range(2):
            self.advance(0.1)
        self.get("later")
        self.advance(0.1)
        self.assertEqual(self.answered[-1][0], "later")
        self.assertAlmostEqual(self.answered[-1][1], 0.3)

    def test_clientGone(self) -> None:
        """
        A request whose client left is no longer in flight.
        """
        gone = self.get("gone")
        gone.cancel()
        self.failureResultOf(gone)
        self.agent.flush()
        self.assertEqual(self.agent._rootResource.inFlight[8081], 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_defaultDelay(self) -> None:
        """
        A port with a capacity and no delay takes 10 ms a request.
        """
        self.get("a", 8082)
        self.get("b", 8082)
        self.advance(0.010)
        self.advance(0.010)
        self.assertEqual(
            [(name, round(moment, 6)) for name, moment in self.answered], [("a", 0.01), ("b", 0.02)]
        )

    def test_fromEnvironment(self) -> None:
        """
        C{BACKEND_CAPACITY} is a number for every port, or C{PORT:N}
        pairs; unset or empty, no port has one.
        """
        ports = [8081, 8082]
        for value, capacities in [
            ("10", {8081: 10, 8082: 10}),
            (" 3 ", {8081: 3, 8082: 3}),
            ("8082:4", {8082: 4}),
            ("8081:1, 8082:100000", {8081: 1, 8082: 100_000}),
            ("", {}),
        ]:
            resource = resourceFromEnvironment(ports, {"BACKEND_CAPACITY": value})
            self.assertEqual(resource.capacities, capacities, value)
        self.assertEqual(resourceFromEnvironment(ports, {}).capacities, {})

    def test_badEnvironment(self) -> None:
        """
        Bad values are named in one line.
        """
        for value, message in [
            ("0", "BACKEND_CAPACITY: '0' is not a number of requests (1-100000)"),
            ("x", "BACKEND_CAPACITY: 'x' is not a number of requests (1-100000)"),
            ("1.5", "BACKEND_CAPACITY: '1.5' is not a number of requests (1-100000)"),
            ("100001", "BACKEND_CAPACITY: '100001' is not a number of requests (1-100000)"),
            ("8081:-1", "BACKEND_CAPACITY: '-1' is not a number of requests (1-100000)"),
            ("9999:4", "BACKEND_CAPACITY: '9999:4' is not PORT:VALUE for one of [8081]"),
        ]:
            e = self.assertRaises(
                ValueError, resourceFromEnvironment, [8081], {"BACKEND_CAPACITY": value}
            )
            self.assertEqual(str(e), message)


class ServiceTests(TestCase):
    """
    L{makeBackendService} and L{makeBackendSite}, the latter over real
    loopback sockets.
    """

    def listen(self) -> int:
        """
        Serve a backend site on a free loopback port, closed at cleanup.
        """
        port = reactor.listenTCP(0, makeBackendSite(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def test_onePerPort(self) -> None:
        """
        Each requested port is listened on separately, on loopback by
        default.
        """
        memory = MemoryReactor()
        makeBackendService([8081, 8082], reactor=memory).privilegedStartService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in memory.tcpServers],
            [(8081, "127.0.0.1"), (8082, "127.0.0.1")],
        )

    def test_interface(self) -> None:
        """
        Another interface can be given, IPv6 included.
        """
        memory = MemoryReactor()
        makeBackendService([8081], interface="::1", reactor=memory).privilegedStartService()
        self.assertEqual(memory.tcpServers[0][3], "::1")

    async def test_ping(self) -> None:
        """
        A real HTTP request to C{/ping} names the real port.
        """
        port = self.listen()
        response = await treq.get(f"http://127.0.0.1:{port}/ping", persistent=False)
        self.assertEqual(await response.content(), b"pong from backend :%d\n" % port)

    async def test_formNotParsed(self) -> None:
        """
        A POST with a malformed multipart body is echoed, not refused with
        400 as Twisted's form parsing would.
        """
        port = self.listen()
        response = await treq.post(
            f"http://127.0.0.1:{port}/echo",
            data=b"not multipart",
            headers=Headers({"Content-Type": ["multipart/form-data; boundary=zz"]}),
            persistent=False,
        )
        self.assertEqual(response.code, 200)
        self.assertEqual((await response.json())["body"], "not multipart")

    def test_busyPort(self) -> None:
        """
        A taken port makes C{privilegedStartService} raise instead of just
        logging.
        """
        port = self.listen()
        second = makeBackendService([port])
        self.assertRaises(CannotListenError, second.privilegedStartService)


class RegistrationsFromEnvironmentTests(SynchronousTestCase):
    """
    L{registrationsFromEnvironment}: C{BACKEND_ETCD} and the variables
    that go with it.  C{tests/test_etcd_real.py} runs the .tac with them
    against a real etcd.
    """

    def registrations(self, **environ: str) -> list[Any]:
        parent = registrationsFromEnvironment([8081, 8082], environ, Clock())
        assert parent is not None
        return list(parent)

    def test_off(self) -> None:
        """
        Without C{BACKEND_ETCD} (or with it empty) nothing registers.
        """
        self.assertIsNone(registrationsFromEnvironment([8081], {}, Clock()))
        self.assertIsNone(registrationsFromEnvironment([8081], {"BACKEND_ETCD": " "}, Clock()))

    def test_defaults(self) -> None:
        """
        Each port registers in pool C{default} under C{/txlb/}, weight 1,
        TTL 10 s, with every etcd URL given.
        """
        registrations = self.registrations(
            BACKEND_ETCD="http://127.0.0.1:2379, http://127.0.0.2:2379"
        )
        self.assertEqual(
            [(r.key, r.value, r.ttl) for r in registrations],
            [
                (b"/txlb/pools/default/backends/127.0.0.1:8081", b'{"weight": 1}', 10),
                (b"/txlb/pools/default/backends/127.0.0.1:8082", b'{"weight": 1}', 10),
            ],
        )
        self.assertEqual(
            registrations[0].client.endpoints, ["http://127.0.0.1:2379", "http://127.0.0.2:2379"]
        )

    def test_settings(self) -> None:
        """
        The pool, the prefix, the TTL and per-port weights.
        """
        registrations = self.registrations(
            BACKEND_ETCD="http://127.0.0.1:2379",
            BACKEND_ETCD_POOL="api",
            BACKEND_ETCD_PREFIX="/fleet/",
            BACKEND_ETCD_TTL="3",
            BACKEND_ETCD_WEIGHT="8082:5",
        )
        self.assertEqual(
            [(r.key, r.value, r.ttl) for r in registrations],
            [
                (b"/fleet/pools/api/backends/127.0.0.1:8081", b'{"weight": 1}', 3),
                (b"/fleet/pools/api/backends/127.0.0.1:8082", b'{"weight": 5}', 3),
            ],
        )

    def test_errors(self) -> None:
        """
        Each bad value is one line naming its variable.
        """
        url = "http://127.0.0.1:2379"
        for environ, message in [
            (
                {"BACKEND_ETCD": "127.0.0.1:2379"},
                "BACKEND_ETCD: '127.0.0.1:2379': expected http://HOST:PORT or https://HOST:PORT",
            ),
            (
                {"BACKEND_ETCD": url, "BACKEND_ETCD_TTL": "0"},
                "BACKEND_ETCD_TTL: '0' is not a number of seconds (1-3600)",
            ),
            (
                {"BACKEND_ETCD": url, "BACKEND_ETCD_TTL": "ten"},
                "BACKEND_ETCD_TTL: 'ten' is not a number of seconds (1-3600)",
            ),
            (
                {"BACKEND_ETCD": url, "BACKEND_ETCD_WEIGHT": "8081:0"},
                "BACKEND_ETCD_WEIGHT: '0' is not a weight (1-1000)",
            ),
            (
                {"BACKEND_ETCD": url, "BACKEND_ETCD_WEIGHT": "9999:2"},
                "BACKEND_ETCD_WEIGHT: '9999:2' is not PORT:VALUE for one of [8081, 8082]",
            ),
            (
                {"BACKEND_ETCD": url, "BACKEND_ETCD_POOL": "a/b"},
                "BACKEND_ETCD_POOL: 'a/b' is not a pool name (one path segment)",
            ),
        ]:
            error = self.assertRaises(
                ValueError, registrationsFromEnvironment, [8081, 8082], environ, Clock()
            )
            self.assertEqual(str(error), message)


class TacTests(SynchronousTestCase):
    """
    C{backend_server.tac} run by twistd.
    """

    def setUp(self) -> None:
        if not TAC.exists():
            raise self.skipTest(f"{TAC} not found (not running from a checkout)")

    def assertOneLine(self, name: str, value: str, line: str) -> None:
        """
        With C{name=value} in the environment, twistd exits non-zero with
        C{line} alone, and no traceback.

        twistd is run the way its console script runs it, from an empty
        directory: twistd does not add the current directory to
        C{sys.path}, so this also checks that the .tac finds C{txlb} next
        to itself.  (C{python -m twisted} is C{twist}, not twistd, and
        C{python -m twisted.scripts.twistd} silently does nothing.)
        """
        cwd = self.mktemp()
        os.mkdir(cwd)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env[name] = value
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                _RUN_TWISTD,
                "-ny",
                str(TAC),
                "--pidfile=",
            ],
            check=False,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", output)
        self.assertEqual(output.strip().splitlines(), [line])

    def test_badPortsOneLine(self) -> None:
        """
        A bad C{BACKEND_PORTS} makes twistd exit non-zero with one line
        naming the value.
        """
        self.assertOneLine(
            "BACKEND_PORTS", "abc", "backend_server.tac: BACKEND_PORTS: 'abc' is not a port number"
        )

    def test_badCapacityOneLine(self) -> None:
        """
        So does a bad C{BACKEND_CAPACITY}.
        """
        self.assertOneLine(
            "BACKEND_CAPACITY",
            "many",
            "backend_server.tac: BACKEND_CAPACITY: 'many' is not a number of requests (1-100000)",
        )

    def test_badDelayOneLine(self) -> None:
        """
        So does a bad C{BACKEND_DELAY_MS}.
        """
        self.assertOneLine(
            "BACKEND_DELAY_MS",
            "8083",
            "backend_server.tac: BACKEND_DELAY_MS: '8083' is not PORT:VALUE for one of"
            " [8081, 8082, 8083]",
        )

    def test_badEtcdOneLine(self) -> None:
        """
        So does a bad C{BACKEND_ETCD}.
        """
        self.assertOneLine(
            "BACKEND_ETCD",
            "etcd:2379",
            "backend_server.tac: BACKEND_ETCD: 'etcd:2379': expected http://HOST:PORT"
            " or https://HOST:PORT",
        )

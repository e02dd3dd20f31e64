"""
Routes and pools through the whole balancer, in memory: a configuration
file with C{[pools.NAME]} and C{[[routes]]}, requests sent by a client and
answered by the backends of the pool each one was routed to.

The matching itself (hosts, paths and their spellings, conditions, splits)
is tested as tables in C{tests/test_routes.py} and C{tests/test_paths.py}.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import OK, IntegrationTestCase, ServiceHarness, TCPTransport, freePort
from txlb.admin import AdminResource
from txlb.tap import Options, makeService
from txlb.testbackend import makeBackendSite

#: A site of three pools: an API pool by host and prefix, a fixed answer
#: for /internal, a web pool for the rest.
SITE = """
listen = "tcp:8080"

[pools.api]
backends = ["127.0.0.1:9001", "127.0.0.1:9002"]

[pools.web]
backends = ["127.0.0.1:9101"]

[[routes]]
name = "api"
host = "api.example.com"
path-prefix = "/v1"
pool = "api"

[[routes]]
name = "internal"
path-prefix = "/internal"
respond = 403
body = "no\\n"

[[routes]]
path-prefix = "/old"
redirect = "https://{host}{uri}"

[[routes]]
pool = "web"
"""


def get(path: str, host: str = "www.example.com", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


class Site:
    """
    A L{ServiceHarness} over a configuration with pools and routes, with
    helpers that say which backend each request reached.
    """

    def __init__(self, testCase: SynchronousTestCase, text: str, *args: str) -> None:
        self.harness = ServiceHarness(testCase, text, *args)
        self.reactor = self.harness.reactor
        self.service = self.harness.service
        self._connections: list[tuple[int, Any, TCPTransport]] = []

    def send(self, data: bytes) -> TCPTransport:
        """
        Send a request on a new client connection.
        """
        _, transport = self.harness.client(data)
        return transport

    def backend(self) -> tuple[int, Any, TCPTransport]:
        """
        The backend connection the last request went to: a new one, or one
        kept alive that was sent more since (C{toBackend} holds what it was
        sent since its last answer); its port, its protocol, and what it
        was sent.
        """
        if self.reactor.tcpClients:
            port = self.reactor.tcpClients[0][1]
            protocol, transport = self.harness.backend()
            self._connections.append((port, protocol, transport))
            return port, protocol, transport
        for port, protocol, transport in self._connections:
            if transport.value():
                return port, protocol, transport
        raise AssertionError("no backend was sent the request")

    def answer(self, data: bytes, response: bytes = OK) -> tuple[int, bytes, bytes]:
        """
        Send C{data}, answer it from the backend it reaches with
        C{response}: the backend's port, what it got and what the client
        got.
        """
        client = self.send(data)
        port, protocol, toBackend = self.backend()
        sent = toBackend.value()
        toBackend.clear()
        protocol.dataReceived(response)
        self.reactor.advance(0)
        return port, sent, client.value()

    def accessLog(self) -> list[dict[str, Any]]:
        """
        The access-log events.
        """
        return [e for e in self.harness.events if "flag" in e and "line" in e]

    def reload(self, text: str) -> None:
        self.harness.write(text)
        self.assertTrue(self.service.reload())

    def assertTrue(self, value: object) -> None:
        assert value


class RoutingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.site = Site(self, SITE)

    def test_hostAndPrefixToTheirPool(self) -> None:
        """
        A request for the API host under /v1 goes to the API pool, and is
        forwarded byte for byte; the same path on another host goes to the
        web pool.
        """
        port, toBackend, toClient = self.site.answer(get("/v1/users?x=1", "API.example.com:8080"))
        self.assertIn(port, (9001, 9002))
        self.assertEqual(
            toBackend, b"GET /v1/users?x=1 HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n"
        )
        self.assertTrue(toClient.startswith(b"HTTP/1.1 200 OK\r\n"))
        port, _, _ = self.site.answer(get("/v1/users", "www.example.com"))
        self.assertEqual(port, 9101)

    def test_elementWisePrefix(self) -> None:
        """
        C{/v1} does not take C{/v10}: it goes on to the catch-all.
        """
        port, _, _ = self.site.answer(get("/v10", "api.example.com"))
        self.assertEqual(port, 9101)

    def test_respond(self) -> None:
        """
        A C{respond} route answers itself: its status and body, no backend
        sees the request, and the access log names the route and no pool.
        """
        client = self.site.send(get("/internal/stats"))
        self.assertEqual(self.site.reactor.tcpClients, [])
        head, _, body = client.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 403 Forbidden\r\n"), head)
        self.assertIn(b"Content-Length: 3", head)
        self.assertEqual(body, b"no\n")
        [event] = self.site.accessLog()
        self.assertEqual(
            (event["status"], event["route"], event["pool"], event["flag"]),
            (403, "internal", None, "-"),
        )
        self.assertIn(" route=internal pool=- ", formatEvent(event) + " ")

    def test_respondToHead(self) -> None:
        """
        A C{respond} route's body is not sent to a HEAD request; its
        length is.
        """
        client = self.site.send(get("/internal").replace(b"GET", b"HEAD", 1))
        head, _, body = client.value().partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 3", head)
        self.assertEqual(body, b"")

    def test_bypassSpellingsGetTheSameAnswer(self) -> None:
        """
        No spelling of C{/internal} gets around its 403: encoded letters,
        doubled slashes, dot segments, or a path servers read otherwise
        (which gets a 400 if its readings would route differently).
        """
        for path in [
            "/%69nternal",
            "//internal",
            "/./internal",
            "/x/../internal",
            "/%2e%2e/internal",
            "/internal/",
            "/internal;x=1",
            "/internal%2f",
        ]:
            client = self.site.send(get(path))
            status = client.value()[:12]
            self.assertIn(status, (b"HTTP/1.1 403", b"HTTP/1.1 400"), path)
            self.assertEqual(self.site.reactor.tcpClients, [], path)

    def test_redirect(self) -> None:
        """
        A C{redirect} route answers 308 with the Location its template
        makes from the request's host (without its port) and target.
        """
        client = self.site.send(get("/old/page?a=1", "www.example.com:8080"))
        head = client.value().partition(b"\r\n\r\n")[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 308 "), head)
        self.assertIn(b"\r\nLocation: https://www.example.com/old/page?a=1\r\n", head)

    def test_metricsByRouteAndPool(self) -> None:
        """
        C{/metrics} counts requests by route (its name, or its place) and
        by pool and backend.
        """
        self.site.answer(get("/v1/a", "api.example.com"))
        self.site.answer(get("/a"))
        self.site.send(get("/internal"))
        text = self.site.service.resource.metrics.exposition().decode()
        self.assertIn('txlb_route_requests_total{route="api"} 1.0', text)
        self.assertIn('txlb_route_requests_total{route="4"} 1.0', text)
        self.assertIn('txlb_route_requests_total{route="internal"} 1.0', text)
        self.assertIn(
            'txlb_requests_total{backend="127.0.0.1:9101",code="200",pool="web"} 1.0', text
        )
        self.assertIn('txlb_requests_total{backend="-",code="403",pool="-"} 1.0', text)
        self.assertIn('txlb_backend_up{backend="127.0.0.1:9001",pool="api"} 1.0', text)

    def test_accessLogText(self) -> None:
        """
        With routes, the text line names the route and the pool.
        """
        self.site.answer(get("/v1/a", "api.example.com"))
        [event] = self.site.accessLog()
        self.assertRegex(
            event["line"],
            r"^client=10\.0\.0\.7 method=GET path=/v1/a → backend=127\.0\.0\.1:900[12]"
            r" status=200 ms=[0-9.]+ route=api pool=api$",
        )


class NoRouteTests(SynchronousTestCase):
    def test_noDefault404(self) -> None:
        """
        Without a C{default} pool, a request no route matches gets 404 from
        txlb, flag NR.
        """
        site = Site(
            self,
            '[pools.api]\nbackends = ["127.0.0.1:9001"]\n'
            '[[routes]]\npath-prefix = "/api"\npool = "api"\n',
        )
        client = site.send(get("/elsewhere"))
        self.assertTrue(client.value().startswith(b"HTTP/1.1 404 Not Found\r\n"))
        [event] = site.accessLog()
        self.assertEqual((event["flag"], event["route"], event["pool"]), ("NR", None, None))

    def test_defaultTakesTheRest(self) -> None:
        """
        The top level's backends are the pool C{default}, which takes what
        no route matches.
        """
        site = Site(
            self,
            'backends = ["127.0.0.1:9000"]\n[pools.api]\nbackends = ["127.0.0.1:9001"]\n'
            '[[routes]]\npath-prefix = "/api"\npool = "api"\n',
        )
        self.assertEqual(site.answer(get("/api/x"))[0], 9001)
        self.assertEqual(site.answer(get("/x"))[0], 9000)


class PoolTests(SynchronousTestCase):
    def test_algorithmsIndependent(self) -> None:
        """
        Each pool picks with its own algorithm and its own state: two
        weighted pools keep their own sequences, however requests
        interleave.
        """
        site = Site(
            self,
            'algo = "weighted"\n'
            '[pools.a]\nbackends = ["127.0.0.1:9001=2", "127.0.0.1:9002=1"]\n'
            '[pools.b]\nbackends = ["127.0.0.1:9101=1", "127.0.0.1:9102=2"]\n'
            '[[routes]]\nhost = "a.test"\npool = "a"\n'
            '[[routes]]\npool = "b"\n',
        )
        picks = [site.answer(get("/", host))[0] for host in ["a.test", "b.test"] * 6]
        self.assertEqual(picks[0::2], [9001, 9001, 9002, 9001, 9001, 9002])
        self.assertEqual(picks[1::2], [9101, 9102, 9102, 9101, 9102, 9102])

    def test_inheritsTheTopLevel(self) -> None:
        """
        What a pool leaves out it takes from the top level; what it says
        wins.
        """
        options = Options()
        path = self.mktemp()
        with open(path, "w") as file:
            file.write(
                'retries = 4\nalgo = "leastconn"\n'
                '[pools.a]\nbackends = ["h:1"]\n'
                '[pools.b]\nbackends = ["h:2"]\nretries = 0\nalgo = "p2c"\n'
            )
        options.parseOptions(["--config", path])
        pools = options.pools()
        self.assertEqual(
            [(name, p["retries"], p["algo"]) for name, p in pools.items()],
            [("a", 4, "leastconn"), ("b", 0, "p2c")],
        )

    def test_bodyLimitPerPool(self) -> None:
        """
        A pool's C{max-body-size} is its own: a body over it gets 413 in
        that pool, and goes through in another.
        """
        site = Site(
            self,
            '[pools.small]\nbackends = ["127.0.0.1:9001"]\nmax-body-size = "4"\n'
            '[pools.big]\nbackends = ["127.0.0.1:9002"]\n'
            '[[routes]]\npath = "/small"\npool = "small"\n[[routes]]\npool = "big"\n',
        )
        body = b"POST /small HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        client = site.send(body)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 413 "), client.value())
        self.assertEqual(site.reactor.tcpClients, [])
        port, toBackend, _ = site.answer(body.replace(b"/small", b"/big"))
        self.assertEqual(port, 9002)
        self.assertTrue(toBackend.endswith(b"\r\n\r\nhello"))


class RewriteTests(SynchronousTestCase):
    def test_stripPrefix(self) -> None:
        """
        C{strip-prefix} takes the matched prefix off the forwarded target;
        the rest, query included, goes byte for byte.
        """
        site = Site(
            self,
            '[pools.s]\nbackends = ["127.0.0.1:9001"]\n'
            '[[routes]]\npath-prefix = "/static"\npool = "s"\nstrip-prefix = true\n',
        )
        _, toBackend, _ = site.answer(get("/static/a%20b.css?v=1"))
        self.assertTrue(toBackend.startswith(b"GET /a%20b.css?v=1 HTTP/1.1\r\n"), toBackend)

    def test_headers(self) -> None:
        """
        C{set-host} and C{request-headers} change what the backend gets,
        C{response-headers} what the client gets; the forwarding fields txlb
        adds come after a route's.
        """
        site = Site(
            self,
            "forwarded-for = true\n"
            '[pools.s]\nbackends = ["127.0.0.1:9001"]\n'
            "[[routes]]\n"
            'pool = "s"\n'
            'set-host = "internal.test"\n'
            'request-headers = { add = { "X-Env" = "prod" }, remove = ["X-Debug", "X-Forwarded-For"] }\n'
            'response-headers = { add = { "X-Served-By" = "txlb" }, remove = ["Server"] }\n',
        )
        response = (
            b"HTTP/1.1 200 OK\r\nServer: app\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Content-Length: 2\r\n\r\nok"
        )
        _, toBackend, toClient = site.answer(
            get("/", "www.test", "X-Debug: 1\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n"),
            response,
        )
        self.assertEqual(
            toBackend,
            b"GET / HTTP/1.1\r\nHost: internal.test\r\nAccept: */*\r\nX-Env: prod\r\n"
            b"X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: www.test\r\n\r\n",
        )
        self.assertEqual(
            toClient,
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"X-Served-By: txlb\r\nContent-Length: 2\r\n\r\nok",
        )


class ReloadTests(SynchronousTestCase):
    def test_unchangedPoolKeepsItsAlgorithm(self) -> None:
        """
        A reload that leaves a pool's backends and algorithm as they were
        keeps its algorithm, with its state: round robin goes on where it
        was, and a changed route table takes effect at once.
        """
        text = (
            '[pools.a]\nbackends = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]\n'
            '[[routes]]\npool = "a"\n'
        )
        site = Site(self, text)
        pool = site.service.pools["a"].resource
        algorithm = pool.algorithm
        self.assertEqual(site.answer(get("/"))[0], 9001)
        site.reload(text + '[[routes]]\npath = "/never"\nrespond = 404\n')
        self.assertIs(pool.algorithm, algorithm)
        self.assertEqual(site.answer(get("/"))[0], 9002)

    def test_changedPoolRebuilds(self) -> None:
        """
        A pool whose backends change gets a new algorithm over them; its
        backends that stay keep their counts.
        """
        site = Site(self, '[pools.a]\nbackends = ["127.0.0.1:9001"]\n[[routes]]\npool = "a"\n')
        site.answer(get("/"))
        first = site.service.pools["a"].resource.pool.backends[0]
        site.reload(
            '[pools.a]\nbackends = ["127.0.0.1:9001", "127.0.0.1:9002"]\n[[routes]]\npool = "a"\n'
        )
        backends = site.service.pools["a"].resource.pool.backends
        self.assertIs(backends[0], first)
        self.assertEqual(backends[0].requests, 1)
        self.assertEqual(len(site.service.pools["a"].resource.algorithm.backends), 2)

    def test_addedAndRemovedPools(self) -> None:
        """
        A reload starts the pools the file adds and stops routing to the
        ones it removes, whose request in flight still finishes there.
        """
        site = Site(self, '[pools.a]\nbackends = ["127.0.0.1:9001"]\n[[routes]]\npool = "a"\n')
        client = site.send(get("/slow"))
        port, protocol, _ = site.backend()
        self.assertEqual(port, 9001)
        site.reload('[pools.b]\nbackends = ["127.0.0.1:9002"]\n[[routes]]\npool = "b"\n')
        self.assertEqual(list(site.service.pools), ["b"])
        self.assertEqual(site.service.inFlight(), 1)
        self.assertEqual(site.answer(get("/"))[0], 9002)
        protocol.dataReceived(OK)
        site.reactor.advance(0)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(site.service.inFlight(), 0)
        messages = [formatEvent(e) for e in site.harness.events]
        self.assertIn("Pool a removed: draining", messages)
        self.assertTrue(
            any(
                m.startswith("Reloaded ") and "pool a removed; pool b added" in m for m in messages
            ),
            messages,
        )

    def test_badRoutesKeepTheOldTable(self) -> None:
        """
        A reload with an unknown pool, a bad regex or a split weight of 0
        fails with one line for each, and the running table stays.
        """
        site = Site(self, SITE)
        site.harness.write(
            SITE
            + '[[routes]]\npool = "nope"\n'
            + '[[routes]]\npath-regex = "(["\npool = "web"\n'
            + "[[routes]]\nsplit = { web = 0 }\n"
        )
        self.assertFalse(site.service.reload())
        errors = [
            formatEvent(e)
            for e in site.harness.events
            if e.get("log_format", "").startswith("Reload failed")
        ]
        self.assertEqual(len(errors), 3, errors)
        self.assertIn("route 5: pool: unknown pool 'nope'", errors[0])
        self.assertIn("route 6: path-regex '([':", errors[1])
        self.assertIn("route 7: split:", errors[2])
        self.assertEqual(site.answer(get("/v1/a", "api.example.com"))[0] in (9001, 9002), True)


class AdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.site = Site(self, SITE)
        self.admin = StubTreq(AdminResource(self.site.service, None))

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        response = self.successResultOf(
            self.admin.request(method, f"http://admin{path}", data=data)
        )
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_routes(self) -> None:
        """
        C{GET /routes} lists the routes in order, with their labels and how
        many requests each matched.
        """
        self.site.send(get("/internal"))
        code, answer = self.call("GET", "/routes")
        self.assertEqual(code, 200)
        self.assertEqual(
            [(r["label"], r["requests"]) for r in answer["routes"]],
            [("api", 0), ("internal", 1), ("3", 0), ("4", 0)],
        )
        self.assertEqual(answer["routes"][1]["config"]["respond"], 403)

    def test_poolBackends(self) -> None:
        """
        C{/pools/NAME/backends} acts on that pool; drained, a backend gets
        no more of its requests.
        """
        code, answer = self.call("POST", "/pools/api/backends/127.0.0.1:9001/drain")
        self.assertEqual(code, 200)
        self.assertEqual(answer["state"], "draining")
        ports = {self.site.answer(get("/v1/x", "api.example.com"))[0] for _ in range(4)}
        self.assertEqual(ports, {9002})
        code, answer = self.call("GET", "/pools/web/backends")
        self.assertEqual([b["address"] for b in answer["backends"]], ["127.0.0.1:9101"])
        self.assertEqual(self.call("GET", "/pools/nope/backends")[0], 404)

    def test_poolAlgorithm(self) -> None:
        """
        C{PUT /pools/NAME/algorithm} switches that pool's algorithm only.
        """
        code, answer = self.call("PUT", "/pools/api/algorithm", {"algo": "leastconn"})
        self.assertEqual((code, answer["algorithm"]), (200, "leastconn"))
        pools = self.site.service.pools
        self.assertEqual(pools["api"].resource.algorithm.name, "leastconn")
        self.assertEqual(pools["web"].resource.algorithm.name, "roundrobin")

    def test_statusByPool(self) -> None:
        """
        C{/status} lists each pool with its algorithm and backends, and the
        routes.
        """
        _, status = self.call("GET", "/status")
        self.assertEqual(
            [
                (p["name"], p["algorithm"], [b["address"] for b in p["backends"]])
                for p in status["pools"]
            ],
            [
                ("api", "roundrobin", ["127.0.0.1:9001", "127.0.0.1:9002"]),
                ("web", "roundrobin", ["127.0.0.1:9101"]),
            ],
        )
        self.assertEqual(len(status["routes"]), 4)


class RouterTests(SynchronousTestCase):
    def test_pythonRouter(self) -> None:
        """
        A route's router chooses the pool; one that answers C{None} lets
        the request go on to the next route.
        """
        site = Site(
            self,
            '[pools.a]\nbackends = ["127.0.0.1:9001"]\n'
            '[pools.b]\nbackends = ["127.0.0.1:9002"]\n'
            '[[routes]]\nrouter = "tests.routerexamples:ByField"\n'
            '[[routes]]\npool = "a"\n',
        )
        self.assertEqual(site.answer(get("/", extra="X-Pool: b\r\n"))[0], 9002)
        self.assertEqual(site.answer(get("/"))[0], 9001)

    def test_failingRouterFallsThrough(self) -> None:
        """
        A router that raises is counted and logged (at most once a minute:
        the first failure, then the first one a minute later, saying how
        many were held back between), and the request goes on to the next
        route.
        """
        site = Site(
            self,
            '[pools.a]\nbackends = ["127.0.0.1:9001"]\n'
            '[[routes]]\nrouter = "tests.routerexamples:Raising"\n'
            '[[routes]]\npool = "a"\n',
        )

        def logged() -> list[str]:
            return [
                formatEvent(e) for e in site.harness.events if "router" in e.get("log_format", "")
            ]

        line = (
            "Route 1's router raised RuntimeError: a bug in two lines; the request went on to"
            " the next route ({} more since the last entry; logged at most once a minute)"
        )

        def request() -> None:
            # Each on connections closed after the answer, to the client and
            # to the backend, so that the clock can go on a minute without
            # idle timeouts.
            channel, client = site.harness.client(get("/", extra="Connection: close\r\n"))
            port, backend, _ = site.backend()
            self.assertEqual(port, 9001)
            backend.dataReceived(
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            site.reactor.advance(0)
            self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"), client.value())
            self.assertTrue(client.disconnecting)
            channel.connectionLost(Failure(ConnectionDone()))

        for _ in range(3):
            request()
        text = site.service.resource.metrics.exposition().decode()
        self.assertIn('txlb_router_errors_total{route="1"} 3.0', text)
        self.assertEqual(logged(), [line.format(0)])
        site.reactor.advance(59)
        request()
        self.assertEqual(logged(), [line.format(0)])
        site.reactor.advance(1)
        request()
        self.assertEqual(logged(), [line.format(0), line.format(3)])


class JSONTests(SynchronousTestCase):
    def test_routeAndPool(self) -> None:
        """
        The JSON access log names the route and the pool of each request.
        """
        site = Site(self, SITE.replace('listen = "tcp:8080"', 'access-log = "json"'))
        site.answer(get("/a"))
        [event] = site.accessLog()
        line = json.loads(event["line"])
        self.assertEqual((line["route"], line["pool"]), ("4", "web"))


class LoopbackTests(IntegrationTestCase):
    """
    Routes and pools over real sockets: the balancer as C{makeService}
    builds it, in this process, in front of the test backends.
    """

    def startBackends(self, count: int) -> list[int]:
        ports = []
        for _ in range(count):
            ports.append(self.listen(makeBackendSite()))
        return ports

    def startBalancer(self, text: str) -> tuple[Any, list[int]]:
        """
        Start the balancer the configuration C{text} describes, with
        C{{listen}} replaced by two free loopback listeners.
        """
        ports = [freePort(), freePort()]
        listen = ", ".join(f'"tcp:{p}:interface=127.0.0.1"' for p in ports)
        path = self.mktemp()
        with open(path, "w") as file:
            file.write(text.replace("{listen}", f"[{listen}]"))
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service, ports

    async def get(self, port: int, path: str, host: str = "h") -> tuple[int, bytes]:
        client = await self.client(
            port, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        received = await client.closed
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    async def test_twoListeners(self) -> None:
        """
        Every C{listen} address serves, and serves the same routes.
        """
        a, b = self.startBackends(2)
        _, ports = self.startBalancer(
            "listen = {listen}\n"
            f'[pools.a]\nbackends = ["127.0.0.1:{a}"]\n'
            f'[pools.b]\nbackends = ["127.0.0.1:{b}"]\n'
            '[[routes]]\npath-prefix = "/b"\npool = "b"\nstrip-prefix = true\n'
            '[[routes]]\npool = "a"\n'
        )
        for port in ports:
            self.assertEqual(
                await self.get(port, "/ping"), (200, f"pong from backend :{a}\n".encode())
            )
            self.assertEqual(
                await self.get(port, "/b/ping"), (200, f"pong from backend :{b}\n".encode())
            )

    async def test_reloadUnderLoad(self) -> None:
        """
        Reloading the routes while requests go on (a new table each time,
        sending a path to another pool) fails no request, and each one
        reaches the pool the table of its time gives.
        """
        a, b = self.startBackends(2)
        template = (
            "listen = {listen}\n"
            f'[pools.a]\nbackends = ["127.0.0.1:{a}"]\n'
            f'[pools.b]\nbackends = ["127.0.0.1:{b}"]\n'
            '[[routes]]\npath-prefix = "/x"\npool = "POOL"\nstrip-prefix = true\n'
            '[[routes]]\npool = "a"\n'
        )
        service, ports = self.startBalancer(template.replace("POOL", "a"))
        path = service.config["config"]
        failed = []
        seen = set()

        async def hammer() -> None:
            for _ in range(60):
                code, body = await self.get(ports[0], "/x/ping")
                if code != 200:
                    failed.append((code, body))
                seen.add(body)

        load = [Deferred.fromCoroutine(hammer()) for _ in range(4)]
        for n in range(6):
            with open(path, "w") as file:
                file.write(
                    template.replace(
                        "{listen}", repr(service.config["listen"]).replace("'", '"')
                    ).replace("POOL", "ab"[n % 2])
                )
            self.assertTrue(service.reload())
            await deferLater(reactor, 0.05)
        await DeferredList(load)
        self.assertEqual(failed, [])
        self.assertEqual(
            seen, {f"pong from backend :{a}\n".encode(), f"pong from backend :{b}\n".encode()}
        )

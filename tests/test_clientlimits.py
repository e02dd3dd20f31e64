"""
Tests for L{txlb.clientlimits} in the request path: C{--rate-limit}
answers 429, C{--max-client-conns} closes connections at once; the
options that set them.
"""

from __future__ import annotations

import re

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import CONFIG, OK, Harness, ServiceHarness
from txlb.clientlimits import ClientLimits
from txlb.keytables import Region
from txlb.ratelimit import Rate
from txlb.tap import Options

GET = b"GET /ping HTTP/1.1\r\nHost: lb.example\r\n\r\n"

#: What a request over the rate limit gets (Date aside).
REFUSED = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Retry-After: %d\r\n"
    b"Date: %s\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 43\r\n"
    b"\r\n"
    b"429 Too Many Requests: over the rate limit\n"
)


def limited(
    testCase: SynchronousTestCase,
    rate: Rate | None = None,
    burst: int | None = None,
    key: str = "ip",
    maxConnections: int = 0,
) -> Harness:
    """
    A balancer with client limits in a private region.
    """
    harness = Harness(testCase)
    region = Region.create(64)
    testCase.addCleanup(region.close)
    limits = ClientLimits(region, 0, harness.reactor.seconds)
    limits.configure(rate, burst, key, maxConnections)
    harness.site.resource.clientLimits = limits
    return harness


class RateLimitTests(SynchronousTestCase):
    def serve(self, harness: Harness) -> None:
        """
        Answer the request a backend was sent, on a new connection or the
        one kept alive.
        """
        if harness.reactor.tcpClients:
            self.backend, _ = harness.backend()
        self.backend.dataReceived(OK)
        harness.reactor.advance(0)

    def assertRefused(self, received: bytes, retryAfter: int) -> None:
        """
        C{received} is the 429 telling to retry after C{retryAfter} s.
        """
        date = re.search(rb"\r\nDate: ([^\r]*)\r\n", received)
        self.assertIsNotNone(date)
        assert date is not None
        self.assertEqual(received, REFUSED % (retryAfter, date.group(1)))

    def test_over429(self) -> None:
        """
        A request over the rate limit is answered 429 with C{Retry-After}
        by txlb, on a connection that stays open; no backend hears of it.
        """
        harness = limited(self, Rate(1, 1.0), 1)
        _, first = harness.client(GET)
        self.serve(harness)
        self.assertTrue(first.value().startswith(b"HTTP/1.1 200 OK"))
        channel, second = harness.client(GET)
        self.assertRefused(second.value(), 1)
        self.assertFalse(second.disconnecting)
        self.assertEqual(harness.reactor.tcpClients, [])
        second.clear()
        harness.reactor.advance(1)
        channel.dataReceived(GET)
        self.serve(harness)
        self.assertTrue(second.value().startswith(b"HTTP/1.1 200 OK"))

    def test_accessLogAndMetrics(self) -> None:
        """
        The refusal is logged with flag C{RL} and counted.
        """
        harness = limited(self, Rate(1, 60.0), 1)
        harness.client(GET)
        self.serve(harness)
        harness.client(GET)
        line = harness.accessLog()[-1]
        self.assertIn('backend=- status=429 ms=0.0 error="rate limited"', line)
        self.assertEqual(harness.events[-1]["flag"], "RL")
        metrics = harness.resource.metrics.exposition().decode()
        self.assertIn('txlb_rate_limited_requests_total{route=""} 1.0\n', metrics)
        self.assertIn('txlb_requests_total{backend="-",code="429",pool="-"} 1.0\n', metrics)

    def test_bodyDiscarded(self) -> None:
        """
        A refused POST's body is read and dropped, and the next request on
        the connection is served.
        """
        harness = limited(self, Rate(1, 1.0), 1)
        harness.client(GET)
        self.serve(harness)
        channel, client = harness.client(
            b"POST /echo HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 5\r\n\r\nhel"
        )
        channel.dataReceived(b"lo")
        self.assertRefused(client.value(), 1)
        client.clear()
        harness.reactor.advance(1)
        channel.dataReceived(GET)
        _, toBackend = harness.backend()
        self.assertEqual(toBackend.value(), GET)

    def test_upgrade(self) -> None:
        """
        An upgrade (WebSocket) request is limited too.
        """
        harness = limited(self, Rate(1, 1.0), 1)
        harness.client(GET)
        self.serve(harness)
        _, client = harness.client(
            b"GET /ws HTTP/1.1\r\nHost: lb.example\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        self.assertTrue(client.value().startswith(b"HTTP/1.1 429 Too Many Requests\r\n"))
        self.assertEqual(harness.reactor.tcpClients, [])

    def test_headerKey(self) -> None:
        """
        With a header key, each key has its own bucket, and requests without
        the header are not limited.
        """
        harness = limited(self, Rate(1, 60.0), 1, key="header:X-Key")
        withKey = b"GET / HTTP/1.1\r\nHost: h\r\nX-Key: a\r\n\r\n"
        harness.client(withKey)
        self.serve(harness)
        _, client = harness.client(withKey)
        self.assertRefused(client.value(), 60)
        for _ in range(3):
            harness.client(GET)
            self.serve(harness)

    def test_off(self) -> None:
        """
        Without a rate, nothing is limited.
        """
        harness = limited(self)
        for _ in range(5):
            harness.client(GET)
            self.serve(harness)


class MaxClientConnectionsTests(SynchronousTestCase):
    def connect(self, harness: Harness, host: str = "10.0.0.7") -> tuple[object, StringTransport]:
        address = IPv4Address("TCP", host, 40000)
        channel = harness.site.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        channel.makeConnection(transport)
        return channel, transport

    def test_closedAtOnce(self) -> None:
        """
        An address with C{--max-client-conns} connections open has its next
        one closed at once, and counted; other addresses are not affected,
        and once one closes, the address may connect again.
        """
        harness = limited(self, maxConnections=2)
        first, firstTransport = self.connect(harness)
        self.connect(harness)
        refused, refusedTransport = self.connect(harness)
        self.assertTrue(refusedTransport.disconnecting)
        self.assertFalse(firstTransport.disconnecting)
        refused.dataReceived(GET)  # type: ignore[attr-defined]
        self.assertEqual(refusedTransport.value(), b"")
        _, other = self.connect(harness, "10.0.0.8")
        self.assertFalse(other.disconnecting)
        limits = harness.site.resource.clientLimits
        assert limits is not None
        self.assertEqual(limits.refusedConnections, 1)
        metrics = harness.resource.metrics.exposition().decode()
        self.assertIn("txlb_client_connections_refused_total 1.0\n", metrics)
        refused.connectionLost(None)  # type: ignore[attr-defined]
        _, stillRefused = self.connect(harness)
        self.assertTrue(stillRefused.disconnecting)
        first.connectionLost(None)  # type: ignore[attr-defined]
        _, again = self.connect(harness)
        self.assertFalse(again.disconnecting)

    def test_servesWithinTheLimit(self) -> None:
        """
        A counted connection serves requests as any other.
        """
        harness = limited(self, maxConnections=1)
        channel, transport = self.connect(harness)
        channel.dataReceived(GET)  # type: ignore[attr-defined]
        harness.reactor.advance(0)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        harness.reactor.advance(0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK"))

    def test_off(self) -> None:
        """
        With no limit, connections are not counted.
        """
        harness = limited(self)
        transports = [self.connect(harness)[1] for _ in range(50)]
        self.assertFalse(any(t.disconnecting for t in transports))


class OptionTests(SynchronousTestCase):
    def parse(self, *arguments: str) -> Options:
        options = Options()
        options.parseOptions(["--backends", "127.0.0.1:8081", *arguments])
        return options

    def test_defaults(self) -> None:
        """
        By default nothing is limited, and the tables hold 100,000 keys.
        """
        options = self.parse()
        self.assertEqual(
            [
                options[name]
                for name in (
                    "rate-limit",
                    "rate-limit-burst",
                    "rate-limit-key",
                    "rate-limit-keys",
                    "max-client-conns",
                )
            ],
            [None, None, "ip", 100_000, 0],
        )

    def test_configured(self) -> None:
        """
        The options set the limits.
        """
        options = self.parse(
            "--rate-limit",
            "6000/min",
            "--rate-limit-burst",
            "7",
            "--rate-limit-key",
            "cookie:s",
            "--max-client-conns",
            "3",
        )
        region = Region.create(8)
        self.addCleanup(region.close)
        limits = options.clientLimits(region, 0, lambda: 0.0)
        assert limits.rateLimit is not None
        self.assertEqual(
            (limits.rateLimit.rate, limits.rateLimit.burst, limits.rateLimit.key),
            (Rate(6000, 60.0), 7, "cookie:s"),
        )
        self.assertEqual(limits.maxConnections, 3)

    def test_bad(self) -> None:
        """
        Bad values end with one line naming the option.
        """
        for arguments, message in [
            (
                ["--rate-limit", "100"],
                "--rate-limit: '100' is not a rate like 100/s, 6000/min or 1000/h",
            ),
            (["--rate-limit", "0/s"], "--rate-limit: '0/s': the count must be at least 1"),
            (
                ["--rate-limit-key", "path"],
                "--rate-limit-key: 'path': the key is one of ip, header:NAME or cookie:NAME",
            ),
            (["--rate-limit-key", "header:"], "--rate-limit-key: 'header:': expected header:NAME"),
            (
                ["--rate-limit", "1/s", "--rate-limit-burst", "0"],
                "--rate-limit-burst: '0' is not a whole number of at least 1",
            ),
            (["--rate-limit-burst", "5"], "--rate-limit-burst needs --rate-limit"),
            (
                ["--rate-limit-keys", "0"],
                "--rate-limit-keys: '0' is not a whole number of at least 1",
            ),
            (
                ["--max-client-conns", "-1"],
                "--max-client-conns: '-1' is not a whole number of at least 0",
            ),
            (
                ["--max-client-conns", "2", "--listen", "haproxy:tcp:8080"],
                "--max-client-conns does not work with the PROXY protocol (haproxy: --listen) yet",
            ),
        ]:
            with self.assertRaises(SystemExit) as caught:
                self.parse(*arguments)
            self.assertEqual(caught.exception.code, f"txlb: {message} (see twistd txlb --help)")


class ServiceTests(SynchronousTestCase):
    """
    The client limits as C{makeService} builds them, and on a reload.
    """

    def test_reload(self) -> None:
        """
        A reload applies a new rate, burst and key, and a new connection
        limit, at once; a new C{--rate-limit-keys} waits for a restart.
        """
        harness = ServiceHarness(self, CONFIG + 'rate-limit = "1/min"\n')
        limits = harness.site.resource.clientLimits
        assert limits is not None and limits.rateLimit is not None
        self.assertEqual((limits.rateLimit.rate, limits.rateLimit.burst), (Rate(1, 60.0), 1))
        self.assertEqual(limits.region.buckets, 100_000)
        harness.write(
            CONFIG
            + 'rate-limit = "10/s"\nrate-limit-burst = 3\nrate-limit-key = "header:K"\n'
            + "max-client-conns = 4\nrate-limit-keys = 50\n"
        )
        self.assertTrue(harness.service.reload())
        self.assertIs(harness.site.resource.clientLimits, limits)
        assert limits.rateLimit is not None
        self.assertEqual(
            (limits.rateLimit.rate, limits.rateLimit.burst, limits.rateLimit.key),
            (Rate(10, 1.0), 3, "header:K"),
        )
        self.assertEqual((limits.maxConnections, limits.region.buckets), (4, 100_000))
        self.assertIn(
            "--rate-limit-keys changes need a restart; it stays 100000", harness.messages()
        )
        harness.write(CONFIG)
        self.assertTrue(harness.service.reload())
        self.assertEqual((limits.rateLimit, limits.maxConnections), (None, 0))


#: Pools and routes: C{/api} to the pool C{api} with its own rate limit,
#: C{/open} to the default pool without one, the rest to the default pool
#: (no route).
ROUTES = """
backends = ["127.0.0.1:8081"]
{top}

[pools.api]
backends = ["127.0.0.1:9001"]

[[routes]]
name = "api"
path-prefix = "/api"
pool = "api"
{limit}

[[routes]]
name = "open"
path-prefix = "/open"
pool = "default"
"""

#: A backend's answer that closes its connection (each request then makes
#: a new one).
CLOSING = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class RouteRateLimitTests(SynchronousTestCase):
    """
    A route's own C{rate-limit}, C{rate-limit-burst} and C{rate-limit-key}.
    """

    def site(self, limit: str, top: str = "") -> ServiceHarness:
        self.harness = ServiceHarness(self, ROUTES.format(top=top, limit=limit))
        return self.harness

    def get(self, path: str, *fields: str) -> tuple[int, bytes]:
        """
        Send C{GET path} on a new connection, answer it from the backend it
        reaches (if any): the port of that backend (0 for none) and what the
        client got.
        """
        harness = self.harness
        head = "".join(f"{field}\r\n" for field in fields)
        channel, transport = harness.client(
            f"GET {path} HTTP/1.1\r\nHost: lb.example\r\n{head}\r\n".encode()
        )
        port = 0
        if harness.reactor.tcpClients:
            port = harness.reactor.tcpClients[0][1]
            backend, _ = harness.backend()
            backend.dataReceived(CLOSING)
            harness.reactor.advance(0)
        # The client is done with its connection.
        channel.connectionLost(Failure(ConnectionDone()))
        return port, transport.value()

    def status(self, path: str, *fields: str) -> int:
        return int(self.get(path, *fields)[1].split(b" ", 2)[1])

    def metric(self, route: str) -> str:
        text = self.harness.site.resource.metrics.exposition().decode()
        return re.findall(rf'txlb_rate_limited_requests_total{{route="{route}"}} (\S+)', text)[0]

    def test_over429(self) -> None:
        """
        A request over its route's limit gets 429 with C{Retry-After}
        (whole seconds, rounded up), before its pool: no backend hears of
        it.  It is logged with flag C{RL}, its route and no pool, and
        counted with the route's label; the route's requests count it.
        Other routes, and requests no route matches, are not limited.
        """
        self.site('rate-limit = "1/min"\nrate-limit-burst = 2')
        self.assertEqual([self.get("/api/a")[0], self.get("/api/b")[0]], [9001, 9001])
        port, refused = self.get("/api/c")
        self.assertEqual(port, 0)
        self.assertTrue(refused.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), refused)
        self.assertIn(b"\r\nRetry-After: 60\r\n", refused)
        self.assertTrue(refused.endswith(b"\r\n\r\n429 Too Many Requests: over the rate limit\n"))
        self.assertIn(
            'backend=- status=429 ms=0.0 route=api pool=- error="rate limited"',
            self.harness.accessLog()[-1],
        )
        self.assertEqual(self.harness.events[-1]["flag"], "RL")
        self.assertEqual((self.metric("api"), self.metric("")), ("1.0", "0.0"))
        exposition = self.harness.site.resource.metrics.exposition().decode()
        self.assertIn('txlb_route_requests_total{route="api"} 3.0', exposition)
        self.assertEqual([self.get(path)[0] for path in ("/open", "/other")], [8081, 8081])
        self.harness.reactor.advance(59.5)
        self.assertIn(b"\r\nRetry-After: 1\r\n", self.get("/api/d")[1])
        self.harness.reactor.advance(0.5)
        self.assertEqual(self.get("/api/d")[0], 9001)
        self.assertEqual(self.status("/api/e"), 429)

    def test_defaultBurst(self) -> None:
        """
        Without C{rate-limit-burst}, a route's burst is a second's worth of
        its rate (the top level's C{--rate-limit-burst} is the top level's
        limit's only).
        """
        self.site('rate-limit = "3/s"', "rate-limit = '100/s'\nrate-limit-burst = 50")
        self.assertEqual([self.status("/api") for _ in range(4)], [200, 200, 200, 429])
        self.harness.reactor.advance(1 / 3)
        self.assertEqual([self.status("/api") for _ in range(2)], [200, 429])

    def test_globalFirst(self) -> None:
        """
        The top level's C{--rate-limit} is checked first: a request it
        refuses takes nothing from its route's bucket, and is counted with
        an empty route label.
        """
        self.site('rate-limit = "1/min"\nrate-limit-burst = 2', 'rate-limit = "1/min"')
        self.assertEqual([self.status("/api"), self.status("/api")], [200, 429])
        self.assertEqual((self.metric("api"), self.metric("")), ("0.0", "1.0"))
        self.harness.reactor.advance(60)
        # The route's bucket still had its second token.
        self.assertEqual([self.status("/api"), self.status("/api")], [200, 429])
        self.assertEqual((self.metric("api"), self.metric("")), ("0.0", "2.0"))

    def test_key(self) -> None:
        """
        C{rate-limit-key} gives the route's key.  A request without the key
        is not limited.
        """
        self.site('rate-limit = "1/min"\nrate-limit-burst = 1\nrate-limit-key = "header:X-Key"')
        one, two = "X-Key: one", "X-Key: two"
        self.assertEqual(
            [self.status("/api", one), self.status("/api", one), self.status("/api", two)],
            [200, 429, 200],
        )
        self.assertEqual([self.status("/api") for _ in range(3)], [200] * 3)

    def test_topLevelKey(self) -> None:
        """
        Without C{rate-limit-key}, a route counts by the top level's
        C{--rate-limit-key}.
        """
        self.site('rate-limit = "1/min"', 'rate-limit-key = "cookie:s"')
        self.assertEqual(
            [self.status("/api", "Cookie: s=a"), self.status("/api", "Cookie: s=a")], [200, 429]
        )
        self.assertEqual(self.status("/api", "Cookie: s=b"), 200)

    def test_ownTable(self) -> None:
        """
        A route's buckets are a table of their own, as large as
        C{--rate-limit-keys}: keys flooding another limit (here the top
        level's, in a table of 8 keys) do not push them out, so a client
        that spent its route's tokens stays refused.
        """
        self.site(
            'rate-limit = "1/min"\nrate-limit-burst = 1\nrate-limit-key = "header:X-Key"',
            'rate-limit = "1/min"\nrate-limit-burst = 100\nrate-limit-keys = 8\n'
            'rate-limit-key = "header:X-Flood"',
        )
        limits = self.harness.site.resource.clientLimits
        assert limits is not None
        self.assertEqual(limits.routeLimits["api"]._buckets._sets, 1)
        self.assertEqual([self.status("/api", "X-Key: me") for _ in range(2)], [200, 429])
        for index in range(50):
            self.assertEqual(self.status("/open", f"X-Flood: {index}"), 200)
        self.assertEqual(len(limits._buckets), 8)
        self.assertEqual(self.status("/api", "X-Key: me"), 429)

    def test_reload(self) -> None:
        """
        A reload keeps a route's buckets when its name and limit are
        unchanged; a new rate, burst or key, or a new name, starts afresh
        (every key's bucket full).  The counts stay.
        """
        self.site('rate-limit = "1/min"\nrate-limit-burst = 1')
        self.assertEqual([self.status("/api"), self.status("/api")], [200, 429])
        text = ROUTES.format(top="", limit='rate-limit = "1/min"\nrate-limit-burst = 1')
        self.harness.write(text)
        self.assertTrue(self.harness.service.reload())
        self.assertEqual(self.status("/api"), 429)
        self.harness.write(text.replace("rate-limit-burst = 1", "rate-limit-burst = 2"))
        self.assertTrue(self.harness.service.reload())
        self.assertEqual([self.status("/api") for _ in range(3)], [200, 200, 429])
        self.harness.write(text.replace('name = "api"', 'name = "v1"'))
        self.assertTrue(self.harness.service.reload())
        self.assertEqual([self.status("/api"), self.status("/api")], [200, 429])
        self.assertEqual((self.metric("api"), self.metric("v1")), ("3.0", "1.0"))
        self.harness.write(text.replace('rate-limit = "1/min"\nrate-limit-burst = 1', ""))
        self.assertTrue(self.harness.service.reload())
        self.assertEqual([self.status("/api") for _ in range(3)], [200] * 3)

    def test_badKeyAtStart(self) -> None:
        """
        A bad route key ends txlb at start with one line naming the route.
        """
        options = Options()
        path = self.mktemp()
        with open(path, "w") as file:
            file.write(ROUTES.format(top="", limit='rate-limit = "fast"'))
        with self.assertRaises(SystemExit) as caught:
            options.parseOptions(["--config", path])
        self.assertEqual(
            caught.exception.code,
            f"txlb: --config {path}: route 1 (api): rate-limit: 'fast' is not a rate like"
            " 100/s, 6000/min or 1000/h (see twistd txlb --help)",
        )

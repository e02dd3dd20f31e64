"""
Backends from DNS (L{txlb.dns}), against a twisted.names authoritative
server whose records the tests change: in memory under a L{Clock}, and over
real TCP on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.names import authority, server
from twisted.names import dns as records
from twisted.trial.unittest import SynchronousTestCase, TestCase

from txlb.admin import AdminAPI
from txlb.backend import Backend, BackendPool
from txlb.dns import (
    DNSDiscovery,
    DNSName,
    ResolutionError,
    TCPResolver,
    parseDNSName,
    parseServer,
    refreshDelay,
    resolve,
    srvTargets,
)
from txlb.metrics import Metrics
from txlb.service import LoadBalancerService
from txlb.tap import Options, makeService

ZONE = b"example.test"
SRV = "_http._tcp.api.example.test"


def srv(priority: int, weight: int, port: int, target: str | bytes, ttl: int = 30) -> Any:
    return records.Record_SRV(priority, weight, port, target, ttl=ttl)


class Zone(authority.FileAuthority):
    """
    An authority over C{example.test} whose records a test sets, and which
    can be made to fail (SERVFAIL) or to never answer.
    """

    def __init__(self) -> None:
        super().__init__(None)
        self.mode = "answer"
        self.queries = 0

    def loadFile(self, filename: object) -> None:
        self.soa = (ZONE, records.Record_SOA(mname=b"ns." + ZONE, minimum=30, expire=30))
        self.records = {}

    def set(self, name: str, *answers: Any) -> None:
        self.records[name.encode()] = list(answers)

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any = None) -> Any:
        self.queries += 1
        if self.mode == "fail":
            return defer.fail(RuntimeError("broken"))
        if self.mode == "silent":
            return defer.Deferred()
        return super()._lookup(name, cls, type, timeout)


def serve(testCase: TestCase, zone: Zone) -> tuple[str, int]:
    """
    Serve C{zone} over TCP (what L{TCPResolver} asks over) on 127.0.0.1, on
    a port of the system's choice.
    """
    factory = server.DNSServerFactory(authorities=[zone])
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    return "127.0.0.1", port.getHost().port


def addresses(backends: list[Backend]) -> list[tuple[str, int]]:
    return [(b.address, b.weight) for b in backends]


class ParseTests(SynchronousTestCase):
    def test_names(self) -> None:
        """
        SRV names and NAME:PORT parse; anything else is refused with a reason.
        """
        self.assertEqual(
            parseDNSName("_http._tcp.web.service.consul"), ("_http._tcp.web.service.consul", None)
        )
        self.assertEqual(
            parseDNSName("_http._tcp.web.service.consul."), ("_http._tcp.web.service.consul", None)
        )
        self.assertEqual(parseDNSName("api.internal:8080"), ("api.internal", 8080))
        self.assertEqual(str(parseDNSName("api.internal:8080")), "api.internal:8080")
        for text, reason in [
            ("_http.web", "is not an SRV name"),
            ("_http.tcp.web", "is not an SRV name"),
            ("api.internal", "missing port"),
            ("api.internal:0", "bad port"),
            ("api.internal:80=2", "no weight or scheme"),
            ("bad_host:80", "bad host"),
            ("10.0.0.5:80", "is an IP address, not a name"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseDNSName(text)
            self.assertIn(reason, str(caught.exception), text)

    def test_servers(self) -> None:
        """
        A DNS server is an IP address with an optional port, 53 by default.
        """
        for text, expected in [
            ("10.0.0.2", ("10.0.0.2", 53)),
            ("127.0.0.1:8600", ("127.0.0.1", 8600)),
            ("[::1]:8600", ("::1", 8600)),
            ("[fd00::2]", ("fd00::2", 53)),
            ("fd00::2", ("fd00::2", 53)),
        ]:
            self.assertEqual(parseServer(text), expected, text)
        for text, reason in [
            ("consul:8600", "'consul' is not an IP address"),
            ("127.0.0.1:99999", "bad port"),
            ("[::1]x", "is not IP[:PORT]"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseServer(text)
            self.assertIn(reason, str(caught.exception), text)

    def test_srvTargets(self) -> None:
        """
        Only the lowest priority present counts (RFC 2782); weights are
        clamped to backend weights; a target of C{.} means none.
        """

        def answer(record: Any) -> Any:
            return records.RRHeader(SRV.encode(), records.SRV, ttl=record.ttl, payload=record)

        table = [
            (
                [srv(10, 5, 80, "a", 7), srv(20, 1, 80, "b"), srv(10, 0, 81, "c", 9)],
                [("a", 80, 5, 7), ("c", 81, 1, 9)],
            ),
            ([srv(0, 65535, 80, "a")], [("a", 80, 1000, 30)]),
            ([srv(0, 0, 0, b".")], []),
            ([], []),
        ]
        for answers, expected in table:
            self.assertEqual(srvTargets([answer(r) for r in answers]), expected)

    def test_refreshDelay(self) -> None:
        """
        The TTL, bounded by the minimum and maximum.
        """
        for ttl, expected in [(0, 5), (4, 5), (5, 5), (30, 30), (60, 60), (86400, 60)]:
            self.assertEqual(refreshDelay(ttl, 5, 60), expected, ttl)

    def test_options(self) -> None:
        """
        C{--backends-dns} and C{--dns-server} repeat, alone or beside
        C{--backends}; bad values end with one line.
        """
        options = Options()
        options.parseOptions(
            [
                *("--backends-dns", SRV, "--backends-dns", "web.example.test:80"),
                *("--dns-server", "127.0.0.1:5353", "--dns-server", "10.0.0.2"),
            ]
        )
        self.assertEqual(
            options["backends-dns"], [DNSName(SRV, None), DNSName("web.example.test", 80)]
        )
        self.assertEqual(options["dns-server"], [("127.0.0.1", 5353), ("10.0.0.2", 53)])
        self.assertEqual((options["dns-min-ttl"], options["dns-max-ttl"]), (5.0, 60.0))
        self.assertEqual(options["backends"], [])
        for args, message in [
            (["--backends-dns", "web"], "--backends-dns: 'web': missing port"),
            (["--backends-dns", "a:1", "--dns-server", "ns"], "--dns-server: 'ns': 'ns' is not"),
            (["--backends-dns", "a:1", "--dns-min-ttl", "90"], "--dns-min-ttl must not be above"),
        ]:
            with self.assertRaises(SystemExit) as caught:
                Options().parseOptions(args)
            self.assertIn(message, str(caught.exception.code))

    def test_configFile(self) -> None:
        """
        The configuration file takes a list of names, and a list of servers.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write(
                f'backends-dns = ["{SRV}", "web.example.test:80"]\ndns-server = "10.0.0.2"\n'
            )
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual(
            options["backends-dns"], [DNSName(SRV, None), DNSName("web.example.test", 80)]
        )
        self.assertEqual(options["dns-server"], [("10.0.0.2", 53)])


class ResolveTests(TestCase):
    """
    L{resolve} against a real twisted.names server over TCP on 127.0.0.1.
    """

    def setUp(self) -> None:
        self.zone = Zone()
        self.resolver = TCPResolver(servers=[serve(self, self.zone)], reactor=reactor)
        self.addCleanup(self.resolver.close)

    async def _resolve(self, name: str) -> tuple[list[tuple[str, int]], int]:
        backends, ttl = await resolve(self.resolver, parseDNSName(name), timeout=(1,))
        return addresses(backends), ttl

    @defer.inlineCallbacks
    def test_srv(self) -> Any:
        """
        The lowest priority's targets, looked up (A and AAAA) through the same
        server, each with its SRV weight; the TTL is the smallest seen.
        """
        self.zone.set(
            SRV,
            srv(10, 2, 8081, "one.example.test", ttl=40),
            srv(10, 1, 8082, "two.example.test", ttl=50),
            srv(20, 1, 8083, "backup.example.test"),
        )
        self.zone.set("one.example.test", records.Record_A("127.0.0.11", ttl=20))
        self.zone.set(
            "two.example.test",
            records.Record_A("127.0.0.12", ttl=60),
            records.Record_AAAA("::1", ttl=60),
        )
        self.zone.set("backup.example.test", records.Record_A("127.0.0.13"))
        result = yield defer.Deferred.fromCoroutine(self._resolve(SRV))
        self.assertEqual(
            result,
            ([("127.0.0.11:8081", 2), ("127.0.0.12:8082", 1), ("[::1]:8082", 1)], 20),
        )

    @defer.inlineCallbacks
    def test_addresses(self) -> Any:
        """
        NAME:PORT gives each A and AAAA address on that port.
        """
        self.zone.set(
            "web.example.test",
            records.Record_A("127.0.0.21", ttl=15),
            records.Record_A("127.0.0.22", ttl=25),
            records.Record_AAAA("::2", ttl=35),
        )
        result = yield defer.Deferred.fromCoroutine(self._resolve("web.example.test:80"))
        self.assertEqual(
            result, ([("127.0.0.21:80", 1), ("127.0.0.22:80", 1), ("[::2]:80", 1)], 15)
        )

    @defer.inlineCallbacks
    def test_failures(self) -> Any:
        """
        SERVFAIL, no answer in time, a name that does not exist and an empty
        answer all fail the resolution, with a reason.
        """
        self.zone.set("web.example.test", records.Record_A("127.0.0.21"))
        self.zone.set(SRV)
        cases = [
            ("fail", "web.example.test:80", "DNSServerError"),
            ("silent", "web.example.test:80", "no answer in time"),
            ("answer", "nowhere.example.test:80", "no records"),
            ("answer", SRV, "no records"),
        ]
        for mode, name, reason in cases:
            self.zone.mode = mode
            with self.assertRaises(ResolutionError) as caught:
                yield defer.Deferred.fromCoroutine(self._resolve(name))
            self.assertIn(reason, str(caught.exception), (mode, name, str(caught.exception)))
        # The server's log of the error it answered SERVFAIL for.
        self.assertTrue(self.flushLoggedErrors(RuntimeError))


class DiscoveryTests(SynchronousTestCase):
    """
    L{DNSDiscovery} under a L{Clock}, with the zone itself as the resolver:
    exact times, no network.
    """

    def setUp(self) -> None:
        self.zone = Zone()
        self.zone.set("web.example.test", records.Record_A("127.0.0.21", ttl=30))
        self.clock = Clock()
        self.changes: list[list[tuple[str, int]]] = []
        self.metrics = Metrics(BackendPool([], self.clock), self.clock)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def discover(self, *names: str, **kwargs: Any) -> DNSDiscovery:
        discovery = DNSDiscovery(
            [parseDNSName(n) for n in names],
            self.zone,
            self.clock,
            lambda backends: self.changes.append(addresses(backends)),
            minTTL=5,
            maxTTL=60,
            metrics=self.metrics,
            **kwargs,
        )
        discovery.startService()
        self.addCleanup(discovery.stopService)
        return discovery

    def count(self, name: str, result: str) -> float:
        return self.metrics.registry.get_sample_value(
            "txlb_dns_resolutions_total", {"name": name, "result": result}
        )

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.events if "DNS" in e.get("log_format", "")]

    def test_followsRecords(self) -> None:
        """
        Backends come and go as the records do, each change reported once.
        """
        self.discover("web.example.test:80")
        self.assertEqual(self.changes, [[("127.0.0.21:80", 1)]])
        self.zone.set(
            "web.example.test",
            records.Record_A("127.0.0.22", ttl=30),
            records.Record_A("127.0.0.23", ttl=30),
        )
        self.clock.advance(30)
        self.clock.advance(30)
        self.assertEqual(
            self.changes, [[("127.0.0.21:80", 1)], [("127.0.0.22:80", 1), ("127.0.0.23:80", 1)]]
        )
        self.assertEqual(self.count("web.example.test:80", "success"), 3)

    def test_ttlBounds(self) -> None:
        """
        A TTL below the minimum is resolved again after the minimum, one
        above the maximum after the maximum, others at the TTL.
        """
        for ttl, delay in [(0, 5), (1, 5), (30, 30), (3600, 60)]:
            self.zone.set("web.example.test", records.Record_A("127.0.0.21", ttl=ttl))
            discovery = self.discover("web.example.test:80")
            before = self.zone.queries
            self.clock.advance(delay - 0.5)
            self.assertEqual(self.zone.queries, before, ttl)
            self.clock.advance(0.5)
            self.assertEqual(self.zone.queries, before + 2, ttl)
            discovery.stopService()

    def test_failureKeepsLastGood(self) -> None:
        """
        SERVFAIL and an empty answer keep the last good set, are retried
        after the minimum TTL, are counted each time and logged once per
        change; the recovery is logged too.
        """
        self.discover("web.example.test:80")
        self.zone.mode = "fail"
        for _ in range(3):
            self.clock.advance(30 if self.count("web.example.test:80", "failure") is None else 5)
        self.zone.mode = "answer"
        self.zone.set("web.example.test")
        self.clock.advance(5)
        self.clock.advance(5)
        self.assertEqual(self.changes, [[("127.0.0.21:80", 1)]])
        self.assertEqual(self.count("web.example.test:80", "failure"), 5)
        self.zone.set("web.example.test", records.Record_A("127.0.0.22", ttl=30))
        self.clock.advance(5)
        self.assertEqual(self.changes, [[("127.0.0.21:80", 1)], [("127.0.0.22:80", 1)]])
        self.assertEqual(
            self.messages(),
            [
                "DNS web.example.test:80: backends 127.0.0.21:80 (weight 1)",
                "DNS web.example.test:80 failed (RuntimeError: broken): keeping its last"
                " good set of 1 backends",
                "DNS web.example.test:80 failed (no records): keeping its last good set of 1"
                " backends",
                "DNS web.example.test:80 resolves again",
                "DNS web.example.test:80: backends 127.0.0.22:80 (weight 1)",
            ],
        )

    def test_namesMerged(self) -> None:
        """
        Several names are reported together once each was tried, in their
        order, each address once (the first name's weight wins).
        """
        self.zone.set(SRV, srv(0, 3, 80, "web.example.test"), srv(0, 1, 80, "other.example.test"))
        self.zone.set("other.example.test", records.Record_A("127.0.0.31"))
        self.discover(SRV, "web.example.test:80", "missing.example.test:80")
        self.assertEqual(self.changes, [[("127.0.0.21:80", 3), ("127.0.0.31:80", 1)]])

    def test_lastGoodHandedOver(self) -> None:
        """
        A discovery given the last good sets reports them at once, for the
        names it still follows.
        """
        self.zone.mode = "silent"
        kept = [Backend("127.0.0.9", 80)]
        self.discover(
            "web.example.test:80",
            lastGood={DNSName("web.example.test", 80): kept, DNSName("gone.example.test", 80): []},
        )
        self.assertEqual(self.changes, [[("127.0.0.9:80", 1)]])


class ServiceTests(SynchronousTestCase):
    """
    The balancer with C{--backends-dns}: the pool follows DNS, leaving
    backends drain, static ones stay.
    """

    def setUp(self) -> None:
        self.zone = Zone()
        self.zone.set(
            "web.example.test",
            records.Record_A("127.0.0.21", ttl=10),
            records.Record_A("127.0.0.22", ttl=10),
        )
        self.reactor = MemoryReactorClock()

    def start(self, *args: str) -> LoadBalancerService:
        options = Options()
        options.parseOptions(["--listen", "tcp:8080", *args])
        service: LoadBalancerService = makeService(options, self.reactor)  # type: ignore[assignment]
        service.resolver = self.zone
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def pool(self, service: LoadBalancerService) -> list[tuple[str, str]]:
        now = self.reactor.seconds()
        return [(b.address, b.state(now)) for b in service.resource.pool.backends]

    def test_joinAndDrain(self) -> None:
        """
        New addresses join; one that leaves DNS with a request in flight
        drains and goes once it is over; an idle one goes at once.
        """
        service = self.start("--backends-dns", "web.example.test:80", "--algo", "iphash")
        self.assertEqual(self.pool(service), [("127.0.0.21:80", "up"), ("127.0.0.22:80", "up")])
        self.assertEqual(len(self.reactor.tcpServers), 1)
        busy = service.resource.pool.backends[0]
        busy.active = 1
        self.zone.set("web.example.test", records.Record_A("127.0.0.23", ttl=10))
        self.reactor.advance(10)
        self.assertEqual(
            self.pool(service), [("127.0.0.21:80", "draining"), ("127.0.0.23:80", "up")]
        )
        self.assertEqual(
            [b.address for b in service.resource.algorithm.backends],  # type: ignore[attr-defined]
            ["127.0.0.21:80", "127.0.0.23:80"],
        )
        self.reactor.advance(1)
        self.assertEqual(self.pool(service)[0], ("127.0.0.21:80", "draining"))
        busy.active = 0
        self.reactor.advance(1)
        self.assertEqual(self.pool(service), [("127.0.0.23:80", "up")])

    def test_drainingComesBack(self) -> None:
        """
        A backend draining after it left DNS serves again, with its counts,
        if DNS gives it back before it is removed.
        """
        service = self.start("--backends-dns", "web.example.test:80")
        busy = service.resource.pool.backends[0]
        busy.active, busy.requests = 1, 7
        self.zone.set("web.example.test", records.Record_A("127.0.0.22", ttl=10))
        self.reactor.advance(10)
        self.assertEqual(
            self.pool(service), [("127.0.0.21:80", "draining"), ("127.0.0.22:80", "up")]
        )
        self.zone.set(
            "web.example.test",
            records.Record_A("127.0.0.22", ttl=10),
            records.Record_A("127.0.0.21", ttl=10),
        )
        self.reactor.advance(10)
        busy.active = 0
        self.reactor.advance(1)
        self.assertEqual(self.pool(service), [("127.0.0.21:80", "up"), ("127.0.0.22:80", "up")])
        self.assertIs(service.resource.pool.backends[0], busy)

    def test_seenLikeOthers(self) -> None:
        """
        Health checks and C{/status} (the status page's source) cover DNS
        backends like any other.
        """
        service = self.start("--backends-dns", "web.example.test:80", "--health-path", "/health")
        # The first checks, 5 s after the start, time out 2 s later.
        self.reactor.advance(5)
        self.reactor.advance(2)
        registry = service.resource.metrics.registry
        for address in ("127.0.0.21:80", "127.0.0.22:80"):
            self.assertEqual(
                registry.get_sample_value(
                    "txlb_health_checks_total", {"backend": address, "result": "failed"}
                ),
                1,
            )
        status = AdminAPI(service, None).status()
        self.assertEqual(
            [(b["address"], b["state"]) for b in status["backends"]],
            [("127.0.0.21:80", "up"), ("127.0.0.22:80", "up")],
        )

    def test_joinWithSlowStart(self) -> None:
        """
        Each backend DNS adds ramps up with C{--slow-start} from when it was
        added: those of the first answer from the start, a later one from
        its own answer; one that stays is not ramped again.
        """
        service = self.start("--backends-dns", "web.example.test:80", "--slow-start", "30")
        self.zone.set(
            "web.example.test",
            records.Record_A("127.0.0.21", ttl=10),
            records.Record_A("127.0.0.23", ttl=10),
        )
        self.reactor.advance(10)
        self.assertEqual(
            [(b.address, b.upSince) for b in service.resource.pool.backends],
            [("127.0.0.21:80", 0), ("127.0.0.23:80", 10)],
        )

    def test_staticWins(self) -> None:
        """
        A backend both static and in DNS keeps its static weight, and stays
        when DNS drops it.
        """
        service = self.start(
            "--backends", "127.0.0.21:80=5", "--backends-dns", "web.example.test:80"
        )
        self.assertEqual(
            [(b.address, b.weight) for b in service.resource.pool.backends],
            [("127.0.0.21:80", 5), ("127.0.0.22:80", 1)],
        )
        self.zone.set("web.example.test", records.Record_A("127.0.0.23", ttl=10))
        self.reactor.advance(10)
        self.assertEqual(self.pool(service), [("127.0.0.21:80", "up"), ("127.0.0.23:80", "up")])

    def test_waitsForBackends(self) -> None:
        """
        With only DNS backends, the balancer listens once DNS gave some, and
        not before.
        """
        self.zone.mode = "fail"
        service = self.start("--backends-dns", "web.example.test:80")
        self.assertEqual((self.pool(service), self.reactor.tcpServers), ([], []))
        self.zone.mode = "answer"
        self.reactor.advance(5)
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.assertEqual(len(self.pool(service)), 2)

    def test_cannotListenLater(self) -> None:
        """
        A listener that cannot be opened once DNS gave backends is logged in
        one line, and stops txlb.
        """
        self.zone.mode = "fail"
        service = self.start("--backends-dns", "web.example.test:80")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        def busy() -> None:
            raise CannotListenError("", 8080, OSError("Address already in use"))

        service.listeners[0].privilegedStartService = busy  # type: ignore[method-assign]
        self.zone.mode = "answer"
        self.reactor.advance(5)
        self.assertTrue(self.reactor.hasStopped)
        self.assertFalse(service.listeners[0].running)
        self.assertIn(
            "txlb: cannot listen: Couldn't listen on any:8080: Address already in use.",
            [formatEvent(e) for e in events],
        )

    def test_reloadKeepsDNSBackends(self) -> None:
        """
        A reload that changes the static backends keeps the DNS ones; one
        that drops the DNS name drains its backends.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write('backends = ["127.0.0.9:80"]\nbackends-dns = ["web.example.test:80"]\n')
        service = self.start("--config", path)
        with open(path, "w", encoding="utf-8") as file:
            file.write('backends = ["127.0.0.8:80"]\nbackends-dns = ["web.example.test:80"]\n')
        self.assertTrue(service.reload())
        self.assertEqual(
            [b.address for b in service.resource.pool.backends],
            ["127.0.0.8:80", "127.0.0.21:80", "127.0.0.22:80"],
        )
        with open(path, "w", encoding="utf-8") as file:
            file.write('backends = ["127.0.0.8:80"]\n')
        self.assertTrue(service.reload())
        self.assertEqual(self.pool(service), [("127.0.0.8:80", "up")])

    def test_reloadDropsStaticStillInDNS(self) -> None:
        """
        A backend listed both in the file and in DNS stays, for DNS, when
        the file drops it.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write('backends = ["127.0.0.21:80=4"]\nbackends-dns = ["web.example.test:80"]\n')
        service = self.start("--config", path)
        with open(path, "w", encoding="utf-8") as file:
            file.write('backends = ["127.0.0.8:80"]\nbackends-dns = ["web.example.test:80"]\n')
        self.assertTrue(service.reload())
        self.assertEqual(
            [(b.address, b.weight) for b in service.resource.pool.backends],
            [("127.0.0.8:80", 1), ("127.0.0.22:80", 1), ("127.0.0.21:80", 1)],
        )


class LoopbackTests(TestCase):
    """
    The balancer on the real reactor, resolving over TCP on 127.0.0.1.
    """

    @defer.inlineCallbacks
    def test_followsServer(self) -> Any:
        """
        The pool follows the server's SRV records, re-resolved at the TTL
        (bounded here to 0.1-0.2 s), and keeps them while the server fails.
        """
        zone = Zone()
        zone.set(SRV, srv(0, 2, 8081, "one.example.test", ttl=0))
        zone.set("one.example.test", records.Record_A("127.0.0.11", ttl=0))
        zone.set("two.example.test", records.Record_A("127.0.0.12", ttl=0))
        host, port = serve(self, zone)
        options = Options()
        options.parseOptions(
            [
                *("--listen", "tcp:0:interface=127.0.0.1", "--backends-dns", SRV),
                *("--dns-server", f"{host}:{port}", "--dns-min-ttl", "0.1", "--dns-max-ttl", "0.2"),
            ]
        )
        service: LoadBalancerService = makeService(options)  # type: ignore[assignment]
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)

        @defer.inlineCallbacks
        def poolBecomes(expected: list[tuple[str, int]]) -> Any:
            for _ in range(50):
                if addresses(list(service.resource.pool.backends)) == expected:
                    return
                yield deferLater(reactor, 0.05)
            self.fail(f"{addresses(list(service.resource.pool.backends))} != {expected}")

        yield poolBecomes([("127.0.0.11:8081", 2)])
        self.assertTrue(service.listeners[0].running)
        zone.set(
            SRV,
            srv(0, 2, 8081, "one.example.test", ttl=0),
            srv(0, 3, 8082, "two.example.test", ttl=0),
        )
        yield poolBecomes([("127.0.0.11:8081", 2), ("127.0.0.12:8082", 3)])
        zone.mode = "fail"
        queries = zone.queries
        yield deferLater(reactor, 0.5)
        self.assertGreater(zone.queries, queries)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(
            addresses(list(service.resource.pool.backends)),
            [("127.0.0.11:8081", 2), ("127.0.0.12:8082", 3)],
        )
        zone.mode = "answer"
        zone.set(SRV, srv(0, 1, 8082, "two.example.test", ttl=0))
        yield poolBecomes([("127.0.0.12:8082", 1)])

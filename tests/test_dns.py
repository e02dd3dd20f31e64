"""
Backends from DNS (L{txlb.dns}), against a twisted.names authoritative
server whose records the tests change: in memory under a L{Clock}, and over
real TCP on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    CannotListenError,
    ConnectionClosed,
    ConnectionDone,
    ConnectionRefusedError,
)
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.names import authority, server
from twisted.names import dns as records
from twisted.names.error import (
    DNSNotImplementedError,
    DNSQueryRefusedError,
    DNSQueryTimeoutError,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from tests.helpers import Dnsmasq, freeLoopbackPort
from txlb.admin import AdminAPI, AdminResource
from txlb.backend import Backend
from txlb.dns import (
    CONNECT_TIMEOUT,
    QUERY_TIMEOUT,
    DNSDiscovery,
    DNSName,
    NoAnswerError,
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
    can be made to fail (SERVFAIL) or to never answer, for every query or
    (C{failing}) for the queries of one record type.
    """

    def __init__(self) -> None:
        super().__init__(None)
        self.mode = "answer"
        self.queries = 0
        self.failing: dict[int, Exception] = {}

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
        if type in self.failing:
            return defer.fail(self.failing[type])
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
        self.resolver = TCPResolver(reactor, servers=[serve(self, self.zone)])
        self.addCleanup(self.resolver.close)

    async def _resolve(self, name: str) -> tuple[list[tuple[str, int]], int]:
        backends, ttl, _ = await resolve(self.resolver, parseDNSName(name), timeout=(1,))
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
    def test_orderDoesNotCount(self) -> Any:
        """
        The same records in another order give the same backends, sorted by
        address; an address and port that two SRV records give is one
        backend, with the sum of their weights.
        """
        targets = [
            srv(0, 2, 8081, "one.example.test"),
            srv(0, 3, 8081, "same.example.test"),
            srv(0, 1, 8082, "two.example.test"),
        ]
        addresses = [records.Record_A("127.0.0.12"), records.Record_A("127.0.0.2")]
        self.zone.set("one.example.test", records.Record_A("127.0.0.11"))
        self.zone.set("same.example.test", records.Record_A("127.0.0.11"))
        results = []
        for order in (1, -1):
            self.zone.set(SRV, *targets[::order])
            self.zone.set("two.example.test", *addresses[::order])
            results.append((yield defer.Deferred.fromCoroutine(self._resolve(SRV))))
        expected = ([("127.0.0.2:8082", 1), ("127.0.0.11:8081", 5), ("127.0.0.12:8082", 1)], 30)
        self.assertEqual(results, [expected, expected])

    @defer.inlineCallbacks
    def test_failures(self) -> Any:
        """
        SERVFAIL, no answer in time, a name that does not exist and an empty
        answer all fail the resolution, with a reason.
        """
        self.zone.set("web.example.test", records.Record_A("127.0.0.21"))
        self.zone.set(SRV)
        cases = [
            ("fail", "web.example.test:80", "SERVFAIL"),
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


class Connection:
    """
    A connection a L{TCPResolver} made under a L{MemoryReactorClock}, to a
    server that this test plays.
    """

    def __init__(self, reactor: MemoryReactorClock, index: int = -1) -> None:
        host, port, factory, self.timeout, _ = reactor.tcpClients[index]
        self.server = (host, port)
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def queries(self) -> list[records.Message]:
        """
        The messages sent since the last call.
        """
        data, messages = self.transport.value(), []
        self.transport.clear()
        while data:
            (length,) = struct.unpack("!H", data[:2])
            message = records.Message()
            message.fromStr(data[2 : 2 + length])
            messages.append(message)
            data = data[2 + length :]
        return messages

    def answer(self, query: records.Message, *addresses: str, rCode: int = records.OK) -> None:
        """
        Answer C{query} with A records of C{addresses}, or with C{rCode}.
        """
        message = records.Message(query.id, answer=1, rCode=rCode)
        message.queries = query.queries
        message.answers = [
            records.RRHeader(query.queries[0].name.name, payload=records.Record_A(address))
            for address in addresses
        ]
        data = message.toStr()
        self.protocol.dataReceived(struct.pack("!H", len(data)) + data)

    def lose(self) -> None:
        """
        The server closes the connection.
        """
        self.protocol.connectionLost(Failure(ConnectionDone()))


def refuse(reactor: MemoryReactorClock, index: int = -1) -> None:
    """
    The server of connection attempt C{index} refuses it.
    """
    _, _, factory, _, _ = reactor.tcpClients[index]
    factory.clientConnectionFailed(reactor.connectors[index], Failure(ConnectionRefusedError()))


class TCPResolverTests(SynchronousTestCase):
    """
    L{TCPResolver} under a L{MemoryReactorClock}: its connections, which
    server it asks, and when.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def resolver(self, *servers: tuple[str, int]) -> TCPResolver:
        return TCPResolver(self.reactor, servers=list(servers))

    def servers(self) -> list[tuple[str, int]]:
        """
        The servers connected to (or tried), in turn.
        """
        return [(host, port) for host, port, _, _, _ in self.reactor.tcpClients]

    def addresses(self, lookup: defer.Deferred[Any]) -> list[str]:
        answers, _, _ = self.successResultOf(lookup)
        return [answer.payload.dottedQuad() for answer in answers]

    def test_oneKeptConnection(self) -> None:
        """
        Queries go over one connection, made within a second
        (L{CONNECT_TIMEOUT}, not Twisted's 30 s), and kept.
        """
        resolver = self.resolver(("10.0.0.53", 53))
        first = resolver.lookupAddress("a.example.test")
        connection = Connection(self.reactor)
        self.assertEqual(connection.timeout, CONNECT_TIMEOUT)
        self.assertEqual(CONNECT_TIMEOUT, 1.0)
        (query,) = connection.queries()
        connection.answer(query, "10.0.0.1")
        self.assertEqual(self.addresses(first), ["10.0.0.1"])
        second = resolver.queryTCP([records.Query(b"b.example.test")])
        (query,) = connection.queries()
        connection.answer(query, "10.0.0.2")
        self.assertEqual(len(self.successResultOf(second).answers), 1)
        self.assertEqual(self.servers(), [("10.0.0.53", 53)])

    def test_ipv6Server(self) -> None:
        """
        A server given by its IPv6 address is connected to over IPv6.
        """
        resolver = self.resolver(("fd00::53", 8600))
        lookup = resolver.lookupAddress("a.example.test")
        connection = Connection(self.reactor)
        self.assertEqual(connection.server, ("fd00::53", 8600))
        (query,) = connection.queries()
        connection.answer(query, "10.0.0.1")
        self.assertEqual(self.addresses(lookup), ["10.0.0.1"])

    def test_systemServers(self) -> None:
        """
        Without servers, those of resolv.conf are asked; closing the
        resolver stops reading it again.
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write("nameserver 10.0.0.53\n")
        resolver = TCPResolver(self.reactor, resolv=path)
        lookup = resolver.lookupAddress("a.example.test")
        connection = Connection(self.reactor)
        self.assertEqual(connection.server, ("10.0.0.53", 53))
        (query,) = connection.queries()
        connection.answer(query, "10.0.0.1")
        self.assertEqual(self.addresses(lookup), ["10.0.0.1"])
        resolver.close()
        connection.lose()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_lostConnectionAskedAgainAtOnce(self) -> None:
        """
        A query waiting on a connection the server closes (dnsmasq closes
        one after 100 queries) is asked again at once on a new connection;
        if that one is lost too, the query fails at once.
        """
        resolver = self.resolver(("10.0.0.53", 53))
        lookup = resolver.lookupAddress("a.example.test")
        first = Connection(self.reactor)
        first.queries()
        first.lose()
        second = Connection(self.reactor)
        (query,) = second.queries()
        second.answer(query, "10.0.0.1")
        self.assertEqual(self.addresses(lookup), ["10.0.0.1"])
        lookup = resolver.lookupAddress("a.example.test")
        second.lose()
        third = Connection(self.reactor)
        third.lose()
        self.failureResultOf(lookup, ConnectionClosed)
        self.assertEqual(len(self.reactor.tcpClients), 3)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_unreachableServer(self) -> None:
        """
        When the server asked cannot be reached, the next one is asked at
        once, and first from then on; the switch is logged once.
        """
        resolver = self.resolver(("10.0.0.53", 53), ("10.0.0.54", 5353))
        lookup = resolver.lookupAddress("a.example.test")
        refuse(self.reactor)
        connection = Connection(self.reactor)
        (query,) = connection.queries()
        connection.answer(query, "10.0.0.1")
        self.assertEqual(self.addresses(lookup), ["10.0.0.1"])
        lookup = resolver.lookupAddress("b.example.test")
        (query,) = connection.queries()
        connection.answer(query, "10.0.0.2")
        self.assertEqual(self.addresses(lookup), ["10.0.0.2"])
        self.assertEqual(self.servers(), [("10.0.0.53", 53), ("10.0.0.54", 5353)])
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            [
                "DNS server 10.0.0.54:5353 answers, 10.0.0.53:53 failed (ConnectionRefusedError:"
                " Connection was refused by other side.): asking it first from now on"
            ],
        )

    def test_silentServer(self) -> None:
        """
        When the server asked does not answer in time, its connection is
        closed (it may be dead) and the next server is asked at once.
        """
        resolver = self.resolver(("10.0.0.53", 53), ("10.0.0.54", 53))
        lookup = resolver.lookupAddress("a.example.test")
        silent = Connection(self.reactor)
        self.reactor.advance(QUERY_TIMEOUT[0] - 0.1)
        self.assertEqual(len(self.reactor.tcpClients), 1)
        self.reactor.advance(0.1)
        self.assertTrue(silent.transport.disconnecting)
        connection = Connection(self.reactor)
        self.assertEqual(connection.server, ("10.0.0.54", 53))
        (query,) = connection.queries()
        connection.answer(query, "10.0.0.1")
        self.assertEqual(self.addresses(lookup), ["10.0.0.1"])

    def test_refusingServer(self) -> None:
        """
        SERVFAIL, NOTIMP or REFUSED from a server sends the query to the
        next one; when every server refuses, the refusal is the answer.
        """
        resolver = self.resolver(("10.0.0.53", 53), ("10.0.0.54", 53))
        lookup = resolver.lookupAddress("a.example.test")
        first = Connection(self.reactor)
        (query,) = first.queries()
        first.answer(query, rCode=records.EREFUSED)
        second = Connection(self.reactor)
        (query,) = second.queries()
        second.answer(query, "10.0.0.1")
        self.assertEqual(self.addresses(lookup), ["10.0.0.1"])
        lookup = resolver.lookupAddress("b.example.test")
        for connection, rCode in [(second, records.ESERVER), (first, records.ENOTIMP)]:
            (query,) = connection.queries()
            connection.answer(query, rCode=rCode)
        self.failureResultOf(lookup, DNSNotImplementedError)

    def test_closeFailsWaiting(self) -> None:
        """
        Closing the resolver fails the queries waiting, with no timer left
        and no new connection.
        """
        resolver = self.resolver(("10.0.0.53", 53))
        waiting = resolver.lookupAddress("a.example.test")
        connection = Connection(self.reactor)
        closed = resolver.close()
        self.assertNoResult(closed)
        self.assertTrue(connection.transport.disconnecting)
        connection.lose()
        self.successResultOf(closed)
        other = self.resolver(("10.0.0.54", 53))
        connecting = other.lookupAddress("a.example.test")
        self.successResultOf(other.close())
        self.assertTrue(self.reactor.connectors[-1].stoppedConnecting)
        for lookup in (waiting, connecting):
            self.failureResultOf(lookup, NoAnswerError)
        self.assertEqual(len(self.reactor.tcpClients), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


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
        self.metrics = Metrics(self.clock, lambda: ())
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

    def test_reorderedAnswerIsNoChange(self) -> None:
        """
        Records given in another order (dnsmasq rotates them on every query)
        are the same set of backends: neither reported again nor logged.
        """
        targets = [srv(0, 1, 80, "web.example.test"), srv(0, 2, 81, "web.example.test")]
        addresses = [records.Record_A("127.0.0.21"), records.Record_A("127.0.0.22")]
        self.zone.set(SRV, *targets)
        self.zone.set("web.example.test", *addresses)
        self.discover(SRV)
        self.zone.set(SRV, *targets[::-1])
        self.zone.set("web.example.test", *addresses[::-1])
        self.clock.advance(30)
        self.assertEqual(
            self.changes,
            [
                [
                    ("127.0.0.21:80", 1),
                    ("127.0.0.21:81", 2),
                    ("127.0.0.22:80", 1),
                    ("127.0.0.22:81", 2),
                ]
            ],
        )
        self.assertEqual(self.count(SRV, "success"), 2)
        self.assertEqual(len(self.messages()), 1)

    def test_partialAnswer(self) -> None:
        """
        An address family whose query fails (REFUSED, as dnsmasq answers AAAA
        in a zone it is not --local for; no answer in time) does not discard
        the other's answer: the name resolves to the addresses that came,
        and to the failed family's last good ones.  A partial answer counts
        as a success, is asked again after the minimum TTL, and is logged
        once, as is the return of whole answers.
        """
        self.zone.failing[records.AAAA] = DNSQueryRefusedError()
        self.discover("web.example.test:80")
        self.assertEqual(self.changes, [[("127.0.0.21:80", 1)]])
        self.zone.set(
            "web.example.test",
            records.Record_A("127.0.0.21", ttl=30),
            records.Record_AAAA("::2", ttl=30),
        )
        self.clock.advance(5)
        self.clock.advance(5)
        del self.zone.failing[records.AAAA]
        self.clock.advance(5)
        self.zone.failing[records.AAAA] = DNSQueryTimeoutError(0)
        self.clock.advance(30)
        self.assertEqual(
            self.changes, [[("127.0.0.21:80", 1)], [("127.0.0.21:80", 1), ("[::2]:80", 1)]]
        )
        self.assertEqual(
            (
                self.count("web.example.test:80", "success"),
                self.count("web.example.test:80", "failure"),
            ),
            (5, None),
        )
        self.assertEqual(
            self.messages(),
            [
                "DNS web.example.test:80: part of the answer failed (AAAA web.example.test:"
                " REFUSED): using the rest",
                "DNS web.example.test:80: backends 127.0.0.21:80 (weight 1)",
                "DNS web.example.test:80: whole answers again",
                "DNS web.example.test:80: backends 127.0.0.21:80 (weight 1), [::2]:80 (weight 1)",
                "DNS web.example.test:80: part of the answer failed (AAAA web.example.test: no"
                " answer in time, keeping its last 1): using the rest",
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
        return [(b.address, b.state(now)) for b in service.pools["default"].resource.pool.backends]

    def test_joinAndDrain(self) -> None:
        """
        New addresses join; one that leaves DNS with a request in flight
        drains and goes once it is over; an idle one goes at once.
        """
        service = self.start("--backends-dns", "web.example.test:80", "--algo", "iphash")
        self.assertEqual(self.pool(service), [("127.0.0.21:80", "up"), ("127.0.0.22:80", "up")])
        self.assertEqual(len(self.reactor.tcpServers), 1)
        busy = service.pools["default"].resource.pool.backends[0]
        busy.active = 1
        self.zone.set("web.example.test", records.Record_A("127.0.0.23", ttl=10))
        self.reactor.advance(10)
        self.assertEqual(
            self.pool(service), [("127.0.0.21:80", "draining"), ("127.0.0.23:80", "up")]
        )
        self.assertEqual(
            [b.address for b in service.pools["default"].resource.algorithm.backends],  # type: ignore[attr-defined]
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
        busy = service.pools["default"].resource.pool.backends[0]
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
        self.assertIs(service.pools["default"].resource.pool.backends[0], busy)

    def admin(
        self,
        service: LoadBalancerService,
        method: str,
        path: str,
        body: Any = None,
        replay: bool = False,
    ) -> tuple[int, Any]:
        """
        Ask C{service}'s admin API, as the supervisor replays a change to a
        restarted worker if C{replay}.
        """
        headers = Headers({b"Txlb-Replay": [b"1"]} if replay else {})
        response = self.successResultOf(
            StubTreq(AdminResource(service, None)).request(
                method,
                f"http://admin{path}",
                headers=headers,
                data=None if body is None else json.dumps(body).encode(),
            )
        )
        return response.code, json.loads(self.successResultOf(response.content()))

    def weights(self, service: LoadBalancerService) -> list[tuple[str, int, str]]:
        now = self.reactor.seconds()
        return [
            (b.address, b.weight, b.state(now))
            for b in service.pools["default"].resource.pool.backends
        ]

    def test_adminChangesHold(self) -> None:
        """
        What the admin API changes about DNS backends holds, whatever DNS
        answers, until a reload: a weight (DNS's is not used), a removal
        (the address stays out while DNS gives it), a drain (still there
        after the backend left DNS and came back).
        """
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as file:
            file.write('backends-dns = ["web.example.test:80"]\n')
        service = self.start("--config", path)
        self.assertEqual(
            self.admin(service, "PATCH", "/backends/127.0.0.21:80", {"weight": 5})[0], 200
        )
        self.assertEqual(self.admin(service, "DELETE", "/backends/127.0.0.22:80")[0], 200)
        self.zone.set(
            "web.example.test",
            *(records.Record_A(f"127.0.0.{n}", ttl=10) for n in (21, 22, 23)),
        )
        self.reactor.advance(10)
        self.assertEqual(
            self.weights(service), [("127.0.0.21:80", 5, "up"), ("127.0.0.23:80", 1, "up")]
        )
        self.assertEqual(self.admin(service, "POST", "/backends/127.0.0.23:80/drain")[0], 200)
        self.zone.set(
            "web.example.test",
            *(records.Record_A(f"127.0.0.{n}", ttl=10) for n in (21, 22)),
        )
        self.reactor.advance(10)
        self.assertEqual(self.weights(service), [("127.0.0.21:80", 5, "up")])
        self.zone.set(
            "web.example.test",
            *(records.Record_A(f"127.0.0.{n}", ttl=10) for n in (21, 22, 23)),
        )
        self.reactor.advance(10)
        self.assertEqual(
            self.weights(service), [("127.0.0.21:80", 5, "up"), ("127.0.0.23:80", 1, "draining")]
        )
        self.assertTrue(service.reload())
        self.assertEqual(
            self.weights(service),
            [("127.0.0.21:80", 1, "up"), ("127.0.0.23:80", 1, "up"), ("127.0.0.22:80", 1, "up")],
        )

    def test_replayedChangesWaitForTheBackend(self) -> None:
        """
        A change to an address that is no backend is refused, unless it is
        a replay (what the supervisor sends a restarted worker, which may
        not have resolved DNS yet): then it is kept, and applied when DNS
        gives the backend.
        """
        self.zone.mode = "fail"
        service = self.start("--backends-dns", "web.example.test:80")
        drain = "/backends/127.0.0.21:80/drain"
        self.assertEqual(
            self.admin(service, "POST", drain), (404, {"error": "no backend 127.0.0.21:80"})
        )
        self.assertEqual(
            self.admin(service, "POST", drain, replay=True),
            (202, {"address": "127.0.0.21:80", "kept": "drain, until it is a backend"}),
        )
        self.assertEqual(
            self.admin(service, "PATCH", "/backends/127.0.0.21:80", {"weight": 3}, replay=True),
            (202, {"address": "127.0.0.21:80", "kept": "weight 3, until it is a backend"}),
        )
        self.assertEqual(
            self.admin(service, "DELETE", "/backends/127.0.0.22:80", replay=True),
            (202, {"address": "127.0.0.22:80", "kept": "removal, until it is a backend"}),
        )
        self.zone.mode = "answer"
        self.zone.set(
            "web.example.test",
            *(records.Record_A(f"127.0.0.{n}", ttl=10) for n in (21, 22, 23)),
        )
        self.reactor.advance(5)
        self.assertEqual(
            self.weights(service), [("127.0.0.21:80", 3, "draining"), ("127.0.0.23:80", 1, "up")]
        )

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
                    "txlb_health_checks_total",
                    {"backend": address, "pool": "default", "result": "failed"},
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
            [(b.address, b.upSince) for b in service.pools["default"].resource.pool.backends],
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
            [(b.address, b.weight) for b in service.pools["default"].resource.pool.backends],
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
            [b.address for b in service.pools["default"].resource.pool.backends],
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
            [(b.address, b.weight) for b in service.pools["default"].resource.pool.backends],
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
                if addresses(list(service.pools["default"].resource.pool.backends)) == expected:
                    return
                yield deferLater(reactor, 0.05)
            self.fail(
                f"{addresses(list(service.pools['default'].resource.pool.backends))} != {expected}"
            )

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
            addresses(list(service.pools["default"].resource.pool.backends)),
            [("127.0.0.11:8081", 2), ("127.0.0.12:8082", 3)],
        )
        zone.mode = "answer"
        zone.set(SRV, srv(0, 1, 8082, "two.example.test", ttl=0))
        yield poolBecomes([("127.0.0.12:8082", 1)])


#: The SRV name the dnsmasq tests serve, and its targets.
API = "_http._tcp.api.test"
TARGETS = [
    *(f"--srv-host={API},{host}.test,808{n},0,{n}" for n, host in [(1, "a"), (2, "b"), (3, "c")]),
    *(f"--host-record={host}.test,127.0.0.1{n}" for n, host in [(1, "a"), (2, "b"), (3, "c")]),
    "--host-record=web.test,127.0.0.21",
    "--host-record=web.test,127.0.0.22",
]


class CountingResolver(TCPResolver):
    """
    A L{TCPResolver} that counts the connections it made.
    """

    made = 0

    def connectionMade(self, protocol: Any) -> None:
        self.made += 1
        super().connectionMade(protocol)


class DnsmasqTests(TestCase):
    """
    Against a real dnsmasq (L{tests.helpers.Dnsmasq}), which rotates the order of
    its records on every query, answers AAAA with REFUSED outside its
    C{--local} zones, and closes a TCP connection after 100 queries.
    """

    def resolver(self, *servers: tuple[str, int], timeout: float = 2) -> CountingResolver:
        resolver = CountingResolver(reactor, servers=list(servers), timeout=(timeout,))
        self.addCleanup(resolver.close)
        return resolver

    async def until(self, condition: Any, what: str) -> None:
        for _ in range(500):
            if condition():
                return
            await deferLater(reactor, 0.02)
        self.fail(f"no {what} in time")

    async def test_rotatedAnswersChangeNothing(self) -> None:
        """
        dnsmasq's rotated SRV and A answers are the same backends: no log
        line, the algorithm is not made again (EWMA keeps what it learnt),
        and a weight and a removal the admin API made hold.  A restart of
        dnsmasq with other records is a change, and is followed.
        """
        dnsmasq = Dnsmasq(self).start("--local=/test/", *TARGETS)
        orders = set()
        resolver = self.resolver(dnsmasq.server)
        for _ in range(4):
            answers, _, _ = await resolver.lookupService(API)
            orders.add(tuple(answer.payload.port for answer in answers))
        self.assertGreater(len(orders), 1, "dnsmasq did not rotate its answers")
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        options = Options()
        options.parseOptions(
            [
                *("--listen", "tcp:0:interface=127.0.0.1", "--algo", "ewma"),
                *("--backends-dns", API, "--backends-dns", "web.test:80"),
                *("--dns-server", f"127.0.0.1:{dnsmasq.port}"),
                *("--dns-min-ttl", "0.02", "--dns-max-ttl", "0.05"),
            ]
        )
        service: LoadBalancerService = makeService(options)  # type: ignore[assignment]
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        pool = service.pools["default"].resource.pool
        await self.until(lambda: len(pool.backends) == 5, "backends")
        admin = StubTreq(AdminResource(service, None))
        response = await admin.patch(
            "http://admin/backends/127.0.0.12:8082", data=json.dumps({"weight": 7}).encode()
        )
        self.assertEqual(response.code, 200)
        response = await admin.delete("http://admin/backends/127.0.0.21:80")
        self.assertEqual(response.code, 200)
        algorithm = service.pools["default"].resource.algorithm

        def resolutions() -> float:
            return service.resource.metrics.registry.get_sample_value(  # type: ignore[no-any-return]
                "txlb_dns_resolutions_total", {"name": API, "result": "success"}
            )

        seen = resolutions()
        await self.until(lambda: resolutions() >= seen + 20, "resolutions")
        self.assertIs(service.pools["default"].resource.algorithm, algorithm)
        expected = [
            ("127.0.0.11:8081", 1),
            ("127.0.0.12:8082", 7),
            ("127.0.0.13:8083", 3),
            ("127.0.0.22:80", 1),
        ]
        self.assertEqual(addresses(list(pool.backends)), expected)

        def changes() -> list[str]:
            return [
                formatEvent(e)
                for e in events
                if e["log_format"] == "DNS {name}: backends {backends}"
            ]

        self.assertEqual(len(changes()), 2)
        dnsmasq.restart("--local=/test/", *TARGETS[1:])
        await self.until(lambda: len(pool.backends) == 3, "the change")
        self.assertEqual(addresses(list(pool.backends)), expected[1:])
        self.assertEqual(
            changes()[2:],
            [
                f"DNS {API}: backends 127.0.0.12:8082 (weight 2), 127.0.0.13:8083 (weight 3)",
            ],
        )

    async def test_refusedAAAAKeepsA(self) -> None:
        """
        Without C{--local}, dnsmasq answers AAAA with REFUSED: the A records
        are used, and the refusal said.  With it, AAAA has no records.
        """
        for local in [[], ["--local=/test/"]]:
            dnsmasq = Dnsmasq(self).start(*TARGETS, *local)
            resolver = self.resolver(dnsmasq.server)
            for name, expected, hosts in [
                ("web.test:80", [("127.0.0.21:80", 1), ("127.0.0.22:80", 1)], ["web"]),
                (
                    API,
                    [("127.0.0.11:8081", 1), ("127.0.0.12:8082", 2), ("127.0.0.13:8083", 3)],
                    ["a", "b", "c"],
                ),
            ]:
                resolution = await resolve(resolver, parseDNSName(name), timeout=(2,))
                self.assertEqual(addresses(resolution.backends), expected, (name, local))
                refused = [] if local else [f"AAAA {host}.test: REFUSED" for host in hosts]
                self.assertEqual(sorted(resolution.failed), refused, (name, local))
            dnsmasq.stop()

    async def test_closedConnectionNoStall(self) -> None:
        """
        dnsmasq closes a TCP connection after 100 queries: the query that
        was on its way is asked again at once on a new connection, and none
        waits for its timeout.
        """
        dnsmasq = Dnsmasq(self).start("--local=/test/", *TARGETS)
        resolver = self.resolver(dnsmasq.server)
        for _ in range(250):
            answers, _, _ = await resolver.lookupAddress("web.test")
            self.assertEqual(len(answers), 2)
        self.assertEqual(resolver.made, 3)

    async def test_secondServer(self) -> None:
        """
        When the first server does not answer (stopped, or taking the
        connection and never answering), the second one is asked.
        """
        dnsmasq = Dnsmasq(self).start("--local=/test/", *TARGETS)
        stopped = ("127.0.0.1", freeLoopbackPort())
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for servers in [
            [stopped, dnsmasq.server],
            [dnsmasq.server, stopped],
            [silent.getsockname(), dnsmasq.server],
        ]:
            resolver = self.resolver(*servers, timeout=1)
            resolution = await resolve(resolver, parseDNSName("web.test:80"), timeout=(1,))
            self.assertEqual(
                addresses(resolution.backends), [("127.0.0.21:80", 1), ("127.0.0.22:80", 1)]
            )

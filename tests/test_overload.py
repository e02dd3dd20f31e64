"""
The backend limits, the queue and the retry budget in the request path
(C{--max-conn}, C{--max-queue}, C{--queue-timeout}, C{--retry-budget}):
in memory, with real HTTP parsing on both sides, on a memory reactor.
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.helpers import (
    CONFIG,
    Harness,
    IntegrationTestCase,
    MemoryH2Client,
    ServiceHarness,
    TCPTransport,
    waitFor,
)
from txlb.admin import AdminAPI
from txlb.backend import Backend
from txlb.flow import HIGH_WATER
from txlb.settings import ProxySettings
from txlb.sticky import StickyCookie
from txlb.tap import Options, maxConn, retryBudget
from txlb.testbackend import BackendResource, makeBackendSite

#: What a request refused by the queue gets (Date aside).
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Retry-After: 1\r\n"
    b"Date: %s\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n"
    b"503 Service Unavailable: %s\n"
)

FULL = b"every backend at its limit and the queue full"


def get(path: bytes = b"/") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: lb.example\r\n\r\n" % path


def answer(body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Backends:
    """
    The backend side of a L{Harness}: accepts the connections txlb makes,
    and answers the requests on them in the order they came, counting how
    many each backend has in flight at most.
    """

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        #: Per backend port, the connections and what was read of each.
        self.connections: list[tuple[int, Any, TCPTransport]] = []
        self.read: dict[int, int] = {}
        #: The requests not yet answered, oldest first: (port, protocol,
        #: transport, request line).
        self.pending: list[tuple[int, Any, TCPTransport, bytes]] = []
        self.busiest: dict[int, int] = {}
        self.attempts = 0

    def accept(self) -> None:
        """
        Accept every pending connection and take note of new requests.
        """
        harness = self.harness
        while harness.reactor.tcpClients:
            port = harness.reactor.tcpClients[0][1]
            protocol, transport = harness.backend()
            self.connections.append((port, protocol, transport))
        for port, protocol, transport in self.connections:
            data = transport.value()
            seen = self.read.get(id(transport), 0)
            while True:
                end = data.find(b"\r\n\r\n", seen)
                if end < 0 or transport.disconnecting:
                    break
                line = data[seen : data.index(b"\r\n", seen)]
                head = data[seen : end + 4]
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                size = int(length.group(1)) if length else 0
                if len(data) < end + 4 + size:
                    break
                seen = end + 4 + size
                self.attempts += 1
                self.pending.append((port, protocol, transport, line))
            self.read[id(transport)] = seen
        for port in {entry[0] for entry in self.pending}:
            inFlight = sum(1 for entry in self.pending if entry[0] == port)
            self.busiest[port] = max(self.busiest.get(port, 0), inFlight)

    def lines(self) -> list[bytes]:
        self.accept()
        return [entry[3] for entry in self.pending]

    def answer(self, port: int | None = None, response: bytes | None = None) -> bytes:
        """
        Answer the oldest request in flight (on C{port}, if given); return
        its request line.
        """
        self.accept()
        for index, (where, protocol, _, line) in enumerate(self.pending):
            if port is None or where == port:
                del self.pending[index]
                protocol.dataReceived(response or answer(line.split()[1]))
                self.harness.reactor.advance(0)
                self.accept()
                return line
        raise AssertionError(f"no request in flight on {port}")


def dated(received: bytes) -> bytes:
    date = re.search(rb"\r\nDate: ([^\r]*)\r\n", received)
    assert date is not None
    return date.group(1)


class LimitTests(SynchronousTestCase):
    """
    A backend never has more requests in flight than its limit; the others
    wait in the queue, first in, first out.
    """

    def test_neverOverLimit(self) -> None:
        """
        With C{--max-conn 2} and two backends, eleven requests at once put
        two on each backend and seven in the queue; as answers come, the
        waiting ones go, never more than two at a time on a backend, and
        every client gets its answer.
        """
        harness = Harness(self, maxConn=2)
        backends = Backends(harness)
        clients = [harness.client(get(b"/%d" % n))[1] for n in range(11)]
        backends.accept()
        self.assertEqual(len(backends.pending), 4)
        self.assertEqual(harness.resource.admission.queued, 7)
        while backends.pending:
            backends.answer()
        self.assertEqual(backends.busiest, {8081: 2, 8082: 2})
        self.assertEqual(backends.attempts, 11)
        for n, client in enumerate(clients):
            self.assertTrue(client.value().endswith(b"\r\n\r\n/%d" % n), client.value())
        self.assertEqual([b.active for b in harness.backends], [0, 0])

    def test_fifo(self) -> None:
        """
        Requests leave the queue in the order they came.
        """
        harness = Harness(self, count=1, maxConn=1)
        backends = Backends(harness)
        for path in (b"/first", b"/a", b"/b", b"/c"):
            harness.client(get(path))
        served = [backends.answer() for _ in range(4)]
        self.assertEqual(
            served, [b"GET %s HTTP/1.1" % path for path in (b"/first", b"/a", b"/b", b"/c")]
        )

    def test_ownLimit(self) -> None:
        """
        A backend's own limit (C{HOST:PORT=WEIGHT/MAXCONN}) holds where the
        pool has none: the algorithm picks among the others.
        """
        harness = Harness(self)
        harness.resource.setBackends(
            [Backend("127.0.0.1", 8081, maxConn=1), Backend("127.0.0.1", 8082)]
        )
        backends = Backends(harness)
        for n in range(5):
            harness.client(get(b"/%d" % n))
        backends.accept()
        self.assertEqual(
            sorted(entry[0] for entry in backends.pending), [8081, 8082, 8082, 8082, 8082]
        )
        self.assertEqual(harness.resource.admission.queued, 0)

    def test_accessLogAndMetricsOfWait(self) -> None:
        """
        A request that waited says so in the access log (C{queued=}, only
        then), and the time is observed in C{/metrics}.
        """
        harness = Harness(self, count=1, maxConn=1)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        harness.client(get(b"/second"))
        harness.reactor.advance(0.25)
        backends.answer()
        harness.reactor.advance(0.125)
        backends.answer()
        first, second = harness.accessLog()
        self.assertTrue(first.endswith("status=200 ms=250.0"), first)
        self.assertTrue(second.endswith("status=200 ms=375.0 queued=250.0ms"), second)
        metrics = harness.resource.metrics.exposition().decode()
        self.assertIn('txlb_queue_duration_seconds_count{pool="default"} 1.0\n', metrics)
        self.assertIn('txlb_queue_duration_seconds_bucket{le="0.25",pool="default"} 1.0\n', metrics)
        self.assertIn('txlb_queue_duration_seconds_bucket{le="0.1",pool="default"} 0.0\n', metrics)
        self.assertIn(
            'txlb_backend_max_requests{backend="127.0.0.1:8081",pool="default"} 1.0\n', metrics
        )

    def test_queueMsInJSON(self) -> None:
        """
        The JSON access log has C{queueMs}: the time waited, or null.
        """
        harness = Harness(self, count=1, maxConn=1, accessLog="json")
        backends = Backends(harness)
        harness.client(get())
        harness.client(get())
        harness.reactor.advance(0.5)
        backends.answer()
        backends.answer()
        lines = [json.loads(line) for line in harness.accessLog()]
        self.assertEqual([line["queueMs"] for line in lines], [None, 500.0])
        self.assertEqual([line["firstByteMs"] for line in lines], [500.0, 500.0])


class AutoTests(SynchronousTestCase):
    """
    C{--max-conn auto} in the request path.
    """

    def test_observed(self) -> None:
        """
        Each response head teaches the learnt limit its latency, from the
        request sent to the head (the time it waited in the queue left
        out), and the backend's requests in flight when it was sent.  A
        backend starts at a limit of 1.
        """
        harness = Harness(self, count=1, maxConn="auto")
        admission = harness.resource.admission
        observed: list[tuple[int, float, int]] = []
        self.patch(
            admission,
            "observe",
            lambda backend, latency, inflight: observed.append(
                (backend.port, round(latency, 6), inflight)
            ),
        )
        backends = Backends(harness)
        harness.client(get(b"/first"))
        harness.client(get(b"/second"))
        self.assertEqual(admission.queued, 1)
        harness.reactor.advance(0.3)
        backends.answer()
        harness.reactor.advance(0.01)
        backends.answer()
        self.assertEqual(observed, [(8081, 0.3, 1), (8081, 0.01, 1)])
        self.assertIn("queued=300.0ms", harness.accessLog()[-1])

    def test_notObservedWithFixedLimit(self) -> None:
        """
        With a fixed limit, nothing is learnt.
        """
        harness = Harness(self, count=1, maxConn=4)
        self.patch(harness.resource.admission, "observe", lambda *a: self.fail("observed"))
        Backends(harness)
        harness.client(get())
        Backends(harness).answer()


class QueueRefusalTests(SynchronousTestCase):
    """
    Past the queue's size or its time, txlb answers 503 with C{Retry-After}.
    """

    def assertRefused(self, received: bytes, why: bytes) -> None:
        body = b"503 Service Unavailable: %s\n" % why
        self.assertEqual(received, REFUSED % (dated(received), len(body), why))

    def test_full(self) -> None:
        """
        With the queue full, the next request gets 503 at once, with
        C{Retry-After: 1} and flag C{QF}, counted; its connection stays
        open, and no backend hears of it.
        """
        harness = Harness(self, count=1, maxConn=1, maxQueue=1)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        harness.client(get(b"/waits"))
        _, refused = harness.client(get(b"/refused"))
        self.assertRefused(refused.value(), FULL)
        self.assertFalse(refused.disconnecting)
        self.assertEqual(backends.lines(), [b"GET /first HTTP/1.1"])
        line = harness.accessLog()[-1]
        self.assertIn(
            "path=/refused \N{RIGHTWARDS ARROW} backend=- status=503 ms=0.0 "
            f'error="{FULL.decode()}"',
            line,
        )
        self.assertEqual(harness.events[-1]["flag"], "QF")
        metrics = harness.resource.metrics.exposition().decode()
        self.assertIn('txlb_queue_refused_total{pool="default",reason="full"} 1.0\n', metrics)
        self.assertIn('txlb_queue_refused_total{pool="default",reason="timeout"} 0.0\n', metrics)
        self.assertIn('txlb_requests_total{backend="-",code="503",pool="default"} 1.0\n', metrics)
        self.assertIn('txlb_queue_length{pool="default"} 1.0\n', metrics)

    def test_timeout(self) -> None:
        """
        A request that waited C{--queue-timeout} gets 503 with
        C{Retry-After: 1} and flag C{QT}, counted, and its wait logged.
        """
        harness = Harness(self, count=1, maxConn=1, queueTimeout=2.0)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        _, waiting = harness.client(get(b"/waits"))
        harness.reactor.advance(1.999)
        self.assertEqual(waiting.value(), b"")
        harness.reactor.advance(0.001)
        self.assertRefused(waiting.value(), b"queued 2 s with every backend at its limit")
        self.assertEqual(harness.events[-1]["flag"], "QT")
        self.assertIn(
            "backend=- status=503 ms=2000.0 queued=2000.0ms "
            'error="queued 2 s with every backend at its limit"',
            harness.accessLog()[-1],
        )
        metrics = harness.resource.metrics.exposition().decode()
        self.assertIn('txlb_queue_refused_total{pool="default",reason="timeout"} 1.0\n', metrics)
        self.assertEqual(harness.resource.admission.queued, 0)
        backends.answer()
        self.assertEqual(backends.attempts, 1)

    def test_clientLeaves(self) -> None:
        """
        A client that goes away while its request waits leaves the queue at
        once, logged C{DC}; the slot goes to the one behind it.
        """
        harness = Harness(self, count=1, maxConn=1)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        leaving, _ = harness.client(get(b"/leaves"))
        harness.client(get(b"/stays"))
        self.assertEqual(harness.resource.admission.queued, 2)
        harness.reactor.advance(0.5)
        leaving.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.resource.admission.queued, 1)
        self.assertIn(
            "path=/leaves \N{RIGHTWARDS ARROW} backend=- status=- ms=500.0 queued=500.0ms "
            'error="client disconnected"',
            harness.accessLog()[-1],
        )
        self.assertEqual(harness.events[-1]["flag"], "DC")
        backends.answer()
        self.assertEqual(backends.lines(), [b"GET /stays HTTP/1.1"])
        timers = [repr(call) for call in harness.reactor.getDelayedCalls()]
        self.assertEqual([t for t in timers if "Admission" in t], [])


class QueuedBodyTests(SynchronousTestCase):
    """
    A queued request's body waits with it, read only up to the usual high
    mark.
    """

    def test_bodyWaits(self) -> None:
        """
        While a POST waits in the queue, txlb reads its body up to the high
        mark, then stops reading from the client; once a backend is free,
        the whole body reaches it byte for byte, and the client is read
        again.
        """
        harness = Harness(self, count=1, maxConn=1)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        size = 4 * HIGH_WATER
        body = bytes(range(256)) * (size // 256)
        channel, client = harness.client(
            b"POST /upload HTTP/1.1\r\nHost: lb.example\r\nContent-Length: %d\r\n\r\n" % size
        )
        sent = 0
        while client.producerState == "producing" and sent < size:
            channel.dataReceived(body[sent : sent + 65536])
            sent += 65536
        self.assertEqual(client.producerState, "paused")
        self.assertEqual(sent, HIGH_WATER)
        self.assertEqual(harness.resource.admission.queued, 1)
        backends.answer()
        # The backend connection takes what waited: the client is read again.
        self.assertEqual(client.producerState, "producing")
        channel.dataReceived(body[sent:])
        backends.accept()
        (_, _, toBackend, line) = backends.pending[0]
        self.assertEqual(line, b"POST /upload HTTP/1.1")
        self.assertTrue(toBackend.value().endswith(b"\r\n\r\n" + body))
        backends.answer()
        self.assertTrue(client.value().endswith(b"\r\n\r\n/upload"))

    def test_bodyOfRefused(self) -> None:
        """
        A POST refused for a full queue is answered at once; its body is
        read and dropped, and the connection serves the next request.
        """
        harness = Harness(self, count=1, maxConn=1, maxQueue=0)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        channel, client = harness.client(
            b"POST /upload HTTP/1.1\r\nHost: lb.example\r\nContent-Length: 10\r\n\r\n01234"
        )
        self.assertIn(b"503 Service Unavailable", client.value())
        channel.dataReceived(b"56789")
        client.clear()
        backends.answer()
        channel.dataReceived(get(b"/next"))
        backends.answer()
        self.assertTrue(client.value().endswith(b"\r\n\r\n/next"), client.value())
        self.assertEqual(backends.attempts, 2)


class RetryTests(SynchronousTestCase):
    """
    Retries go through the limits too, and within the retry budget.
    """

    def test_retryWaitsForSlot(self) -> None:
        """
        A request whose backend refused the connection is retried on a
        backend below its limit, waiting for one if need be, behind the
        requests already waiting.
        """
        harness = Harness(self, maxConn=1)
        backends = Backends(harness)
        harness.client(get(b"/fails"))
        harness.client(get(b"/busy"))
        harness.client(get(b"/waiting"))
        self.assertEqual(harness.resource.admission.queued, 1)
        # /fails went to 8081, /busy to 8082.
        harness.refuse(ConnectionRefusedError())
        harness.reactor.advance(0)
        # 8081 is free again: /waiting takes it; /fails waits its turn.
        self.assertEqual(harness.resource.admission.queued, 1)
        self.assertEqual(backends.lines(), [b"GET /busy HTTP/1.1", b"GET /waiting HTTP/1.1"])
        self.assertIn(
            "Retrying GET /fails on the first backend below its limit (queued): "
            "127.0.0.1:8081 failed",
            "\n".join(harness.messages()),
        )
        backends.answer(8082)
        self.assertEqual(backends.lines(), [b"GET /waiting HTTP/1.1", b"GET /fails HTTP/1.1"])
        backends.answer()
        backends.answer()
        self.assertEqual(backends.busiest, {8081: 1, 8082: 1})

    def test_budgetWhenEveryBackendFails(self) -> None:
        """
        When every backend refuses every connection, 100 requests that may
        each be retried twice make 300 attempts without a budget; with the
        default budget (20% of the requests in flight, at least 3), the
        retries in flight stay within it, and the refused retries are
        counted.
        """
        attempts = {}
        for budget in (100.0, 20.0):
            harness = Harness(self, count=3, retryBudget=budget)
            for n in range(100):
                harness.client(get(b"/%d" % n))
            made = 0
            while harness.reactor.tcpClients:
                harness.refuse(ConnectionRefusedError())
                made += 1
                self.assertLessEqual(harness.resource.retryBudget.retries, max(budget, 3))
            harness.reactor.advance(0)
            attempts[budget] = made
            self.assertEqual(len(harness.accessLog()), 100)
            self.assertEqual(harness.resource.retryBudget.requests, 0)
            self.assertEqual(harness.resource.retryBudget.retries, 0)
        self.assertEqual(attempts[100.0], 300)
        # 100 first tries; 20 retries while 100 are in flight (the 80
        # others refused, their requests answered); when those 20 fail,
        # the budget is down to its floor, 3: 3 second retries.
        self.assertEqual(attempts[20.0], 123)
        metrics = harness.resource.metrics.exposition().decode()
        self.assertIn('txlb_retries_total{pool="default"} 23.0\n', metrics)
        self.assertIn('txlb_retries_refused_total{pool="default"} 97.0\n', metrics)
        self.assertIn("(not retried: the retry budget was spent)", harness.accessLog()[0])


class StickyTests(SynchronousTestCase):
    def test_pinnedWaits(self) -> None:
        """
        A request whose sticky cookie names a backend at its limit waits for
        that backend, as HAProxy's persistent requests wait in their
        server's queue, though another one is free.
        """
        harness = Harness(self, maxConn=1)
        sticky = harness.resource.sticky = StickyCookie("srv", harness.reactor)
        backends = Backends(harness)
        token = sticky.token(harness.backends[0])
        pinned = b"GET /%s HTTP/1.1\r\nHost: h\r\nCookie: srv=%s\r\n\r\n"
        harness.client(pinned % (b"first", token))
        harness.client(pinned % (b"second", token))
        self.assertEqual(backends.lines(), [b"GET /first HTTP/1.1"])
        self.assertEqual(harness.resource.admission.queued, 1)
        harness.client(get(b"/free"))
        backends.accept()
        self.assertEqual(sorted(entry[0] for entry in backends.pending), [8081, 8082])
        backends.answer(8081)
        self.assertEqual([entry[0] for entry in backends.pending], [8082, 8081])
        self.assertEqual(backends.pending[1][3], b"GET /second HTTP/1.1")


UPGRADE = b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


class TunnelTests(SynchronousTestCase):
    """
    An upgrade's tunnel holds a slot on its backend from start to close, and
    waits in the queue like any request.
    """

    def test_tunnelHoldsSlot(self) -> None:
        """
        While a WebSocket tunnel is open, its backend is at its limit of 1:
        the next request waits, and goes once the tunnel closes.
        """
        harness = Harness(self, count=1, maxConn=1)
        _, client = harness.client(UPGRADE)
        backend, _ = harness.backend()
        backend.dataReceived(SWITCH)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 101 "))
        harness.client(get(b"/after"))
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertEqual(harness.resource.admission.queued, 1)
        backend.connectionLost(Failure(ConnectionDone()))
        harness.reactor.advance(0)
        self.assertEqual(harness.resource.admission.queued, 0)
        self.assertEqual(len(harness.reactor.tcpClients), 1)

    def test_upgradeQueued(self) -> None:
        """
        An upgrade request that finds every backend at its limit waits, then
        connects when a slot frees; the time it waited is logged.
        """
        harness = Harness(self, count=1, maxConn=1)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        backends.accept()
        _, client = harness.client(UPGRADE)
        harness.reactor.advance(0.25)
        backends.answer()
        _, backend, toBackend = backends.connections[-1]
        self.assertTrue(toBackend.value().startswith(b"GET /chat HTTP/1.1\r\n"))
        backend.dataReceived(SWITCH)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 101 "))
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertIn("status=101 ms=250.0 queued=250.0ms", harness.accessLog()[-1])
        self.assertEqual(harness.backends[0].active, 0)

    def test_upgradeRefused(self) -> None:
        """
        Past the queue's size, an upgrade request gets 503 with
        C{Retry-After}, flag C{QF}.
        """
        harness = Harness(self, count=1, maxConn=1, maxQueue=0)
        harness.client(get(b"/first"))
        _, client = harness.client(UPGRADE)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 503 Service Unavailable\r\n"))
        self.assertIn(b"\r\nRetry-After: 1\r\n", client.value())
        self.assertEqual(harness.events[-1]["flag"], "QF")
        self.assertIn("backend=- status=503", harness.accessLog()[-1])

    def test_upgradeLeavesQueue(self) -> None:
        """
        A client that goes away while its upgrade waits leaves the queue.
        """
        harness = Harness(self, count=1, maxConn=1)
        backends = Backends(harness)
        harness.client(get(b"/first"))
        channel, _ = harness.client(UPGRADE)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.resource.admission.queued, 0)
        self.assertIn(
            'backend=- status=- ms=0.0 error="client disconnected"', harness.accessLog()[-1]
        )
        backends.answer()
        self.assertEqual(harness.reactor.tcpClients, [])


class HTTP2Tests(SynchronousTestCase):
    """
    Each HTTP/2 stream is a request: it counts, waits and leaves the queue
    as one.
    """

    def test_streamsQueued(self) -> None:
        """
        Three streams on one connection against a backend limited to one:
        one is sent, two wait, and they go in turn.
        """
        h2 = MemoryH2Client(Harness(self, count=1, maxConn=1))
        backends = Backends(h2.harness)
        streams = [h2.request(path=b"/%d" % n) for n in range(3)]
        self.assertEqual(backends.lines(), [b"GET /0 HTTP/1.1"])
        self.assertEqual(h2.harness.resource.admission.queued, 2)
        for _ in range(3):
            backends.answer()
        h2.pump()
        self.assertEqual([h2.responses[stream].status for stream in streams], [b"200"] * 3)
        self.assertEqual(backends.busiest, {8081: 1})

    def test_resetStreamLeavesQueue(self) -> None:
        """
        A stream reset while it waits leaves the queue at once.
        """
        h2 = MemoryH2Client(Harness(self, count=1, maxConn=1))
        backends = Backends(h2.harness)
        h2.request(path=b"/first")
        waiting = h2.request(path=b"/reset")
        h2.reset(waiting)
        self.assertEqual(h2.harness.resource.admission.queued, 0)
        self.assertIn("path=/reset", h2.harness.accessLog()[-1])
        self.assertEqual(h2.harness.events[-1]["flag"], "DC")
        backends.answer()
        self.assertEqual(backends.attempts, 1)

    def test_queuedBody(self) -> None:
        """
        A queued stream's body is read up to the high mark and its window
        then stays closed; once a backend is free, the whole body reaches
        it and the window opens again.
        """
        h2 = MemoryH2Client(Harness(self, count=1, maxConn=1))
        backends = Backends(h2.harness)
        h2.request(path=b"/first")
        size = 4 * HIGH_WATER
        body = bytes(range(256)) * (size // 256)
        stream = h2.request(
            fields=[(b"content-length", b"%d" % size)], method=b"POST", path=b"/upload", end=False
        )

        done = [0]

        def send() -> int:
            """
            Send as much of the body as the window lets; return how much.
            """
            sent = 0
            h2.pump()
            while done[0] < size:
                window = h2.conn.local_flow_control_window(stream)
                if not window:
                    break
                chunk = body[done[0] : done[0] + min(window, 16384)]
                h2.conn.send_data(stream, chunk, end_stream=done[0] + len(chunk) == size)
                done[0] += len(chunk)
                sent += len(chunk)
                h2.flush()
            return sent

        send()
        self.assertEqual(h2.harness.resource.admission.queued, 1)
        self.assertGreaterEqual(done[0], HIGH_WATER)
        self.assertLessEqual(done[0], HIGH_WATER + 65535)
        self.assertEqual(send(), 0)
        backends.answer()
        while done[0] < size:
            self.assertGreater(send(), 0)
        backends.accept()
        (_, _, toBackend, line) = backends.pending[0]
        self.assertEqual(line, b"POST /upload HTTP/1.1")
        self.assertTrue(toBackend.value().endswith(b"\r\n\r\n" + body))

    def test_streamRefused(self) -> None:
        """
        A stream refused by a full queue gets 503 with C{retry-after}.
        """
        h2 = MemoryH2Client(Harness(self, count=1, maxConn=1, maxQueue=0))
        h2.request(path=b"/first")
        refused = h2.request(path=b"/refused")
        self.assertEqual(h2.responses[refused].status, b"503")
        self.assertEqual(dict(h2.responses[refused].headers)[b"retry-after"], b"1")


class OptionTests(SynchronousTestCase):
    """
    C{--max-conn}, C{--max-queue}, C{--queue-timeout} and C{--retry-budget}.
    """

    def parse(self, *arguments: str) -> Options:
        options = Options()
        options.parseOptions(["--backends", "127.0.0.1:8081", *arguments])
        return options

    def test_defaults(self) -> None:
        settings = self.parse().settings()
        self.assertEqual(
            (settings.maxConn, settings.maxQueue, settings.queueTimeout, settings.retryBudget),
            (0, 1000, 5.0, 20.0),
        )

    def test_given(self) -> None:
        settings = self.parse(
            "--max-conn",
            "auto",
            "--max-queue",
            "0",
            "--queue-timeout",
            "0.5",
            "--retry-budget",
            "12.5",
        ).settings()
        self.assertEqual(
            (settings.maxConn, settings.maxQueue, settings.queueTimeout, settings.retryBudget),
            ("auto", 0, 0.5, 12.5),
        )

    def test_maxConn(self) -> None:
        for text, value in [("0", 0), ("10", 10), ("auto", "auto"), ("1000000", 1_000_000)]:
            self.assertEqual(maxConn(text), value)
        for text in ["-1", "x", "", "Auto", "1.5", "1000001", "\N{SUPERSCRIPT TWO}"]:
            e = self.assertRaises(usage.UsageError, maxConn, text)
            self.assertEqual(
                str(e),
                f"--max-conn: {text!r} is not auto or a whole number from 0 (no limit) to 1000000",
            )

    def test_retryBudget(self) -> None:
        self.assertEqual(retryBudget("20"), 20.0)
        e = self.assertRaises(usage.UsageError, retryBudget, "120")
        self.assertEqual(str(e), "--retry-budget: '120' is not a percentage from 0 to 100")

    def test_invalid(self) -> None:
        """
        Bad values end txlb at start with one line.
        """
        for arguments, message in [
            (["--max-conn", "many"], "--max-conn: 'many' is not auto or a whole number from 0"),
            (["--max-queue", "-1"], "--max-queue: '-1' is not a whole number of at least 0"),
            (["--queue-timeout", "0"], "--queue-timeout: '0' is not a positive number of seconds"),
            (["--retry-budget", "x"], "--retry-budget: 'x' is not a percentage from 0 to 100"),
        ]:
            with self.assertRaises(SystemExit) as caught:
                self.parse(*arguments)
            self.assertIn(message, str(caught.exception.code))
            self.assertNotIn("\n", str(caught.exception.code))


class ServiceTests(SynchronousTestCase):
    """
    The limits as C{makeService} builds them from a configuration file, and
    on a reload.
    """

    def test_fromFile(self) -> None:
        """
        The file's C{max-conn}, C{max-queue}, C{queue-timeout} and
        C{retry-budget} reach the admission and the budget, and a backend's
        own limit its backend.
        """
        harness = ServiceHarness(
            self,
            CONFIG.replace('"127.0.0.1:8082=2"', '"127.0.0.1:8082=2/3"')
            + "max-conn = 7\nmax-queue = 50\nqueue-timeout = 1.5\nretry-budget = 10\n",
        )
        admission = harness.resource.admission
        self.assertEqual((admission.maxConn, admission.maxQueue, admission.timeout), (7, 50, 1.5))
        self.assertEqual(harness.resource.retryBudget.percent, 10.0)
        self.assertEqual([admission.limitOf(b) for b in harness.backends], [7, 3])

    def test_reload(self) -> None:
        """
        A reload applies new limits at once: a larger one lets those waiting
        go; the queue and the counts of what is in flight go on.
        """
        harness = ServiceHarness(self, CONFIG + "max-conn = 1\n")
        backends = Backends(harness)
        for n in range(4):
            harness.client(get(b"/%d" % n))
        admission, budget = harness.resource.admission, harness.resource.retryBudget
        self.assertEqual((admission.queued, budget.requests), (2, 4))
        harness.write(CONFIG + "max-conn = 2\nretry-budget = 50\nmax-queue = 3\n")
        self.assertTrue(harness.service.reload())
        self.assertIs(harness.resource.admission, admission)
        self.assertEqual((admission.queued, admission.maxQueue, budget.percent), (0, 3, 50.0))
        self.assertEqual(len(backends.lines()), 4)
        harness.write(CONFIG.replace('"127.0.0.1:8082=2"', '"127.0.0.1:8082=2/1"'))
        self.assertTrue(harness.service.reload())
        self.assertEqual([admission.limitOf(b) for b in harness.backends], [0, 1])
        while backends.pending:
            backends.answer()
        self.assertEqual(budget.requests, 0)

    def test_status(self) -> None:
        """
        C{/status} shows the pool's queue and each backend's limit beside
        its requests in flight; C{/metrics} the queue's length.
        """
        harness = ServiceHarness(self, CONFIG + "max-conn = 1\nmax-queue = 5\n")
        for n in range(4):
            harness.client(get(b"/%d" % n))
        status = AdminAPI(harness.service, None).status()
        self.assertEqual(status["maxConn"], 1)
        self.assertEqual(
            status["queue"],
            {
                "length": 2,
                "max": 5,
                "timeout": 5.0,
                "full": 0,
                "timedOut": 0,
                "retriesRefused": 0,
            },
        )
        self.assertEqual([(b["active"], b["limit"]) for b in status["backends"]], [(1, 1)] * 2)
        metrics = harness.resource.metrics.exposition().decode()
        self.assertIn('txlb_queue_length{pool="default"} 2.0\n', metrics)

    def test_perPool(self) -> None:
        """
        The limits, the queue and the retry budget are each pool's: a
        C{[pools.NAME]} table sets its own, the others take the top
        level's; one pool's full backends leave the other's requests be,
        and C{/status} shows each pool's queue.
        """
        harness = ServiceHarness(
            self,
            'max-queue = 7\n[pools.small]\nbackends = ["127.0.0.1:9001"]\nmax-conn = 1\n'
            "retry-budget = 50\nqueue-timeout = 2\n"
            '[pools.big]\nbackends = ["127.0.0.1:9002"]\n'
            '[[routes]]\npath-prefix = "/small"\npool = "small"\n[[routes]]\npool = "big"\n',
        )
        small, big = (harness.service.pools[name].resource for name in ("small", "big"))
        self.assertEqual(
            [
                (p.admission.maxConn, p.admission.maxQueue, p.admission.timeout)
                for p in (small, big)
            ],
            [(1, 7, 2.0), (0, 7, 5.0)],
        )
        self.assertEqual([p.retryBudget.percent for p in (small, big)], [50.0, 20.0])
        for path in (b"/small/1", b"/small/2", b"/big/1", b"/big/2"):
            harness.client(get(path))
        self.assertEqual((small.admission.queued, big.admission.queued), (1, 0))
        self.assertEqual(len(Backends(harness).lines()), 3)
        status = AdminAPI(harness.service, None).status()
        self.assertEqual(
            {pool["name"]: (pool["maxConn"], pool["queue"]["length"]) for pool in status["pools"]},
            {"small": (1, 1), "big": (0, 0)},
        )


class KeepAliveClient(Protocol):
    """
    Sends C{GET /ping} on one kept-alive connection, the next as soon as
    the last is answered, until C{stop[0]} (a reactor time); records each
    status and latency.
    """

    def __init__(self, stop: list[float], results: list[tuple[int, float]]) -> None:
        self.stop = stop
        self.results = results
        self.buffer = b""
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.send()

    def send(self) -> None:
        self.sent = reactor.seconds()
        self.transport.write(b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            size = int(length.group(1)) if length else 0
            if len(rest) < size:
                return
            self.buffer = rest[size:]
            now = reactor.seconds()
            self.results.append((int(head[9:12]), now - self.sent))
            if now < self.stop[0]:
                self.send()
            else:
                self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(None)


class LoopbackTests(IntegrationTestCase):
    """
    Over loopback, against the test backend (L{BackendResource}, which
    counts the requests it has in flight): the limits hold, and C{auto}
    finds a backend's capacity.
    """

    def backends(self, count: int, resource: BackendResource) -> list[Backend]:
        site = makeBackendSite(resource)
        return [Backend("127.0.0.1", self.listen(site)) for _ in range(count)]

    async def load(self, port: int, clients: int, seconds: float) -> list[tuple[int, float]]:
        """
        C{clients} kept-alive connections sending requests one after the
        other for C{seconds}: each answer's status and latency.
        """
        stop = [reactor.seconds() + seconds]
        results: list[tuple[int, float]] = []
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        connected = [
            await connectProtocol(endpoint, KeepAliveClient(stop, results)) for _ in range(clients)
        ]
        for client in connected:
            await client.done
        return results

    async def test_backendNeverOverLimit(self) -> None:
        """
        Twenty clients in front of two backends with C{--max-conn 3}: the
        backends count at most three requests in flight each, and every
        request is answered 200.
        """
        resource = BackendResource(delays={}, capacities={})
        backends = self.backends(2, resource)
        resource.delays = {b.port: 0.02 for b in backends}
        resource.capacities = {b.port: 1000 for b in backends}
        port = self.balancer(backends)
        self.resource.settings = ProxySettings(maxConn=3)
        results = await self.load(port, 20, 1.0)
        self.assertEqual({status for status, _ in results}, {200})
        self.assertGreater(len(results), 20)
        self.assertEqual(resource.mostInFlight, {b.port: 3 for b in backends})

    async def test_fifoOverLoopback(self) -> None:
        """
        Requests that wait for a backend at its limit reach it in the order
        they came, each on a connection of its own: the backend sees
        C{/0} (which had the free slot), then C{/1} to C{/5} as it answers
        one after the other.
        """
        held: list[Any] = []

        class Holding(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> int:
                held.append(request)
                return NOT_DONE_YET

        backend = Backend("127.0.0.1", self.listen(Site(Holding())))
        port = self.balancer([backend])
        self.resource.settings = ProxySettings(maxConn=1, queueTimeout=30)
        admission = self.resource.admission
        clients = []
        for index in range(6):
            clients.append(await self.client(port, b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % index))
            # In (the first at the backend, the others queued) before the
            # next one is sent.
            await waitFor(
                lambda queued=index: held and admission.queued == queued, what=f"request {index}"
            )
        for index in range(6):
            self.assertEqual(len(held), index + 1)
            held[index].setHeader(b"content-length", b"2")
            held[index].write(b"ok")
            held[index].finish()
            await waitFor(lambda count=index + 2: len(held) == min(count, 6), what="the next")
        for client in clients:
            await waitFor(lambda answered=client: answered.received.endswith(b"ok"))
            self.assertTrue(client.received.startswith(b"HTTP/1.1 200 OK\r\n"), client.received)
        self.assertEqual([request.uri for request in held], [b"/%d" % index for index in range(6)])

    async def test_adaptiveConverges(self) -> None:
        """
        With C{--max-conn auto}, forty clients in front of a backend that
        serves 8 requests at a time in 100 ms and slows down past that: the
        limit txlb learns is between 6 and 12 from 10 s on.

        The backend, txlb and the clients share this process: the 100 ms
        keep txlb's own time (a cold PyPy's, on a busy machine) well
        within the 25% that the limit takes for the backend's queue.
        """
        resource = BackendResource(delays={}, capacities={})
        (backend,) = self.backends(1, resource)
        resource.delays = {backend.port: 0.1}
        resource.capacities = {backend.port: 8}
        port = self.balancer([backend])
        self.resource.settings = ProxySettings(maxConn="auto", queueTimeout=30)
        admission = self.resource.admission
        limits: list[tuple[float, int]] = []
        started = reactor.seconds()
        sampling = task.LoopingCall(
            lambda: limits.append((reactor.seconds() - started, admission.limitOf(backend)))
        )
        sampling.start(0.1)
        self.addCleanup(lambda: sampling.running and sampling.stop())
        results = await self.load(port, 40, 12.0)
        sampling.stop()
        settled = [limit for moment, limit in limits if moment >= 10]
        self.assertTrue(settled)
        self.assertTrue(all(6 <= limit <= 12 for limit in settled), [limit for _, limit in limits])
        self.assertEqual({status for status, _ in results}, {200})

"""
Mirroring (a route's C{mirror}): a copy of each request goes to a backend
of the mirror pool, its answer is read and dropped, and nothing of it
reaches or holds back the client's exchange.

In memory first (the whole balancer from a configuration file, backends
played by the test), then over loopback: mirrors that are slow, down or
resetting, a kept-alive client, and a large upload mirrored to a slow
mirror with the process's memory measured.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import socket
import struct
import weakref
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ResponseReceived
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import (
    OK,
    Flood,
    IntegrationTestCase,
    RawClient,
    ServiceHarness,
    TCPTransport,
    freePort,
    waitFor,
)
from txlb.flow import HIGH_WATER
from txlb.mirror import MAX_IN_FLIGHT
from txlb.service import DRAIN_POLL
from txlb.tap import Options, makeService

#: A pool for the requests, and a mirror pool of two backends.
SITE = """
listen = "tcp:8080"
algo = "roundrobin"

[pools.api]
backends = ["127.0.0.1:9001"]

[pools.shadow]
backends = ["127.0.0.1:9201", "127.0.0.1:9202"]

[[routes]]
name = "api"
pool = "api"
mirror = "shadow"
"""

#: The same site without its mirror.
WITHOUT_MIRROR = """
listen = "tcp:8080"
algo = "roundrobin"

[pools.api]
backends = ["127.0.0.1:9001"]

[[routes]]
name = "api"
pool = "api"
"""

POST = (
    b"POST /a%2Fb/../c?x=%7e&y HTTP/1.1\r\nHost: api.example.com\r\nX-One: 1\r\n"
    b"Cookie: a=1\r\nx-one: 2\r\nContent-Length: 10\r\n\r\n"
)

#: What a backend is sent for L{POST} and its body.
POST_TO_BACKEND = (
    b"POST /a%2Fb/../c?x=%7e&y HTTP/1.1\r\nContent-Length: 10\r\nHost: api.example.com\r\n"
    b"X-One: 1\r\nX-One: 2\r\nCookie: a=1\r\n\r\n0123456789"
)

GET = b"GET /item HTTP/1.1\r\nHost: h\r\n\r\n"

ERROR = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"


class MirrorSite:
    """
    The balancer of a configuration with a mirror, in memory: a client, and
    the backend connections of its request and of the copy.
    """

    def __init__(self, testCase: SynchronousTestCase, text: str = SITE) -> None:
        self.testCase = testCase
        self.harness = ServiceHarness(testCase, text)
        self.reactor = self.harness.reactor
        self.service = self.harness.service
        self.metrics = self.service.resource.metrics
        self.shadow = self.service.pools["shadow"].resource if "shadow" in text else None

    def send(self, data: bytes) -> tuple[Any, TCPTransport]:
        """
        Send C{data} on a new client connection.
        """
        return self.harness.client(data)

    def connections(self) -> list[int]:
        """
        The ports of the backend connections being made, oldest first.
        """
        return [port for _, port, *_ in self.reactor.tcpClients]

    def accept(self, port: int | None = None) -> tuple[Any, TCPTransport]:
        """
        Accept the oldest backend connection being made (to C{port}).
        """
        self._first(port)
        return self.harness.backend()

    def refuse(self, port: int) -> None:
        """
        Refuse the oldest connection being made to C{port}.
        """
        self._first(port)
        self.harness.refuse(ConnectionRefusedError())

    def _first(self, port: int | None) -> None:
        """
        Put the oldest connection being made to C{port} first.
        """
        if port is not None:
            pending = self.reactor.tcpClients
            index = self.connections().index(port)
            pending.insert(0, pending.pop(index))

    def leave(self, channel: Any) -> None:
        """
        The client closes its connection.
        """
        channel.connectionLost(Failure(ConnectionDone()))
        self.reactor.advance(0)

    def answer(self, protocol: Any, response: bytes = OK) -> None:
        protocol.dataReceived(response)
        self.reactor.advance(0)

    def sample(self, name: str, **labels: str) -> float:
        """
        The value of the metric C{name} with C{labels}, as exposed (0 if it
        is not).
        """
        wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        prefix = f"{name}{{{wanted}}} "
        for line in self.metrics.exposition().decode().splitlines():
            if line.startswith(prefix):
                return float(line[len(prefix) :])
        return 0.0

    def results(self) -> dict[str, float]:
        """
        The mirror pool's copies by result.
        """
        return {
            result: self.sample("txlb_mirror_requests_total", pool="shadow", result=result)
            for result in ("answered", "failed", "cut", "dropped")
        }

    def mirrorLog(self) -> list[str]:
        return [m for m in self.harness.messages() if m.startswith("Mirror pool")]

    def accessLog(self) -> list[dict[str, Any]]:
        return [e for e in self.harness.events if "flag" in e and "line" in e]


class CopyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.site = MirrorSite(self)

    def test_copyIsTheRequestByteForByte(self) -> None:
        """
        The mirror is sent what the request's backend is sent, byte for
        byte: the method, the raw target, the fields in order with their
        repeats, and the body as it arrives, chunk by chunk.
        """
        site = self.site
        channel, _ = site.send(POST + b"01234")
        self.assertEqual(site.connections(), [9001, 9201])
        _, toBackend = site.accept()
        _, toMirror = site.accept()
        self.assertEqual(toMirror.value(), POST_TO_BACKEND[:-5])
        channel.dataReceived(b"56789")
        self.assertEqual(toBackend.value(), POST_TO_BACKEND)
        self.assertEqual(toMirror.value(), POST_TO_BACKEND)

    def test_chunkedBodyWithTrailers(self) -> None:
        """
        A body without a length goes to the mirror chunked, as it arrives,
        with the request's trailers after it, as to the request's backend.
        """
        site = self.site
        channel, _ = site.send(
            b"PUT /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n"
            b"Trailer: X-Sum\r\n\r\n3\r\nabc\r\n"
        )
        _, toBackend = site.accept()
        _, toMirror = site.accept()
        self.assertEqual(toMirror.value(), toBackend.value())
        self.assertTrue(toMirror.value().endswith(b"\r\n\r\n3\r\nabc\r\n"), toMirror.value())
        channel.dataReceived(b"2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n")
        self.assertEqual(toMirror.value(), toBackend.value())
        self.assertTrue(toMirror.value().endswith(b"2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"))

    def test_bodylessRequest(self) -> None:
        """
        A request without a body is copied as it is sent, head alone.
        """
        site = self.site
        site.send(GET)
        _, toBackend = site.accept()
        _, toMirror = site.accept()
        self.assertEqual(toMirror.value(), GET)
        self.assertEqual(toBackend.value(), GET)

    def test_answerThrownAway(self) -> None:
        """
        The mirror's answer reaches nobody: the client has its backend's;
        the copy is counted as answered, with its status.
        """
        site = self.site
        _, client = site.send(GET)
        backend, _ = site.accept()
        mirror, _ = site.accept()
        site.answer(mirror, ERROR)
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(site.results(), {"answered": 1, "failed": 0, "cut": 0, "dropped": 0})
        self.assertEqual(site.sample("txlb_mirror_responses_total", pool="shadow", code="500"), 1.0)
        self.assertEqual(site.mirrorLog(), [])
        [event] = site.accessLog()
        self.assertEqual((event["pool"], event["status"]), ("api", 200))

    def test_mirrorConnectionKeptAlive(self) -> None:
        """
        A copy answered whole leaves its connection to the mirror for the
        next copy to the same backend.
        """
        site = self.site
        site.send(GET)
        backend, _ = site.accept(9001)
        first, _ = site.accept(9201)
        site.answer(first)
        site.answer(backend)
        site.send(GET)
        second, _ = site.accept(9202)
        site.answer(second)
        site.answer(backend)
        # The third copy, to the first mirror backend again, reuses its
        # connection, as the request reuses its backend's.
        site.send(GET)
        self.assertEqual(site.connections(), [])
        site.answer(first)
        self.assertEqual(site.results()["answered"], 3)

    def test_copiesPickedByThePoolsAlgorithm(self) -> None:
        """
        Copies are picked by the mirror pool's algorithm (round robin
        here), and count in its backends' requests in flight while they
        are.
        """
        site = self.site
        assert site.shadow is not None
        first, second = site.shadow.pool.backends
        ports = []
        for _ in range(3):
            site.send(GET)
            ports += site.connections()
            site.accept()
            site.accept()
        self.assertEqual(ports, [9001, 9201, 9001, 9202, 9001, 9201])
        self.assertEqual((first.active, second.active), (2, 1))
        self.assertEqual(site.sample("txlb_mirror_requests_in_flight", pool="shadow"), 3.0)
        self.assertEqual(
            site.sample("txlb_backend_active_requests", pool="shadow", backend="127.0.0.1:9201"),
            2.0,
        )

    def test_mirrorPercent(self) -> None:
        """
        With C{mirror-percent}, the requests whose draw falls under it are
        copied, and only those.
        """
        site = MirrorSite(self, SITE + "mirror-percent = 30\n")
        draws = iter([0.5, 0.1, 0.299, 0.3])
        site.service.resource._table._random = draws.__next__
        copied = []
        for _ in range(4):
            site.send(GET)
            copied.append(site.connections()[1:])
            while site.connections():
                site.accept()
        self.assertEqual(copied, [[], [9201], [9202], []])

    def test_upgradeNotCopied(self) -> None:
        """
        An upgrade (a WebSocket) goes to its pool alone: a copy would be a
        tunnel nobody talks through.
        """
        site = self.site
        site.send(
            b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.assertEqual(site.connections(), [9001])
        self.assertEqual(site.results(), {"answered": 0, "failed": 0, "cut": 0, "dropped": 0})

    def test_http2RequestCopied(self) -> None:
        """
        A request that came over HTTP/2 is copied as it is forwarded, as
        HTTP/1.1, its body as it arrives.
        """
        site = self.site
        site.harness.site.h2c = True
        conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        channel, client = site.send(conn.data_to_send())
        conn.send_headers(
            1,
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/up?x"),
                (b":authority", b"h"),
                (b"x-one", b"1"),
                (b"x-one", b"2"),
                (b"content-length", b"6"),
            ],
        )
        conn.send_data(1, b"abc")
        channel.dataReceived(conn.data_to_send())
        site.reactor.advance(0)
        backend, toBackend = site.accept()
        _, toMirror = site.accept()
        conn.send_data(1, b"def", end_stream=True)
        channel.dataReceived(conn.data_to_send())
        site.reactor.advance(0)
        self.assertEqual(
            toBackend.value(),
            b"POST /up?x HTTP/1.1\r\nContent-Length: 6\r\nHost: h\r\nX-One: 1\r\nX-One: 2\r\n"
            b"\r\nabcdef",
        )
        self.assertEqual(toMirror.value(), toBackend.value())
        site.answer(backend)
        events = conn.receive_data(client.value())
        [head] = [e for e in events if isinstance(e, ResponseReceived)]
        self.assertEqual(dict(head.headers)[b":status"], b"200")


class IndependenceTests(SynchronousTestCase):
    """
    Nothing the mirror does, or fails to do, reaches the client.
    """

    def setUp(self) -> None:
        self.site = MirrorSite(self)

    def test_clientNotKeptWaiting(self) -> None:
        """
        The client has its whole answer, and its exchange is over and
        logged, while the copy still waits for the mirror's; the next
        request on its kept-alive connection is forwarded and answered at
        once, copied too.
        """
        site = self.site
        channel, client = site.send(GET)
        backend, _ = site.accept()
        site.accept()
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(len(site.accessLog()), 1)
        client.clear()
        channel.dataReceived(GET)
        site.reactor.advance(0)
        # The backend connection was kept alive: the request is on it.
        self.assertEqual(site.connections(), [9202])
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(len(site.accessLog()), 2)
        self.assertEqual(site.sample("txlb_mirror_requests_in_flight", pool="shadow"), 2.0)

    def test_mirrorRefused(self) -> None:
        """
        A mirror that refuses the connection changes nothing for the
        client; the copy is counted as failed, and logged.
        """
        site = self.site
        _, client = site.send(GET)
        backend, _ = site.accept()
        site.harness.refuse(ConnectionRefusedError())
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(site.results()["failed"], 1)
        [entry] = site.mirrorLog()
        self.assertIn("Mirror pool shadow: copy failed (Connection was refused", entry)
        assert site.shadow is not None
        self.assertEqual(site.shadow.pool.backends[0].failures, 1)

    def test_mirrorResetsMidAnswer(self) -> None:
        """
        A mirror that resets the connection in the middle of its answer is
        counted as failed; the client's exchange goes on.
        """
        site = self.site
        _, client = site.send(GET)
        backend, _ = site.accept()
        mirror, _ = site.accept()
        site.answer(mirror, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        mirror.connectionLost(Failure(ConnectionLost("reset")))
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(site.results()["failed"], 1)
        [entry] = site.mirrorLog()
        self.assertIn("copy failed (response body cut short", entry)

    def test_problemsLoggedOnceAMinute(self) -> None:
        """
        Failing copies are logged at most once a minute, the next entry
        saying how many there were since.
        """
        site = self.site
        channel, _ = site.send(GET)
        backend, _ = site.accept(9001)
        site.refuse(9201)
        site.answer(backend)
        for port in (9202, 9201):
            channel.dataReceived(GET)
            site.refuse(port)
            site.answer(backend)
        self.assertEqual(len(site.mirrorLog()), 1)
        site.leave(channel)
        site.reactor.advance(60)
        channel, _ = site.send(GET)
        backend, _ = site.accept(9001)
        site.refuse(9202)
        site.answer(backend)
        self.assertEqual(site.results()["failed"], 4)
        _, second = site.mirrorLog()
        self.assertIn("(2 more mirror problems since the last entry;", second)

    def test_responseTimeout(self) -> None:
        """
        A mirror that does not answer within the mirror pool's response
        timeout (30 s) loses its copy, counted as failed; the client had
        its answer long before.
        """
        site = self.site
        channel, client = site.send(GET)
        backend, _ = site.accept()
        _, toMirror = site.accept()
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        site.leave(channel)
        site.reactor.advance(29)
        self.assertFalse(toMirror.disconnecting)
        site.reactor.advance(1)
        self.assertTrue(toMirror.disconnecting)
        self.assertEqual(site.results()["failed"], 1)
        self.assertIn("copy failed (response timeout)", site.mirrorLog()[0])

    def test_idleTimeout(self) -> None:
        """
        A mirror whose answer stops coming for the idle timeout (60 s)
        loses its copy, counted as failed.
        """
        site = self.site
        channel, _ = site.send(GET)
        backend, _ = site.accept()
        mirror, toMirror = site.accept()
        site.answer(backend)
        site.leave(channel)
        site.answer(mirror, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        site.reactor.advance(59)
        site.answer(mirror, b"def")
        site.reactor.advance(59)
        self.assertEqual(toMirror.producerState, "producing")
        site.reactor.advance(1)
        self.assertEqual(toMirror.producerState, "stopped")
        self.assertEqual(site.results()["failed"], 1)
        self.assertIn("copy failed (idle timeout)", site.mirrorLog()[0])

    def test_inFlightLimit(self) -> None:
        """
        At most L{MAX_IN_FLIGHT} copies are in flight to a pool: one more
        is dropped, counted and logged, and its request forwarded as ever;
        once a copy is over, the next request is copied again.
        """
        site = self.site
        mirrors = []
        for _ in range(MAX_IN_FLIGHT):
            site.send(GET)
            site.accept()
            mirrors.append(site.accept()[0])
        _, client = site.send(GET)
        self.assertEqual(site.connections(), [9001])
        backend, _ = site.accept()
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(site.results()["dropped"], 1)
        [entry] = site.mirrorLog()
        self.assertIn(f"copy dropped ({MAX_IN_FLIGHT} copies in flight already)", entry)
        site.answer(mirrors[0])
        site.send(GET)
        # Copied, on the connection the answered copy left (and forwarded
        # on the one the last request left).
        self.assertEqual(site.connections(), [])
        self.assertEqual(site.sample("txlb_mirror_requests_in_flight", pool="shadow"), 64.0)

    def test_slowMirrorCutNotBuffered(self) -> None:
        """
        A mirror that takes the body more slowly than the client sends it
        holds at most the high mark of it in txlb: past that its copy is
        cut, its connection closed, while the client's upload goes on at
        its backend's pace, never paused for the mirror.
        """
        site = self.site
        length = 4 * HIGH_WATER
        channel, client = site.send(
            b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % length
        )
        backend, toBackend = site.accept()
        _, toMirror = site.accept()
        # The mirror's socket is full: its connection asks for no more.
        toMirror.producer.pauseProducing()
        sent = len(toMirror.value())
        chunk = b"x" * 65536
        for _ in range(HIGH_WATER // len(chunk)):
            channel.dataReceived(chunk)
            self.assertEqual(client.producerState, "producing")
        self.assertFalse(toMirror.disconnecting)
        channel.dataReceived(chunk)
        self.assertTrue(toMirror.disconnected)
        self.assertEqual(len(toMirror.value()), sent)
        for _ in range(length // len(chunk) - HIGH_WATER // len(chunk) - 1):
            channel.dataReceived(chunk)
        self.assertEqual(client.producerState, "producing")
        self.assertEqual(len(toBackend.value().partition(b"\r\n\r\n")[2]), length)
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(site.results()["cut"], 1)
        [entry] = site.mirrorLog()
        self.assertIn(
            "copy cut (the mirror took the request body more slowly than the client sent it)",
            entry,
        )

    def test_clientLeavesMidBody(self) -> None:
        """
        A client that leaves in the middle of its body takes its copy with
        it: cut, and not logged, as the mirror did nothing wrong.
        """
        site = self.site
        channel, _ = site.send(POST + b"01234")
        site.accept()
        _, toMirror = site.accept()
        channel.connectionLost(Failure(ConnectionLost()))
        site.reactor.advance(0)
        self.assertTrue(toMirror.disconnected)
        self.assertEqual(site.results()["cut"], 1)
        self.assertEqual(site.mirrorLog(), [])

    def test_copyHoldsNoClientRequest(self) -> None:
        """
        A copy still in flight once its client's exchange is over holds
        nothing of the client: neither its request nor its body, with the
        bytes kept of it for a retry.
        """
        site = self.site
        channel, _ = site.send(POST + b"01234")
        request = weakref.ref(channel.request)
        body = weakref.ref(channel.request.stream)
        backend, _ = site.accept()
        site.accept()
        channel.dataReceived(b"56789")
        site.answer(backend)
        site.leave(channel)
        del channel
        gc.collect()
        self.assertEqual(site.sample("txlb_mirror_requests_in_flight", pool="shadow"), 1.0)
        self.assertIsNone(body())
        self.assertIsNone(request())

    def test_mirrorAnswersEarly(self) -> None:
        """
        A mirror that answers before it has the whole body has its copy
        end there (its connection closed); the rest of the body still goes
        to the request's backend.
        """
        site = self.site
        channel, client = site.send(POST + b"01234")
        backend, toBackend = site.accept()
        mirror, toMirror = site.accept()
        site.answer(mirror, b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(toMirror.disconnected)
        self.assertEqual(site.results()["answered"], 1)
        channel.dataReceived(b"56789")
        self.assertEqual(toBackend.value(), POST_TO_BACKEND)
        site.answer(backend)
        self.assertEqual(client.value(), OK)

    def test_bugStaysInTheMirror(self) -> None:
        """
        A bug in mirroring fails the copy alone: it is logged with its
        traceback and counted, and the client's exchange goes on.
        """
        site = self.site
        assert site.shadow is not None

        def broken(request: object, tried: object = ()) -> None:
            raise ZeroDivisionError("a bug")

        site.shadow.pick = broken  # type: ignore[method-assign, assignment]
        _, client = site.send(POST + b"0123456789")
        self.assertEqual(site.connections(), [9001])
        backend, _ = site.accept()
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(site.results()["failed"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        [entry] = site.mirrorLog()
        self.assertIn("copy failed (internal error)", entry)

    def test_bugOnTheAnswer(self) -> None:
        """
        A bug met when the mirror's answer comes (here, in the mirror
        pool's algorithm learning its latency) fails the copy alone: its
        connection is closed, and it is counted and logged.
        """
        site = self.site
        assert site.shadow is not None

        def broken(backend: object, seconds: float) -> None:
            raise ZeroDivisionError("a bug")

        site.shadow.answered = broken
        _, client = site.send(GET)
        backend, _ = site.accept()
        mirror, toMirror = site.accept()
        site.answer(mirror)
        self.assertEqual(toMirror.producerState, "stopped")
        site.answer(backend)
        self.assertEqual(client.value(), OK)
        self.assertEqual(site.results()["failed"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(site.sample("txlb_mirror_requests_in_flight", pool="shadow"), 0.0)


#: A mirror pool of one backend limited to one request at a time, which a
#: route also sends requests to.
LIMITED = """
listen = "tcp:8080"
algo = "roundrobin"

[pools.api]
backends = ["127.0.0.1:9001"]

[pools.shadow]
backends = ["127.0.0.1:9201"]
max-conn = 1

[[routes]]
name = "shadow"
path-prefix = "/shadow"
pool = "shadow"

[[routes]]
name = "api"
pool = "api"
mirror = "shadow"
"""


class LimitTests(SynchronousTestCase):
    def test_copyEndingWakesTheQueue(self) -> None:
        """
        A copy takes a slot of its mirror's backend like any request: a
        request of that pool waits for it, and goes as soon as the copy
        ends, not at its queue's time-out.
        """
        site = MirrorSite(self, LIMITED)
        site.send(GET)
        backend, _ = site.accept(9001)
        mirror, _ = site.accept(9201)
        _, client = site.send(b"GET /shadow/x HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(site.connections(), [])
        site.answer(mirror)
        self.assertEqual(site.connections(), [9201])
        other, _ = site.accept(9201)
        site.answer(other)
        self.assertEqual(client.value(), OK)
        site.answer(backend)

    def test_noCopyOfARequestAnsweredAtOnce(self) -> None:
        """
        A request its pool answers at once (a 503: every backend at its
        limit and no room to queue) is not copied: its body is thrown away,
        and the mirror would get a head announcing a body that never comes.
        """
        site = MirrorSite(self, SITE.replace('backends = ["127.0.0.1:9001"]\n', FULL, 1))
        site.send(GET)
        backend, _ = site.accept(9001)
        mirror, _ = site.accept()
        _, client = site.send(POST + b"01234")
        self.assertIn(b" 503 ", client.value())
        print("DEBUG", site.connections(), site.results(), site.harness.reactor.getDelayedCalls())
        self.assertEqual(site.connections(), [])
        site.answer(mirror)
        site.answer(backend)
        self.assertEqual(site.results(), {"answered": 1, "failed": 0, "cut": 0, "dropped": 0})


#: The pool C{api} of L{SITE} with one slot and no queue.
FULL = 'backends = ["127.0.0.1:9001"]\nmax-conn = 1\nmax-queue = 0\n'


class ReloadTests(SynchronousTestCase):
    def test_copyKeepsItsPoolAcrossAReload(self) -> None:
        """
        A copy in flight when a reload removes its mirror pool goes on; the
        pool drains, like any pool, once its copies are over.
        """
        site = MirrorSite(self)
        site.send(GET)
        backend, _ = site.accept()
        mirror, _ = site.accept()
        site.harness.write(WITHOUT_MIRROR)
        self.assertTrue(site.service.reload())
        [retired] = site.service._retired
        self.assertEqual(retired.name, "shadow")
        site.answer(backend)
        site.reactor.advance(DRAIN_POLL)
        self.assertEqual(site.service.inFlight(), 1)
        self.assertEqual(site.service._retired, {retired})
        site.answer(mirror)
        site.reactor.advance(DRAIN_POLL)
        self.assertEqual(site.service._retired, set())
        self.assertEqual(site.results()["answered"], 1)
        # New requests are not copied.
        site.send(GET)
        self.assertEqual(site.connections(), [])

    def test_mirrorSeriesFromTheStart(self) -> None:
        """
        A mirror pool's series show from the start, at 0; a pool no route
        mirrors to has none.
        """
        site = MirrorSite(self)
        self.assertEqual(site.results(), {"answered": 0, "failed": 0, "cut": 0, "dropped": 0})
        exposition = site.metrics.exposition().decode()
        self.assertIn('txlb_mirror_requests_in_flight{pool="shadow"} 0.0', exposition)
        self.assertNotIn('txlb_mirror_requests_total{pool="api"', exposition)
        self.assertNotIn('txlb_mirror_requests_in_flight{pool="api"', exposition)


class LoopbackBackend(Protocol):
    """
    A backend over loopback: it reads requests one after another on its
    connection (their bodies, of a C{Content-Length}, counted and dropped)
    and answers each as its factory says.
    """

    factory: BackendFactory

    def connectionMade(self) -> None:
        self.buffer = b""
        self.remaining: int | None = None
        self.factory.connections.append(self)
        if self.factory.readSize:
            self.transport.bufferSize = self.factory.readSize  # type: ignore[union-attr]
        if self.factory.mode == "slow reader":
            self.transport.pauseProducing()  # type: ignore[union-attr]
            self._reading = LoopingCall(self._readALittle)
            self._reading.start(SLOW_READ_EVERY, now=False)

    def _readALittle(self) -> None:
        """
        Read one socket's worth, then stop again: a mirror that takes its
        body slowly.
        """
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        factory = self.factory
        if factory.mode == "slow reader":
            self.transport.pauseProducing()  # type: ignore[union-attr]
        while data:
            if self.remaining is None:
                self.buffer += data
                head, found, data = self.buffer.partition(b"\r\n\r\n")
                if not found:
                    return
                self.buffer = b""
                factory.heads.append(head)
                if factory.mode == "reset":
                    # An RST, not a FIN.
                    self.transport.getHandle().setsockopt(  # type: ignore[union-attr]
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.transport.abortConnection()  # type: ignore[union-attr]
                    return
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                self.remaining = int(length.group(1)) if length else 0
            taken = min(len(data), self.remaining)
            self.remaining -= taken
            factory.bodyBytes += taken
            data = data[taken:]
            if self.remaining == 0:
                self.remaining = None
                if factory.delay:
                    reactor.callLater(factory.delay, self._answer)
                else:
                    self._answer()

    def _answer(self) -> None:
        if self.transport.connected:  # type: ignore[union-attr]
            self.transport.write(self.factory.response)  # type: ignore[union-attr]
            self.factory.answeredAt.append(reactor.seconds())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        reading = getattr(self, "_reading", None)
        if reading is not None and reading.running:
            reading.stop()
        self.factory.lost.append(reason)


class BackendFactory(Factory):
    """
    Makes L{LoopbackBackend}s, and keeps what they saw.

    @ivar mode: C{"answer"}: answer each request (after C{delay} seconds);
        C{"reset"}: reset the connection once a head is in; C{"slow
        reader"}: take the body a socket read every L{SLOW_READ_EVERY}
        seconds.
    @ivar readSize: The most a socket read takes, if not Twisted's 64 KiB.
    """

    protocol = LoopbackBackend

    def __init__(
        self, mode: str = "answer", delay: float = 0.0, response: bytes = OK, readSize: int = 0
    ) -> None:
        self.mode = mode
        self.delay = delay
        self.response = response
        self.readSize = readSize
        self.connections: list[LoopbackBackend] = []
        self.heads: list[bytes] = []
        self.bodyBytes = 0
        self.answeredAt: list[float] = []
        self.lost: list[Failure] = []


#: Seconds between two reads of a slow-reading mirror: at most 64 KiB
#: each, about 1 MiB/s.
SLOW_READ_EVERY = 0.05

#: The upload mirrored to a slow mirror over loopback.
UPLOAD_SIZE = 1024 * 1024 * 1024

#: How much the process (client, txlb and backends) may grow meanwhile: a
#: sixteenth of the upload under CPython, which frees what it drops at
#: once; an eighth under PyPy, whose GC lets garbage pile up to its next
#: major collection (40 to 55 MiB seen here) however little is kept.
UPLOAD_GROWTH = UPLOAD_SIZE // (8 if platform.python_implementation() == "PyPy" else 16)


def residentBytes() -> int:
    """
    This process's resident memory, in bytes.
    """
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class LoopbackTests(IntegrationTestCase):
    """
    Mirrors over real sockets, that answer late, are down, reset, or read
    slowly: the client's answer is the same, as soon.
    """

    def start(self, mirror: BackendFactory | None, main: BackendFactory | None = None) -> int:
        """
        Start txlb in front of C{main} (answering at once, if not given),
        mirroring every request to C{mirror} (to a port nobody listens on,
        if C{None}).

        @return: txlb's port.
        """
        self.main = main or BackendFactory()
        mainPort = self.listen(self.main)
        mirrorPort = freePort() if mirror is None else self.listen(mirror)
        port = freePort()
        path = self.mktemp()
        with open(path, "w") as file:
            file.write(
                f'listen = "tcp:{port}:interface=127.0.0.1"\n'
                f'[pools.api]\nbackends = ["127.0.0.1:{mainPort}"]\n'
                f'[pools.shadow]\nbackends = ["127.0.0.1:{mirrorPort}"]\n'
                '[[routes]]\npool = "api"\nmirror = "shadow"\n'
            )
        options = Options()
        options.parseOptions(["--config", path])
        self.service = makeService(options, reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        return port

    def results(self) -> dict[str, float]:
        site = MirrorSite.__new__(MirrorSite)
        site.metrics = self.service.resource.metrics
        return site.results()

    async def answered(self, client: RawClient, count: int = 1) -> float:
        """
        Wait for C{count} whole answers to C{client}; when the last came.
        """
        await waitFor(lambda: client.received.count(OK) >= count, what="the client's answers")
        return reactor.seconds()

    async def test_slowMirror(self) -> None:
        """
        A mirror that answers 2 s late does not hold the client's answer
        back: it comes before the mirror's, as soon as without a mirror.
        """
        mirror = BackendFactory(delay=2.0)
        port = self.start(mirror)
        sent = reactor.seconds()
        client = await self.client(port, POST + b"0123456789")
        answered = await self.answered(client)
        self.assertEqual(client.received, OK)
        self.assertEqual(mirror.answeredAt, [])
        self.assertLess(answered - sent, 1.0)
        await waitFor(lambda: self.results()["answered"] == 1, what="the copy's end")
        self.assertEqual(mirror.heads, self.main.heads)
        self.assertEqual(mirror.bodyBytes, 10)
        self.assertLess(answered, mirror.answeredAt[0])

    async def test_keptAliveClientNotHeldBack(self) -> None:
        """
        A kept-alive client's next request is forwarded and answered while
        the slow mirror still has the copy of the one before (where nginx's
        mirror holds it back).
        """
        mirror = BackendFactory(delay=2.0)
        port = self.start(mirror)
        client = await self.client(port, GET)
        await self.answered(client)
        client.transport.write(GET)
        answered = await self.answered(client, 2)
        self.assertEqual(client.received, OK + OK)
        self.assertEqual(mirror.answeredAt, [])
        self.assertEqual(len(mirror.heads), 2)
        await waitFor(lambda: self.results()["answered"] == 2, what="the copies' end")
        self.assertLess(answered, min(mirror.answeredAt))

    async def test_mirrorDown(self) -> None:
        """
        A mirror that refuses connections changes nothing for the client;
        the copy is counted as failed.
        """
        port = self.start(None)
        client = await self.client(port, POST + b"0123456789")
        await self.answered(client)
        self.assertEqual(client.received, OK)
        await waitFor(lambda: self.results()["failed"] == 1, what="the copy's failure")
        self.assertEqual(self.main.bodyBytes, 10)

    async def test_mirrorResets(self) -> None:
        """
        A mirror that resets the connection changes nothing for the client;
        the copy is counted as failed.
        """
        mirror = BackendFactory("reset")
        port = self.start(mirror)
        client = await self.client(port, POST + b"0123456789")
        await self.answered(client)
        await waitFor(lambda: self.results()["failed"] == 1, what="the copy's failure")
        self.assertEqual(client.received, OK)
        self.assertEqual(len(mirror.heads), 1)

    async def test_bodyMirroredWhileItStreams(self) -> None:
        """
        The mirror has the start of the body before the client has sent
        the rest of it.
        """
        mirror = BackendFactory()
        port = self.start(mirror)
        client = await self.client(port, POST + b"01234")
        await waitFor(lambda: mirror.bodyBytes == 5, what="the first half at the mirror")
        client.transport.write(b"56789")
        await self.answered(client)
        await waitFor(lambda: mirror.bodyBytes == 10, what="the second half at the mirror")

    async def upload(self, mirror: BackendFactory, size: int = UPLOAD_SIZE) -> tuple[float, int]:
        """
        Upload C{size} bytes through txlb, mirrored to C{mirror}, as fast
        as txlb takes them, and check its backend had them all.

        @return: How long it took, and how much this process grew
            meanwhile (the peak of its resident memory, sampled every
            50 ms, over the one before).
        """
        port = self.start(mirror)
        gc.collect()
        before = peak = residentBytes()

        def sample() -> None:
            nonlocal peak
            peak = max(peak, residentBytes())

        sampling = LoopingCall(sample)
        sampling.start(0.05)
        started = reactor.seconds()
        client = await self.client(
            port, b"PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size
        )
        Flood(client.transport, size)
        await waitFor(lambda: OK in client.received, 300, "the upload's answer")
        took = reactor.seconds() - started
        sampling.stop()
        sample()
        self.assertEqual(client.received, OK)
        self.assertEqual(self.main.bodyBytes, size)
        return took, peak - before

    async def test_uploadToSlowMirrorInBoundedMemory(self) -> None:
        """
        An upload of L{UPLOAD_SIZE} mirrored to a mirror that reads about
        1 MiB/s grows the process by less than L{UPLOAD_GROWTH}: the copy
        is cut once the mirror is a high mark behind, and the upload goes
        on at its backend's pace.
        """
        mirror = BackendFactory("slow reader")
        took, growth = await self.upload(mirror)
        self.assertLess(growth, UPLOAD_GROWTH)
        self.assertEqual(self.results()["cut"], 1)
        self.assertLess(mirror.bodyBytes, UPLOAD_SIZE // 8)
        print(f"{UPLOAD_SIZE >> 20} MiB in {took:.1f} s, growth {growth / 2**20:.1f} MiB")

    async def test_uploadMirroredWhole(self) -> None:
        """
        A mirror that keeps up gets a whole upload (a quarter of
        L{UPLOAD_SIZE}) as it streams, in bounded memory, and its answer
        ends the copy.

        (Keeping up, here in the process that sends the upload, is reading
        more at each turn of the reactor than the client sends: a mirror
        that can never take more than it is sent never makes up a lag, and
        is cut at the first.)
        """
        mirror = BackendFactory(readSize=1024 * 1024)
        size = UPLOAD_SIZE // 4
        took, growth = await self.upload(mirror, size)
        await waitFor(lambda: self.results()["answered"] == 1, what="the copy's end")
        self.assertEqual(mirror.bodyBytes, size)
        self.assertLess(growth, UPLOAD_GROWTH)
        print(f"{size >> 20} MiB in {took:.1f} s, growth {growth / 2**20:.1f} MiB")

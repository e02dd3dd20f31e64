"""
Retries, timeouts, health and limits, in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import OK, Harness

GET = b"GET /item HTTP/1.1\r\nHost: h\r\n\r\n"
POST = b"POST /order HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nid=42"


class RetryTests(SynchronousTestCase):
    """
    A failed attempt goes to another backend when that cannot duplicate
    anything.
    """

    def test_refusedRetriedElsewhere(self) -> None:
        """
        A refused connection is retried on the next backend, which gets the
        request byte for byte; the client gets its answer, and the retry is
        logged.
        """
        harness = Harness(self, count=3)
        _, client = harness.client(POST)
        harness.refuse(ConnectionRefusedError())
        backend, toBackend = harness.backend()
        self.assertEqual(backend.transport.getPeer().port, 8082)
        self.assertEqual(
            toBackend.value(),
            b"POST /order HTTP/1.1\r\nContent-Length: 5\r\nHost: h\r\n\r\nid=42",
        )
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual([b.active for b in harness.backends], [0, 0, 0])
        self.assertIn(
            "Retrying POST /order on 127.0.0.1:8082: 127.0.0.1:8081 failed",
            " ".join(harness.messages()),
        )

    def test_retriesLimited(self) -> None:
        """
        At most C{retries} more backends are tried, each once, and the last
        failure is the answer.
        """
        harness = Harness(self, count=4, retries=2)
        _, client = harness.client(GET)
        for _ in range(3):
            harness.refuse(ConnectionRefusedError())
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertIn(b"backend 127.0.0.1:8083:", client.value())
        self.assertEqual([b.active for b in harness.backends], [0, 0, 0, 0])

    def test_sameBackendWhenAlone(self) -> None:
        """
        With one backend, a retry goes to it again.
        """
        harness = Harness(self, count=1, retries=1)
        _, client = harness.client(GET)
        harness.refuse(ConnectionRefusedError())
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_idempotentRetriedAfterSending(self) -> None:
        """
        A GET whose backend closed before answering is retried.
        """
        harness = Harness(self)
        _, client = harness.client(GET)
        first, _ = harness.backend()
        first.connectionLost(Failure(ConnectionLost()))
        second, toSecond = harness.backend()
        self.assertEqual(toSecond.value(), b"GET /item HTTP/1.1\r\nHost: h\r\n\r\n")
        second.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_postNotRetriedAfterSending(self) -> None:
        """
        A POST whose backend closed before answering is not sent again: it
        may have been acted on.
        """
        harness = Harness(self)
        _, client = harness.client(POST)
        first, _ = harness.backend()
        first.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_retryNonIdempotent(self) -> None:
        """
        With C{retryNonIdempotent} a POST is retried too, body and all.
        """
        harness = Harness(self, retryNonIdempotent=True)
        harness.client(POST)
        first, _ = harness.backend()
        first.connectionLost(Failure(ConnectionLost()))
        _, toSecond = harness.backend()
        self.assertTrue(toSecond.value().endswith(b"\r\n\r\nid=42"))

    def test_notRetriedAfterResponseBytes(self) -> None:
        """
        Once response bytes went to the client, a failure is not retried.
        """
        harness = Harness(self)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertTrue(client.disconnected)


class TimeoutTests(SynchronousTestCase):
    """
    Every wait has an end and a clear outcome.
    """

    def test_connectTimeoutRetried(self) -> None:
        """
        A connect timeout sent nothing, so another backend is tried.
        """
        harness = Harness(self)
        _, client = harness.client(POST)
        harness.refuse(TimeoutError())
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_responseTimeout(self) -> None:
        """
        No response head within the response timeout gets a POST 504, not
        retried, and the backend connection is closed.
        """
        harness = Harness(self, responseTimeout=30)
        _, client = harness.client(POST)
        _, toBackend = harness.backend()
        harness.reactor.advance(29.9)
        self.assertEqual(client.value(), b"")
        harness.reactor.advance(0.1)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 504 Gateway Time-out\r\n"))
        self.assertIn(b"response timeout", client.value())
        self.assertTrue(toBackend.disconnecting)
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertEqual(harness.backends[0].failures, 1)
        self.assertEqual(harness.backends[0].active, 0)

    def test_responseTimeoutRetried(self) -> None:
        """
        A GET whose backend sends no response head in time is retried on
        another backend.
        """
        harness = Harness(self, responseTimeout=30)
        _, client = harness.client(GET)
        _, toFirst = harness.backend()
        harness.reactor.advance(30)
        self.assertTrue(toFirst.disconnecting)
        second, toSecond = harness.backend()
        self.assertEqual(toSecond.value(), b"GET /item HTTP/1.1\r\nHost: h\r\n\r\n")
        second.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_idleTimeout(self) -> None:
        """
        A body that stalls for the idle timeout aborts both connections.
        """
        harness = Harness(self, idleTimeout=60)
        _, client = harness.client(GET)
        backend, toBackend = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        harness.reactor.advance(59)
        backend.dataReceived(b"def")
        harness.reactor.advance(59)
        self.assertFalse(client.disconnected)
        harness.reactor.advance(1)
        self.assertTrue(client.disconnected)
        self.assertEqual(toBackend.producerState, "stopped")
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn('error="idle timeout"', harness.accessLog()[-1])

    def test_slowHeaders(self) -> None:
        """
        A client dribbling its request head is answered 408 and cut at the
        client timeout, however often it sends a byte, and no backend is
        involved.
        """
        harness = Harness(self, clientTimeout=30)
        channel, client = harness.client(b"G")
        for byte in b"ET / HTTP/1.1\r\nHost: h\r\nX-A: ":
            harness.reactor.advance(1)
            channel.dataReceived(bytes([byte]))
        harness.reactor.advance(30)
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        self.assertTrue(client.disconnecting)
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertIn(
            "method=GET path=/ \N{RIGHTWARDS ARROW} backend=- status=408", harness.accessLog()[0]
        )

    def test_slowRequestLine(self) -> None:
        """
        A request line still incomplete when its first bytes have been read
        starts the head deadline too.
        """
        harness = Harness(self, clientTimeout=30)
        _, client = harness.client(b"GET /slow")
        harness.reactor.advance(30)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n"))

    def test_noDeadlineAfterAnswer(self) -> None:
        """
        A request answered at once (here txlb's own 400) leaves no head
        deadline behind: the idle connection is closed at the client
        timeout without a 408.
        """
        harness = Harness(self, clientTimeout=30)
        _, client = harness.client(b"GET / HTTP/1.1\r\n\r\n")
        answered = client.value()
        self.assertTrue(answered.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        harness.reactor.advance(30)
        self.assertEqual(client.value(), answered)
        self.assertTrue(client.disconnecting)

    def test_idleKeepAlive(self) -> None:
        """
        A kept-alive connection with no request is closed after the client
        timeout.
        """
        harness = Harness(self, clientTimeout=30)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        harness.reactor.advance(29)
        self.assertFalse(client.disconnecting)
        harness.reactor.advance(1)
        self.assertTrue(client.disconnecting)

    def test_longRequestNotIdle(self) -> None:
        """
        A client whose request takes longer than the client timeout to
        answer is not idle: it gets its response, and the idle timeout
        counts again from the end of it.
        """
        harness = Harness(self, clientTimeout=30, responseTimeout=60)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        harness.reactor.advance(45)
        self.assertFalse(client.disconnecting)
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        harness.reactor.advance(29)
        self.assertFalse(client.disconnecting)
        harness.reactor.advance(1)
        self.assertTrue(client.disconnecting)

    def test_oneIdleTimerPerConnection(self) -> None:
        """
        A request on a kept-alive connection schedules its exchange's timer
        and nothing else: the connection's idle timer is paused and moved
        on, not cancelled and made again, as Twisted would per request.
        """
        harness = Harness(self, count=1, clientTimeout=30)
        scheduled = []
        callLater = harness.reactor.callLater

        def recording(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
            scheduled.append(f.__name__)
            return callLater(delay, f, *args, **kwargs)

        harness.reactor.callLater = recording  # type: ignore[method-assign]
        channel, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        del scheduled[:]
        channel.dataReceived(GET)
        backend.dataReceived(OK)
        self.assertEqual(scheduled, ["_timedOut"])
        self.assertEqual(client.value().count(b"HTTP/1.1 200 OK\r\n"), 2)

    def test_deadlineOnlyForHead(self) -> None:
        """
        The head deadline stops once the head is in, so a slow backend is
        not cut by it.
        """
        harness = Harness(self, clientTimeout=30)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        harness.reactor.advance(29)
        backend.dataReceived(OK)
        harness.reactor.advance(5)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))


class PassiveHealthTests(SynchronousTestCase):
    """
    Failures seen on real traffic take a backend out.
    """

    def test_outAfterFailures(self) -> None:
        """
        After max-fails failures in a row, a backend gets no requests until
        the fail timeout has passed; then one request probes it, and its
        success brings it back.
        """
        harness = Harness(self, retries=0)
        harness.pool.failTimeout = 10
        connections: dict[int, Any] = {}

        def request(port: int, refused: bool = False) -> None:
            harness.client(GET)
            if harness.reactor.tcpClients:
                self.assertEqual(harness.reactor.tcpClients[0][1], port)
                if refused:
                    harness.refuse(ConnectionRefusedError())
                    return
                connections[port], _ = harness.backend()
            self.assertFalse(refused, "a refusal needs a new connection")
            connections[port].dataReceived(OK)

        for port, refused in [(8081, True), (8082, False)] * 3:
            request(port, refused)
        self.assertEqual(harness.backends[0].failures, 3)
        for _ in range(3):
            request(8082)
        harness.reactor.advance(10)
        request(8081)
        self.assertEqual(harness.backends[0].failures, 0)
        request(8082)
        request(8081)


class LimitTests(SynchronousTestCase):
    """
    Request bodies over the limit are refused before they are read.
    """

    def test_contentLengthTooLarge(self) -> None:
        """
        A Content-Length over the limit gets 413 at once, and the connection
        is closed; no backend is involved.
        """
        harness = Harness(self, maxBodySize=4)
        _, client = harness.client(POST)
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        self.assertEqual(harness.reactor.tcpClients, [])

    def test_chunkedTooLarge(self) -> None:
        """
        A chunked body that grows over the limit gets 413.
        """
        harness = Harness(self, maxBodySize=4)
        _, client = harness.client(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
        )
        self.assertTrue(client.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n"))
        self.assertTrue(client.disconnecting)

    def test_refusedLogged(self) -> None:
        """
        Each refusal gets its one access-log line and is counted: before
        the request is forwarded, and after (a chunked body growing too
        large).
        """
        harness = Harness(self, maxBodySize=4)
        harness.client(POST)
        channel, _ = harness.client(
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n"
        )
        channel.connectionLost(Failure(ConnectionDone()))
        lines = harness.accessLog()
        self.assertEqual(len(lines), 2)
        self.assertIn("method=POST path=/order \N{RIGHTWARDS ARROW} backend=- status=413", lines[0])
        self.assertIn('status=413 ms=0.0 error="a body over 4 bytes"', lines[1])
        self.assertIn(
            b'txlb_requests_total{backend="-",code="413",pool="-"} 1.0',
            harness.resource.metrics.exposition(),
        )

    def test_atLimit(self) -> None:
        """
        A body of exactly the limit passes.
        """
        harness = Harness(self, maxBodySize=5)
        harness.client(POST)
        _, toBackend = harness.backend()
        self.assertTrue(toBackend.value().endswith(b"id=42"))


class ForwardingHeaderTests(SynchronousTestCase):
    """
    The optional forwarding headers, off by default.
    """

    def forwarded(self, **settings: bool) -> bytes:
        harness = Harness(self, **settings)
        harness.client(
            b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n"
        )
        _, toBackend = harness.backend()
        return toBackend.value()

    def test_offByDefault(self) -> None:
        """
        Without options nothing is added.
        """
        self.assertEqual(
            self.forwarded(),
            b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n",
        )

    def test_forwardedFor(self) -> None:
        """
        The client is appended to X-Forwarded-For; proto and host are set.
        """
        self.assertEqual(
            self.forwarded(forwardedFor=True),
            b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 192.0.2.1, 10.0.0.7\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: shop.example\r\n\r\n",
        )

    def test_forwarded(self) -> None:
        """
        An RFC 7239 element for this hop is appended.
        """
        self.assertIn(
            b"\r\nForwarded: for=10.0.0.7;proto=http;host=shop.example\r\n",
            self.forwarded(forwarded=True),
        )

    def test_via(self) -> None:
        """
        This hop is appended to Via.
        """
        self.assertIn(b"\r\nVia: 1.1 txlb\r\n", self.forwarded(via=True))


class DrainTests(SynchronousTestCase):
    """
    What a graceful stop relies on.
    """

    def test_inFlight(self) -> None:
        """
        A request counts as in flight until it has ended.
        """
        harness = Harness(self)
        harness.client(GET)
        self.assertEqual(harness.resource.inFlight(), 1)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertEqual(harness.resource.inFlight(), 0)

    def test_busyWithHalfAHead(self) -> None:
        """
        A client connection whose request head is still arriving keeps the
        site busy, so a graceful stop waits for it; an idle one does not.
        """
        harness = Harness(self)
        channel, _ = harness.client(b"POST /x HTTP/1.1\r\nHost: h\r\n")
        self.assertTrue(harness.site.busy())
        channel.dataReceived(b"Content-Length: 0\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertFalse(harness.site.busy())

    def test_closeIdleConnections(self) -> None:
        """
        Idle kept-alive connections close at once; busy ones after their
        response.
        """
        harness = Harness(self)
        _, idleClient = harness.client(GET)
        first, _ = harness.backend()
        first.dataReceived(OK)
        _, busyClient = harness.client(GET)
        second, _ = harness.backend()
        harness.site.closeIdleConnections()
        self.assertTrue(idleClient.disconnecting)
        self.assertFalse(busyClient.disconnecting)
        second.dataReceived(OK)
        self.assertTrue(busyClient.value().endswith(b"\r\n\r\nok"))
        self.assertTrue(busyClient.disconnecting)

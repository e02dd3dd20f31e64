"""
txlb's own backend client (L{txlb.client}) through the proxy: what a
backend's malformed, interim, keep-alive, close-delimited or vanishing
answers make of the client's response, and how the pool keeps, reuses and
closes backend connections.  In memory, with the harness of
L{tests.test_proxy}, checked byte for byte; then over real loopback sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import LoopingCall
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from tests import helpers
from tests.helpers import (
    OK,
    OK_TO_CLIENT,
    Harness,
    IntegrationTestCase,
    RawBackendConnection,
    RawClient,
    TCPTransport,
)
from txlb.backend import Backend

DATE = b"Sat, 01 Jan 2000 00:00:00 GMT"
GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def accessEvents(harness: Harness) -> list[dict[str, Any]]:
    """
    The access-log events, with their fields (C{flag}, C{error}, ...).
    """
    return [
        event
        for event in harness.events
        if event.get("log_namespace") == "txlb.proxy.LoadBalancerResource" and "flag" in event
    ]


def badGateway(reason: str) -> bytes:
    """
    The 502 txlb answers for a malformed response from the first backend.
    """
    body = f"502 Bad Gateway: backend 127.0.0.1:8081: malformed response: {reason}\n".encode()
    return (
        b"HTTP/1.1 502 Bad Gateway\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (DATE, len(body), body)
    )


class RecordingTransport(TCPTransport):
    """
    A string transport that also keeps each C{write} (and C{writeSequence})
    apart.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.writes.append(b"".join(data))
        super().writeSequence(data)


class FixedDate:
    """
    Mixin: txlb's own answers carry a fixed C{Date}, so they can be checked
    byte for byte.
    """

    def setUp(self) -> None:
        self.patch(http, "datetimeToString", lambda *args: DATE)


class MalformedResponseTests(FixedDate, SynchronousTestCase):
    """
    A malformed response gets the client a 502 that says why, closes that
    backend connection, is logged with flag C{UPE}, and is not retried.
    """

    def assertMalformed(self, response: bytes, reason: str) -> None:
        harness = Harness(self, count=2)
        _, client = harness.client(GET)
        backend, toBackend = harness.backend()
        backend.dataReceived(response)
        self.assertEqual(client.value(), badGateway(reason))
        self.assertTrue(toBackend.disconnected)
        # Not retried: no connection to the second backend.
        self.assertEqual(harness.reactor.tcpClients, [])
        [event] = accessEvents(harness)
        self.assertEqual(
            (event["status"], event["flag"], event["error"], event["retries"]),
            (502, "UPE", f"malformed response: {reason}", 0),
        )

    def test_http2StatusLine(self) -> None:
        """
        A status line with a version other than HTTP/1.x is refused.
        """
        self.assertMalformed(
            b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "a status line that is not HTTP/1.x: b'HTTP/2.0 200 OK'",
        )

    def test_nulInField(self) -> None:
        """
        A NUL in a field value is refused.
        """
        self.assertMalformed(
            b"HTTP/1.1 200 OK\r\nX-N: a\x00b\r\nContent-Length: 2\r\n\r\nok",
            "a control character in field X-N",
        )

    def test_contentLengthAndTransferEncoding(self) -> None:
        """
        Both Content-Length and Transfer-Encoding (a smuggling vector) are
        refused.
        """
        self.assertMalformed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        )

    def test_differingContentLengths(self) -> None:
        """
        Two Content-Length fields with different values are refused.
        """
        self.assertMalformed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
            "differing Content-Length values",
        )

    def test_obsFold(self) -> None:
        """
        A folded field line (obs-fold) is refused.
        """
        self.assertMalformed(
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  continued\r\nContent-Length: 2\r\n\r\nok",
            "a folded field line (obs-fold)",
        )

    def test_switchingProtocolsUnasked(self) -> None:
        """
        A 101 to a request that asked for no upgrade is refused.
        """
        self.assertMalformed(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "101 Switching Protocols to a request without Upgrade",
        )

    def test_headOver64KiB(self) -> None:
        """
        A response head that never ends is refused with the piece that
        takes it over 64 KiB, without waiting for more; up to then nothing
        is answered (a head under the limit may still end).
        """
        harness = Harness(self, count=2)
        _, client = harness.client(GET)
        backend, toBackend = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\n")
        received = len(b"HTTP/1.1 200 OK\r\n")
        piece = b"X-Filler: " + b"a" * 988 + b"\r\n"
        while received + len(piece) <= 64 * 1024:
            backend.dataReceived(piece)
            received += len(piece)
            self.assertEqual(client.value(), b"")
        backend.dataReceived(piece)
        self.assertEqual(client.value(), badGateway("a response head over 64 KiB"))
        self.assertTrue(toBackend.disconnected)
        self.assertEqual(harness.reactor.tcpClients, [])
        [event] = accessEvents(harness)
        self.assertEqual(
            (event["flag"], event["error"]),
            ("UPE", "malformed response: a response head over 64 KiB"),
        )

    def test_badChunkSizeAfterHead(self) -> None:
        """
        A bad chunk size once the head went out aborts the client
        connection after the chunks before it, with no last chunk; the
        backend connection is closed and the line says C{UPE}.
        """
        harness = Harness(self)
        _, client = harness.client(GET)
        backend, toBackend = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 200 OK\r\nDate: %s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" % DATE
        )
        backend.dataReceived(b"zz\r\nmore\r\n0\r\n\r\n")
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 200 OK\r\nDate: %s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n" % DATE,
        )
        self.assertTrue(client.disconnected)
        self.assertTrue(toBackend.disconnected)
        [event] = accessEvents(harness)
        self.assertEqual(
            (event["status"], event["flag"], event["error"]),
            (200, "UPE", "backend body cut short: a malformed chunk size b'zz'"),
        )


class InterimResponseTests(SynchronousTestCase):
    """
    Interim (1xx) responses reach the clients that can take them.
    """

    EARLY_HINTS = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n"
        b"Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Link: </app.js>; rel=preload\r\n\r\n"
    )

    def test_earlyHintsRelayed(self) -> None:
        """
        A 103 reaches an HTTP/1.1 client as soon as it arrives, before the
        final response, with its Link fields and without its hop-by-hop
        ones.
        """
        harness = Harness(self)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(self.EARLY_HINTS)
        hints = (
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n"
            b"Link: </app.js>; rel=preload\r\n\r\n"
        )
        self.assertEqual(client.value(), hints)
        backend.dataReceived(OK)
        self.assertEqual(client.value(), hints + OK_TO_CLIENT)

    def test_earlyHintsAsSent(self) -> None:
        """
        A 103's fields keep the backend's order and spelling, as a final
        response's do: Twisted's channel would group them by name and
        respell them.
        """
        harness = Harness(self)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 103 Hints\r\nlink: </a.css>\r\nX-Trace: 7\r\nLINK: </b.js>\r\n\r\n"
        )
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 103 Hints\r\nlink: </a.css>\r\nX-Trace: 7\r\nLINK: </b.js>\r\n\r\n",
        )

    def test_earlyHintsNotToHTTP10(self) -> None:
        """
        An HTTP/1.0 client, which knows no interim responses, gets only the
        final one.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.0\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(self.EARLY_HINTS + OK)
        self.assertEqual(
            client.value(), b"HTTP/1.0 200 OK\r\nDate: %s\r\nContent-Length: 2\r\n\r\nok" % DATE
        )

    def test_continueNotRelayed(self) -> None:
        """
        A backend's C{100 Continue} is not passed on: Twisted's server has
        answered the client's C{Expect} itself.
        """
        harness = Harness(self)
        _, client = harness.client(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
        self.assertEqual(client.value(), OK_TO_CLIENT)


class ResponseFieldTests(SynchronousTestCase):
    """
    The response fields the client gets, and its framing.
    """

    def relay(self, response: bytes, request: bytes = GET) -> bytes:
        harness = Harness(self)
        _, client = harness.client(request)
        backend, _ = harness.backend()
        backend.dataReceived(response)
        return client.value()

    def test_connectionNamedFieldsRemoved(self) -> None:
        """
        The fields a response's C{Connection} names go, with C{Connection}
        and C{Keep-Alive}; the others stay, in order, repeats included.
        """
        received = self.relay(
            b"HTTP/1.1 200 OK\r\nDate: %s\r\nConnection: X-Hop, keep-alive, x-other-hop\r\n"
            b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"X-Other-Hop: 2\r\nX-Kept: 3\r\nContent-Length: 2\r\n\r\nok" % DATE
        )
        self.assertEqual(
            received,
            b"HTTP/1.1 200 OK\r\nDate: %s\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"X-Kept: 3\r\nContent-Length: 2\r\n\r\nok" % DATE,
        )

    def test_notModifiedKeepsContentLength(self) -> None:
        """
        A 304 keeps the Content-Length the backend stated, and has no body.
        """
        response = b"HTTP/1.1 304 Not Modified\r\nDate: %s\r\nContent-Length: 1234\r\n\r\n" % DATE
        self.assertEqual(self.relay(response), response)

    def test_headKeepsContentLength(self) -> None:
        """
        A response to HEAD keeps the backend's Content-Length, and has no
        body.
        """
        response = b"HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Length: 1234\r\n\r\n" % DATE
        self.assertEqual(self.relay(response, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"), response)

    def test_noContentHasNoLength(self) -> None:
        """
        A 204 gets no Content-Length, even if the backend sent one.
        """
        self.assertEqual(
            self.relay(b"HTTP/1.1 204 No Content\r\nDate: %s\r\nContent-Length: 0\r\n\r\n" % DATE),
            b"HTTP/1.1 204 No Content\r\nDate: %s\r\n\r\n" % DATE,
        )


class ReuseTests(FixedDate, SynchronousTestCase):
    """
    A backend connection carries the next request only when its last
    response was complete and let it.
    """

    def firstThenSecond(self, response: bytes, close: bool = False) -> tuple[Harness, Any]:
        """
        Answer a first request with C{response} (then close the connection
        cleanly if C{close}), and send a second request to the same
        backend; return the harness and the first connection's transport,
        holding what it got after the first request.
        """
        harness = Harness(self, count=1)
        harness.client(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, toBackend = harness.backend()
        backend.dataReceived(response)
        if close:
            backend.connectionLost(Failure(ConnectionDone()))
        toBackend.clear()
        harness.client(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        return harness, toBackend

    def assertReused(self, harness: Harness, toBackend: Any) -> None:
        self.assertEqual(toBackend.value(), b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertFalse(toBackend.disconnecting)
        self.assertEqual(harness.reactor.tcpClients, [])

    def assertNotReused(self, harness: Harness, toBackend: Any) -> None:
        self.assertEqual(toBackend.value(), b"")
        self.assertEqual(len(harness.reactor.tcpClients), 1)
        _, second = harness.backend()
        self.assertEqual(second.value(), b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_reusedAfterCompleteResponse(self) -> None:
        """
        After a complete HTTP/1.1 response the next request goes down the
        same connection.
        """
        self.assertReused(*self.firstThenSecond(OK))

    def test_reusedAfterChunkedResponse(self) -> None:
        """
        After a complete chunked response, too.
        """
        self.assertReused(
            *self.firstThenSecond(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            )
        )

    def test_reusedAfterHTTP10KeepAlive(self) -> None:
        """
        An HTTP/1.0 response with C{Connection: keep-alive} and a
        Content-Length leaves the connection reusable.
        """
        self.assertReused(
            *self.firstThenSecond(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
            )
        )

    def test_notReusedAfterConnectionClose(self) -> None:
        """
        A response with C{Connection: close} ends that connection.
        """
        harness, toBackend = self.firstThenSecond(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertTrue(toBackend.disconnecting)
        self.assertNotReused(harness, toBackend)

    def test_notReusedAfterHTTP10(self) -> None:
        """
        An HTTP/1.0 response without keep-alive ends that connection.
        """
        harness, toBackend = self.firstThenSecond(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(toBackend.disconnecting)
        self.assertNotReused(harness, toBackend)

    def test_notReusedAfterCloseDelimitedBody(self) -> None:
        """
        A body ended by the backend closing leaves nothing to reuse.
        """
        self.assertNotReused(
            *self.firstThenSecond(b"HTTP/1.1 200 OK\r\n\r\nok", close=True),
        )

    def test_notReusedAfterMalformedResponse(self) -> None:
        """
        A connection that carried a malformed response is closed.
        """
        harness, toBackend = self.firstThenSecond(b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertTrue(toBackend.disconnected)
        self.assertNotReused(harness, toBackend)

    def test_notReusedAfterExtraBytes(self) -> None:
        """
        Bytes after the end of the body, which nobody asked for, make the
        connection untrustworthy: it is closed.
        """
        harness, toBackend = self.firstThenSecond(OK + b"HTTP/1.1 200 OK\r\n")
        self.assertTrue(toBackend.disconnected)
        self.assertNotReused(harness, toBackend)

    def test_notReusedAfterExtraChunkedBytes(self) -> None:
        """
        Bytes after the last chunk close the connection too.
        """
        harness, toBackend = self.firstThenSecond(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nextra"
        )
        self.assertTrue(toBackend.disconnected)
        self.assertNotReused(harness, toBackend)


class IdleConnectionTests(SynchronousTestCase):
    """
    Idle backend connections are kept for a while, and not too many.
    """

    def pooled(self, harness: Harness) -> tuple[Any, Any]:
        """
        Send a request, answer it, and return the protocol and transport of
        the pooled connection it leaves.
        """
        harness.client(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, toBackend = harness.backend()
        backend.dataReceived(OK)
        toBackend.clear()
        return backend, toBackend

    def test_expiredClosed(self) -> None:
        """
        A connection idle for longer than C{idleTimeout} is closed by the
        sweep, and the next request makes a new one.
        """
        harness = Harness(self, count=1)
        _, toBackend = self.pooled(harness)
        harness.reactor.advance(harness.backendClient.idleTimeout - 0.1)
        self.assertFalse(toBackend.disconnecting)
        harness.reactor.advance(0.2)
        self.assertTrue(toBackend.disconnecting)
        harness.client(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(toBackend.value(), b"")
        self.assertEqual(len(harness.reactor.tcpClients), 1)

    def test_freshReused(self) -> None:
        """
        A connection idle for less than C{idleTimeout} is reused.
        """
        harness = Harness(self, count=1)
        _, toBackend = self.pooled(harness)
        harness.reactor.advance(harness.backendClient.idleTimeout - 0.1)
        harness.client(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(toBackend.value(), b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(harness.reactor.tcpClients, [])

    def test_expiredBeforeSweep(self) -> None:
        """
        A connection idle for too long is not reused even when the sweep has
        not run yet (a busy reactor): it is closed, and a new one is made.
        """
        harness = Harness(self, count=1)
        _, toBackend = self.pooled(harness)
        # Time passes, but the sweep's turn has not come yet.
        harness.reactor.rightNow += harness.backendClient.idleTimeout + 0.1
        harness.client(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(toBackend.value(), b"")
        self.assertTrue(toBackend.disconnected)
        self.assertEqual(len(harness.reactor.tcpClients), 1)

    def test_sweepFollowsLaterConnections(self) -> None:
        """
        The sweep comes back for a connection pooled after it was
        scheduled, once that one has been idle too long.
        """
        harness = Harness(self, count=1)
        backend, first = self.pooled(harness)
        harness.reactor.advance(1.0)
        harness.client(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.client(b"GET /3 HTTP/1.1\r\nHost: h\r\n\r\n")
        other, second = harness.backend()
        backend.dataReceived(OK)
        other.dataReceived(OK)
        # Both pooled at 1.0 now; the first sweep, due at 1.5, finds none
        # expired.
        harness.reactor.advance(0.6)
        self.assertEqual((first.disconnecting, second.disconnecting), (False, False))
        harness.reactor.advance(harness.backendClient.idleTimeout)
        self.assertEqual((first.disconnecting, second.disconnecting), (True, True))

    def test_maxIdle(self) -> None:
        """
        At most C{maxIdle} connections are kept per backend: one more that
        finishes is closed, and of the next requests, only the ones beyond
        C{maxIdle} need a new connection.
        """
        harness = Harness(self, count=1)
        harness.backendClient.maxIdle = 2
        for _ in range(3):
            harness.client(GET)
        accepted = [harness.backend() for _ in range(3)]
        for backend, _ in accepted:
            backend.dataReceived(OK)
        self.assertEqual([t.disconnected for _, t in accepted], [False, False, True])
        for _ in range(3):
            harness.client(GET)
        self.assertEqual(len(harness.reactor.tcpClients), 1)


class StaleConnectionTests(FixedDate, SynchronousTestCase):
    """
    A pooled connection the backend closed as the request went out.
    """

    def test_getResent(self) -> None:
        """
        A GET is sent again on a new connection to the same backend, and
        the client gets that answer; no retry or failure is logged.
        """
        harness = Harness(self, count=1)
        harness.client(GET)
        backend, toBackend = harness.backend()
        backend.dataReceived(OK)
        toBackend.clear()
        _, client = harness.client(b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(toBackend.value(), b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        backend.connectionLost(Failure(ConnectionDone()))
        fresh, toFresh = harness.backend()
        self.assertEqual(toFresh.value(), b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        fresh.dataReceived(OK)
        self.assertEqual(client.value(), OK_TO_CLIENT)
        self.assertEqual(
            [(e["status"], e["flag"], e["error"], e["retries"]) for e in accessEvents(harness)],
            [(200, "-", None, 0), (200, "-", None, 0)],
        )
        self.assertEqual([m for m in harness.messages() if "Retrying" in m], [])
        self.assertEqual(harness.backends[0].failures, 0)

    def test_resentOnce(self) -> None:
        """
        The GET is resent once only: if the new connection closes without
        an answer too, the failure is the exchange's, which logs its retry.
        """
        harness = Harness(self, count=1)
        harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        _, client = harness.client(b"GET /again HTTP/1.1\r\nHost: h\r\n\r\n")
        backend.connectionLost(Failure(ConnectionDone()))
        fresh, _ = harness.backend()
        fresh.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [m for m in harness.messages() if "Retrying" in m],
            [
                "Retrying GET /again on 127.0.0.1:8081: 127.0.0.1:8081 failed"
                " (Connection was closed cleanly.)"
            ],
        )
        retry, _ = harness.backend()
        retry.dataReceived(OK)
        self.assertEqual(client.value(), OK_TO_CLIENT)
        self.assertEqual(accessEvents(harness)[-1]["retries"], 1)

    def test_postNotResent(self) -> None:
        """
        A POST is not sent again: it gets 502, on the exchange's own rules.
        """
        harness = Harness(self, count=1)
        harness.client(GET)
        backend, toBackend = harness.backend()
        backend.dataReceived(OK)
        toBackend.clear()
        _, client = harness.client(b"POST /order HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(
            toBackend.value(), b"POST /order HTTP/1.1\r\nContent-Length: 1\r\nHost: h\r\n\r\nx"
        )
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.reactor.tcpClients, [])
        body = b"502 Bad Gateway: backend 127.0.0.1:8081: Connection was closed cleanly.\n"
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 502 Bad Gateway\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (DATE, len(body), body),
        )


class CloseDelimitedTests(SynchronousTestCase):
    """
    A body without length ends with the connection: whole if it closed
    cleanly, cut short if it was reset.
    """

    RESPONSE = b"HTTP/1.1 200 OK\r\nDate: %s\r\n\r\nall of" % DATE
    TO_CLIENT = (
        b"HTTP/1.1 200 OK\r\nDate: %s\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nall of\r\n" % DATE
    )

    def test_cleanClose(self) -> None:
        """
        A clean close ends the body whole: the HTTP/1.1 client gets it
        chunked, ended by the last chunk, on a connection kept open.
        """
        harness = Harness(self)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(self.RESPONSE)
        backend.dataReceived(b" it")
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(client.value(), self.TO_CLIENT + b"3\r\n it\r\n0\r\n\r\n")
        self.assertFalse(client.disconnecting)
        self.assertEqual([e["flag"] for e in accessEvents(harness)], ["-"])

    def test_reset(self) -> None:
        """
        A reset cuts the body short: the client connection is aborted
        without the last chunk, and the line says C{UR}.
        """
        harness = Harness(self)
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(self.RESPONSE)
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(client.value(), self.TO_CLIENT)
        self.assertTrue(client.disconnected)
        [event] = accessEvents(harness)
        self.assertEqual(
            (event["flag"], event["error"]),
            (
                "UR",
                "backend body cut short: Connection to the other side was lost in a non-clean fashion.",
            ),
        )


class PoolControlTests(SynchronousTestCase):
    """
    Closing the pool, and cancelling a request being connected.
    """

    def test_closeCachedConnections(self) -> None:
        """
        C{closeCachedConnections} closes every idle connection, and its
        Deferred fires once they have all closed.
        """
        harness = Harness(self, count=1)
        harness.client(GET)
        harness.client(GET)
        accepted = [harness.backend() for _ in range(2)]
        for backend, _ in accepted:
            backend.dataReceived(OK)
        closed = harness.backendClient.closeCachedConnections()
        self.assertEqual([t.disconnected for _, t in accepted], [True, True])
        self.assertNoResult(closed)
        accepted[0][0].connectionLost(Failure(ConnectionLost()))
        self.assertNoResult(closed)
        accepted[1][0].connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(self.successResultOf(closed))

    def test_closeCachedConnectionsLeavesBusyOnes(self) -> None:
        """
        A connection carrying a request is not an idle one: it is left to
        finish.
        """
        harness = Harness(self, count=1)
        _, client = harness.client(GET)
        backend, toBackend = harness.backend()
        self.successResultOf(harness.backendClient.closeCachedConnections())
        self.assertFalse(toBackend.disconnecting)
        backend.dataReceived(OK)
        self.assertEqual(client.value(), OK_TO_CLIENT)

    def test_cancelWhileConnecting(self) -> None:
        """
        A client that leaves while its backend connection is being made
        stops the attempt.
        """
        harness = Harness(self)
        channel, _ = harness.client(GET)
        [connector] = harness.reactor.connectors
        self.assertFalse(connector.stoppedConnecting)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(harness.backends[0].active, 0)


class RequestHeadTests(SynchronousTestCase):
    """
    The request head goes to the backend in one write.
    """

    def writes(self, request: bytes) -> list[bytes]:
        self.patch(helpers, "TCPTransport", RecordingTransport)
        harness = Harness(self)
        harness.client(request)
        _, toBackend = harness.backend()
        return toBackend.writes

    def test_getOneWrite(self) -> None:
        """
        A GET's head, with the raw target and the fields in order, is one
        write.
        """
        self.assertEqual(
            self.writes(
                b"GET /a%2Fb/?x=%7e&y=&z HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
                b"Cookie: a=1\r\nCookie: b=2\r\nX-Last: 1\r\n\r\n"
            ),
            [
                b"GET /a%2Fb/?x=%7e&y=&z HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n"
                b"Cookie: a=1\r\nCookie: b=2\r\nX-Last: 1\r\n\r\n"
            ],
        )

    def test_contentLengthFirst(self) -> None:
        """
        A body's Content-Length comes right after the request line, in the
        head's one write; the body follows in writes of its own.
        """
        writes = self.writes(
            b"POST /p?q HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        )
        self.assertEqual(
            writes[0],
            b"POST /p?q HTTP/1.1\r\nContent-Length: 3\r\nHost: h\r\nContent-Type: text/plain\r\n\r\n",
        )
        self.assertEqual(b"".join(writes[1:]), b"abc")

    def test_transferEncodingFirst(self) -> None:
        """
        A chunked body's Transfer-Encoding comes right after the request
        line, in the head's one write.
        """
        writes = self.writes(
            b"PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(
            writes[0], b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n"
        )
        self.assertEqual(b"".join(writes[1:]), b"3\r\nabc\r\n0\r\n\r\n")


class RecordingClient(RawClient):
    """
    A raw client that also keeps why its connection ended.
    """

    reason: Any = None

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason
        super().connectionLost(reason)


class LoopbackTests(IntegrationTestCase):
    """
    The client over real sockets.
    """

    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def flags(self) -> list[str]:
        """
        The flags of the access-log lines so far.
        """
        return [e["flag"] for e in self.events if "flag" in e and "bytesOut" in e]

    async def rawClient(self, port: int, request: bytes) -> RecordingClient:
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port), RecordingClient()
        )
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        client.transport.write(request)
        return client

    async def test_endlessHead(self) -> None:
        """
        A backend whose response head never ends gets the client a 502
        within seconds, and its connection closed.
        """
        loops: list[LoopingCall] = []

        def endless(conn: RawBackendConnection) -> None:
            conn.transport.write(b"HTTP/1.1 200 OK\r\n")
            line = b"X-Filler: " + b"a" * 1000 + b"\r\n"

            sent = [0]

            def more() -> None:
                # Bounded, should txlb never close: 5000 writes of 16 KiB.
                if conn.closed.called or sent[0] >= 5000:
                    loop.stop()
                    return
                conn.transport.write(line * 16)
                sent[0] += 1

            loop = LoopingCall(more)
            loops.append(loop)
            loop.start(0.001)

        def stop() -> None:
            for loop in loops:
                if loop.running:
                    loop.stop()

        self.addCleanup(stop)
        factory, port = self.rawBackend(endless)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.rawClient(lb, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        received = await client.closed.addTimeout(5, reactor)
        self.assertTrue(received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), received[:200])
        self.assertTrue(
            received.endswith(
                b"\r\n\r\n502 Bad Gateway: backend 127.0.0.1:%d: malformed response: "
                b"a response head over 64 KiB\n" % port
            ),
            received[-200:],
        )
        await factory.connections[0].closed.addTimeout(5, reactor)
        self.assertEqual(self.flags(), ["UPE"])

    async def test_closeDelimitedCleanClose(self) -> None:
        """
        A close-delimited body ended by a clean close reaches the client
        whole, chunked and ended by the last chunk.
        """

        def answerThenClose(conn: RawBackendConnection) -> None:
            conn.transport.write(b"HTTP/1.1 200 OK\r\nDate: %s\r\n\r\nall of it" % DATE)
            conn.transport.loseConnection()

        _, port = self.rawBackend(answerThenClose)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.rawClient(lb, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        received = await client.closed.addTimeout(5, reactor)
        self.assertEqual(
            received,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nDate: %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n9\r\nall of it\r\n0\r\n\r\n" % DATE,
        )
        self.assertTrue(client.reason.check(ConnectionDone))
        self.assertEqual(self.flags(), ["-"])

    async def test_closeDelimitedReset(self) -> None:
        """
        A close-delimited body ended by a reset is cut short: the client
        connection is reset too, without the last chunk.
        """

        def answerThenReset(conn: RawBackendConnection) -> None:
            conn.transport.write(b"HTTP/1.1 200 OK\r\nDate: %s\r\n\r\npartial" % DATE)
            # Twisted's abortConnection closes with a reset (SO_LINGER 0).
            reactor.callLater(0.05, conn.transport.abortConnection)

        _, port = self.rawBackend(answerThenReset)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.rawClient(lb, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        received = await client.closed.addTimeout(5, reactor)
        self.assertEqual(
            received,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nDate: %s\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n" % DATE,
        )
        self.assertTrue(client.reason.check(ConnectionLost))
        self.assertEqual(self.flags(), ["UR"])

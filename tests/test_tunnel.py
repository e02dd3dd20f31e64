"""
Upgrade requests in memory: real Twisted HTTP parsing on the client side, a
raw backend connection, and every byte each side receives checked.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.helpers import CLIENT, OK, OK_TO_CLIENT, Harness
from txlb import http1, tunnel
from txlb.http1 import BadResponseError, parseHead
from txlb.tunnel import LINGER, BodyEnd

UPGRADE = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
UPGRADE_TO_BACKEND = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nSec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-Websocket-Version: 13\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nX-Odd:  spaced \r\n\r\n"
)
LOG_PREFIX = (
    "client=10.0.0.7 method=GET path=/chat?room=1 \N{RIGHTWARDS ARROW} backend=127.0.0.1:8081"
)


def upgrade(testCase: SynchronousTestCase, request: bytes = UPGRADE) -> tuple[Any, ...]:
    """
    Send an upgrade request through a balancer and accept the backend
    connection; return the harness, the client's channel and transport, and
    the backend's protocol and transport.
    """
    harness = Harness(testCase)
    channel, client = harness.client(request)
    backend, toBackend = harness.backend()
    return harness, channel, client, backend, toBackend


def switched(testCase: SynchronousTestCase, request: bytes = UPGRADE) -> tuple[Any, ...]:
    """
    Like L{upgrade}, with the backend's 101 received and both sides' records
    cleared.
    """
    harness, channel, client, backend, toBackend = upgrade(testCase, request)
    backend.dataReceived(SWITCH)
    client.clear()
    toBackend.clear()
    return harness, channel, client, backend, toBackend


class RoutingTests(SynchronousTestCase):
    """
    Which requests go through a tunnel, and where.
    """

    def test_requestBytes(self) -> None:
        """
        The backend receives the method and raw target, the end-to-end
        fields, and then C{Connection: Upgrade} and the client's C{Upgrade};
        other hop-by-hop fields and the fields C{Connection} names are
        removed.
        """
        _, _, _, _, toBackend = upgrade(
            self,
            b"GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade, X-Hop\r\n"
            b"X-Hop: 1\r\nKeep-Alive: 300\r\nUpgrade: websocket\r\nCookie: a=1\r\nCookie: b=2\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        self.assertEqual(
            toBackend.value(),
            b"GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: b=2\r\n"
            b"Sec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-Websocket-Version: 13\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )

    def test_repeatedUpgrade(self) -> None:
        """
        Several C{Upgrade} fields pass in order, whatever the method.
        """
        _, _, _, _, toBackend = upgrade(
            self,
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nUpgrade: foo/2, bar\r\n"
            b"Connection: upgrade\r\n\r\n",
        )
        self.assertEqual(
            toBackend.value(),
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
            b"Upgrade: foo/2, bar\r\n\r\n",
        )

    def test_bodyNotUpgraded(self) -> None:
        """
        A request with a body is not upgraded: it is forwarded as an
        ordinary request, its body framed by its Content-Length and without
        C{Connection} and C{Upgrade}, so that the body is the request's for
        every hop (h11 reads it so, llhttp as the new protocol's first
        bytes).  The answer is relayed, and the connection serves the next
        request.
        """
        body = b"GET /admin HTTP/1.1\r\nHost: hhhh\r\n\r\n"
        self.assertEqual(len(body), 35)
        harness = Harness(self)
        _, client = harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 35\r\n\r\n" + body + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        backend, toBackend = harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST /up HTTP/1.1\r\nContent-Length: 35\r\nHost: h\r\n\r\n" + body,
        )
        backend.dataReceived(OK)
        self.assertEqual(client.value(), OK_TO_CLIENT)
        self.assertFalse(client.disconnecting)
        _, toNext = harness.backend()
        self.assertEqual(toNext.value(), b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_chunkedBodyNotUpgraded(self) -> None:
        """
        A chunked body, trailers included, goes the same way: an ordinary
        chunked request without the upgrade's fields.
        """
        harness = Harness(self)
        harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nUpgrade: foo\r\nConnection: Upgrade\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
        )
        _, toBackend = harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
        )

    def test_switchToOrdinaryRequest(self) -> None:
        """
        A backend that answers 101 to such a request, which asked it for no
        upgrade, gets the client a 502.
        """
        harness = Harness(self)
        _, client = harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 1\r\n\r\nx"
        )
        backend, _ = harness.backend()
        backend.dataReceived(SWITCH)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_emptyBodyUpgraded(self) -> None:
        """
        A C{Content-Length: 0} is no body: the request is upgraded, and the
        field goes with it.
        """
        _, _, _, _, toBackend = upgrade(
            self,
            b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Content-Length: 00\r\n\r\n",
        )
        self.assertEqual(
            toBackend.value(),
            b"GET /chat HTTP/1.1\r\nContent-Length: 0\r\nHost: h\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n",
        )

    def test_pickedByAlgorithm(self) -> None:
        """
        Upgrade requests are routed by the algorithm, with the configured
        connect timeout.
        """
        harness = Harness(self)
        harness.client(UPGRADE)
        harness.client(UPGRADE)
        self.assertEqual(
            [(host, port, timeout) for host, port, _, timeout, _ in harness.reactor.tcpClients],
            [("127.0.0.1", 8081, 5), ("127.0.0.1", 8082, 5)],
        )

    def test_upgradeNotInConnection(self) -> None:
        """
        An C{Upgrade} that C{Connection} does not name is an ordinary
        request: the field is removed, as any hop-by-hop field.
        """
        harness = Harness(self)
        harness.client(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
        _, toBackend = harness.backend()
        self.assertEqual(toBackend.value(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_http10Ignored(self) -> None:
        """
        An HTTP/1.0 request's upgrade is ignored (RFC 9110 section 7.8).
        """
        harness = Harness(self)
        harness.client(
            b"GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        _, toBackend = harness.backend()
        self.assertEqual(toBackend.value(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_badRequestFirst(self) -> None:
        """
        An upgrade request that cannot be forwarded gets 400, and no
        backend connection.
        """
        harness = Harness(self)
        _, client = harness.client(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        )
        self.assertTrue(client.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertEqual(harness.reactor.tcpClients, [])


class SwitchTests(SynchronousTestCase):
    """
    On 101 the client gets the backend's answer as sent, and then bytes flow
    both ways.
    """

    def test_headRelayedRaw(self) -> None:
        """
        The 101 head reaches the client byte for byte, with what the backend
        sent right after it.
        """
        _, _, client, backend, _ = upgrade(self)
        backend.dataReceived(SWITCH[:20])
        self.assertEqual(client.value(), b"")
        backend.dataReceived(SWITCH[20:] + b"\x81\x02hi")
        self.assertEqual(client.value(), SWITCH + b"\x81\x02hi")

    def test_bothWays(self) -> None:
        """
        After the switch, the client's bytes reach the backend and the
        backend's reach the client, unchanged.
        """
        _, channel, client, backend, toBackend = switched(self)
        channel.dataReceived(b"\x81\x85mask\x00\x01\x02\x03\x04")
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend.dataReceived(b"\x82\x03\x00\xff\x10")
        self.assertEqual(
            toBackend.value(), b"\x81\x85mask\x00\x01\x02\x03\x04GET / HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        self.assertEqual(client.value(), b"\x82\x03\x00\xff\x10")

    def test_noNewBackendConnection(self) -> None:
        """
        After the switch, an HTTP request from the client is just bytes in
        the tunnel: no other backend is asked.
        """
        harness, channel, _, _, _ = switched(self)
        channel.dataReceived(UPGRADE)
        self.assertEqual(harness.reactor.tcpClients, [])

    def test_earlyClientBytes(self) -> None:
        """
        Bytes the client sent after its request head, before the backend
        switched, reach the backend after the request and in order, and
        only once the backend has switched.
        """
        harness = Harness(self)
        channel, _ = harness.client(UPGRADE + b"one,")
        channel.dataReceived(b"two,")
        backend, toBackend = harness.backend()
        channel.dataReceived(b"three")
        self.assertEqual(toBackend.value(), UPGRADE_TO_BACKEND)
        backend.dataReceived(SWITCH)
        channel.dataReceived(b",four")
        self.assertEqual(toBackend.value(), UPGRADE_TO_BACKEND + b"one,two,three,four")

    def test_manyEarlyBytes(self) -> None:
        """
        Past 16 KiB held back before the switch, reading from the client
        pauses; after the switch it resumes, and every byte arrives.
        """
        _, channel, client, backend, toBackend = upgrade(self)
        early = b"".join(b"%06d" % i for i in range(4000))
        channel.dataReceived(early)
        self.assertEqual(client.producerState, "paused")
        backend.dataReceived(SWITCH)
        self.assertEqual(client.producerState, "producing")
        self.assertEqual(toBackend.value(), UPGRADE_TO_BACKEND + early)

    def test_clientSlow(self) -> None:
        """
        While the client cannot take more, reading from the backend pauses,
        and resumes when it can.
        """
        _, _, client, _, toBackend = switched(self)
        client.producer.pauseProducing()
        self.assertEqual(toBackend.producerState, "paused")
        client.producer.resumeProducing()
        self.assertEqual(toBackend.producerState, "producing")

    def test_backendSlow(self) -> None:
        """
        While the backend cannot take more, reading from the client pauses,
        and resumes when it can.
        """
        _, _, client, _, toBackend = switched(self)
        toBackend.producer.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        toBackend.producer.resumeProducing()
        self.assertEqual(client.producerState, "producing")

    def test_noIdleTimeout(self) -> None:
        """
        A quiet tunnel is not timed out by the client channel's idle
        timeout.
        """
        harness, channel, client, _, _ = switched(self)
        channel.dataReceived(b"x")
        harness.reactor.advance(harness.site.timeOut * 2)
        self.assertFalse(client.disconnecting)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_backendReset(self) -> None:
        """
        A backend reset gets the client connection aborted.
        """
        _, _, client, backend, _ = switched(self)
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.disconnected)

    def test_backendCloses(self) -> None:
        """
        When the backend closes, the client connection is closed for
        writing after what was already sent (and lingers, see
        L{LingeringCloseTests}), the count released and the tunnel logged
        with its duration.
        """
        harness, _, client, backend, _ = switched(self)
        harness.reactor.advance(2.5)
        backend.dataReceived(b"bye")
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(client.value(), b"bye")
        self.assertTrue(client.writeDisconnected)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(harness.accessLog(), [LOG_PREFIX + " status=101 ms=2500.0"])

    def test_clientCloses(self) -> None:
        """
        When the client closes, the backend connection is closed for
        writing, the count released and the tunnel logged once, however
        many ends follow.
        """
        harness, channel, _, backend, toBackend = switched(self)
        channel.dataReceived(b"last")
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(toBackend.value(), b"last")
        self.assertTrue(toBackend.writeDisconnected)
        self.assertEqual(harness.backends[0].active, 0)
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(harness.accessLog(), [LOG_PREFIX + " status=101 ms=0.0"])

    def test_channelCleansUp(self) -> None:
        """
        When the client connection ends, the channel's own clean-up runs
        too: the upgrade request learns that its connection is gone.
        """
        _, channel, _, _, _ = switched(self)
        ended = channel.request.notifyFinish()
        channel.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(ended, ConnectionDone)

    def test_producersUnregistered(self) -> None:
        """
        When the tunnel ends, neither connection keeps a producer: a
        transport with one does not close.
        """
        _, _, client, backend, toBackend = switched(self)
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(client.producer)
        self.assertIsNone(toBackend.producer)

    def test_reset(self) -> None:
        """
        A side that ends uncleanly gets the other side aborted, and is named
        in the log line.
        """
        harness, channel, _, _, toBackend = switched(self)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(toBackend.disconnected)
        self.assertEqual(
            harness.accessLog(),
            [
                LOG_PREFIX + ' status=101 ms=0.0 error="client connection lost: '
                'Connection to the other side was lost in a non-clean fashion."'
            ],
        )

    def test_activeWhileOpen(self) -> None:
        """
        The tunnel counts as active on its backend from the request until it
        closes.
        """
        harness, _, _, backend, _ = upgrade(self)
        self.assertEqual([b.active for b in harness.backends], [1, 0])
        backend.dataReceived(SWITCH)
        harness.reactor.advance(60)
        self.assertEqual([b.active for b in harness.backends], [1, 0])
        self.assertEqual(harness.accessLog(), [])
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([b.active for b in harness.backends], [0, 0])

    def test_interimAnswers(self) -> None:
        """
        An interim 103 before the 101 is passed on raw; a 100 is not, as txlb
        already answered the client's C{Expect}.
        """
        _, _, client, backend, _ = upgrade(self)
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        backend.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n" + hints + SWITCH)
        self.assertEqual(client.value(), hints + SWITCH)


class RefusalTests(SynchronousTestCase):
    """
    A backend that does not switch has its answer relayed as sent, and then
    the client connection is closed.
    """

    def test_lengthDelimited(self) -> None:
        """
        The answer goes to the client byte for byte up to the end of its
        body, then both connections are closed and the status logged.
        """
        harness, _, client, backend, toBackend = upgrade(self)
        answer = (
            b"HTTP/1.1 426 Upgrade Required\r\nsec-websocket-version: 13\r\n"
            b"Connection: keep-alive\r\nContent-Length: 7\r\n\r\nversion"
        )
        backend.dataReceived(answer[:50])
        backend.dataReceived(answer[50:] + b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(client.value(), answer)
        self.assertTrue(client.writeDisconnected)
        self.assertIsNone(client.producer)
        self.assertTrue(toBackend.disconnecting)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(harness.accessLog(), [LOG_PREFIX + " status=426 ms=0.0"])

    def test_chunked(self) -> None:
        """
        A chunked answer is relayed raw up to its last chunk.
        """
        _, _, client, backend, _ = upgrade(self)
        answer = (
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
        )
        backend.dataReceived(answer[:70])
        self.assertFalse(client.writeDisconnected)
        backend.dataReceived(answer[70:] + b"junk")
        self.assertEqual(client.value(), answer)
        self.assertTrue(client.writeDisconnected)

    def test_noBody(self) -> None:
        """
        An answer without a body ends with its head.
        """
        _, _, client, backend, _ = upgrade(self)
        answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
        backend.dataReceived(answer)
        self.assertEqual(client.value(), answer)
        self.assertTrue(client.writeDisconnected)

    def test_closeDelimitedReset(self) -> None:
        """
        An answer without a length that ends in a reset may be cut short:
        the client connection is aborted.
        """
        _, _, client, backend, _ = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nplain")
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.disconnected)

    def test_closeDelimited(self) -> None:
        """
        An answer without a length ends when the backend closes, and the
        client connection is closed for writing, not aborted.
        """
        harness, _, client, backend, _ = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nplain")
        backend.dataReceived(b" page")
        self.assertFalse(client.writeDisconnected)
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(client.value(), b"HTTP/1.1 200 OK\r\n\r\nplain page")
        self.assertTrue(client.writeDisconnected)
        self.assertFalse(client.disconnecting)
        self.assertEqual(harness.backends[0].active, 0)

    def test_cutShort(self) -> None:
        """
        An answer whose body ends before its length is cut: the client
        connection is aborted.
        """
        harness, _, client, backend, _ = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\nabc")
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.disconnected)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn('error="backend body cut short', harness.accessLog()[0])

    def test_malformedChunks(self) -> None:
        """
        Malformed chunks abort both connections.
        """
        harness, _, client, backend, toBackend = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        self.assertTrue(client.disconnected)
        self.assertTrue(toBackend.disconnected)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn('error="backend body malformed', harness.accessLog()[0])

    def test_clientLeaves(self) -> None:
        """
        A client that leaves while the answer is relayed closes the backend
        connection and releases the count.
        """
        harness, channel, _, backend, toBackend = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\nabc")
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(toBackend.disconnected)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn('status=400 ms=0.0 error="client disconnected"', harness.accessLog()[0])


@implementer(ISSLTransport)
class TLSTransport(StringTransport):
    """
    Stands for Twisted's TLS transport, whose close sends a close alert and
    then waits for the peer's; C{transport} is the connection under it.
    """

    def __init__(self) -> None:
        super().__init__(peerAddress=CLIENT)
        self.transport = StringTransport()

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def loseWriteConnection(self) -> None:
        raise AssertionError("TLS closed for writing without its close alert")


class LingeringCloseTests(SynchronousTestCase):
    """
    A side that txlb closes after a clean end of the other side is closed
    for writing and then read, what it sends dropped, until its peer closes
    or L{LINGER} seconds have passed (nginx's C{lingering_close}): closed
    with bytes unread, the socket would send a reset, and the peer could
    lose the last bytes relayed to it.
    """

    def lingering(self) -> tuple[Any, ...]:
        """
        Like L{switched}, with the backend having sent C{bye} and closed.
        """
        harness, channel, client, backend, toBackend = switched(self)
        backend.dataReceived(b"bye")
        backend.connectionLost(Failure(ConnectionDone()))
        return harness, channel, client, backend, toBackend

    def test_halfClosed(self) -> None:
        """
        The client connection is closed for writing only: it is neither
        closed nor aborted, and reading from it goes on.
        """
        _, _, client, _, _ = self.lingering()
        self.assertTrue(client.writeDisconnected)
        self.assertFalse(client.disconnecting)
        self.assertFalse(client.disconnected)
        self.assertEqual(client.producerState, "producing")

    def test_readingResumed(self) -> None:
        """
        A client whose reading was paused by the backend's flow control is
        read again while txlb lingers.
        """
        _, _, client, backend, toBackend = switched(self)
        toBackend.producer.pauseProducing()
        self.assertEqual(client.producerState, "paused")
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(client.producerState, "producing")

    def test_clientBytesDropped(self) -> None:
        """
        What the client sends while txlb lingers is read and dropped, not
        relayed.
        """
        _, channel, client, _, toBackend = self.lingering()
        channel.dataReceived(b"\x88\x82mask\x6b\xe9")
        self.assertEqual(toBackend.value(), b"")
        self.assertEqual(client.value(), b"bye")

    def test_endsWhenClientCloses(self) -> None:
        """
        When the client closes, the lingering ends: no timer is left, and
        the tunnel is logged once.
        """
        harness, channel, client, _, _ = self.lingering()
        self.assertEqual(len(harness.reactor.getDelayedCalls()), 1)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.reactor.getDelayedCalls(), [])
        self.assertFalse(client.disconnecting)
        self.assertEqual(harness.accessLog(), [LOG_PREFIX + " status=101 ms=0.0"])

    def test_timeout(self) -> None:
        """
        A client that does not close within L{LINGER} seconds has its
        connection closed then, and no timer is left.
        """
        harness, _, client, _, _ = self.lingering()
        harness.reactor.advance(LINGER - 0.01)
        self.assertFalse(client.disconnecting)
        harness.reactor.advance(0.01)
        self.assertTrue(client.disconnecting)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_timeoutBounded(self) -> None:
        """
        The lingering is bounded by the time since txlb closed the client
        side, not renewed by what the client keeps sending.
        """
        harness, channel, client, _, _ = self.lingering()
        for _ in range(4):
            channel.dataReceived(b"more")
            harness.reactor.advance(LINGER / 4)
        self.assertTrue(client.disconnecting)

    def test_resetNotLingering(self) -> None:
        """
        A backend reset still aborts the client connection at once, with no
        lingering.
        """
        harness, _, client, backend, _ = switched(self)
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.disconnected)
        self.assertFalse(client.writeDisconnected)
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_backendLingers(self) -> None:
        """
        When the client closes first, the backend connection lingers the
        same way: closed for writing, read again, what it sends dropped,
        until it closes.
        """
        harness, channel, client, backend, toBackend = switched(self)
        client.producer.pauseProducing()
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(toBackend.writeDisconnected)
        self.assertFalse(toBackend.disconnecting)
        self.assertEqual(toBackend.producerState, "producing")
        backend.dataReceived(b"late")
        self.assertEqual(client.value(), b"")
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.reactor.getDelayedCalls(), [])

    def test_backendTimeout(self) -> None:
        """
        A backend that does not close within L{LINGER} seconds of the
        client's close has its connection closed then.
        """
        harness, channel, _, _, toBackend = switched(self)
        channel.connectionLost(Failure(ConnectionDone()))
        harness.reactor.advance(LINGER)
        self.assertTrue(toBackend.disconnecting)

    def test_refusalLingers(self) -> None:
        """
        After a refused upgrade's answer, the client connection lingers
        too: a client that sent more after its request still gets the
        answer, rather than a reset.
        """
        harness, channel, client, backend, _ = upgrade(self)
        answer = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
        backend.dataReceived(answer)
        self.assertTrue(client.writeDisconnected)
        self.assertFalse(client.disconnecting)
        channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.value(), answer)
        harness.reactor.advance(LINGER)
        self.assertTrue(client.disconnecting)

    def test_tls(self) -> None:
        """
        A TLS client connection, which has no write-only close, is closed
        with its close alert, and goes on being read; if the client does not
        close in time, the connection under TLS is closed.
        """
        harness = Harness(self)
        channel = harness.site.buildProtocol(CLIENT)
        client = TLSTransport()
        channel.makeConnection(client)
        channel.dataReceived(UPGRADE)
        harness.reactor.advance(0)
        backend, _ = harness.backend()
        backend.dataReceived(SWITCH)
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(client.disconnecting)
        self.assertEqual(client.producerState, "producing")
        self.assertFalse(client.transport.disconnecting)
        harness.reactor.advance(LINGER)
        self.assertTrue(client.transport.disconnecting)


class FailureTests(SynchronousTestCase):
    """
    A backend that cannot be reached, or answers nonsense, gets the client
    txlb's own plain-text error; the client connection goes on serving.
    """

    def assertAnswered(self, harness: Harness, client: Any, status: bytes, text: bytes) -> None:
        response = client.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 " + status + b"\r\n"), response)
        self.assertIn(b"Content-Type: text/plain; charset=utf-8\r\n", response)
        self.assertTrue(response.endswith(b"\r\n\r\n" + status + b": " + text), response)
        self.assertFalse(client.disconnecting)
        self.assertEqual(harness.backends[0].active, 0)

    def test_refused(self) -> None:
        """
        A refused connection gets 502 naming the backend and the reason.
        """
        harness = Harness(self)
        _, client = harness.client(UPGRADE)
        harness.refuse(ConnectionRefusedError())
        self.assertAnswered(
            harness,
            client,
            b"502 Bad Gateway",
            b"backend 127.0.0.1:8081: Connection was refused by other side.\n",
        )
        self.assertEqual(
            harness.accessLog(),
            [LOG_PREFIX + ' status=502 ms=0.0 error="Connection was refused by other side."'],
        )

    def test_connectTimeout(self) -> None:
        """
        A connection not made in time gets 504.
        """
        harness = Harness(self)
        _, client = harness.client(UPGRADE)
        harness.refuse(TimeoutError())
        self.assertAnswered(
            harness, client, b"504 Gateway Time-out", b"backend 127.0.0.1:8081: connect timeout\n"
        )

    def test_nextRequestServed(self) -> None:
        """
        After a 502, the same client connection serves another request.
        """
        harness = Harness(self, count=1)
        channel, client = harness.client(UPGRADE)
        harness.refuse(ConnectionRefusedError())
        client.clear()
        channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, toBackend = harness.backend()
        self.assertEqual(toBackend.value(), b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        backend.dataReceived(OK)
        self.assertTrue(client.value().endswith(b"\r\n\r\nok"))

    def test_closedBeforeAnswer(self) -> None:
        """
        A backend that closes before answering gets 502.
        """
        harness, _, client, backend, _ = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 101 Swi")
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertAnswered(
            harness,
            client,
            b"502 Bad Gateway",
            b"backend 127.0.0.1:8081: closed before answering: Connection was closed cleanly.\n",
        )

    def test_headTooLong(self) -> None:
        """
        A head over 64 KiB gets 502, and the backend connection is aborted.
        """
        harness, _, client, backend, toBackend = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\n")
        backend.dataReceived(b"X: " + b"a" * http1.MAX_HEAD + b"\r\n\r\n")
        self.assertAnswered(
            harness,
            client,
            b"502 Bad Gateway",
            b"backend 127.0.0.1:8081: response head over 64 KiB\n",
        )
        self.assertTrue(toBackend.disconnected)

    def test_headAtLimit(self) -> None:
        """
        A head of exactly 64 KiB is taken.
        """
        _, _, client, backend, _ = upgrade(self)
        head = b"HTTP/1.1 101 Switching Protocols\r\nX: "
        head += b"a" * (http1.MAX_HEAD - len(head) - 4) + b"\r\n\r\n"
        backend.dataReceived(head)
        self.assertEqual(client.value(), head)

    def test_malformedHead(self) -> None:
        """
        An answer that is not HTTP gets 502.
        """
        harness, _, client, backend, _ = upgrade(self)
        backend.dataReceived(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        self.assertAnswered(
            harness,
            client,
            b"502 Bad Gateway",
            b"backend 127.0.0.1:8081: malformed response: a status line that is not HTTP/1.x: "
            b"b'SSH-2.0-OpenSSH_9.2'\n",
        )

    def test_strictHead(self) -> None:
        """
        A refused upgrade's head is as strict as any response: a head with
        a NUL in a field gets 502, not a raw relay.
        """
        harness, _, client, backend, _ = upgrade(self)
        backend.dataReceived(b"HTTP/1.1 400 Bad Request\r\nX-N: a\x00b\r\n\r\n")
        self.assertAnswered(
            harness,
            client,
            b"502 Bad Gateway",
            b"backend 127.0.0.1:8081: malformed response: a control character in field X-N\n",
        )


class ClientDisconnectTests(SynchronousTestCase):
    """
    A client that leaves before the backend answered stops the work done for
    it.
    """

    def test_whileConnecting(self) -> None:
        """
        Leaving while the backend connection is being made stops the attempt
        and releases the count.
        """
        harness = Harness(self)
        channel, _ = harness.client(UPGRADE)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(harness.reactor.connectors[0].stoppedConnecting)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(
            harness.accessLog(), [LOG_PREFIX + ' status=- ms=0.0 error="client disconnected"']
        )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_beforeAnswer(self) -> None:
        """
        Leaving before the backend answered closes the backend connection
        and releases the count; a late answer is ignored.
        """
        harness, channel, client, backend, toBackend = upgrade(self)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(toBackend.disconnected)
        self.assertEqual(harness.backends[0].active, 0)
        backend.dataReceived(SWITCH)
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(client.value(), b"")
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(len(harness.accessLog()), 1)


class InternalErrorTests(SynchronousTestCase):
    """
    A bug in the tunnel ends it visibly.
    """

    def test_logsAndCloses(self) -> None:
        """
        An exception while handling the connect result is logged, both
        connections are aborted and the count released.
        """
        harness = Harness(self)
        _, client = harness.client(UPGRADE)

        def broken(*args: object) -> None:
            raise RuntimeError("bug")

        self.patch(tunnel, "answer", broken)
        harness.refuse(ConnectionRefusedError())
        self.assertTrue(client.disconnected)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class HeadParsingTests(SynchronousTestCase):
    """
    The small parsers the tunnel reads answers with.
    """

    def test_malformedChunks(self) -> None:
        """
        A malformed chunked body raises, for the tunnel to abort.
        """
        end = BodyEnd(b"GET", parseHead(b"HTTP/1.1 400 X\r\nTransfer-Encoding: chunked\r\n\r\n"))
        self.assertRaises(BadResponseError, end.feed, b"zz\r\n")

    def test_bodyEnd(self) -> None:
        """
        Where an answer's body ends in the bytes that follow its head: how
        many of the given bytes belong to it, and whether it has ended.
        """
        table: list[tuple[bytes, bytes, int, bytes, bytes, bool]] = [
            (b"GET", b"Content-Length: 3", 400, b"abcdef", b"abc", True),
            (b"GET", b"Content-Length: 3, 3", 400, b"ab", b"ab", False),
            (b"GET", b"Content-Length: 0", 400, b"", b"", True),
            (b"HEAD", b"Content-Length: 3", 400, b"abc", b"", True),
            (b"GET", b"Content-Length: 3", 304, b"abc", b"", True),
            (b"GET", b"", 204, b"abc", b"", True),
            (b"GET", b"", 400, b"abc", b"abc", False),
            (
                b"GET",
                b"Transfer-Encoding: chunked",
                400,
                b"1\r\na\r\n0\r\n\r\nxy",
                b"1\r\na\r\n0\r\n\r\n",
                True,
            ),
            (b"GET", b"Transfer-Encoding: chunked", 400, b"1\r\na\r\n", b"1\r\na\r\n", False),
        ]
        for method, fields, code, data, part, ended in table:
            head = b"HTTP/1.1 %d X\r\n%s\r\n" % (code, fields + b"\r\n" if fields else b"")
            end = BodyEnd(method, parseHead(head))
            self.assertEqual((end.feed(data), end.ended), (part, ended), (method, fields, code))

"""
WebSocket through the balancer over real loopback sockets, with autobahn's
Twisted client and server on either side.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable
from typing import Any

import twisted.test
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.python.filepath import FilePath

from tests.helpers import (
    EchoServer,
    Flood,
    IntegrationTestCase,
    RecordingClient,
    clientFactory,
    waitFor,
)
from txlb import tunnel
from txlb.algorithms.leastconn import LeastConnections
from txlb.backend import Backend
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite
from txlb.testbackend import makeBackendSite


class WebSocketTestCase(IntegrationTestCase):
    def echoBackend(self) -> int:
        """
        An autobahn WebSocket echo server; its port.
        """
        factory = WebSocketServerFactory()
        factory.protocol = EchoServer
        return self.listen(factory)

    def sinkBackend(self, onData: Callable[[Sink], None]) -> tuple[list[Sink], int]:
        """
        A backend whose connections are L{Sink}s; the list they are put in,
        and its port.
        """
        sinks: list[Sink] = []

        def build(address: Any) -> Sink:
            sinks.append(Sink(onData))
            return sinks[-1]

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        return sinks, self.listen(factory)

    async def connect(self, lb: int, path: str = "/chat") -> RecordingClient:
        """
        An autobahn client connected through the balancer, handshake done.
        """
        factory = clientFactory(f"ws://127.0.0.1:{lb}{path}")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", lb)
        client = await endpoint.connect(factory)
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        await client.opened.addTimeout(10, reactor)
        return client


class EchoTests(WebSocketTestCase):
    async def test_echoThroughBalancer(self) -> None:
        """
        An autobahn client opens a WebSocket through txlb to an autobahn
        echo server, gets its text, binary and 1 MiB messages back, and
        closes cleanly; the backend's count goes back to 0 and the tunnel
        is logged with status 101.
        """
        backend = Backend("127.0.0.1", self.echoBackend())
        lb = self.balancer([backend])
        client = await self.connect(lb)
        self.assertEqual(backend.active, 1)
        sent = [
            ("snowman \N{SNOWMAN}".encode(), False),
            (bytes(range(256)), True),
            (b"\x00\xff" * 512 * 1024, True),
        ]
        for payload, isBinary in sent:
            client.sendMessage(payload, isBinary)
        await waitFor(lambda: len(client.messages) == len(sent))
        self.assertEqual(client.messages, sent)
        client.sendClose(1000)
        wasClean, code = await client.closed.addTimeout(10, reactor)
        self.assertEqual((wasClean, code), (True, 1000))
        await waitFor(lambda: backend.active == 0)

    async def test_echoOverTLS(self) -> None:
        """
        With txlb listening on TLS, a C{wss://} client gets its messages
        echoed and closes cleanly: the TLS connection sends its close alert
        once the tunnel ends.
        """
        backend = Backend("127.0.0.1", self.echoBackend())
        self.balancer([backend])
        pem = FilePath(twisted.test.__file__).sibling("server.pem").path
        endpoint = serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={pem}")
        port = await endpoint.listen(LoadBalancerSite(RoutingResource.single(self.resource)))
        self.addCleanup(port.stopListening)
        lb = port.getHost().port
        factory = clientFactory(f"wss://127.0.0.1:{lb}/chat")
        client = await SSL4ClientEndpoint(reactor, "127.0.0.1", lb, CertificateOptions()).connect(
            factory
        )
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        await client.opened.addTimeout(10, reactor)
        client.sendMessage(b"over TLS")
        await waitFor(lambda: client.messages == [(b"over TLS", False)])
        client.sendClose(1000)
        wasClean, code = await client.closed.addTimeout(10, reactor)
        self.assertEqual((wasClean, code), (True, 1000))
        await waitFor(lambda: backend.active == 0)

    async def test_refusalRelayed(self) -> None:
        """
        A backend that does not speak WebSocket answers the upgrade as an
        ordinary request: the client gets that answer whole, then the
        connection closes, and the count is released.
        """
        port = self.listen(makeBackendSite())
        backend = Backend("127.0.0.1", port)
        lb = self.balancer([backend])
        client = await self.client(
            lb,
            b"GET /ping HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        received = await client.closed.addTimeout(10, reactor)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertTrue(received.endswith(b"\r\n\r\npong from backend :%d\n" % port), received)
        await waitFor(lambda: backend.active == 0)


class LeastConnectionsTests(WebSocketTestCase):
    async def test_openTunnelIsActive(self) -> None:
        """
        With least connections, an open WebSocket counts on its backend: the
        next plain requests all go to the other backend, and the count is
        released when the WebSocket closes.
        """
        wsBackend = Backend("127.0.0.1", self.echoBackend())
        plainPort = self.listen(makeBackendSite())
        plainBackend = Backend("127.0.0.1", plainPort)
        lb = self.balancer([wsBackend, plainBackend], LeastConnections)
        client = await self.connect(lb)
        self.assertEqual((wsBackend.active, plainBackend.active), (1, 0))
        for _ in range(3):
            plain = await self.client(
                lb, b"GET /ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
            received = await plain.closed.addTimeout(10, reactor)
            self.assertTrue(
                received.endswith(b"\r\n\r\npong from backend :%d\n" % plainPort), received
            )
        client.sendClose(1000)
        await client.closed.addTimeout(10, reactor)
        await waitFor(lambda: wsBackend.active == 0)


SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n"
UPGRADE = b"GET /raw HTTP/1.1\r\nHost: h\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n"
UPGRADE_TO_BACKEND = b"GET /raw HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n"


class Sink(Protocol):
    """
    Hashes and counts every byte it receives (large transfers are checked
    without keeping them), and calls C{onData} after each read.
    """

    def __init__(self, onData: Callable[[Sink], None] = lambda sink: None) -> None:
        self.onData = onData
        self.digest = hashlib.sha256()
        self.count = 0
        self.closed: Deferred[None] = Deferred()
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.digest.update(data)
        self.count += len(data)
        self.onData(self)

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason
        self.closed.callback(None)


class FlowControlTests(WebSocketTestCase):
    """
    A side that does not read holds back the other side: what is in flight
    stays bounded by the socket buffers, and every byte arrives once it
    reads.
    """

    size = 64 * 1024 * 1024

    async def sinkClient(self, lb: int) -> Sink:
        """
        A L{Sink} client that has sent an upgrade request through the
        balancer.
        """
        client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", lb), Sink())
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        client.transport.write(UPGRADE)
        return client

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data + b"x" * self.size).digest()

    async def test_slowClient(self) -> None:
        """
        A client that does not read stops a backend that sends without end.
        """
        floods: list[Flood] = []

        def switchAndFlood(sink: Sink) -> None:
            if sink.count == len(UPGRADE_TO_BACKEND) and not floods:
                sink.transport.write(SWITCH)
                floods.append(Flood(sink.transport, self.size, close=True))

        _, port = self.sinkBackend(switchAndFlood)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.sinkClient(lb)
        client.transport.pauseProducing()
        await waitFor(lambda: bool(floods))
        stalled = await floods[0].stalled()
        self.assertLess(stalled, 24 * 1024 * 1024)
        client.transport.resumeProducing()
        await client.closed.addTimeout(30, reactor)
        self.assertEqual(client.digest.digest(), self.digest(SWITCH))

    async def test_slowBackend(self) -> None:
        """
        A backend that does not read stops a client that sends without end.
        """

        def switchAndStopReading(sink: Sink) -> None:
            if sink.count == len(UPGRADE_TO_BACKEND):
                sink.transport.write(SWITCH)
                sink.transport.pauseProducing()

        sinks, port = self.sinkBackend(switchAndStopReading)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.sinkClient(lb)
        await waitFor(lambda: client.count == len(SWITCH))
        flood = Flood(client.transport, self.size, close=True)
        stalled = await flood.stalled()
        self.assertLess(stalled, 24 * 1024 * 1024)
        sinks[0].transport.resumeProducing()
        await sinks[0].closed.addTimeout(30, reactor)
        self.assertEqual(sinks[0].digest.digest(), self.digest(UPGRADE_TO_BACKEND))


class LingeringCloseTests(WebSocketTestCase):
    """
    When the backend ends a tunnel, txlb closes the client side for writing
    and goes on reading it until the client closes, so that what the client
    sends meanwhile does not reset the connection.
    """

    size = 64 * 1024

    async def test_lateClientBytes(self) -> None:
        """
        A client that has not read the end of what the backend sent before
        closing, and sends more bytes after txlb's side of the tunnel has
        ended, still gets every byte and then a clean close.  Closed with
        those bytes unread, txlb's socket would send a reset, which drops
        what it has not sent yet (the client's small receive buffer keeps
        some of it there).
        """
        sent: list[bool] = []

        def switchSendAndClose(sink: Sink) -> None:
            if sink.count == len(UPGRADE_TO_BACKEND) and not sent:
                sink.transport.write(SWITCH + b"x" * self.size)
                sink.transport.loseConnection()
                sent.append(True)

        _, port = self.sinkBackend(switchSendAndClose)
        backend = Backend("127.0.0.1", port)
        lb = self.balancer([backend])
        client = Sink()
        skt = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Set before connecting, so the window the client offers stays small.
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        skt.connect(("127.0.0.1", lb))
        skt.setblocking(False)
        factory = Factory()
        factory.buildProtocol = lambda address: client  # type: ignore[method-assign]
        reactor.adoptStreamConnection(skt.fileno(), socket.AF_INET, factory)
        skt.close()
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        client.transport.pauseProducing()
        client.transport.write(UPGRADE)
        await waitFor(lambda: bool(sent) and backend.active == 0)
        client.transport.write(b"late")
        await deferLater(reactor, 0.05)
        client.transport.resumeProducing()
        await client.closed.addTimeout(10, reactor)
        self.assertEqual(client.count, len(SWITCH) + self.size)
        self.assertIsInstance(client.reason.value, ConnectionDone)

    async def test_tlsClientSilent(self) -> None:
        """
        A TLS client that does not answer txlb's close alert (it does not
        read) has its connection closed when the lingering time is up, and
        still gets everything, the close alert included, once it reads.
        """
        self.patch(tunnel, "LINGER", 0.2)
        sinks, port = self.sinkBackend(
            lambda sink: (
                sink.transport.write(SWITCH + b"bye")
                if sink.count == len(UPGRADE_TO_BACKEND)
                else None
            )
        )
        self.balancer([Backend("127.0.0.1", port)])
        pem = FilePath(twisted.test.__file__).sibling("server.pem").path
        endpoint = serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={pem}")
        site = LoadBalancerSite(RoutingResource.single(self.resource))
        listening = await endpoint.listen(site)
        self.addCleanup(listening.stopListening)
        lb = listening.getHost().port
        client = await connectProtocol(
            SSL4ClientEndpoint(reactor, "127.0.0.1", lb, CertificateOptions()), Sink()
        )
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        client.transport.write(UPGRADE)
        await waitFor(lambda: client.count == len(SWITCH + b"bye"))
        client.transport.pauseProducing()
        sinks[0].transport.loseConnection()
        await waitFor(lambda: not site.channels)
        client.transport.resumeProducing()
        await client.closed.addTimeout(10, reactor)
        self.assertEqual(client.digest.digest(), hashlib.sha256(SWITCH + b"bye").digest())
        self.assertIsInstance(client.reason.value, ConnectionDone)

"""
The balancer over real loopback sockets: raw-socket backends and clients,
so what crosses each hop is checked byte for byte.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from txlb.algorithms.roundrobin import RoundRobin
from txlb.algorithms.weighted import WeightedRoundRobin
from txlb.backend import Backend
from txlb.client import BackendClient
from txlb.proxy import LoadBalancerResource
from txlb.server import LoadBalancerSite
from txlb.testbackend import makeBackendSite


class RawBackendConnection(Protocol):
    """
    A backend connection that records every byte and calls the test's
    handler once a request head has arrived.
    """

    def connectionMade(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()
        self.handled = False
        self.factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.handled and b"\r\n\r\n" in self.received:
            self.handled = True
            self.factory.handler(self)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


class RawClient(Protocol):
    """
    A client that records every byte until the connection closes.
    """

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(self.received)


async def waitFor(condition: Callable[[], bool], seconds: float = 10) -> None:
    """
    Wait until C{condition()} holds, for at most C{seconds}.
    """
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"timed out waiting for {condition}")


class Flood:
    """
    Writes C{size} bytes to a transport as fast as it takes them, as its
    push producer, counting what it wrote; then closes it, if asked to.
    """

    def __init__(self, transport: Any, size: int, byte: bytes = b"x", close: bool = False) -> None:
        self.transport = transport
        self.size = size
        self.close = close
        self.block = byte * 65536
        self.written = 0
        self.paused = False
        transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.written < self.size:
            self.transport.write(self.block)
            self.written += len(self.block)
        if self.written >= self.size:
            self.transport.unregisterProducer()
            if self.close:
                self.transport.loseConnection()

    def stopProducing(self) -> None:
        pass

    async def stalled(self) -> int:
        """
        Wait for the writing to stop (the reader is not reading), check it
        stays stopped, and return how much was written.
        """
        await deferLater(reactor, 1.0)
        written = self.written
        await deferLater(reactor, 0.5)
        assert self.written == written, f"still writing: {written} then {self.written}"
        return written


def freePort() -> int:
    """
    A loopback port nobody listens on.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IntegrationTestCase(TestCase):
    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def rawBackend(self, handler: Callable[[RawBackendConnection], None]) -> tuple[Factory, int]:
        factory = Factory.forProtocol(RawBackendConnection)
        factory.connections = []
        factory.handler = handler
        return factory, self.listen(factory)

    def balancer(self, backends: list[Backend], algorithm: Any = RoundRobin) -> int:
        client = BackendClient(reactor, connectTimeout=2)
        self.addCleanup(client.closeCachedConnections)
        self.resource = LoadBalancerResource(algorithm(backends), client, reactor)
        return self.listen(LoadBalancerSite(self.resource))

    async def client(self, port: int, request: bytes) -> RawClient:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await connectProtocol(endpoint, RawClient())
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        client.transport.write(request)
        return client


class ByteExactTests(IntegrationTestCase):
    async def test_roundTrip(self) -> None:
        """
        Over real sockets the backend gets the request as the client sent
        it, less hop-by-hop fields, and the client gets the response as the
        backend sent it, plus its own hop's C{Connection: close}.
        """
        response = (
            b"HTTP/1.1 299 Whatever Custom\r\nServer: raw/1\r\n"
            b"Date: Sat, 01 Jan 2000 00:00:00 GMT\r\nSet-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\nContent-Length: 4\r\n\r\nbody"
        )
        backendFactory, backendPort = self.rawBackend(lambda conn: conn.transport.write(response))
        lb = self.balancer([Backend("127.0.0.1", backendPort)])
        client = await self.client(
            lb,
            b"PATCH /a%2Fb/~c/%7e?x=%7e&y=&z&q=a+b%20c HTTP/1.1\r\nHost: Example.com\r\n"
            b"Cookie: a=1\r\nCookie: b=2\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
            b"Content-Length: 3\r\n\r\nabc",
        )
        received = await client.closed
        self.assertEqual(
            backendFactory.connections[0].received,
            b"PATCH /a%2Fb/~c/%7e?x=%7e&y=&z&q=a+b%20c HTTP/1.1\r\nContent-Length: 3\r\n"
            b"Host: Example.com\r\nCookie: a=1\r\nCookie: b=2\r\n\r\nabc",
        )
        self.assertEqual(
            received,
            b"HTTP/1.1 299 Whatever Custom\r\nConnection: close\r\nServer: raw/1\r\n"
            b"Date: Sat, 01 Jan 2000 00:00:00 GMT\r\nSet-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\nContent-Length: 4\r\n\r\nbody",
        )

    async def test_hostnameBackend(self) -> None:
        """
        A backend given by name is reached through name resolution.
        """
        port = self.listen(makeBackendSite())
        lb = self.balancer([Backend("localhost", port)])
        client = await self.client(
            lb, b"GET /ping HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        received = await client.closed
        self.assertTrue(received.endswith(b"\r\n\r\npong from backend :%d\n" % port), received)


class StreamingTests(IntegrationTestCase):
    async def test_firstChunkBeforeEnd(self) -> None:
        """
        The first chunk of a slow chunked response reaches the client while
        the backend is still sending.
        """
        factory, port = self.rawBackend(
            lambda conn: conn.transport.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
            )
        )
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.client(
            lb, b"GET /slow HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        await waitFor(lambda: b"first" in client.received)
        self.assertFalse(client.closed.called)
        factory.connections[0].transport.write(b"4\r\nlast\r\n0\r\n\r\n")
        received = await client.closed
        self.assertTrue(received.endswith(b"\r\n\r\n5\r\nfirst\r\n4\r\nlast\r\n0\r\n\r\n"))

    async def test_slowClientPausesBackend(self) -> None:
        """
        A client that does not read holds back the backend: the backend
        cannot send much more than the socket buffers and txlb's high-water
        mark hold, and the whole body still arrives once the client reads.
        """
        size = 64 * 1024 * 1024
        floods: list[Flood] = []

        def sendForever(conn: RawBackendConnection) -> None:
            conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            floods.append(Flood(conn.transport, size, b"x"))

        _, port = self.rawBackend(sendForever)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.client(lb, b"GET /big HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        client.transport.pauseProducing()
        await waitFor(lambda: bool(floods))
        stalled = await floods[0].stalled()
        self.assertLess(stalled, 24 * 1024 * 1024)
        client.transport.resumeProducing()
        received = await client.closed
        self.assertEqual(len(received.partition(b"\r\n\r\n")[2]), size)


class UploadTests(IntegrationTestCase):
    async def test_largeUploadStreams(self) -> None:
        """
        A 32 MiB upload reaches the backend while the client is still
        sending; a backend that stops reading holds the client back (so
        txlb's memory stays bounded); the whole body arrives once it reads
        again.
        """
        size = 32 * 1024 * 1024
        state = {"received": 0}

        def countBody(conn: RawBackendConnection) -> None:
            _, _, body = conn.received.partition(b"\r\n\r\n")
            state["received"] = len(body)

            def more(data: bytes) -> None:
                state["received"] += len(data)
                if state["received"] == size:
                    conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

            conn.dataReceived = more  # type: ignore[method-assign]

        factory, port = self.rawBackend(countBody)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.client(
            lb, b"PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size
        )
        flood = Flood(client.transport, size, b"u")
        await waitFor(lambda: bool(factory.connections) and factory.connections[0].handled)
        backend = factory.connections[0]
        await waitFor(lambda: state["received"] > 0)
        self.assertLess(flood.written, size)
        backend.transport.pauseProducing()
        stalled = await flood.stalled()
        self.assertLess(stalled - state["received"], 24 * 1024 * 1024)
        backend.transport.resumeProducing()
        await waitFor(lambda: b"\r\n\r\nok" in client.received, seconds=30)
        self.assertEqual(state["received"], size)


class FailureTests(IntegrationTestCase):
    async def test_refused(self) -> None:
        """
        A backend that refuses gets the client a 502 naming it, at once.
        """
        port = freePort()
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.client(lb, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        received = await client.closed.addTimeout(5, reactor)
        self.assertTrue(received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertIn(b"backend 127.0.0.1:%d: Connection was refused" % port, received)

    async def test_resetMidBody(self) -> None:
        """
        A backend that resets mid-body gets the client connection cut, with
        less than the announced length.
        """

        def halfThenReset(conn: RawBackendConnection) -> None:
            conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
            reactor.callLater(0.05, conn.transport.abortConnection)

        _, port = self.rawBackend(halfThenReset)
        lb = self.balancer([Backend("127.0.0.1", port)])
        client = await self.client(lb, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        received = await client.closed.addTimeout(5, reactor)
        self.assertTrue(received.endswith(b"\r\n\r\nonly part"), received)

    async def test_clientDisconnect(self) -> None:
        """
        A client that leaves while the backend is thinking closes the
        backend connection and releases the backend, with no error logged.
        """
        factory, port = self.rawBackend(lambda conn: None)
        backend = Backend("127.0.0.1", port)
        lb = self.balancer([backend])
        client = await self.client(lb, b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        await waitFor(lambda: bool(factory.connections) and factory.connections[0].handled)
        self.assertEqual(backend.active, 1)
        client.transport.loseConnection()
        await factory.connections[0].closed.addTimeout(5, reactor)
        await waitFor(lambda: backend.active == 0)


class QuickStartTests(IntegrationTestCase):
    async def test_seedOutput(self) -> None:
        """
        Three test backends weighted 1:3:2 answer six pings in the seed's
        order.
        """
        ports = [self.listen(makeBackendSite()) for _ in range(3)]
        backends = [Backend("127.0.0.1", port, weight) for port, weight in zip(ports, [1, 3, 2])]
        lb = self.balancer(backends, WeightedRoundRobin)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        http = HTTPClient(Agent(reactor, pool=pool))
        bodies = []
        for _ in range(6):
            response = await http.get(f"http://127.0.0.1:{lb}/ping")
            bodies.append(await treq.text_content(response))
        first, second, third = ports
        self.assertEqual(
            bodies,
            [
                f"pong from backend :{port}\n"
                for port in [first, second, second, second, third, third]
            ],
        )

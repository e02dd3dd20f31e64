"""
The balancer over real loopback sockets: raw-socket backends and clients,
so what crosses each hop is checked byte for byte.
"""

from __future__ import annotations

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.web.client import Agent, HTTPConnectionPool

from tests.helpers import (
    Flood,
    IntegrationTestCase,
    RawBackendConnection,
    freePort,
    waitFor,
)
from txlb.algorithms.weighted import WeightedRoundRobin
from txlb.backend import Backend
from txlb.testbackend import makeBackendSite


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

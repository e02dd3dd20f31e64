"""
Twisted behaviour that txlb relies on and that differs between the Twisted
versions it supports: 25.5 (the newest on Debian's pypy3, Python 3.9), 26.4
(the newest on CPython 3.9) and 26.10 and later; and the private Twisted
APIs txlb uses, all through L{txlb._twisted}, each pinned here.
"""

from __future__ import annotations

from typing import Any

from twisted.copyright import version
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http, server
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource

from txlb import _twisted
from txlb.server import ProxyChannel


class _Recording(http.Request):
    """
    A request that notes the C{X} values it got, and answers at once.
    """

    seen: list[list[bytes] | None]

    def process(self) -> None:
        self.seen.append(self.requestHeaders.getRawHeaders(b"x"))
        self.finish()


class HeaderLineBreakTests(SynchronousTestCase):
    """
    A bare CR or LF inside a request header value never reaches txlb as
    such, so it can never reach a backend: Twisted 26.10 answers 400 (RFC
    9110 section 5.5), and earlier versions turn each line break into a
    space (C{http_headers._sanitizeLinearWhitespace}).
    """

    def test_bareLineBreaks(self) -> None:
        for value in [b"a\rb", b"a\nb", b"a\rb\nc"]:
            seen: list[list[bytes] | None] = []
            channel = http.HTTPChannel()
            channel.requestFactory = type("Request", (_Recording,), {"seen": seen})
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + value + b"\r\n\r\n")
            if tuple(map(int, version.split(".")[:2])) >= (26, 10):
                self.assertEqual(seen, [])
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), value)
            else:
                self.assertEqual(seen, [[value.replace(b"\r", b" ").replace(b"\n", b" ")]])
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), value)
            channel.connectionLost(connectionDone)


class PrivateAPITests(SynchronousTestCase):
    """
    Each private Twisted API of L{txlb._twisted} does what txlb needs of it.
    """

    def test_connectionFactory(self) -> None:
        """
        A pool builds the factory of each new connection with the class
        L{_twisted.setConnectionFactory} gave it (the health checks' quiet
        one), Twisted's own L{_twisted.HTTP11ClientFactory} by default.
        """
        built: list[object] = []

        class Endpoint:
            def connect(self, factory: object) -> Deferred[object]:
                built.append(factory)
                return Deferred()

        class Quiet(_twisted.HTTP11ClientFactory):
            noisy = False

        reactor = MemoryReactorClock()
        pool = HTTPConnectionPool(reactor, persistent=False)
        pool.getConnection(("http", b"a", 80), Endpoint())
        _twisted.setConnectionFactory(pool, Quiet)
        pool.getConnection(("http", b"a", 80), Endpoint())
        self.assertEqual(
            [type(factory) for factory in built], [_twisted.HTTP11ClientFactory, Quiet]
        )
        self.assertTrue(built[0].noisy)  # type: ignore[attr-defined]

    def test_flattenedLine(self) -> None:
        """
        An event whose C{{line}} is flattened under L{_twisted.FLATTENED_LINE}
        is shown as that text, not formatted again from its fields.
        """
        event = {
            "log_format": "{line}",
            "log_flattened": {_twisted.FLATTENED_LINE: "as written"},
            "line": "not this",
        }
        self.assertEqual(formatEvent(event), "as written")

    def test_sendBuffered(self) -> None:
        """
        A socket transport's C{write} buffers and calls the C{startWriting}
        L{_twisted.takeStartWriting} gave it; L{_twisted.sendBuffered} sends
        the buffer and says whether any of it is left; and
        L{_twisted.startWriting} has the reactor watch the socket.
        """
        reactor = MemoryReactorClock()
        taken: list[bytes] = []
        room = [100]

        class Socket(FileDescriptor):
            connected = 1

            def writeSomeData(self, data: Any) -> int:
                sent = bytes(data[: room[0]])
                taken.append(sent)
                return len(sent)

        transport = Socket(reactor)
        calls: list[None] = []
        _twisted.takeStartWriting(transport, lambda: calls.append(None))
        transport.write(b"abc")
        transport.write(b"def")
        self.assertEqual((calls, taken), ([None, None], []))
        self.assertFalse(_twisted.sendBuffered(transport))
        self.assertEqual(taken, [b"abcdef"])
        room[0] = 2
        transport.write(b"ghijk")
        self.assertTrue(_twisted.sendBuffered(transport))
        self.assertEqual(taken[1:], [b"gh"])
        self.assertNotIn(transport, reactor.getWriters())
        _twisted.startWriting(transport)
        self.assertIn(transport, reactor.getWriters())

    def test_requestUsesOfChannel(self) -> None:
        """
        What Twisted's request uses of its channel, to be answered and
        finished, with a producer, is L{_twisted.REQUEST_USES_OF_CHANNEL},
        which txlb's channel provides.
        """
        used: set[str] = set()
        site = server.Site(Resource())

        class Channel:
            def __getattr__(self, name: str) -> Any:
                used.add(name)
                if name in ("site", "factory"):
                    return site
                if name in ("getPeer", "getHost"):
                    return lambda: IPv4Address("TCP", "127.0.0.1", 1)
                return lambda *args: None

        request = server.Request(Channel())
        request.method, request.uri, request.clientproto = b"GET", b"/", b"HTTP/1.1"
        request.setResponseCode(404)
        request.write(b"x")
        request.registerProducer(object(), True)
        request.unregisterProducer()
        request.finish()
        request.getClientAddress()
        request.getHost()
        request.isSecure()
        self.assertEqual(used, _twisted.REQUEST_USES_OF_CHANNEL)
        # What the channel is, not what it has: the site, the transport.
        methods = used - {"site", "factory", "transport"}
        self.assertEqual({name for name in methods if not hasattr(ProxyChannel, name)}, set())

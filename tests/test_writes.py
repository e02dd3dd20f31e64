"""
L{txlb.writes}: writes sent at the end of the reactor's turn, over real
loopback sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.helpers import RawClient
from txlb.writes import WriteBatcher


class Sender(Protocol):
    """
    A protocol whose connection is adopted by a L{WriteBatcher}, counting
    the sends of its transport.
    """

    def __init__(self, batcher: WriteBatcher) -> None:
        self.batcher = batcher
        self.sends = 0

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.batcher.adopt(transport)
        writeSomeData = transport.writeSomeData

        def counted(data: bytes) -> Any:
            self.sends += 1
            return writeSomeData(data)

        transport.writeSomeData = counted


class WriteBatcherTests(TestCase):
    """
    Writes to an adopted TCP connection.
    """

    def setUp(self) -> None:
        self.collector = RawClient()
        factory = Factory.forProtocol(lambda: self.collector)
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        return endpoint.listen(factory).addCallback(self._listening)

    def _listening(self, port: Any) -> Deferred[None]:
        self.addCleanup(port.stopListening)
        self.batcher = WriteBatcher(reactor)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        return connectProtocol(endpoint, Sender(self.batcher)).addCallback(self._connected)

    def _connected(self, sender: Sender) -> None:
        self.sender = sender
        self.transport: Any = sender.transport
        self.addCleanup(self.transport.abortConnection)

    def test_writesOfOneTurnLeaveInOneSend(self) -> None:
        """
        Writes made in one turn of the reactor arrive in order, sent by one
        C{send}, and the socket is never registered for writing.
        """
        self.transport.write(b"head ")
        self.transport.writeSequence([b"body ", b"end"])
        self.assertNotIn(self.transport, reactor.getWriters())

        def sent(ignored: None) -> Deferred[bytes]:
            self.assertEqual(self.sender.sends, 1)
            self.assertNotIn(self.transport, reactor.getWriters())
            self.transport.loseConnection()
            return self.collector.closed

        done: Deferred[None] = Deferred()
        reactor.callLater(0, reactor.callLater, 0, done.callback, None)
        done.addCallback(sent)
        done.addCallback(self.assertEqual, b"head body end")
        return done

    def test_sendAtOnce(self) -> None:
        """
        L{WriteBatcher.send} sends what a connection has waiting at once,
        in one C{send}, and cancels the turn's call once nothing else waits.
        """
        self.transport.write(b"head ")
        self.transport.write(b"body")
        call = self.batcher._call
        self.batcher.send(self.transport)
        self.assertEqual(self.sender.sends, 1)
        self.assertFalse(call.active())
        self.assertNotIn(self.transport, reactor.getWriters())
        self.batcher.send(self.transport)
        self.assertEqual(self.sender.sends, 1)
        self.transport.loseConnection()
        return self.collector.closed.addCallback(self.assertEqual, b"head body")

    def test_moreThanTheSocketTakes(self) -> None:
        """
        What the socket does not take at once waits for it to be writable,
        as Twisted does, and arrives whole and in order.
        """
        data = bytes(range(256)) * (64 * 1024)  # 16 MiB
        self.transport.write(data)
        self.transport.write(b"after")
        self.transport.loseConnection()
        closed = self.collector.closed
        closed.addCallback(lambda received: self.assertTrue(received == data + b"after"))
        return closed

    def test_loseConnectionAfterWrite(self) -> None:
        """
        A connection closed after a write sends the write first.
        """
        self.transport.write(b"last words")
        self.transport.loseConnection()
        return self.collector.closed.addCallback(self.assertEqual, b"last words")

    def test_abortDropsTheWrite(self) -> None:
        """
        A connection aborted after a write closes without sending it, as
        Twisted's would.
        """
        self.transport.write(b"never")
        self.transport.abortConnection()
        return self.collector.closed.addCallback(self.assertEqual, b"")

    def test_failedSendClosesTheConnection(self) -> None:
        """
        A send that raises is logged, and the reactor, trying again,
        closes the connection rather than leave it waiting.
        """

        def broken(data: bytes) -> int:
            raise RuntimeError("broken send")

        self.transport.writeSomeData = broken
        lost: Deferred[None] = Deferred()
        connectionLost = self.sender.connectionLost
        self.sender.connectionLost = lambda reason: (connectionLost(reason), lost.callback(None))  # type: ignore[method-assign]
        self.transport.write(b"x")
        lost.addCallback(
            lambda ignored: self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        )
        return lost


class AdoptTests(SynchronousTestCase):
    """
    What L{WriteBatcher.adopt} leaves alone.
    """

    def test_otherTransports(self) -> None:
        """
        A transport that is not one of Twisted's sockets (here an in-memory
        one) writes as before.
        """
        transport = StringTransport()
        WriteBatcher(reactor).adopt(transport)
        transport.write(b"x")
        self.assertEqual(transport.value(), b"x")
        self.assertNotIn("startWriting", vars(transport))

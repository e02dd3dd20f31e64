"""
txlb's own HTTP/1.1 server channel (L{txlb.server.ProxyChannel}) keeps what
Twisted's channel gave: a head read the same however it is cut, pipelined
requests answered in order, C{Expect: 100-continue}, and reading paused
while too much of later requests waits.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Harness

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

HEAD = (
    b"POST /a?b=1 HTTP/1.1\r\nHost: h\r\nX-Rep: 1\r\nx-rep:  2 \r\n"
    b"Content-Length: 3\r\nAccept: */*\r\n\r\n"
)


class HeadTests(SynchronousTestCase):
    def test_cutAnywhere(self) -> None:
        """
        A head that comes in two pieces, cut at any byte, reaches the
        backend as the head that came whole (read at once) does.
        """
        whole = Harness(self)
        whole.client(HEAD + b"abc")
        _, toBackend = whole.backend()
        expected = toBackend.value()
        self.assertTrue(expected.endswith(b"\r\n\r\nabc"), expected)
        for cut in range(1, len(HEAD)):
            harness = Harness(self)
            channel, _ = harness.client(HEAD[:cut])
            channel.dataReceived(HEAD[cut:] + b"abc")
            harness.reactor.advance(0)
            _, toBackend = harness.backend()
            self.assertEqual(toBackend.value(), expected, cut)

    def test_byteByByte(self) -> None:
        """
        A head sent one byte at a time reaches the backend as the whole one.
        """
        whole = Harness(self)
        whole.client(HEAD + b"abc")
        _, toBackend = whole.backend()
        harness = Harness(self)
        channel, _ = harness.client()
        for byte in HEAD + b"abc":
            channel.dataReceived(bytes([byte]))
        harness.reactor.advance(0)
        _, toSecond = harness.backend()
        self.assertEqual(toSecond.value(), toBackend.value())


class PipeliningTests(SynchronousTestCase):
    def test_answeredInOrder(self) -> None:
        """
        Requests sent together are forwarded one after the other, the next
        once the one before is answered, and answered in order on the same
        connection.
        """
        harness = Harness(self)
        _, client = harness.client(
            b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        first, toFirst = harness.backend()
        self.assertTrue(toFirst.value().startswith(b"GET /1 "))
        self.assertEqual(harness.reactor.tcpClients, [])
        first.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
        harness.reactor.advance(0)
        second, toSecond = harness.backend()
        self.assertTrue(toSecond.value().startswith(b"GET /2 "))
        second.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
        harness.reactor.advance(0)
        answers = client.value()
        self.assertEqual(answers.count(b"HTTP/1.1 200 OK\r\n"), 2)
        self.assertLess(answers.index(b"\r\n\r\n1"), answers.index(b"\r\n\r\n2"))
        self.assertFalse(client.disconnecting)

    def test_tooMuchWaitingPauses(self) -> None:
        """
        More than 16 KiB of later requests waiting while one is answered
        pauses reading from the client, which resumes once it is answered.
        """
        harness = Harness(self)
        channel, client = harness.client(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        later = b"GET /2 HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 2000 + b"\r\n\r\n"
        for _ in range(8):
            channel.dataReceived(later)
        self.assertEqual((len(later) * 8 <= 16384, client.producerState), (True, "producing"))
        channel.dataReceived(later)
        self.assertEqual(client.producerState, "paused")
        # The next request is taken: eight wait, which is not too many.
        backend.dataReceived(OK)
        harness.reactor.advance(0)
        self.assertEqual(client.producerState, "producing")

    def test_tooMuchWaitingPausesWhileClientNotReading(self) -> None:
        """
        A client that does not read its answer (its socket full) and keeps
        sending is paused past 16 KiB all the same, and read again once its
        request is answered and its socket takes more.
        """
        harness = Harness(self)
        channel, client = harness.client(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        # What the transport does when its buffer is full.
        channel.pauseProducing()
        later = b"GET /2 HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 2000 + b"\r\n\r\n"
        for _ in range(9):
            channel.dataReceived(later)
        self.assertEqual(client.producerState, "paused")
        channel.resumeProducing()
        # Still answering, with too much waiting.
        self.assertEqual(client.producerState, "paused")
        backend.dataReceived(OK)
        harness.reactor.advance(0)
        self.assertEqual(client.producerState, "producing")


class ContinueTests(SynchronousTestCase):
    def test_continue(self) -> None:
        """
        An HTTP/1.1 request with C{Expect: 100-continue} gets C{100
        Continue} as soon as its head is in, and is forwarded then; its
        body follows as it comes.
        """
        harness = Harness(self)
        channel, client = harness.client(
            b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        self.assertEqual(client.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        backend, toBackend = harness.backend()
        channel.dataReceived(b"ab")
        harness.reactor.advance(0)
        self.assertTrue(toBackend.value().endswith(b"\r\n\r\nab"))
        backend.dataReceived(OK)
        harness.reactor.advance(0)
        self.assertTrue(client.value().endswith(b"\r\n\r\nok"))

    def test_noContinueForHTTP10(self) -> None:
        """
        An HTTP/1.0 client gets no C{100 Continue}, which it would not know.
        """
        harness = Harness(self)
        _, client = harness.client(
            b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
        )
        self.assertEqual(client.value(), b"")

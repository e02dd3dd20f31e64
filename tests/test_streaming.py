"""
Request bodies stream to the backend as they arrive, in memory.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import OK, Harness
from txlb import upload
from txlb.flow import HIGH_WATER

HEAD = b"PUT /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n"


class StreamingTests(SynchronousTestCase):
    def test_firstBytesBeforeLast(self) -> None:
        """
        The backend gets the head and the first body bytes while the client
        is still sending the rest.
        """
        harness = Harness(self)
        channel, _ = harness.client(HEAD + b"abcd")
        _, toBackend = harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"PUT /upload HTTP/1.1\r\nContent-Length: 10\r\nHost: h\r\n\r\nabcd",
        )
        channel.dataReceived(b"efghij")
        self.assertTrue(toBackend.value().endswith(b"\r\n\r\nabcdefghij"))

    def test_chunksBeforeConnectionWait(self) -> None:
        """
        Body bytes that arrive before the backend connection is made are
        sent once it is.
        """
        harness = Harness(self)
        channel, _ = harness.client(HEAD + b"abcd")
        channel.dataReceived(b"efghij")
        _, toBackend = harness.backend()
        self.assertTrue(toBackend.value().endswith(b"\r\n\r\nabcdefghij"))

    def test_slowBackendPausesClient(self) -> None:
        """
        While the backend takes no more, reading from the client pauses once
        the high-water mark waits, and resumes when the backend drains it.
        """
        harness = Harness(self)
        size = 4 * HIGH_WATER
        channel, client = harness.client(
            b"PUT /upload HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size
        )
        _, toBackend = harness.backend()
        toBackend.producer.pauseProducing()
        chunk = b"x" * 65536
        sent = 0
        while client.producerState == "producing" and sent < size:
            channel.dataReceived(chunk)
            sent += len(chunk)
        self.assertEqual(client.producerState, "paused")
        self.assertEqual(sent, HIGH_WATER)
        toBackend.producer.resumeProducing()
        self.assertEqual(client.producerState, "producing")
        self.assertEqual(toBackend.value().count(b"x"), HIGH_WATER)

    def test_retryResendsBody(self) -> None:
        """
        A retry after the backend got part of the body sends it all again.
        """
        harness = Harness(self)
        channel, client = harness.client(HEAD + b"abcd")
        first, _ = harness.backend()
        first.connectionLost(Failure(ConnectionLost()))
        channel.dataReceived(b"efghij")
        second, toSecond = harness.backend()
        self.assertTrue(toSecond.value().endswith(b"\r\n\r\nabcdefghij"))
        second.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_noRetryPastReplayLimit(self) -> None:
        """
        Once more of the body was sent than is kept for a retry, a failure is
        not retried.
        """
        self.patch(upload, "REPLAY_LIMIT", 3)
        harness = Harness(self)
        _, client = harness.client(HEAD + b"abcd")
        first, _ = harness.backend()
        first.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))

    def test_refusedRetriedPastReplayLimit(self) -> None:
        """
        A refused connection got none of the body, so it is retried whatever
        the body's size.
        """
        self.patch(upload, "REPLAY_LIMIT", 3)
        harness = Harness(self)
        channel, _ = harness.client(HEAD + b"abcd")
        harness.refuse(ConnectionRefusedError())
        channel.dataReceived(b"efghij")
        _, toSecond = harness.backend()
        self.assertTrue(toSecond.value().endswith(b"\r\n\r\nabcdefghij"))

    def test_earlyResponse(self) -> None:
        """
        A backend may answer before the body is all in: the client gets the
        answer at once, the backend connection (which cannot serve anything
        before the body ends) is closed, the rest of the body is dropped, and
        the client connection serves the next request.
        """
        harness = Harness(self, count=1)
        channel, client = harness.client(HEAD + b"abcd")
        backend, toBackend = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 403 Forbidden\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nno"
        )
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 403 Forbidden\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nno",
        )
        self.assertTrue(toBackend.disconnected)
        channel.dataReceived(b"efghij")
        self.assertTrue(toBackend.value().endswith(b"\r\n\r\nabcd"))
        client.clear()
        channel.dataReceived(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.backend()[0].dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_failureBeforeBodyEnds(self) -> None:
        """
        A 502 while the body is still coming goes out at once; the rest of
        the body is dropped as it arrives, without holding the client back.
        """
        harness = Harness(self, retries=0)
        channel, client = harness.client(HEAD + b"abcd")
        harness.refuse(ConnectionRefusedError())
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        channel.dataReceived(b"efghij")
        self.assertEqual(client.producerState, "producing")
        self.assertFalse(client.disconnecting)

    def test_clientLeavesMidUpload(self) -> None:
        """
        A client that leaves mid-upload gets the backend request cancelled
        and the backend released.
        """
        harness = Harness(self)
        channel, _ = harness.client(HEAD + b"abcd")
        _, toBackend = harness.backend()
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(toBackend.disconnecting)
        self.assertEqual(harness.backends[0].active, 0)


CHUNKED_HEAD = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_HEAD_TO_BACKEND = b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n"


class TrailerTests(SynchronousTestCase):
    """
    A chunked request's trailer fields reach the backend after its last
    chunk: a chunked body goes chunked to the backend, and can carry them.
    """

    def test_forwarded(self) -> None:
        """
        The trailer fields go in order and spelling, repeats included, their
        values without the whitespace around them, then the next request is
        served; C{Trailer}, which announced them, goes too.
        """
        harness = Harness(self)
        _, client = harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Sum:  9\t\r\nserver-timing: a\r\nX-Sum:1\r\nX-E:\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        backend, toBackend = harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\nTrailer: X-Sum\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-Sum: 9\r\nserver-timing: a\r\nX-Sum: 1\r\nX-E: \r\n\r\n",
        )
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        _, toNext = harness.backend()
        self.assertEqual(toNext.value(), b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_hopByHopDropped(self) -> None:
        """
        Hop-by-hop trailer fields, and those the head's C{Connection}
        names, are dropped, as in a head.
        """
        harness = Harness(self)
        harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nConnection: X-Hop\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n0\r\nConnection: close\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nX-T: 2\r\n\r\n"
        )
        _, toBackend = harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n0\r\nX-T: 2\r\n\r\n",
        )

    def test_tabAndObsText(self) -> None:
        """
        HTAB inside a trailer value, and obs-text, pass.
        """
        harness = Harness(self)
        harness.client(CHUNKED_HEAD + b"0\r\nX-T: a\tb\xe9\r\n\r\n")
        _, toBackend = harness.backend()
        self.assertEqual(toBackend.value(), CHUNKED_HEAD_TO_BACKEND + b"0\r\nX-T: a\tb\xe9\r\n\r\n")

    def test_everySplit(self) -> None:
        """
        However the body and its trailer section are cut into two reads,
        the backend gets the same data (in a chunk per read) and trailers,
        and the request after is read.
        """
        body = b"3\r\nabc\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        for cut in range(len(body) + 1):
            harness = Harness(self)
            channel, _ = harness.client(CHUNKED_HEAD)
            backend, toBackend = harness.backend()
            channel.dataReceived(body[:cut])
            channel.dataReceived(body[cut:])
            chunks = b"3\r\nabc\r\n"
            if 3 < cut < 6:
                chunks = b"%d\r\n%s\r\n%d\r\n%s\r\n" % (
                    cut - 3,
                    b"abc"[: cut - 3],
                    6 - cut,
                    b"abc"[cut - 3 :],
                )
            self.assertEqual(
                toBackend.value(),
                CHUNKED_HEAD_TO_BACKEND + chunks + b"0\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
                cut,
            )
            backend.dataReceived(OK)
            _, toNext = harness.backend()
            self.assertEqual(toNext.value(), b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", cut)

    def test_byteByByte(self) -> None:
        """
        A body and trailer section sent a byte at a time arrive whole.
        """
        harness = Harness(self)
        channel, _ = harness.client(CHUNKED_HEAD)
        _, toBackend = harness.backend()
        for byte in b"3\r\nabc\r\n0\r\nX-A: 1\r\n\r\n":
            channel.dataReceived(bytes([byte]))
        self.assertTrue(toBackend.value().endswith(b"\r\n0\r\nX-A: 1\r\n\r\n"))

    def test_retryResendsTrailers(self) -> None:
        """
        A retry sends the trailer fields again, after the body.
        """
        harness = Harness(self)
        harness.client(CHUNKED_HEAD + b"3\r\nabc\r\n0\r\nX-A: 1\r\n\r\n")
        harness.refuse(ConnectionRefusedError())
        _, toSecond = harness.backend()
        self.assertEqual(
            toSecond.value(), CHUNKED_HEAD_TO_BACKEND + b"3\r\nabc\r\n0\r\nX-A: 1\r\n\r\n"
        )


class UploadTimingTests(SynchronousTestCase):
    def test_responseTimeoutAfterBody(self) -> None:
        """
        The response timeout counts from the end of the upload: a slow
        client does not get a 504, nor the backend a failure, while its body
        is still coming.
        """
        harness = Harness(self, responseTimeout=30, clientTimeout=100)
        channel, client = harness.client(
            b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabcd"
        )
        harness.backend()
        harness.reactor.advance(60)
        self.assertEqual(client.value(), b"")
        channel.dataReceived(b"efghij")
        harness.reactor.advance(29)
        self.assertEqual(client.value(), b"")
        harness.reactor.advance(1)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 504 Gateway Time-out\r\n"))
        self.assertEqual(harness.backends[0].failures, 1)

    def test_chunkedClientLeaves(self) -> None:
        """
        A client that leaves in the middle of a chunked upload releases the
        backend, is logged, and causes no error.
        """
        harness = Harness(self)
        channel, _ = harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\na\r\naaaaaaaaaa\r\n"
        )
        _, toBackend = harness.backend()
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn("client disconnected", harness.accessLog()[-1])
        self.assertTrue(toBackend.disconnecting)

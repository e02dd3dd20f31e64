"""
HTTP/2 toward clients.

Most tests run in memory: a sans-I/O hyper-h2 client (L{MemoryH2Client})
in front of txlb's channel, the L{Harness}'s backends behind it, and the
reactor a L{MemoryReactorClock}, so what crosses each hop is checked byte
for byte and every timeout runs on the clock.  A socket that stops taking
bytes is a transport with a full buffer pausing its producer, as Twisted's
do (L{TCPTransport}); a backend sending faster than txlb reads is a
L{Backlog}.

A few run over real loopback sockets, as smoke tests of what memory would
fake: HTTP/2 over TLS picked in ALPN, and curl's HTTP/2 (nghttp2) with
prior knowledge and over TLS.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from unittest import skipIf

import h2
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import (
    OK,
    PKI,
    Backlog,
    H2Client,
    Harness,
    IntegrationTestCase,
    MemoryH2Client,
    RawBackendConnection,
    RawClient,
    Response,
    waitFor,
)
from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend
from txlb.client import BackendClient
from txlb.clientlimits import ClientLimits
from txlb.http2 import (
    CLOSE_TIMEOUT,
    PREFACE,
    RESET_BURST,
    RESETS_PER_SECOND,
    STREAM_HIGH_WATER,
    describeError,
)
from txlb.keytables import Region
from txlb.proxy import LoadBalancerResource
from txlb.ratelimit import Rate
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite, TLSListeningReactor
from txlb.settings import ProxySettings

ARROW = "\N{RIGHTWARDS ARROW}"

H2_VERSION = tuple(int(part) for part in h2.__version__.split(".")[:2])

#: The largest window HTTP/2 allows, which a client that never holds txlb
#: back by its windows opens.
WIDE = 2**31 - 1

#: What Twisted reads from a socket at once (and so what a backend's
#: L{Backlog} brings per turn), and how much a full socket holds here.
READ = 65536
SOCKET = 65536

#: What a slow client may hold in txlb per stream: the stream's and the
#: exchange's valve each pause at L{STREAM_HIGH_WATER}, and each may go over
#: it by one read from the backend.
HELD_PER_STREAM = 2 * (STREAM_HIGH_WATER + READ)


def wideOpen(harness: Harness, **kwargs: Any) -> MemoryH2Client:
    """
    A client whose windows never hold txlb back: only its socket can.
    """
    return MemoryH2Client(
        harness, settings={SettingCodes.INITIAL_WINDOW_SIZE: WIDE}, connectionWindow=WIDE, **kwargs
    )


def answer(client: MemoryH2Client, response: bytes) -> bytes:
    """
    Accept the oldest pending backend connection, answer C{response} on it,
    and let the client read.

    @return: What the backend received.
    """
    backend, toBackend = client.harness.backend()
    backend.dataReceived(response)
    client.pump()
    return toBackend.value()


def pattern(size: int) -> bytes:
    """
    C{size} bytes in which a byte lost, doubled or moved shows.
    """
    return (bytes(range(251)) * (size // 251 + 1))[:size]


def flood(client: MemoryH2Client, size: int) -> tuple[Backlog, bytes]:
    """
    Accept the oldest pending backend connection and have it send a
    response with a body of C{size} bytes, as fast as txlb reads it.

    @return: The backend's backlog, and the body.
    """
    backend, toBackend = client.harness.backend()
    body = pattern(size)
    backlog = Backlog(client.harness.reactor, backend, toBackend, READ)
    backlog.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body)
    client.pump()
    return backlog, body


def held(harness: Harness) -> int:
    """
    The response bytes txlb holds: waiting on HTTP/2 streams for the
    client, and in exchanges' queues for them.
    """
    streams = sum(
        stream.valve.waiting
        for channel in harness.site.channels
        for stream in getattr(channel, "streams", {}).values()
    )
    return streams + sum(exchange.valve.waiting for exchange in harness.resource._exchanges)


def upload(client: MemoryH2Client, streamID: int, size: int) -> int:
    """
    Send up to C{size} bytes on a stream as far as its window lets, ending
    it with the last.

    @return: How many bytes were sent.
    """
    sent = 0
    conn = client.conn
    while sent < size:
        chunk = min(conn.local_flow_control_window(streamID), conn.max_outbound_frame_size)
        chunk = min(chunk, size - sent)
        if chunk <= 0:
            break
        client.send(streamID, b"u" * chunk, end=sent + chunk == size)
        sent += chunk
    return sent


def assertSameBytes(testCase: SynchronousTestCase, received: bytes, expected: bytes) -> None:
    """
    Fail unless C{received} is C{expected}, saying where they part (a diff
    of megabytes would take minutes).
    """
    if received != expected:
        at = next(
            (i for i, (a, b) in enumerate(zip(received, expected)) if a != b),
            min(len(received), len(expected)),
        )
        testCase.fail(f"{len(received)} bytes, not {len(expected)}; they part at byte {at}")


def readSlowly(client: MemoryH2Client, streamID: int) -> None:
    """
    Reopen the windows for what has arrived, again and again, until the
    response on C{streamID} is over.
    """
    for _ in range(10_000):
        if client.responses[streamID].over:
            return
        client.reopen()
    raise AssertionError(f"stream {streamID} never ends")


def buffered(client: MemoryH2Client) -> int:
    """
    The bytes written to a client that does not read: past what its socket
    holds (L{SOCKET}), Twisted keeps them in txlb's memory.
    """
    return len(client.transport.value())


def refusals(harness: Harness, reason: str) -> bytes:
    """
    The count of client refusals for C{reason}, as exposed.
    """
    exposition = harness.resource.metrics.exposition()
    prefix = b'txlb_client_refusals_total{reason="%s"} ' % reason.encode()
    return exposition.split(prefix, 1)[1].split(b"\n", 1)[0]


class ForwardingTests(SynchronousTestCase):
    """
    Requests forwarded to HTTP/1.1 backends, and their answers.
    """

    def test_requestAsHTTP11(self) -> None:
        """
        An HTTP/2 request reaches the backend as HTTP/1.1: C{:authority} as
        C{Host}, first; the client's cookie fields joined with C{; } (RFC
        9113 section 8.2.3); the raw path; the other fields in order, named
        as an HTTP/1.1 request's are; C{TE: trailers} last, as for
        HTTP/1.1.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request(
            b"/a%2Fb/~c?x=%7e&y",
            fields=(
                (b"cookie", b"a=1"),
                (b"x-one", b"1"),
                (b"cookie", b"b=2"),
                (b"x-one", b"2"),
                (b"te", b"trailers"),
            ),
        )
        self.assertEqual(
            answer(client, OK),
            b"GET /a%2Fb/~c?x=%7e&y HTTP/1.1\r\nHost: example.com\r\nX-One: 1\r\nX-One: 2\r\n"
            b"Cookie: a=1; b=2\r\nTE: trailers\r\n\r\n",
        )
        self.assertEqual(client.responses[stream].body, b"ok")

    def test_responseAsHTTP2(self) -> None:
        """
        The backend's response reaches the client with its status and its
        fields in order, less the hop-by-hop and connection-specific ones
        (RFC 9113 section 8.2.2), with lower-case names, and its body.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request()
        answer(
            client,
            b"HTTP/1.1 299 Whatever\r\nSet-Cookie: a=1\r\nX-Trace: 7\r\nset-cookie: b=2\r\n"
            b"Connection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Date: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 4\r\n\r\nbody",
        )
        response = client.responses[stream]
        self.assertEqual(
            response.headers,
            [
                (b":status", b"299"),
                (b"set-cookie", b"a=1"),
                (b"x-trace", b"7"),
                (b"set-cookie", b"b=2"),
                (b"date", b"Sat, 01 Jan 2000 00:00:00 GMT"),
                (b"content-length", b"4"),
            ],
        )
        self.assertEqual((response.body, response.over), (b"body", True))

    def test_chunkedResponse(self) -> None:
        """
        A chunked response's body reaches the client as DATA, without the
        chunked coding and without a C{content-length}.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request()
        answer(
            client,
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        response = client.responses[stream]
        self.assertEqual(
            response.headers, [(b":status", b"200"), (b"date", b"Sat, 01 Jan 2000 00:00:00 GMT")]
        )
        self.assertEqual((response.body, response.over), (b"abcde", True))

    def test_head(self) -> None:
        """
        A HEAD response has the length the backend stated and no body.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request(method=b"HEAD")
        answer(
            client,
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 10\r\n\r\n",
        )
        response = client.responses[stream]
        self.assertEqual(dict(response.headers)[b"content-length"], b"10")
        self.assertEqual((response.body, response.over), (b"", True))

    def test_multiplexed(self) -> None:
        """
        Streams on one connection are forwarded at once, each on its own
        backend connection, and each gets its own answer, whatever the
        order of the answers.
        """
        client = MemoryH2Client(Harness(self))
        streams = [client.request(b"/%d" % i) for i in range(3)]
        backends = [client.harness.backend() for _ in streams]
        for backend, toBackend in reversed(backends):
            path = toBackend.value().split(b" ")[1]
            backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + path)
            client.pump()
        self.assertEqual(
            [client.responses[stream].body for stream in streams], [b"/0", b"/1", b"/2"]
        )

    def test_logged(self) -> None:
        """
        Each stream gets its access-log line, as an HTTP/1.1 request does.
        """
        client = MemoryH2Client(Harness(self))
        client.request(b"/logged")
        answer(client, OK)
        self.assertEqual(
            client.harness.accessLog(),
            [
                f"client=10.0.0.7 method=GET path=/logged {ARROW} backend=127.0.0.1:8081"
                " status=200 ms=0.0"
            ],
        )

    def test_forwardingFields(self) -> None:
        """
        The forwarding fields are added to an HTTP/2 request as to an
        HTTP/1.1 one, with the scheme of the client's connection.
        """
        client = MemoryH2Client(Harness(self, forwardedFor=True, via=True))
        client.request()
        self.assertEqual(
            answer(client, OK),
            b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Forwarded-For: 10.0.0.7\r\n"
            b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\nVia: 2 txlb\r\n\r\n",
        )

    def test_retried(self) -> None:
        """
        A request whose first backend refuses the connection goes to the
        next one.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request()
        client.harness.refuse(ConnectionRefusedError())
        backend, toBackend = client.harness.backend()
        self.assertEqual(toBackend.getPeer().port, 8082)
        backend.dataReceived(OK)
        client.pump()
        response = client.responses[stream]
        self.assertEqual((response.status, response.body), (b"200", b"ok"))

    def test_responseTimeout(self) -> None:
        """
        A backend that does not answer within the response timeout gets the
        stream a 504.
        """
        client = MemoryH2Client(Harness(self, responseTimeout=2, retries=0))
        stream = client.request()
        client.harness.backend()
        client.harness.reactor.advance(1.9)
        client.pump()
        self.assertFalse(client.responses[stream].over)
        client.harness.reactor.advance(0.1)
        client.pump()
        response = client.responses[stream]
        self.assertEqual(
            (response.status, response.body),
            (b"504", b"504 Gateway Time-out: backend 127.0.0.1:8081: response timeout\n"),
        )

    def test_cutShort(self) -> None:
        """
        A backend body cut short resets the stream, so the truncation shows;
        the connection serves on.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request()
        backend, _ = client.harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        backend.connectionLost(Failure(ConnectionDone()))
        client.pump()
        response = client.responses[stream]
        self.assertEqual((response.reset, response.body), (ErrorCodes.INTERNAL_ERROR, b"abc"))
        again = client.request()
        answer(client, OK)
        self.assertEqual(client.responses[again].body, b"ok")


class InterimResponseTests(SynchronousTestCase):
    """
    Interim (1xx) responses on HTTP/2 streams.
    """

    def test_continueAtOnce(self) -> None:
        """
        A request that expects 100-continue gets it as soon as its head is
        in, while its backend connection is still being made.
        """
        client = MemoryH2Client(Harness(self))
        expect = ((b"expect", b"100-continue"), (b"content-length", b"5"))
        stream = client.request(method=b"POST", fields=expect, end=False)
        self.assertEqual(client.responses[stream].interim, [[(b":status", b"100")]])
        self.assertEqual(len(client.harness.reactor.tcpClients), 1)

    def test_noContinueOverLimit(self) -> None:
        """
        A request that expects 100-continue with a stated length over the
        limit gets 413 instead.
        """
        client = MemoryH2Client(Harness(self, maxBodySize=10))
        expect = ((b"expect", b"100-continue"), (b"content-length", b"11"))
        stream = client.request(method=b"POST", fields=expect, end=False)
        response = client.responses[stream]
        self.assertEqual((response.interim, response.status), ([], b"413"))

    def test_earlyHints(self) -> None:
        """
        A 103 Early Hints from the backend reaches the client before the
        response.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request()
        backend, _ = client.harness.backend()
        backend.dataReceived(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
        client.pump()
        response = client.responses[stream]
        self.assertEqual(
            (response.interim, response.headers),
            ([[(b":status", b"103"), (b"link", b"</s.css>; rel=preload")]], []),
        )
        backend.dataReceived(OK)
        client.pump()
        self.assertEqual((response.status, response.body), (b"200", b"ok"))


class RefusalTests(SynchronousTestCase):
    """
    Requests and connections txlb refuses.
    """

    def test_hostDiffers(self) -> None:
        """
        A C{host} field that differs from C{:authority} is a malformed
        request: hyper-h2 ends the connection with GOAWAY, logged and
        counted; the backend gets nothing.
        """
        client = MemoryH2Client(Harness(self), validate=False)
        client.request(fields=((b"host", b"other.example"),))
        self.assertEqual(client.goaway, (1, ErrorCodes.PROTOCOL_ERROR))
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(client.harness.reactor.tcpClients, [])
        [line] = client.harness.accessLog()
        prefix = f"client=10.0.0.7 method=- path=- {ARROW} backend=- status=400 ms=0.0 error="
        self.assertTrue(line.startswith(prefix + '"HTTP/2 protocol error: '), line)
        self.assertIn("mismatched :authority and Host", line)
        self.assertEqual(refusals(client.harness, "http2"), b"1.0")

    def test_rateLimited(self) -> None:
        """
        A request over C{--rate-limit} gets 429 with C{retry-after} on its
        stream; the backend gets nothing; the connection carries on, and is
        served again once the rate allows.
        """
        harness = Harness(self, clientTimeout=600)
        region = Region.create(8)
        self.addCleanup(region.close)
        limits = harness.site.resource.clientLimits = ClientLimits(
            region, 0, harness.reactor.seconds
        )
        limits.configure(Rate(1, 60.0), 1, "ip", 0)
        client = MemoryH2Client(harness)
        first = client.request()
        backend, toBackend = harness.backend()
        backend.dataReceived(OK)
        client.pump()
        toBackend.clear()
        refused = client.request()
        self.assertEqual((toBackend.value(), harness.reactor.tcpClients), (b"", []))
        self.assertEqual(
            (client.responses[first].status, client.responses[refused].status), (b"200", b"429")
        )
        response = client.responses[refused]
        self.assertEqual(dict(response.headers)[b"retry-after"], b"60")
        self.assertEqual(response.body, b"429 Too Many Requests: over the rate limit\n")
        self.assertEqual(
            harness.accessLog()[-1],
            f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=429 ms=0.0"
            ' error="rate limited"',
        )
        harness.reactor.advance(60)
        again = client.request()
        answer(client, OK)
        self.assertEqual(client.responses[again].status, b"200")

    def test_connect(self) -> None:
        """
        CONNECT is not forwarded over HTTP/2: 501.  (hyper-h2 before 4.4,
        the newest for PyPy 3.9, refuses it itself, as a malformed request
        missing C{:path}: GOAWAY.)
        """
        client = MemoryH2Client(Harness(self), validate=False)
        streamID = client.conn.get_next_available_stream_id()
        client.responses[streamID] = response = Response()
        client.conn.send_headers(
            streamID, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
        )
        client.flush()
        if H2_VERSION < (4, 4):
            self.assertEqual(client.goaway, (streamID, ErrorCodes.PROTOCOL_ERROR))
        else:
            self.assertEqual(response.status, b"501")
        self.assertEqual(client.harness.reactor.tcpClients, [])

    def test_bodyTooLarge(self) -> None:
        """
        A body that goes over the limit gets 413 on its stream, which is
        then reset, and its backend connection closed; other streams carry
        on.
        """
        client = MemoryH2Client(Harness(self, maxBodySize=10))
        stream = client.request(method=b"POST", body=b"12345", end=False)
        _, toBackend = client.harness.backend()
        client.send(stream, b"6789012345")
        response = client.responses[stream]
        self.assertEqual(
            (response.headers, response.reset),
            ([(b":status", b"413"), (b"content-length", b"0")], ErrorCodes.NO_ERROR),
        )
        self.assertTrue(toBackend.disconnected)
        self.assertEqual(
            client.harness.accessLog(),
            [
                f"client=10.0.0.7 method=POST path=/ {ARROW} backend=127.0.0.1:8081 status=413"
                ' ms=0.0 error="a body over 10 bytes"'
            ],
        )
        again = client.request()
        answer(client, OK)
        self.assertEqual(client.responses[again].body, b"ok")

    def test_statedLengthTooLarge(self) -> None:
        """
        A C{content-length} over the limit gets 413 before anything is
        forwarded.
        """
        client = MemoryH2Client(Harness(self, maxBodySize=10))
        stream = client.request(
            method=b"POST", fields=((b"content-length", b"11"),), body=b"x" * 11
        )
        self.assertEqual(client.responses[stream].status, b"413")
        self.assertEqual(client.harness.reactor.tcpClients, [])

    def test_bodyAfterResponseNotCounted(self) -> None:
        """
        Body bytes that come after the response is complete are dropped,
        not counted against the limit: the response is not cut.
        """
        client = MemoryH2Client(Harness(self, maxBodySize=100), acknowledge=False)
        stream = client.request(method=b"POST", body=b"b" * 50, end=False)
        body = pattern(100000)
        answer(client, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        self.assertEqual(len(client.harness.accessLog()), 1)
        self.assertLess(len(client.responses[stream].body), len(body))
        client.send(stream, b"b" * 100)
        readSlowly(client, stream)
        response = client.responses[stream]
        self.assertEqual(response.reset, ErrorCodes.NO_ERROR)
        assertSameBytes(self, response.body, body)

    def test_protocolError(self) -> None:
        """
        A client that breaks HTTP/2 gets GOAWAY and is disconnected, with
        a line in the log and a count.
        """
        client = MemoryH2Client(Harness(self))
        # A CONTINUATION frame with no HEADERS before it.
        client.write(b"\x00\x00\x01\x09\x00\x00\x00\x00\x01x")
        client.pump()
        self.assertEqual(client.goaway, (0, ErrorCodes.PROTOCOL_ERROR))
        self.assertTrue(client.transport.disconnecting)
        [line] = client.harness.accessLog()
        self.assertTrue(
            line.startswith(
                f"client=10.0.0.7 method=- path=- {ARROW} backend=- status=400 ms=0.0"
                ' error="HTTP/2 protocol error: '
            ),
            line,
        )
        self.assertEqual(refusals(client.harness, "http2"), b"1.0")

    def test_h2cOff(self) -> None:
        """
        Without C{--h2c}, the HTTP/2 preface on a cleartext listener is an
        HTTP/1.1 request line txlb refuses.
        """
        harness = Harness(self)
        _, transport = harness.client(PREFACE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertTrue(transport.disconnecting)


class UploadTests(SynchronousTestCase):
    """
    Request bodies, streamed to the backend as they arrive and held back
    by the stream's window while the backend does not take them.
    """

    def test_streamed(self) -> None:
        """
        A request is forwarded as soon as its head is in, and its body goes
        to the backend as it arrives.
        """
        client = MemoryH2Client(Harness(self))
        stream = client.request(
            b"/up", b"POST", ((b"content-length", b"6"),), body=b"abc", end=False
        )
        backend, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST /up HTTP/1.1\r\nContent-Length: 6\r\nHost: example.com\r\n\r\nabc",
        )
        client.send(stream, b"def", end=True)
        self.assertEqual(
            toBackend.value(),
            b"POST /up HTTP/1.1\r\nContent-Length: 6\r\nHost: example.com\r\n\r\nabcdef",
        )
        backend.dataReceived(OK)
        client.pump()
        self.assertEqual(client.responses[stream].body, b"ok")

    def test_unknownLength(self) -> None:
        """
        A body without C{content-length} reaches the backend chunked.
        """
        client = MemoryH2Client(Harness(self))
        client.request(b"/up", b"POST", body=b"abc")
        _, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: example.com\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
        )

    def test_heldBackBySlowBackend(self) -> None:
        """
        An upload the backend does not read is held back by the stream's
        window, which txlb stops reopening; the client sends the rest once
        the backend reads, and all of it arrives.
        """
        client = MemoryH2Client(Harness(self))
        size = 4 * 1024 * 1024
        stream = client.request(b"/up", b"POST", ((b"content-length", b"%d" % size),), end=False)
        _, toBackend = client.harness.backend(bufferSize=SOCKET)
        sent = upload(client, stream, size)
        self.assertLess(sent, size // 2)
        [h2stream] = client.h2.streams.values()
        self.assertTrue(h2stream.uploadPaused)
        self.assertGreater(h2stream.unacknowledged, 0)
        received = b""
        while sent < size:
            received += toBackend.read()
            client.pump()
            sent += upload(client, stream, size - sent)
        while data := toBackend.read():
            received += data
            client.pump()
        assertSameBytes(
            self,
            received,
            b"POST /up HTTP/1.1\r\nContent-Length: %d\r\nHost: example.com\r\n\r\n" % size
            + b"u" * size,
        )
        self.assertEqual(h2stream.request.bodyBytes, size)

    def test_resetGivesBackConnectionWindow(self) -> None:
        """
        The body bytes held back from a paused upload count against the
        connection's window too; when the client resets that stream, they
        are given back, so uploads on other streams do not starve.  (Given
        back to hyper-h2, which sends the WINDOW_UPDATE when it sees fit:
        with a window this large, once half of it is to be given back.)
        """
        client = MemoryH2Client(Harness(self))
        channel = client.h2
        acknowledged = []
        acknowledge = channel.conn.acknowledge_received_data
        self.patch(
            channel.conn,
            "acknowledge_received_data",
            lambda size, streamID: (acknowledged.append(size), acknowledge(size, streamID)),
        )
        stream = client.request(b"/up", b"POST", end=False)
        client.harness.backend(bufferSize=SOCKET)
        sent = upload(client, stream, 4 * 1024 * 1024)
        self.assertGreater(channel.streams[stream].unacknowledged, 0)
        self.assertLess(sum(acknowledged), sent)
        client.reset(stream)
        self.assertEqual(sum(acknowledged), sent)


class TimeoutTests(SynchronousTestCase):
    """
    The client timeout, on the clock: an idle connection, and a stream
    that makes no progress.
    """

    def test_idleConnection(self) -> None:
        """
        A connection with no stream for the client timeout gets GOAWAY and
        is closed.
        """
        client = MemoryH2Client(Harness(self, clientTimeout=5))
        client.harness.reactor.advance(4.9)
        client.pump()
        self.assertIsNone(client.goaway)
        client.harness.reactor.advance(0.1)
        client.pump()
        self.assertEqual(client.goaway, (0, ErrorCodes.NO_ERROR))
        self.assertTrue(client.transport.disconnecting)

    def test_idleAfterStream(self) -> None:
        """
        The idle time counts from the end of the last stream.
        """
        client = MemoryH2Client(Harness(self, clientTimeout=5))
        client.harness.reactor.advance(4)
        stream = client.request()
        client.harness.reactor.advance(4)
        answer(client, OK)
        self.assertTrue(client.responses[stream].over)
        client.harness.reactor.advance(4.9)
        client.pump()
        self.assertIsNone(client.goaway)
        client.harness.reactor.advance(0.1)
        client.pump()
        self.assertEqual(client.goaway, (1, ErrorCodes.NO_ERROR))

    def test_stalledUpload(self) -> None:
        """
        A client that stops sending its request body for the client timeout
        has its stream reset, and the backend connection closed.
        """
        client = MemoryH2Client(Harness(self, clientTimeout=5))
        stream = client.request(
            b"/up", b"POST", ((b"content-length", b"10"),), body=b"abc", end=False
        )
        _, toBackend = client.harness.backend()
        client.harness.reactor.advance(4.9)
        client.send(stream, b"d")
        client.harness.reactor.advance(4.9)
        client.pump()
        self.assertFalse(client.responses[stream].over)
        client.harness.reactor.advance(0.1)
        client.pump()
        self.assertEqual(client.responses[stream].reset, ErrorCodes.CANCEL)
        self.assertTrue(toBackend.disconnected)

    def test_backendTakesNoBody(self) -> None:
        """
        An upload the backend stops taking is reset after the client
        timeout without progress, as an HTTP/1.1 connection silent that
        long is closed; the backend connection goes too.
        """
        harness = Harness(self, clientTimeout=5)
        client = MemoryH2Client(harness)
        stream = client.request(b"/up", b"POST", end=False)
        backend, toBackend = harness.backend(bufferSize=SOCKET)
        upload(client, stream, 4 * 1024 * 1024)
        harness.reactor.advance(4.9)
        client.pump()
        self.assertFalse(client.responses[stream].over)
        harness.reactor.advance(0.1)
        client.pump()
        self.assertEqual(client.responses[stream].reset, ErrorCodes.CANCEL)
        self.assertTrue(toBackend.disconnected)
        backend.connectionLost(Failure(ConnectionDone()))
        harness.reactor.advance(0)
        self.assertEqual((harness.resource.inFlight(), harness.site.busy()), (0, False))

    def test_responseHeldByWindow(self) -> None:
        """
        A response the client's window has held back for the client timeout
        is reset.
        """
        client = MemoryH2Client(Harness(self, clientTimeout=5), acknowledge=False)
        stream = client.request()
        flood(client, 1024 * 1024)
        client.harness.reactor.advance(4.9)
        client.pump()
        self.assertFalse(client.responses[stream].over)
        client.harness.reactor.advance(0.1)
        client.pump()
        self.assertEqual(client.responses[stream].reset, ErrorCodes.CANCEL)

    def test_slowBackendWaitedOn(self) -> None:
        """
        A stream whose request is all in and whose backend has yet to answer
        is not reset by the client timeout: the response timeout is the
        backend's.
        """
        client = MemoryH2Client(Harness(self, clientTimeout=5, responseTimeout=60))
        stream = client.request()
        backend, _ = client.harness.backend()
        client.harness.reactor.advance(50)
        client.pump()
        self.assertFalse(client.responses[stream].over)
        backend.dataReceived(OK)
        client.pump()
        self.assertEqual(client.responses[stream].body, b"ok")


class SlowClientTests(SynchronousTestCase):
    """
    Responses to a client that takes them slower than the backend sends:
    txlb holds a bounded part of each, whether the client's windows or its
    socket hold it back, and all of it arrives once the client reads.
    """

    def test_windowShut(self) -> None:
        """
        A client that does not reopen its window holds about
        L{STREAM_HIGH_WATER} of a large response in txlb and as much in the
        exchange's queue, not the response; once it reads, all of it
        arrives, whole.
        """
        client = MemoryH2Client(Harness(self), acknowledge=False)
        stream = client.request()
        size = 2 * 1024 * 1024
        backlog, body = flood(client, size)
        self.assertLessEqual(held(client.harness), HELD_PER_STREAM)
        self.assertGreater(backlog.waiting, size - HELD_PER_STREAM - 65535)
        self.assertEqual(len(client.responses[stream].body), 65535)
        readSlowly(client, stream)
        assertSameBytes(self, client.responses[stream].body, body)

    def test_socketFull(self) -> None:
        """
        A client that opened its windows wide but does not read its socket
        holds a bounded part of a large response in txlb: the socket's
        backpressure pauses the stream, not only the window.
        """
        client = wideOpen(Harness(self), bufferSize=SOCKET)
        stream = client.request()
        client.reading = False
        size = 2 * 1024 * 1024
        backlog, body = flood(client, size)
        self.assertTrue(client.h2.socketFull)
        self.assertLessEqual(held(client.harness), HELD_PER_STREAM)
        self.assertLessEqual(buffered(client), SOCKET + HELD_PER_STREAM)
        self.assertLess(backlog.read, SOCKET + 2 * HELD_PER_STREAM)
        client.reading = True
        client.pump()
        assertSameBytes(self, client.responses[stream].body, body)

    def test_manyStreams(self) -> None:
        """
        A client that does not read, with many streams of large responses,
        holds a bounded part of each in txlb.
        """
        client = wideOpen(Harness(self), bufferSize=SOCKET)
        streams = [client.request(b"/%d" % i) for i in range(20)]
        client.reading = False
        size = 1024 * 1024
        bodies = [flood(client, size)[1] for _ in streams]
        self.assertLessEqual(held(client.harness), len(streams) * HELD_PER_STREAM)
        self.assertLessEqual(buffered(client), SOCKET + HELD_PER_STREAM)
        client.reading = True
        client.pump()
        for stream, body in zip(streams, bodies):
            assertSameBytes(self, client.responses[stream].body, body)

    def test_connectionWindowShared(self) -> None:
        """
        When the client's connection window is what limits, the streams
        take it in turn: a second stream beside a large download gets its
        response while the download goes on, not after it.
        """
        client = MemoryH2Client(
            Harness(self), settings={SettingCodes.INITIAL_WINDOW_SIZE: WIDE}, acknowledge=False
        )
        large, small = client.request(b"/large"), client.request(b"/small")
        flood(client, 8 * 1024 * 1024)
        smallBody = pattern(100000)
        answer(client, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + smallBody)
        for _ in range(4):
            client.reopen()
        assertSameBytes(self, client.responses[small].body, smallBody)
        self.assertTrue(client.responses[small].over)
        self.assertLessEqual(len(client.responses[large].body), 3 * 65535)

    def test_endWhileSocketFull(self) -> None:
        """
        A response that completes while the socket is full, with nothing
        left to send, still ends its stream once the socket drains.
        """
        client = wideOpen(Harness(self), bufferSize=SOCKET)
        big = client.request(b"/big")
        client.reading = False
        _, body = flood(client, 2 * 1024 * 1024)
        self.assertTrue(client.h2.socketFull)
        empty = client.request(b"/empty")
        answer(client, b"HTTP/1.1 204 No Content\r\n\r\n")
        self.assertEqual(client.harness.resource.inFlight(), 1)
        client.reading = True
        client.pump()
        assertSameBytes(self, client.responses[big].body, body)
        self.assertEqual(
            (client.responses[empty].status, client.responses[empty].over), (b"204", True)
        )
        self.assertFalse(client.harness.site.busy())


class ResetTests(SynchronousTestCase):
    """
    Streams reset by the client or by txlb, and clients that reset too
    many (HTTP/2 Rapid Reset).
    """

    def test_clientResetCancelsOnlyItsRequest(self) -> None:
        """
        A stream the client resets closes its backend connection; the other
        streams on the connection carry on.
        """
        client = MemoryH2Client(Harness(self))
        first, second = client.request(b"/1"), client.request(b"/2")
        (_, toFirst), (secondBackend, toSecond) = client.harness.backend(), client.harness.backend()
        client.reset(first)
        self.assertEqual((toFirst.disconnected, toSecond.disconnected), (True, False))
        secondBackend.dataReceived(OK)
        client.pump()
        self.assertEqual(client.responses[second].body, b"ok")
        self.assertEqual(
            client.harness.accessLog(),
            [
                f"client=10.0.0.7 method=GET path=/1 {ARROW} backend=127.0.0.1:8081 status=-"
                ' ms=0.0 error="client disconnected"',
                f"client=10.0.0.7 method=GET path=/2 {ARROW} backend=127.0.0.1:8082 status=200"
                " ms=0.0",
            ],
        )

    def test_cutResponseEndsExchangeOnce(self) -> None:
        """
        A response cut by txlb (here, the backend going idle mid-body)
        resets its stream and ends its exchange once: one log line, and the
        backend's count of requests in flight back to 0.
        """
        harness = Harness(self, idleTimeout=2)
        client = MemoryH2Client(harness)
        stream = client.request()
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        client.pump()
        harness.reactor.advance(2)
        client.pump()
        response = client.responses[stream]
        self.assertEqual((response.reset, response.body), (ErrorCodes.INTERNAL_ERROR, b"abc"))
        self.assertEqual(
            harness.accessLog(),
            [
                f"client=10.0.0.7 method=GET path=/ {ARROW} backend=127.0.0.1:8081 status=200"
                ' ms=2000.0 error="idle timeout"'
            ],
        )
        self.assertEqual(harness.backends[0].active, 0)

    def resets(self, client: MemoryH2Client, count: int) -> None:
        """
        Open and reset C{count} streams, in one read.
        """
        for _ in range(count):
            streamID = client.conn.get_next_available_stream_id()
            client.conn.send_headers(
                streamID,
                [
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b":path", b"/"),
                    (b":authority", b"h"),
                ],
            )
            client.conn.reset_stream(streamID, ErrorCodes.CANCEL)
        client.flush()

    def test_rapidReset(self) -> None:
        """
        A client that resets more streams at once than txlb allows (HTTP/2
        Rapid Reset) gets GOAWAY with ENHANCE_YOUR_CALM, logged.
        """
        client = MemoryH2Client(Harness(self))
        self.resets(client, RESET_BURST)
        self.assertIsNone(client.goaway)
        self.resets(client, 1)
        self.assertEqual(client.goaway, (2 * RESET_BURST + 1, ErrorCodes.ENHANCE_YOUR_CALM))
        self.assertTrue(client.transport.disconnecting)
        self.assertIn(
            f'error="HTTP/2 protocol error: more than {RESETS_PER_SECOND} stream resets a second"',
            client.harness.accessLog()[-1],
        )

    def test_resetsAtTheAllowedRate(self) -> None:
        """
        A client may go on resetting L{RESETS_PER_SECOND} streams a second
        once its burst is spent.
        """
        client = MemoryH2Client(Harness(self))
        self.resets(client, RESET_BURST)
        for _ in range(2):
            client.harness.reactor.advance(1)
            self.resets(client, RESETS_PER_SECOND)
        self.assertIsNone(client.goaway)
        self.resets(client, 1)
        self.assertEqual(client.goaway[1], ErrorCodes.ENHANCE_YOUR_CALM)


class StopTests(SynchronousTestCase):
    def test_gracefulStop(self) -> None:
        """
        On a graceful stop the client gets GOAWAY naming the last stream
        taken; that stream's response still arrives, a new stream is
        refused, and the connection then closes.
        """
        harness = Harness(self)
        client = MemoryH2Client(harness)
        first = client.request()
        backend, _ = harness.backend()
        self.assertTrue(harness.site.busy())
        harness.site.closeIdleConnections()
        client.pump()
        self.assertEqual(client.goaway, (first, ErrorCodes.NO_ERROR))
        late = client.request()
        self.assertEqual(client.responses[late].reset, ErrorCodes.REFUSED_STREAM)
        self.assertEqual(harness.reactor.tcpClients, [])
        self.assertFalse(client.transport.disconnecting)
        backend.dataReceived(OK)
        client.pump()
        self.assertEqual(client.responses[first].body, b"ok")
        self.assertTrue(client.transport.disconnecting)
        self.assertFalse(harness.site.busy())

    def test_closeTimeout(self) -> None:
        """
        A closing connection whose client does not take what was written
        is cut after L{CLOSE_TIMEOUT} seconds.
        """
        harness = Harness(self)
        client = MemoryH2Client(harness)
        harness.site.closeIdleConnections()
        client.pump()
        self.assertEqual(
            (client.transport.disconnecting, client.transport.disconnected), (True, False)
        )
        harness.reactor.advance(CLOSE_TIMEOUT)
        self.assertTrue(client.transport.disconnected)


class LoopbackH2Client(H2Client, Protocol):
    """
    An L{H2Client} on a real connection.

    @ivar closed: Fires once the connection is closed.
    """

    def __init__(self, **kwargs: Any) -> None:
        H2Client.__init__(self, **kwargs)
        self.closed: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.flush()

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        self.receive(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class LoopbackTestCase(IntegrationTestCase):
    """
    txlb on a loopback port, with raw-socket backends.
    """

    def makeSite(self, backendPort: int, http2: bool = True, h2c: bool = True) -> LoadBalancerSite:
        client = BackendClient(reactor, connectTimeout=2)
        self.addCleanup(client.closeCachedConnections)
        self.resource = LoadBalancerResource(
            RoundRobin([Backend("127.0.0.1", backendPort)]), client, reactor
        )
        self.site = LoadBalancerSite(RoutingResource.single(self.resource), http2=http2, h2c=h2c)
        return self.site

    def listenTLS(self, site: LoadBalancerSite) -> tuple[int, str]:
        """
        Serve C{site} over TLS on a loopback port as C{localhost}, with a
        certificate from a throwaway CA.

        @return: The port, and the path of the CA's certificate.
        """
        pki = PKI(self.mktemp())
        certKey = pki.leaf("localhost", ["localhost"])
        with open(certKey[0], "rb") as c, open(certKey[1], "rb") as k:
            certificate = PrivateCertificate.loadPEM(c.read() + k.read())
        # As a TLS --listen listens (txlb.service).
        port = TLSListeningReactor(reactor).listenSSL(
            0, site, certificate.options(), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port, pki.caPath


class TLSTests(LoopbackTestCase):
    """
    HTTP/2 over real TLS, picked in ALPN.
    """

    async def connectTLS(self, site: LoadBalancerSite, protocols: list[bytes], client: Any) -> Any:
        port, caPath = self.listenTLS(site)
        with open(caPath, "rb") as f:
            authority = Certificate.loadPEM(f.read())
        options = optionsForClientTLS("localhost", authority, acceptableProtocols=protocols)
        endpoint = SSL4ClientEndpoint(reactor, "127.0.0.1", port, options)
        connected = await connectProtocol(endpoint, client)
        self.addCleanup(
            lambda: connected.transport.abortConnection() if connected.transport.connected else None
        )
        return connected

    async def test_alpnH2(self) -> None:
        """
        Over TLS, a client that picks h2 in ALPN speaks HTTP/2 to txlb, and
        the backend gets the request over HTTP/1.1.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        client = await self.connectTLS(
            self.makeSite(backendPort, h2c=False), [b"h2", b"http/1.1"], LoopbackH2Client()
        )
        response = await client.responses[client.request(b"/tls")].done
        self.assertEqual((response.status, response.body), (b"200", b"ok"))
        self.assertEqual(client.transport.negotiatedProtocol, b"h2")
        self.assertEqual(
            backendFactory.connections[0].received,
            b"GET /tls HTTP/1.1\r\nHost: example.com\r\n\r\n",
        )

    async def test_closeAtOnce(self) -> None:
        """
        An idle HTTP/2 connection over TLS closes as soon as its GOAWAY is
        sent, not after the close timeout (TLS sends its close alert only
        once no producer is registered).
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        site = self.makeSite(backendPort, h2c=False)
        site.resource.settings = ProxySettings(clientTimeout=0.2)
        client = await self.connectTLS(site, [b"h2"], LoopbackH2Client())
        response = await client.responses[client.request()].done
        self.assertEqual(response.body, b"ok")
        await waitFor(lambda: client.goaway is not None)
        await waitFor(lambda: client.closed.called, seconds=CLOSE_TIMEOUT / 3)

    async def test_alpnHTTP11(self) -> None:
        """
        A TLS client that offers only HTTP/1.1 is served HTTP/1.1.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        raw = RawClient()
        await self.connectTLS(self.makeSite(backendPort, h2c=False), [b"http/1.1"], raw)
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertTrue((await raw.closed).startswith(b"HTTP/1.1 200 OK\r\n"))

    async def test_http2Off(self) -> None:
        """
        With HTTP/2 turned off, ALPN settles on HTTP/1.1 even for a client
        that prefers h2.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        raw = RawClient()
        site = self.makeSite(backendPort, http2=False, h2c=False)
        await self.connectTLS(site, [b"h2", b"http/1.1"], raw)
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await waitFor(lambda: raw.received.endswith(b"ok"))
        self.assertEqual(raw.transport.negotiatedProtocol, b"http/1.1")
        self.assertTrue(raw.received.startswith(b"HTTP/1.1 200 OK\r\n"))

    async def plainClient(self, site: LoadBalancerSite) -> RawClient:
        """
        A client connected in the clear to C{site}'s TLS port.
        """
        port, _ = self.listenTLS(site)
        raw = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
        return raw

    async def test_plainHTTP(self) -> None:
        """
        HTTP in the clear sent to a TLS port gets nginx's 400 in the clear,
        whether its first bytes come at once or in pieces; the refusal is
        logged and counted, and no backend hears of it.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        site = self.makeSite(backendPort, h2c=False)
        answer = (
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 46\r\nConnection: close\r\n\r\n"
            b"The plain HTTP request was sent to HTTPS port\n"
        )
        raw = await self.plainClient(site)
        raw.transport.write(b"GET /plain HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(await raw.closed, answer)
        raw = await self.plainClient(site)
        raw.transport.write(b"DEL")
        await deferLater(reactor, 0.05)
        raw.transport.write(b"ETE /x HTTP/1.1\r\n")
        self.assertEqual(await raw.closed, answer)
        self.assertEqual(backendFactory.connections, [])
        lines = [
            formatEvent(e)
            for e in events
            if e.get("log_namespace") == "txlb.proxy.LoadBalancerResource" and "flag" in e
        ]
        self.assertEqual(len(lines), 2, lines)
        for line in lines:
            self.assertTrue(
                line.startswith(
                    f"client=127.0.0.1 method=- path=- {ARROW} backend=- status=400 ms="
                )
                and line.endswith(' error="plain HTTP sent to a TLS port"'),
                line,
            )
        self.assertIn(
            b'txlb_client_refusals_total{reason="plain_http"} 2.0',
            self.resource.metrics.exposition(),
        )

    async def test_notHTTPLeftToTLS(self) -> None:
        """
        Bytes that are neither TLS nor a request line are left to TLS, which
        closes the connection; they are no plain-HTTP refusal.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        raw = await self.plainClient(self.makeSite(backendPort, h2c=False))
        raw.transport.write(b"\x00\x01\x02\x03 hello\r\n")
        self.assertFalse((await raw.closed).startswith(b"HTTP/1.1 400"))
        self.assertIn(
            b'txlb_client_refusals_total{reason="plain_http"} 0.0',
            self.resource.metrics.exposition(),
        )


def _curlSpeaksHTTP2() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    version = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
    return "HTTP2" in version


class AnswerWhenUploaded(RawBackendConnection):
    """
    A backend that answers 201 once the request's body, C{0123456789}, is
    all in.
    """

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.received.endswith(b"\r\n\r\n0123456789"):
            self.transport.write(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nyes")


@skipIf(not _curlSpeaksHTTP2(), "needs curl with HTTP/2 (nghttp2)")
class CurlTests(LoopbackTestCase):
    """
    txlb against another HTTP/2 implementation than the tests' own: curl's
    (nghttp2), over loopback.
    """

    async def curl(self, *arguments: str) -> bytes:
        output, errors, code = await getProcessOutputAndValue(
            shutil.which("curl"), ["-sS", "--max-time", "10", *arguments]
        )
        self.assertEqual((code, errors), (0, b""))
        return output

    async def test_priorKnowledge(self) -> None:
        """
        curl with prior knowledge gets the response over h2c, and its upload
        reaches the backend whole.

        The backend answers once the whole body is in: a response complete
        before the request is makes txlb reset the stream with NO_ERROR (RFC
        9113 section 8.1), which curl 7.88 takes for an error (curl
        issue 22984).
        """

        backendFactory, backendPort = self.rawBackend(lambda c: None)
        backendFactory.protocol = AnswerWhenUploaded
        lb = self.listen(self.makeSite(backendPort))
        output = await self.curl(
            "--http2-prior-knowledge",
            "--data-binary",
            "0123456789",
            "-w",
            " %{http_version} %{http_code}",
            f"http://127.0.0.1:{lb}/curl",
        )
        self.assertEqual(output, b"yes 2 201")

    async def test_alpn(self) -> None:
        """
        curl over TLS picks h2 in ALPN.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        port, caPath = self.listenTLS(self.makeSite(backendPort, h2c=False))
        output = await self.curl(
            "--cacert",
            caPath,
            "--resolve",
            f"localhost:{port}:127.0.0.1",
            "-w",
            " %{http_version}",
            f"https://localhost:{port}/",
        )
        self.assertEqual(output, b"ok 2")

    async def test_plainHTTPToTLS(self) -> None:
        """
        curl sending http:// to a TLS port reads nginx's 400, not an empty
        reply.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        port, _ = self.listenTLS(self.makeSite(backendPort, h2c=False))
        output = await self.curl("-w", " %{http_code}", f"http://127.0.0.1:{port}/")
        self.assertEqual(output, b"The plain HTTP request was sent to HTTPS port\n 400")


class ErrorDescriptionTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        hyper-h2's errors reach the log in ASCII, without double quotes, and
        at most about 200 characters long.
        """
        cases = [
            (ProtocolError("bad frame"), "bad frame"),
            (ProtocolError(), "ProtocolError"),
            (ProtocolError("b'say \"hi\"'"), "b'say 'hi''"),
            (ProtocolError("caf\u00e9"), "caf\\xe9"),
            (ProtocolError("x" * 300), "x" * 200 + "..."),
        ]
        for error, text in cases:
            self.assertEqual(describeError(error), text)


def strictClient(testCase: SynchronousTestCase, **settings: Any) -> MemoryH2Client:
    """
    A client that sends what hyper-h2 would refuse to.
    """
    return MemoryH2Client(Harness(testCase, **settings), validate=False)


#: Every control character but HTAB.
CONTROLS = [bytes([byte]) for byte in [*range(0x20), 0x7F] if byte != 0x09]


class StrictFieldTests(SynchronousTestCase):
    """
    HTTP/2 requests are held to the rules HTTP/1.1 requests are, where
    hyper-h2 does not apply them itself: what the backend gets is an
    HTTP/1.1 request, in memory here.
    """

    def test_controlCharacterInValue(self) -> None:
        """
        A control character in a field value gets 400 on its stream, logged
        and counted as on HTTP/1.1, and the connection goes on.  hyper-h2
        refuses NUL, LF and CR itself, ending the connection with GOAWAY.
        """
        client = strictClient(self)
        for control in CONTROLS:
            if control in (b"\x00", b"\n", b"\r"):
                continue
            streamID = client.request(fields=[(b"x-a", b"a" + control + b"b")])
            self.assertEqual(client.responses[streamID].status, b"400", control)
        self.assertIsNone(client.goaway)
        self.assertEqual(client.harness.reactor.tcpClients, [])
        self.assertEqual(refusals(client.harness, "header"), b"29.0")
        self.assertEqual(
            client.harness.accessLog()[0],
            f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=400 ms=0.0"
            ' error="a control character (0x01) in a header value"',
        )
        for control in [b"\x00", b"\n", b"\r"]:
            client = strictClient(self)
            client.request(fields=[(b"x-a", b"a" + control + b"b")])
            self.assertEqual(client.goaway[1], ErrorCodes.PROTOCOL_ERROR, control)
            self.assertEqual(refusals(client.harness, "http2"), b"1.0")

    def test_controlCharacterInName(self) -> None:
        """
        A control character in a field name ends the connection with
        GOAWAY: hyper-h2 refuses every one (RFC 9113 section 8.2.1).
        """
        for control in CONTROLS:
            client = strictClient(self)
            client.request(fields=[(b"x-" + control + b"a", b"1")])
            self.assertEqual(client.goaway[1], ErrorCodes.PROTOCOL_ERROR, control)
            self.assertEqual(client.harness.reactor.tcpClients, [])
            self.assertEqual(refusals(client.harness, "http2"), b"1.0")

    def test_controlCharacterInAuthority(self) -> None:
        """
        C{:authority}, which becomes C{Host}, is held to the same rule.
        (hyper-h2 strips a control character at either end of a value it
        sends, so these are in the middle.)
        """
        client = strictClient(self)
        streamID = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            streamID,
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/"),
                (b":authority", b"h\x0bx"),
            ],
            end_stream=True,
        )
        client.flush()
        self.assertEqual(client.responses[streamID].status, b"400")
        self.assertEqual(client.harness.reactor.tcpClients, [])

    def test_tabAndObsText(self) -> None:
        """
        HTAB inside a value, and obs-text, pass to the backend.
        """
        client = strictClient(self)
        client.request(fields=[(b"x-a", b"a\tb"), (b"x-b", b"caf\xe9")])
        _, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"GET / HTTP/1.1\r\nHost: example.com\r\nX-A: a\tb\r\nX-B: caf\xe9\r\n\r\n",
        )

    def test_nameNotAToken(self) -> None:
        """
        A name HTTP/2 allows but that is not an HTTP/1.1 token (C{x(y},
        which Twisted's L{Headers} refuses to hold) gets 400.
        """
        client = strictClient(self)
        streamID = client.request(fields=[(b"x(y", b"1")])
        self.assertEqual(client.responses[streamID].status, b"400")
        self.assertEqual(
            client.harness.accessLog(),
            [
                f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=400 ms=0.0"
                ' error="a header name that is not a token"'
            ],
        )

    def test_requestLine(self) -> None:
        """
        A C{:path} with a space or a control character, or a C{:method}
        that is not a token, cannot make the backend's request line: 400.
        """
        client = strictClient(self)
        for method, path in [(b"GET", b"/a b"), (b"GET", b"/a\x0bb"), (b"G T", b"/")]:
            streamID = client.request(method=method, path=path)
            self.assertEqual(client.responses[streamID].status, b"400", (method, path))
        self.assertEqual(client.harness.reactor.tcpClients, [])
        self.assertEqual(refusals(client.harness, "request_line"), b"3.0")

    def test_contentLength(self) -> None:
        """
        A content-length of 2^63 or more gets 400; one of 2^63 - 1, 413
        under C{--max-body-size}.
        """
        client = strictClient(self, maxBodySize=4)
        for length, status in [
            (b"18446744073709551651", b"400"),
            (b"9223372036854775808", b"400"),
            (b"9223372036854775807", b"413"),
        ]:
            streamID = client.request(
                fields=[(b"content-length", length)], method=b"POST", end=False
            )
            self.assertEqual(client.responses[streamID].status, status, length)
        self.assertEqual(client.harness.reactor.tcpClients, [])
        self.assertEqual(refusals(client.harness, "framing"), b"2.0")


class TrailerTests(SynchronousTestCase):
    """
    An HTTP/2 request's trailers, in memory.
    """

    def test_forwarded(self) -> None:
        """
        A body without a content-length goes chunked, and the trailers
        after it, less the hop-by-hop ones.
        """
        client = strictClient(self)
        client.request(
            method=b"POST",
            body=b"abc",
            trailers=[(b"x-sum", b"1"), (b"x-other", b"2"), (b"x-sum", b"3")],
        )
        _, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: example.com\r\n\r\n"
            b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-other: 2\r\nx-sum: 3\r\n\r\n",
        )

    def test_droppedWithLength(self) -> None:
        """
        A body sent with a content-length cannot carry trailers: they are
        dropped.
        """
        client = strictClient(self)
        client.request(
            fields=[(b"content-length", b"3")],
            method=b"POST",
            body=b"abc",
            trailers=[(b"x-sum", b"1")],
        )
        _, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nHost: example.com\r\n\r\nabc",
        )

    def test_refused(self) -> None:
        """
        A trailer that breaks the rules of an HTTP/1.1 trailer gets 400 on
        its stream, which is reset; the backend never gets the body's end.
        """
        for trailer, error in [
            ((b"x-t", b"a\x0bb"), "a control character (0x0b) in a trailer value"),
            ((b"x(t", b"1"), "a trailer name that is not a token"),
            ((b"content-length", b"3"), "a Content-Length in the trailer section"),
        ]:
            client = strictClient(self)
            streamID = client.conn.get_next_available_stream_id()
            head = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/")]
            client.conn.send_headers(streamID, [*head, (b":authority", b"example.com")])
            client.conn.send_data(streamID, b"abc")
            client.flush()
            _, toBackend = client.harness.backend()
            client.conn.send_headers(streamID, [trailer], end_stream=True)
            client.flush()
            self.assertEqual(client.responses[streamID].status, b"400", trailer)
            self.assertEqual(
                toBackend.value(),
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: example.com\r\n\r\n"
                b"3\r\nabc\r\n",
            )
            client.harness.reactor.advance(0)
            self.assertTrue(toBackend.disconnected)
            self.assertEqual(
                client.harness.accessLog(),
                [
                    f"client=10.0.0.7 method=POST path=/ {ARROW} backend=127.0.0.1:8081"
                    f' status=400 ms=0.0 error="{error}"'
                ],
            )

"""
HTTP/2 toward clients, over real loopback sockets: a hyper-h2 client in
front, raw-socket HTTP/1.1 backends behind, so what crosses each hop is
checked byte for byte.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any
from unittest import skipIf

import h2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import (
    PKI,
    Flood,
    Harness,
    IntegrationTestCase,
    RawBackendConnection,
    RawClient,
    freePort,
    waitFor,
)
from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend
from txlb.client import BackendClient
from txlb.clientlimits import ClientLimits
from txlb.flow import HIGH_WATER
from txlb.http2 import CLOSE_TIMEOUT, PREFACE, STREAM_HIGH_WATER, HTTP2Channel, describeError
from txlb.keytables import Region
from txlb.proxy import LoadBalancerResource
from txlb.ratelimit import Rate
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite, TLSListeningReactor
from txlb.settings import ProxySettings

ARROW = "\N{RIGHTWARDS ARROW}"


class Response:
    """
    What came back on one stream.
    """

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim: list[list[tuple[bytes, bytes]]] = []
        self.body = b""
        self.reset: int | None = None
        self.ended: Deferred[Response] = Deferred()

    @property
    def status(self) -> bytes:
        return dict(self.headers)[b":status"]


class H2Client(Protocol):
    """
    An HTTP/2 client on hyper-h2 that records each stream's response.

    @ivar acknowledge: Whether to reopen the windows as response data
        arrives; a client that does not is one that cannot keep up.
    @ivar validate: Whether hyper-h2 checks the requests sent, which a test
        of a malformed one turns off.
    """

    def __init__(
        self,
        settings: dict[int, int] | None = None,
        acknowledge: bool = True,
        validate: bool = True,
    ) -> None:
        config = H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate
        )
        self.conn = H2Connection(config)
        self.settings = settings or {}
        self.acknowledge = acknowledge
        self.responses: dict[int, Response] = {}
        #: The last stream ID and error code of the GOAWAY received.
        self.goaway: tuple[int, int] | None = None
        self.buffer = b""
        self.closed: Deferred[None] = Deferred()
        self.unacknowledged: list[tuple[int, int]] = []

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        if self.settings:
            self.conn.update_settings(self.settings)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def request(
        self,
        path: bytes = b"/",
        method: bytes = b"GET",
        fields: tuple[tuple[bytes, bytes], ...] = (),
        body: bytes | None = None,
        end: bool = True,
        authority: bytes = b"example.com",
    ) -> int:
        """
        Send a request; its body, if given, in one DATA frame.

        @param end: Whether the request ends there.
        @return: Its stream ID.
        """
        streamID = self.conn.get_next_available_stream_id()
        head = [(b":method", method), (b":scheme", b"http"), (b":path", path)]
        if authority:
            head.append((b":authority", authority))
        self.responses[streamID] = Response()
        self.conn.send_headers(streamID, head + list(fields), end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(streamID, body, end_stream=end)
        self.flush()
        return streamID

    def send(self, streamID: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(streamID, data, end_stream=end)
        self.flush()

    def reset(self, streamID: int) -> None:
        self.conn.reset_stream(streamID, ErrorCodes.CANCEL)
        self.flush()

    def reopen(self) -> None:
        """
        Reopen the windows for all the data received so far.
        """
        for streamID, size in self.unacknowledged:
            self.conn.acknowledge_received_data(size, streamID)
        self.unacknowledged = []
        self.flush()

    def response(self, streamID: int) -> Deferred[Response]:
        return self.responses[streamID].ended

    def dataReceived(self, data: bytes) -> None:
        """
        Hand the frames to hyper-h2, less GOAWAY, which is recorded: after
        one, hyper-h2 takes no more frames, where RFC 9113 section 6.8 lets
        the streams it names finish.
        """
        self.buffer += data
        frames = []
        while len(self.buffer) >= 9:
            end = 9 + int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < end:
                break
            frame, self.buffer = self.buffer[:end], self.buffer[end:]
            if frame[3] == 0x7:
                self.goaway = (
                    int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF,
                    int.from_bytes(frame[13:17], "big"),
                )
            else:
                frames.append(frame)
        for event in self.conn.receive_data(b"".join(frames)):
            response = self.responses.get(getattr(event, "stream_id", 0))
            if isinstance(event, ResponseReceived):
                response.headers = list(event.headers)
            elif isinstance(event, InformationalResponseReceived):
                response.interim.append(list(event.headers))
            elif isinstance(event, DataReceived):
                response.body += event.data
                if self.acknowledge:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                else:
                    self.unacknowledged.append((event.stream_id, event.flow_controlled_length))
            elif isinstance(event, StreamEnded):
                response.ended.callback(response)
            elif isinstance(event, StreamReset):
                response.reset = event.error_code
                if not response.ended.called:
                    response.ended.callback(response)
        self.flush()

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


H2_VERSION = tuple(int(part) for part in h2.__version__.split(".")[:2])

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def upload(client: H2Client, streamID: int, size: int) -> int:
    """
    Send C{size} bytes on a stream as fast as its window lets, ending it
    with the last; stop early when the window stays shut for half a second.

    @return: How many bytes were sent.
    """
    sent = shut = 0
    while sent < size and shut < 50:
        window = client.conn.local_flow_control_window(streamID)
        chunk = min(window, client.conn.max_outbound_frame_size, size - sent)
        if chunk > 0:
            client.send(streamID, b"u" * chunk, end=sent + chunk == size)
            sent += chunk
            shut = 0
            await deferLater(reactor, 0)
        else:
            shut += 1
            await deferLater(reactor, 0.01)
    return sent


class HTTP2TestCase(IntegrationTestCase):
    def setUp(self) -> None:
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def makeSite(
        self, backends: list[Backend], http2: bool = True, h2c: bool = True, **settings: Any
    ) -> LoadBalancerSite:
        """
        txlb's site in front of C{backends}, with the given settings.
        """
        client = BackendClient(reactor, connectTimeout=2)
        self.addCleanup(client.closeCachedConnections)
        self.resource = LoadBalancerResource(
            RoundRobin(backends), client, reactor, settings=ProxySettings(**settings)
        )
        self.site = LoadBalancerSite(RoutingResource.single(self.resource), http2=http2, h2c=h2c)
        return self.site

    def balancerH2(self, backends: list[Backend], **settings: Any) -> int:
        """
        txlb taking h2c on a loopback port, in front of C{backends}.
        """
        return self.listen(self.makeSite(backends, **settings))

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

    async def h2client(self, port: int, **kwargs: Any) -> H2Client:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await connectProtocol(endpoint, H2Client(**kwargs))
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        return client

    def accessLog(self) -> list[str]:
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_namespace") == "txlb.proxy.LoadBalancerResource"
        ]

    async def h2channel(self) -> HTTP2Channel:
        """
        The HTTP/2 connection txlb has, once it has one.
        """
        await waitFor(lambda: any(isinstance(c, HTTP2Channel) for c in self.site.channels))
        [channel] = self.site.channels
        return channel


class ForwardingTests(HTTP2TestCase):
    async def test_requestAsHTTP11(self) -> None:
        """
        An HTTP/2 request reaches the backend as HTTP/1.1: C{:authority} as
        C{Host}, first; the client's cookie fields joined with C{; } (RFC
        9113 section 8.2.3); the raw path; the other fields in order, named
        as an HTTP/1.1 request's are; C{TE: trailers} last, as for
        HTTP/1.1.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
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
        response = await client.response(stream)
        self.assertEqual(response.body, b"ok")
        self.assertEqual(
            backendFactory.connections[0].received,
            b"GET /a%2Fb/~c?x=%7e&y HTTP/1.1\r\nHost: example.com\r\nX-One: 1\r\nX-One: 2\r\n"
            b"Cookie: a=1; b=2\r\nTE: trailers\r\n\r\n",
        )

    async def test_responseAsHTTP2(self) -> None:
        """
        The backend's response reaches the client with its status and its
        fields in order, less the hop-by-hop and connection-specific ones
        (RFC 9113 section 8.2.2), with lower-case names, and its body.
        """
        response = (
            b"HTTP/1.1 299 Whatever\r\nSet-Cookie: a=1\r\nX-Trace: 7\r\nset-cookie: b=2\r\n"
            b"Connection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
            b"Date: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 4\r\n\r\nbody"
        )
        _, backendPort = self.rawBackend(lambda c: c.transport.write(response))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        answer = await client.response(client.request())
        self.assertEqual(
            answer.headers,
            [
                (b":status", b"299"),
                (b"set-cookie", b"a=1"),
                (b"x-trace", b"7"),
                (b"set-cookie", b"b=2"),
                (b"date", b"Sat, 01 Jan 2000 00:00:00 GMT"),
                (b"content-length", b"4"),
            ],
        )
        self.assertEqual(answer.body, b"body")

    async def test_chunkedResponse(self) -> None:
        """
        A chunked response's body reaches the client as DATA, without the
        chunked coding and without a C{content-length}.
        """
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        _, backendPort = self.rawBackend(lambda c: c.transport.write(chunked))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        answer = await client.response(client.request())
        self.assertEqual(answer.body, b"abcde")
        self.assertNotIn(b"content-length", dict(answer.headers))
        self.assertNotIn(b"transfer-encoding", dict(answer.headers))

    async def test_head(self) -> None:
        """
        A HEAD response has the length the backend stated and no body.
        """
        _, backendPort = self.rawBackend(
            lambda c: c.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        )
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        answer = await client.response(client.request(method=b"HEAD"))
        self.assertEqual(dict(answer.headers)[b"content-length"], b"10")
        self.assertEqual(answer.body, b"")

    async def test_multiplexed(self) -> None:
        """
        Streams on one connection are forwarded at once, each on its own
        backend connection, and each gets its own answer.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        streams = [client.request(b"/%d" % i) for i in range(3)]
        await waitFor(lambda: len(backendFactory.connections) == 3)
        for connection in reversed(backendFactory.connections):
            path = connection.received.split(b" ")[1]
            connection.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(path), path)
            )
        answers = [await client.response(stream) for stream in streams]
        self.assertEqual([answer.body for answer in answers], [b"/0", b"/1", b"/2"])

    async def test_logged(self) -> None:
        """
        Each stream gets its access-log line, as an HTTP/1.1 request does.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        await client.response(client.request(b"/logged"))
        [line] = self.accessLog()
        self.assertIn(
            f"method=GET path=/logged \N{RIGHTWARDS ARROW} backend=127.0.0.1:{backendPort} status=200",
            line,
        )

    async def test_retried(self) -> None:
        """
        A request whose first backend refuses the connection goes to the
        next one.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        lb = self.balancerH2([Backend("127.0.0.1", freePort()), Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        answer = await client.response(client.request())
        self.assertEqual((answer.status, answer.body), (b"200", b"ok"))

    async def test_responseTimeout(self) -> None:
        """
        A backend that does not answer in time gets the stream a 504.
        """
        _, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], responseTimeout=0.2, retries=0)
        client = await self.h2client(lb)
        answer = await client.response(client.request())
        self.assertEqual(answer.status, b"504")
        self.assertIn(b"response timeout", answer.body)

    async def test_cutShort(self) -> None:
        """
        A backend body cut short resets the stream, so the truncation shows;
        the connection serves on.
        """
        backendFactory, backendPort = self.rawBackend(
            lambda c: (
                c.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
                c.transport.loseConnection(),
            )
        )
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        answer = await client.response(client.request())
        self.assertEqual(answer.reset, ErrorCodes.INTERNAL_ERROR)
        self.assertEqual(answer.body, b"abc")
        backendFactory.handler = lambda c: c.transport.write(OK)
        self.assertEqual((await client.response(client.request())).body, b"ok")


class RefusalTests(HTTP2TestCase):
    async def test_hostDiffers(self) -> None:
        """
        A C{host} field that differs from C{:authority} is a malformed
        request: hyper-h2 ends the connection with GOAWAY, logged and
        counted; the backend gets nothing.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb, validate=False)
        client.request(fields=((b"host", b"other.example"),))
        await client.closed
        self.assertEqual(client.goaway, (1, ErrorCodes.PROTOCOL_ERROR))
        self.assertEqual(backendFactory.connections, [])
        [line] = self.accessLog()
        self.assertIn("mismatched :authority and Host", line)
        metrics = self.resource.metrics.exposition()
        self.assertIn(b'txlb_client_refusals_total{reason="http2"} 1.0\n', metrics)

    async def test_rateLimited(self) -> None:
        """
        A request over C{--rate-limit} gets 429 with C{retry-after} on its
        stream; the backend gets nothing; the connection carries on.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        region = Region.create(8)
        self.addCleanup(region.close)
        limits = self.site.resource.clientLimits = ClientLimits(region, 0, reactor.seconds)
        limits.configure(Rate(1, 60.0), 1, "ip", 0)
        client = await self.h2client(lb)
        first = await client.response(client.request())
        refused = await client.response(client.request())
        self.assertEqual((first.status, refused.status), (b"200", b"429"))
        headers = dict(refused.headers)
        self.assertEqual(headers[b"retry-after"], b"60")
        self.assertEqual(refused.body, b"429 Too Many Requests: over the rate limit\n")
        self.assertEqual(len(backendFactory.connections), 1)
        self.assertIn("status=429 ms=", self.accessLog()[-1])

    async def test_connect(self) -> None:
        """
        CONNECT is not forwarded over HTTP/2: 501.  (hyper-h2 before 4.4,
        the newest for PyPy 3.9, refuses it itself, as a malformed request
        missing C{:path}: GOAWAY.)
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb, validate=False)
        streamID = client.conn.get_next_available_stream_id()
        client.responses[streamID] = Response()
        client.conn.send_headers(
            streamID, [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
        )
        client.flush()
        if H2_VERSION < (4, 4):
            await client.closed
            self.assertEqual(client.goaway, (streamID, ErrorCodes.PROTOCOL_ERROR))
        else:
            self.assertEqual((await client.response(streamID)).status, b"501")
        self.assertEqual(backendFactory.connections, [])

    async def test_bodyTooLarge(self) -> None:
        """
        A body that goes over the limit gets 413 on its stream, which is
        then reset; other streams carry on.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], maxBodySize=10)
        client = await self.h2client(lb)
        stream = client.request(method=b"POST", body=b"12345", end=False)
        await waitFor(lambda: len(backendFactory.connections) == 1)
        client.send(stream, b"6789012345")
        answer = await client.response(stream)
        await waitFor(lambda: answer.reset is not None)
        self.assertEqual((answer.status, answer.reset), (b"413", ErrorCodes.NO_ERROR))
        await backendFactory.connections[0].closed
        self.assertIn("status=413", self.accessLog()[0])
        self.assertIn('error="a body over 10 bytes"', self.accessLog()[0])
        backendFactory.handler = lambda c: c.transport.write(OK)
        self.assertEqual((await client.response(client.request())).body, b"ok")

    async def test_statedLengthTooLarge(self) -> None:
        """
        A C{content-length} over the limit gets 413 before anything is
        forwarded.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], maxBodySize=10)
        client = await self.h2client(lb)
        stream = client.request(
            method=b"POST", fields=((b"content-length", b"11"),), body=b"x" * 11
        )
        self.assertEqual((await client.response(stream)).status, b"413")
        self.assertEqual(backendFactory.connections, [])

    async def test_protocolError(self) -> None:
        """
        A client that breaks HTTP/2 gets GOAWAY and is disconnected, with
        a line in the log and a count.
        """
        lb = self.balancerH2([Backend("127.0.0.1", freePort())])
        client = await self.client(lb, PREFACE + b"\x00\x00\x01\x09\x00\x00\x00\x00\x01x")
        received = await client.closed
        self.assertIn(b"\x07", received)  # a GOAWAY frame's type
        self.assertIn("HTTP/2 protocol error", self.accessLog()[0])
        metrics = self.resource.metrics.exposition()
        self.assertIn(b'txlb_client_refusals_total{reason="http2"} 1.0\n', metrics)

    async def test_h2cOff(self) -> None:
        """
        Without C{--h2c}, the HTTP/2 preface on a cleartext listener is an
        HTTP/1.1 request line txlb refuses.
        """
        lb = self.listen(self.makeSite([Backend("127.0.0.1", 1)], h2c=False))
        raw = await self.client(lb, PREFACE)
        self.assertTrue((await raw.closed).startswith(b"HTTP/1.1 400 Bad Request\r\n"))


class FlowControlTests(HTTP2TestCase):
    async def test_uploadStreams(self) -> None:
        """
        A request is forwarded as soon as its head is in, and its body goes
        to the backend as it arrives.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        stream = client.request(
            b"/up", b"POST", ((b"content-length", b"6"),), body=b"abc", end=False
        )
        await waitFor(lambda: bool(backendFactory.connections))
        backend = backendFactory.connections[0]
        await waitFor(lambda: backend.received.endswith(b"abc"))
        client.send(stream, b"def", end=True)
        await waitFor(lambda: backend.received.endswith(b"abcdef"))
        self.assertTrue(backend.received.startswith(b"POST /up HTTP/1.1\r\n"))
        self.assertIn(b"\r\nContent-Length: 6\r\n", backend.received)
        backend.transport.write(OK)
        self.assertEqual((await client.response(stream)).body, b"ok")

    async def test_uploadOfUnknownLength(self) -> None:
        """
        A body without C{content-length} reaches the backend chunked.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        client.request(b"/up", b"POST", body=b"abc")
        await waitFor(lambda: bool(backendFactory.connections))
        backend = backendFactory.connections[0]
        await waitFor(lambda: backend.received.endswith(b"0\r\n\r\n"))
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", backend.received)
        self.assertTrue(backend.received.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))

    async def test_slowBackendUpload(self) -> None:
        """
        An upload the backend does not read is held back by the stream's
        window, which txlb stops reopening; the client sends the rest once
        the backend reads.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.pauseProducing())
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        size = 8 * 1024 * 1024
        stream = client.request(b"/up", b"POST", ((b"content-length", b"%d" % size),), end=False)
        sent = await upload(client, stream, size)
        # Stalled: txlb holds the window shut.  (The rest of what was sent
        # waits in the kernel's socket buffers, a few MiB on loopback.)
        self.assertLess(sent, size)
        [h2stream] = [s for c in self.site.channels for s in c.streams.values()]
        self.assertTrue(h2stream.uploadPaused)
        self.assertGreater(h2stream.unacknowledged, 0)
        request = h2stream.request
        backend = backendFactory.connections[0]
        backend.transport.resumeProducing()
        sent += await upload(client, stream, size - sent)
        self.assertEqual(sent, size)
        await waitFor(lambda: len(backend.received.partition(b"\r\n\r\n")[2]) == size)
        self.assertEqual(request.bodyBytes, size)

    async def test_slowClientWindow(self) -> None:
        """
        A client that does not reopen its window holds about
        L{STREAM_HIGH_WATER} of a large response in txlb (plus the
        exchange's queue), not the response; once it reads, all of it
        arrives, whole.
        """
        size = 8 * 1024 * 1024
        body = bytes(range(256)) * (size // 256)
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
        _, backendPort = self.rawBackend(lambda c: c.transport.write(head + body))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb, acknowledge=False)
        stream = client.request()
        await deferLater(reactor, 1.0)
        [h2stream] = [s for c in self.site.channels for s in c.streams.values()]
        [exchange] = self.resource._exchanges
        held = h2stream.valve.waiting + exchange.valve.waiting
        self.assertLess(held, STREAM_HIGH_WATER + 2 * HIGH_WATER)
        self.assertLessEqual(len(client.responses[stream].body), 65535)
        for _ in range(2000):
            client.reopen()
            if client.responses[stream].ended.called:
                break
            await deferLater(reactor, 0.005)
        answer_ = await client.response(stream)
        self.assertEqual(answer_.body, body)

    async def test_slowClientSocket(self) -> None:
        """
        A client that opened its windows wide but does not read its socket
        holds a bounded part of a large response in txlb: the socket's
        backpressure pauses the stream, not only the window.
        """
        size = 32 * 1024 * 1024
        window = 2**31 - 1

        def answer(connection: RawBackendConnection) -> None:
            connection.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            connection.flood = Flood(connection.transport, size)

        backendFactory, backendPort = self.rawBackend(answer)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb, settings={SettingCodes.INITIAL_WINDOW_SIZE: window})
        client.conn.increment_flow_control_window(window - 65535)
        stream = client.request()
        client.transport.pauseProducing()
        await waitFor(lambda: bool(backendFactory.connections))
        flood = backendFactory.connections[0].flood
        written = await flood.stalled()
        self.assertLess(written, size // 2)
        [h2stream] = [s for c in self.site.channels for s in c.streams.values()]
        [exchange] = self.resource._exchanges
        self.assertLess(
            h2stream.valve.waiting + exchange.valve.waiting, STREAM_HIGH_WATER + 2 * HIGH_WATER
        )
        client.transport.resumeProducing()
        answer_ = await client.response(stream)
        self.assertEqual(len(answer_.body), size)

    async def test_resetCancelsOnlyItsRequest(self) -> None:
        """
        A stream the client resets closes its backend connection; the other
        streams on the connection carry on.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        first, second = client.request(b"/1"), client.request(b"/2")
        await waitFor(lambda: len(backendFactory.connections) == 2)
        byPath = {c.received.split(b" ")[1]: c for c in backendFactory.connections}
        client.reset(first)
        await byPath[b"/1"].closed
        byPath[b"/2"].transport.write(OK)
        self.assertEqual((await client.response(second)).body, b"ok")
        self.assertIn("client disconnected", "\n".join(self.accessLog()))


class StopTests(HTTP2TestCase):
    async def test_gracefulStop(self) -> None:
        """
        On a graceful stop the client gets GOAWAY naming the last stream
        taken; that stream's response still arrives, a new stream is
        refused, and the connection then closes.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        first = client.request()
        await waitFor(lambda: len(backendFactory.connections) == 1)
        self.assertTrue(self.site.busy())
        self.site.closeIdleConnections()
        await waitFor(lambda: client.goaway is not None)
        self.assertEqual(client.goaway, (first, ErrorCodes.NO_ERROR))
        late = client.request()
        self.assertEqual((await client.response(late)).reset, ErrorCodes.REFUSED_STREAM)
        backendFactory.connections[0].transport.write(OK)
        self.assertEqual((await client.response(first)).body, b"ok")
        await client.closed
        self.assertFalse(self.site.busy())

    async def test_idleTimeout(self) -> None:
        """
        A connection with no stream for the client timeout gets GOAWAY and
        is closed.
        """
        lb = self.balancerH2([Backend("127.0.0.1", freePort())], clientTimeout=0.2)
        client = await self.h2client(lb)
        await client.closed
        self.assertIsNotNone(client.goaway)


class TLSTests(HTTP2TestCase):
    async def connectTLS(
        self, site: LoadBalancerSite, protocols: list[bytes], client: Protocol
    ) -> Protocol:
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

    def tlsSite(self, backendPort: int, http2: bool = True) -> LoadBalancerSite:
        return self.makeSite([Backend("127.0.0.1", backendPort)], http2=http2, h2c=False)

    async def test_alpnH2(self) -> None:
        """
        Over TLS, a client that picks h2 in ALPN speaks HTTP/2 to txlb, and
        the backend gets the request over HTTP/1.1.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        client = await self.connectTLS(self.tlsSite(backendPort), [b"h2", b"http/1.1"], H2Client())
        answer = await client.response(client.request(b"/tls"))
        self.assertEqual((answer.status, answer.body), (b"200", b"ok"))
        self.assertEqual(client.transport.negotiatedProtocol, b"h2")
        self.assertTrue(backendFactory.connections[0].received.startswith(b"GET /tls HTTP/1.1\r\n"))

    async def test_closeAtOnce(self) -> None:
        """
        An idle HTTP/2 connection over TLS closes as soon as its GOAWAY is
        sent, not after the close timeout (TLS sends its close alert only
        once no producer is registered).
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        site = self.tlsSite(backendPort)
        site.resource.settings = ProxySettings(clientTimeout=0.2)
        client = await self.connectTLS(site, [b"h2"], H2Client())
        self.assertEqual((await client.response(client.request())).body, b"ok")
        await waitFor(lambda: client.goaway is not None)
        await waitFor(lambda: client.closed.called, seconds=CLOSE_TIMEOUT / 3)

    async def test_alpnHTTP11(self) -> None:
        """
        A TLS client that offers only HTTP/1.1 is served HTTP/1.1.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        raw = RawClient()
        await self.connectTLS(self.tlsSite(backendPort), [b"http/1.1"], raw)
        raw.transport.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertTrue((await raw.closed).startswith(b"HTTP/1.1 200 OK\r\n"))

    async def test_http2Off(self) -> None:
        """
        With HTTP/2 turned off, ALPN settles on HTTP/1.1 even for a client
        that prefers h2.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        raw = RawClient()
        await self.connectTLS(self.tlsSite(backendPort, http2=False), [b"h2", b"http/1.1"], raw)
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
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        site = self.tlsSite(backendPort)
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
            for e in self.events
            if e.get("log_namespace") == "txlb.proxy.LoadBalancerResource" and "flag" in e
        ]
        self.assertEqual(len(lines), 2, lines)
        for line in lines:
            self.assertTrue(
                line.startswith(
                    "client=127.0.0.1 method=- path=- \N{RIGHTWARDS ARROW} backend=- status=400 ms="
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
        raw = await self.plainClient(self.tlsSite(backendPort))
        raw.transport.write(b"\x00\x01\x02\x03 hello\r\n")
        self.assertFalse((await raw.closed).startswith(b"HTTP/1.1 400"))
        self.assertIn(
            b'txlb_client_refusals_total{reason="plain_http"} 0.0',
            self.resource.metrics.exposition(),
        )


class ReviewedTests(HTTP2TestCase):
    async def test_forwardedFor(self) -> None:
        """
        The forwarding fields are added to an HTTP/2 request as to an
        HTTP/1.1 one, with the scheme of the client's connection.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], forwardedFor=True, via=True)
        client = await self.h2client(lb)
        self.assertEqual((await client.response(client.request())).status, b"200")
        received = backendFactory.connections[0].received
        self.assertIn(b"\r\nX-Forwarded-For: 127.0.0.1\r\n", received)
        self.assertIn(b"\r\nX-Forwarded-Proto: http\r\n", received)
        self.assertIn(b"\r\nVia: 2 txlb\r\n", received)

    async def test_endWhileSocketFull(self) -> None:
        """
        A response that completes while the socket is full, with nothing
        left to send, still ends its stream once the socket drains.
        """
        size = 16 * 1024 * 1024

        def answer(connection: RawBackendConnection) -> None:
            if connection.received.startswith(b"GET /big"):
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
                connection.transport.write(head)
                connection.flood = Flood(connection.transport, size)
            else:
                connection.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")

        backendFactory, backendPort = self.rawBackend(answer)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        window = 2**31 - 1
        client = await self.h2client(lb, settings={SettingCodes.INITIAL_WINDOW_SIZE: window})
        client.conn.increment_flow_control_window(window - 65535)
        big = client.request(b"/big")
        client.transport.pauseProducing()
        channel = await self.h2channel()
        await waitFor(lambda: channel.socketFull)
        empty = client.request(b"/empty")
        await waitFor(lambda: len(backendFactory.connections) == 2)
        await waitFor(lambda: len(self.resource._exchanges) == 1)
        client.transport.resumeProducing()
        self.assertEqual(len((await client.response(big)).body), size)
        self.assertEqual((await client.response(empty)).status, b"204")
        self.assertFalse(self.site.busy())

    async def test_abortEndsOnce(self) -> None:
        """
        A response cut by txlb (here, the backend going idle mid-body)
        resets its stream and ends its exchange once: one log line, and the
        backend's count of requests in flight back to 0.
        """
        _, backendPort = self.rawBackend(
            lambda c: c.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        )
        backend = Backend("127.0.0.1", backendPort)
        lb = self.balancerH2([backend], idleTimeout=0.2)
        client = await self.h2client(lb)
        answer = await client.response(client.request())
        self.assertEqual((answer.reset, answer.body), (ErrorCodes.INTERNAL_ERROR, b"abc"))
        await deferLater(reactor, 0.1)
        [line] = self.accessLog()
        self.assertIn('error="idle timeout"', line)
        self.assertEqual(backend.active, 0)

    async def test_expectContinue(self) -> None:
        """
        A request that expects 100-continue gets it at once; one whose
        stated length is over the limit gets 413 instead.
        """
        _, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], maxBodySize=10)
        client = await self.h2client(lb)
        expect = ((b"expect", b"100-continue"), (b"content-length", b"5"))
        stream = client.request(method=b"POST", fields=expect, end=False)
        await waitFor(lambda: bool(client.responses[stream].interim))
        self.assertEqual(client.responses[stream].interim, [[(b":status", b"100")]])
        tooLarge = ((b"expect", b"100-continue"), (b"content-length", b"11"))
        refused = client.request(method=b"POST", fields=tooLarge, end=False)
        answer = await client.response(refused)
        self.assertEqual((answer.interim, answer.status), ([], b"413"))

    async def test_earlyHints(self) -> None:
        """
        A 103 Early Hints from the backend reaches the HTTP/2 client before
        the response.
        """
        _, backendPort = self.rawBackend(
            lambda c: c.transport.write(
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK
            )
        )
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        answer = await client.response(client.request())
        self.assertEqual(
            answer.interim, [[(b":status", b"103"), (b"link", b"</s.css>; rel=preload")]]
        )
        self.assertEqual(answer.body, b"ok")

    async def test_stalledUpload(self) -> None:
        """
        A client that stops sending its request body for the client timeout
        has its stream reset, and the backend connection closed.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], clientTimeout=0.3)
        client = await self.h2client(lb)
        stream = client.request(
            b"/up", b"POST", ((b"content-length", b"10"),), body=b"abc", end=False
        )
        answer = await client.response(stream)
        self.assertEqual(answer.reset, ErrorCodes.CANCEL)
        await backendFactory.connections[0].closed

    async def test_limitAfterResponse(self) -> None:
        """
        Body bytes that come after the response is complete are dropped,
        not counted against the limit: the response is not cut.
        """
        body = b"r" * 100000
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        _, backendPort = self.rawBackend(lambda c: c.transport.write(head + body))
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], maxBodySize=100)
        client = await self.h2client(lb, acknowledge=False)
        stream = client.request(b"/", b"POST", body=b"b" * 50, end=False)
        await waitFor(lambda: len(self.accessLog()) == 1)
        client.send(stream, b"b" * 100)
        await deferLater(reactor, 0.2)
        client.reopen()
        answer = await client.response(stream)
        self.assertEqual(answer.body, body)

    async def test_resetReopensConnectionWindow(self) -> None:
        """
        The body bytes held back from a paused upload count against the
        connection's window too; when the client resets that stream, they
        are given back, so uploads on other streams do not starve.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.pauseProducing())
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        channel = await self.h2channel()
        acknowledged = []
        acknowledge = channel.conn.acknowledge_received_data
        self.patch(
            channel.conn,
            "acknowledge_received_data",
            lambda size, streamID: (acknowledged.append(size), acknowledge(size, streamID)),
        )
        stream = client.request(b"/up", b"POST", end=False)
        sent = await upload(client, stream, 64 * 1024 * 1024)
        self.assertGreater(channel.streams[stream].unacknowledged, 0)
        client.reset(stream)
        await waitFor(lambda: sum(acknowledged) == sent)

    async def test_rapidReset(self) -> None:
        """
        A client that opens and resets streams faster than txlb allows
        (HTTP/2 Rapid Reset) gets GOAWAY with ENHANCE_YOUR_CALM.
        """
        _, backendPort = self.rawBackend(lambda c: None)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        client = await self.h2client(lb)
        for _ in range(3000):
            stream = client.request()
            client.conn.reset_stream(stream, ErrorCodes.CANCEL)
        client.flush()
        await client.closed
        self.assertEqual(client.goaway[1], ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertIn("stream resets a second", "\n".join(self.accessLog()))

    async def test_slowClientManyStreams(self) -> None:
        """
        A client that does not read, with many streams of large responses,
        holds about two L{STREAM_HIGH_WATER}s per stream in txlb.
        """
        size, streams = 8 * 1024 * 1024, 20

        def answer(connection: RawBackendConnection) -> None:
            connection.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            connection.flood = Flood(connection.transport, size)

        backendFactory, backendPort = self.rawBackend(answer)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        window = 2**31 - 1
        client = await self.h2client(lb, settings={SettingCodes.INITIAL_WINDOW_SIZE: window})
        client.conn.increment_flow_control_window(window - 65535)
        for i in range(streams):
            client.request(b"/%d" % i)
        client.transport.pauseProducing()
        await waitFor(
            lambda: sum(hasattr(c, "flood") for c in backendFactory.connections) == streams
        )
        for connection in backendFactory.connections:
            await connection.flood.stalled()
        waiting = sum(s.valve.waiting for c in self.site.channels for s in c.streams.values())
        queued = sum(e.valve.waiting for e in self.resource._exchanges)
        # Each side may overshoot by what one backend read brings (64 KiB).
        self.assertLess(waiting + queued, streams * 4 * STREAM_HIGH_WATER)


def _curlSpeaksHTTP2() -> bool:
    curl = shutil.which("curl")
    if curl is None:
        return False
    version = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
    return "HTTP2" in version


@skipIf(not _curlSpeaksHTTP2(), "needs curl with HTTP/2 (nghttp2)")
class CurlTests(HTTP2TestCase):
    """
    txlb against another HTTP/2 implementation than the tests' own: curl's
    (nghttp2).
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
        """
        backendFactory, backendPort = self.rawBackend(
            lambda c: c.transport.write(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nyes")
        )
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)])
        output = await self.curl(
            "--http2-prior-knowledge",
            "--data-binary",
            "0123456789",
            "-w",
            " %{http_version} %{http_code}",
            f"http://127.0.0.1:{lb}/curl",
        )
        self.assertEqual(output, b"yes 2 201")
        await waitFor(lambda: backendFactory.connections[0].received.endswith(b"0123456789"))

    async def test_alpn(self) -> None:
        """
        curl over TLS picks h2 in ALPN.
        """
        _, backendPort = self.rawBackend(lambda c: c.transport.write(OK))
        site = self.makeSite([Backend("127.0.0.1", backendPort)], h2c=False)
        port, caPath = self.listenTLS(site)
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
        site = self.makeSite([Backend("127.0.0.1", backendPort)], h2c=False)
        port, _ = self.listenTLS(site)
        output = await self.curl("-w", " %{http_code}", f"http://127.0.0.1:{port}/")
        self.assertEqual(output, b"The plain HTTP request was sent to HTTPS port\n 400")


class SecondReviewTests(HTTP2TestCase):
    async def test_backendTakesNoBody(self) -> None:
        """
        An upload the backend stops taking is reset after the client
        timeout without progress, as an HTTP/1.1 connection silent that
        long is closed; the backend connection goes too.
        """
        backendFactory, backendPort = self.rawBackend(lambda c: c.transport.pauseProducing())
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], clientTimeout=0.5)
        client = await self.h2client(lb)
        stream = client.request(b"/up", b"POST", end=False)
        await upload(client, stream, 64 * 1024 * 1024)
        answer = await client.response(stream)
        self.assertEqual(answer.reset, ErrorCodes.CANCEL)
        # The backend sees its connection closed once it reads again.
        backendFactory.connections[0].transport.resumeProducing()
        await backendFactory.connections[0].closed
        self.assertEqual((self.resource.inFlight(), self.site.busy()), (0, False))

    async def test_connectionWindowShared(self) -> None:
        """
        When the client's connection window is what limits, the streams
        take it in turn: a second stream beside a large download gets its
        response, not a reset.
        """

        def answer(connection: RawBackendConnection) -> None:
            if connection.received.startswith(b"GET /large"):
                size = 8 * 1024 * 1024
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
                connection.transport.write(head)
                connection.flood = Flood(connection.transport, size)
            else:
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                connection.transport.write(head + b"s" * 100000)

        backendFactory, backendPort = self.rawBackend(answer)
        lb = self.balancerH2([Backend("127.0.0.1", backendPort)], clientTimeout=0.5)
        client = await self.h2client(
            lb, settings={SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}, acknowledge=False
        )
        client.request(b"/large")
        await waitFor(lambda: len(backendFactory.connections) == 1)
        small = client.request(b"/small")
        for _ in range(200):
            if client.responses[small].ended.called:
                break
            client.reopen()
            await deferLater(reactor, 0.05)
        answer_ = await client.response(small)
        self.assertEqual((answer_.reset, len(answer_.body)), (None, 100000))


class DescribeTests(SynchronousTestCase):
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


class MemoryH2:
    """
    A hyper-h2 client on an in-memory connection to txlb's site (h2c),
    with the L{Harness}'s backends behind it.  It sends what hyper-h2 would
    refuse to (C{validate_outbound_headers} is off).

    @ivar responses: The head each stream got, by stream ID.
    @ivar goaway: The error code of txlb's GOAWAY, if one came.
    """

    def __init__(self, testCase: SynchronousTestCase, **settings: Any) -> None:
        self.harness = Harness(testCase, **settings)
        self.harness.site.h2c = True
        config = H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
        self.conn = H2Connection(config)
        self.conn.initiate_connection()
        self.responses: dict[int, dict[bytes, bytes]] = {}
        self.resets: dict[int, int] = {}
        self.goaway: int | None = None
        self.channel, self.transport = self.harness.client(self.conn.data_to_send())
        self._read()

    def request(
        self,
        fields: list[tuple[bytes, bytes]] | None = None,
        method: bytes = b"GET",
        path: bytes = b"/",
        body: bytes | None = None,
        trailers: list[tuple[bytes, bytes]] | None = None,
        end: bool = True,
    ) -> int:
        """
        Send a request, with C{body} in one DATA frame and C{trailers}
        after it, ending it there if C{end}, and read txlb's answer so far.

        @return: Its stream ID.
        """
        streamID = self.conn.get_next_available_stream_id()
        head = [(b":method", method), (b":scheme", b"http"), (b":path", path)]
        head.append((b":authority", b"h"))
        last = end and body is None and trailers is None
        self.conn.send_headers(streamID, head + (fields or []), end_stream=last)
        if body is not None:
            self.conn.send_data(streamID, body, end_stream=end and trailers is None)
        if trailers is not None:
            self.conn.send_headers(streamID, trailers, end_stream=True)
        self.channel.dataReceived(self.conn.data_to_send())
        self.harness.reactor.advance(0)
        self._read()
        return streamID

    def _read(self) -> None:
        data = self.transport.value()
        self.transport.clear()
        for event in self.conn.receive_data(data):
            if isinstance(event, ResponseReceived):
                self.responses[event.stream_id] = dict(event.headers)
            elif isinstance(event, StreamReset):
                self.resets[event.stream_id] = event.error_code
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event.error_code

    def status(self, streamID: int) -> bytes | None:
        return self.responses.get(streamID, {}).get(b":status")

    def refusals(self, reason: str) -> bytes:
        """
        The count of refusals for C{reason}, as exposed.
        """
        exposition = self.harness.resource.metrics.exposition()
        prefix = b'txlb_client_refusals_total{reason="%s"} ' % reason.encode()
        return exposition.split(prefix, 1)[1].split(b"\n", 1)[0]


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
        client = MemoryH2(self)
        for control in CONTROLS:
            if control in (b"\x00", b"\n", b"\r"):
                continue
            streamID = client.request([(b"x-a", b"a" + control + b"b")])
            self.assertEqual(client.status(streamID), b"400", control)
        self.assertIsNone(client.goaway)
        self.assertEqual(client.harness.reactor.tcpClients, [])
        self.assertEqual(client.refusals("header"), b"29.0")
        self.assertEqual(
            client.harness.accessLog()[0],
            f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=400 ms=0.0"
            ' error="a control character (0x01) in a header value"',
        )
        for control in [b"\x00", b"\n", b"\r"]:
            client = MemoryH2(self)
            client.request([(b"x-a", b"a" + control + b"b")])
            self.assertEqual(client.goaway, ErrorCodes.PROTOCOL_ERROR, control)
            self.assertEqual(client.refusals("http2"), b"1.0")

    def test_controlCharacterInName(self) -> None:
        """
        A control character in a field name ends the connection with
        GOAWAY: hyper-h2 refuses every one (RFC 9113 section 8.2.1).
        """
        for control in CONTROLS:
            client = MemoryH2(self)
            client.request([(b"x-" + control + b"a", b"1")])
            self.assertEqual(client.goaway, ErrorCodes.PROTOCOL_ERROR, control)
            self.assertEqual(client.harness.reactor.tcpClients, [])
            self.assertEqual(client.refusals("http2"), b"1.0")

    def test_controlCharacterInAuthority(self) -> None:
        """
        C{:authority}, which becomes C{Host}, is held to the same rule.
        (hyper-h2 strips a control character at either end of a value it
        sends, so these are in the middle.)
        """
        client = MemoryH2(self)
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
        client.channel.dataReceived(client.conn.data_to_send())
        client._read()
        self.assertEqual(client.status(streamID), b"400")
        self.assertEqual(client.harness.reactor.tcpClients, [])

    def test_tabAndObsText(self) -> None:
        """
        HTAB inside a value, and obs-text, pass to the backend.
        """
        client = MemoryH2(self)
        client.request([(b"x-a", b"a\tb"), (b"x-b", b"caf\xe9")])
        _, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(), b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb\r\nX-B: caf\xe9\r\n\r\n"
        )

    def test_nameNotAToken(self) -> None:
        """
        A name HTTP/2 allows but that is not an HTTP/1.1 token (C{x(y},
        which Twisted's L{Headers} refuses to hold) gets 400.
        """
        client = MemoryH2(self)
        streamID = client.request([(b"x(y", b"1")])
        self.assertEqual(client.status(streamID), b"400")
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
        client = MemoryH2(self)
        for method, path in [(b"GET", b"/a b"), (b"GET", b"/a\x0bb"), (b"G T", b"/")]:
            streamID = client.request(method=method, path=path)
            self.assertEqual(client.status(streamID), b"400", (method, path))
        self.assertEqual(client.harness.reactor.tcpClients, [])
        self.assertEqual(client.refusals("request_line"), b"3.0")

    def test_contentLength(self) -> None:
        """
        A content-length of 2^63 or more gets 400; one of 2^63 - 1, 413
        under C{--max-body-size}.
        """
        client = MemoryH2(self, maxBodySize=4)
        for length, status in [
            (b"18446744073709551651", b"400"),
            (b"9223372036854775808", b"400"),
            (b"9223372036854775807", b"413"),
        ]:
            streamID = client.request([(b"content-length", length)], method=b"POST", end=False)
            self.assertEqual(client.status(streamID), status, length)
        self.assertEqual(client.harness.reactor.tcpClients, [])
        self.assertEqual(client.refusals("framing"), b"2.0")


class TrailerTests(SynchronousTestCase):
    """
    An HTTP/2 request's trailers, in memory.
    """

    def test_forwarded(self) -> None:
        """
        A body without a content-length goes chunked, and the trailers
        after it, less the hop-by-hop ones.
        """
        client = MemoryH2(self)
        client.request(
            method=b"POST",
            body=b"abc",
            trailers=[(b"x-sum", b"1"), (b"x-other", b"2"), (b"x-sum", b"3")],
        )
        _, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n"
            b"3\r\nabc\r\n0\r\nx-sum: 1\r\nx-other: 2\r\nx-sum: 3\r\n\r\n",
        )

    def test_droppedWithLength(self) -> None:
        """
        A body sent with a content-length cannot carry trailers: they are
        dropped.
        """
        client = MemoryH2(self)
        client.request(
            [(b"content-length", b"3")], method=b"POST", body=b"abc", trailers=[(b"x-sum", b"1")]
        )
        _, toBackend = client.harness.backend()
        self.assertEqual(
            toBackend.value(), b"POST / HTTP/1.1\r\nContent-Length: 3\r\nHost: h\r\n\r\nabc"
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
            client = MemoryH2(self)
            streamID = client.conn.get_next_available_stream_id()
            head = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/")]
            client.conn.send_headers(streamID, [*head, (b":authority", b"h")])
            client.conn.send_data(streamID, b"abc")
            client.channel.dataReceived(client.conn.data_to_send())
            _, toBackend = client.harness.backend()
            client.conn.send_headers(streamID, [trailer], end_stream=True)
            client.channel.dataReceived(client.conn.data_to_send())
            client._read()
            self.assertEqual(client.status(streamID), b"400", trailer)
            self.assertEqual(
                toBackend.value(),
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n3\r\nabc\r\n",
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

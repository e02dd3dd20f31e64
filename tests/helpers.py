"""
What several test modules share: the in-memory balancer (L{Harness}) and its
service (L{ServiceHarness}), with sockets that fill (L{TCPTransport}), peers
that send faster than txlb reads (L{Backlog}) and an HTTP/2 client
(L{MemoryH2Client}); the raw loopback clients and backends of the
integration tests, and their canned messages; a real dnsmasq (L{Dnsmasq});
and how to start the installed C{twistd txlb} as a user does (L{startTxlb}).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerProtocol,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend, BackendPool
from txlb.client import BackendClient
from txlb.http2 import HTTP2Channel
from txlb.proxy import LoadBalancerResource
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite
from txlb.service import LoadBalancerService
from txlb.settings import ProxySettings
from txlb.tap import Options, makeService

CLIENT = IPv4Address("TCP", "10.0.0.7", 51234)


class TCPTransport(StringTransport):
    """
    A L{StringTransport} that can be closed for writing only, as TCP can,
    and whose send buffer can fill, as a socket's does.

    With a C{bufferSize}, it pauses its streaming producer once more than
    that many bytes written wait to be read, as Twisted's
    L{twisted.internet.abstract.FileDescriptor} does when the kernel takes
    no more, and resumes it once the test has L{read} them all.

    @ivar writeDisconnected: Whether C{loseWriteConnection} was called.
    @ivar bufferSize: The bytes it holds before it pauses its producer, or
        L{None} for no limit.
    @ivar producerPaused: Whether it has paused its producer.
    @ivar whenResumed: Called when the transport is resumed: the reactor
        would read from it again.
    """

    writeDisconnected = False
    bufferSize: int | None = None
    producerPaused = False
    whenResumed: Callable[[], object] | None = None

    def loseWriteConnection(self) -> None:
        self.writeDisconnected = True

    def write(self, data: bytes) -> None:
        super().write(data)
        self._pauseIfFull()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        self._pauseIfFull()

    def _pauseIfFull(self) -> None:
        if (
            self.bufferSize is not None
            and self.io.tell() > self.bufferSize
            and self.streaming
            and not self.producerPaused
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def read(self) -> bytes:
        """
        Take what was written, as the peer reading its socket, and resume a
        producer paused while it waited.
        """
        data = self.value()
        self.clear()
        if self.producerPaused:
            self.producerPaused = False
            if self.producer is not None:
                self.producer.resumeProducing()
        return data

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self.whenResumed is not None:
            self.whenResumed()


class Backlog:
    """
    What a peer has sent on a connection that txlb has yet to read: it
    reaches the protocol as Twisted's reactor reads a socket, at most
    C{readSize} bytes a turn, and only while txlb has not paused the
    transport.

    @ivar read: How many bytes the protocol has been given.
    """

    def __init__(
        self, reactor: Any, protocol: Any, transport: TCPTransport, readSize: int = 65536
    ) -> None:
        self._reactor = reactor
        self._protocol = protocol
        self._transport = transport
        self._readSize = readSize
        self._pending: deque[memoryview] = deque()
        self._call: Any = None
        self.read = 0
        transport.whenResumed = self._schedule

    def send(self, data: bytes) -> None:
        self._pending.append(memoryview(data))
        self._schedule()

    @property
    def waiting(self) -> int:
        """
        The bytes sent that txlb has not read.
        """
        return sum(len(data) for data in self._pending)

    def _schedule(self) -> None:
        if self._call is None:
            self._call = self._reactor.callLater(0, self._readOnce)

    def _readOnce(self) -> None:
        self._call = None
        transport = self._transport
        if not self._pending or transport.producerState != "producing" or transport.disconnecting:
            return
        data = self._pending.popleft()
        if len(data) > self._readSize:
            self._pending.appendleft(data[self._readSize :])
            data = data[: self._readSize]
        self.read += len(data)
        self._protocol.dataReceived(bytes(data))
        if self._pending:
            self._schedule()


class Harness:
    """
    A balancer over a memory reactor, with helpers to play the client and
    the backends.
    """

    def __init__(self, testCase: SynchronousTestCase, count: int = 2, **settings: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.backends = [Backend("127.0.0.1", 8081 + i) for i in range(count)]
        self.backendClient = BackendClient(self.reactor, connectTimeout=5)
        self.pool = BackendPool(self.backends, self.reactor)
        self.resource = LoadBalancerResource(
            RoundRobin(self.backends),
            self.backendClient,
            self.reactor,
            self.pool,
            ProxySettings(**settings),
        )
        self.site = LoadBalancerSite(RoutingResource.single(self.resource), self.reactor)
        self.events = EventLoggingObserver.createWithCleanup(testCase, globalLogPublisher)

    def client(self, data: bytes = b"", bufferSize: int | None = None) -> tuple[Any, TCPTransport]:
        """
        Connect a client and send C{data}; the client's socket holds
        C{bufferSize} bytes (see L{TCPTransport}).
        """
        channel = self.site.buildProtocol(CLIENT)
        transport = TCPTransport(peerAddress=CLIENT)
        transport.bufferSize = bufferSize
        channel.makeConnection(transport)
        if data:
            channel.dataReceived(data)
        self.reactor.advance(0)
        return channel, transport

    def backend(self, bufferSize: int | None = None) -> tuple[Any, TCPTransport]:
        """
        Accept the oldest pending connection to a backend; the request it
        carries is then in the returned transport, whose socket holds
        C{bufferSize} bytes (see L{TCPTransport}).
        """
        host, port, factory, _, _ = self.reactor.tcpClients.pop(0)
        address = IPv4Address("TCP", host, port)
        factory.doStart()
        protocol = factory.buildProtocol(address)
        transport = TCPTransport(peerAddress=address)
        transport.bufferSize = bufferSize
        protocol.makeConnection(transport)
        self.reactor.advance(0)
        return protocol, transport

    def refuse(self, reason: Exception) -> None:
        """
        Fail the oldest pending connection to a backend.
        """
        _, _, factory, _, _ = self.reactor.tcpClients.pop(0)
        factory.clientConnectionFailed(None, Failure(reason))

    def messages(self) -> list[str]:
        """
        Everything logged, formatted.
        """
        return [formatEvent(event) for event in self.events]

    def accessLog(self) -> list[str]:
        """
        The access-log lines.
        """
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_namespace") == "txlb.proxy.LoadBalancerResource" and "flag" in event
        ]


def exchange(
    testCase: SynchronousTestCase, request: bytes, response: bytes
) -> tuple[bytes, bytes, Harness]:
    """
    Send C{request} through a balancer to a backend that answers
    C{response}; return what the backend and the client received.
    """
    harness = Harness(testCase)
    _, client = harness.client(request)
    backend, toBackend = harness.backend()
    backend.dataReceived(response)
    harness.reactor.advance(0)
    return toBackend.value(), client.value(), harness


class Response:
    """
    What came back on one HTTP/2 stream.

    @ivar interim: The heads of the interim (1xx) responses, in order.
    @ivar reset: The error code of the RST_STREAM that ended it, if one did.
    @ivar over: Whether it has ended, or been reset.
    @ivar done: Fires with it once it is over.
    """

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim: list[list[tuple[bytes, bytes]]] = []
        self.body = bytearray()
        self.reset: int | None = None
        self.over = False
        self.done: Deferred[Response] = Deferred()

    @property
    def status(self) -> bytes | None:
        return dict(self.headers).get(b":status")

    def end(self) -> None:
        if not self.over:
            self.over = True
            self.done.callback(self)


class H2Client:
    """
    A sans-I/O HTTP/2 client on hyper-h2 that records each stream's
    response.  A subclass carries its bytes: L{write} sends them, and what
    comes back goes to L{receive}.

    @ivar acknowledge: Whether to reopen the windows as response data
        arrives; a client that does not is one that cannot keep up.
    @ivar responses: What came back, by stream ID.
    @ivar goaway: The last stream ID and error code of the GOAWAY received.
    @ivar unacknowledged: The response data not acknowledged yet, as
        (stream ID, size).
    """

    def __init__(
        self,
        settings: dict[int, int] | None = None,
        acknowledge: bool = True,
        validate: bool = True,
        connectionWindow: int | None = None,
    ) -> None:
        """
        @param settings: The client's SETTINGS, sent first.
        @param validate: Whether hyper-h2 checks the requests sent, which a
            test of a malformed one turns off.
        @param connectionWindow: The connection's receive window the client
            opens, past hyper-h2's 65535 bytes.
        """
        config = H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=validate
        )
        self.conn = H2Connection(config)
        self.acknowledge = acknowledge
        self.responses: dict[int, Response] = {}
        self.goaway: tuple[int, int] | None = None
        self.unacknowledged: list[tuple[int, int]] = []
        self._buffer = b""
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        if connectionWindow is not None:
            self.conn.increment_flow_control_window(connectionWindow - 65535)

    def write(self, data: bytes) -> None:
        """
        Send C{data} to txlb.
        """
        raise NotImplementedError()

    def flush(self) -> None:
        """
        Send the frames hyper-h2 has made.
        """
        self._send()

    def _send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.write(data)

    def request(
        self,
        path: bytes = b"/",
        method: bytes = b"GET",
        fields: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        end: bool = True,
        authority: bytes | None = b"example.com",
        trailers: Sequence[tuple[bytes, bytes]] | None = None,
    ) -> int:
        """
        Send a request: its head, then C{body} in one DATA frame and
        C{trailers} after it, if given, ending the stream there if C{end}.

        @return: Its stream ID.
        """
        streamID = self.conn.get_next_available_stream_id()
        head = [(b":method", method), (b":scheme", b"http"), (b":path", path)]
        if authority is not None:
            head.append((b":authority", authority))
        self.responses[streamID] = Response()
        last = end and body is None and trailers is None
        self.conn.send_headers(streamID, head + list(fields), end_stream=last)
        if body is not None:
            self.conn.send_data(streamID, body, end_stream=end and trailers is None)
        if trailers is not None:
            self.conn.send_headers(streamID, list(trailers), end_stream=True)
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
        Reopen the windows for all the response data received so far.
        """
        for streamID, size in self.unacknowledged:
            self.conn.acknowledge_received_data(size, streamID)
        self.unacknowledged = []
        self.flush()

    def receive(self, data: bytes) -> None:
        """
        Hand the frames to hyper-h2, less GOAWAY, which is recorded: after
        one, hyper-h2 takes no more frames, where RFC 9113 section 6.8 lets
        the streams it names finish.
        """
        self._buffer += data
        frames = []
        while len(self._buffer) >= 9:
            end = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < end:
                break
            frame, self._buffer = self._buffer[:end], self._buffer[end:]
            if frame[3] == 0x7:
                self.goaway = (
                    int.from_bytes(frame[9:13], "big") & 0x7FFFFFFF,
                    int.from_bytes(frame[13:17], "big"),
                )
            else:
                frames.append(frame)
        for event in self.conn.receive_data(b"".join(frames)):
            streamID = getattr(event, "stream_id", 0)
            if not streamID:
                continue
            response = self.responses.setdefault(streamID, Response())
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
                response.end()
            elif isinstance(event, StreamReset):
                response.reset = event.error_code
                response.end()
        self._send()


class MemoryH2Client(H2Client):
    """
    An L{H2Client} on an in-memory h2c connection to a L{Harness}'s site:
    its bytes reach txlb's channel at once, and after each send the
    reactor's pending calls run and the client reads what txlb wrote (see
    L{pump}).

    @ivar reading: Whether the client reads its socket; one that does not
        lets the transport's buffer fill (give it a C{bufferSize}).
    """

    def __init__(self, harness: Harness, bufferSize: int | None = None, **kwargs: Any) -> None:
        """
        @param bufferSize: What the client's socket holds before it pushes
            back on txlb (see L{TCPTransport}).
        @param kwargs: For L{H2Client}.
        """
        super().__init__(**kwargs)
        self.harness = harness
        self.reading = True
        harness.site.h2c = True
        self.channel, self.transport = harness.client(bufferSize=bufferSize)
        self.flush()

    @property
    def h2(self) -> HTTP2Channel:
        """
        txlb's HTTP/2 connection for this client.
        """
        [channel] = [c for c in self.harness.site.channels if isinstance(c, HTTP2Channel)]
        return channel

    def write(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def flush(self) -> None:
        """
        Send the frames hyper-h2 has made, and L{pump}.
        """
        self._send()
        self.pump()

    def pump(self) -> None:
        """
        Let time stand and the reactor turn until nothing moves: its pending
        calls run, and, while the client reads, what txlb wrote reaches it
        (and what the client answers reaches txlb).
        """
        for _ in range(100_000):
            self.harness.reactor.advance(0)
            data = self.transport.read() if self.reading else b""
            if not data:
                return
            self.receive(data)
        raise AssertionError("txlb and the client never stop talking")


OK = b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"


OK_TO_CLIENT = (
    b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"
)


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


async def waitFor(condition: Callable[[], Any], seconds: float = 10, what: str = "") -> None:
    """
    Wait until C{condition()} holds, for at most C{seconds}; C{what} says
    what was waited for if it never does.
    """
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"timed out waiting for {what or condition}")


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
        return self.listen(LoadBalancerSite(RoutingResource.single(self.resource)))

    async def client(self, port: int, request: bytes) -> RawClient:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await connectProtocol(endpoint, RawClient())
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        client.transport.write(request)
        return client


GET = b"GET /item HTTP/1.1\r\nHost: h\r\n\r\n"


class ServiceHarness(Harness):
    """
    The balancer that C{makeService} builds from a configuration file (and
    a command line), with L{Harness}'s client and backend helpers.
    """

    def __init__(self, testCase: SynchronousTestCase, text: str, *args: str) -> None:
        self.path = testCase.mktemp()
        self.write(text)
        options = Options()
        options.parseOptions(["--config", self.path, *args])
        self.reactor = MemoryReactorClock()
        self.service: LoadBalancerService = makeService(options, self.reactor)  # type: ignore[assignment]
        self.service.privilegedStartService()
        self.service.startService()
        testCase.addCleanup(self.service.stopService)
        self.site = self.service.site
        #: The pool C{default} (or the first pool, without one).
        pools = self.service.pools
        self.resource = (pools.get("default") or next(iter(pools.values()))).resource
        self.pool = self.resource.pool
        self.events = EventLoggingObserver.createWithCleanup(testCase, globalLogPublisher)

    def write(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as file:
            file.write(text)

    @property
    def backends(self) -> list[Any]:  # type: ignore[override]
        return list(self.pool.backends)


CONFIG = """
listen = "tcp:8080"
algo = "roundrobin"
backends = ["127.0.0.1:8081", "127.0.0.1:8082=2"]
retries = 1
"""


class EchoServer(WebSocketServerProtocol):
    """
    Sends every message back as it came, text or binary.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class RecordingClient(WebSocketClientProtocol):
    """
    Records the messages it receives; C{opened} and C{closed} fire when the
    handshake is done and when the connection has closed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[None] = Deferred()
        self.closed: Deferred[tuple[bool, int | None]] = Deferred()
        self.messages: list[tuple[bytes, bool]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: Any) -> None:
        self.closed.callback((wasClean, code))


def clientFactory(url: str) -> WebSocketClientFactory:
    """
    An autobahn client factory for L{RecordingClient}s to C{url}.

    Its close handshake timeout is 5 seconds, not autobahn's 1: autobahn
    arms it on txaio's batched timer, which truncates the deadline to the
    whole second (txaio 26.6 C{_BatchedTimer.call_later},
    C{int(now + delay)}), so a 1-second timeout can fire at any time from
    0 to 1 second after the client's close, and abort a close handshake
    that takes a few milliseconds, once in a few hundred runs.
    """
    factory = WebSocketClientFactory(url)
    factory.protocol = RecordingClient
    factory.setProtocolOptions(closeHandshakeTimeout=5)
    return factory


def writePEM(path: str, data: bytes) -> str:
    with open(path, "wb") as file:
        file.write(data)
    return path


class PKI:
    """
    A throwaway CA and the certificates it signs, written as PEM files to
    C{directory}.
    """

    def __init__(self, directory: str, name: str = "txlb test CA") -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.name = subject
        self.certificate = (
            self._builder(subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.caPath = writePEM(
            os.path.join(directory, "ca.pem"),
            self.certificate.public_bytes(serialization.Encoding.PEM),
        )

    def _builder(self, subject: x509.Name, publicKey: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(getattr(self, "name", subject))
            .public_key(publicKey)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(publicKey), critical=False)
        )

    def leaf(
        self,
        stem: str,
        names: Sequence[str] = (),
        addresses: Sequence[str] = (),
        usages: Sequence[x509.ObjectIdentifier] = (),
    ) -> tuple[str, str]:
        """
        A certificate for C{names} and IP C{addresses} (a client certificate
        if there are none, unless C{usages} says otherwise), and its key:
        their paths.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)])
        if not usages:
            usages = [
                ExtendedKeyUsageOID.SERVER_AUTH
                if names or addresses
                else ExtendedKeyUsageOID.CLIENT_AUTH
            ]
        builder = self._builder(subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage(list(usages)), critical=False
        )
        alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        alternatives += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        if alternatives:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternatives), critical=False
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        certPath = writePEM(
            os.path.join(self.directory, f"{stem}.pem"),
            certificate.public_bytes(serialization.Encoding.PEM),
        )
        keyPath = writePEM(
            os.path.join(self.directory, f"{stem}-key.pem"),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return certPath, keyPath


TWISTD = str(Path(sys.executable).parent / "twistd")


def runIn(directory: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """
    Run a command from C{directory} with this Python's environment, minus any
    C{PYTHONPATH} that could point at the checkout.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        args, cwd=directory, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def portsFree(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as s:
            # As Twisted does: connections in TIME_WAIT do not hold the port.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def startTxlb(
    testCase: SynchronousTestCase,
    port: int,
    *args: str,
    directory: str | None = None,
    twistd: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """
    Start C{twistd -n --pidfile= TWISTD txlb ARGS} from C{directory} (by
    default an empty folder), as a user would, and wait until it listens on
    C{port} (without sending a request, which would take a pick).

    @param twistd: twistd's own options, before C{txlb}.
    """
    if directory is None:
        directory = testCase.mktemp()
        os.mkdir(directory)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", *twistd, "txlb", *args],
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    testCase.addCleanup(process.kill)
    deadline = time.monotonic() + 20
    while portsFree(port):
        if time.monotonic() > deadline or process.poll() is not None:
            testCase.fail(f"txlb {' '.join(args)} did not start listening")
        time.sleep(0.1)
    return process


# A real dnsmasq for the tests: Debian's dnsmasq-base, started on a free
# loopback port in a temporary folder, answering only the records it is
# given (--no-resolv: it never asks anyone else).  dnsmasq behaves as DNS
# servers people run do, and unlike a twisted.names server: it rotates the
# order of its records on every query (within one TCP connection: it serves
# each in a child process), answers AAAA with REFUSED for a name it does not
# serve --local, and closes a TCP connection after 100 queries.

#: Where Debian's dnsmasq-base puts it (not on a normal user's PATH).
DNSMASQ = "/usr/sbin/dnsmasq"

#: Seconds dnsmasq gets to listen.
START = 10.0


def freeLoopbackPort() -> int:
    """
    A loopback port nobody listens on, over TCP or UDP.
    """
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))
        return port


class Dnsmasq:
    """
    One dnsmasq on 127.0.0.1:L{port}, stopped when the test ends.

    @ivar port: Its port, which a restart keeps.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        if not os.access(DNSMASQ, os.X_OK):
            raise SkipTest(f"no {DNSMASQ}: install Debian's dnsmasq-base (.ci/run does)")
        self.folder = Path(testCase.mktemp()).absolute()
        self.folder.mkdir()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        testCase.addCleanup(self.stop)

    def start(self, *options: str) -> Dnsmasq:
        """
        Start it with C{options} (C{--srv-host=...}, C{--host-record=...},
        C{--local=/test/}), on the port it had if it had one, and wait until
        it takes TCP connections.
        """
        for _ in range(5):
            port = self.port or freeLoopbackPort()
            process = subprocess.Popen(
                [
                    DNSMASQ,
                    *("--no-resolv", "--no-hosts", "--keep-in-foreground"),
                    "--conf-file=/dev/null",
                    f"--port={port}",
                    *("--listen-address=127.0.0.1", "--bind-interfaces"),
                    f"--pid-file={self.folder / 'dnsmasq.pid'}",
                    f"--log-facility={self.folder / 'dnsmasq.log'}",
                    *options,
                ],
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._listening(process, port):
                self.process, self.port = process, port
                return self
        raise AssertionError(f"dnsmasq did not start: {self.log()}")

    def _listening(self, process: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + START
        while time.monotonic() < deadline:
            if process.poll() is not None:
                # The port was taken in between, say.
                return False
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        process.kill()
        process.wait()
        return False

    def restart(self, *options: str) -> Dnsmasq:
        """
        Stop it, and start it again with C{options} on the same port.
        """
        self.stop()
        return self.start(*options)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None

    @property
    def server(self) -> tuple[str, int]:
        """
        Its address, as a resolver is given it.
        """
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        path = self.folder / "dnsmasq.log"
        return path.read_text() if path.exists() else "(no log)"

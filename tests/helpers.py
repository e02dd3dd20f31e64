"""
What several test modules share: the in-memory balancer (L{Harness}) and its
service (L{ServiceHarness}), the raw loopback clients and backends of the
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
from txlb.proxy import LoadBalancerResource
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite
from txlb.service import LoadBalancerService
from txlb.settings import ProxySettings
from txlb.tap import Options, makeService

CLIENT = IPv4Address("TCP", "10.0.0.7", 51234)


class TCPTransport(StringTransport):
    """
    A L{StringTransport} that can be closed for writing only, as TCP can.

    @ivar writeDisconnected: Whether C{loseWriteConnection} was called.
    """

    writeDisconnected = False

    def loseWriteConnection(self) -> None:
        self.writeDisconnected = True


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

    def client(self, data: bytes = b"") -> tuple[Any, TCPTransport]:
        """
        Connect a client and send C{data}.
        """
        channel = self.site.buildProtocol(CLIENT)
        transport = TCPTransport(peerAddress=CLIENT)
        channel.makeConnection(transport)
        if data:
            channel.dataReceived(data)
        self.reactor.advance(0)
        return channel, transport

    def backend(self) -> tuple[Any, TCPTransport]:
        """
        Accept the oldest pending connection to a backend; the request it
        carries is then in the returned transport.
        """
        host, port, factory, _, _ = self.reactor.tcpClients.pop(0)
        address = IPv4Address("TCP", host, port)
        factory.doStart()
        protocol = factory.buildProtocol(address)
        transport = TCPTransport(peerAddress=address)
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
    testCase: SynchronousTestCase, port: int, *args: str, directory: str | None = None
) -> subprocess.Popen[str]:
    """
    Start C{twistd -n --pidfile= txlb ARGS} from C{directory} (by default an
    empty folder), as a user would, and wait until it listens on C{port}
    (without sending a request, which would take a pick).
    """
    if directory is None:
        directory = testCase.mktemp()
        os.mkdir(directory)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "txlb", *args],
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

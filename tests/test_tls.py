"""
TLS to C{https://} backends, over loopback with Twisted TLS servers and
certificates made here: a throwaway CA (EC P-256, so making them is fast),
and server and client certificates it signs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.helpers import (
    CONFIG,
    PKI,
    EchoServer,
    IntegrationTestCase,
    RawBackendConnection,
    ServiceHarness,
    clientFactory,
    waitFor,
    writePEM,
)
from txlb import tls
from txlb.admin import AdminAPI
from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend, BackendPool
from txlb.client import BackendClient
from txlb.health import HealthChecker
from txlb.outcome import CONNECT_FAILURE
from txlb.proxy import LoadBalancerResource
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite
from txlb.settings import ProxySettings
from txlb.tap import Options
from txlb.testbackend import makeBackendSite

OK = (
    b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nX-Backend: tls\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


INSECURE = (
    "TLS to backends is NOT VERIFIED (--backend-insecure): any certificate is accepted, so"
    " anyone on the path to an https:// backend can read and change its traffic"
)


class CountingSite(Site):
    """
    A site that counts the connections made to it.
    """

    connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


class TLSTestCase(IntegrationTestCase):
    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def listenTLS(self, factory: Any, certKey: tuple[str, str], clientCA: str | None = None) -> int:
        """
        Serve C{factory} over TLS with the certificate and key at
        C{certKey}, requiring a client certificate signed by C{clientCA} if
        given; the server names clients ask for go to C{self.serverNames}.
        """
        certificate = PrivateCertificate.loadPEM(_read(certKey[0]) + _read(certKey[1]))
        authorities = [] if clientCA is None else tls.loadCertificates("ca", clientCA)
        options = certificate.options(*authorities)
        self.serverNames: list[bytes | None] = []
        options.getContext().set_tlsext_servername_callback(
            lambda connection: self.serverNames.append(connection.get_servername())
        )
        port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def tlsBackend(
        self,
        certKey: tuple[str, str],
        handler: Callable[[RawBackendConnection], None] = lambda c: c.transport.write(OK),
        clientCA: str | None = None,
    ) -> tuple[Factory, int]:
        """
        A raw-socket backend over TLS that records what it gets.
        """
        factory = Factory.forProtocol(RawBackendConnection)
        factory.connections = []
        factory.handler = handler
        return factory, self.listenTLS(factory, certKey, clientCA)

    def balancerWith(self, backends: list[Backend], *options: str) -> int:
        """
        txlb in front of C{backends}, with the TLS settings that the
        C{--backend-*} C{options} give.
        """
        parsed = Options()
        parsed.parseOptions(["--backends", "127.0.0.1:1", *options])
        client = BackendClient(reactor, connectTimeout=2, tls=parsed["backend-tls"])
        self.addCleanup(client.closeCachedConnections)
        self.resource = LoadBalancerResource(RoundRobin(backends), client, reactor)
        return self.listen(LoadBalancerSite(RoutingResource.single(self.resource)))

    async def get(self, lb: int, path: bytes = b"/", host: bytes = b"client.example") -> bytes:
        client = await self.client(
            lb, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)
        )
        return await client.closed

    def accessLog(self) -> list[str]:
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_namespace") == "txlb.proxy.LoadBalancerResource"
        ]


class RequestTests(TLSTestCase):
    async def test_verified(self) -> None:
        """
        A backend whose certificate the CA signed for its host name gets
        the request byte for byte, with the client's Host; its name goes in
        SNI; the client gets the response as the backend sent it.
        """
        factory, port = self.tlsBackend(self.pki.leaf("backend", names=["localhost"]))
        lb = self.balancerWith(
            [Backend("localhost", port, tls=True)], "--backend-ca", self.pki.caPath
        )
        received = await self.get(lb, b"/a%2Fb?x=%7e")
        self.assertEqual(
            factory.connections[0].received,
            b"GET /a%2Fb?x=%7e HTTP/1.1\r\nHost: client.example\r\n\r\n",
        )
        self.assertEqual(
            received,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"X-Backend: tls\r\nContent-Length: 5\r\n\r\nhello",
        )
        self.assertEqual(self.serverNames, [b"localhost"])

    async def test_serverName(self) -> None:
        """
        With C{--backend-sni}, that name is sent and verified, whatever the
        backend's address.
        """
        _, port = self.tlsBackend(self.pki.leaf("api", names=["api.internal"]))
        lb = self.balancerWith(
            [Backend("127.0.0.1", port, tls=True)],
            "--backend-ca",
            self.pki.caPath,
            "--backend-sni",
            "api.internal",
        )
        received = await self.get(lb)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertEqual(self.serverNames, [b"api.internal"])

    async def test_ipAddress(self) -> None:
        """
        A backend given by IP address is verified against the certificate's
        IP addresses, and no server name is sent (RFC 6066 allows names
        only).
        """
        _, port = self.tlsBackend(self.pki.leaf("ip", addresses=["127.0.0.1"]))
        lb = self.balancerWith(
            [Backend("127.0.0.1", port, tls=True)], "--backend-ca", self.pki.caPath
        )
        received = await self.get(lb)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK\r\n"), received)
        self.assertEqual(self.serverNames, [None])

    async def test_poolReuse(self) -> None:
        """
        Several requests in a row share one TLS connection: one handshake.
        """
        site = CountingSite(makeBackendSite().resource)
        port = self.listenTLS(site, self.pki.leaf("backend", names=["localhost"]))
        lb = self.balancerWith(
            [Backend("localhost", port, tls=True)], "--backend-ca", self.pki.caPath
        )
        for _ in range(3):
            received = await self.get(lb, b"/ping")
            self.assertTrue(received.endswith(b"pong from backend :%d\n" % port), received)
        self.assertEqual((site.connections, self.serverNames), (1, [b"localhost"]))

    async def test_newSettingsNewConnection(self) -> None:
        """
        After new TLS settings (a reload), an idle connection made with the
        old ones is not reused.
        """
        site = CountingSite(makeBackendSite().resource)
        port = self.listenTLS(site, self.pki.leaf("backend", names=["localhost"]))
        lb = self.balancerWith(
            [Backend("localhost", port, tls=True)], "--backend-ca", self.pki.caPath
        )
        await self.get(lb, b"/ping")
        self.resource.client.setTLS(tls.fromOptions(self.pki.caPath, None, None, None, False))
        received = await self.get(lb, b"/ping")
        self.assertTrue(received.endswith(b"pong from backend :%d\n" % port), received)
        self.assertEqual(site.connections, 2)


class RefusalTests(TLSTestCase):
    async def assertRefused(self, lb: int, backend: Backend, why: str) -> None:
        """
        A request gets a 502 that says C{why} (and so does the JSON access
        log, with the flag of a connection failure), and the backend counts
        one failure.
        """
        self.resource.settings = ProxySettings(accessLog="json")
        received = await self.get(lb)
        body = f"502 Bad Gateway: backend {backend.address}: {why}".encode()
        self.assertTrue(received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), received)
        self.assertIn(b"\r\n\r\n" + body, received)
        self.assertEqual(backend.failures, 1)
        (line,) = self.accessLog()
        logged = json.loads(line)
        self.assertEqual(
            (logged["status"], logged["error"], logged["flag"]), (502, why, CONNECT_FAILURE)
        )

    async def test_nameMismatch(self) -> None:
        """
        A certificate for another name is refused with a 502 that says so,
        once: the request is not sent, and not retried on the same backend.
        """
        factory, port = self.tlsBackend(self.pki.leaf("other", names=["other.example"]))
        backend = Backend("localhost", port, tls=True)
        lb = self.balancerWith([backend], "--backend-ca", self.pki.caPath)
        await self.assertRefused(lb, backend, "TLS: certificate name mismatch")
        self.assertEqual([c.received for c in factory.connections], [b""])

    async def test_unknownCA(self) -> None:
        """
        A certificate from a CA not trusted is refused.
        """
        stranger = PKI(self.mktemp(), "stranger CA")
        factory, port = self.tlsBackend(stranger.leaf("backend", names=["localhost"]))
        backend = Backend("localhost", port, tls=True)
        lb = self.balancerWith([backend], "--backend-ca", self.pki.caPath)
        await self.assertRefused(
            lb,
            backend,
            "TLS: certificate not trusted (unknown CA, expired or self-signed)"
            " (certificate verify failed)",
        )
        self.assertEqual([c.received for c in factory.connections], [b""])

    async def test_notTLS(self) -> None:
        """
        An C{https://} backend on a cleartext port is refused with a 502
        that says so.
        """

        class Cleartext(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        port = self.listen(Factory.forProtocol(Cleartext))
        backend = Backend("localhost", port, tls=True)
        lb = self.balancerWith([backend], "--backend-ca", self.pki.caPath)
        received = await self.get(lb)
        self.assertIn(
            b"502 Bad Gateway: backend localhost:%d: TLS: the backend does not speak TLS" % port,
            received,
        )

    async def test_handshakeTimeout(self) -> None:
        """
        A backend that never finishes the handshake gets a 504 once the
        response timeout runs out.
        """
        port = self.listen(Factory.forProtocol(Protocol))
        lb = self.balancerWith([Backend("localhost", port, tls=True)])
        self.resource.settings = ProxySettings(responseTimeout=0.2)
        received = await self.get(lb)
        self.assertTrue(received.startswith(b"HTTP/1.1 504 "), received)
        self.assertTrue(
            received.endswith(
                b"\r\n\r\n504 Gateway Time-out: backend localhost:%d: response timeout\n" % port
            ),
            received,
        )

    async def test_systemStoreByDefault(self) -> None:
        """
        Without C{--backend-ca}, the system's CAs are trusted, and the test
        CA is not one of them.
        """
        _, port = self.tlsBackend(self.pki.leaf("backend", names=["localhost"]))
        backend = Backend("localhost", port, tls=True)
        lb = self.balancerWith([backend])
        received = await self.get(lb)
        self.assertIn(
            b"502 Bad Gateway: backend localhost:%d: TLS: certificate not trusted" % port, received
        )

    async def test_insecure(self) -> None:
        """
        With C{--backend-insecure}, a certificate from an unknown CA for
        another name is accepted, and the backend's name is still sent.
        """
        stranger = PKI(self.mktemp(), "stranger CA")
        _, port = self.tlsBackend(stranger.leaf("other", names=["other.example"]))
        lb = self.balancerWith([Backend("localhost", port, tls=True)], "--backend-insecure")
        received = await self.get(lb)
        self.assertTrue(received.endswith(b"\r\n\r\nhello"), received)
        self.assertEqual(self.serverNames, [b"localhost"])

    async def test_retriedElsewhere(self) -> None:
        """
        A failed handshake counts against its backend, and the request goes
        to another one.
        """
        _, badPort = self.tlsBackend(self.pki.leaf("other", names=["other.example"]))
        goodFactory = Factory.forProtocol(RawBackendConnection)
        goodFactory.connections = []
        goodFactory.handler = lambda c: c.transport.write(OK)
        goodPort = self.listenTLS(goodFactory, self.pki.leaf("backend", names=["localhost"]))
        bad, good = (
            Backend("localhost", badPort, tls=True),
            Backend("localhost", goodPort, tls=True),
        )
        lb = self.balancerWith([bad, good], "--backend-ca", self.pki.caPath)
        received = await self.get(lb)
        self.assertTrue(received.endswith(b"\r\n\r\nhello"), received)
        self.assertEqual((bad.failures, bad.lastError, good.requests), (1, None, 1))


class ClientCertificateTests(TLSTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.clientCA = PKI(self.mktemp(), "client CA")
        self.factory, self.port = self.tlsBackend(
            self.pki.leaf("backend", names=["localhost"]), clientCA=self.clientCA.caPath
        )
        self.backend = Backend("localhost", self.port, tls=True)

    async def test_sent(self) -> None:
        """
        A backend that requires a client certificate gets the one given.
        """
        cert, key = self.clientCA.leaf("txlb")
        lb = self.balancerWith(
            [self.backend],
            "--backend-ca",
            self.pki.caPath,
            "--backend-cert",
            cert,
            "--backend-key",
            key,
        )
        received = await self.get(lb)
        self.assertTrue(received.endswith(b"\r\n\r\nhello"), received)
        peer = self.factory.connections[0].transport.getPeerCertificate()
        self.assertEqual(peer.get_subject().commonName, "txlb")

    async def test_sentUnverified(self) -> None:
        """
        With C{--backend-insecure} too, the client certificate is sent.
        """
        cert, key = self.clientCA.leaf("txlb")
        lb = self.balancerWith(
            [self.backend], "--backend-insecure", "--backend-cert", cert, "--backend-key", key
        )
        received = await self.get(lb)
        self.assertTrue(received.endswith(b"\r\n\r\nhello"), received)
        peer = self.factory.connections[0].transport.getPeerCertificate()
        self.assertEqual(peer.get_subject().commonName, "txlb")

    async def test_missing(self) -> None:
        """
        Without one, the backend refuses the handshake, and the 502 says
        so.
        """
        lb = self.balancerWith([self.backend], "--backend-ca", self.pki.caPath)
        received = await self.get(lb)
        self.assertIn(b"502 Bad Gateway: backend localhost:%d: TLS: " % self.port, received)
        self.assertIn(b"client certificate", received)
        self.assertEqual(self.backend.failures, 1)
        self.assertEqual(
            [c.received for c in self.factory.connections if c.received], [], "request leaked"
        )


class TunnelTests(TLSTestCase):
    async def test_webSocket(self) -> None:
        """
        A WebSocket through txlb to an C{https://} backend (C{wss} behind
        the balancer) echoes messages and closes cleanly.
        """
        factory = WebSocketServerFactory()
        factory.protocol = EchoServer
        port = self.listenTLS(factory, self.pki.leaf("ws", names=["localhost"]))
        backend = Backend("localhost", port, tls=True)
        lb = self.balancerWith([backend], "--backend-ca", self.pki.caPath)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", lb).connect(
            clientFactory(f"ws://127.0.0.1:{lb}/chat")
        )
        self.addCleanup(
            lambda: client.transport.abortConnection() if client.transport.connected else None
        )
        await client.opened.addTimeout(10, reactor)
        client.sendMessage(b"over TLS", False)
        await waitFor(lambda: bool(client.messages))
        self.assertEqual(client.messages, [(b"over TLS", False)])
        client.sendClose(1000)
        self.assertEqual(await client.closed.addTimeout(10, reactor), (True, 1000))
        await waitFor(lambda: backend.active == 0)

    async def test_refused(self) -> None:
        """
        An upgrade to a backend whose certificate names another host gets a
        502 that says why, counted as a failure of the backend.
        """
        factory = WebSocketServerFactory()
        factory.protocol = EchoServer
        port = self.listenTLS(factory, self.pki.leaf("ws", names=["other.example"]))
        backend = Backend("localhost", port, tls=True)
        lb = self.balancerWith([backend], "--backend-ca", self.pki.caPath)
        client = await self.client(
            lb,
            b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        await waitFor(lambda: b"TLS" in client.received)
        self.assertIn(
            b"502 Bad Gateway: backend localhost:%d: TLS: certificate name mismatch" % port,
            client.received,
        )
        self.assertEqual(backend.failures, 1)


class HealthTests(TLSTestCase):
    async def check(self, backend: Backend, *options: str) -> str | None:
        """
        Run one health check of C{backend} with the TLS settings of
        C{options}; its verdict.
        """
        parsed = Options()
        parsed.parseOptions(["--backends", "127.0.0.1:1", *options])
        checker = HealthChecker(
            BackendPool([backend], reactor), "/health", reactor, tls=parsed["backend-tls"]
        )
        checker.startService()
        self.addCleanup(checker.stopService)
        await waitFor(lambda: backend.health is not None)
        return backend.health

    def healthBackend(self, names: list[str]) -> int:
        root = Resource()
        health = Resource()
        health.render_GET = lambda request: b"ok"  # type: ignore[attr-defined]
        root.putChild(b"health", health)
        return self.listenTLS(Site(root), self.pki.leaf("health", names=names))

    async def test_passes(self) -> None:
        """
        A check of an C{https://} backend runs over verified TLS.
        """
        port = self.healthBackend(["localhost"])
        verdict = await self.check(
            Backend("localhost", port, tls=True), "--backend-ca", self.pki.caPath
        )
        self.assertEqual(verdict, "passed")
        self.assertEqual(self.serverNames, [b"localhost"])

    async def test_fails(self) -> None:
        """
        A check fails, saying why, where a request's handshake would.
        """
        port = self.healthBackend(["other.example"])
        verdict = await self.check(
            Backend("localhost", port, tls=True), "--backend-ca", self.pki.caPath
        )
        self.assertEqual(verdict, "failed: TLS: certificate name mismatch")


class FailureReasonTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each TLS failure gets an operator's reason; other failures none.
        """
        alert = lambda reason: SSL.Error([("SSL routines", "", reason)])  # noqa: E731
        table = [
            (VerificationError(errors=[]), "TLS: certificate name mismatch"),
            (
                alert("certificate verify failed"),
                "TLS: certificate not trusted (unknown CA, expired or self-signed)"
                " (certificate verify failed)",
            ),
            (
                alert("tlsv13 alert certificate required"),
                "TLS: the backend requires a client certificate"
                " (tlsv13 alert certificate required)",
            ),
            (
                alert("tlsv1 alert unknown ca"),
                "TLS: client certificate refused (unknown CA) (tlsv1 alert unknown ca)",
            ),
            (
                alert("sslv3 alert bad certificate"),
                "TLS: client certificate refused (sslv3 alert bad certificate)",
            ),
            (
                alert("wrong version number"),
                "TLS: the backend does not speak TLS (wrong version number)",
            ),
            (alert("unexpected eof while reading"), "TLS: unexpected eof while reading"),
            (SSL.Error(), "TLS: handshake failed"),
            (ConnectionRefusedError(), None),
        ]
        for error, reason in table:
            self.assertEqual(tls.failureReason(Failure(error)), reason, error)
            self.assertEqual(tls.isFailure(Failure(error)), reason is not None, error)


class OptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = PKI(self.mktemp())
        self.cert, self.key = self.pki.leaf("client")

    def assertUsageError(self, args: list[str], message: str) -> None:
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--backends", "https://localhost:443", *args])
        self.assertEqual(caught.exception.code, f"txlb: {message} (see twistd txlb --help)")

    def test_errors(self) -> None:
        """
        Bad TLS options end with one line that names the problem.
        """
        notPEM = writePEM(os.path.join(self.pki.directory, "not.pem"), b"hello\n")
        badPEM = writePEM(
            os.path.join(self.pki.directory, "bad.pem"),
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        otherKey = PKI(self.mktemp()).leaf("other")[1]
        table = [
            (
                ["--backend-cert", self.cert],
                "--backend-cert and --backend-key go together: give both",
            ),
            (
                ["--backend-key", self.key],
                "--backend-cert and --backend-key go together: give both",
            ),
            (
                ["--backend-insecure", "--backend-ca", self.pki.caPath],
                "--backend-insecure verifies nothing: drop --backend-ca",
            ),
            (
                ["--backend-ca", "/nonexistent.pem"],
                "--backend-ca: /nonexistent.pem: No such file or directory",
            ),
            (["--backend-ca", notPEM], f"--backend-ca: {notPEM}: no PEM certificate in the file"),
            (
                ["--backend-ca", badPEM],
                f"--backend-ca: {badPEM}: a certificate in the file cannot be read",
            ),
            (
                ["--backend-cert", self.cert, "--backend-key", notPEM],
                f"--backend-key: {notPEM}: no PEM private key in the file",
            ),
            (
                ["--backend-cert", self.cert, "--backend-key", otherKey],
                f"--backend-key: {otherKey}: not the key of the certificate in {self.cert}",
            ),
            (["--backend-sni", "bad name"], "--backend-sni: 'bad name' is not a host name"),
        ]
        for args, message in table:
            self.assertUsageError(args, message)

    def test_settings(self) -> None:
        """
        Good options give the settings they name; none give verification
        against the system's CAs, for each backend's own name.
        """
        default = Options()
        default.parseOptions(["--backends", "https://localhost:443"])
        settings = default["backend-tls"]
        self.assertEqual(
            (
                settings.trustRoot,
                settings.clientCertificate,
                settings.serverName,
                settings.insecure,
            ),
            (None, None, None, False),
        )
        given = Options()
        given.parseOptions(
            [
                "--backends",
                "https://localhost:443",
                "--backend-ca",
                self.pki.caPath,
                "--backend-cert",
                self.cert,
                "--backend-key",
                self.key,
                "--backend-sni",
                "api.internal",
            ]
        )
        settings = given["backend-tls"]
        self.assertIsNotNone(settings.trustRoot)
        self.assertEqual(settings.clientCertificate.getSubject().commonName, b"client")
        self.assertEqual(settings.serverName, "api.internal")


class ServiceTests(SynchronousTestCase):
    config = CONFIG.replace('"127.0.0.1:8082=2"', '"https://localhost:8443=2"')

    def warnings(self, events: Sequence[Any]) -> list[str]:
        return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]

    def test_insecureLoudly(self) -> None:
        """
        C{--backend-insecure} is a warning at start-up, and the admin API's
        status (which the status page shows) says it; the status marks
        C{https://} backends.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        harness = ServiceHarness(self, self.config, "--backend-insecure")
        self.assertEqual(self.warnings(events), [INSECURE])
        status = AdminAPI(harness.service, None).status()
        self.assertEqual(
            (status["backendTLS"], [b["tls"] for b in status["backends"]]),
            ("insecure", [False, True]),
        )
        started = [formatEvent(e) for e in events if "txlb listening" in formatEvent(e)]
        self.assertIn("https://localhost:8443 (weight 2)", started[0])

    def test_verifiedByDefault(self) -> None:
        """
        Without it, nothing is said, and the status says verified.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        harness = ServiceHarness(self, self.config)
        self.assertEqual(self.warnings(events), [])
        self.assertEqual(AdminAPI(harness.service, None).status()["backendTLS"], "verified")

    def test_reload(self) -> None:
        """
        A reload reads the TLS settings again, and warns when they turn
        insecure; a file with a bad TLS setting is refused and the settings
        stay.
        """
        harness = ServiceHarness(self, self.config)
        client = harness.resource.client
        before = client.tls
        harness.write(self.config + "backend-insecure = true\n")
        self.assertTrue(harness.service.reload())
        self.assertIsNot(client.tls, before)
        self.assertTrue(client.tls.insecure)
        self.assertIn(INSECURE, harness.messages())
        insecure = client.tls
        harness.write(self.config + 'backend-ca = "/nonexistent.pem"\n')
        self.assertFalse(harness.service.reload())
        self.assertIs(client.tls, insecure)

    def test_schemeChanged(self) -> None:
        """
        A backend that a reload moves from C{http://} to C{https://} on the
        same address is a new backend, reached over TLS.
        """
        harness = ServiceHarness(self, self.config)
        http = harness.pool.backends[0]
        harness.write(self.config.replace('"127.0.0.1:8081"', '"https://127.0.0.1:8081"'))
        self.assertTrue(harness.service.reload())
        https = harness.pool.backends[0]
        self.assertIsNot(https, http)
        self.assertEqual((https.address, https.tls), ("127.0.0.1:8081", True))

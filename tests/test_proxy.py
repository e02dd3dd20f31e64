"""
The proxy in memory: real Twisted HTTP parsing and writing on both sides,
over string transports and a memory reactor, checked byte for byte.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.helpers import OK, OK_TO_CLIENT, Harness, exchange
from txlb import proxy
from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend
from txlb.flow import HIGH_WATER
from txlb.interfaces import IAlgorithm, IResponseObserver
from txlb.proxy import LoadBalancerResource


class RequestTransparencyTests(SynchronousTestCase):
    """
    The backend receives the request as the client sent it.
    """

    def assertForwarded(self, sent: bytes, expected: bytes) -> None:
        received, _, _ = exchange(self, sent, OK)
        self.assertEqual(received, expected)

    def test_nothingAdded(self) -> None:
        """
        A bare request arrives bare: no User-Agent, Accept-Encoding, Cookie,
        Content-Type, Connection or framing added.
        """
        self.assertForwarded(
            b"GET /ping HTTP/1.1\r\nHost: lb.example\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nHost: lb.example\r\n\r\n",
        )

    def test_rawTargets(self) -> None:
        """
        Request-targets pass byte for byte: no decoding, re-encoding, dropped
        empty query or collapsed slashes.
        """
        for target in [
            b"/a%2Fb/~c/%7e?x=%7e&y=&z&q=a+b%20c",
            b"/p?arr[]=1",
            b"/x?",
            b"//double//slash",
            b"/%zz;params?%",
            b"http://other.example/absolute?form",
        ]:
            self.assertForwarded(
                b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n",
                b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            )

    def test_asteriskTarget(self) -> None:
        """
        C{OPTIONS *} is forwarded, not answered by the balancer.
        """
        self.assertForwarded(
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        )

    def test_anyMethod(self) -> None:
        """
        Any method token passes as sent, case included.
        """
        for method in [b"PATCH", b"PURGE", b"get", b"M-SEARCH", b"DELETE"]:
            self.assertForwarded(
                method + b" / HTTP/1.1\r\nHost: h\r\n\r\n",
                method + b" / HTTP/1.1\r\nHost: h\r\n\r\n",
            )

    def test_repeatedHeadersAndHost(self) -> None:
        """
        Repeated fields stay repeated and in order; Host passes byte for
        byte.
        """
        self.assertForwarded(
            b"GET / HTTP/1.1\r\nHost: Example.COM:8080\r\nCookie: a=1\r\n"
            b"Cookie: b=2\r\nAccept: text/html\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: Example.COM:8080\r\nCookie: a=1\r\n"
            b"Cookie: b=2\r\nAccept: text/html\r\n\r\n",
        )

    def test_hopByHopRemoved(self) -> None:
        """
        Connection, the fields it names and the fixed hop-by-hop fields are
        removed; TE: trailers stays.
        """
        self.assertForwarded(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop, TE\r\n"
            b"X-Hop: 1\r\nKeep-Alive: 300\r\nProxy-Connection: keep-alive\r\n"
            b"TE: trailers\r\nUpgrade: h2c\r\nX-End: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-End: 2\r\nTE: trailers\r\n\r\n",
        )

    def test_body(self) -> None:
        """
        A body arrives whole, with one Content-Length.
        """
        self.assertForwarded(
            b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"Content-Length: 9\r\n\r\nnot\xffvalid",
            b"POST /form HTTP/1.1\r\nContent-Length: 9\r\nHost: h\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\nnot\xffvalid",
        )

    def test_chunkedUploadRechunked(self) -> None:
        """
        A chunked upload reaches the backend chunked again, chunk for chunk,
        with no Content-Length.
        """
        self.assertForwarded(
            b"PUT /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
        )

    def test_emptyBodyKeepsLength(self) -> None:
        """
        An explicit C{Content-Length: 0} stays.
        """
        self.assertForwarded(
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nHost: h\r\n\r\n",
        )

    def test_http10WithoutHost(self) -> None:
        """
        An HTTP/1.0 request without Host gets the backend's address as Host,
        which the backend's HTTP/1.1 needs.
        """
        self.assertForwarded(
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n\r\n",
        )

    def test_cookiesNotShared(self) -> None:
        """
        A cookie a backend set for one client never reaches the backend with
        another client's request.
        """
        harness = Harness(self, count=1)
        harness.client(b"GET /login HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: session=alice; Path=/\r\nContent-Length: 0\r\n\r\n"
        )
        backend.transport.clear()
        harness.client(b"GET /private HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(backend.transport.value(), b"GET /private HTTP/1.1\r\nHost: h\r\n\r\n")


class ResponseTransparencyTests(SynchronousTestCase):
    """
    The client receives the response as the backend sent it.
    """

    def assertRelayed(
        self,
        response: bytes,
        expected: bytes,
        request: bytes = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ) -> None:
        _, received, _ = exchange(self, request, response)
        self.assertEqual(received, expected)

    def test_statusHeadersBody(self) -> None:
        """
        A custom status and reason, repeated Set-Cookie in order, the
        backend's own Server and Date; no Content-Type added.
        """
        response = (
            b"HTTP/1.1 418 I'm a teapot\r\nServer: teapot/1.0\r\n"
            b"Date: Sat, 01 Jan 2000 00:00:00 GMT\r\nSet-Cookie: a=1\r\n"
            b"Set-Cookie: b=2\r\nSet-Cookie: c=3\r\nContent-Length: 5\r\n\r\nshort"
        )
        self.assertRelayed(response, response)

    def test_fieldOrderAndCase(self) -> None:
        """
        Fields of different names keep the order they came in, interleaved
        as they were, and each line keeps its own spelling of its name.
        """
        response = (
            b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nX-Trace: 1\r\nSet-Cookie: b=2\r\n"
            b"VARY: Accept\r\nx-trace: 2\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        self.assertRelayed(response, response)

    def test_unknownStatus(self) -> None:
        """
        A status code and reason phrase no RFC defines pass unchanged.
        """
        response = b"HTTP/1.1 299 Whatever Custom\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"
        self.assertRelayed(response, response)

    def test_gzipStaysEncoded(self) -> None:
        """
        A gzip body is relayed as the compressed bytes, with its
        Content-Encoding and Content-Length.
        """
        import gzip

        body = gzip.compress(b"hello " * 100)
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.assertRelayed(
            response, response, b"GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n"
        )

    def test_redirectNotFollowed(self) -> None:
        """
        A redirect reaches the client as a redirect.
        """
        response = (
            b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere.example/\r\n"
            b"Date: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 0\r\n\r\n"
        )
        self.assertRelayed(
            response, response, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        )

    def test_head(self) -> None:
        """
        A response to HEAD keeps the backend's Content-Length and has no
        body.
        """
        response = b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nContent-Length: 1234\r\n\r\n"
        self.assertRelayed(response, response, b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")

    def test_noContentNotModified(self) -> None:
        """
        204 and 304 carry no body and no added framing.
        """
        for status in [b"204 No Content", b"304 Not Modified"]:
            response = (
                b"HTTP/1.1 "
                + status
                + b'\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nETag: "x"\r\n\r\n'
            )
            self.assertRelayed(response, response)

    def test_dateAddedWhenMissing(self) -> None:
        """
        A response without Date gets one (RFC 9110 section 6.6.1), and no
        Server.
        """
        _, received, _ = exchange(
            self,
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        )
        head = received.split(b"\r\n")
        self.assertEqual(head[0], b"HTTP/1.1 200 OK")
        self.assertEqual(
            sorted(line.split(b":")[0] for line in head[1:3]), [b"Content-Length", b"Date"]
        )

    def test_headBeforeBody(self) -> None:
        """
        The response head goes to the client as soon as it arrives, before
        any body byte.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET /events HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
        )

    def test_chunkedStreams(self) -> None:
        """
        Each chunk of a chunked response reaches the client as it arrives,
        before the backend has finished.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        )
        backend.dataReceived(b"6\r\nsecond\r\n0\r\n\r\n")
        self.assertTrue(client.value().endswith(b"5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"))

    def test_closeDelimitedBodyWhole(self) -> None:
        """
        A body that ends when the backend closes the connection cleanly
        arrives whole, and ends properly.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n\r\nall of"
        )
        backend.dataReceived(b" it")
        backend.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(client.value().endswith(b"6\r\nall of\r\n3\r\n it\r\n0\r\n\r\n"))
        self.assertFalse(client.disconnecting)

    def test_closeDelimitedBodyReset(self) -> None:
        """
        A body delimited by the connection closing that ends with a reset is
        cut short: the client connection is aborted, not finished.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\n\r\npartial")
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertFalse(client.value().endswith(b"0\r\n\r\n"))
        self.assertTrue(client.disconnected)
        self.assertIn("backend body cut short", harness.accessLog()[-1])

    def test_keepAlive(self) -> None:
        """
        The client connection and the backend connection both serve the next
        request.
        """
        harness = Harness(self, count=1)
        channel, client = harness.client(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, toBackend = harness.backend()
        backend.dataReceived(OK)
        toBackend.clear()
        channel.dataReceived(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(toBackend.value(), b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
        backend.dataReceived(OK)
        self.assertEqual(client.value(), OK_TO_CLIENT * 2)
        self.assertEqual(harness.reactor.tcpClients, [])


class ClientConnectionTests(SynchronousTestCase):
    """
    The client's own connection is kept or closed as it asks.
    """

    def test_closeAmongOptions(self) -> None:
        """
        C{close} in a list of connection options closes the connection after
        the response, which says so.
        """
        _, received, _ = exchange(
            self, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n", OK
        )
        self.assertEqual(
            received,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
            b"Content-Length: 2\r\n\r\nok",
        )

    def test_closeClosesConnection(self) -> None:
        """
        The connection is closed once that response is sent.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Hop, close\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertTrue(client.disconnecting)

    def test_http10Closes(self) -> None:
        """
        An HTTP/1.0 client's connection is closed after its response.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.0\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.0 200 OK\r\n"))
        self.assertTrue(client.disconnecting)


class BadRequestTests(SynchronousTestCase):
    """
    Requests that cannot be forwarded get a clear status, and the balancer
    goes on serving.
    """

    def assertRejected(self, request: bytes, statusLine: bytes) -> None:
        harness = Harness(self)
        _, client = harness.client(request)
        self.assertTrue(client.value().startswith(statusLine + b"\r\n"), client.value())
        self.assertEqual(harness.reactor.tcpClients, [])

    def test_twoHosts(self) -> None:
        """
        Two Host fields get 400, with a body and a log line that say why.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertTrue(
            client.value().endswith(b"\r\n\r\n400 Bad Request: more than one Host header\n")
        )
        self.assertEqual(
            harness.accessLog(),
            [
                "client=10.0.0.7 method=GET path=/ \N{RIGHTWARDS ARROW} backend=- status=400 ms=0.0"
                ' error="more than one Host header"'
            ],
        )

    def test_noHost(self) -> None:
        """
        An HTTP/1.1 request without Host gets 400.
        """
        self.assertRejected(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request")

    def test_nonAsciiTarget(self) -> None:
        """
        A request-target with bytes outside printable ASCII gets 400.
        """
        self.assertRejected(
            b"GET /caf\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 400 Bad Request"
        )

    def test_malformed(self) -> None:
        """
        A request line Twisted cannot parse gets 400.
        """
        self.assertRejected(b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", b"HTTP/1.1 400 Bad Request")

    def test_requestLineTooLong(self) -> None:
        """
        A request line over the limit gets 414.
        """
        self.assertRejected(
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long",
        )

    def test_headerLineTooLong(self) -> None:
        """
        A header line over the limit gets 431, not a silent close.
        """
        self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large",
        )


class BackendFailureTests(SynchronousTestCase):
    """
    A backend that fails gets the client a clear answer, and nothing is
    passed off as complete when it is not.
    """

    def test_refused(self) -> None:
        """
        A refused connection gets 502 with a plain-text body naming the
        backend.
        """
        harness = Harness(self, retries=0)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.refuse(ConnectionRefusedError())
        response = client.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertIn(b"Content-Type: text/plain; charset=utf-8\r\n", response)
        self.assertIn(b"backend 127.0.0.1:8081: Connection was refused", response)
        self.assertEqual(harness.backends[0].active, 0)

    def test_connectTimeout(self) -> None:
        """
        A connection that cannot be made in time gets 504.
        """
        harness = Harness(self, retries=0)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.refuse(TimeoutError())
        self.assertTrue(client.value().startswith(b"HTTP/1.1 504 Gateway Time-out\r\n"))

    def test_connectTimeoutPassedOn(self) -> None:
        """
        New backend connections use the configured connect timeout.
        """
        harness = Harness(self)
        harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(harness.reactor.tcpClients[0][3], 5)

    def test_closedBeforeResponse(self) -> None:
        """
        A backend that closes before answering gets 502.
        """
        harness = Harness(self)
        _, client = harness.client(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
        backend, _ = harness.backend()
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.value().startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertEqual(harness.backends[0].active, 0)

    def test_resetMidBody(self) -> None:
        """
        A backend that dies mid-body gets the client connection aborted; the
        body is not finished as if it were whole.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(client.value().endswith(b"\r\n\r\nabc"))
        self.assertTrue(client.disconnected)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn("error=", harness.accessLog()[-1])

    def test_resetMidChunkedBody(self) -> None:
        """
        A chunked body cut short never gets its last chunk.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertFalse(client.value().endswith(b"0\r\n\r\n"))
        self.assertTrue(client.disconnected)


@implementer(IAlgorithm, IResponseObserver)
class Observing(RoundRobin):
    """
    Round robin that records what L{IResponseObserver} tells it.
    """

    name = "observing"

    def __init__(self, backends: Any) -> None:
        super().__init__(backends)
        self.seen: list[tuple[int, float]] = []

    def answered(self, backend: Backend, seconds: float) -> None:
        self.seen.append((backend.port, seconds))


class FeedbackTests(SynchronousTestCase):
    """
    What the algorithm and the backends learn from each response.
    """

    LOADED = (
        b"HTTP/1.1 200 OK\r\nDate: Sat, 01 Jan 2000 00:00:00 GMT\r\nx-txlb-load: cpu=0.7, queue=1"
        b"\r\nContent-Length: 2\r\n\r\nok"
    )

    def test_loadHeaderReadAndDropped(self) -> None:
        """
        The load header reaches the backend's record, not the client.
        """
        _, toClient, harness = exchange(self, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", self.LOADED)
        self.assertEqual(toClient, OK_TO_CLIENT)
        self.assertEqual(harness.backends[0].load, 0.7)

    def test_otherLoadHeader(self) -> None:
        """
        With another C{--load-header}, that one is read and dropped, and
        C{X-Txlb-Load} passes like any field.
        """
        harness = Harness(self, loadHeader="X-Load")
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(self.LOADED.replace(b"\r\n\r\n", b"\r\nX-Load: 0.25\r\n\r\n"))
        self.assertIn(b"\r\nx-txlb-load: cpu=0.7, queue=1\r\n", client.value())
        self.assertNotIn(b"X-Load", client.value())
        self.assertEqual(harness.backends[0].load, 0.25)

    def test_observerTold(self) -> None:
        """
        An algorithm providing L{IResponseObserver} hears of each response
        head: which backend, and how long after the request was sent.
        """
        harness = Harness(self, retries=1)
        algorithm = Observing(harness.backends)
        harness.resource.useAlgorithm(algorithm)
        harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.reactor.advance(2)
        harness.refuse(ConnectionRefusedError())
        harness.reactor.advance(0.5)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        # The retry went to 8082 at 2 s and was answered at 2.5 s.
        self.assertEqual(algorithm.seen, [(8082, 0.5)])

    def test_otherAlgorithmsNotTold(self) -> None:
        """
        For an algorithm without L{IResponseObserver}, nothing is called.
        """
        harness = Harness(self)
        self.assertIsNone(harness.resource.answered)
        harness.resource.useAlgorithm(Observing(harness.backends))
        self.assertIsNotNone(harness.resource.answered)

    def test_newBackendSlowStart(self) -> None:
        """
        A backend added while running starts its slow start; those it keeps
        do not start again.
        """
        harness = Harness(self)
        harness.reactor.advance(7)
        added = Backend("127.0.0.1", 8090)
        harness.resource.setBackends([*harness.backends, added])
        self.assertEqual(
            [b.upSince for b in harness.resource.pool.backends],
            [float("-inf"), float("-inf"), 7],
        )


class ClientDisconnectTests(SynchronousTestCase):
    """
    A client that leaves stops the work done for it.
    """

    def test_channelStopsProducer(self) -> None:
        """
        When the client connection stops its producer mid-body, the backend
        connection is stopped too.
        """
        harness = Harness(self)
        channel, _ = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, toBackend = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        channel.stopProducing()
        self.assertEqual(toBackend.producerState, "stopped")

    def test_beforeResponse(self) -> None:
        """
        Leaving before the response cancels the backend request and
        releases the backend.
        """
        harness = Harness(self)
        channel, _ = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        _, toBackend = harness.backend()
        self.assertEqual(harness.backends[0].active, 1)
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(toBackend.disconnecting)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn("client disconnected", harness.accessLog()[-1])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_beforeConnected(self) -> None:
        """
        Leaving while the backend connection is being made releases the
        backend.
        """
        harness = Harness(self)
        channel, _ = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_whilePaused(self) -> None:
        """
        A client that stopped reading and then leaves still ends the
        exchange: the backend is released and the request logged.
        """
        harness = Harness(self)
        channel, _ = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        channel.pauseProducing()
        backend.dataReceived(b"def")
        backend.dataReceived(b"ghi")
        channel.connectionLost(Failure(ConnectionLost()))
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn("client disconnected", harness.accessLog()[-1])

    def test_midBody(self) -> None:
        """
        Leaving mid-body closes the backend connection and releases the
        backend.
        """
        harness = Harness(self)
        channel, _ = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, toBackend = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        channel.connectionLost(Failure(ConnectionLost()))
        # Stopping a TCP transport closes it.
        self.assertEqual(toBackend.producerState, "stopped")
        backend.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(harness.backends[0].active, 0)
        self.assertIn("client disconnected", harness.accessLog()[-1])
        self.assertEqual(self.flushLoggedErrors(), [])


class BackpressureTests(SynchronousTestCase):
    """
    A slow client holds a bounded amount of its response in memory.
    """

    def test_pausesAndResumesBackend(self) -> None:
        """
        While the client cannot take more, reading from the backend stops
        once the high-water mark is queued, and starts again when the client
        has drained it below the low-water mark.
        """
        harness = Harness(self)
        channel, client = harness.client(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, toBackend = harness.backend()
        chunk = b"x" * 65536
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(chunk) * 20))
        channel.pauseProducing()
        chunks = 0
        while toBackend.producerState == "producing" and chunks < 20:
            backend.dataReceived(chunk)
            chunks += 1
        self.assertEqual(toBackend.producerState, "paused")
        # One chunk was already being waited for; the rest stayed queued.
        self.assertEqual(chunks, HIGH_WATER // len(chunk) + 1)
        self.assertEqual(client.value().count(chunk), 1)
        channel.resumeProducing()
        self.assertEqual(toBackend.producerState, "producing")
        self.assertEqual(client.value().count(chunk), chunks)


class InternalErrorTests(SynchronousTestCase):
    """
    A bug in txlb ends the exchange visibly instead of hanging it.
    """

    def test_pickFails(self) -> None:
        """
        A bug while picking a backend (outside the algorithm, whose failures
        round robin covers) gets the client a 500, and the error logged.
        """
        harness = Harness(self)

        def broken(tried: object) -> list[Backend]:
            raise RuntimeError("bug")

        self.patch(harness.resource.pool, "candidates", broken)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertTrue(client.value().startswith(b"HTTP/1.1 500 Internal Server Error\r\n"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_abortsAndLogs(self) -> None:
        """
        An exception while relaying is logged, the client connection is
        aborted and the backend released.
        """
        harness = Harness(self)
        _, client = harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()

        def broken(fields: object, connection: object, drop: object, watched: object) -> None:
            raise RuntimeError("bug")

        self.patch(proxy.headers, "forClient", broken)
        backend.dataReceived(OK)
        self.assertTrue(client.disconnected)
        self.assertEqual(harness.backends[0].active, 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SiteTests(SynchronousTestCase):
    """
    The site's own choices.
    """

    def test_alpn(self) -> None:
        """
        TLS ALPN offers h2 first, then HTTP/1.1; with HTTP/2 turned off,
        HTTP/1.1 only.
        """
        site = Harness(self).site
        self.assertEqual(site.acceptableProtocols(), [b"h2", b"http/1.1"])
        site.http2 = False
        self.assertEqual(site.acceptableProtocols(), [b"http/1.1"])

    def test_noTwistedAccessLog(self) -> None:
        """
        Twisted's combined-format access log stays off: the proxy's own line
        is the only one logged for a request.
        """
        harness = Harness(self)
        harness.site.startFactory()
        self.addCleanup(harness.site.stopFactory)
        harness.client(b"GET /once HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertEqual(len([m for m in harness.messages() if "/once" in m]), 1)

    def test_backendPool(self) -> None:
        """
        Backend connections are kept for reuse, more than two per backend,
        and closed before common backends' keep-alive timeouts.
        """
        client = Harness(self).backendClient
        self.assertGreater(client.maxIdle, 2)
        self.assertLess(client.idleTimeout, 2)

    def test_globalReactorByDefault(self) -> None:
        """
        Without a reactor, the resource uses the global one.
        """
        from twisted.internet import reactor

        harness = Harness(self)
        resource = LoadBalancerResource(harness.resource.algorithm, harness.backendClient)
        self.assertIs(resource.clock, reactor)


class AccessLogTests(SynchronousTestCase):
    """
    One line per request says who, what, where and how it ended.
    """

    def test_line(self) -> None:
        """
        The line has the client, method, path, backend, status and time.
        """
        harness = Harness(self)
        harness.client(b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        harness.reactor.advance(0.0013)
        backend.dataReceived(OK)
        self.assertEqual(
            harness.accessLog(),
            [
                "client=10.0.0.7 method=GET path=/ping \N{RIGHTWARDS ARROW} backend=127.0.0.1:8081 status=200 ms=1.3"
            ],
        )

    def test_quietBackendConnections(self) -> None:
        """
        A new backend connection logs nothing of its own.
        """
        harness = Harness(self)
        harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.backend()
        self.assertEqual(
            [e for e in harness.events if "Starting factory" in e.get("log_format", "")], []
        )

    def test_activeCount(self) -> None:
        """
        A backend's active count covers exactly the requests in flight.
        """
        harness = Harness(self, count=1)
        harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        harness.client(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(harness.backends[0].active, 2)
        first, _ = harness.backend()
        first.dataReceived(OK)
        self.assertEqual(harness.backends[0].active, 1)

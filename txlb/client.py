"""
The backend side: txlb's own HTTP/1.1 client and its connection pool.

Twisted's Agent rebuilds the request-target, drops interim responses, hides
the response's C{Connection} field, does not bound the response head, loses
a 304's C{Content-Length} and cannot tell a reset from a clean close; and
most of a relay's time went into its machinery.  This client does only what
a proxy needs:

  - the request head goes out in one write, built from the raw target and
    the field lines the proxy chose; the body streams behind it from a
    producer, framed with its C{Content-Length} or chunked;
  - the response is parsed strictly by L{txlb.http1}: a malformed one fails
    the request with L{BadResponseError} and closes the connection;
  - interim (1xx) responses go to the exchange (L{IExchange}) as they come;
    the final head fires the request's L{Deferred}; body bytes and the end of
    the body go to the exchange, which can pause, resume or stop the
    connection;
  - a connection goes back to the pool only after a complete response that
    lets it (HTTP/1.1 without C{Connection: close}, or HTTP/1.0 with
    C{keep-alive}; never a body ended by the close) and a complete request;
    idle ones are closed before the backends' keep-alive timeouts.

treq stays for the health checks and the tests, where its conveniences are
right.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH

from txlb.backend import Backend
from txlb.http1 import MAX_HEAD, BadResponseError, ChunkedDecoder, ResponseHead, headEnd, parseHead
from txlb.interfaces import IExchange
from txlb.tls import BackendTLS
from txlb.writes import WriteBatcher

#: Idle connections kept open to each backend.
MAX_IDLE_PER_BACKEND = 64
#: Seconds an idle backend connection is kept: below the keep-alive timeout
#: of common backends (gunicorn closes idle connections after 2 s, Node and
#: Apache after 5 s), so txlb never sends a request down a connection the
#: backend is closing.
BACKEND_IDLE_TIMEOUT = 1.5

#: Methods that Agent, too, sends again on a fresh connection when a pooled
#: one turns out to have been closed by the backend.
_RESENDABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})


def requestHead(
    method: bytes, target: bytes, framing: bytes, fields: Sequence[tuple[bytes, bytes]]
) -> bytes:
    """
    The bytes of a request head: the request line with the raw target, the
    C{framing} field line of the body (if not empty), then the field lines
    as given.
    """
    # One join of the pieces: measured cheaper than formatting each line.
    pieces = [method, b" ", target, b" HTTP/1.1\r\n", framing]
    for name, value in fields:
        pieces += (name, b": ", value, b"\r\n")
    pieces.append(b"\r\n")
    return b"".join(pieces)


def lastChunk(trailers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """
    The end of a chunked body: the last chunk, the C{trailers} field lines,
    and the empty line.
    """
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + b"".join(b"%s: %s\r\n" % field for field in trailers) + b"\r\n"


class _Request:
    """
    One request on its way: what to write, and where the answer goes.
    """

    __slots__ = ("body", "connection", "exchange", "head", "method", "result")

    def __init__(self, method: bytes, head: bytes, body: Any, exchange: IExchange) -> None:
        self.method = method
        self.head = head
        self.body = body
        self.exchange = exchange
        #: Fired with the final head, or failed; C{None} once it has been.
        self.result: Deferred[ResponseHead] | None = None
        #: The connection (or the Deferred of the connection being made).
        self.connection: Any = None

    def cancel(self, result: Deferred[ResponseHead]) -> None:
        """
        The request's Deferred was cancelled: stop connecting, or close the
        connection.
        """
        self.result = None
        connection, self.connection = self.connection, None
        if isinstance(connection, Deferred):
            connection.cancel()
        elif connection is not None:
            connection.abort()


class _BodyWriter:
    """
    The consumer a request body is written to: the connection's transport,
    with chunked framing when the length is unknown.
    """

    def __init__(self, transport: Any, chunked: bool) -> None:
        self.transport = transport
        self.chunked = chunked

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.chunked:
            self.transport.writeSequence([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.transport.write(data)


#: States of a L{BackendConnection}.
IDLE, HEAD, BODY, CLOSED = "idle", "head", "body", "closed"


class BackendConnection(Protocol):
    """
    One HTTP/1.1 connection to a backend, carrying one request at a time.

    While a response body is relayed it is the exchange's producer: the
    exchange pauses, resumes or stops reading from the backend through it.

    @ivar closed: A L{Deferred} to fire when the connection has closed, if
        someone waits for that.
    """

    closed: Deferred[None] | None = None

    def __init__(self, client: BackendClient, backend: Backend) -> None:
        self._client = client
        self.backend = backend
        self.state = IDLE
        self.reused = False
        self.idleSince = 0.0
        self._request: _Request | None = None
        self._buffer = b""
        #: How far the buffer was searched for the end of the head.
        self._scanned = 0
        self._head: ResponseHead | None = None
        self._remaining: int | None = None
        self._chunks: ChunkedDecoder | None = None
        #: The body still being sent, if any.
        self._sending: Any = None
        self._receivedAny = False
        self._paused = False

    def connectionMade(self) -> None:
        self._client.writes.adopt(self.transport)

    def send(self, request: _Request) -> None:
        """
        Write C{request}, head first, then its body as it comes.
        """
        self._request = request
        self.state = HEAD
        self._receivedAny = False
        transport = self.transport
        assert transport is not None
        transport.write(request.head)
        body = request.body
        if body is not None:
            self._sending = body
            transport.registerProducer(body, True)  # type: ignore[attr-defined]
            writer = _BodyWriter(transport, body.length is UNKNOWN_LENGTH)
            body.startProducing(writer).addCallback(self._bodySent, writer, body)
        # As much of the request as there is now.
        self._client.writes.send(transport)

    def _bodySent(self, ignored: object, writer: _BodyWriter, body: Any) -> None:
        self._sending = None
        transport = self.transport
        assert transport is not None
        transport.unregisterProducer()  # type: ignore[attr-defined]
        if writer.chunked:
            transport.write(lastChunk(body.trailers))
        if self.state == IDLE:
            # The whole response came before the end of the body.
            self._client._release(self)

    def dataReceived(self, data: bytes) -> None:
        self._receivedAny = True
        state = self.state
        if state == BODY:
            self._bodyData(data)
        elif state == HEAD:
            self._buffer += data
            self._readHeads()
        elif state == IDLE:
            # Bytes nobody asked for: the connection cannot be trusted.
            self.abort()

    def _readHeads(self) -> None:
        """
        Parse the heads in the buffer: interim ones go to the exchange, the
        final one fires the request's Deferred and starts the body.
        """
        while self.state == HEAD:
            request = self._request
            assert request is not None
            buffer = self._buffer
            end = headEnd(buffer, self._scanned)
            if end < 0 or end > MAX_HEAD:
                if end > MAX_HEAD or len(buffer) > MAX_HEAD:
                    self._fail(BadResponseError("a response head over 64 KiB"))
                    return
                # The empty line may yet begin in the last two bytes.
                self._scanned = max(0, len(buffer) - 2)
                return
            self._scanned = 0
            try:
                head = parseHead(buffer[:end])
                length = head.bodyLength(request.method)
            except BadResponseError as e:
                self._fail(e)
                return
            self._buffer = buffer[end:]
            if head.code < 200:
                if head.code == 101:
                    self._fail(
                        BadResponseError("101 Switching Protocols to a request without Upgrade")
                    )
                    return
                request.exchange.interim(head)
                continue
            self._head = head
            self._remaining = length
            self._chunks = ChunkedDecoder(request.exchange.bodyReceived) if head.chunked else None
            self.state = BODY
            request.exchange.producer = self
            result, request.result = request.result, None
            assert result is not None
            result.callback(head)
            rest, self._buffer = self._buffer, b""
            if self.state == BODY and (rest or length == 0):
                self._bodyData(rest)

    def _bodyData(self, data: bytes) -> None:
        exchange = self._request.exchange  # type: ignore[union-attr]
        remaining = self._remaining
        if remaining is not None:
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                exchange.bodyReceived(data)
                return
            extra = b""
            if len(data) > remaining:
                data, extra = data[:remaining], data[remaining:]
            self._responseDone(not extra, data)
        elif self._chunks is not None:
            try:
                extra = self._chunks.feed(data)
            except BadResponseError as e:
                self._endBody(Failure(e))
                self.abort()
                return
            if self._chunks.done and self.state == BODY:
                self._responseDone(not extra)
        else:
            # Ended by the close.
            exchange.bodyReceived(data)

    def _responseDone(self, reusable: bool, data: bytes = b"") -> None:
        """
        The response is whole, C{data} its last bytes: tell the exchange,
        then pool the connection if it may carry another request.
        """
        head = self._head
        assert head is not None
        self._endBody(None, data)
        if self.state != IDLE:
            return
        if not (reusable and head.keepAlive()):
            self.abort()
        elif self._sending is None:
            self._client._release(self)
        # Else: released once the body is sent, unless the exchange closes
        # the connection meanwhile, as it does when it answers early.

    def _endBody(self, reason: Failure | None, data: bytes = b"") -> None:
        request, self._request = self._request, None
        self.state = IDLE
        self._head = None
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        if request is not None:
            request.exchange.bodyEnded(reason, data)

    def _fail(self, error: Exception) -> None:
        """
        No usable response head: fail the request and close.
        """
        request = self._request
        self.abort()
        if request is not None and request.result is not None:
            result, request.result = request.result, None
            result.errback(Failure(error))

    def abort(self) -> None:
        """
        Close the connection at once, whatever it is doing, without telling
        the exchange anything more.
        """
        self.state = CLOSED
        self._request = None
        self._stopSending()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _stopSending(self) -> None:
        body, self._sending = self._sending, None
        if body is not None:
            # That attempt is over; the body may be sent again elsewhere.
            body.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        state, request = self.state, self._request
        self.state = CLOSED
        self._request = None
        self._stopSending()
        self._client._forget(self)
        if request is None:
            return
        if state == BODY:
            closeDelimited = self._remaining is None and self._chunks is None
            request.exchange.bodyEnded(
                None if closeDelimited and reason.check(ConnectionDone) else reason
            )
            return
        if request.result is None:
            return
        if self._buffer:
            reason = Failure(BadResponseError("the connection closed during the response head"))
        elif (
            self.reused
            and not self._receivedAny
            and request.body is None
            and request.method in _RESENDABLE
        ):
            # The backend closed this pooled connection as the request went
            # out: send it again on a new one, as Agent does.
            self._client._connect(self.backend, request)
            return
        result, request.result = request.result, None
        result.errback(reason)

    # IPushProducer, for the exchange relaying the body.

    def pauseProducing(self) -> None:
        if self.state == BODY and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        if self.state == BODY and self._paused:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        """
        The exchange wants no more of this response: close, without telling
        it anything more.
        """
        self.state = CLOSED
        self._request = None
        self._stopSending()
        self.transport.stopProducing()  # type: ignore[union-attr]


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, client: BackendClient, backend: Backend) -> None:
        self.client = client
        self.backend = backend

    def buildProtocol(self, addr: Any) -> BackendConnection:
        return BackendConnection(self.client, self.backend)


class BackendClient:
    """
    Sends requests to backends over pooled HTTP/1.1 connections.

    Idle connections are kept per backend, newest first, and closed once
    idle for L{idleTimeout}; a single timer sweeps them, rather than one per
    connection.

    Connections to an C{https://} backend speak TLS (L{txlb.tls}); the
    handshake is part of making the connection, so a pooled connection
    costs none, and a cleartext backend's connections nothing more.

    @ivar connectTimeout: Seconds allowed to make a connection.
    @ivar maxIdle: Idle connections kept per backend.
    @ivar idleTimeout: Seconds an idle connection is kept.
    @ivar tls: The TLS settings of C{https://} backends (see L{setTLS}).
    """

    def __init__(
        self,
        reactor: Any,
        connectTimeout: float,
        maxIdle: int = MAX_IDLE_PER_BACKEND,
        idleTimeout: float = BACKEND_IDLE_TIMEOUT,
        tls: BackendTLS | None = None,
    ) -> None:
        self._reactor = reactor
        self.connectTimeout = connectTimeout
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.tls = tls or BackendTLS()
        self._idle: dict[Backend, list[BackendConnection]] = {}
        self._endpoints: dict[Backend, IStreamClientEndpoint] = {}
        self._sweep: Any = None
        self.writes = WriteBatcher(reactor)

    def request(
        self,
        backend: Backend,
        method: bytes,
        target: bytes,
        fields: Sequence[tuple[bytes, bytes]],
        body: Any,
        exchange: IExchange,
    ) -> Deferred[ResponseHead]:
        """
        Send C{method target} with C{fields} to C{backend}, and C{body} (an
        L{IBodyProducer<twisted.web.iweb.IBodyProducer>}, a
        L{txlb.upload.StreamingBody}) if not C{None}, framed by its length, or
        chunked and followed by its C{trailers}.

        @return: A L{Deferred} that fires with the final L{ResponseHead},
            or fails: with L{BadResponseError} for a malformed answer, with the
            connection's error otherwise.  Cancelling it closes the
            connection.
        """
        framing = b""
        if body is not None:
            if body.length is UNKNOWN_LENGTH:
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                framing = b"Content-Length: %d\r\n" % body.length
        elif method in (b"POST", b"PUT"):
            # As Agent did: the same message, stated (RFC 9110 section 8.6).
            framing = b"Content-Length: 0\r\n"
        request = _Request(method, requestHead(method, target, framing, fields), body, exchange)
        result = request.result = Deferred(request.cancel)
        idle = self._idle.get(backend)
        if idle:
            now = self._reactor.seconds()
            while idle:
                connection = idle.pop()
                if connection.state == IDLE and now - connection.idleSince < self.idleTimeout:
                    connection.reused = True
                    request.connection = connection
                    connection.send(request)
                    return result
                connection.abort()
        self._connect(backend, request)
        return result

    def _connect(self, backend: Backend, request: _Request) -> None:
        """
        Make a new connection to C{backend} and send C{request} on it.
        """
        attempt = self.endpoint(backend).connect(_ConnectionFactory(self, backend))
        request.connection = attempt
        attempt.addCallbacks(
            self._connected, self._connectFailed, callbackArgs=(request,), errbackArgs=(request,)
        )

    def _connected(self, connection: BackendConnection, request: _Request) -> None:
        request.connection = connection
        if request.result is None:
            # Cancelled meanwhile.
            connection.abort()
            return
        request.exchange.connected()
        connection.send(request)

    def _connectFailed(self, failure: Failure, request: _Request) -> None:
        request.connection = None
        if request.result is not None:
            result, request.result = request.result, None
            result.errback(failure)

    def _release(self, connection: BackendConnection) -> None:
        """
        C{connection} may carry another request: keep it, unless enough are
        idle already.
        """
        idle = self._idle.setdefault(connection.backend, [])
        if len(idle) >= self.maxIdle:
            connection.abort()
            return
        connection.idleSince = self._reactor.seconds()
        idle.append(connection)
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self.idleTimeout, self._closeExpired)

    def _forget(self, connection: BackendConnection) -> None:
        """
        C{connection} closed.
        """
        idle = self._idle.get(connection.backend)
        if idle and connection in idle:
            idle.remove(connection)
        closed = connection.closed
        if closed is not None:
            connection.closed = None
            closed.callback(None)

    def _closeExpired(self) -> None:
        """
        Close the connections idle for too long; come back when the next
        one expires.
        """
        self._sweep = None
        now = self._reactor.seconds()
        oldest = None
        for idle in self._idle.values():
            while idle and now - idle[0].idleSince >= self.idleTimeout:
                idle.pop(0).abort()
            if idle and (oldest is None or idle[0].idleSince < oldest):
                oldest = idle[0].idleSince
        if oldest is not None:
            self._sweep = self._reactor.callLater(
                oldest + self.idleTimeout - now, self._closeExpired
            )

    def closeCachedConnections(self) -> Deferred[None]:
        """
        Close every idle connection.

        @return: A L{Deferred} that fires when they have all closed.
        """
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        closing = []
        for idle in self._idle.values():
            for connection in idle:
                connection.closed = Deferred()
                closing.append(connection.closed)
                connection.abort()
        self._idle.clear()
        return DeferredList(closing).addCallback(lambda _: None)

    def endpoint(self, backend: Backend) -> IStreamClientEndpoint:
        """
        The endpoint for new connections to C{backend}: a plain TCP one for
        an IP address, so no name lookup runs; a hostname is looked up on
        each new connection, so DNS changes are followed.  Over it, TLS for
        an C{https://} backend.
        """
        endpoint = self._endpoints.get(backend)
        if endpoint is None:
            reactor, host, port, timeout = (
                self._reactor,
                backend.host,
                backend.port,
                self.connectTimeout,
            )
            try:
                version = ipaddress.ip_address(host).version
            except ValueError:
                endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
            else:
                kind = TCP4ClientEndpoint if version == 4 else TCP6ClientEndpoint
                endpoint = kind(reactor, host, port, timeout=timeout)
            if backend.tls:
                endpoint = wrapClientTLS(self.tls.creator(host), endpoint)
            self._endpoints[backend] = endpoint
        return endpoint

    def forgetEndpoints(self) -> None:
        """
        Make new endpoints from now on: the backends or the connect timeout
        changed.
        """
        self._endpoints.clear()

    def setTLS(self, tls: BackendTLS) -> None:
        """
        Make connections to C{https://} backends with C{tls} from now on,
        and close the idle ones made with the old settings: a pooled
        connection is only reused with the TLS identity it was made with.
        """
        self.tls = tls
        self._endpoints.clear()
        for backend, idle in self._idle.items():
            while backend.tls and idle:
                idle.pop().abort()

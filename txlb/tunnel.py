"""
Upgrade requests (WebSocket and others): a raw byte tunnel after routing.

Twisted's HTTP server does not speak C{101 Switching Protocols}, and the
backend client carries one request at a time on pooled connections.  So a
request that asks for an upgrade is routed like any request, then leaves the
client's path for a L{Tunnel}:

  0. it takes a slot on a backend below its limit of requests in flight
     (C{--max-conn}), as any request does, waiting in the pool's queue for
     one if need be: a tunnel holds a backend connection for as long as it
     lasts, so it counts against the limit from start to close (as in
     HAProxy, whose server C{maxconn} counts a WebSocket connection, and
     whose queue holds the upgrade request as any other).  Past the queue's
     size or its time-out, txlb answers 503 with C{Retry-After}, flag
     C{QF} or C{QT}, as for any request;
  1. the tunnel opens its own connection to the picked backend, with the
     same endpoint as the backend client (its connect timeout, and TLS for
     an C{https://} backend), and writes the request head itself: the
     client's method and raw target, the end-to-end fields that the proxy
     sends for any request, then C{Connection: Upgrade} and the client's
     C{Upgrade} values (a request with a body is not upgraded: see
     L{wantsUpgrade});
  2. it reads the backend's answer head, at most L{MAX_HEAD} bytes, parsed
     as strictly as any response (L{txlb.http1});
  3. on C{101} the client connection stops speaking HTTP
     (L{ProxyChannel.spliceTo}); the 101 head goes to the client as the
     backend sent it, then bytes flow both ways, with flow control both ways,
     until either side closes, and then the other side is closed too, with
     a lingering close (L{LINGER});
  4. on any other final answer (the backend refused the upgrade: 400, 426,
     ...) the answer is relayed as the backend sent it, up to the end of its
     body, and then the client connection is closed, lingering too;
  5. a backend that cannot be reached, or whose TLS handshake fails, gets
     the client a 502 (504 on a connect timeout) in txlb's plain-text
     style, as for other requests, and the client connection stays open
     for the next request.

The tunnel counts as one active request on its backend from start to close,
for least connections, and logs one line when it ends, with the whole
duration.
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone, TimeoutError
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http, server
from zope.interface import implementer

from txlb import headers, tls
from txlb.admission import RETRY_AFTER, QueueError, QueueFullError
from txlb.http1 import MAX_HEAD, BadResponseError, ChunkedDecoder, ResponseHead, parseHead
from txlb.outcome import NORMAL, Outcome, answer, describe
from txlb.request import forwardTarget

if TYPE_CHECKING:
    from txlb.backend import Backend, BackendPool


class Relay(typing.Protocol):
    """
    What a tunnel needs of the resource that made it: a backend below its
    limit and how to reach it, the backends' counts and health, the fields
    to send, the clock, the log, and where its outcome goes.
    (L{txlb.proxy.LoadBalancerResource} provides it.)
    """

    pool: BackendPool
    clock: IReactorTime
    log: Logger

    def admit(self, request: server.Request) -> Backend | None:
        """
        The backend to send C{request} to now, or C{None} if it must
        L{queue}.
        """

    def queue(self, request: server.Request) -> Deferred[tuple[Backend, float]]:
        """
        Wait for a backend below its limit: the backend, to count sent at
        once, and the seconds waited.
        """

    def release(self, backend: Backend) -> None:
        """
        The tunnel on C{backend} is over.
        """

    def endpoint(self, backend: Backend) -> IStreamClientEndpoint: ...

    def outgoingHeaders(self, request: server.Request, clientHost: str) -> headers.Fields: ...

    def ended(self, outcome: Outcome) -> None: ...


#: How long, at most, txlb goes on reading (and dropping) what a side of a
#: tunnel sends after txlb has closed that side for writing.  Closing a
#: socket with unread bytes makes the kernel send a reset, which throws away
#: what txlb relayed last and the peer has not read yet; a peer that keeps
#: sending while it reads is ordinary, so txlb waits for it to close, as
#: nginx's C{lingering_close} does (nginx: C{lingering_time} 30 s,
#: C{lingering_timeout} 5 s), but never longer than this.
LINGER = 2.0


def wantsUpgrade(request: server.Request) -> bool:
    """
    Whether C{request} asks to switch protocols: an HTTP/1.1 request with an
    C{Upgrade} field and C{upgrade} among its C{Connection} options, and no
    body.  An HTTP/1.0 request's C{Upgrade} is ignored (RFC 9110 section
    7.8).

    So is the C{Upgrade} of a request with a body (chunked, or a
    C{Content-Length} other than 0), which is forwarded as an ordinary
    request, without the upgrade's fields, as any server may (section 7.8).
    Parsers disagree on where such a request ends: h11 reads the body as
    the request's, llhttp as the new protocol's first bytes; forwarded as
    an ordinary request, its body is the request's for every hop, and no
    tunnel ever holds bytes whose meaning was in doubt.  HAProxy (after
    its issue 1381), Kestrel and Helidon ignore the upgrade so too;
    refusing it instead would break the clients and proxies that send
    C{Connection: Upgrade} with every request (many nginx configurations,
    curl's C{--http2} on a POST).
    """
    received = request.requestHeaders
    if not (
        request.clientproto == b"HTTP/1.1"
        and received.hasHeader(b"upgrade")
        and b"upgrade" in headers.tokens(received, b"connection")
    ):
        return False
    # The channel has checked the framing fields: digits, or chunked.
    lengths = received.getRawHeaders(b"content-length")
    chunked = received.hasHeader(b"transfer-encoding")
    return not chunked and (lengths is None or int(lengths[0]) == 0)


def upgradeRequest(request: server.Request, outgoing: headers.Fields) -> bytes:
    """
    The bytes of the upgrade request to send to the backend, with the
    C{outgoing} header fields the proxy sends for it.  It has no body (see
    L{wantsUpgrade}); a C{Content-Length: 0} the client sent goes too.
    """
    received = request.requestHeaders
    lines = [b"%s %s HTTP/1.1" % (request.method, forwardTarget(request))]
    if received.hasHeader(b"content-length"):
        lines.append(b"Content-Length: 0")
    lines.extend(name + b": " + value for name, value in outgoing)
    lines.append(b"Connection: Upgrade")
    lines.extend(b"Upgrade: " + value for value in received.getRawHeaders(b"upgrade", ()))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class BodyEnd:
    """
    Finds where the body of a response ends in the raw bytes that follow its
    head, so that a response relayed raw can be followed by a close.

    @ivar ended: Whether the body has ended.
    """

    def __init__(self, method: bytes, head: ResponseHead) -> None:
        length = head.bodyLength(method)
        self.ended = length == 0
        self._remaining = None if head.chunked else length
        # Only where the chunks end matters here, not what they hold.
        self._chunks = ChunkedDecoder(lambda data: None) if head.chunked else None

    def feed(self, data: bytes) -> bytes:
        """
        Take the next raw bytes; return those that belong to the response.

        @raise BadResponseError: If a chunked body is malformed.
        """
        if self.ended:
            return b""
        if self._remaining is not None:
            data = data[: self._remaining]
            self._remaining -= len(data)
            self.ended = self._remaining == 0
            return data
        if self._chunks is not None:
            extra = self._chunks.feed(data)
            self.ended = self._chunks.done
            return data[: len(data) - len(extra)]
        return data

    @property
    def closeDelimited(self) -> bool:
        """
        Whether the body ends only when the backend closes.
        """
        return self._remaining is None and self._chunks is None


@implementer(IPushProducer)
class _Throttle:
    """
    Registered as the producer of one connection: while that connection
    cannot take more, reading from the other one stops.
    """

    def __init__(self, tunnel: Tunnel, reading: Any) -> None:
        self.tunnel = tunnel
        self.reading = reading

    def pauseProducing(self) -> None:
        if not self.tunnel.over:
            self.reading.pauseProducing()

    def resumeProducing(self) -> None:
        if not self.tunnel.over:
            self.reading.resumeProducing()

    def stopProducing(self) -> None:
        # The connection lost is reported to the tunnel, which closes the
        # other side.
        pass


class _BackendSide(Protocol):
    """
    The tunnel's connection to the backend.
    """

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.tunnel.backendConnected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.fromBackend(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.tunnel.backendLost(reason)


class _ClientSide(Protocol):
    """
    The client connection, once it no longer speaks HTTP.
    """

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.fromClient(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.tunnel.clientLost(reason)


#: Waiting for a backend below its limit, in the pool's queue.
QUEUED = "queued"
#: Waiting for the backend connection.
CONNECTING = "connecting"
#: Connected, waiting for the backend's answer head.
HEAD = "head"
#: The backend refused the upgrade; relaying its answer raw.
REFUSED = "refused"
#: The backend switched: bytes flow both ways.
OPEN = "open"
#: Over: both sides closed or closing, count released, line logged.
OVER = "over"


class Tunnel:
    """
    One upgrade request relayed to one backend, then, if the backend
    switches protocols, the byte tunnel between the two connections.

    @ivar state: One of L{QUEUED}, L{CONNECTING}, L{HEAD}, L{REFUSED},
        L{OPEN}, L{OVER}.
    @ivar backend: The backend, once one was below its limit.
    @ivar queued: Seconds waited in the queue, or C{None} if it did not
        wait.
    """

    backend: Backend

    def __init__(
        self,
        resource: Relay,
        request: server.Request,
        clientHost: str,
        started: float,
    ) -> None:
        self.resource = resource
        self.request = request
        self.clientHost = clientHost
        self.started = started
        self.state = CONNECTING
        self.holding = False
        self.queued: float | None = None
        self.admitting: Deferred[tuple[Backend, float]] | None = None
        self.connecting: Deferred[Any] | None = None
        self.backendTransport: Any = None
        self.clientTransport: Any = None
        self.received = b""
        self.code: int | None = None
        self.bodyEnd: BodyEnd | None = None
        self.throttled: list[Any] = []
        #: The end of the lingering close of each side being closed.
        self.lingering: dict[Any, IDelayedCall] = {}

    @property
    def over(self) -> bool:
        return self.state == OVER

    @property
    def channel(self) -> Any:
        """
        The client connection's L{txlb.server.ProxyChannel}.
        """
        return self.request.channel

    def start(self) -> None:
        """
        Take a backend below its limit, waiting in the queue for one if need
        be; then connect to it.
        """
        self.request.notifyFinish().addErrback(self._clientLeftEarly)
        backend = self.resource.admit(self.request)
        if backend is not None:
            self._connect(backend)
            return
        self.state = QUEUED
        self.waitingSince = self.resource.clock.seconds()
        # It may fail at once (the queue is full), ending the tunnel.
        self.admitting = admitting = self.resource.queue(self.request)
        admitting.addCallbacks(self._admitted, self._notAdmitted)
        admitting.addErrback(self._internalError)

    def _admitted(self, admitted: tuple[Backend, float]) -> None:
        self.admitting = None
        backend, self.queued = admitted
        self._connect(backend)

    def _notAdmitted(self, failure: Failure) -> None:
        """
        The queue was full or timed out (or the client left, and the
        tunnel is over already): answer 503.
        """
        self.admitting = None
        if self.over and failure.check(CancelledError):
            return
        failure.trap(QueueError)
        refusal = failure.value
        assert isinstance(refusal, QueueError)
        if not isinstance(refusal, QueueFullError):
            self.queued = self.resource.clock.seconds() - self.waitingSince
        why = str(refusal)
        self.request.responseHeaders.setRawHeaders(b"Retry-After", [b"%d" % RETRY_AFTER])
        answer(self.request, http.SERVICE_UNAVAILABLE, why)
        self._over(http.SERVICE_UNAVAILABLE, why, LogLevel.info, refusal.flag)

    def _connect(self, backend: Backend) -> None:
        """
        Count the tunnel as active on C{backend} and connect to it.
        """
        self.backend = backend
        self.state = CONNECTING
        self.resource.pool.sending(backend)
        self.holding = True
        self.connecting = connectProtocol(self.resource.endpoint(backend), _BackendSide(self))
        self.connecting.addCallbacks(self._connected, self._connectFailed)
        self.connecting.addErrback(self._internalError)

    # Before the backend answers.

    def backendConnected(self, transport: ITransport) -> None:
        if self.over:
            transport.abortConnection()  # type: ignore[attr-defined]
            return
        self.state = HEAD
        self.backendTransport = transport
        transport.write(
            upgradeRequest(
                self.request, self.resource.outgoingHeaders(self.request, self.clientHost)
            )
        )

    def _connected(self, protocol: Protocol) -> None:
        self.connecting = None

    def _connectFailed(self, failure: Failure) -> None:
        self.connecting = None
        if self.over:
            # The client left and the attempt was cancelled.
            return
        self.resource.pool.failed(self.backend, describe(failure))
        if failure.check(TimeoutError):
            self._fail(http.GATEWAY_TIMEOUT, "connect timeout")
        else:
            self._fail(http.BAD_GATEWAY, describe(failure))

    def _fail(self, code: int, why: str) -> None:
        """
        The backend gave no usable answer: say why to the client, whose
        connection still speaks HTTP.
        """
        if self.backendTransport is not None:
            self.backendTransport.abortConnection()
        answer(self.request, code, f"backend {self.backend.address}: {why}")
        self._over(code, why, LogLevel.warn)

    def _clientLeftEarly(self, reason: Failure) -> None:
        """
        The client went away before the backend answered: leave the queue,
        stop connecting, or close the backend connection.
        """
        if self.state not in (QUEUED, CONNECTING, HEAD):
            return
        self._over(None, "client disconnected", LogLevel.info)
        if self.admitting is not None:
            self.admitting.cancel()
        if self.connecting is not None:
            self.connecting.cancel()
        if self.backendTransport is not None:
            self.backendTransport.abortConnection()

    def fromBackend(self, data: bytes) -> None:
        if self.state == OPEN:
            self.clientTransport.write(data)
        elif self.state == REFUSED:
            self._relay(data)
        elif self.state == HEAD:
            self.received += data
            self._readHeads()

    def _readHeads(self) -> None:
        """
        Act on each complete head received: pass interim ones on, switch on
        101, relay any other final answer.
        """
        while self.state == HEAD:
            end = self.received.find(b"\r\n\r\n", 0, MAX_HEAD)
            if end < 0:
                if len(self.received) >= MAX_HEAD:
                    self._fail(http.BAD_GATEWAY, "response head over 64 KiB")
                return
            head, self.received = self.received[: end + 4], self.received[end + 4 :]
            try:
                # Relayed raw, so its lines must end with CRLF (found above)
                # and it must be as strict as any other response.
                parsed = parseHead(head)
            except BadResponseError as e:
                self._fail(http.BAD_GATEWAY, f"malformed response: {e}")
                return
            self.resource.pool.succeeded(self.backend)
            code = parsed.code
            if code == http.SWITCHING:
                self._switch(head)
            elif code >= 200:
                self._refused(parsed, head)
            elif code != 100:
                # 102, 103: interim answers the client may use.  A 100 is
                # dropped, as txlb has already answered the client's
                # Expect itself.
                self.channel.transport.write(head)

    def _takeOver(self, state: str) -> bytes:
        """
        Take the client connection away from HTTP; return the bytes the
        client sent after its request head.
        """
        self.state = state
        self.clientTransport = self.channel.transport
        return self.channel.spliceTo(_ClientSide(self))

    def _switch(self, head: bytes) -> None:
        """
        The backend switched protocols: relay its 101 as sent, then splice.
        """
        early = self._takeOver(OPEN)
        self.code = http.SWITCHING
        client, backend = self.clientTransport, self.backendTransport
        self._throttle(client, backend)
        self._throttle(backend, client)
        # HTTPChannel stops reading past 16 KiB held back.
        client.resumeProducing()
        client.write(head + self.received)
        self.received = b""
        if early:
            backend.write(early)

    def _refused(self, parsed: ResponseHead, head: bytes) -> None:
        """
        The backend answered without switching: relay its answer raw, then
        close.
        """
        self._takeOver(REFUSED)
        self.code = parsed.code
        self.bodyEnd = BodyEnd(self.request.method, parsed)
        self._throttle(self.clientTransport, self.backendTransport)
        # Read from the client again, only to notice if it leaves.
        self.clientTransport.resumeProducing()
        self.clientTransport.write(head)
        rest, self.received = self.received, b""
        self._relay(rest)

    def _relay(self, data: bytes) -> None:
        """
        Relay raw bytes of a refusal; close both sides when it is whole.
        """
        assert self.bodyEnd is not None
        try:
            part = self.bodyEnd.feed(data)
        except BadResponseError as e:
            self._over(self.code, f"backend body malformed: {e}", LogLevel.warn)
            self.clientTransport.abortConnection()
            self.backendTransport.abortConnection()
            return
        if part:
            self.clientTransport.write(part)
        if self.bodyEnd.ended:
            self._over(self.code, None, LogLevel.info)
            self._linger(self.clientTransport)
            self.backendTransport.loseConnection()

    # Either side.

    def fromClient(self, data: bytes) -> None:
        if self.state == OPEN:
            self.backendTransport.write(data)
        # While a refusal is relayed, the client's bytes are dropped: its
        # connection closes after the answer.

    def backendLost(self, reason: Failure) -> None:
        self._lingered(self.backendTransport)
        if self.state == HEAD:
            handshake = tls.failureReason(reason)
            if handshake is not None:
                # No TLS session: as a connection that could not be made.
                self.resource.pool.failed(self.backend, handshake)
                self._fail(http.BAD_GATEWAY, handshake)
                return
            self._fail(http.BAD_GATEWAY, f"closed before answering: {describe(reason)}")
        elif self.state == REFUSED:
            assert self.bodyEnd is not None
            if self.bodyEnd.closeDelimited and _clean(reason):
                self._over(self.code, None, LogLevel.info)
                self._linger(self.clientTransport)
            else:
                why = f"backend body cut short: {describe(reason)}"
                self._over(self.code, why, LogLevel.warn)
                self.clientTransport.abortConnection()
        elif self.state == OPEN:
            self._over(http.SWITCHING, _unclean("backend", reason), LogLevel.info)
            self._closeAlike(self.clientTransport, reason)

    def clientLost(self, reason: Failure) -> None:
        self._lingered(self.clientTransport)
        if self.state == OPEN:
            self._over(self.code, _unclean("client", reason), LogLevel.info)
            self._closeAlike(self.backendTransport, reason)
        elif self.state == REFUSED:
            self._over(self.code, "client disconnected", LogLevel.info)
            self.backendTransport.abortConnection()

    def _internalError(self, failure: Failure) -> None:
        """
        A bug in txlb: log it and close both sides.
        """
        self.resource.log.failure(
            "Internal error tunnelling {path}", failure, path=self.request.uri
        )
        if self.over:
            return
        self._over(None, "internal error", LogLevel.error)
        client = self.clientTransport or self.channel.transport
        for transport in (self.backendTransport, client):
            if transport is not None:
                transport.abortConnection()

    def _closeAlike(self, transport: Any, reason: Failure) -> None:
        """
        Close C{transport} the way the other side of the tunnel ended: after
        the bytes already sent, lingering, for a clean close; at once, with
        a reset, for a reset or an error, as nothing more can be trusted to
        arrive.
        """
        if _clean(reason):
            self._linger(transport)
        else:
            transport.abortConnection()

    def _linger(self, transport: Any) -> None:
        """
        Close C{transport} for writing once what was relayed to it has been
        sent, and go on reading from it, dropping what arrives, until its
        peer closes or L{LINGER} seconds have passed: closed with bytes
        unread, the socket would send a reset, and the peer could lose the
        last bytes relayed to it.
        """
        # Reading may have been paused by the other side's flow control.
        transport.resumeProducing()
        if ISSLTransport.providedBy(transport):
            # Twisted's TLS has no write-only close (its loseWriteConnection
            # would reach the TCP connection under it and skip the close
            # alert); its loseConnection sends the alert after what was
            # written and goes on reading until the peer's alert.
            transport.loseConnection()
        else:
            transport.loseWriteConnection()
        self.lingering[transport] = self.resource.clock.callLater(
            LINGER, self._stopLingering, transport
        )

    def _stopLingering(self, transport: Any) -> None:
        """
        The peer has not closed in time: close the connection now (after
        anything still unsent, as any close).
        """
        del self.lingering[transport]
        if ISSLTransport.providedBy(transport):
            # TLS, still waiting for the peer's close alert, has nothing to
            # end that wait: close the connection it runs on (a
            # ProtocolWrapper's transport).
            transport = transport.transport  # type: ignore[attr-defined]
        transport.loseConnection()

    def _lingered(self, transport: Any) -> None:
        """
        C{transport}'s connection has ended: its lingering close, if any, is
        over.
        """
        call = self.lingering.pop(transport, None)
        if call is not None:
            call.cancel()

    def _throttle(self, consumer: Any, reading: Any) -> None:
        """
        Stop reading from C{reading} while C{consumer} cannot take more.
        """
        consumer.registerProducer(_Throttle(self, reading), True)
        self.throttled.append(consumer)

    def _over(
        self, code: int | None, error: str | None, level: LogLevel, flag: str = NORMAL
    ) -> None:
        """
        The tunnel has ended: unregister its throttles (a transport with a
        producer does not close: a TLS one would never send its close
        alert), release the backend and log the outcome.  The caller closes
        the connections.
        """
        if self.over:
            return
        self.state = OVER
        while self.throttled:
            self.throttled.pop().unregisterProducer()
        backend = self.backend if self.holding else None
        if backend is not None:
            self.holding = False
            self.resource.release(backend)
        self.resource.ended(
            Outcome(
                self.request,
                self.clientHost,
                backend,
                code,
                self.started,
                error,
                level,
                flag,
                queued=self.queued,
            )
        )


def _clean(reason: Failure) -> bool:
    """
    Whether a connection ended with a clean close (TCP FIN), not a reset or
    an error.
    """
    return reason.check(ConnectionDone) is not None


def _unclean(side: str, reason: Failure) -> str | None:
    """
    What to log about a side's connection ending: nothing for a clean close.
    """
    if _clean(reason):
        return None
    return f"{side} connection lost: {describe(reason)}"

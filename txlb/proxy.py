"""
The Resource that forwards each request to a backend and relays the answer.

Each request is one L{_Exchange} with two halves joined by a
L{DeferredQueue}:

  - the forward half sends the request to the backend the algorithm picked
    and puts what comes back into the queue: the response head (or the
    failure to get one), then each body chunk, then an L{_EndOfBody}.  A
    backend that cannot be reached is retried on another one, and so is one
    that failed before answering if the method is idempotent;
  - the reverse half takes from the queue and writes to the client: status
    and headers, each chunk, then finishes the response or, if the body was
    cut short, aborts the client connection so the truncation shows.

The queue has no backpressure of its own, so the exchange adds it: past
L{HIGH_WATER} queued bytes reading from the backend pauses, and resumes below
L{LOW_WATER}; while the client cannot keep up, the reverse half stops taking
from the queue.  A slow client therefore holds at most about L{HIGH_WATER}
bytes of its response in memory.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredQueue, maybeDeferred, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectError, ConnectionDone, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IProtocol, IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web._newclient import HTTP11ClientProtocol, RequestNotSent
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from twisted.web.resource import Resource
from zope.interface import implementer

from txlb import headers, tunnel
from txlb.backend import Backend, BackendPool
from txlb.interfaces import IAlgorithm

#: Queued response bytes above which reading from the backend pauses.
HIGH_WATER = 512 * 1024
#: Queued response bytes below which reading from the backend resumes.
LOW_WATER = 128 * 1024

#: Idle connections kept open to each backend.
MAX_IDLE_PER_BACKEND = 64
#: Seconds an idle backend connection is kept: below the keep-alive timeout
#: of common backends (gunicorn closes idle connections after 2 s, Node and
#: Apache after 5 s), so txlb never sends a request down a connection the
#: backend is closing.
BACKEND_IDLE_TIMEOUT = 1.5

#: Request body bytes kept so that a retry can send the body again.
REPLAY_LIMIT = 1024 * 1024

#: Methods a retry may repeat after the backend got the request (RFC 9110
#: section 9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@dataclass(frozen=True)
class ProxySettings:
    """
    How the proxy treats backends and clients; every timeout is finite.

    @ivar connectTimeout: Seconds to make a backend connection.
    @ivar responseTimeout: Seconds from sending a request to the response
        head.
    @ivar idleTimeout: Seconds without a byte either way while a response
        body is relayed.
    @ivar clientTimeout: Seconds a client may take to send a request head,
        or stay silent on a kept-alive connection.
    @ivar retries: How many more backends to try for one request.
    @ivar retryNonIdempotent: Whether a request the backend may have
        received is retried whatever its method.
    @ivar maxBodySize: The largest request body accepted, or L{None}.
    @ivar forwardedFor: Append the client to C{X-Forwarded-For} and set
        C{X-Forwarded-Proto} and C{X-Forwarded-Host}.
    @ivar forwarded: Append an RFC 7239 C{Forwarded} element.
    @ivar via: Append C{1.1 txlb} to C{Via}.
    """

    connectTimeout: float = 5.0
    responseTimeout: float = 30.0
    idleTimeout: float = 60.0
    clientTimeout: float = 30.0
    retries: int = 2
    retryNonIdempotent: bool = False
    maxBodySize: int | None = None
    forwardedFor: bool = False
    forwarded: bool = False
    via: bool = False


def makeAgent(reactor: Any, connectTimeout: float) -> RawTargetAgent:
    """
    The Agent the forward half sends through: persistent connections, many
    idle ones per backend, closed before the backends close them.
    """
    pool = quietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = MAX_IDLE_PER_BACKEND
    pool.cachedConnectionTimeout = BACKEND_IDLE_TIMEOUT  # type: ignore[assignment]
    return RawTargetAgent(reactor, pool, connectTimeout)


def quietPool(reactor: Any, persistent: bool) -> HTTPConnectionPool:
    """
    A connection pool whose connections use L{_ClientProtocol} and log
    nothing when they open and close.
    """
    pool = HTTPConnectionPool(reactor, persistent)
    pool._factory = _QuietClientFactory
    return pool


class _ClientProtocol(HTTP11ClientProtocol):
    """
    Agent's HTTP client protocol, telling a reset from a clean close.

    Agent ends a body delimited by the connection closing with
    L{http.PotentialDataLoss} whether the backend closed or reset the
    connection.  This notes a reset on the response, so that the proxy does
    not pass a truncated body off as whole.
    """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        parser = self._parser
        response = getattr(parser, "response", None)
        if response is not None and not reason.check(ConnectionDone):
            response.reset = reason
        super().connectionLost(reason)


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    Agent's connection factory with L{_ClientProtocol}, and without the
    "Starting factory" log line it writes for every new backend connection.
    """

    noisy = False

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return _ClientProtocol(self._quiescentCallback)


class RawTargetAgent(Agent):
    """
    An Agent that sends the client's request-target byte for byte.

    L{Agent.request} rebuilds the target from a parsed URL, which drops an
    empty C{?} and, on newer Pythons, turns C{//a} into C{////a}.  This class
    hands the raw target to Agent's request machinery instead.
    """

    def __init__(self, reactor: Any, pool: HTTPConnectionPool, connectTimeout: float) -> None:
        super().__init__(reactor, connectTimeout=connectTimeout, pool=pool)
        self.pool = pool
        self._connectTimeout = connectTimeout
        self._endpoints: dict[Backend, IStreamClientEndpoint] = {}

    def requestBackend(
        self,
        backend: Backend,
        method: bytes,
        target: bytes,
        headers: http.Headers,
        bodyProducer: IBodyProducer | None,
    ) -> Any:
        """
        Send C{method target} to C{backend}.

        @return: A L{Deferred} firing with the L{IResponse}.
        """
        uri = backend.uri
        return self._requestWithEndpoint(
            (uri.scheme, uri.host, uri.port),
            self._endpoint(backend),
            method,
            uri,
            headers,
            bodyProducer,
            target,
        )

    def _endpoint(self, backend: Backend) -> IStreamClientEndpoint:
        """
        The endpoint for new connections to C{backend}: a plain TCP one for
        an IP address, so no name lookup runs; a hostname is looked up on
        each new connection, so DNS changes are followed.
        """
        endpoint = self._endpoints.get(backend)
        if endpoint is None:
            reactor, host, port, timeout = (
                self._reactor,
                backend.host,
                backend.port,
                self._connectTimeout,
            )
            try:
                version = ipaddress.ip_address(host).version
            except ValueError:
                endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
            else:
                kind = TCP4ClientEndpoint if version == 4 else TCP6ClientEndpoint
                endpoint = kind(reactor, host, port, timeout=timeout)
            self._endpoints[backend] = endpoint
        return endpoint


class TransparentRequest(server.Request):
    """
    A request that adds nothing to the response the backend sent.

    Twisted's L{server.Request} sets C{Server} and C{Date}, adds
    C{Content-Type: text/html}, and answers C{*} targets itself.  This one
    hands every request straight to the site's resource instead; the proxy
    adds C{Date} only when the backend sent none (RFC 9110 section 6.6.1).
    It also refuses a body over the size limit as soon as that shows.

    A request with a body is forwarded as soon as its head is in, and its
    body streams to the backend as it arrives (see L{_StreamingBody}):
    Twisted would otherwise read the whole body before rendering.

    @ivar stream: The L{_StreamingBody} of a request with a body, else
        L{None}.
    """

    defaultContentType = None
    stream: _StreamingBody | None = None
    _received = 0
    _finishWhenReceived = False

    def gotLength(self, length: int | None) -> None:
        if self._tooLarge(length or 0):
            return
        channel = self.channel
        # The channel keeps these until the body is in; the resource needs
        # them now.
        self.method = channel._command
        self.uri = channel._path
        self.clientproto = channel._version
        bodyless = length == 0 and not self.requestHeaders.hasHeader(b"content-length")
        if bodyless or tunnel.wantsUpgrade(self):
            # Nothing to stream; or an upgrade, whose tunnel sends the body
            # with the head.
            super().gotLength(length)
            return
        self.content = BytesIO()  # requestReceived reads it; the body bypasses it
        self.stream = _StreamingBody(length, channel.transport)
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        if self._tooLarge(self._received):
            return
        if self.stream is not None:
            self.stream.received(data)
        else:
            super().handleContentChunk(data)

    def process(self) -> None:
        """
        Hand the request to the resource, when its head is in (with a body)
        or when it is all in (without).
        """
        if self.stream is not None and self.stream.started:
            # The whole body is in now.
            self.stream.finished()
            if self._finishWhenReceived:
                super().finish()
            return
        self.site = self.channel.site  # type: ignore[attr-defined]
        if self.stream is not None:
            self.stream.started = True
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def finish(self) -> None:
        """
        Finish the response, or, if the request body is still coming, once
        it is in: the channel must read the whole request before it moves to
        the next one.
        """
        if self.stream is not None and not self.stream.complete:
            self._finishWhenReceived = True
            self.stream.discard()
            return
        super().finish()

    def _tooLarge(self, size: int) -> bool:
        """
        Answer 413 and close if C{size} bytes of body are over the limit.
        """
        channel = self.channel
        if channel._refused:  # type: ignore[attr-defined]
            return True
        limit = channel.site.resource.settings.maxBodySize  # type: ignore[attr-defined]
        if limit is None or size <= limit:
            return False
        channel.refuse(b"413 Content Too Large")  # type: ignore[attr-defined]
        return True


class ProxyChannel(http.HTTPChannel):
    """
    Twisted's HTTP channel with some of its answers fixed, a deadline for
    request heads, and a way to close it for a graceful stop.
    """

    _headDeadline: Any = None
    _refused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.site.channels.discard(self)  # type: ignore[attr-defined]
        self._cancelHeadDeadline()
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """
        Start the deadline for a request head at its first byte: a client
        dribbling its headers (slowloris) keeps resetting the idle timeout,
        but not this.
        """
        if self._refused:
            return
        if self._headDeadline is None and not self.requests:
            self._headDeadline = self.callLater(  # type: ignore[call-arg]
                self.site.resource.settings.clientTimeout,  # type: ignore[attr-defined]
                self.refuse,
                b"408 Request Timeout",
            )
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancelHeadDeadline()
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()

    def _cancelHeadDeadline(self) -> None:
        if self._headDeadline is not None:
            if self._headDeadline.active():
                self._headDeadline.cancel()
            self._headDeadline = None

    def refuse(self, status: bytes) -> None:
        """
        Answer C{status} with an empty body and close the connection,
        reading nothing more from it.
        """
        if self._refused:
            return
        self._refused = True
        self._cancelHeadDeadline()
        self.setTimeout(None)
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % status
        )
        self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer an over-long request line with 414 and an over-long header
        line with 431; Twisted's channel drops the connection without a
        word.  (A request exists from its request line on.)
        """
        if self.requests:
            self.refuse(b"431 Request Header Fields Too Large")
        else:
            self.refuse(b"414 URI Too Long")

    def checkPersistence(self, request: server.Request, version: bytes) -> bool:
        """
        Close after this response if the client asked to; Twisted splits
        C{Connection} on spaces, so it misses C{close} in C{close, Foo}.
        """
        if version != b"HTTP/1.1":
            return False
        if b"close" in headers.tokens(request.requestHeaders, b"connection"):
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return True

    def closeWhenIdle(self) -> None:
        """
        For a graceful stop: close now if no request is in progress, else
        after the response to the current one.
        """
        self.persistent = False
        if not self.requests:
            self.loseConnection()

    def spliceTo(self, protocol: IProtocol) -> bytes:
        """
        Stop speaking HTTP on this connection, after a request whose answer
        does not go through Twisted's L{server.Request} (an upgrade).

        From now on the connection's bytes go to C{protocol}, and its end to
        C{protocol.connectionLost} and then to the channel's own clean-up.
        The channel stops being the transport's producer, and its idle
        timeout stays off (a tunnel may be quiet for long).  The transport is
        left as it is, possibly paused.

        @return: The bytes the client sent after the request head, which the
            channel held back while the request was handled, in order.
        """
        # Twisted's own websocket support swaps dataReceived and
        # connectionLost the same way (HTTPChannel._protocolUpgradeForWebsockets);
        # rawDataReceived too, for bytes still being parsed below render().
        # _dataBuffer is private to Twisted (26.10): tests/test_tunnel.py
        # pins that what it holds arrives.
        assert self.transport is not None
        self.setTimeout(None)
        self._savedTimeOut = None
        self.transport.unregisterProducer()  # type: ignore[attr-defined]
        channelLost = type(self).connectionLost

        def connectionLost(reason: Failure = connectionDone) -> None:
            protocol.connectionLost(reason)
            channelLost(self, reason)

        self.dataReceived = self.rawDataReceived = protocol.dataReceived  # type: ignore[method-assign]
        self.connectionLost = connectionLost  # type: ignore[method-assign]
        early = b"".join(self._dataBuffer)
        self._dataBuffer = []
        protocol.makeConnection(self.transport)
        return early


class LoadBalancerSite(server.Site):
    """
    The site txlb listens with: transparent requests, HTTP/1.1 only, no
    form parsing, no access log of Twisted's (the proxy logs each request
    itself, with its backend and outcome), and the client connections it
    has open, to close them on a graceful stop.
    """

    requestFactory = TransparentRequest
    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(self, resource: LoadBalancerResource, reactor: Any = None) -> None:
        super().__init__(
            resource,
            parsePOSTFormSubmission=False,
            timeout=resource.settings.clientTimeout,
            reactor=reactor,
        )
        self.channels: set[ProxyChannel] = set()

    def log(self, request: http.Request) -> None:
        pass

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]

    def closeIdleConnections(self) -> None:
        """
        Close every client connection as soon as it has no request in
        progress.
        """
        for channel in list(self.channels):
            channel.closeWhenIdle()

    def abortConnections(self) -> None:
        """
        Cut every client connection still open.
        """
        for channel in list(self.channels):
            channel.transport.abortConnection()  # type: ignore[union-attr]


class LoadBalancerResource(Resource):
    """
    Forwards every request, whatever its path or method, to the backend the
    algorithm picks among those that are up.

    @ivar algorithm: The L{IAlgorithm} provider that picks backends.
    @ivar pool: The L{BackendPool} with the backends and their health.
    @ivar settings: The L{ProxySettings}.
    @ivar agent: The L{RawTargetAgent} requests are sent with.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        algorithm: IAlgorithm,
        agent: RawTargetAgent,
        reactor: Any = None,
        pool: BackendPool | None = None,
        settings: ProxySettings = ProxySettings(),
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.algorithm = algorithm
        self.pool = pool or BackendPool(algorithm.backends, reactor)
        self.settings = settings
        self.agent = agent
        self._reactor = reactor
        self._exchanges: set[_Exchange] = set()
        self._idle: list[Deferred[None]] = []

    def render(self, request: server.Request) -> bytes | int:
        started = self._reactor.seconds()
        clientHost = getattr(request.getClientAddress(), "host", "")
        problem = _badRequest(request)
        if problem is not None:
            _answer(request, http.BAD_REQUEST, problem)
            self.logRequest(request, clientHost, "-", http.BAD_REQUEST, started, problem)
            return server.NOT_DONE_YET
        if tunnel.wantsUpgrade(request):
            backend = self.pick(clientHost)
            upgrade = tunnel.Tunnel(self, request, backend, clientHost, started)
            upgrade.start(self.agent._endpoint(backend))
            return server.NOT_DONE_YET
        exchange = _Exchange(self, request, clientHost, started)
        self._exchanges.add(exchange)
        exchange.reverse()
        exchange.forward(self.pick(clientHost))
        return server.NOT_DONE_YET

    def pick(self, clientHost: str, tried: Collection[Backend] = ()) -> Backend:
        """
        The backend for a request from C{clientHost}, other than those
        C{tried} when there is one.
        """
        return self.algorithm.pick(clientHost, self.pool.candidates(tried))

    def send(self, exchange: _Exchange, backend: Backend) -> Any:
        """
        Send the request of C{exchange} to C{backend}.

        @return: A L{Deferred} firing with the L{IResponse}.
        """
        request = exchange.request
        return maybeDeferred(
            self.agent.requestBackend,
            backend,
            request.method,
            request.uri,
            exchange.outgoing,
            exchange.body,
        )

    def outgoingHeaders(self, request: server.Request, clientHost: str) -> http.Headers:
        """
        The header fields to send to the backend for C{request}.
        """
        outgoing = headers.toBackend(request.requestHeaders)
        settings = self.settings
        proto = b"https" if request.isSecure() else b"http"
        host = request.requestHeaders.getRawHeaders(b"host", [b""])[0]
        if settings.forwardedFor:
            headers.addForwardedFor(outgoing, clientHost.encode("ascii"), proto, host)
        if settings.forwarded:
            headers.addForwarded(outgoing, clientHost.encode("ascii"), proto, host)
        if settings.via:
            headers.addVia(outgoing, request.clientproto)
        return outgoing

    def ended(self, exchange: _Exchange) -> None:
        """
        C{exchange} is over.
        """
        self._exchanges.discard(exchange)
        if not self._exchanges:
            waiting, self._idle = self._idle, []
            for d in waiting:
                if not d.called:  # a caller may have given up waiting
                    d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """
        A L{Deferred} that fires once no request is in flight.
        """
        if not self._exchanges:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def inFlight(self) -> int:
        """
        How many requests are being forwarded.
        """
        return len(self._exchanges)

    def logRequest(
        self,
        request: server.Request,
        clientHost: str,
        backend: str,
        status: int | None,
        started: float,
        error: str | None = None,
        level: LogLevel = LogLevel.info,
    ) -> None:
        """
        Log the one line a request gets, with its outcome.
        """
        self._log.emit(
            level,
            "client={client} method={method} path={path} \N{RIGHTWARDS ARROW} "
            "backend={backend} status={status} ms={ms:.1f}{detail}",
            client=clientHost,
            method=request.method.decode("ascii", "replace"),
            path=request.uri.decode("ascii", "backslashreplace"),
            backend=backend,
            status="-" if status is None else status,
            ms=(self._reactor.seconds() - started) * 1000,
            detail="" if error is None else f' error="{error}"',
            error=error,
        )


def _badRequest(request: server.Request) -> str | None:
    """
    Why C{request} cannot be forwarded, or L{None} if it can.
    """
    target = request.uri
    if any(byte < 0x21 or byte > 0x7E for byte in target):
        return "the request-target has bytes outside printable ASCII"
    hosts = request.requestHeaders.getRawHeaders(b"host", ())
    if len(hosts) > 1:
        return "more than one Host header"
    if not hosts and request.clientproto == b"HTTP/1.1":
        return "no Host header"
    return None


def _answer(request: server.Request, code: int, text: str) -> None:
    """
    Answer C{request} with a short plain-text error of txlb's own.
    """
    body = f"{code} {http.RESPONSES[code].decode()}: {text}\n".encode()
    request.setResponseCode(code)
    request.responseHeaders.setRawHeaders(b"Date", [http.datetimeToString()])
    request.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
    request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
    request.write(body)
    request.finish()


def _abort(request: server.Request) -> None:
    """
    Cut the client connection of C{request}, so a response that cannot be
    finished does not pass for a whole one.
    """
    request.channel.transport.abortConnection()  # type: ignore[union-attr]


def _describe(failure: Failure) -> str:
    """
    A short description of why talking to a backend failed.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return _describe(reasons[0])
    return failure.getErrorMessage() or repr(failure.value)


def _nothingSent(failure: Failure) -> bool:
    """
    Whether a request failed before any of it reached the backend.
    """
    return failure.check(ConnectError, DNSLookupError, RequestNotSent) is not None


@implementer(IBodyProducer)
class _StreamingBody:
    """
    A client's request body, sent to the backend as it arrives.

    Chunks wait here while the backend connection is being made, or while
    the backend cannot take more; past L{HIGH_WATER} waiting bytes, reading
    from the client pauses, and it resumes below L{LOW_WATER}.  The first
    L{REPLAY_LIMIT} bytes are also kept, so that a retry can send the body
    again from its start; past that, only a request of which the backend got
    nothing can be retried.

    @ivar started: Whether the request has been handed to the resource.
    @ivar complete: Whether the whole body has arrived.
    """

    def __init__(self, length: int | None, client: Any) -> None:
        self.length = UNKNOWN_LENGTH if length is None else length
        self.started = False
        self.complete = False
        self._client = client
        self._kept: list[bytes] | None = []
        self._keptBytes = 0
        self._waiting: deque[bytes] = deque()
        self._waitingBytes = 0
        self._sent = 0
        self._consumer: Any = None
        self._done: Deferred[None] | None = None
        self._backendPaused = False
        self._clientPaused = False
        self._discarding = False

    def received(self, data: bytes) -> None:
        """
        Another chunk of the body arrived from the client.
        """
        if self._discarding:
            return
        if self._kept is not None:
            if self._keptBytes + len(data) <= REPLAY_LIMIT:
                self._kept.append(data)
                self._keptBytes += len(data)
            else:
                self._kept = None
        self._waiting.append(data)
        self._waitingBytes += len(data)
        self._flush()
        if self._waitingBytes >= HIGH_WATER and not self._clientPaused:
            self._clientPaused = True
            self._client.pauseProducing()

    def finished(self) -> None:
        """
        The whole body has arrived.
        """
        self.complete = True
        self._flush()

    def discard(self) -> None:
        """
        The exchange is over, or its answer is: drop the rest of the body as
        it arrives, without holding the client back.  A backend still taking
        the body has answered already; its connection is closed, as it can
        serve nothing else before the body ends.
        """
        if self.complete:
            return
        self._discarding = True
        if self._consumer is not None:
            _transportOf(self._consumer).abortConnection()
            self._consumer = self._done = None
        self._waiting.clear()
        self._waitingBytes = 0
        self._kept = None
        self._flush()

    def canRestart(self) -> bool:
        """
        Whether the body can be sent again from its start.
        """
        return self._kept is not None or self._sent == 0

    def restart(self) -> None:
        """
        Send from the start again, to another backend.
        """
        if self._sent:
            assert self._kept is not None
            self._waiting = deque(self._kept)
            self._waitingBytes = self._keptBytes
        self._sent = 0
        self._backendPaused = False

    def _flush(self) -> None:
        """
        Write what waits to the backend, as far as it takes it; let the
        client send again once little waits.
        """
        while self._consumer is not None and not self._backendPaused and self._waiting:
            data = self._waiting.popleft()
            self._waitingBytes -= len(data)
            self._sent += len(data)
            self._consumer.write(data)
        if self._clientPaused and self._waitingBytes <= LOW_WATER:
            self._clientPaused = False
            self._client.resumeProducing()
        if self.complete and not self._waiting and self._done is not None:
            done, self._done, self._consumer = self._done, None, None
            done.callback(None)

    # IBodyProducer, for Agent.

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self._consumer = consumer
        self._done = done = Deferred[None]()
        self._flush()
        return done

    def pauseProducing(self) -> None:
        self._backendPaused = True

    def resumeProducing(self) -> None:
        self._backendPaused = False
        self._flush()

    def stopProducing(self) -> None:
        # The attempt is over; the Deferred it got must never fire.
        self._consumer = self._done = None


def _transportOf(consumer: Any) -> Any:
    """
    The connection under the consumer Agent gives a body producer: a
    C{LengthEnforcingConsumer} (C{_consumer}) or a C{ChunkedEncoder}
    (C{transport}).
    """
    return getattr(consumer, "_consumer", None) or consumer.transport


class _EndOfBody:
    """
    The last item of a response: why the backend's body ended.
    """

    def __init__(self, reason: Failure) -> None:
        self.reason = reason


class _ResponseTimeoutError(Exception):
    """
    The backend sent no response head in time.
    """

    def __str__(self) -> str:
        return "response timeout"


@implementer(IPushProducer)
class _Exchange:
    """
    One client request relayed to a backend: the forward half, the reverse
    half and the queue between them.

    It is the client connection's producer while the body is relayed, so the
    client's flow control reaches the reverse half.
    """

    def __init__(
        self,
        resource: LoadBalancerResource,
        request: server.Request,
        clientHost: str,
        started: float,
    ) -> None:
        self.resource = resource
        self.request = request
        self.clientHost = clientHost
        self.started = started
        self.outgoing = resource.outgoingHeaders(request, clientHost)
        self.body: _StreamingBody | None = request.stream  # type: ignore[attr-defined]
        self.tried: list[Backend] = []
        self.backend: Backend | None = None
        self.queue: DeferredQueue[Any] = DeferredQueue()
        self.queuedBytes = 0
        self.sending: Any = None
        self.timer: Any = None
        self.timedOut = False
        self.bodyTransport: Any = None
        self.backendPaused = False
        self.clientPaused = False
        self.clientGone = False
        self.waiting: Any = None
        self.response: IResponse | None = None
        self.over = False
        request.notifyFinish().addErrback(self._clientDisconnected)

    # The forward half.

    def forward(self, backend: Backend) -> None:
        """
        Send the request to C{backend}; queue the response head, or the
        failure to get one, or try another backend.
        """
        self.backend = backend
        if self.body is not None and self.tried:
            self.body.restart()
        self.tried.append(backend)
        self.resource.pool.sending(backend)
        self.timedOut = False
        self.timer = self.resource._reactor.callLater(
            self.resource.settings.responseTimeout, self._responseTimedOut
        )
        self.sending = self.resource.send(self, backend)
        self.sending.addCallbacks(self._gotResponse, self._sendFailed)
        self.sending.addErrback(self._internalError)

    def _responseTimedOut(self) -> None:
        self.timedOut = True
        self.sending.cancel()

    def _gotResponse(self, response: IResponse) -> None:
        self.sending = None
        self.timer.cancel()
        self.resource.pool.succeeded(self.backend)  # type: ignore[arg-type]
        self.queue.put(response)
        response.deliverBody(_BodyFeeder(self))

    def _sendFailed(self, failure: Failure) -> None:
        self.sending = None
        if self.timer.active():
            self.timer.cancel()
        if self.clientGone:
            self.queue.put(failure)
            return
        backend = self.backend
        assert backend is not None
        if self.timedOut:
            failure = Failure(_ResponseTimeoutError())
        why = _describe(failure)
        self.resource.pool.failed(backend, why)
        if self._mayRetry(failure):
            self.resource.pool.done(backend)
            retry = self.resource.pick(self.clientHost, self.tried)
            self.resource._log.info(
                "Retrying {method} {path} on {retry}: {backend} failed ({why})",
                method=self.request.method.decode("ascii", "replace"),
                path=self.request.uri.decode("ascii", "backslashreplace"),
                retry=retry.address,
                backend=backend.address,
                why=why,
            )
            self.forward(retry)
            return
        self.queue.put(failure)

    def _mayRetry(self, failure: Failure) -> bool:
        """
        Whether a request that failed for C{failure} may go to another
        backend: always if nothing was sent, and otherwise (a reset, a
        response timeout) only for idempotent methods, and only if its body
        can be sent again.
        """
        settings = self.resource.settings
        if len(self.tried) > settings.retries:
            return False
        if self.body is not None and not self.body.canRestart():
            return False
        return (
            _nothingSent(failure)
            or settings.retryNonIdempotent
            or self.request.method in IDEMPOTENT
        )

    def feed(self, data: bytes) -> None:
        """
        Queue a body chunk; pause the backend if too much is queued.
        """
        self.timer.reset(self.resource.settings.idleTimeout)
        self.queuedBytes += len(data)
        self.queue.put(data)
        if self.queuedBytes >= HIGH_WATER and not self.backendPaused:
            self.backendPaused = True
            self.bodyTransport.pauseProducing()

    def _idleTimedOut(self) -> None:
        """
        No byte moved either way for too long mid-body: give up on both
        connections.
        """
        if not self.backendPaused:
            self.resource.pool.failed(self.backend, "idle timeout")  # type: ignore[arg-type]
        self.bodyTransport.stopProducing()
        if not self.clientGone:
            self.request.unregisterProducer()
            _abort(self.request)
        self._over(self.request.code, "idle timeout", LogLevel.warn)

    # The reverse half.

    def reverse(self) -> None:
        """
        Relay the response head when it comes, then the body.
        """
        # The head may be a Failure, which the queue hands on as one.
        self.queue.get().addBoth(self._relayHead).addErrback(self._internalError)

    def _relayHead(self, item: IResponse | Failure) -> None:
        if isinstance(item, Failure):
            self._relayFailure(item)
            return
        self.timer = self.resource._reactor.callLater(
            self.resource.settings.idleTimeout, self._idleTimedOut
        )
        self.response = item
        if not self.clientGone:
            self._writeHead(item)
        self._take()

    def _writeHead(self, response: IResponse) -> None:
        request = self.request
        request.setResponseCode(response.code, response.phrase)
        sent = request.responseHeaders
        for name, values in headers.toClient(response.headers).getAllRawHeaders():
            sent.setRawHeaders(name, values)
        if not sent.hasHeader(b"date"):
            sent.setRawHeaders(b"Date", [http.datetimeToString()])
        if (
            response.length is not UNKNOWN_LENGTH
            and request.method != b"HEAD"
            and response.code not in http.NO_BODY_CODES
        ):
            sent.setRawHeaders(b"Content-Length", [b"%d" % response.length])
        request.registerProducer(self, True)
        # Send the head now: the body may be slow to come.
        request.write(b"")

    def _relayFailure(self, failure: Failure) -> None:
        """
        No backend gave a response: say why, unless the client left.
        """
        if self.clientGone or failure.check(CancelledError):
            self._over(None, "client disconnected", LogLevel.info)
            return
        if failure.check(TimeoutError, _ResponseTimeoutError):
            code = http.GATEWAY_TIMEOUT
        else:
            code = http.BAD_GATEWAY
        why = _describe(failure)
        backend = self.backend
        assert backend is not None
        _answer(self.request, code, f"backend {backend.address}: {why}")
        self._over(code, why, LogLevel.warn)

    def _take(self) -> None:
        """
        Relay queued chunks until the queue is empty, the client is paused
        or the body has ended; then wait for the next chunk if need be.
        """
        while not (self.clientPaused or self.over):
            item = self.queue.get()
            if not item.called:
                self.waiting = item.addCallback(self._relayThenTake)
                self.waiting.addErrback(self._internalError)
                return
            item.addCallback(self._relay).addErrback(self._internalError)

    def _relayThenTake(self, item: bytes | _EndOfBody) -> None:
        self.waiting = None
        self._relay(item)
        self._take()

    def _relay(self, item: bytes | _EndOfBody) -> None:
        if self.over:
            return
        if isinstance(item, bytes):
            self.timer.reset(self.resource.settings.idleTimeout)
            self.queuedBytes -= len(item)
            if self.backendPaused and self.queuedBytes <= LOW_WATER:
                self.backendPaused = False
                self.bodyTransport.resumeProducing()
            self.request.write(item)
            return
        request, code = self.request, self.request.code
        if self.clientGone:
            self._over(code, "client disconnected", LogLevel.info)
            return
        request.unregisterProducer()
        if _complete(item.reason, self.response):  # type: ignore[arg-type]
            request.finish()
            self._over(code, None, LogLevel.info)
        else:
            # Finishing would tell the client the body is whole: abort, so
            # the truncation shows.
            _abort(request)
            why = f"backend body cut short: {_describe(item.reason)}"
            self.resource.pool.failed(self.backend, why)  # type: ignore[arg-type]
            self._over(code, why, LogLevel.warn)

    def _internalError(self, failure: Failure) -> None:
        """
        A bug in txlb: log it, and end the exchange without passing off
        anything as complete.
        """
        self.resource._log.failure("Internal error relaying {path}", failure, path=self.request.uri)
        if self.over:
            return
        if not self.clientGone:
            _abort(self.request)
        if self.bodyTransport is not None:
            self.bodyTransport.stopProducing()
        self._over(None, "internal error", LogLevel.error)

    # IPushProducer, for the client connection.

    def pauseProducing(self) -> None:
        self.clientPaused = True

    def resumeProducing(self) -> None:
        self.clientPaused = False
        if self.waiting is None and not self.over:
            self._take()

    def stopProducing(self) -> None:
        self._clientDisconnected(None)

    def _clientDisconnected(self, reason: Failure | None) -> None:
        """
        The client went away: stop talking to the backend.
        """
        if self.clientGone or self.over:
            return
        self.clientGone = True
        if self.sending is not None:
            self.sending.cancel()
        elif self.bodyTransport is not None:
            self.bodyTransport.stopProducing()
            # Nobody will resume a paused reverse half now: take the rest, so
            # the end of the body ends the exchange.
            self.clientPaused = False
            if self.waiting is None:
                self._take()

    def _over(self, code: int | None, error: str | None, level: LogLevel) -> None:
        """
        The exchange has ended: release the backend and log the outcome.
        """
        self.over = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        backend = self.backend
        assert backend is not None
        if self.body is not None:
            self.body.discard()
        self.resource.pool.done(backend)
        self.resource.ended(self)
        self.resource.logRequest(
            self.request, self.clientHost, backend.address, code, self.started, error, level
        )


def _complete(reason: Failure, response: IResponse) -> bool:
    """
    Whether a body that ended for C{reason} arrived whole.

    A body delimited by the backend closing the connection ends with
    L{http.PotentialDataLoss}, however the connection closed: only a clean
    close says the body is complete, not a reset (see L{_ClientProtocol}).
    """
    if reason.check(http.PotentialDataLoss):
        return getattr(response, "reset", None) is None
    return reason.check(ResponseDone) is not None


class _BodyFeeder(Protocol):
    """
    Receives the backend's response body and feeds it to the exchange.
    """

    def __init__(self, exchange: _Exchange) -> None:
        self.exchange = exchange

    def connectionMade(self) -> None:
        self.exchange.bodyTransport = self.transport

    def dataReceived(self, data: bytes) -> None:
        self.exchange.feed(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.exchange.queue.put(_EndOfBody(reason))

"""
The Resource that forwards each request to a backend and relays the answer.

Each request is one L{_Exchange} with two halves joined by a
L{DeferredQueue}:

  - the forward half sends the request to the backend the algorithm picked
    and puts what comes back into the queue: the response head (or the
    failure to get one), then each body chunk, then an L{_EndOfBody};
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
from functools import partial
from typing import Any

from twisted.internet.defer import CancelledError, DeferredQueue, maybeDeferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IProtocol, IPushProducer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Cooperator
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
    _HTTP11ClientFactory,
)
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from twisted.web.resource import Resource
from zope.interface import implementer

from txlb import headers, tunnel
from txlb.backend import Backend
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


def makeAgent(reactor: Any, connectTimeout: float) -> RawTargetAgent:
    """
    The Agent the forward half sends through: persistent connections, many
    idle ones per backend, closed before the backends close them.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool._factory = _QuietClientFactory
    pool.maxPersistentPerHost = MAX_IDLE_PER_BACKEND
    pool.cachedConnectionTimeout = BACKEND_IDLE_TIMEOUT  # type: ignore[assignment]
    return RawTargetAgent(reactor, pool, connectTimeout)


class _QuietClientFactory(_HTTP11ClientFactory):
    """
    Agent's connection factory without the "Starting factory" log line it
    writes for every new backend connection.
    """

    noisy = False


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
    """

    defaultContentType = None

    def process(self) -> None:
        self.site = self.channel.site  # type: ignore[attr-defined]
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(Failure())


class ProxyChannel(http.HTTPChannel):
    """
    Twisted's HTTP channel with two of its answers fixed.
    """

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer an over-long request or header line with 431; Twisted's
        channel drops the connection without a word.
        """
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        self.loseConnection()

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
    form parsing, and no access log of Twisted's (the proxy logs each request
    itself, with its backend and outcome).
    """

    requestFactory = TransparentRequest
    protocol = ProxyChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, reactor: Any = None) -> None:
        super().__init__(resource, parsePOSTFormSubmission=False, reactor=reactor)

    def log(self, request: http.Request) -> None:
        pass

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]


class LoadBalancerResource(Resource):
    """
    Forwards every request, whatever its path or method, to the backend the
    algorithm picks.

    @ivar algorithm: The L{IAlgorithm} provider that picks backends.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, algorithm: IAlgorithm, agent: RawTargetAgent, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.algorithm = algorithm
        self._agent = agent
        self._reactor = reactor
        # Request bodies are sent by a cooperator on the injected reactor.
        self._cooperator = Cooperator(scheduler=partial(reactor.callLater, 0))

    def render(self, request: server.Request) -> bytes | int:
        started = self._reactor.seconds()
        clientHost = getattr(request.getClientAddress(), "host", "")
        problem = _badRequest(request)
        if problem is not None:
            _answer(request, http.BAD_REQUEST, problem)
            self.logRequest(request, clientHost, "-", http.BAD_REQUEST, started, problem)
            return server.NOT_DONE_YET
        backend = self.algorithm.pick(clientHost)
        if tunnel.wantsUpgrade(request):
            upgrade = tunnel.Tunnel(self, request, backend, clientHost, started)
            upgrade.start(self._agent._endpoint(backend))
            return server.NOT_DONE_YET
        exchange = _Exchange(self, request, backend, clientHost, started)
        exchange.forward(self._agent, self._body(request))
        exchange.reverse()
        return server.NOT_DONE_YET

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

    def _body(self, request: server.Request) -> IBodyProducer | None:
        """
        A producer of the client's request body, or L{None} if it sent none.
        """
        received = request.requestHeaders
        if not (received.hasHeader(b"content-length") or received.hasHeader(b"transfer-encoding")):
            return None
        return FileBodyProducer(request.content, cooperator=self._cooperator)


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


class _EndOfBody:
    """
    The last item of a response: why the backend's body ended.
    """

    def __init__(self, reason: Failure) -> None:
        self.reason = reason


@implementer(IPushProducer)
class _Exchange:
    """
    One client request relayed to one backend: the forward half, the reverse
    half and the queue between them.

    It is the client connection's producer while the body is relayed, so the
    client's flow control reaches the reverse half.
    """

    def __init__(
        self,
        resource: LoadBalancerResource,
        request: server.Request,
        backend: Backend,
        clientHost: str,
        started: float,
    ) -> None:
        self.resource = resource
        self.request = request
        self.backend = backend
        self.clientHost = clientHost
        self.started = started
        self.queue: DeferredQueue[Any] = DeferredQueue()
        self.queuedBytes = 0
        self.sending: Any = None
        self.bodyTransport: Any = None
        self.backendPaused = False
        self.clientPaused = False
        self.clientGone = False
        self.waiting: Any = None
        self.over = False
        request.notifyFinish().addErrback(self._clientDisconnected)

    # The forward half.

    def forward(self, agent: RawTargetAgent, body: IBodyProducer | None) -> None:
        """
        Send the request to the backend; queue the response head, or the
        failure to get one.
        """
        self.backend.active += 1
        request = self.request
        self.sending = maybeDeferred(
            agent.requestBackend,
            self.backend,
            request.method,
            request.uri,
            headers.toBackend(request.requestHeaders),
            body,
        )
        self.sending.addCallbacks(self._gotResponse, self._sendFailed)
        self.sending.addErrback(self._internalError)

    def _gotResponse(self, response: IResponse) -> None:
        self.sending = None
        self.queue.put(response)
        response.deliverBody(_BodyFeeder(self))

    def _sendFailed(self, failure: Failure) -> None:
        self.sending = None
        self.queue.put(failure)

    def feed(self, data: bytes) -> None:
        """
        Queue a body chunk; pause the backend if too much is queued.
        """
        self.queuedBytes += len(data)
        self.queue.put(data)
        if self.queuedBytes >= HIGH_WATER and not self.backendPaused:
            self.backendPaused = True
            self.bodyTransport.pauseProducing()

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
        The backend gave no response: say why, unless the client left.
        """
        if self.clientGone or failure.check(CancelledError):
            self._over(None, "client disconnected", LogLevel.info)
            return
        if failure.check(TimeoutError):
            code, why = http.GATEWAY_TIMEOUT, "connect timeout"
        else:
            code, why = http.BAD_GATEWAY, _describe(failure)
        _answer(self.request, code, f"backend {self.backend.address}: {why}")
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
        if isinstance(item, bytes):
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
        if _complete(item.reason):
            request.finish()
            self._over(code, None, LogLevel.info)
        else:
            # Finishing would tell the client the body is whole: abort, so
            # the truncation shows.
            _abort(request)
            self._over(code, f"backend body cut short: {_describe(item.reason)}", LogLevel.warn)

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

    def _over(self, code: int | None, error: str | None, level: LogLevel) -> None:
        """
        The exchange has ended: release the backend and log the outcome.
        """
        self.over = True
        self.backend.active -= 1
        self.resource.logRequest(
            self.request, self.clientHost, self.backend.address, code, self.started, error, level
        )


def _complete(reason: Failure) -> bool:
    """
    Whether a body that ended for C{reason} arrived whole.

    A body delimited by the backend closing the connection ends with
    L{http.PotentialDataLoss}: that close is how it says the body is
    complete.
    """
    return reason.check(ResponseDone, http.PotentialDataLoss) is not None


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

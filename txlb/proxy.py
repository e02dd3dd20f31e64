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

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, DeferredQueue, maybeDeferred
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web._newclient import RequestNotSent
from twisted.web.client import (
    ResponseDone,
)
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.resource import Resource
from zope.interface import implementer

from txlb import headers, tunnel
from txlb.backend import Backend, BackendPool
from txlb.interfaces import IAlgorithm
from txlb.metrics import Metrics

if TYPE_CHECKING:
    from txlb.client import RawTargetAgent
    from txlb.upload import StreamingBody

#: Queued response bytes above which reading from the backend pauses.
HIGH_WATER = 512 * 1024
#: Queued response bytes below which reading from the backend resumes.
LOW_WATER = 128 * 1024

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
    @ivar accessLog: C{"text"} for the seed's line per request, C{"json"} for
        one JSON object per request.
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
    accessLog: str = "text"


class LoadBalancerResource(Resource):
    """
    Forwards every request, whatever its path or method, to the backend the
    algorithm picks among those that are up.

    @ivar algorithm: The L{IAlgorithm} provider that picks backends.
    @ivar pool: The L{BackendPool} with the backends and their health.
    @ivar settings: The L{ProxySettings}.
    @ivar agent: The L{RawTargetAgent} requests are sent with.
    @ivar metrics: The balancer's L{Metrics}.
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
        self.metrics = Metrics(self.pool, reactor)
        self.agent = agent
        self._reactor = reactor
        self._exchanges: set[_Exchange] = set()

    def render(self, request: server.Request) -> bytes | int:
        started = self._reactor.seconds()
        clientHost = getattr(request.getClientAddress(), "host", "")
        problem = _badRequest(request)
        if problem is not None:
            _answer(request, http.BAD_REQUEST, problem)
            self.ended(Outcome(request, clientHost, None, http.BAD_REQUEST, started, problem))
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

    def setBackends(
        self, backends: Sequence[Backend], algorithm: Callable[..., IAlgorithm] | None = None
    ) -> None:
        """
        Balance over C{backends} from now on, with a new C{algorithm} (a
        class) or a new one of the same kind.  A backend already known keeps
        its object, and so its counts and health, taking the new weight;
        requests in flight keep the backend they have.
        """
        known = {backend.key: backend for backend in self.pool.backends}
        merged = []
        for backend in backends:
            kept = known.get(backend.key, backend)
            kept.weight = backend.weight
            merged.append(kept)
        self.pool.backends = tuple(merged)
        self.algorithm = (algorithm or type(self.algorithm))(merged)
        self.agent.forgetEndpoints()

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
            exchange._connected,
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

    def forget(self, exchange: _Exchange) -> None:
        """
        C{exchange} is over.
        """
        self._exchanges.discard(exchange)

    def inFlight(self) -> int:
        """
        How many requests are being forwarded.
        """
        return len(self._exchanges)

    def refused(
        self,
        channel: Any,
        request: server.Request | None,
        code: int,
        why: str,
        flag: str,
    ) -> None:
        """
        The client connection answered C{code} itself (a malformed request,
        a head too slow or too large, a body too large) and closed; C{flag}
        says which kind of refusal it was.
        """
        clientHost = getattr(channel.transport.getPeer(), "host", "")
        if request is not None and hasattr(channel, "_command"):
            # Twisted sets these when the whole request is in; the request
            # line was read, though.
            request.method, request.uri = channel._command, channel._path
        now = self._reactor.seconds()
        self.ended(Outcome(request, clientHost, None, code, now, why, LogLevel.info, flag))

    def ended(self, outcome: Outcome) -> None:
        """
        A request is over: count it, and log the one line it gets.
        """
        refused = getattr(outcome.request, "refused", None)
        if refused is not None and (outcome.status, outcome.error) == refused[:2]:
            # The client connection refused the rest of a request being
            # forwarded (txlb.server.ProxyChannel.refuse), and the exchange
            # reports that: the refusal's flag says how the request ended.
            outcome.flag = refused[2]
        now = self._reactor.seconds()
        seconds = now - outcome.started
        backend = outcome.backend
        address = "-" if backend is None else backend.address
        if backend is not None:
            backend.ended(now, seconds * 1000, outcome.backendError)
            self.metrics.duration.labels(address).observe(seconds)
        status = "-" if outcome.status is None else str(outcome.status)
        self.metrics.requests.labels(address, status).inc()
        request = outcome.request
        fields = {
            "client": outcome.clientHost,
            "method": _text(getattr(request, "method", None)),
            "target": _text(getattr(request, "uri", None)),
            "backend": address,
            "status": outcome.status,
            "bytesIn": getattr(request, "bodyBytes", 0),
            "bytesOut": getattr(request, "sentLength", 0),
            "connectMs": _milliseconds(outcome.connected, outcome.started),
            "firstByteMs": _milliseconds(outcome.firstByte, outcome.started),
            "totalMs": round(seconds * 1000, 1),
            "retries": outcome.retries,
            "flag": outcome.flag,
            "error": outcome.error,
        }
        if self.settings.accessLog == "json":
            self._log.emit(outcome.level, "{json}", json=json.dumps(fields), **fields)
            return
        self._log.emit(
            outcome.level,
            "client={client} method={method} path={target} \N{RIGHTWARDS ARROW} "
            "backend={backend} status={shownStatus} ms={totalMs:.1f}{detail}",
            shownStatus=status,
            detail="" if outcome.error is None else f' error="{outcome.error}"',
            **fields,
        )


def _text(value: bytes | str | None) -> str:
    """
    A request's method or target for the log; C{-} before it was read.
    """
    if not isinstance(value, bytes):
        return "-"
    return value.decode("ascii", "backslashreplace")


def _milliseconds(moment: float | None, started: float) -> float | None:
    return None if moment is None else round((moment - started) * 1000, 1)


#: The termination flags of the access log, in the spirit of Envoy's
#: response flags.
NORMAL, CONNECT_FAILURE, TIMEOUT, NO_HEALTHY, RESET, CLIENT_GONE = "-", "UF", "UT", "UH", "UR", "DC"


@dataclass
class Outcome:
    """
    How a request ended, for the access log, the backend's counts and the
    metrics.

    @ivar backend: The backend that had the request last, or L{None}.
    @ivar status: The status sent to the client, or L{None} if none was.
    @ivar flag: What ended it (see L{NORMAL} and the flags after it).
    @ivar connected: When the last backend connection was made, or L{None}
        if a pooled one was reused (or none was made).
    @ivar firstByte: When the backend's response head arrived, or L{None}.
    """

    request: server.Request | None
    clientHost: str
    backend: Backend | None
    status: int | None
    started: float
    error: str | None = None
    level: LogLevel = LogLevel.info
    flag: str = NORMAL
    retries: int = 0
    connected: float | None = None
    firstByte: float | None = None

    @property
    def backendError(self) -> str | None:
        """
        What the backend did wrong, if anything: a flag of its own, or a
        5xx.
        """
        if self.flag in (CONNECT_FAILURE, TIMEOUT, RESET, NO_HEALTHY):
            return self.error
        if self.status is not None and self.status >= 500:
            return self.error or f"status {self.status}"
        return None


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
        self.body: StreamingBody | None = request.stream  # type: ignore[attr-defined]
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
        self.connected: float | None = None
        self.firstByte: float | None = None
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
        self.connected = None
        self._stopTimer()
        if self.body is None:
            self._startResponseTimer()
        else:
            # The response timeout counts from the end of the upload: a slow
            # client is not the backend's fault.
            self.body.whenSent = self._startResponseTimer
        self.sending = self.resource.send(self, backend)
        self.sending.addCallbacks(self._gotResponse, self._sendFailed)
        self.sending.addErrback(self._internalError)

    def _startResponseTimer(self) -> None:
        self.timer = self.resource._reactor.callLater(
            self.resource.settings.responseTimeout, self._responseTimedOut
        )

    def _stopTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _responseTimedOut(self) -> None:
        self.timedOut = True
        self.sending.cancel()

    def _connected(self) -> None:
        self.connected = self.resource._reactor.seconds()

    def _gotResponse(self, response: IResponse) -> None:
        self.firstByte = self.resource._reactor.seconds()
        self.sending = None
        self._stopTimer()
        self.resource.pool.succeeded(self.backend)  # type: ignore[arg-type]
        self.queue.put(response)
        response.deliverBody(_BodyFeeder(self))

    def _sendFailed(self, failure: Failure) -> None:
        self.sending = None
        self._stopTimer()
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
            self.resource.metrics.retries.inc()
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
        self._over(self.request.code, "idle timeout", LogLevel.warn, TIMEOUT)

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
            self._clientGoneOver(None)
            return
        code = http.BAD_GATEWAY
        if failure.check(_ResponseTimeoutError):
            code, flag = http.GATEWAY_TIMEOUT, TIMEOUT
        elif failure.check(TimeoutError):
            code, flag = http.GATEWAY_TIMEOUT, CONNECT_FAILURE
        elif _nothingSent(failure):
            flag = CONNECT_FAILURE
        else:
            flag = RESET
        if self.resource.pool.panicking:
            flag = NO_HEALTHY
        why = _describe(failure)
        backend = self.backend
        assert backend is not None
        _answer(self.request, code, f"backend {backend.address}: {why}")
        self._over(code, why, LogLevel.warn, flag)

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
            self._clientGoneOver(code)
            return
        request.unregisterProducer()
        if _complete(item.reason, self.response):  # type: ignore[arg-type]
            request.finish()
            self._over(code, None, LogLevel.info, NORMAL)
        else:
            # Finishing would tell the client the body is whole: abort, so
            # the truncation shows.
            _abort(request)
            why = f"backend body cut short: {_describe(item.reason)}"
            self.resource.pool.failed(self.backend, why)  # type: ignore[arg-type]
            self._over(code, why, LogLevel.warn, RESET)

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
        self._over(None, "internal error", LogLevel.error, NORMAL)

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

    def _clientGoneOver(self, code: int | None) -> None:
        """
        End an exchange whose client connection closed: because txlb refused
        the rest of the request, or because the client left.
        """
        refused = getattr(self.request, "refused", None)
        if refused is not None:
            self._over(refused[0], refused[1], LogLevel.info, NORMAL)
        else:
            self._over(code, "client disconnected", LogLevel.info, CLIENT_GONE)

    def _over(self, code: int | None, error: str | None, level: LogLevel, flag: str) -> None:
        """
        The exchange has ended: release the backend, and count and log the
        outcome.
        """
        self.over = True
        self._stopTimer()
        backend = self.backend
        assert backend is not None
        self.resource.pool.done(backend)
        self.resource.forget(self)
        if self.body is not None:
            self.body.discard()
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
                retries=len(self.tried) - 1,
                connected=self.connected,
                firstByte=self.firstByte,
            )
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

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

The queue has no backpressure of its own, so the exchange adds it: past the
request's C{highWater} queued bytes (L{HIGH_WATER} for HTTP/1.x, less for an
HTTP/2 stream, of which a connection may have many) reading from the backend
pauses, and resumes below a quarter of that; while the client cannot keep
up, the reverse half stops taking from the queue.  A slow client therefore
holds at most about C{highWater} bytes of its response in memory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, DeferredQueue
from twisted.internet.error import ConnectError, ConnectionAborted, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import NO_CONTENT
from twisted.web.resource import Resource
from zope.interface import implementer

from txlb import headers, refusals, tls, tunnel
from txlb.accesslog import AccessLogFile
from txlb.algorithms.roundrobin import RoundRobin
from txlb.algorithms.shadow import Shadow
from txlb.backend import Backend, BackendPool
from txlb.client import BackendClient
from txlb.http1 import BadResponseError, ResponseHead
from txlb.interfaces import IAlgorithm, IExchange, IResponseObserver
from txlb.metrics import Metrics
from txlb.outcome import (
    CLIENT_GONE,
    CLIENT_PROTOCOL_ERROR,
    CONNECT_FAILURE,
    NO_HEALTHY,
    NORMAL,
    PROTOCOL_ERROR,
    RESET,
    TIMEOUT,
    Outcome,
    answer,
    describe,
)
from txlb.sticky import StickyCookie
from txlb.throttle import Throttle

if TYPE_CHECKING:
    from txlb.upload import StreamingBody

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
    @ivar loadHeader: The response field a backend reports its load in
        (L{txlb.loadreport}), which the client never sees.
    @ivar loadField: C{loadHeader} lower-cased, derived.
    @ivar toClientDrop: The response fields the client never sees, derived.
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
    loadHeader: str = "X-Txlb-Load"
    loadField: bytes = field(init=False, repr=False, compare=False)
    toClientDrop: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        loadField = self.loadHeader.lower().encode("ascii")
        object.__setattr__(self, "loadField", loadField)
        object.__setattr__(self, "toClientDrop", headers.dropToClient([loadField]))


class LoadBalancerResource(Resource):
    """
    Forwards every request, whatever its path or method, to the backend the
    algorithm picks among those that are up.

    @ivar algorithm: The L{IAlgorithm} provider that picks backends; change
        it with L{useAlgorithm}.
    @ivar makeAlgorithm: What makes a new one when the backends change.
    @ivar answered: What learns from each response: the algorithm's
        L{IResponseObserver.answered} and the shadow's, or L{None} if
        neither provides it.
    @ivar shadow: The L{Shadow} policy asked beside the algorithm, or
        L{None}; change it with L{useShadow}.
    @ivar sticky: The L{StickyCookie} that ties clients to backends, or
        L{None}.
    @ivar pool: The L{BackendPool} with the backends and their health.
    @ivar settings: The L{ProxySettings}.
    @ivar client: The L{BackendClient} requests are sent with.
    @ivar metrics: The balancer's L{Metrics}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        algorithm: IAlgorithm,
        client: BackendClient,
        reactor: Any = None,
        pool: BackendPool | None = None,
        settings: ProxySettings = ProxySettings(),
        makeAlgorithm: Callable[[Sequence[Backend]], IAlgorithm] | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.shadow: Shadow | None = None
        self.sticky: StickyCookie | None = None
        self.useAlgorithm(algorithm)
        self.makeAlgorithm = makeAlgorithm or type(algorithm)
        self.pool = pool or BackendPool(algorithm.backends, reactor)
        self._fallbackLog = Throttle(reactor)
        self.settings = settings
        self.metrics = Metrics(self.pool, reactor, lambda: self.shadow)
        self.client = client
        #: The file the access log goes to, if not the main log.
        self.accessLogFile: AccessLogFile | None = None
        self._accessLog = Logger(namespace=self._log.namespace, source=self)
        self._reactor = reactor
        self._exchanges: set[_Exchange] = set()
        self._date = b""
        self._dateSecond = -1

    def render(self, request: server.Request) -> bytes | int:
        started = self._reactor.seconds()
        clientHost = getattr(request.getClientAddress(), "host", "")
        problem = _badRequest(request)
        if problem is not None:
            answer(request, http.BAD_REQUEST, problem)
            self.metrics.countRefusal(refusals.HEADER)
            self.ended(
                Outcome(
                    request,
                    clientHost,
                    None,
                    http.BAD_REQUEST,
                    started,
                    problem,
                    flag=CLIENT_PROTOCOL_ERROR,
                )
            )
            return server.NOT_DONE_YET
        if tunnel.wantsUpgrade(request):
            backend = self.pick(request)
            upgrade = tunnel.Tunnel(self, request, backend, clientHost, started, self._reactor)
            upgrade.start(self.client.endpoint(backend))
            return server.NOT_DONE_YET
        exchange = _Exchange(self, request, clientHost, started)
        self._exchanges.add(exchange)
        exchange.reverse()
        exchange.forward(self.pick(request))
        return server.NOT_DONE_YET

    def useAlgorithm(self, algorithm: IAlgorithm) -> None:
        """
        Pick with C{algorithm} from now on.
        """
        self.algorithm = algorithm
        #: Round robin for a request this algorithm fails, made when needed.
        self._fallback: RoundRobin | None = None
        self._observe()

    def useShadow(
        self, name: str | None, makeAlgorithm: Callable[[Sequence[Backend]], IAlgorithm] | None
    ) -> None:
        """
        Ask the algorithm C{makeAlgorithm} makes, C{name}d so, beside the
        live one from now on, without routing by it; none if L{None}.
        Its counts start again.
        """
        if name is None or makeAlgorithm is None:
            self.shadow = None
        else:
            self.shadow = Shadow(name, makeAlgorithm, self.pool.backends, self._reactor)
        self._observe()

    def _observe(self) -> None:
        """
        Set L{answered} from the algorithm and the shadow.
        """
        algorithm, shadow = self.algorithm, self.shadow
        live = algorithm.answered if IResponseObserver.providedBy(algorithm) else None
        beside = None if shadow is None else shadow.answered
        if beside is None or live is None:
            self.answered = live or beside
            return

        def both(backend: Backend, seconds: float) -> None:
            live(backend, seconds)
            beside(backend, seconds)

        self.answered = both

    def setBackends(
        self,
        backends: Sequence[Backend],
        algorithm: Callable[[Sequence[Backend]], IAlgorithm] | None = None,
    ) -> None:
        """
        Balance over C{backends} from now on, with a new algorithm made by
        C{algorithm} (a class, or a function of the backends), or else by
        the one that made the current one.  A backend already known keeps
        its object, and so its counts and health, taking the new weight; a
        new one starts in slow start; requests in flight keep the backend
        they have.
        """
        known = {backend.key: backend for backend in self.pool.backends}
        merged = []
        for backend in backends:
            kept = known.get(backend.key)
            if kept is None or kept.tls != backend.tls:
                # New, or http:// became https:// or back: another backend.
                kept = backend
                self.pool.cameUp(backend)
            kept.weight = backend.weight
            merged.append(kept)
        self.pool.backends = tuple(merged)
        if algorithm is not None:
            self.makeAlgorithm = algorithm
        if self.shadow is not None:
            self.shadow.rebuild(merged)
        self.useAlgorithm(self.makeAlgorithm(merged))
        self.client.forgetEndpoints()

    def pick(self, request: server.Request, tried: Collection[Backend] = ()) -> Backend:
        """
        The backend for C{request}, other than those C{tried} when there is
        one: the one the sticky cookie names, if it may take it, else the
        algorithm's pick.  If the algorithm raises or picks no candidate,
        round robin picks instead (logged at most once a minute); a shadow,
        if there is one, is asked too.
        """
        sticky = self.sticky
        if sticky is not None:
            pinned = sticky.pinned(request, self.pool.backends, tried)
            if pinned is not None:
                return pinned
        candidates = self.pool.candidates(tried)
        try:
            backend = self.algorithm.pick(request, candidates)
            if backend not in candidates:
                raise ValueError(f"picked {backend!r}, which is not a candidate")
        except Exception:
            backend = self._fallBack(request, candidates)
        if self.shadow is not None:
            self.shadow.compare(request, candidates, backend)
        return backend

    def _fallBack(self, request: server.Request, candidates: Sequence[Backend]) -> Backend:
        """
        The algorithm failed to pick (the exception is being handled):
        round robin picks for this request.
        """
        self.metrics.fallbacks.inc()
        throttle = self._fallbackLog
        if throttle.allow():
            self._log.failure(
                "Algorithm {algorithm} failed to pick; round robin picked instead"
                " ({held} more failures since the last entry; logged at most once a minute)",
                algorithm=getattr(self.algorithm, "name", "?"),
                held=throttle.release(),
            )
        if self._fallback is None:
            self._fallback = RoundRobin(self.pool.backends)
        return self._fallback.pick(request, candidates)

    def send(self, exchange: _Exchange, backend: Backend) -> Any:
        """
        Send the request of C{exchange} to C{backend}.

        @return: A L{Deferred} firing with the L{ResponseHead}.
        """
        request = exchange.request
        outgoing = exchange.outgoing
        if not request.requestHeaders.hasHeader(b"host"):
            # An HTTP/1.0 request; HTTP/1.1 needs a Host.
            outgoing = [*outgoing, (b"Host", backend.address.encode("ascii"))]
        return self.client.request(
            backend, request.method, request.uri, outgoing, exchange.body, exchange
        )

    def outgoingHeaders(self, request: server.Request, clientHost: str) -> headers.Fields:
        """
        The header fields to send to the backend for C{request}: those of
        the client less the hop-by-hop ones (and the sticky cookie), and the
        forwarding fields asked for.  (A C{Host} for an HTTP/1.0 request
        without one depends on the backend: L{send} adds it.)
        """
        received = request.requestHeaders
        outgoing = headers.toBackend(received)
        if self.sticky is not None:
            outgoing = self.sticky.strip(outgoing)
        settings = self.settings
        if not (settings.forwardedFor or settings.forwarded or settings.via):
            return outgoing
        proto = b"https" if request.isSecure() else b"http"
        host = received.getRawHeaders(b"host", [b""])[0]
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

    def date(self) -> bytes:
        """
        The C{Date} field of a response sent now, made once a second.
        """
        second = int(self._reactor.seconds())
        if second != self._dateSecond:
            self._dateSecond, self._date = second, http.datetimeToString(second)
        return self._date

    def ended(self, outcome: Outcome) -> None:
        """
        A request is over: count it, and log the one line it gets.

        The line is formatted here, once, with an f-string; the event
        carries it pre-formatted (as a flattened event, so no observer runs
        C{string.Formatter} on it) beside every field, for JSON and other
        structured observers.
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
            self.metrics.observeDuration(address, seconds)
        status = "-" if outcome.status is None else str(outcome.status)
        self.metrics.countRequest(address, status)
        request = outcome.request
        method = _text(getattr(request, "method", None))
        target = _text(getattr(request, "uri", None))
        accessLogFile = self.accessLogFile
        # Failures go to the main log too, even with an access-log file.
        fileOnly = accessLogFile is not None and outcome.level == LogLevel.info
        text = self.settings.accessLog != "json"
        if text:
            line = (
                f"client={outcome.clientHost} method={method} path={target} "
                f"\N{RIGHTWARDS ARROW} backend={address} status={status} ms={seconds * 1000:.1f}"
            )
            if outcome.error is not None:
                line += f' error="{outcome.error}"'
            if accessLogFile is not None:
                accessLogFile.write(f"{accessLogFile.timestamp()} {line}")
                if fileOnly:
                    # The fields are for the event, which is not needed.
                    return
        fields = {
            "client": outcome.clientHost,
            "method": method,
            "target": target,
            "backend": address,
            "status": outcome.status,
            "bytesIn": getattr(request, "bodyBytes", 0),
            "bytesOut": getattr(request, "sentLength", 0),
            "connectMs": _milliseconds(outcome.connected, outcome.started),
            "firstByteMs": _milliseconds(outcome.firstByte, outcome.started),
            "totalMs": _tenths(seconds * 1000),
            "retries": outcome.retries,
            "flag": outcome.flag,
            "error": outcome.error,
        }
        if not text:
            line = json.dumps(fields)
            if accessLogFile is not None:
                accessLogFile.write(json.dumps({"time": accessLogFile.timestamp(), **fields}))
                if fileOnly:
                    return
        # Logger.emit, without its check of the level (it iterates every
        # LogLevel), and with the line pre-formatted as a flattened event, so
        # no observer runs string.Formatter on it.
        log = self._accessLog
        fields.update(
            line=line,
            log_flattened={"line!s:": line},
            log_format="{line}",
            log_level=outcome.level,
            log_logger=log,
            log_namespace=log.namespace,
            log_source=self,
            log_time=time.time(),
        )
        log.observer(fields)


def _text(value: bytes | str | None) -> str:
    """
    A request's method or target for the log; C{-} before it was read.
    """
    if not isinstance(value, bytes):
        return "-"
    return value.decode("ascii", "backslashreplace")


def _milliseconds(moment: float | None, started: float) -> float | None:
    return None if moment is None else _tenths((moment - started) * 1000)


def _tenths(value: float) -> float:
    """
    C{value}, not negative, to one decimal: C{round(value, 1)} is slow on
    PyPy.
    """
    return int(value * 10 + 0.5) / 10


def _badRequest(request: server.Request) -> str | None:
    """
    Why C{request} cannot be forwarded, or L{None} if it can.  (The
    channel has refused what breaks HTTP/1.1's syntax; these are the rules
    about C{Host}, RFC 9112 section 3.2.)
    """
    hosts = request.requestHeaders.getRawHeaders(b"host", ())
    if len(hosts) > 1:
        return "more than one Host header"
    if not hosts and request.clientproto == b"HTTP/1.1":
        return "no Host header"
    return None


def _nothingSent(failure: Failure) -> bool:
    """
    Whether a request failed before any of it reached the backend: no
    connection, or no TLS session (the request waits for the handshake).
    """
    return failure.check(ConnectError, DNSLookupError) is not None or tls.isFailure(failure)


def _abort(request: server.Request) -> None:
    """
    Cut the response to C{request} short (its HTTP/1.x connection, or its
    HTTP/2 stream), so a response that cannot be finished does not pass for
    a whole one.
    """
    request.abort()  # type: ignore[attr-defined]


class _EndOfBody:
    """
    The last item of a response: why the backend's body ended, L{None} if
    it arrived whole, and the last bytes of the body when they came with
    its end (one queue item, not two, for most responses).
    """

    def __init__(self, reason: Failure | None, data: bytes = b"") -> None:
        self.reason = reason
        self.data = data


class _ResponseTimeoutError(Exception):
    """
    The backend sent no response head in time.
    """

    def __str__(self) -> str:
        return "response timeout"


@implementer(IPushProducer, IExchange)
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
        #: When the request was sent to its backend (for a retry; the first
        #: try counts from its arrival).
        self.sentAt = started
        self.outgoing = resource.outgoingHeaders(request, clientHost)
        self.body: StreamingBody | None = request.stream  # type: ignore[attr-defined]
        self.tried: list[Backend] = []
        self.backend: Backend | None = None
        self.queue: DeferredQueue[Any] = DeferredQueue()
        self.queuedBytes = 0
        self.highWater: int = request.highWater  # type: ignore[attr-defined]
        self.sending: Any = None
        self.timer: Any = None
        self.timedOut = False
        self.awaitingHead = False
        self.backendPaused = False
        self.interimSent = False
        self.clientPaused = False
        self.clientGone = False
        self.waiting: Any = None
        self.response: ResponseHead | None = None
        self.connectedAt: float | None = None
        self.firstByte: float | None = None
        self.over = False
        self.producer: Any = None
        request.whenLost = self._clientDisconnected  # type: ignore[attr-defined]

    # The forward half.

    def forward(self, backend: Backend) -> None:
        """
        Send the request to C{backend}; queue the response head, or the
        failure to get one, or try another backend.
        """
        self.backend = backend
        if self.tried:
            self.sentAt = self.resource._reactor.seconds()
            if self.body is not None:
                self.body.restart()
        self.tried.append(backend)
        self.resource.pool.sending(backend)
        self.timedOut = False
        self.connectedAt = None
        self.awaitingHead = True
        self._stopTimer()
        if self.body is None:
            self._armTimer(self.resource.settings.responseTimeout)
        else:
            # The response timeout counts from the end of the upload: a slow
            # client is not the backend's fault.
            self.body.whenSent = self._startResponseTimer
        self.sending = self.resource.send(self, backend)
        self.sending.addCallbacks(self._gotResponse, self._sendFailed)
        self.sending.addErrback(self._internalError)

    def _startResponseTimer(self) -> None:
        if self.awaitingHead:
            self._armTimer(self.resource.settings.responseTimeout)

    def _armTimer(self, seconds: float) -> None:
        """
        Time out in C{seconds}: one timer per exchange, for the response
        head and then for the body, so the common path schedules one call.
        """
        timer = self.timer
        if timer is not None and timer.active():
            timer.reset(seconds)
        else:
            self.timer = self.resource._reactor.callLater(seconds, self._timedOut)

    def _timedOut(self) -> None:
        if self.response is None:
            self._responseTimedOut()
        else:
            self._idleTimedOut()

    def _stopTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _responseTimedOut(self) -> None:
        self.timedOut = True
        self.sending.cancel()

    def connected(self) -> None:
        self.connectedAt = self.resource._reactor.seconds()

    def interim(self, head: ResponseHead) -> None:
        """
        Pass an interim response on to an HTTP/1.1 or HTTP/2 client (RFC
        9110 section 15.2): 103 Early Hints, 102 Processing.  A 100 Continue
        is not: txlb's server has already answered the client's C{Expect}.
        """
        request = self.request
        if head.code == 100 or self.clientGone or request.clientproto == b"HTTP/1.0":
            return
        fields = headers.toClient(head.fields, head.connection, self.resource.settings.toClientDrop)
        request.writeInterim(head.code, head.phrase, fields)  # type: ignore[attr-defined]
        self.interimSent = True

    def _gotResponse(self, response: ResponseHead) -> None:
        resource = self.resource
        self.firstByte = now = resource._reactor.seconds()
        self.sending = None
        self.awaitingHead = False
        backend = self.backend
        assert backend is not None
        resource.pool.succeeded(backend)
        loadField = resource.settings.loadField
        # Names of another length are not it: no lower() for them.
        size = len(loadField)
        for name, value in response.fields:
            if len(name) == size and name.lower() == loadField:
                backend.reportLoad(value, now)
        answered = resource.answered
        if answered is not None:
            answered(backend, now - self.sentAt)
        self.queue.put(response)

    def _sendFailed(self, failure: Failure) -> None:
        self.sending = None
        self.awaitingHead = False
        self._stopTimer()
        if self.clientGone:
            self.queue.put(failure)
            return
        backend = self.backend
        assert backend is not None
        if self.timedOut:
            failure = Failure(_ResponseTimeoutError())
        why = describe(failure)
        self.resource.pool.failed(backend, why)
        if self._mayRetry(failure):
            self.resource.pool.done(backend)
            self.resource.metrics.retries.inc()
            retry = self.resource.pick(self.request, self.tried)
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
        can be sent again.  A malformed answer is not retried: the backend
        did answer.  A failed TLS handshake goes to a backend not yet tried,
        if there is one, never the same one again.
        """
        settings = self.resource.settings
        if len(self.tried) > settings.retries or failure.check(BadResponseError):
            return False
        if self.interimSent:
            # The client has had bytes of this backend's answer.
            return False
        if self.body is not None and not self.body.canRestart():
            return False
        if tls.isFailure(failure):
            # The same handshake would fail the same way: another backend
            # or none.
            tried = self.tried
            return any(b not in tried for b in self.resource.pool.candidates(tried))
        return (
            _nothingSent(failure)
            or settings.retryNonIdempotent
            or self.request.method in IDEMPOTENT
        )

    def bodyReceived(self, data: bytes) -> None:
        """
        Queue a body chunk; pause the backend if too much is queued.
        """
        self.timer.reset(self.resource.settings.idleTimeout)
        self.queuedBytes += len(data)
        self.queue.put(data)
        if self.queuedBytes >= self.highWater and not self.backendPaused:
            self.backendPaused = True
            self.producer.pauseProducing()

    def bodyEnded(self, reason: Failure | None, data: bytes = b"") -> None:
        # The connection is the backend's again (or closed).
        self.producer = None
        self.queuedBytes += len(data)
        self.queue.put(_EndOfBody(reason, data))

    def _idleTimedOut(self) -> None:
        """
        No byte moved either way for too long mid-body: give up on both
        connections.
        """
        if not self.backendPaused:
            self.resource.pool.failed(self.backend, "idle timeout")  # type: ignore[arg-type]
        if self.producer is not None:
            self.producer.stopProducing()
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

    def _relayHead(self, item: ResponseHead | Failure) -> None:
        if isinstance(item, Failure):
            self._relayFailure(item)
            return
        self.response = item
        self._armTimer(self.resource.settings.idleTimeout)
        if not self.clientGone:
            self._writeHead(item)
        self._take()

    def _writeHead(self, response: ResponseHead) -> None:
        fields = headers.toClient(
            response.fields, response.connection, self.resource.settings.toClientDrop
        )
        if not any(name.lower() == b"date" for name, value in fields):
            fields.append((b"Date", self.resource.date()))
        request = self.request
        sticky = self.resource.sticky
        if sticky is not None:
            cookie = sticky.setCookie(request, self.backend)  # type: ignore[arg-type]
            if cookie is not None:
                fields.append((b"Set-Cookie", cookie))
        # The body's length; for HEAD and 304, the length the backend stated
        # for the representation.
        length = response.contentLength if response.code != NO_CONTENT else None
        request.registerProducer(self, True)
        # Send the head now: the body may be slow to come.
        # The site's requests are txlb.server.TransparentRequests.
        request.writeHead(response.code, response.phrase, fields, length)  # type: ignore[attr-defined]

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
        elif failure.check(BadResponseError):
            flag = PROTOCOL_ERROR
        else:
            flag = RESET
        if self.resource.pool.panicking:
            flag = NO_HEALTHY
        why = describe(failure)
        if failure.check(BadResponseError):
            why = f"malformed response: {why}"
        backend = self.backend
        assert backend is not None
        answer(self.request, code, f"backend {backend.address}: {why}")
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
            if self.backendPaused and self.queuedBytes <= self.highWater // 4:
                self.backendPaused = False
                if self.producer is not None:
                    self.producer.resumeProducing()
            self.request.write(item)
            return
        request, code = self.request, self.request.code
        if self.clientGone:
            self._clientGoneOver(code)
            return
        if item.data:
            self.queuedBytes -= len(item.data)
            request.write(item.data)
        request.unregisterProducer()
        if item.reason is None:
            request.finish()
            self._over(code, None, LogLevel.info, NORMAL)
            return
        # Finishing would tell the client the body is whole: abort, so the
        # truncation shows.
        _abort(request)
        reason = item.reason
        flag = PROTOCOL_ERROR if reason.check(BadResponseError) else RESET
        why = f"backend body cut short: {describe(reason)}"
        self.resource.pool.failed(self.backend, why)  # type: ignore[arg-type]
        self._over(code, why, LogLevel.warn, flag)

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
        if self.producer is not None:
            self.producer.stopProducing()
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
        elif self.response is not None:
            producer, self.producer = self.producer, None
            if producer is not None:
                producer.stopProducing()
                self.queue.put(_EndOfBody(Failure(ConnectionAborted())))
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
                connected=self.connectedAt,
                firstByte=self.firstByte,
            )
        )

"""
One request relayed to a backend: the L{Exchange}, with two halves joined
by a L{DeferredQueue}.

  - The forward half sends the request to the backend the algorithm picked
    (among those below their limit of requests in flight, waiting in the
    pool's queue for one if need be) and puts what comes back into the
    queue: the response head (or the failure to get one), then each body
    chunk, then an L{_EndOfBody}.  A backend that cannot be reached is
    retried on another one, and so is one that failed before answering if
    the method is idempotent, as far as the retry budget allows.
  - The reverse half takes from the queue and writes to the client: status
    and headers, each chunk, then finishes the response or, if the body was
    cut short, aborts the client connection so the truncation shows.

Its life is one explicit state::

    QUEUED ---> HEAD ----> BODY ----> OVER
       |  ^      |  \\       |          ^
       |  |      |   `-> GONE <-'       |
       |  |      |         `------------'
       |  `------+-- (retry: HEAD again, on another backend, or QUEUED
       |                    first if every other one is at its limit)
       `----> GONE (the client left), or OVER (503: queue full, or
                    its time-out)

  - L{QUEUED}: every backend the request may go to is at its limit of
    requests in flight (C{--max-conn}): it waits in the pool's queue
    (L{txlb.admission}).  Its body, if any, waits with it, held back at
    the usual high mark (L{txlb.upload.StreamingBody}).
  - L{HEAD}: the request is being sent, or its response head awaited;
    a failure before the head may send it to another backend.
    L{TIMED_OUT} is the moment the wait for the head is given up.
  - L{BODY}: the head was relayed and the body is being relayed.
  - L{GONE}: the client went away; the backend side is being stopped, and
    what is still queued taken and dropped.
  - L{OVER}: the backend is released and the outcome logged, once.

The queue has no backpressure of its own, so the exchange adds it: a
L{Valve} pauses reading from the backend while more than the request's
C{highWater} bytes are queued (L{txlb.flow.HIGH_WATER} for HTTP/1.x, less
for an HTTP/2 stream, of which a connection may have many); while the client
cannot keep up, the reverse half stops taking from the queue.  A slow client
therefore holds at most about C{highWater} bytes of its response in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, DeferredQueue
from twisted.internet.error import ConnectError, ConnectionAborted, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import NO_CONTENT
from zope.interface import implementer

from txlb import headers, tls
from txlb.admission import AUTO, RETRY_AFTER, Admission, QueueError, QueueFullError
from txlb.backend import Backend, BackendPool
from txlb.flow import Valve
from txlb.http1 import BadResponseError, ResponseHead
from txlb.interfaces import IExchange
from txlb.outcome import (
    CLIENT_GONE,
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
from txlb.retrybudget import RetryBudget

if TYPE_CHECKING:
    from txlb.metrics import Metrics
    from txlb.settings import ProxySettings
    from txlb.sticky import StickyCookie
    from txlb.upload import StreamingBody

#: Methods a retry may repeat after the backend got the request (RFC 9110
#: section 9.2.2).
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

#: The states of an L{Exchange} (see the module's docstring).
QUEUED = "queued"
HEAD = "head"
TIMED_OUT = "timed out"
BODY = "body"
GONE = "gone"
OVER = "over"


class Forwarder(Protocol):
    """
    What an exchange needs of the resource that made it: the backends and
    how to pick and reach them, its settings, and where its outcome goes.
    (L{txlb.proxy.LoadBalancerResource} provides it.)
    """

    #: The pool's name.
    name: str
    pool: BackendPool
    admission: Admission
    retryBudget: RetryBudget
    settings: ProxySettings
    sticky: StickyCookie | None
    metrics: Metrics
    clock: IReactorTime
    log: Logger
    #: What learns how long each backend took to answer, if anything does.
    answered: Callable[[Backend, float], None] | None

    def admit(self, request: server.Request, tried: Collection[Backend] = ()) -> Backend | None:
        """
        The backend to send C{request} to now, or C{None} if it must
        L{queue}.
        """

    def queue(
        self, request: server.Request, tried: Collection[Backend] = ()
    ) -> Deferred[tuple[Backend, float]]:
        """
        Wait for a backend below its limit: the backend, to count sent at
        once, and the seconds waited.
        """

    def release(self, backend: Backend) -> None:
        """
        A request sent to C{backend} is over.
        """

    def send(self, exchange: Exchange, backend: Backend) -> Any:
        """
        Send the request of C{exchange} to C{backend}: a
        L{Deferred<twisted.internet.defer.Deferred>} firing with the
        L{ResponseHead}.
        """

    def outgoingHeaders(self, request: server.Request, clientHost: str) -> headers.Fields: ...

    def date(self) -> bytes: ...

    def forget(self, exchange: Exchange) -> None: ...

    def ended(self, outcome: Outcome) -> None: ...


@implementer(IPushProducer, IExchange)
class Exchange:
    """
    One client request relayed to a backend: the forward half, the reverse
    half and the queue between them.

    It is the client connection's producer while the body is relayed, so the
    client's flow control reaches the reverse half.

    @ivar state: One of L{QUEUED}, L{HEAD}, L{TIMED_OUT}, L{BODY}, L{GONE},
        L{OVER}.
    @ivar backend: The backend of the last attempt, or C{None} before the
        first.
    @ivar holding: Whether the exchange counts as in flight on L{backend}.
    @ivar queued: The seconds spent in the queue, or C{None} if it never
        waited there.
    @ivar valve: Pauses the backend while too much of its answer is queued.
    @ivar producer: The backend connection the body comes from (see
        L{IExchange.producer}).
    """

    def __init__(
        self,
        forwarder: Forwarder,
        request: server.Request,
        clientHost: str,
        started: float,
    ) -> None:
        self.forwarder = forwarder
        self.request = request
        self.clientHost = clientHost
        self.started = started
        self.state = HEAD
        #: When the request was sent to its backend (for a retry; the first
        #: try counts from its arrival).
        self.sentAt = started
        self.outgoing = forwarder.outgoingHeaders(request, clientHost)
        self.body: StreamingBody | None = request.stream  # type: ignore[attr-defined]
        self.tried: list[Backend] = []
        self.backend: Backend | None = None
        self.holding = False
        #: The backend's requests in flight when this one was sent, itself
        #: included (for C{--max-conn auto}).
        self.inflight = 0
        self.queued: float | None = None
        self.waitingSince = 0.0
        self.admitting: Deferred[tuple[Backend, float]] | None = None
        #: Whether a retry the budget counts is in flight, and whether the
        #: budget refused one.
        self.retrying = False
        self.budgetSpent = False
        self.queue: DeferredQueue[Any] = DeferredQueue()
        self.valve = Valve(request.highWater)  # type: ignore[attr-defined]
        self.sending: Any = None
        self.timer: Any = None
        #: Whether the client had an interim (1xx) head of this attempt.
        self.interimSent = False
        #: Whether the client connection asked the reverse half to wait.
        self.clientPaused = False
        self.waiting: Any = None
        self.response: ResponseHead | None = None
        #: The fields of the response to send the client, and whether a
        #: Date is among them (see headers.forClient).
        self.clientFields: headers.Fields = []
        self.dated = False
        self.connectedAt: float | None = None
        self.firstByte: float | None = None
        request.whenLost = self._clientDisconnected  # type: ignore[attr-defined]

    @property
    def producer(self) -> Any:
        return self.valve.producer

    @producer.setter
    def producer(self, producer: Any) -> None:
        self.valve.producer = producer

    # The forward half.

    def start(self) -> None:
        """
        Send the request to a backend below its limit, waiting in the queue
        for one if need be.
        """
        forwarder = self.forwarder
        forwarder.retryBudget.requestStarted()
        backend = forwarder.admit(self.request)
        if backend is None:
            self._wait()
        else:
            self.forward(backend)

    def _wait(self) -> None:
        """
        Wait in the queue for a backend below its limit.
        """
        self.state = QUEUED
        self.waitingSince = self.forwarder.clock.seconds()
        # It may fail at once (the queue is full), ending the exchange.
        self.admitting = admitting = self.forwarder.queue(self.request, self.tried)
        admitting.addCallbacks(self._admitted, self._notAdmitted)
        admitting.addErrback(self._internalError)

    def _admitted(self, admitted: tuple[Backend, float]) -> None:
        self.admitting = None
        backend, waited = admitted
        self.queued = (self.queued or 0.0) + waited
        self.forward(backend)

    def _notAdmitted(self, failure: Failure) -> None:
        """
        The queue was full, or the request waited its whole time, or its
        client left: the reverse half answers, or ends the exchange.
        """
        self.admitting = None
        if not failure.check(QueueFullError):
            waited = self.forwarder.clock.seconds() - self.waitingSince
            self.queued = (self.queued or 0.0) + waited
        self.queue.put(failure)

    def forward(self, backend: Backend) -> None:
        """
        Send the request to C{backend}; queue the response head, or the
        failure to get one, or try another backend.
        """
        forwarder = self.forwarder
        self.backend = backend
        if self.tried or self.queued is not None:
            self.sentAt = forwarder.clock.seconds()
            if self.tried and self.body is not None:
                self.body.restart()
        self.tried.append(backend)
        forwarder.pool.sending(backend)
        self.holding = True
        self.inflight = backend.active
        self.state = HEAD
        self.connectedAt = None
        self._stopTimer()
        if self.body is None:
            self._armTimer(forwarder.settings.responseTimeout)
        else:
            # The response timeout counts from the end of the upload: a slow
            # client is not the backend's fault.
            self.body.whenSent = self._startResponseTimer
        self.sending = forwarder.send(self, backend)
        # Each callback catches its own errors (see _internalError): an
        # errback after it would cost every request a turn of the chain.
        self.sending.addCallbacks(self._gotResponse, self._sendFailed)

    def _startResponseTimer(self) -> None:
        if self.state == HEAD:
            self._armTimer(self.forwarder.settings.responseTimeout)

    def _armTimer(self, seconds: float) -> None:
        """
        Time out in C{seconds}: one timer per exchange, for the response
        head and then for the body, so the common path schedules one call.
        """
        timer = self.timer
        if timer is not None and timer.active():
            timer.reset(seconds)
        else:
            self.timer = self.forwarder.clock.callLater(seconds, self._timedOut)

    def _timedOut(self) -> None:
        if self.state == HEAD:
            # The failure of the send says why: see _sendFailed.
            self.state = TIMED_OUT
            self.sending.cancel()
        else:
            self._idleTimedOut()

    def _stopTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def connected(self) -> None:
        self.connectedAt = self.forwarder.clock.seconds()

    def interim(self, head: ResponseHead) -> None:
        """
        Pass an interim response on to an HTTP/1.1 or HTTP/2 client (RFC
        9110 section 15.2): 103 Early Hints, 102 Processing.  A 100 Continue
        is not: txlb's server has already answered the client's C{Expect}.
        """
        request = self.request
        if head.code == 100 or self.state == GONE or request.clientproto == b"HTTP/1.0":
            return
        fields = headers.toClient(
            head.fields, head.connection, self.forwarder.settings.toClientDrop
        )
        request.writeInterim(head.code, head.phrase, fields)  # type: ignore[attr-defined]
        self.interimSent = True

    def _gotResponse(self, response: ResponseHead) -> None:
        try:
            forwarder = self.forwarder
            self.firstByte = now = forwarder.clock.seconds()
            self.sending = None
            backend = self.backend
            assert backend is not None
            forwarder.pool.succeeded(backend)
            settings = forwarder.settings
            self.clientFields, self.dated, loads = headers.forClient(
                response.fields, response.connection, settings.toClientDrop, settings.loadField
            )
            for value in loads:
                backend.reportLoad(value, now)
            answered = forwarder.answered
            if answered is not None:
                answered(backend, now - self.sentAt)
            admission = forwarder.admission
            if admission.maxConn == AUTO:
                admission.observe(backend, now - self.sentAt, self.inflight)
            self.queue.put(response)
        except BaseException:
            self._internalError(Failure())

    def _sendFailed(self, failure: Failure) -> None:
        try:
            self.sending = None
            self._stopTimer()
            if self.state == GONE:
                self.queue.put(failure)
                return
            backend = self.backend
            assert backend is not None
            if self.state == TIMED_OUT:
                failure = Failure(_ResponseTimeoutError())
            why = describe(failure)
            forwarder = self.forwarder
            forwarder.pool.failed(backend, why)
            budget = forwarder.retryBudget
            if self.retrying:
                self.retrying = False
                budget.retryEnded()
            if self._mayRetry(failure):
                if not budget.startRetry():
                    self.budgetSpent = True
                    self.queue.put(failure)
                    return
                self.retrying = True
                self.holding = False
                forwarder.release(backend)
                forwarder.metrics.retries.labels(forwarder.name).inc()
                retry = forwarder.admit(self.request, self.tried)
                forwarder.log.info(
                    "Retrying {method} {path} on {retry}: {backend} failed ({why})",
                    method=self.request.method.decode("ascii", "replace"),
                    path=self.request.uri.decode("ascii", "backslashreplace"),
                    retry="the first backend below its limit (queued)"
                    if retry is None
                    else retry.address,
                    backend=backend.address,
                    why=why,
                )
                if retry is None:
                    self._wait()
                else:
                    self.forward(retry)
                return
            self.queue.put(failure)
        except BaseException:
            self._internalError(Failure())

    def _mayRetry(self, failure: Failure) -> bool:
        """
        Whether a request that failed for C{failure} may go to another
        backend: always if nothing was sent, and otherwise (a reset, a
        response timeout) only for idempotent methods, and only if its body
        can be sent again.  A malformed answer is not retried: the backend
        did answer.  A failed TLS handshake goes to a backend not yet tried,
        if there is one, never the same one again.
        """
        settings = self.forwarder.settings
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
            return any(b not in tried for b in self.forwarder.pool.candidates(tried))
        return (
            nothingSent(failure) or settings.retryNonIdempotent or self.request.method in IDEMPOTENT
        )

    def bodyReceived(self, data: bytes) -> None:
        """
        Queue a body chunk; pause the backend if too much is queued.
        """
        self.timer.reset(self.forwarder.settings.idleTimeout)
        valve = self.valve
        valve.fill(len(data))
        self.queue.put(data)
        valve.pauseIfFull()

    def bodyEnded(self, reason: Failure | None, data: bytes = b"") -> None:
        # The connection is the backend's again (or closed).
        self.producer = None
        self.valve.waiting += len(data)
        self.queue.put(_EndOfBody(reason, data))

    def _idleTimedOut(self) -> None:
        """
        No byte moved either way for too long mid-body: give up on both
        connections.
        """
        if not self.valve.paused:
            self.forwarder.pool.failed(self.backend, "idle timeout")  # type: ignore[arg-type]
        if self.producer is not None:
            self.producer.stopProducing()
        if self.state != GONE:
            self.request.unregisterProducer()
            abort(self.request)
        self._over(self.request.code, "idle timeout", LogLevel.warn, TIMEOUT)

    # The reverse half.

    def reverse(self) -> None:
        """
        Relay the response head when it comes, then the body.
        """
        # The head may be a Failure, which the queue hands on as one.
        self.queue.get().addBoth(self._relayHead)

    def _relayHead(self, item: ResponseHead | Failure) -> None:
        try:
            if isinstance(item, Failure):
                self._relayFailure(item)
                return
            self.response = item
            self._armTimer(self.forwarder.settings.idleTimeout)
            if self.state != GONE:
                self.state = BODY
                self._writeHead(item)
            self._take()
        except BaseException:
            self._internalError(Failure())

    def _writeHead(self, response: ResponseHead) -> None:
        forwarder = self.forwarder
        fields = self.clientFields
        dated = self.dated
        request = self.request
        match = request.routing.match  # type: ignore[attr-defined]
        if match is not None:
            rewritten = match.route.responseFields(fields)
            if rewritten is not fields:
                # The route may have removed or added a Date.
                fields = rewritten
                dated = any(name.lower() == b"date" for name, value in fields)
        if not dated:
            fields.append((b"Date", forwarder.date()))
        sticky = forwarder.sticky
        if sticky is not None:
            cookie = sticky.setCookie(request, self.backend)  # type: ignore[arg-type]
            if cookie is not None:
                fields.append((b"Set-Cookie", cookie))
        # The body's length; for HEAD and 304, the length the backend stated
        # for the representation.
        length = response.contentLength if response.code != NO_CONTENT else None
        request.registerProducer(self, True)
        # Send the head now: the body may be slow to come.
        # The site's requests are txlb.request.ClientRequests.
        request.writeHead(response.code, response.phrase, fields, length)  # type: ignore[attr-defined]

    def _relayFailure(self, failure: Failure) -> None:
        """
        No backend gave a response: say why, unless the client left.
        """
        if self.state == GONE or failure.check(CancelledError):
            self._clientGoneOver(None)
            return
        refusal = failure.value
        if isinstance(refusal, QueueError):
            # Not the fault of the backend last tried, if any.
            self.backend = None
            request, why = self.request, str(refusal)
            request.responseHeaders.setRawHeaders(b"Retry-After", [b"%d" % RETRY_AFTER])
            answer(request, http.SERVICE_UNAVAILABLE, why)
            self._over(http.SERVICE_UNAVAILABLE, why, LogLevel.info, refusal.flag)
            return
        code = http.BAD_GATEWAY
        if failure.check(_ResponseTimeoutError):
            code, flag = http.GATEWAY_TIMEOUT, TIMEOUT
        elif failure.check(TimeoutError):
            code, flag = http.GATEWAY_TIMEOUT, CONNECT_FAILURE
        elif nothingSent(failure):
            flag = CONNECT_FAILURE
        elif failure.check(BadResponseError):
            flag = PROTOCOL_ERROR
        else:
            flag = RESET
        if self.forwarder.pool.panicking:
            flag = NO_HEALTHY
        why = describe(failure)
        if failure.check(BadResponseError):
            why = f"malformed response: {why}"
        if self.budgetSpent:
            why += " (not retried: the retry budget was spent)"
        backend = self.backend
        assert backend is not None
        answer(self.request, code, f"backend {backend.address}: {why}")
        self._over(code, why, LogLevel.warn, flag)

    def _take(self) -> None:
        """
        Relay queued chunks until the queue is empty, the client is paused
        or the body has ended; then wait for the next chunk if need be.

        Relaying a chunk may pause the client and resume it at once (an
        HTTP/2 stream that sends what it was given), which takes from the
        queue already: then there is a chunk waited for, and this stops.
        """
        while not self.clientPaused and self.state != OVER and self.waiting is None:
            item = self.queue.get()
            if not item.called:
                self.waiting = item.addCallback(self._relayThenTake)
                return
            item.addCallback(self._relay)

    def _relayThenTake(self, item: bytes | _EndOfBody) -> None:
        self.waiting = None
        self._relay(item)
        self._take()

    def _relay(self, item: bytes | _EndOfBody) -> None:
        try:
            if self.state == OVER:
                return
            if isinstance(item, bytes):
                self.timer.reset(self.forwarder.settings.idleTimeout)
                self.valve.drain(len(item))
                self.request.write(item)
                return
            request, code = self.request, self.request.code
            if self.state == GONE:
                self._clientGoneOver(code)
                return
            if item.data:
                self.valve.drain(len(item.data))
                request.write(item.data)
            request.unregisterProducer()
            if item.reason is None:
                request.finish()
                self._over(code, None, LogLevel.info, NORMAL)
                return
            # Finishing would tell the client the body is whole: abort, so the
            # truncation shows.
            abort(request)
            reason = item.reason
            flag = PROTOCOL_ERROR if reason.check(BadResponseError) else RESET
            why = f"backend body cut short: {describe(reason)}"
            self.forwarder.pool.failed(self.backend, why)  # type: ignore[arg-type]
            self._over(code, why, LogLevel.warn, flag)
        except BaseException:
            self._internalError(Failure())

    def _internalError(self, failure: Failure) -> None:
        """
        A bug in txlb: log it, and end the exchange without passing off
        anything as complete.  Each callback of the two halves catches what
        it raises and comes here, rather than an errback after it, which
        every request would pay for.
        """
        self.forwarder.log.failure("Internal error relaying {path}", failure, path=self.request.uri)
        if self.state == OVER:
            return
        if self.state != GONE:
            abort(self.request)
        if self.producer is not None:
            self.producer.stopProducing()
        self._over(None, "internal error", LogLevel.error, NORMAL)

    # IPushProducer, for the client connection.

    def pauseProducing(self) -> None:
        self.clientPaused = True

    def resumeProducing(self) -> None:
        self.clientPaused = False
        if self.waiting is None and self.state != OVER:
            self._take()

    def stopProducing(self) -> None:
        self._clientDisconnected(None)

    def _clientDisconnected(self, reason: Failure | None) -> None:
        """
        The client went away: stop talking to the backend.
        """
        if self.state in (GONE, OVER):
            return
        queued, self.state = self.state == QUEUED, GONE
        if queued:
            # Out of the queue at once; the reverse half ends the exchange.
            self.admitting.cancel()  # type: ignore[union-attr]
        elif self.sending is not None:
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
        self.state = OVER
        self._stopTimer()
        backend = self.backend
        forwarder = self.forwarder
        budget = forwarder.retryBudget
        if self.retrying:
            self.retrying = False
            budget.retryEnded()
        budget.requestEnded()
        if self.holding:
            self.holding = False
            forwarder.release(backend)  # type: ignore[arg-type]
        forwarder.forget(self)
        if self.body is not None:
            self.body.discard()
        forwarder.ended(
            Outcome(
                self.request,
                self.clientHost,
                backend,
                code,
                self.started,
                error,
                level,
                flag,
                retries=len(self.tried) - 1 if self.tried else 0,
                connected=self.connectedAt,
                firstByte=self.firstByte,
                queued=self.queued,
            )
        )


def nothingSent(failure: Failure) -> bool:
    """
    Whether a request failed before any of it reached the backend: no
    connection, or no TLS session (the request waits for the handshake).
    """
    return failure.check(ConnectError, DNSLookupError) is not None or tls.isFailure(failure)


def abort(request: server.Request) -> None:
    """
    Cut the response to C{request} short (its HTTP/1.x connection, or its
    HTTP/2 stream), so a response that cannot be finished does not pass for
    a whole one.
    """
    request.abort()  # type: ignore[attr-defined]


class _EndOfBody:
    """
    The last item of a response: why the backend's body ended, C{None} if
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

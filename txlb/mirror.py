"""
Mirroring: a copy of a request goes to a backend of another pool (a
route's C{mirror}), and its answer is read and thrown away.

A copy never touches the client's exchange.  It is started beside it, takes
nothing from it once started, and nothing of the exchange waits on it: not
its response, not the end of its request body, not the next request on the
client's connection.

  - The copy is the request the route's pool is sent: the method, the
    request-target (as the route's rewrites left it), the header fields in
    order with their repeats, less the hop-by-hop ones, plus the forwarding
    fields txlb is set to add; and the body.  Nothing marks it as
    a copy: txlb forwards transparently, and a mirror pool knows its
    traffic is mirrored.
  - The body goes to the mirror as the client sends it: the client's
    L{StreamingBody} hands each chunk to the copy as it arrives
    (L{StreamingBody.copy}), and the client's flow control stays its
    backend's alone.  What the mirror cannot take yet waits here, up to the
    request's C{highWater} (as a slow client's response may); past that
    the copy is cut, its connection closed.
  - The answer is read as it comes and dropped.  The mirror pool's
    response timeout, counted from the end of the client's body, and its
    idle timeout apply.
  - At most L{MAX_IN_FLIGHT} copies are in flight to one pool; one more is
    dropped.

Each copy ends with one result (L{RESULTS}), counted per pool in the
metrics; problems are logged at most once a minute per pool, nothing per
request.

A copy is traffic of the mirror pool like any other: it is picked by the
pool's algorithm (and sticky cookie, and shadow), counts in its backend's
C{active} requests while in flight, teaches the algorithm the backend's
latency, and its failures to connect, resets and timeouts count against the
backend's health.  The pool's view of its backends is thus of all they
carry, whether the pool also takes requests of its own or only copies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from txlb import headers, tunnel
from txlb.backend import Backend, BackendPool
from txlb.http1 import BadResponseError, ResponseHead
from txlb.interfaces import IExchange
from txlb.outcome import describe
from txlb.throttle import Throttle
from txlb.upload import BodyProducer, StreamingBody

if TYPE_CHECKING:
    from txlb.settings import ProxySettings

#: Copies in flight to one pool above which a new one is dropped.  At most
#: about C{HIGH_WATER} (512 KiB) of request body waits in txlb for each,
#: and another 64 KiB in its connection's buffer: 36 MiB for a pool whose
#: mirror takes no body at all, with uploads in flight on each copy.
MAX_IN_FLIGHT = 64

#: How copies end (the C{result} label of C{txlb_mirror_requests}).
#: Answered: the mirror's response was read whole, whatever its status.
ANSWERED = "answered"
#: Failed: no connection, a reset, a timeout or a malformed answer.
FAILED = "failed"
#: Cut: txlb stopped it, as the mirror took the body more slowly than the
#: client sent it, or the client's request ended before its body did.
CUT = "cut"
#: Dropped: not sent, as L{MAX_IN_FLIGHT} copies were in flight already.
DROPPED = "dropped"
RESULTS = (ANSWERED, FAILED, CUT, DROPPED)

#: The states of a L{Mirror}.  SENDING: the copy is being sent, its response
#: head awaited (TIMED_OUT: the moment that wait is given up).  READING:
#: its response body is being read and dropped.  OVER: it is counted and
#: its backend released, once.
SENDING = "sending"
TIMED_OUT = "timed out"
READING = "reading"
OVER = "over"

#: Why a copy is cut.
SLOW = "the mirror took the request body more slowly than the client sent it"
ABANDONED = "the client's request ended before its body did"


class MirrorCounts(Protocol):
    """
    Where a copy's end is counted (L{txlb.metrics.Metrics} provides it;
    named here so that the metrics, which show the mirrors, are not
    imported by them).
    """

    def countMirror(self, pool: str, result: str, code: int | None) -> None: ...


class MirrorPool(Protocol):
    """
    What a copy needs of the pool it goes to (L{txlb.proxy.LoadBalancerResource}
    provides it).
    """

    name: str
    pool: BackendPool
    settings: ProxySettings
    clock: IReactorTime
    log: Logger
    answered: Callable[[Backend, float], None] | None

    @property
    def metrics(self) -> MirrorCounts: ...

    def pick(self, request: server.Request, free: Sequence[Backend] | None = None) -> Backend: ...

    def release(self, backend: Backend) -> None:
        """
        A request sent to C{backend} (a copy too) is over: its slot goes to
        the first request of the pool's queue that can take it.
        """

    def outgoingHeaders(self, request: server.Request, clientHost: str) -> headers.Fields: ...

    def send(self, exchange: Any, backend: Backend) -> Deferred[ResponseHead]:
        """
        Send the request of C{exchange} (its C{request}, C{outgoing} fields
        and C{body}) to C{backend}, the answer going to C{exchange}.
        """


class Mirrors:
    """
    The copies in flight to one pool.

    @ivar pool: The pool copies go to.
    @ivar limit: Copies in flight above which a new one is dropped.
    @ivar copies: The copies in flight.
    """

    def __init__(self, pool: MirrorPool, limit: int = MAX_IN_FLIGHT) -> None:
        self.pool = pool
        self.limit = limit
        self.copies: set[Mirror] = set()
        self._log = Throttle(pool.clock)

    def inFlight(self) -> int:
        """
        How many copies are in flight.
        """
        return len(self.copies)

    def copy(self, request: server.Request, clientHost: str) -> None:
        """
        Send a copy of C{request}, from C{clientHost}, to a backend of the
        pool, unless the pool has L{limit} copies in flight already (then
        it is dropped).  Whatever happens to the copy, even a bug, stays
        here: the client's exchange goes on.

        An upgrade (a WebSocket) is not copied: its tunnel would be the
        mirror's to hold open, with nobody talking through it.
        """
        if tunnel.wantsUpgrade(request):
            return
        if len(self.copies) >= self.limit:
            self._count(DROPPED, f"{self.limit} copies in flight already")
            return
        mirror = Mirror(self)
        self.copies.add(mirror)
        try:
            mirror.send(request, clientHost)
        except Exception:
            mirror.internalError(Failure())

    def ended(self, mirror: Mirror, result: str, why: str | None, code: int | None) -> None:
        """
        C{mirror} is over with C{result}; C{why} says what went wrong, if
        it is worth a log entry; C{code} is the status of an answered one.
        """
        self.copies.discard(mirror)
        self._count(result, why, code)

    def _count(self, result: str, why: str | None, code: int | None = None) -> None:
        """
        Count a copy that ended with C{result}, and log C{why} if nothing
        was logged this last minute.
        """
        pool = self.pool
        pool.metrics.countMirror(pool.name, result, code)
        if why is not None:
            self.report(result, why)

    def report(self, result: str, why: str, failure: Failure | None = None) -> None:
        """
        Log that a copy was C{result} for C{why} (with the traceback of
        C{failure}, a bug), unless an entry was logged this last minute.
        """
        pool = self.pool
        throttle = self._log
        if not throttle.allow():
            return
        held = throttle.release()
        text = (
            "Mirror pool {pool}: copy {result} ({why})"
            " ({held} more mirror problems since the last entry; logged at most once a minute)"
        )
        if failure is None:
            pool.log.warn(text, pool=pool.name, result=result, why=why, held=held)
        else:
            pool.log.failure(text, failure, pool=pool.name, result=result, why=why, held=held)


@implementer(IExchange)
class Mirror:
    """
    One copy of a request on its way to a mirror, then its answer read and
    dropped.

    @ivar state: One of L{SENDING}, L{TIMED_OUT}, L{READING}, L{OVER}.
    @ivar request: The client's request, while the copy is being sent (what
        L{MirrorPool.send} reads), then C{None}: nothing of the client is
        kept.
    @ivar outgoing: The header fields sent.
    @ivar body: The L{MirrorBody}, or C{None} if the request has no body.
    @ivar backend: The backend the copy went to.
    @ivar producer: The connection the answer comes from, from its head to
        the end of its body (L{IExchange.producer}).
    """

    producer: Any = None

    def __init__(self, mirrors: Mirrors) -> None:
        self.mirrors = mirrors
        self.state = SENDING
        self.request: Any = None
        self.outgoing: headers.Fields = []
        self.body: MirrorBody | None = None
        self.backend: Backend | None = None
        self.sending: Deferred[ResponseHead] | None = None
        self.sentAt = 0.0
        self.code: int | None = None
        self._timer: Any = None

    def send(self, request: server.Request, clientHost: str) -> None:
        """
        Send the copy of C{request} to the backend the pool picks.
        """
        pool = self.mirrors.pool
        self.sentAt = pool.clock.seconds()
        self.outgoing = pool.outgoingHeaders(request, clientHost)
        source: StreamingBody | None = request.stream  # type: ignore[attr-defined]
        if source is not None:
            self.body = MirrorBody(source, request.highWater, self)  # type: ignore[attr-defined]
        backend = self.backend = pool.pick(request)
        pool.pool.sending(backend)
        if self.body is None:
            self._arm(pool.settings.responseTimeout)
        self.request = request
        self.sending = sending = pool.send(self, backend)
        self.request = None
        sending.addCallbacks(self._gotHead, self._sendFailed)
        sending.addErrback(self.internalError)

    def _arm(self, seconds: float) -> None:
        timer = self._timer
        if timer is not None and timer.active():
            timer.reset(seconds)
        else:
            self._timer = self.mirrors.pool.clock.callLater(seconds, self._timedOut)

    def bodyComplete(self) -> None:
        """
        The client's body is all in: the response timeout starts.
        """
        if self.state == SENDING:
            self._arm(self.mirrors.pool.settings.responseTimeout)

    def _timedOut(self) -> None:
        if self.state == SENDING:
            # The failure of the send says why: see _sendFailed.
            self.state = TIMED_OUT
            assert self.sending is not None
            self.sending.cancel()
            return
        why = "idle timeout"
        self.mirrors.pool.pool.failed(self.backend, why)  # type: ignore[arg-type]
        self._stop()
        self._over(FAILED, why)

    def _gotHead(self, head: ResponseHead) -> None:
        self.sending = None
        pool = self.mirrors.pool
        backend = self.backend
        assert backend is not None
        pool.pool.succeeded(backend)
        answered = pool.answered
        if answered is not None:
            answered(backend, pool.clock.seconds() - self.sentAt)
        self.state = READING
        self.code = head.code
        self._arm(pool.settings.idleTimeout)

    def _sendFailed(self, failure: Failure) -> None:
        self.sending = None
        if self.state == OVER:
            # Cut: the cancelled send fails.
            return
        if self.state == TIMED_OUT:
            why = "response timeout"
        elif failure.check(BadResponseError):
            why = f"malformed response: {describe(failure)}"
        else:
            why = describe(failure)
        self.mirrors.pool.pool.failed(self.backend, why)  # type: ignore[arg-type]
        self._over(FAILED, why)

    # IExchange, for the backend connection.

    def connected(self) -> None:
        pass

    def interim(self, head: ResponseHead) -> None:
        pass

    def bodyReceived(self, data: bytes) -> None:
        self._timer.reset(self.mirrors.pool.settings.idleTimeout)

    def bodyEnded(self, reason: Failure | None, data: bytes = b"") -> None:
        self.producer = None
        if self.state == OVER:
            return
        if reason is None:
            self._over(ANSWERED, None)
            return
        why = f"response body cut short: {describe(reason)}"
        self.mirrors.pool.pool.failed(self.backend, why)  # type: ignore[arg-type]
        self._over(FAILED, why)

    # The end.

    def cut(self, why: str) -> None:
        """
        Stop the copy: its body cannot go on (C{why} is L{SLOW} or
        L{ABANDONED}).  Only a slow mirror is logged: the other is the
        client's doing.
        """
        if self.state == OVER:
            return
        self._stop()
        self._over(CUT, why if why == SLOW else None)

    def _stop(self) -> None:
        """
        Close the copy's connection, or stop making it.
        """
        sending, producer = self.sending, self.producer
        self.producer = None
        self.state = OVER
        if sending is not None:
            sending.cancel()
        elif producer is not None:
            producer.stopProducing()

    def internalError(self, failure: Failure) -> None:
        """
        A bug in txlb: end the copy, which is all it touches, and log it
        (at most once a minute).
        """
        if self.state != OVER:
            self._stop()
            self._over(FAILED, None)
        self.mirrors.report(FAILED, "internal error", failure)

    def _over(self, result: str, why: str | None) -> None:
        """
        The copy has ended with C{result}: release its backend and count it
        (and log C{why}, see L{Mirrors.ended}).
        """
        self.state = OVER
        timer = self._timer
        if timer is not None and timer.active():
            timer.cancel()
        self._timer = None
        if self.body is not None:
            self.body.detach()
        if self.backend is not None:
            self.mirrors.pool.release(self.backend)
        self.mirrors.ended(self, result, why, self.code if result == ANSWERED else None)


@implementer(IBodyProducer)
class MirrorBody(BodyProducer):
    """
    The copy of a client's request body on its way to a mirror (the client
    body's L{copy<txlb.upload.StreamingBody.copy>}).

    Each chunk is written to the mirror's connection as it arrives; what the
    connection cannot take yet waits here, and past C{limit} waiting bytes
    the copy is cut.  Nothing here can pause the client.

    @ivar length: The body's length, or C{UNKNOWN_LENGTH}.
    @ivar trailers: The trailer fields sent after a chunked body.
    """

    def __init__(self, source: StreamingBody, limit: int, mirror: Mirror) -> None:
        super().__init__()
        self.length = source.length
        self.trailers: Sequence[tuple[bytes, bytes]] = ()
        #: The client's body, until it is all in (its bytes kept for a
        #: retry are not the copy's to hold).
        self._source: StreamingBody | None = source
        self._limit = limit
        self._mirror = mirror
        self._waiting: deque[bytes] = deque()
        self._waitingBytes = 0
        self._complete = False
        source.copy = self

    # BodyCopy, for the client's body.

    def received(self, data: bytes) -> None:
        if self._consumer is not None and not self._paused and not self._waiting:
            self._consumer.write(data)
            return
        self._waiting.append(data)
        self._waitingBytes += len(data)
        if self._waitingBytes > self._limit:
            self._mirror.cut(SLOW)

    def finished(self, trailers: Sequence[tuple[bytes, bytes]]) -> None:
        self._source = None
        self.trailers = trailers
        self._complete = True
        self._mirror.bodyComplete()
        self._flush()

    def abandoned(self) -> None:
        self._source = None
        self._mirror.cut(ABANDONED)

    def detach(self) -> None:
        """
        The copy is over: take no more of the body, drop what waits, and
        close the connection if the body was still being sent on it.
        """
        source, self._source = self._source, None
        if source is not None and source.copy is self:
            source.copy = None
        self._waiting.clear()
        self._waitingBytes = 0
        consumer, self._consumer, self._done = self._consumer, None, None
        if consumer is not None:
            consumer.transport.abortConnection()

    def _flush(self) -> None:
        consumer, waiting = self._consumer, self._waiting
        while consumer is not None and not self._paused and waiting:
            data = waiting.popleft()
            self._waitingBytes -= len(data)
            consumer.write(data)
            consumer = self._consumer
        if self._complete and not self._waiting and self._done is not None:
            done, self._done, self._consumer = self._done, None, None
            done.callback(None)

"""
Per-backend limits of requests in flight (C{--max-conn}, HAProxy's server
C{maxconn}) and the pool's queue for requests that find every backend at
its limit (C{--max-queue}, C{--queue-timeout}; HAProxy's backend queue).

A backend at its limit is no candidate: the algorithm picks among those
below theirs.  When none is below, the request waits in the pool's queue,
first in, first out; it leaves it for the first backend that frees a slot
(the algorithm then picks among those free), or after C{timeout} seconds
(L{QueueTimeoutError}: 503, flag C{QT}); with C{maxQueue} requests waiting
already, it does not wait (L{QueueFullError}: 503, flag C{QF}).  A request whose
client went away leaves the queue at once (its L{Deferred} is cancelled).

A request never overtakes one waiting before it, unless the one before
cannot use the backend that came free (it already tried it, say).

The limit of a backend is its own (C{HOST:PORT=WEIGHT/MAXCONN}), else the
pool's C{--max-conn}: a number (0: none), or C{auto}, a limit each
backend learns from its latency (L{txlb.adaptive.AdaptiveLimit}).

With C{--workers N}, each worker admits its share of a number, C{limit //
N} (at least 1), so that the backend sees no more than the limit from
the whole txlb (when the limit is at least N); a learnt limit is each
worker's own, since each learns from the latency all of them cause.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from twisted.internet.defer import Deferred, fail, succeed

from txlb.adaptive import AdaptiveLimit
from txlb.backend import MAX_CONN, Backend
from txlb.outcome import QUEUE_FULL, QUEUE_TIMEOUT

#: C{--max-conn auto}.
AUTO = "auto"

#: The default C{--max-queue} (HAProxy's maxqueue is unlimited, Envoy's
#: max_pending_requests 1024).
DEFAULT_MAX_QUEUE = 1000

#: The default C{--queue-timeout}, in seconds (HAProxy's C{timeout queue}
#: defaults to C{timeout connect}; Envoy's pending requests wait up to the
#: route timeout, 15 s).
DEFAULT_QUEUE_TIMEOUT = 5.0

#: The C{Retry-After} of a 503 for a full queue or a queue time-out: the
#: backends were busy a moment ago, and a request's worth of time frees
#: slots.
RETRY_AFTER = 1


def parseMaxConn(text: str) -> int | str:
    """
    Parse C{--max-conn}: a whole number (0: no limit) or C{auto}.

    @raise ValueError: With a one-line reason.
    """
    if text == AUTO:
        return AUTO
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_CONN:
        raise ValueError(f"{text!r} is not auto or a whole number from 0 (no limit) to {MAX_CONN}")
    return int(text)


class QueueError(Exception):
    """
    The queue did not admit a request: txlb answers 503 with
    C{Retry-After: RETRY_AFTER}.

    @cvar flag: The access log's flag.
    """

    flag: str


class QueueFullError(QueueError):
    """
    Every candidate was at its limit and the queue was full.
    """

    flag = QUEUE_FULL

    def __str__(self) -> str:
        return "every backend at its limit and the queue full"


class QueueTimeoutError(QueueError):
    """
    The request waited in the queue for the whole queue timeout.
    """

    flag = QUEUE_TIMEOUT

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        return f"queued {self.seconds:g} s with every backend at its limit"


class Admitted(NamedTuple):
    """
    What a request admitted gets: the candidates below their limit (never
    empty; the algorithm picks one of them), and the seconds it waited.
    """

    free: Sequence[Backend]
    waited: float


class _Waiter:
    """
    A request in the queue.
    """

    __slots__ = ("candidates", "deferred", "enqueued", "timer")

    def __init__(self, candidates: Callable[[], Sequence[Backend]], enqueued: float) -> None:
        self.candidates = candidates
        self.enqueued = enqueued
        self.deferred: Deferred[Admitted] = Deferred()
        self.timer: Any = None


class Admission:
    """
    The limits of a pool's backends, and its queue.

    The caller (the exchange) asks L{admit} (or L{admitNow}, then L{wait})
    for each request (and each retry), picks one of the free candidates it
    gets and counts it sent
    (C{backend.active += 1}, L{txlb.backend.BackendPool.sending}) in the
    callback itself, before the next waiter is asked; when a request sent
    to a backend is over, it calls L{released}; when the backends change,
    L{setBackends}; when one comes back up, L{wake}.

    @ivar maxConn: The limit of backends without one of their own: a
        number (0: none) or L{AUTO}.
    @ivar maxQueue: The most requests waiting.
    @ivar timeout: The most seconds one waits.
    @ivar workers: The processes that share each limit (C{--workers}).
    @ivar full: Requests refused because the queue was full.
    @ivar timedOut: Requests that waited the whole timeout.
    """

    def __init__(
        self,
        reactor: Any,
        maxConn: int | str = 0,
        maxQueue: int = DEFAULT_MAX_QUEUE,
        timeout: float = DEFAULT_QUEUE_TIMEOUT,
        makeAdaptive: Callable[[Callable[[], float]], AdaptiveLimit] = AdaptiveLimit,
    ) -> None:
        self._reactor = reactor
        self._makeAdaptive = makeAdaptive
        self._adaptive: WeakKeyDictionary[Backend, AdaptiveLimit] = WeakKeyDictionary()
        self._queue: list[_Waiter] = []
        self.full = 0
        self.timedOut = 0
        self.workers = 1
        #: Whether a backend may have a limit of its own: unknown (so yes)
        #: until L{setBackends} tells.
        self._ownLimits = True
        self.configure(maxConn, maxQueue, timeout)

    def configure(self, maxConn: int | str, maxQueue: int, timeout: float) -> None:
        """
        Take new settings (a reload): requests in flight keep their
        backends, waiters keep their place (and their timeout) even past a
        smaller C{maxQueue}, and those a larger limit lets go, go.
        """
        self.maxConn = maxConn
        self.maxQueue = maxQueue
        self.timeout = timeout
        self._limited = bool(maxConn) or self._ownLimits
        self.wake()

    def setBackends(self, backends: Sequence[Backend]) -> None:
        """
        The pool's backends are now C{backends} (added, removed, their own
        limits changed): those waiting that can go now, go.
        """
        self._ownLimits = any(backend.maxConn for backend in backends)
        self._limited = bool(self.maxConn) or self._ownLimits
        self.wake()

    @property
    def queued(self) -> int:
        """
        How many requests wait.
        """
        return len(self._queue)

    def limitOf(self, backend: Backend) -> int:
        """
        The most requests C{backend} may have in flight (0: no limit).
        """
        limit = backend.maxConn
        if not limit:
            if self.maxConn == AUTO:
                return self.adaptive(backend).limit
            limit = int(self.maxConn)
        if self.workers > 1 and limit:
            return max(limit // self.workers, 1)
        return limit

    def adaptive(self, backend: Backend) -> AdaptiveLimit:
        """
        The learnt limit of C{backend} (made on first use).
        """
        limit = self._adaptive.get(backend)
        if limit is None:
            limit = self._adaptive[backend] = self._makeAdaptive(self._reactor.seconds)
        return limit

    def observe(self, backend: Backend, latency: float, inflight: int) -> None:
        """
        A request sent to C{backend} got its response head after C{latency}
        seconds, when C{inflight} requests were in flight there, itself
        included: with C{--max-conn auto}, its limit learns from that, and
        if it grew, requests waiting may go.
        """
        if self.maxConn == AUTO and not backend.maxConn:
            adaptive = self.adaptive(backend)
            before = adaptive.limit
            adaptive.observe(latency, inflight)
            if adaptive.limit > before and self._queue:
                self.wake()

    def free(self, candidates: Sequence[Backend]) -> list[Backend]:
        """
        Those of C{candidates} below their limit.
        """
        return [backend for backend in candidates if not self._atLimit(backend)]

    def _atLimit(self, backend: Backend) -> bool:
        limit = self.limitOf(backend)
        return bool(limit) and backend.active >= limit

    def admitNow(self, candidates: Sequence[Backend]) -> Sequence[Backend]:
        """
        The request path's fast way: those of C{candidates} a request may go
        to at once (below their limit, and no request waiting could take
        them), or none, when it must L{wait}.
        """
        if not self._limited:
            # No backend has a limit: nothing waits either.
            return candidates
        free = self.free(candidates)
        if free and self._queue:
            # Those waiting first, if they can go.
            self.wake()
            free = self.free(candidates)
        return free

    def wait(self, candidates: Callable[[], Sequence[Backend]]) -> Deferred[Admitted]:
        """
        Queue a request that L{admitNow} could not admit, whose candidates
        C{candidates()} gives (asked again whenever a slot frees, as
        backends come and go).

        @return: A L{Deferred} that fires with L{Admitted} when a candidate
            is below its limit and the request's turn came; that fails at
            once with L{QueueFullError}, or after the timeout with
            L{QueueTimeoutError}.  Cancelling it (the client went away) takes
            the request out of the queue.
        """
        if len(self._queue) >= self.maxQueue:
            self.full += 1
            return fail(QueueFullError())
        waiter = _Waiter(candidates, self._reactor.seconds())
        waiter.deferred = Deferred(lambda _: self._leave(waiter))
        waiter.timer = self._reactor.callLater(self.timeout, self._expire, waiter)
        self._queue.append(waiter)
        return waiter.deferred

    def admit(self, candidates: Callable[[], Sequence[Backend]]) -> Deferred[Admitted]:
        """
        L{admitNow}, else L{wait}, as one L{Deferred}.
        """
        free = self.admitNow(candidates())
        if free:
            return succeed(Admitted(free, 0.0))
        return self.wait(candidates)

    def released(self, backend: Backend) -> None:
        """
        A request sent to C{backend} is over: while it is below its limit,
        the waiters that can go, go, in order, each taking its slot before
        the next is asked.
        """
        if self._queue:
            self._wake(lambda: not self._atLimit(backend))

    def wake(self) -> None:
        """
        Let every waiter that can go now, go, in order: after a backend was
        added or came back, or a limit grew.
        """
        self._wake(lambda: True)

    def _wake(self, more: Callable[[], bool]) -> None:
        queue = self._queue
        index = 0
        while index < len(queue) and more():
            waiter = queue[index]
            free = self.free(waiter.candidates())
            if not free:
                index += 1
                continue
            del queue[index]
            waiter.timer.cancel()
            waited = self._reactor.seconds() - waiter.enqueued
            waiter.deferred.callback(Admitted(free, waited))

    def _leave(self, waiter: _Waiter) -> None:
        """
        C{waiter}'s client went away.
        """
        self._queue.remove(waiter)
        waiter.timer.cancel()

    def _expire(self, waiter: _Waiter) -> None:
        self._queue.remove(waiter)
        self.timedOut += 1
        waiter.deferred.errback(QueueTimeoutError(self.timeout))

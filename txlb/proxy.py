"""
A pool: the Resource that forwards each request to one of its backends and
relays the answer.

L{LoadBalancerResource} holds a pool's backends, the algorithm that picks
among them and the client that reaches them, and the limits that keep the
backends from overload: requests in flight per backend and the queue above
them (L{txlb.admission}), and the retry budget (L{txlb.retrybudget}).  Each
request it forwards is an L{txlb.exchange.Exchange} (or, for an upgrade, a
L{txlb.tunnel.Tunnel}),
and each outcome is counted in the metrics and logged in the access log
(L{txlb.accesslog}).  The site's own resource, L{txlb.routing}'s, chooses
the pool of each request.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from txlb import headers, tunnel
from txlb.accesslog import AccessLog
from txlb.admission import Admission, Admitted
from txlb.algorithms.roundrobin import RoundRobin
from txlb.algorithms.shadow import Shadow
from txlb.backend import Backend, BackendPool
from txlb.client import BackendClient
from txlb.exchange import Exchange
from txlb.interfaces import IAlgorithm, IResponseObserver
from txlb.metrics import Metrics
from txlb.mirror import Mirror, Mirrors
from txlb.outcome import NO_HEALTHY, Outcome, answer
from txlb.request import forwardTarget
from txlb.retrybudget import RetryBudget
from txlb.settings import ProxySettings
from txlb.sticky import StickyCookie
from txlb.throttle import Throttle

#: The pool the command line's backends form, and that takes the requests
#: no route matches.
DEFAULT_POOL = "default"


class LoadBalancerResource(Resource):
    """
    A pool of backends: forwards every request, whatever its path or
    method, to the backend the algorithm picks among those that are up.

    @ivar name: The pool's name.

    @ivar algorithm: The L{IAlgorithm} provider that picks backends; change
        it with L{useAlgorithm}.
    @ivar makeAlgorithm: What makes a new one when the backends change.
    @ivar answered: What learns from each response: the algorithm's
        L{IResponseObserver.answered} and the shadow's, or C{None} if
        neither provides it.
    @ivar shadow: The L{Shadow} policy asked beside the algorithm, or
        C{None}; change it with L{useShadow}.
    @ivar sticky: The L{StickyCookie} that ties clients to backends, or
        C{None}.
    @ivar pool: The L{BackendPool} with the backends and their health.
    @ivar admission: The L{Admission} that keeps each backend within its
        limit of requests in flight, with the pool's queue of those waiting.
    @ivar retryBudget: The pool's L{RetryBudget}.
    @ivar settings: The L{ProxySettings}; setting them configures the
        admission and the retry budget too.
    @ivar client: The L{BackendClient} requests are sent with.
    @ivar metrics: The balancer's L{Metrics}, which every pool shares.
    @ivar accessLog: The L{AccessLog} each outcome is logged to, which every
        pool shares.
    @ivar clock: The reactor, for the time and timers.
    @ivar mirrors: The copies of requests that routes mirror to this pool.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        algorithm: IAlgorithm,
        client: BackendClient,
        reactor: Any = None,
        pool: BackendPool | None = None,
        settings: ProxySettings = ProxySettings(),
        makeAlgorithm: Callable[[Sequence[Backend]], IAlgorithm] | None = None,
        name: str = DEFAULT_POOL,
        metrics: Metrics | None = None,
        accessLog: AccessLog | None = None,
    ) -> None:
        """
        @param metrics: The balancer's metrics, or C{None} for metrics of
            this pool alone.
        @param accessLog: The balancer's access log, or C{None} for one of
            this pool alone.
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.name = name
        self.shadow: Shadow | None = None
        self.sticky: StickyCookie | None = None
        self.useAlgorithm(algorithm)
        self.makeAlgorithm = makeAlgorithm or type(algorithm)
        self.pool = pool or BackendPool(algorithm.backends, reactor)
        self.admission = Admission(reactor)
        self.admission.setBackends(self.pool.backends)
        self.pool.whenUp = self.admission.wake
        self.retryBudget = RetryBudget()
        self._fallbackLog = Throttle(reactor)
        self.settings = settings
        self.metrics = metrics or Metrics(reactor, lambda: (self,))
        self.metrics.addPool(name)
        self.client = client
        self.accessLog = accessLog or AccessLog(Logger(namespace=self.log.namespace, source=self))
        self.clock = reactor
        self._exchanges: set[Exchange] = set()
        self.mirrors = Mirrors(self)
        self._date = b""
        self._dateSecond = -1

    def render(self, request: server.Request) -> bytes | int:
        """
        Forward C{request}, as a pool on its own (a leaf of any site).
        """
        clientHost = getattr(request.getClientAddress(), "host", "")
        return self.forward(request, clientHost, self.clock.seconds())

    def forward(self, request: server.Request, clientHost: str, started: float) -> int:
        """
        Forward C{request}, from C{clientHost}, which arrived at C{started}:
        503 if the pool has no backends (a fleet's pool whose members have
        all left, or not come yet).
        """
        if not self.pool.backends:
            answer(request, http.SERVICE_UNAVAILABLE, f"pool {self.name} has no backends")
            self.ended(
                Outcome(
                    request,
                    clientHost,
                    None,
                    http.SERVICE_UNAVAILABLE,
                    started,
                    "no backends",
                    flag=NO_HEALTHY,
                )
            )
            return server.NOT_DONE_YET
        if tunnel.wantsUpgrade(request):
            tunnel.Tunnel(self, request, clientHost, started).start()
            return server.NOT_DONE_YET
        exchange = Exchange(self, request, clientHost, started)
        self._exchanges.add(exchange)
        exchange.reverse()
        exchange.start()
        return server.NOT_DONE_YET

    @property
    def settings(self) -> ProxySettings:
        return self._settings

    @settings.setter
    def settings(self, settings: ProxySettings) -> None:
        """
        Use C{settings} from now on, the limits and the queue's and the
        retry budget's among them (see L{Admission.configure}).
        """
        self._settings = settings
        self.admission.workers = settings.workers
        self.admission.configure(settings.maxConn, settings.maxQueue, settings.queueTimeout)
        self.retryBudget.setPercent(settings.retryBudget)

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
        live one from now on, without routing by it; none if C{None}.
        Its counts start again.
        """
        if name is None or makeAlgorithm is None:
            self.shadow = None
        else:
            self.shadow = Shadow(name, makeAlgorithm, self.pool.backends, self.clock)
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
            kept.maxConn = backend.maxConn
            merged.append(kept)
        self.pool.backends = tuple(merged)
        self.admission.setBackends(merged)
        if algorithm is not None:
            self.makeAlgorithm = algorithm
        if self.shadow is not None:
            self.shadow.rebuild(merged)
        self.useAlgorithm(self.makeAlgorithm(merged))
        self.client.forgetEndpoints()

    def candidates(
        self, request: server.Request, tried: Collection[Backend] = ()
    ) -> Sequence[Backend]:
        """
        The backends C{request} may go to, other than those C{tried} when
        there are others: the one its sticky cookie names, if it may take
        it (up, not draining, not tried), else every one up (see
        L{BackendPool.candidates}).  Whether they are below their limits
        is the admission's to say.
        """
        sticky = self.sticky
        if sticky is not None:
            pinned = sticky.pinned(request, self.pool.backends, tried)
            if pinned is not None:
                return (pinned,)
        return self.pool.candidates(tried)

    def admit(self, request: server.Request, tried: Collection[Backend] = ()) -> Backend | None:
        """
        The backend for C{request} now (see L{candidates} and L{pick}), one
        below its limit that no request waiting could take; or C{None} when
        there is none, and the request must L{queue}.
        """
        free = self.admission.admitNow(self.candidates(request, tried))
        return self.pick(request, free) if free else None

    def queue(
        self, request: server.Request, tried: Collection[Backend] = ()
    ) -> Deferred[tuple[Backend, float]]:
        """
        Queue C{request}, which L{admit} could not admit, until one of its
        candidates is below its limit and its turn has come.

        @return: A L{Deferred} firing with the backend picked among those
            free and the seconds waited, when the caller must count it
            sent at once (L{BackendPool.sending}); failing with
            L{txlb.admission.QueueFullError} or
            L{txlb.admission.QueueTimeoutError}; cancel it to leave the
            queue.
        """

        def admitted(result: Admitted) -> tuple[Backend, float]:
            return self.pick(request, result.free), result.waited

        waiting = self.admission.wait(lambda: self.candidates(request, tried))
        return waiting.addCallback(admitted)

    def release(self, backend: Backend) -> None:
        """
        A request sent to C{backend} (or an upgrade's tunnel) is over: its
        slot goes to the first request waiting that can take it.
        """
        self.pool.done(backend)
        self.admission.released(backend)

    def endpoint(self, backend: Backend) -> IStreamClientEndpoint:
        """
        Where to connect to reach C{backend} (for a tunnel).
        """
        return self.client.endpoint(backend)

    def pick(self, request: server.Request, free: Sequence[Backend] | None = None) -> Backend:
        """
        The backend for C{request} among C{free} (those of its
        L{candidates} below their limits), or among all its candidates if
        C{None}: the one the sticky cookie names, if it is there, else the
        algorithm's pick.  If the algorithm raises or picks no candidate,
        round robin picks instead (logged at most once a minute); a shadow,
        if there is one, is asked too.
        """
        candidates = self.candidates(request) if free is None else free
        sticky = self.sticky
        if sticky is not None:
            pinned = sticky.pinned(request, candidates, ())
            if pinned is not None:
                return pinned
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
        self.metrics.fallbacks.labels(self.name).inc()
        throttle = self._fallbackLog
        if throttle.allow():
            self.log.failure(
                "Algorithm {algorithm} failed to pick; round robin picked instead"
                " ({held} more failures since the last entry; logged at most once a minute)",
                algorithm=getattr(self.algorithm, "name", "?"),
                held=throttle.release(),
            )
        if self._fallback is None:
            self._fallback = RoundRobin(self.pool.backends)
        return self._fallback.pick(request, candidates)

    def send(self, exchange: Exchange | Mirror, backend: Backend) -> Any:
        """
        Send the request of C{exchange} (or of a mirror's copy) to
        C{backend}.

        @return: A L{Deferred<twisted.internet.defer.Deferred>} firing with the
            L{ResponseHead}.
        """
        request = exchange.request
        outgoing = exchange.outgoing
        if not request.requestHeaders.hasHeader(b"host"):
            # An HTTP/1.0 request; HTTP/1.1 needs a Host.
            outgoing = [*outgoing, (b"Host", backend.address.encode("ascii"))]
        return self.client.request(
            backend, request.method, forwardTarget(request), outgoing, exchange.body, exchange
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
        match = request.routing.match  # type: ignore[attr-defined]
        if match is not None:
            # Before the forwarding fields: a route cannot remove txlb's.
            outgoing = match.route.requestFields(outgoing)
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

    def forget(self, exchange: Exchange) -> None:
        """
        C{exchange} is over.
        """
        self._exchanges.discard(exchange)

    def inFlight(self) -> int:
        """
        How many requests are being forwarded, copies mirrored to this pool
        included: a pool drains them too.
        """
        return len(self._exchanges) + len(self.mirrors.copies)

    def date(self) -> bytes:
        """
        The C{Date} field of a response sent now, made once a second.
        """
        second = int(self.clock.seconds())
        if second != self._dateSecond:
            self._dateSecond, self._date = second, http.datetimeToString(second)
        return self._date

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
        record(outcome, self.name, self.metrics, self.accessLog, self.clock, self.settings)


def record(
    outcome: Outcome,
    pool: str,
    metrics: Metrics,
    accessLog: AccessLog,
    clock: Any,
    settings: ProxySettings,
) -> None:
    """
    Count a request that ended with C{outcome} in C{pool} (C{-} for none)
    in its backend's statistics and the metrics, and log its line.
    """
    now = clock.seconds()
    seconds = now - outcome.started
    backend = outcome.backend
    address = "-" if backend is None else backend.address
    if backend is not None:
        backend.ended(now, seconds * 1000, outcome.backendError)
        metrics.observeDuration(pool, address, seconds)
    if outcome.queued is not None:
        metrics.observeQueued(pool, outcome.queued)
    status = "-" if outcome.status is None else str(outcome.status)
    metrics.countRequest(pool, address, status)
    accessLog.record(outcome, pool, address, status, seconds, settings.accessLog == "json")

"""
The site's resource: the checks every request gets, its route, and the
pool that forwards it.

L{RoutingResource} is what the site renders.  It refuses what no pool may
forward (C{Host} rules, the client's rate limit), matches the request
against the routes (L{txlb.routes.Table}), refuses it if it is over its
route's own rate limit, and hands it to its pool, a
L{txlb.proxy.LoadBalancerResource}, and a copy of it to the route's
C{mirror} pool, if any (L{txlb.mirror}); or answers it itself, for a
C{respond} or C{redirect} route, or with 404 when no route matches and
there is no C{default} pool.  Its pools and routes are swapped whole on a
reload (L{RoutingResource.use}): a request keeps the pool it was given,
and its copy the mirror pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.web import http, server
from twisted.web.resource import Resource

from txlb import refusals
from txlb.accesslog import AccessLog
from txlb.clientlimits import ClientLimits
from txlb.metrics import Metrics
from txlb.outcome import (
    CLIENT_PROTOCOL_ERROR,
    NO_ROUTE,
    RATE_LIMITED,
    TOO_MANY_REQUESTS,
    Outcome,
    answer,
)
from txlb.proxy import DEFAULT_POOL, LoadBalancerResource, record
from txlb.request import UNROUTED, Routing
from txlb.routes import Route, Table
from txlb.settings import ProxySettings
from txlb.throttle import Throttle


class RoutingResource(Resource):
    """
    Routes every request to its pool.

    @ivar pools: The pools, by name.
    @ivar routes: The routes, in order (none: every request goes to the
        C{default} pool).
    @ivar settings: The site's L{ProxySettings} (the top level's).
    @ivar metrics: The balancer's L{Metrics}, which the pools share.
    @ivar accessLog: The L{AccessLog}, which the pools share.
    @ivar clock: The reactor, for the time.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        pools: Mapping[str, LoadBalancerResource],
        routes: Sequence[Route],
        settings: ProxySettings,
        metrics: Metrics,
        accessLog: AccessLog,
        clock: Any,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self.accessLog = accessLog
        self.clock = clock
        self._routerLog = Throttle(clock)
        self.use(pools, routes)

    @property
    def clientLimits(self) -> ClientLimits | None:
        """
        The L{ClientLimits} each request is checked against (its rate limit
        answers 429), or C{None}; the metrics count what they refuse.
        """
        return self.metrics.clientLimits

    @clientLimits.setter
    def clientLimits(self, limits: ClientLimits | None) -> None:
        self.metrics.clientLimits = limits

    @classmethod
    def single(cls, pool: LoadBalancerResource) -> RoutingResource:
        """
        A site of one pool and no routes: every request goes to C{pool}.
        """
        return cls({pool.name: pool}, (), pool.settings, pool.metrics, pool.accessLog, pool.clock)

    def use(self, pools: Mapping[str, LoadBalancerResource], routes: Sequence[Route]) -> None:
        """
        Route to C{pools} by C{routes} from now on, both at once.
        """
        self.pools = dict(pools)
        self.routes = tuple(routes)
        self.accessLog.routes = bool(routes)
        self._table = Table(routes, self.pools, self._routerFailed) if routes else None
        self._default = self.pools.get(DEFAULT_POOL)
        for route in self.routes:
            if route.mirror is not None:
                self.metrics.addMirror(route.mirror)

    def route(self, request: server.Request) -> Routing:
        """
        Where C{request} goes, decided the first time it is asked (when its
        head is in) and kept on the request.
        """
        routing: Routing = request.routing  # type: ignore[attr-defined]
        if routing is not UNROUTED:
            return routing
        table = self._table
        if table is None:
            routing = Routing(None, self._default)
        else:
            received = request.requestHeaders
            hosts = received.getRawHeaders(b"host")
            client = getattr(request.getClientAddress(), "host", "")
            match = table.match(
                request.method, request.uri, hosts[0] if hosts else None, received, client, request
            )
            if match is None:
                routing = Routing(None, self._default)
            elif match.pool is None:
                routing = Routing(match, None)
            else:
                pools, mirror = self.pools, match.mirror
                routing = Routing(
                    match, pools[match.pool], None if mirror is None else pools[mirror]
                )
        request.routing = routing  # type: ignore[attr-defined]
        return routing

    def bodyLimit(self, request: server.Request) -> int | None:
        """
        The largest body C{request} may have: its pool's limit, or the
        site's if txlb answers it itself.
        """
        pool = self.route(request).pool
        return (self if pool is None else pool).settings.maxBodySize

    def render(self, request: server.Request) -> bytes | int:
        started = self.clock.seconds()
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
        limits = self.clientLimits
        if limits is not None:
            wait = limits.checkRequest(request)
            if wait:
                return self._rateLimited(request, clientHost, started, wait)
        routing = self.route(request)
        match = routing.match
        if match is not None:
            label = match.route.label
            self.metrics.countRoute(label)
            if limits is not None and limits.routeLimits:
                wait = limits.checkRoute(label, request)
                if wait:
                    return self._rateLimited(request, clientHost, started, wait)
        pool = routing.pool
        if pool is not None:
            forwarded = pool.forward(request, clientHost, started)
            # Not a request txlb answered at once (a 503 from the queue):
            # its body is being thrown away, so the copy would never get it.
            stream = getattr(request, "stream", None)
            answered = request.finished or (stream is not None and stream.discarding)
            if routing.mirror is not None and not answered:
                routing.mirror.mirrors.copy(request, clientHost)
            return forwarded
        if match is None:
            answer(request, http.NOT_FOUND, "no route matches this request")
            self.ended(
                Outcome(
                    request, clientHost, None, http.NOT_FOUND, started, "no route", flag=NO_ROUTE
                )
            )
        elif match.location is not None:
            self._respond(request, match.route.redirectStatus, b"", None, match.location)
            self.ended(Outcome(request, clientHost, None, match.route.redirectStatus, started))
        else:
            response = match.route.response
            self._respond(request, response.status, response.body, response.contentType)
            self.ended(Outcome(request, clientHost, None, response.status, started))
        return server.NOT_DONE_YET

    def _rateLimited(
        self, request: server.Request, clientHost: str, started: float, wait: int
    ) -> int:
        """
        Answer C{request} 429: it is over the rate limit (the top level's,
        or its route's), and may come back in C{wait} seconds.
        """
        request.responseHeaders.setRawHeaders(b"Retry-After", [b"%d" % wait])
        answer(request, TOO_MANY_REQUESTS, "over the rate limit")
        self.ended(
            Outcome(
                request,
                clientHost,
                None,
                TOO_MANY_REQUESTS,
                started,
                "rate limited",
                flag=RATE_LIMITED,
            )
        )
        return server.NOT_DONE_YET

    def _respond(
        self,
        request: server.Request,
        code: int,
        body: bytes,
        contentType: bytes | None,
        location: bytes | None = None,
    ) -> None:
        """
        Answer C{request} with txlb's own response: a C{respond} route's, or
        a redirect to C{location}.
        """
        request.setResponseCode(code)
        fields = request.responseHeaders
        fields.setRawHeaders(b"Date", [http.datetimeToString(int(self.clock.seconds()))])
        if location is not None:
            fields.setRawHeaders(b"Location", [location])
        if contentType is not None:
            fields.setRawHeaders(b"Content-Type", [contentType])
        fields.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def _routerFailed(self, route: Route, why: str) -> None:
        """
        A route's router raised, or answered what is not a pool: the
        request went on to the next route.  Counted, and logged at most
        once a minute.
        """
        self.metrics.countRouterError(route.label)
        throttle = self._routerLog
        if throttle.allow():
            self.log.warn(
                "Route {route}'s router {why}; the request went on to the next route"
                " ({held} more since the last entry; logged at most once a minute)",
                route=route.label,
                why=why,
                held=throttle.release(),
            )

    def inFlight(self) -> int:
        """
        How many requests are being forwarded, in every pool.
        """
        return sum(pool.inFlight() for pool in self.pools.values())

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
        now = self.clock.seconds()
        self.ended(Outcome(request, clientHost, None, code, now, why, LogLevel.info, flag))

    def ended(self, outcome: Outcome) -> None:
        """
        A request txlb answered itself is over: count it, and log its line.
        """
        record(outcome, "-", self.metrics, self.accessLog, self.clock, self.settings)


def _badRequest(request: server.Request) -> str | None:
    """
    Why C{request} cannot be forwarded, or C{None} if it can.  (The
    channel has refused what breaks HTTP/1.1's syntax; these are the rules
    about C{Host}, RFC 9112 section 3.2.)
    """
    hosts = request.requestHeaders.getRawHeaders(b"host", ())
    if len(hosts) > 1:
        return "more than one Host header"
    if not hosts and request.clientproto == b"HTTP/1.1":
        return "no Host header"
    return None

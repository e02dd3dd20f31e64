"""
What one client may ask of txlb: requests at a rate (C{--rate-limit}, and
each route's C{rate-limit}, answered 429 beyond it) and connections at once
(C{--max-client-conns}, closed at once beyond it).

Both count in L{txlb.keytables}, so that with C{--workers} a limit is the
whole txlb's, whichever worker the kernel hands a connection to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.web.iweb import IRequest

from txlb.keytables import Buckets, ClientCounts, Region
from txlb.ratelimit import Rate, RateLimit, defaultBurst
from txlb.routes import Route


class ClientLimits:
    """
    The client limits of one balancer (one worker): the request path asks
    L{checkRequest}, the client channel L{opened} and L{closed}.

    @ivar rateLimit: The rate limit, or C{None}.
    @ivar routeLimits: Each route's rate limit, by the route's label, for
        the routes that have one.
    @ivar routeRateLimited: Requests refused by each route's rate limit, by
        the route's label (kept across reloads, as the routes' request
        counts are).
    @ivar maxConnections: The most connections a client address may have
        open (0: no limit).
    @ivar rateLimited: Requests refused by the rate limit.
    @ivar refusedConnections: Connections closed at once for being over
        C{maxConnections}.
    @ivar untrackedConnections: Connections let in uncounted because the
        table of connected addresses was full where their address falls.
    """

    def __init__(self, region: Region, worker: int, clock: Callable[[], float]) -> None:
        """
        @param worker: This worker's index (0 without workers).
        @param clock: The seconds the buckets fill with; the same in every
            process sharing C{region}.
        """
        self.region = region
        self._clock = clock
        self._buckets = Buckets(region, clock)
        self._counts = ClientCounts(region, worker)
        self._fingerprint = region.fingerprint
        self.rateLimit: RateLimit | None = None
        self.routeLimits: dict[str, RateLimit] = {}
        self.maxConnections = 0
        self.rateLimited = 0
        self.routeRateLimited: dict[str, int] = {}
        self.refusedConnections = 0
        self.untrackedConnections = 0

    def configure(
        self,
        rate: Rate | None,
        burst: int | None,
        key: str,
        maxConnections: int,
        routes: Sequence[Route] = (),
    ) -> None:
        """
        Limit from now on to C{rate} (none if C{None}) with C{burst} and
        C{key} (see L{RateLimit}), and to C{maxConnections} per address.
        The buckets keep their tokens (at most the new burst).

        @param routes: The routes; each with a C{rate-limit} is limited in a
            bucket table of its own, by its C{rate-limit-key} or else
            C{key}.  A route whose label and limit (rate, burst, key) are
            those it had keeps its buckets, in every worker; any other
            starts with empty ones (every key's bucket full).
        """
        self.rateLimit = (
            None if rate is None else RateLimit(self._buckets, self._fingerprint, rate, burst, key)
        )
        self.maxConnections = maxConnections
        limits = {}
        for route in routes:
            routeRate = route.rateLimit
            if routeRate is None:
                continue
            routeBurst = route.rateLimitBurst
            if routeBurst is None:
                routeBurst = defaultBurst(routeRate)
            routeKey = route.rateLimitKey or key
            identity = f"{route.label} {routeRate} {routeBurst} {routeKey}".encode()
            buckets = Buckets(self.region, self._clock, self.region.claimTable(identity))
            limits[route.label] = RateLimit(
                buckets, self._fingerprint, routeRate, routeBurst, routeKey, identity
            )
            self.routeRateLimited.setdefault(route.label, 0)
        self.routeLimits = limits

    def checkRequest(self, request: IRequest) -> int:
        """
        Whether C{request} may go on.

        @return: 0 if it may, else the seconds for C{Retry-After} of the 429
            it gets.
        """
        limit = self.rateLimit
        if limit is None:
            return 0
        wait = limit.check(request)
        if wait:
            self.rateLimited += 1
        return wait

    def checkRoute(self, label: str, request: IRequest) -> int:
        """
        Whether C{request}, which matched the route C{label}, may go on as
        far as the route's rate limit is concerned (checked after
        L{checkRequest}'s).

        @return: 0 if it may (or the route has no limit), else the seconds
            for C{Retry-After} of the 429 it gets.
        """
        limit = self.routeLimits.get(label)
        if limit is None:
            return 0
        wait = limit.check(request)
        if wait:
            self.routeRateLimited[label] += 1
        return wait

    def opened(self, host: str) -> int | None:
        """
        A connection from C{host} was accepted.

        @return: What to give L{closed} when it closes (C{None} if nothing
            need be), or -1 if it must be closed at once: C{host} already
            has C{maxConnections} open.
        """
        if not self.maxConnections or not host:
            return None
        fingerprint = self._fingerprint(host.encode("ascii"))
        counted = self._counts.opened(fingerprint, self.maxConnections)
        if counted is None:
            self.untrackedConnections += 1
            return None
        if not counted:
            self.refusedConnections += 1
            return -1
        return fingerprint

    def closed(self, token: int) -> None:
        """
        A connection L{opened} counted (and gave C{token} for) is closed.
        """
        self._counts.closed(token)

"""
Prometheus metrics of one balancer, with the C{prometheus-client} library.

Counters and the latency histogram are updated as requests end; the
per-backend gauges (active requests, up) are read from the pools when
Prometheus scrapes, so they are never stale.  Every per-backend series has
a C{pool} label, the pool's name (a backend may be in several pools).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from txlb.admission import Admission
from txlb.algorithms.shadow import Shadow
from txlb.backend import BackendPool
from txlb.clientlimits import ClientLimits
from txlb.mirror import RESULTS, Mirrors
from txlb.refusals import REASONS
from txlb.retrybudget import RetryBudget

#: Latency buckets, in seconds: a proxy's answers range from well under a
#: millisecond to the 30 s response timeout.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PoolView(Protocol):
    """
    What the metrics read of a pool (a L{txlb.proxy.LoadBalancerResource}).
    """

    @property
    def name(self) -> str: ...

    @property
    def pool(self) -> BackendPool: ...

    @property
    def shadow(self) -> Shadow | None: ...

    @property
    def mirrors(self) -> Mirrors: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def retryBudget(self) -> RetryBudget: ...


Pools = Callable[[], Iterable[PoolView]]


class _PoolCollector:
    """
    The per-backend gauges, read from the pools at each scrape.
    """

    def __init__(self, pools: Pools, clock: Any, mirrored: set[str]) -> None:
        self._pools = pools
        self._clock = clock
        self._mirrored = mirrored

    def collect(self) -> Iterator[Metric]:
        now = self._clock.seconds()
        mirrors = GaugeMetricFamily(
            "txlb_mirror_requests_in_flight",
            "Copies of requests in flight to a mirror pool.",
            labels=["pool"],
        )
        labels = ["pool", "backend"]
        active = GaugeMetricFamily(
            "txlb_backend_active_requests", "Requests in flight to a backend.", labels=labels
        )
        up = GaugeMetricFamily(
            "txlb_backend_up",
            "Whether a backend takes new requests (1) or not (0).",
            labels=labels,
        )
        for pool in self._pools():
            for backend in pool.pool.backends:
                active.add_metric([pool.name, backend.address], backend.active)
                up.add_metric([pool.name, backend.address], 1 if backend.available(now) else 0)
            if pool.name in self._mirrored:
                mirrors.add_metric([pool.name], pool.mirrors.inFlight())
        yield active
        yield up
        if self._mirrored:
            yield mirrors


class _ShadowCollector:
    """
    The shadow policies' counts, read from them at each scrape; nothing for
    a pool without one.
    """

    def __init__(self, pools: Pools) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        shadows = [(pool.name, pool.shadow) for pool in self._pools() if pool.shadow is not None]
        if not shadows:
            return
        labels = ["pool", "policy"]
        compared = CounterMetricFamily(
            "txlb_shadow_picks", "Picks the shadow policy made.", labels=labels
        )
        agreed = CounterMetricFamily(
            "txlb_shadow_agreed",
            "Picks where the shadow policy chose the live policy's backend.",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "txlb_shadow_errors", "Times the shadow policy raised.", labels=labels
        )
        agreement = GaugeMetricFamily(
            "txlb_shadow_agreement_ratio",
            "Share of picks where the shadow policy agreed with the live one.",
            labels=labels,
        )
        backends = CounterMetricFamily(
            "txlb_shadow_backend_picks",
            "Requests the shadow policy would have sent to each backend.",
            labels=["pool", "policy", "backend"],
        )
        for pool, shadow in shadows:
            compared.add_metric([pool, shadow.name], shadow.compared)
            agreed.add_metric([pool, shadow.name], shadow.agreed)
            errors.add_metric([pool, shadow.name], shadow.errors)
            agreement.add_metric([pool, shadow.name], shadow.agreement() or 0.0)
            for address, count in shadow.picks.items():
                backends.add_metric([pool, shadow.name, address], count)
        yield from (compared, agreed, errors, agreement, backends)


class _OverloadCollector:
    """
    Each pool's backend limits, queue and retry budget, read from them at
    each scrape.
    """

    def __init__(self, pools: Pools) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        limit = GaugeMetricFamily(
            "txlb_backend_max_requests",
            "The most requests in flight a backend may have (--max-conn; 0: no limit).",
            labels=["pool", "backend"],
        )
        queued = GaugeMetricFamily(
            "txlb_queue_length",
            "Requests waiting for a backend below its limit, by pool.",
            labels=["pool"],
        )
        refused = CounterMetricFamily(
            "txlb_queue_refused",
            "Requests answered 503 by a pool's queue: full (QF) or timed out (QT).",
            labels=["pool", "reason"],
        )
        retries = CounterMetricFamily(
            "txlb_retries_refused",
            "Retries not made because the pool's retry budget (--retry-budget) was spent.",
            labels=["pool"],
        )
        for pool in self._pools():
            admission = pool.admission
            for backend in pool.pool.backends:
                limit.add_metric([pool.name, backend.address], admission.limitOf(backend))
            queued.add_metric([pool.name], admission.queued)
            refused.add_metric([pool.name, "full"], admission.full)
            refused.add_metric([pool.name, "timeout"], admission.timedOut)
            retries.add_metric([pool.name], pool.retryBudget.refused)
        yield from (limit, queued, refused, retries)


class _ClientLimitsCollector:
    """
    What the client limits refused, read from them at each scrape.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        limits = self._metrics.clientLimits
        if limits is None:
            return
        # The top level's count keeps the series it had before routes had
        # limits: an empty label is no label to Prometheus.
        limited = CounterMetricFamily(
            "txlb_rate_limited_requests",
            "Requests answered 429 for being over a rate limit: --rate-limit's (route empty),"
            " or a route's rate-limit.",
            labels=["route"],
        )
        limited.add_metric([""], limits.rateLimited)
        for route, count in limits.routeRateLimited.items():
            limited.add_metric([route], count)
        yield limited
        yield CounterMetricFamily(
            "txlb_client_connections_refused",
            "Connections closed at once for being over --max-client-conns.",
            value=limits.refusedConnections,
        )
        yield CounterMetricFamily(
            "txlb_client_connections_untracked",
            "Connections let in without being counted against --max-client-conns, the "
            "table of connected addresses being full where their address falls.",
            value=limits.untrackedConnections,
        )


class EtcdView(Protocol):
    """
    What the metrics read of a fleet's connection to etcd
    (L{txlb.fleet.Fleet}).
    """

    @property
    def connected(self) -> bool: ...

    @property
    def revision(self) -> int: ...

    @property
    def problems(self) -> dict[str, str]: ...


class _EtcdCollector:
    """
    The connection to etcd, read at each scrape.
    """

    def __init__(self, etcd: EtcdView) -> None:
        self._etcd = etcd

    def collect(self) -> Iterator[Metric]:
        etcd = self._etcd
        yield GaugeMetricFamily(
            "txlb_etcd_connected",
            "Whether the watch of etcd's prefix is open (1) or not (0: the last configuration"
            " applied stays while txlb tries again).",
            value=1 if etcd.connected else 0,
        )
        yield GaugeMetricFamily(
            "txlb_etcd_revision", "The last etcd revision applied.", value=etcd.revision
        )
        yield GaugeMetricFamily(
            "txlb_etcd_refused_keys",
            "Keys under etcd's prefix that cannot be read (a member's or an admin"
            " change's value), which are ignored.",
            value=len(etcd.problems),
        )


class Metrics:
    """
    The metrics, in a registry of their own (several balancers can run in
    one process, and tests need fresh ones).
    """

    #: The client limits whose refusals are counted, if any.
    clientLimits: ClientLimits | None = None

    def __init__(self, clock: Any, pools: Pools) -> None:
        """
        @param pools: The pools there are now.
        """
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "txlb_requests",
            "Requests that ended, by pool, backend and status code (- when none).",
            ["pool", "backend", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "txlb_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["pool", "backend"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "txlb_retries",
            "Requests sent again to another backend, by pool.",
            ["pool"],
            registry=self.registry,
        )
        self.healthChecks = Counter(
            "txlb_health_checks",
            "Active health checks, by pool, backend and result.",
            ["pool", "backend", "result"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "txlb_config_reloads",
            "Configuration reloads, by result.",
            ["result"],
            registry=self.registry,
        )
        self.dnsResolutions = Counter(
            "txlb_dns_resolutions",
            "Resolutions of --backends-dns names, by name and result (success or failure:"
            " a timeout, an error or an empty answer, which keep the last good set).",
            ["name", "result"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "txlb_client_refusals",
            "Requests refused on the client connection, by the class of what was wrong.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REASONS:
            # Every class shows from the start, at 0, so a rate over it works.
            self.refusals.labels(reason)
        self.queueTime = Histogram(
            "txlb_queue_duration_seconds",
            "Time requests waited for a backend below its limit, of those that waited, by pool.",
            ["pool"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "txlb_algorithm_fallbacks",
            "Picks where the algorithm raised and round robin picked instead, by pool.",
            ["pool"],
            registry=self.registry,
        )
        self.routes = Counter(
            "txlb_route_requests",
            "Requests that matched each route (by its name, or its place in the list).",
            ["route"],
            registry=self.registry,
        )
        self.routerErrors = Counter(
            "txlb_router_errors",
            "Times a route's router raised or answered no pool (the request went on).",
            ["route"],
            registry=self.registry,
        )
        self.mirrorRequests = Counter(
            "txlb_mirror_requests",
            "Copies of requests for a mirror pool, by pool and result: answered (the"
            " response read whole), failed (no connection, a reset, a timeout, a malformed"
            " response), cut (the mirror took the body more slowly than the client sent it,"
            " or the client's request ended first) or dropped (too many in flight).",
            ["pool", "result"],
            registry=self.registry,
        )
        self.mirrorResponses = Counter(
            "txlb_mirror_responses",
            "Responses of mirror pools, read whole and thrown away, by pool and status code.",
            ["pool", "code"],
            registry=self.registry,
        )
        #: The pools routes mirror to.
        self._mirrored: set[str] = set()
        self.registry.register(_PoolCollector(pools, clock, self._mirrored))
        self.registry.register(_ShadowCollector(pools))
        self.registry.register(_ClientLimitsCollector(self))
        self.registry.register(_OverloadCollector(pools))
        # The labelled children, looked up once each: labels() takes a lock
        # and builds a key on every call.
        self._requestChildren: dict[tuple[str, str, str], Any] = {}
        self._durationChildren: dict[tuple[str, str], Any] = {}
        self._routeChildren: dict[str, Any] = {}

    def followEtcd(self, etcd: EtcdView) -> None:
        """
        Show the connection to etcd of a fleet's member.
        """
        self.registry.register(_EtcdCollector(etcd))

    def addPool(self, pool: str) -> None:
        """
        Show the per-pool counters of C{pool} from the start, at 0, so a
        rate over them works.
        """
        self.retries.labels(pool)
        self.fallbacks.labels(pool)

    def addMirror(self, pool: str) -> None:
        """
        C{pool} is a mirror pool: show its mirror series from the start, at
        0, so a rate over them works.
        """
        if pool not in self._mirrored:
            self._mirrored.add(pool)
            for result in RESULTS:
                self.mirrorRequests.labels(pool, result)

    def countMirror(self, pool: str, result: str, code: int | None) -> None:
        """
        Count a copy for the mirror pool C{pool} that ended with C{result}
        (one of L{txlb.mirror.RESULTS}), and C{code}, the status of its
        response, if it was answered.
        """
        self.addMirror(pool)
        self.mirrorRequests.labels(pool, result).inc()
        if code is not None:
            self.mirrorResponses.labels(pool, str(code)).inc()

    def countRequest(self, pool: str, backend: str, code: str) -> None:
        """
        Count a request that ended in C{pool} on C{backend} (C{-} for
        none) with status C{code} (C{-} for none).
        """
        key = (pool, backend, code)
        child = self._requestChildren.get(key)
        if child is None:
            child = self._requestChildren[key] = self.requests.labels(*key)
        child.inc()

    def observeDuration(self, pool: str, backend: str, seconds: float) -> None:
        """
        Record how long a request on C{backend} of C{pool} took.
        """
        key = (pool, backend)
        child = self._durationChildren.get(key)
        if child is None:
            child = self._durationChildren[key] = self.duration.labels(*key)
        child.observe(seconds)

    def observeQueued(self, pool: str, seconds: float) -> None:
        """
        Record how long a request of C{pool} waited in its queue.
        """
        self.queueTime.labels(pool).observe(seconds)

    def countRoute(self, route: str) -> None:
        """
        Count a request that matched C{route} (its label: never the path).
        """
        child = self._routeChildren.get(route)
        if child is None:
            child = self._routeChildren[route] = self.routes.labels(route)
        child.inc()

    def routeCounts(self) -> dict[str, int]:
        """
        The requests each route matched, by its label.
        """
        return {
            sample.labels["route"]: int(sample.value)
            for metric in self.routes.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }

    def countRouterError(self, route: str) -> None:
        """
        Count a router that raised or answered no pool.
        """
        self.routerErrors.labels(route).inc()

    def countRefusal(self, reason: str) -> None:
        """
        Count a request refused on its client connection.

        @param reason: One of L{txlb.refusals.REASONS}: the label's values
            are a fixed set, whatever clients send.
        @raise ValueError: For any other C{reason}.
        """
        if reason not in REASONS:
            raise ValueError(f"not a refusal reason: {reason!r}")
        self.refusals.labels(reason).inc()

    def latencyBuckets(self) -> dict[tuple[str, str], list[int]]:
        """
        Each backend's requests so far by duration, by pool and backend:
        cumulative counts for each of L{BUCKETS}, then all of them, as the
        histogram keeps them (the status page takes the p99 of what changed
        between two polls).
        """
        buckets: dict[tuple[str, str], list[int]] = {}
        for metric in self.duration.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    key = (sample.labels["pool"], sample.labels["backend"])
                    buckets.setdefault(key, []).append(int(sample.value))
        return buckets

    def exposition(self) -> bytes:
        """
        The metrics in Prometheus' text format.
        """
        return generate_latest(self.registry)

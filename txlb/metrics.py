"""
Prometheus metrics of one balancer, with the C{prometheus-client} library.

Counters and the latency histogram are updated as requests end; the
per-backend gauges (active requests, up) are read from the pool when
Prometheus scrapes, so they are never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from txlb.admission import Admission
from txlb.algorithms.shadow import Shadow
from txlb.backend import BackendPool
from txlb.clientlimits import ClientLimits
from txlb.refusals import REASONS
from txlb.retrybudget import RetryBudget

#: Latency buckets, in seconds: a proxy's answers range from well under a
#: millisecond to the 30 s response timeout.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _PoolCollector:
    """
    The per-backend gauges, read from the pool at each scrape.
    """

    def __init__(self, pool: BackendPool, clock: Any) -> None:
        self._pool = pool
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self._clock.seconds()
        active = GaugeMetricFamily(
            "txlb_backend_active_requests", "Requests in flight to a backend.", labels=["backend"]
        )
        up = GaugeMetricFamily(
            "txlb_backend_up",
            "Whether a backend takes new requests (1) or not (0).",
            labels=["backend"],
        )
        for backend in self._pool.backends:
            active.add_metric([backend.address], backend.active)
            up.add_metric([backend.address], 1 if backend.available(now) else 0)
        yield active
        yield up


class _ShadowCollector:
    """
    The shadow policy's counts, read from it at each scrape; nothing when
    there is none.
    """

    def __init__(self, shadow: Callable[[], Shadow | None]) -> None:
        self._shadow = shadow

    def collect(self) -> Iterator[Metric]:
        shadow = self._shadow()
        if shadow is None:
            return
        labels = ["policy"]
        compared = CounterMetricFamily(
            "txlb_shadow_picks", "Picks the shadow policy made.", labels=labels
        )
        compared.add_metric([shadow.name], shadow.compared)
        agreed = CounterMetricFamily(
            "txlb_shadow_agreed",
            "Picks where the shadow policy chose the live policy's backend.",
            labels=labels,
        )
        agreed.add_metric([shadow.name], shadow.agreed)
        errors = CounterMetricFamily(
            "txlb_shadow_errors", "Times the shadow policy raised.", labels=labels
        )
        errors.add_metric([shadow.name], shadow.errors)
        agreement = GaugeMetricFamily(
            "txlb_shadow_agreement_ratio",
            "Share of picks where the shadow policy agreed with the live one.",
            labels=labels,
        )
        agreement.add_metric([shadow.name], shadow.agreement() or 0.0)
        backends = CounterMetricFamily(
            "txlb_shadow_backend_picks",
            "Requests the shadow policy would have sent to each backend.",
            labels=["policy", "backend"],
        )
        for address, count in shadow.picks.items():
            backends.add_metric([shadow.name, address], count)
        yield from (compared, agreed, errors, agreement, backends)


class _ClientLimitsCollector:
    """
    What the client limits refused, read from them at each scrape.
    """

    def __init__(self, limits: Callable[[], ClientLimits | None]) -> None:
        self._limits = limits

    def collect(self) -> Iterator[Metric]:
        limits = self._limits()
        if limits is None:
            return
        yield CounterMetricFamily(
            "txlb_rate_limited_requests",
            "Requests answered 429 for being over --rate-limit.",
            value=limits.rateLimited,
        )
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


class _OverloadCollector:
    """
    The backends' limits, the queue and the retry budget, read from them
    at each scrape.
    """

    def __init__(self, pool: BackendPool, admission: Admission, budget: RetryBudget) -> None:
        self._pool = pool
        self._admission = admission
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        admission = self._admission
        limit = GaugeMetricFamily(
            "txlb_backend_max_requests",
            "The most requests in flight a backend may have (--max-conn; 0: no limit).",
            labels=["backend"],
        )
        for backend in self._pool.backends:
            limit.add_metric([backend.address], admission.limitOf(backend))
        yield limit
        yield GaugeMetricFamily(
            "txlb_queue_length",
            "Requests waiting for a backend below its limit.",
            value=admission.queued,
        )
        refused = CounterMetricFamily(
            "txlb_queue_refused",
            "Requests answered 503 by the queue: full (QF) or timed out (QT).",
            labels=["reason"],
        )
        refused.add_metric(["full"], admission.full)
        refused.add_metric(["timeout"], admission.timedOut)
        yield refused
        yield CounterMetricFamily(
            "txlb_retries_refused",
            "Retries not made because the retry budget (--retry-budget) was spent.",
            value=self._budget.refused,
        )


class Metrics:
    """
    The metrics, in a registry of their own (several balancers can run in
    one process, and tests need fresh ones).
    """

    def __init__(
        self,
        pool: BackendPool,
        clock: Any,
        shadow: Callable[[], Shadow | None] = lambda: None,
        clientLimits: Callable[[], ClientLimits | None] = lambda: None,
        overload: tuple[Admission, RetryBudget] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "txlb_requests",
            "Requests that ended, by backend and status code (- when none was sent).",
            ["backend", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "txlb_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            ["backend"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "txlb_retries", "Requests sent again to another backend.", registry=self.registry
        )
        self.healthChecks = Counter(
            "txlb_health_checks",
            "Active health checks, by backend and result.",
            ["backend", "result"],
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
            "Time requests waited for a backend below its limit, of those that waited.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "txlb_algorithm_fallbacks",
            "Picks where the algorithm raised and round robin picked instead.",
            registry=self.registry,
        )
        self.registry.register(_PoolCollector(pool, clock))
        self.registry.register(_ShadowCollector(shadow))
        self.registry.register(_ClientLimitsCollector(clientLimits))
        if overload is not None:
            self.registry.register(_OverloadCollector(pool, *overload))
        # The labelled children, looked up once each: labels() takes a lock
        # and builds a key on every call.
        self._requestChildren: dict[tuple[str, str], Any] = {}
        self._durationChildren: dict[str, Any] = {}

    def countRequest(self, backend: str, code: str) -> None:
        """
        Count a request that ended on C{backend} (C{-} for none) with
        status C{code} (C{-} for none).
        """
        child = self._requestChildren.get((backend, code))
        if child is None:
            child = self._requestChildren[backend, code] = self.requests.labels(backend, code)
        child.inc()

    def observeDuration(self, backend: str, seconds: float) -> None:
        """
        Record how long a request on C{backend} took.
        """
        child = self._durationChildren.get(backend)
        if child is None:
            child = self._durationChildren[backend] = self.duration.labels(backend)
        child.observe(seconds)

    def observeQueued(self, seconds: float) -> None:
        """
        Record how long a request waited in the queue.
        """
        self.queueTime.observe(seconds)

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

    def latencyBuckets(self) -> dict[str, list[int]]:
        """
        Each backend's requests so far by duration: cumulative counts for
        each of L{BUCKETS}, then all of them, as the histogram keeps them
        (the status page takes the p99 of what changed between two polls).
        """
        buckets: dict[str, list[int]] = {}
        for metric in self.duration.collect():
            for sample in metric.samples:
                if sample.name.endswith("_bucket"):
                    counts = buckets.setdefault(sample.labels["backend"], [])
                    counts.append(int(sample.value))
        return buckets

    def exposition(self) -> bytes:
        """
        The metrics in Prometheus' text format.
        """
        return generate_latest(self.registry)

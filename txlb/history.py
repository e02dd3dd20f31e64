"""
The last five minutes of what the status page charts, kept by the process
that serves the admin API (the supervisor's, under C{--workers}), so that a
page opened during an incident shows the incident rather than starting
empty.

Every L{INTERVAL} seconds the admin API records a sample of each backend
of each pool: its requests per second, the p99 latency of the requests
that ended since the previous sample, its requests in flight, the load it
reports and its limit of requests in flight (C{--max-conn}, learnt with
C{auto}).  Samples are kept by pool and address, since one address may be
a backend of two pools.  A ring of L{SPAN} / L{INTERVAL} samples keeps
them: memory is bounded by the number of backends, whoever looks.  C{GET
/status?since=T} sends the samples taken after C{T}: all of them on a
page's first poll, then only the new ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

#: Seconds between two samples: the status page's refresh.
INTERVAL = 2.0

#: Seconds of samples kept.
SPAN = 300.0

#: A sample of one backend: requests/s, p99 in ms, requests in flight,
#: reported load, limit; each C{None} when unknown.
_Values = tuple[Any, Any, Any, Any, Any]


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """
    The C{q} quantile of a histogram, interpolated within its bucket as
    Prometheus' C{histogram_quantile} does: at most the highest finite
    bound, and C{None} when the histogram is empty.

    @param bounds: The buckets' upper bounds, ascending.
    @param counts: Cumulative counts for each of C{bounds}, then the count
        of all.
    """
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    for i, bound in enumerate(bounds):
        if counts[i] >= rank:
            lower = bounds[i - 1] if i else 0.0
            below = counts[i - 1] if i else 0
            return lower + (bound - lower) * (rank - below) / (counts[i] - below)
    return bounds[-1]


class History:
    """
    A ring of the last samples of each backend of each pool.

    Samples are kept by pool and address: one address may be a backend of
    two pools, each with its own requests, latencies and state.

    @ivar bounds: The latency histogram's bucket bounds, in seconds.
    """

    def __init__(
        self, bounds: Sequence[float], span: float = SPAN, interval: float = INTERVAL
    ) -> None:
        self.bounds = tuple(bounds)
        self.interval = interval
        self.span = span
        self._samples: deque[tuple[float, dict[str, dict[str, _Values]]]] = deque(
            maxlen=round(span / interval)
        )
        #: The latency buckets of the last sample, per worker, pool and
        #: backend.
        self._buckets: dict[Hashable, list[int] | None] = {}

    def record(
        self,
        now: float,
        pools: Mapping[str, Iterable[Mapping[str, Any]]],
        workers: Sequence[Mapping[str, Iterable[Mapping[str, Any]]]] | None = None,
    ) -> None:
        """
        Add a sample taken at C{now}, dropping the oldest when the ring is
        full.

        @param pools: Each pool's backends as C{/status} shows them (under
            C{--workers}, added up over the workers), by the pool's name.
        @param workers: Each worker's own pools, whose latency buckets
            count apart: a restarted worker's start again from 0.  By
            default C{pools} are one process's.
        """
        latest: dict[Hashable, list[int] | None] = {}
        ended: dict[tuple[str, str], list[int]] = {}
        for index, own in enumerate([pools] if workers is None else workers):
            for name, backends in own.items():
                for backend in backends:
                    key = (index, name, backend["address"])
                    # None: no request ended on it yet.
                    counts = latest[key] = backend.get("latencyBuckets")
                    if key not in self._buckets or counts is None:
                        # Its first sample, with nothing to compare to, or
                        # nothing ended.
                        continue
                    before = self._buckets[key] or [0] * len(counts)
                    if any(count < earlier for count, earlier in zip(counts, before)):
                        # Counts that went down started again (a restarted
                        # worker).
                        before = [0] * len(counts)
                    total = ended.setdefault((name, backend["address"]), [0] * len(counts))
                    for i, (count, earlier) in enumerate(zip(counts, before)):
                        total[i] += count - earlier
        self._buckets = latest
        sample: dict[str, dict[str, _Values]] = {}
        for name, backends in pools.items():
            values = sample[name] = {}
            for backend in backends:
                address = backend["address"]
                counts = ended.get((name, address))
                p99 = None if counts is None else quantile(0.99, self.bounds, counts)
                values[address] = (
                    backend.get("requestsPerSecond"),
                    None if p99 is None else round(p99 * 1000, 2),
                    backend.get("active"),
                    backend.get("load"),
                    backend.get("limit"),
                )
        self._samples.append((now, sample))

    def answer(self, since: float, main: str | None = None) -> dict[str, Any]:
        """
        The C{history} of C{/status?since=T}: the samples taken after
        C{since}, oldest first, with the interval and the span in seconds.

        @param main: The pool whose backends are also each sample's
            C{backends}, as the status's top level shows that pool's.
        """
        return {
            "interval": self.interval,
            "span": self.span,
            "samples": self.since(since, main),
        }

    def since(self, time: float, main: str | None = None) -> list[dict[str, Any]]:
        """
        The samples taken after C{time}, oldest first: each pool's
        backends under C{pools}, and the pool C{main}'s under C{backends}
        too.
        """
        answer = []
        for when, sample in self._samples:
            if when <= time:
                continue
            pools = {
                name: {
                    address: {
                        "rps": rps,
                        "p99": p99,
                        "active": active,
                        "load": load,
                        "limit": limit,
                    }
                    for address, (rps, p99, active, load, limit) in backends.items()
                }
                for name, backends in sample.items()
            }
            backends = {} if main is None else pools.get(main, {})
            answer.append({"time": when, "backends": backends, "pools": pools})
        return answer

"""
The status page's history: the ring of samples and the p99 of each.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from txlb.history import History, quantile

BOUNDS = (0.001, 0.0025, 0.005, 0.01)


def backend(
    address: str = "a:1",
    buckets: list[int] | None = None,
    rps: float = 1.5,
    active: int = 2,
    load: float | None = 0.25,
    limit: int | None = 8,
) -> dict[str, Any]:
    """
    One backend as C{/status} shows it, with what a sample takes.
    """
    return {
        "address": address,
        "requestsPerSecond": rps,
        "active": active,
        "load": load,
        "limit": limit,
        "latencyBuckets": buckets,
    }


def pool(*backends: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """
    The backends of one pool, C{p}, as L{History.record} takes them.
    """
    return {"p": list(backends)}


class QuantileTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        The quantile is interpolated within its bucket, from 0 below the
        first; past the highest finite bound it is that bound; an empty
        histogram has none.
        """
        table = [
            # 100 requests in (2.5, 5] ms: 2.5 + 0.99 * 2.5.
            (0.99, [0, 0, 100, 100, 100], 0.004975),
            # 100 in the first bucket: interpolated from 0.
            (0.5, [100, 100, 100, 100, 100], 0.0005),
            # 98 fast, 2 in (5, 10] ms: the 99th is halfway through it.
            (0.99, [98, 98, 98, 100, 100], 0.0075),
            # Beyond every finite bound.
            (0.99, [0, 0, 0, 0, 7], 0.01),
            (0.99, [0, 0, 0, 0, 0], None),
        ]
        for q, counts, expected in table:
            result = quantile(q, BOUNDS, counts)
            if expected is None:
                self.assertIsNone(result, counts)
            else:
                self.assertAlmostEqual(result, expected, places=9, msg=str(counts))


class HistoryTests(SynchronousTestCase):
    def test_sample(self) -> None:
        """
        A sample keeps each backend's requests/s, requests in flight, load
        and limit as the status gives them, and the p99 in milliseconds of the
        requests that ended since the previous sample: none at the first.
        """
        history = History(BOUNDS)
        history.record(
            10.0, pool(backend(buckets=[0, 0, 0, 0, 0]), backend("b:1", None, 0, 0, None, 0))
        )
        history.record(12.0, pool(backend(buckets=[0, 0, 100, 100, 100]), backend("b:1")))
        first = {
            "a:1": {"rps": 1.5, "p99": None, "active": 2, "load": 0.25, "limit": 8},
            "b:1": {"rps": 0, "p99": None, "active": 0, "load": None, "limit": 0},
        }
        second = {
            "a:1": {"rps": 1.5, "p99": 4.98, "active": 2, "load": 0.25, "limit": 8},
            "b:1": {"rps": 1.5, "p99": None, "active": 2, "load": 0.25, "limit": 8},
        }
        self.assertEqual(
            history.since(0, "p"),
            [
                {"time": 10.0, "backends": first, "pools": {"p": first}},
                {"time": 12.0, "backends": second, "pools": {"p": second}},
            ],
        )

    def test_pools(self) -> None:
        """
        Samples are kept by pool and address: one address that is a
        backend of two pools has each pool's own values and p99; each
        sample's C{backends} are those of the pool asked for, as the
        status's top level shows that pool's.
        """
        history = History(BOUNDS)
        history.record(
            0.0,
            {"api": [backend(buckets=[0, 0, 0, 0, 0])], "web": [backend(buckets=[0, 0, 0, 0, 0])]},
        )
        history.record(
            2.0,
            {
                "api": [backend(buckets=[100, 100, 100, 100, 100], rps=50.0)],
                "web": [backend(buckets=[0, 0, 0, 100, 100], rps=3.0)],
            },
        )
        [_, sample] = history.since(-1, "web")
        self.assertEqual(
            sample["pools"],
            {
                "api": {"a:1": {"rps": 50.0, "p99": 0.99, "active": 2, "load": 0.25, "limit": 8}},
                "web": {"a:1": {"rps": 3.0, "p99": 9.95, "active": 2, "load": 0.25, "limit": 8}},
            },
        )
        self.assertEqual(sample["backends"], sample["pools"]["web"])
        self.assertEqual([s["backends"] for s in history.since(-1)], [{}, {}])

    def test_betweenSamples(self) -> None:
        """
        The p99 is of the requests between two samples only: 100 slow ones
        before do not weigh on 100 fast ones after, and a sample with no
        request ended has none.
        """
        history = History(BOUNDS)
        for at, counts in [
            (0.0, [0, 0, 0, 0, 0]),
            (2.0, [0, 0, 0, 100, 100]),
            (4.0, [100, 100, 100, 200, 200]),
            (6.0, [100, 100, 100, 200, 200]),
        ]:
            history.record(at, pool(backend(buckets=counts)))
        self.assertEqual(
            [sample["backends"]["a:1"]["p99"] for sample in history.since(-1, "p")],
            [None, 9.95, 0.99, None],
        )

    def test_ring(self) -> None:
        """
        The ring keeps span / interval samples, dropping the oldest: five
        minutes, 150, by default.
        """
        history = History(BOUNDS, span=10, interval=2)
        for second in range(0, 14, 2):
            history.record(float(second), pool(backend()))
        self.assertEqual([s["time"] for s in history.since(0)], [4.0, 6.0, 8.0, 10.0, 12.0])
        fiveMinutes = History(BOUNDS)
        for sample in range(1, 152):
            fiveMinutes.record(2.0 * sample, pool(backend()))
        times = [s["time"] for s in fiveMinutes.since(0)]
        self.assertEqual((len(times), times[0], times[-1]), (150, 4.0, 302.0))

    def test_since(self) -> None:
        """
        C{since} gives the samples taken after a time: those a page has
        not yet drawn.
        """
        history = History(BOUNDS)
        for second in (2.0, 4.0, 6.0):
            history.record(second, pool(backend()))
        self.assertEqual([s["time"] for s in history.since(4.0)], [6.0])
        self.assertEqual(history.since(6.0), [])
        self.assertEqual(
            history.answer(3.0, "p"),
            {"interval": 2.0, "span": 300.0, "samples": history.since(3.0, "p")},
        )

    def test_workers(self) -> None:
        """
        Under C{--workers}, each worker's buckets count apart: the requests
        between two samples are each worker's increase, added up, and a
        worker whose counts went down (restarted) counts from 0.
        """
        history = History(BOUNDS)
        history.record(
            0.0,
            pool(backend()),
            [pool(backend(buckets=[0, 0, 0, 500, 500])), pool(backend(buckets=[0, 0, 0, 0, 0]))],
        )
        history.record(
            2.0,
            pool(backend()),
            # Worker 0 was restarted: its 100 fast requests are all new.
            [
                pool(backend(buckets=[100, 100, 100, 100, 100])),
                pool(backend(buckets=[0, 0, 0, 0, 0])),
            ],
        )
        history.record(
            4.0,
            pool(backend()),
            [
                pool(backend(buckets=[100, 100, 100, 100, 100])),
                pool(backend(buckets=[0, 0, 50, 50, 50])),
            ],
        )
        self.assertEqual(
            [sample["backends"]["a:1"]["p99"] for sample in history.since(-1, "p")],
            [None, 0.99, 4.98],
        )

    def test_firstRequests(self) -> None:
        """
        A backend that had no request yet (no buckets) counts from 0: the
        p99 of its first requests is there in the next sample.
        """
        history = History(BOUNDS)
        history.record(0.0, pool(backend(buckets=None)))
        history.record(2.0, pool(backend(buckets=None)))
        history.record(4.0, pool(backend(buckets=[0, 0, 0, 100, 100])))
        self.assertEqual(
            [sample["backends"]["a:1"]["p99"] for sample in history.since(-1, "p")],
            [None, None, 9.95],
        )

    def test_goneBackend(self) -> None:
        """
        A backend removed and added again starts afresh: its buckets from
        before are forgotten when a sample leaves it out.
        """
        history = History(BOUNDS)
        history.record(0.0, pool(backend(buckets=[0, 0, 0, 100, 100])))
        history.record(2.0, pool())
        history.record(4.0, pool(backend(buckets=[0, 0, 100, 100, 100])))
        self.assertEqual(
            [sample["backends"] for sample in history.since(-1, "p")][1:],
            [{}, {"a:1": {"rps": 1.5, "p99": None, "active": 2, "load": 0.25, "limit": 8}}],
        )

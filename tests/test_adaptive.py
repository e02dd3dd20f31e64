"""
Tests for L{txlb.adaptive}: a limit learnt from latency, on synthetic
latencies and against a model backend on a L{Clock}.
"""

from __future__ import annotations

import math
import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.adaptive import AdaptiveLimit
from txlb.admission import AUTO, Admission, Admitted
from txlb.backend import Backend


class ControllerTests(SynchronousTestCase):
    """
    The controller on latencies given window by window.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def controller(self, **kwargs: float) -> AdaptiveLimit:
        return AdaptiveLimit(self.clock.seconds, **kwargs)  # type: ignore[arg-type]

    def windows(
        self, limit: AdaptiveLimit, *windows: tuple[float, int | None], count: int = 10
    ) -> list[int]:
        """
        Feed windows of C{count} responses of one latency each, with the
        backend as busy as the limit lets it (or as given); return the
        limit after each.
        """
        limits = []
        for latency, inflight in windows:
            busy = limit.limit if inflight is None else inflight
            for _ in range(count):
                limit.observe(latency, busy)
            self.clock.advance(0.1)
            # The next window's first response ends this one.
            limit.observe(latency, 0)
            limit._samples.pop()
            limits.append(limit.limit)
        return limits

    def leaveSlowStart(self, initial: int) -> tuple[AdaptiveLimit, float]:
        """
        A controller that left slow start, by one window at twice the base,
        with its estimate.
        """
        limit = self.controller(initial=initial)
        self.windows(limit, (0.010, 0), (0.020, None))
        # 0.0125 / 0.020: shrunk to 62.5% at once, not smoothed.
        return limit, initial * 0.625

    def test_slowStart(self) -> None:
        """
        A new limit doubles each window its backend stays at the base
        latency (the base of its first window), until latency climbs past
        the base and its 25% buffer.
        """
        limit = self.controller()
        self.assertEqual(limit.limit, 1)
        self.assertEqual(self.windows(limit, *[(0.010, None)] * 5), [2, 4, 8, 16, 32])
        self.assertEqual(limit.base, 0.010)
        # Then, past the target, the whole gradient at once: 64 * 0.0125 /
        # 0.020 = 40.
        self.assertEqual(self.windows(limit, (0.0125, None), (0.020, None)), [64, 40])
        # At most halved.
        limit = self.controller(initial=64)
        self.assertEqual(self.windows(limit, (0.010, 0), (0.100, None)), [64, 32])

    def test_growsAtBaseLatency(self) -> None:
        """
        Out of slow start, while latency stays at the base, the limit grows
        by C{sqrt(limit)}, a fifth of the way each window.
        """
        limit, estimate = self.leaveSlowStart(64)
        self.assertEqual(limit.limit, int(estimate))
        for _ in range(5):
            estimate += math.sqrt(estimate) * 0.2
            self.assertEqual(self.windows(limit, (0.010, None)), [int(estimate)])

    def test_shrinksAsLatencyClimbs(self) -> None:
        """
        Latency over the base and its 25% buffer shrinks the limit in
        proportion (at most halving), smoothed.
        """
        limit, estimate = self.leaveSlowStart(100)
        estimate -= estimate * (1 - 0.5) * 0.2
        self.assertEqual(self.windows(limit, (0.025, None)), [int(estimate)])
        estimate -= estimate * (1 - 0.5) * 0.2
        self.assertEqual(self.windows(limit, (0.100, None)), [int(estimate)])
        estimate -= estimate * (1 - 0.0125 / 0.0150) * 0.2
        self.assertEqual(self.windows(limit, (0.0150, None)), [int(estimate)])
        estimate += math.sqrt(estimate) * 0.2
        self.assertEqual(self.windows(limit, (0.0125, None)), [int(estimate)])

    def test_median(self) -> None:
        """
        A window's latency is its median: a few slow requests do not shrink
        the limit.
        """
        limit, estimate = self.leaveSlowStart(16)
        for latency in [0.010] * 6 + [1.0] * 4:
            limit.observe(latency, 16)
        self.clock.advance(0.1)
        limit.observe(0.010, 0)
        self.assertEqual(limit.limit, int(estimate + math.sqrt(estimate) * 0.2))

    def test_unusedLimitDoesNotGrow(self) -> None:
        """
        In slow start, a limit not fully used does not double; out of it, a
        limit less than half used does not grow.
        """
        limit = self.controller(initial=8)
        self.assertEqual(self.windows(limit, (0.010, 7), (0.010, 7)), [8, 8])
        self.assertEqual(self.windows(limit, (0.010, 8)), [16])
        limit, estimate = self.leaveSlowStart(32)
        self.assertEqual(limit.limit, 20)
        self.assertEqual(self.windows(limit, *[(0.010, 9)] * 5), [20] * 5)
        self.assertEqual(
            self.windows(limit, (0.010, 10)), [int(estimate + math.sqrt(estimate) * 0.2)]
        )

    def test_windowNeedsSamples(self) -> None:
        """
        A window goes on until it has C{minSamples} responses, however long
        that takes.
        """
        limit = self.controller(initial=16)
        for _ in range(9):
            limit.observe(0.010, 16)
            self.clock.advance(1)
        self.assertIsNone(limit.base)
        limit.observe(0.010, 16)
        self.assertIsNone(limit.base)
        limit.observe(0.010, 16)
        self.assertEqual((limit.base, limit.limit), (0.010, 32))

    def test_bounds(self) -> None:
        """
        The limit stays between its least and its most.
        """
        limit = self.controller(initial=5, minLimit=3, maxLimit=6)
        self.assertEqual(self.windows(limit, (0.010, None), (0.010, None)), [6, 6])
        self.assertEqual(self.windows(limit, *[(0.100, None)] * 4)[-1], 3)

    def test_baseAgesOut(self) -> None:
        """
        The base is the lowest median of the last C{baseWindows} windows.
        """
        limit = self.controller(initial=16, baseWindows=3)
        self.windows(limit, (0.010, None), (0.020, None), (0.020, None))
        self.assertEqual(limit.base, 0.010)
        self.windows(limit, (0.020, None))
        self.assertEqual(limit.base, 0.020)

    def test_baseMeasuredAfreshAtMinimum(self) -> None:
        """
        When a backend becomes slower for good, the limit falls to its
        least, and after C{resetAfter} windows there, the base is its new
        latency and the limit starts slowly again.
        """
        limit = self.controller(initial=2, resetAfter=3)
        # Halved to 1 as slow start ends (0.0125 / 0.050 is under a half),
        # then at its least: three windows at 1.
        self.assertEqual(self.windows(limit, (0.010, 0), *[(0.050, None)] * 2), [2, 1, 1])
        self.assertEqual(limit.base, 0.010)
        self.assertEqual(self.windows(limit, (0.050, None)), [1])
        self.assertEqual(limit.base, 0.050)
        # Slow start again: 1 doubled, twice.
        self.assertEqual(self.windows(limit, (0.050, None), (0.050, None)), [2, 4])


class ModelBackend:
    """
    A backend that serves C{capacity} requests at a time in C{delay}
    seconds each; a request that finds more in flight (itself included)
    takes a C{delay} more for each one beyond C{capacity}, as the test
    backend's C{BACKEND_CAPACITY} does.  C{jitter} spreads each service time
    uniformly by that share, from a seeded generator.
    """

    def __init__(self, clock: Clock, capacity: int, delay: float, jitter: float = 0.0) -> None:
        self.clock = clock
        self.capacity = capacity
        self.delay = delay
        self.jitter = jitter
        self.random = random.Random(18)
        self.backend = Backend("127.0.0.1", 8081)
        self.most = 0
        #: When each request was sent, and the seconds it took.
        self.served: list[tuple[float, float]] = []

    def serve(self, done: object) -> None:
        backend = self.backend
        inflight = backend.active
        self.most = max(self.most, inflight)
        spread = 1 + self.random.uniform(-self.jitter, self.jitter) if self.jitter else 1
        seconds = self.delay * spread * (1 + max(0, inflight - self.capacity))
        self.served.append((self.clock.seconds(), seconds))
        self.clock.callLater(seconds, done, seconds, inflight)  # type: ignore[arg-type]


class ConvergenceTests(SynchronousTestCase):
    """
    C{--max-conn auto} in front of a model backend, with 50 clients each
    sending its next request as soon as the last is answered.
    """

    def simulate(
        self,
        capacity: int,
        delay: float,
        seconds: float,
        jitter: float = 0.0,
        clients: int = 50,
        maxConn: int | str = AUTO,
    ) -> tuple[list[tuple[float, int]], ModelBackend]:
        """
        Run the model for C{seconds}; return the limit every 100 ms.
        """
        clock = Clock()
        model = ModelBackend(clock, capacity, delay, jitter)
        backend = model.backend
        admission = Admission(clock, maxConn, maxQueue=clients, timeout=3600)

        def send() -> None:
            admission.admit(lambda: [backend]).addCallback(admitted)

        def admitted(result: Admitted) -> None:
            (chosen,) = result.free
            chosen.active += 1
            model.serve(answered)

        def answered(latency: float, inflight: int) -> None:
            backend.active -= 1
            admission.observe(backend, latency, inflight)
            admission.released(backend)
            send()

        for _ in range(clients):
            send()
        limits = []
        for step in range(1, int(seconds * 10) + 1):
            while True:
                pending = [call.getTime() for call in clock.getDelayedCalls()]
                upTo = step / 10
                due = [moment for moment in pending if moment <= upTo]
                if not due:
                    clock.advance(upTo - clock.seconds())
                    break
                clock.advance(min(due) - clock.seconds())
            limits.append((clock.seconds(), admission.limitOf(backend)))
        return limits, model

    def assertSettles(
        self, limits: list[tuple[float, int]], low: int, high: int, after: float = 10
    ) -> None:
        settled = [limit for moment, limit in limits if moment > after]
        self.assertTrue(settled)
        self.assertTrue(all(low <= limit <= high for limit in settled), settled)

    def test_capacityEight(self) -> None:
        """
        Against a backend that slows down past 8 requests in flight, the
        limit settles between 6 and 12 within 10 s, and stays there.
        """
        limits, model = self.simulate(8, 0.010, 30)
        self.assertSettles(limits, 6, 12)
        self.assertLessEqual(model.most, max(limit for _, limit in limits))

    def test_capacityEightWithJitter(self) -> None:
        """
        So it does when service times vary by up to 60% either way.
        """
        limits, _ = self.simulate(8, 0.010, 30, jitter=0.6)
        self.assertSettles(limits, 6, 12)

    def test_slowBackend(self) -> None:
        """
        And with a backend taking 100 ms a request (fewer samples a window).
        """
        limits, _ = self.simulate(8, 0.100, 40, jitter=0.3)
        self.assertSettles(limits, 6, 12, after=20)

    def test_otherCapacities(self) -> None:
        """
        It finds other capacities too.
        """
        for capacity, low, high in [(2, 1, 4), (32, 26, 44)]:
            limits, _ = self.simulate(capacity, 0.010, 30, jitter=0.3, clients=100)
            self.assertSettles(limits, low, high)

    def test_fewClients(self) -> None:
        """
        With fewer clients than the capacity, the limit grows to no more
        than twice what they use.
        """
        limits, _ = self.simulate(8, 0.010, 30, clients=4)
        self.assertSettles(limits, 4, 8)

    def test_latency(self) -> None:
        """
        Settled, the backend's p99 latency is at most twice its unloaded
        p99 (the limit probes one request above the capacity from time to
        time, and this backend takes twice as long for it), where without a
        limit it is over 10 times.
        """

        def p99(model: ModelBackend, after: float) -> float:
            times = sorted(seconds for sent, seconds in model.served if sent > after)
            return times[int(len(times) * 0.99)]

        for jitter in (0.0, 0.3):
            _, unloaded = self.simulate(8, 0.010, 10, jitter=jitter, clients=1)
            _, auto = self.simulate(8, 0.010, 30, jitter=jitter)
            _, unlimited = self.simulate(8, 0.010, 30, jitter=jitter, maxConn=0)
            self.assertLessEqual(p99(auto, 10), 2 * p99(unloaded, 0), jitter)
            self.assertGreater(p99(unlimited, 10), 10 * p99(unloaded, 0), jitter)

"""
The backend pool: which backends may take a request, and the passive
health check.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txlb.backend import Backend, BackendPool


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.a, self.b, self.c = (Backend("h", port) for port in (1, 2, 3))
        self.pool = BackendPool([self.a, self.b, self.c], self.clock, maxFails=3, failTimeout=10)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def failTimes(self, backend: Backend, times: int) -> None:
        for _ in range(times):
            self.pool.sending(backend)
            self.pool.failed(backend, "refused")
            self.pool.done(backend)

    def messages(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]

    def test_allUp(self) -> None:
        """
        All backends are candidates, in order.
        """
        self.assertEqual(self.pool.candidates(), [self.a, self.b, self.c])

    def test_excludeTried(self) -> None:
        """
        Backends already tried are left out while others remain.
        """
        self.assertEqual(self.pool.candidates([self.a, self.c]), [self.b])

    def test_excludeEverything(self) -> None:
        """
        When every backend was tried, they are all candidates again.
        """
        self.assertEqual(self.pool.candidates([self.a, self.b, self.c]), [self.a, self.b, self.c])

    def test_triedBeforeDown(self) -> None:
        """
        A retry goes back to a backend that is up rather than to one that is
        down.
        """
        self.c.healthy = False
        self.assertEqual(self.pool.candidates([self.a, self.b]), [self.a, self.b])

    def test_failuresBelowLimit(self) -> None:
        """
        Fewer failures in a row than the limit keep a backend in.
        """
        self.failTimes(self.b, 2)
        self.assertEqual(self.pool.candidates(), [self.a, self.b, self.c])

    def test_outAfterMaxFails(self) -> None:
        """
        The limit of failures in a row takes a backend out for the fail
        timeout, and says so.
        """
        self.failTimes(self.b, 3)
        self.assertEqual(self.pool.candidates(), [self.a, self.c])
        self.clock.advance(9.9)
        self.assertEqual(self.pool.candidates(), [self.a, self.c])
        self.assertIn(
            "Backend h:2 is out for 10 s after 3 failures in a row (refused)", self.messages()
        )

    def test_successResetsCount(self) -> None:
        """
        A success between failures starts the count again.
        """
        self.failTimes(self.b, 2)
        self.pool.succeeded(self.b)
        self.failTimes(self.b, 2)
        self.assertIn(self.b, self.pool.candidates())

    def test_oneProbeAfterTimeout(self) -> None:
        """
        After the fail timeout one request probes the backend; while it is
        in flight no other request goes there.
        """
        self.failTimes(self.b, 3)
        self.clock.advance(10)
        self.assertIn(self.b, self.pool.candidates())
        self.pool.sending(self.b)
        self.assertEqual(self.pool.candidates(), [self.a, self.c])

    def test_probeSuccessBringsBack(self) -> None:
        """
        A probe that succeeds brings the backend back.
        """
        self.failTimes(self.b, 3)
        self.clock.advance(10)
        self.pool.sending(self.b)
        self.pool.succeeded(self.b)
        self.pool.done(self.b)
        self.assertEqual(self.pool.candidates(), [self.a, self.b, self.c])
        self.assertIn("Backend h:2 is back", self.messages())

    def test_probeFailureTakesOutAgain(self) -> None:
        """
        A probe that fails takes the backend out for another fail timeout.
        """
        self.failTimes(self.b, 3)
        self.clock.advance(10)
        self.failTimes(self.b, 1)
        self.assertEqual(self.pool.candidates(), [self.a, self.c])
        self.clock.advance(10)
        self.assertIn(self.b, self.pool.candidates())

    def test_unhealthySkipped(self) -> None:
        """
        A backend the active checks found unhealthy is not a candidate.
        """
        self.b.healthy = False
        self.assertEqual(self.pool.candidates(), [self.a, self.c])

    def test_panic(self) -> None:
        """
        When every backend is down, all are candidates, and that is logged
        once until one recovers.
        """
        for backend in (self.a, self.b, self.c):
            backend.healthy = False
        self.assertEqual(self.pool.candidates(), [self.a, self.b, self.c])
        self.assertEqual(self.pool.candidates([self.a]), [self.b, self.c])
        panics = [m for m in self.messages() if "Every backend is down" in m]
        self.assertEqual(len(panics), 1)
        self.b.healthy = True
        self.assertEqual(self.pool.candidates(), [self.b])
        self.b.healthy = False
        self.pool.candidates()
        panics = [m for m in self.messages() if "Every backend is down" in m]
        self.assertEqual(len(panics), 2)

    def test_panicPrefersHealthy(self) -> None:
        """
        In panic mode, a backend out only after failures on real traffic
        (healthy to the active checks) goes before those the checks find
        down.
        """
        self.failTimes(self.a, 3)
        self.b.healthy = self.c.healthy = False
        self.assertEqual(self.pool.candidates(), [self.a])
        self.pool.sending(self.a)
        self.assertEqual(self.pool.candidates(), [self.a])

    def test_failuresWhileOutLoggedOnce(self) -> None:
        """
        Failures of a backend that is already out are not logged again.
        """
        self.failTimes(self.b, 6)
        outs = [m for m in self.messages() if "is out for" in m]
        self.assertEqual(len(outs), 1)

    def test_failedProbeLogged(self) -> None:
        """
        A probe that fails is logged, as the backend goes out again.
        """
        self.failTimes(self.b, 3)
        self.clock.advance(10)
        self.failTimes(self.b, 1)
        outs = [m for m in self.messages() if "is out for" in m]
        self.assertEqual(len(outs), 2)

    def test_probeWithoutVerdict(self) -> None:
        """
        A probe that ends with no verdict (its client left) lets the next
        request probe again.
        """
        self.failTimes(self.b, 3)
        self.clock.advance(10)
        self.pool.sending(self.b)
        self.pool.done(self.b)
        self.assertIn(self.b, self.pool.candidates())

    def test_drainingStaysOutInPanic(self) -> None:
        """
        In panic mode, draining backends are still left out.
        """
        self.a.draining = True
        self.b.healthy = self.c.healthy = False
        self.assertEqual(self.pool.candidates(), [self.b, self.c])

    def test_activeCount(self) -> None:
        """
        The active count goes up when a request is sent and down when it is
        over.
        """
        self.pool.sending(self.a)
        self.pool.sending(self.a)
        self.pool.done(self.a)
        self.assertEqual(self.a.active, 1)


class SlowStartTests(SynchronousTestCase):
    """
    C{--slow-start}: a backend just added or back up is a candidate for a
    share of the picks growing linearly over the window.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.a, self.b = Backend("h", 1), Backend("h", 2)
        self.pool = BackendPool([self.a, self.b], self.clock, maxFails=1, slowStart=10)

    def admitted(self, count: int) -> list[bool]:
        """
        Whether C{b} is a candidate, for each of C{count} picks.
        """
        return [self.b in self.pool.candidates() for _ in range(count)]

    def test_notAtStart(self) -> None:
        """
        Backends there from the start are not ramped.
        """
        self.assertEqual(self.admitted(3), [True] * 3)

    def test_ramp(self) -> None:
        """
        Just up, it takes nothing; a quarter of the way through, one pick in
        four; half way, one in two; after the window, every pick.
        """
        self.pool.cameUp(self.b)
        self.assertEqual(self.admitted(3), [False] * 3)
        self.clock.advance(2.5)
        self.assertEqual(self.admitted(8), [False, False, False, True] * 2)
        self.clock.advance(2.5)
        self.assertEqual(self.admitted(4), [False, True] * 2)
        self.clock.advance(5)
        self.assertEqual(self.admitted(3), [True] * 3)

    def test_neverEmpty(self) -> None:
        """
        When every backend up is ramping and none is due a pick, they are
        all candidates.
        """
        self.pool.cameUp(self.a)
        self.pool.cameUp(self.b)
        self.assertEqual(self.pool.candidates(), [self.a, self.b])

    def test_backAfterFailures(self) -> None:
        """
        A backend the passive check took out ramps up again when it is back.
        """
        self.pool.sending(self.b)
        self.pool.failed(self.b, "refused")
        self.pool.done(self.b)
        self.clock.advance(10)
        self.pool.sending(self.b)
        self.pool.succeeded(self.b)
        self.pool.done(self.b)
        self.assertEqual(self.b.upSince, 10)
        self.clock.advance(5)
        self.assertEqual(self.admitted(2), [False, True])

    def test_off(self) -> None:
        """
        Without slow start a backend that came up takes its full share at
        once.
        """
        pool = BackendPool([self.a, self.b], self.clock)
        pool.cameUp(self.b)
        self.assertEqual(pool.candidates(), [self.a, self.b])


class LoadReportTests(SynchronousTestCase):
    """
    What is left of a load a backend reported.
    """

    def test_none(self) -> None:
        """
        A backend that never reported has no load and its full weight.
        """
        backend = Backend("h", 1, 3)
        self.assertEqual((backend.reportedLoad(5), backend.capacity(5)), (0, 3))

    def test_fades(self) -> None:
        """
        A report fades by 1/e every 10 seconds once the backend stops
        reporting; capacity is the weight times what is free, at least 5%.
        """
        backend = Backend("h", 1, 2)
        backend.reportLoad(b"1", 100)
        self.assertEqual(backend.reportedLoad(100), 1)
        self.assertAlmostEqual(backend.capacity(100), 2 * 0.05)
        self.assertAlmostEqual(backend.reportedLoad(110), 1 / 2.718281828459045)
        self.assertAlmostEqual(backend.capacity(130), 2 * (1 - 2.718281828459045**-3))

    def test_badReportIgnored(self) -> None:
        """
        A value that is no load report leaves the last one.
        """
        backend = Backend("h", 1)
        backend.reportLoad(b"0.5", 0)
        backend.reportLoad(b"busy", 1)
        self.assertEqual((backend.load, backend.loadReported), (0.5, 0))

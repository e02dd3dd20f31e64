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

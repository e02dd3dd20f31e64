"""
Tests for L{txlb.admission}: per-backend limits of requests in flight and
the pool's queue, on a L{Clock}.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from txlb.adaptive import INITIAL_LIMIT, AdaptiveLimit
from txlb.admission import AUTO, RETRY_AFTER, Admission, Admitted, QueueFullError, QueueTimeoutError
from txlb.backend import Backend


def backends(*limits: int) -> list[Backend]:
    return [Backend("127.0.0.1", 8081 + index, maxConn=limit) for index, limit in enumerate(limits)]


class AdmissionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.admitted: list[tuple[str, Admitted]] = []

    def admission(
        self, maxConn: int | str = 0, maxQueue: int = 1000, timeout: float = 5.0
    ) -> Admission:
        return Admission(self.clock, maxConn, maxQueue, timeout)

    def request(
        self, admission: Admission, name: str, candidates: Sequence[Backend], take: bool = True
    ) -> Deferred[Admitted]:
        """
        Ask for C{name}; when admitted, it takes a slot on the first free
        backend (as the exchange does), and is listed in L{admitted}.
        """

        def admitted(result: Admitted) -> Admitted:
            self.admitted.append((name, result))
            if take:
                result.free[0].active += 1
            return result

        return admission.admit(lambda: candidates).addCallback(admitted)

    def names(self) -> list[str]:
        return [name for name, _ in self.admitted]

    def end(self, admission: Admission, backend: Backend) -> None:
        """
        A request on C{backend} is over.
        """
        backend.active -= 1
        admission.released(backend)

    def test_unlimited(self) -> None:
        """
        Without limits, every request is admitted at once, with every
        candidate.
        """
        admission = self.admission()
        pool = backends(0, 0)
        for name in "abc":
            self.request(admission, name, pool)
        self.assertEqual(self.names(), ["a", "b", "c"])
        self.assertEqual([result.free for _, result in self.admitted], [pool] * 3)
        self.assertEqual([result.waited for _, result in self.admitted], [0.0] * 3)
        self.assertEqual(pool[0].active, 3)

    def test_onlyBelowLimit(self) -> None:
        """
        A backend at its limit (its own, else the pool's) is no candidate.
        """
        admission = self.admission(maxConn=2)
        own, pools = backends(1, 0)
        self.assertEqual(admission.free([own, pools]), [own, pools])
        own.active = 1
        self.assertEqual(admission.free([own, pools]), [pools])
        pools.active = 2
        self.assertEqual(admission.free([own, pools]), [])
        self.assertEqual((admission.limitOf(own), admission.limitOf(pools)), (1, 2))

    def test_fifo(self) -> None:
        """
        With every candidate at its limit, requests wait, and leave in the
        order they came as slots free, saying how long they waited.
        """
        admission = self.admission()
        (backend,) = pool = backends(1)
        self.request(admission, "first", pool)
        for name in ("a", "b", "c"):
            self.request(admission, name, pool)
            self.clock.advance(1)
        self.assertEqual((self.names(), admission.queued), (["first"], 3))
        self.end(admission, backend)
        self.assertEqual(self.names(), ["first", "a"])
        self.end(admission, backend)
        self.end(admission, backend)
        self.assertEqual(self.names(), ["first", "a", "b", "c"])
        self.assertEqual([result.waited for _, result in self.admitted], [0, 3, 2, 1])
        self.assertEqual((admission.queued, backend.active), (0, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noOvertaking(self) -> None:
        """
        A request arriving when a slot just went to a waiter waits behind
        the others.
        """
        admission = self.admission()
        (backend,) = pool = backends(1)
        for name in ("first", "a", "b"):
            self.request(admission, name, pool)
        self.end(admission, backend)
        self.request(admission, "late", pool)
        self.end(admission, backend)
        self.end(admission, backend)
        self.assertEqual(self.names(), ["first", "a", "b", "late"])

    def test_slotToWaiterThatCanUseIt(self) -> None:
        """
        A slot freed on a backend the first waiter cannot use (it tried it
        already) goes to the next that can; the first keeps its place.
        """
        admission = self.admission()
        one, two = pool = backends(1, 1)
        self.request(admission, "x", pool)
        self.request(admission, "y", pool)
        self.request(admission, "notOne", [two])
        self.request(admission, "any", pool)
        self.end(admission, one)
        self.assertEqual(self.names(), ["x", "y", "any"])
        self.assertEqual(admission.queued, 1)
        self.end(admission, two)
        self.assertEqual(self.names(), ["x", "y", "any", "notOne"])

    def test_freedBackendHandedOver(self) -> None:
        """
        The waiter gets the backends free when it leaves: the one that
        freed the slot.
        """
        admission = self.admission()
        one, two = pool = backends(1, 1)
        self.request(admission, "x", [one])
        self.request(admission, "y", [two])
        self.request(admission, "z", pool)
        self.end(admission, two)
        self.assertEqual(self.admitted[-1], ("z", Admitted([two], 0.0)))

    def test_full(self) -> None:
        """
        With C{maxQueue} waiting, the next request fails at once with
        L{QueueFullError} (flag C{QF}), counted.
        """
        admission = self.admission(maxQueue=2)
        pool = backends(1)
        for name in ("first", "a", "b"):
            self.request(admission, name, pool)
        failure = self.failureResultOf(self.request(admission, "c", pool), QueueFullError)
        self.assertEqual(failure.value.flag, "QF")
        self.assertEqual(str(failure.value), "every backend at its limit and the queue full")
        self.assertEqual((admission.full, admission.queued), (1, 2))

    def test_zeroQueue(self) -> None:
        """
        With C{maxQueue} 0, nothing waits.
        """
        admission = self.admission(maxQueue=0)
        pool = backends(1)
        self.request(admission, "first", pool)
        self.failureResultOf(self.request(admission, "a", pool), QueueFullError)

    def test_timeout(self) -> None:
        """
        A request waiting C{timeout} seconds fails with L{QueueTimeoutError}
        (flag C{QT}), counted, and leaves the queue; those behind it keep
        their turn.
        """
        admission = self.admission(timeout=5.0)
        (backend,) = pool = backends(1)
        self.request(admission, "first", pool)
        early = self.request(admission, "early", pool)
        self.clock.advance(2)
        self.request(admission, "later", pool)
        self.clock.advance(2.999)
        self.assertNoResult(early)
        self.clock.advance(0.001)
        failure = self.failureResultOf(early, QueueTimeoutError)
        self.assertEqual(failure.value.flag, "QT")
        self.assertEqual(str(failure.value), "queued 5 s with every backend at its limit")
        self.assertEqual((admission.timedOut, admission.queued), (1, 1))
        self.end(admission, backend)
        self.assertEqual(self.names(), ["first", "later"])
        self.assertAlmostEqual(self.admitted[-1][1].waited, 3.0)

    def test_cancel(self) -> None:
        """
        A request whose client went away leaves the queue at once: no timer
        is left, and the next slot goes to the one behind it.
        """
        admission = self.admission()
        (backend,) = pool = backends(1)
        self.request(admission, "first", pool)
        gone = self.request(admission, "gone", pool)
        self.request(admission, "stays", pool)
        gone.cancel()
        self.failureResultOf(gone, CancelledError)
        self.assertEqual(admission.queued, 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.end(admission, backend)
        self.assertEqual(self.names(), ["first", "stays"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wake(self) -> None:
        """
        A backend that joins the candidates (added, or back up) takes
        waiters once L{Admission.wake} is called.
        """
        admission = self.admission()
        one, two = backends(1, 1)
        candidates = [one]
        self.request(admission, "first", candidates)
        self.request(admission, "a", candidates)
        self.request(admission, "b", candidates)
        candidates.append(two)
        admission.wake()
        self.assertEqual(self.names(), ["first", "a"])
        self.assertEqual(self.admitted[-1][1].free, [two])

    def test_newArrivalLetsWaitersGoFirst(self) -> None:
        """
        A request that finds a backend free while others wait (a backend
        came back unannounced) lets them go first.
        """
        admission = self.admission()
        one, two = backends(1, 1)
        candidates = [one]
        self.request(admission, "first", candidates)
        self.request(admission, "waiting", candidates)
        candidates.append(two)
        self.request(admission, "new", candidates)
        self.assertEqual(self.names(), ["first", "waiting"])
        self.assertEqual(admission.queued, 1)
        self.end(admission, one)
        self.assertEqual(self.names(), ["first", "waiting", "new"])

    def test_admitNow(self) -> None:
        """
        L{Admission.admitNow} gives the free candidates without a
        L{Deferred}, or none when the request must wait; waiting, it lets
        those already waiting go first.
        """
        admission = self.admission()
        one, two = backends(1, 1)
        self.assertEqual(admission.admitNow([one, two]), [one, two])
        one.active = two.active = 1
        self.assertEqual(admission.admitNow([one, two]), [])
        self.request(admission, "waiting", [one, two])
        two.active = 0
        self.assertEqual(admission.admitNow([one, two]), [])
        self.assertEqual(self.names(), ["waiting"])

    def test_retryAfter(self) -> None:
        """
        The refusals' C{Retry-After} is a second.
        """
        self.assertEqual(RETRY_AFTER, 1)


class AutoTests(SynchronousTestCase):
    """
    C{--max-conn auto}: each backend's limit is learnt.
    """

    def test_learntLimit(self) -> None:
        """
        A backend without a limit of its own gets a learnt one, starting at
        L{txlb.adaptive.INITIAL_LIMIT}; one with its own keeps it.
        """
        clock = Clock()
        admission = Admission(clock, AUTO)
        learnt, own = backends(0, 4)
        self.assertEqual((admission.limitOf(learnt), admission.limitOf(own)), (INITIAL_LIMIT, 4))
        self.assertIs(admission.adaptive(learnt), admission.adaptive(learnt))

    def test_observeTeaches(self) -> None:
        """
        Latencies observed move the learnt limit; a backend with its own
        limit is not learnt; without C{auto} nothing is.
        """
        clock = Clock()
        made: list[AdaptiveLimit] = []

        def make(now: object) -> AdaptiveLimit:
            made.append(AdaptiveLimit(clock.seconds, initial=2, minSamples=1))
            return made[-1]

        admission = Admission(clock, AUTO, makeAdaptive=make)
        learnt, own = backends(0, 4)
        admission.observe(own, 0.01, 1)
        self.assertEqual(made, [])
        admission.observe(learnt, 0.01, 2)
        clock.advance(0.1)
        admission.observe(learnt, 0.01, 2)
        # Slow start: doubled.
        self.assertEqual(admission.limitOf(learnt), 4)
        fixed = Admission(clock, 5)
        fixed.observe(learnt, 0.01, 2)
        self.assertEqual(fixed.limitOf(learnt), 5)

    def test_growthWakesWaiters(self) -> None:
        """
        When a learnt limit grows, waiters take the new slots.
        """
        clock = Clock()
        admission = Admission(
            clock,
            AUTO,
            makeAdaptive=lambda now: AdaptiveLimit(now, initial=1, minSamples=1),
        )
        (backend,) = pool = backends(0)
        admitted: list[Admitted] = []

        def take(result: Admitted) -> None:
            result.free[0].active += 1
            admitted.append(result)

        for _ in range(3):
            admission.admit(lambda: pool).addCallback(take)
        self.assertEqual((len(admitted), admission.queued), (1, 2))
        admission.observe(backend, 0.01, 1)
        clock.advance(0.1)
        admission.observe(backend, 0.01, 1)
        # The limit is 2 now.
        self.assertEqual((len(admitted), admission.queued), (2, 1))

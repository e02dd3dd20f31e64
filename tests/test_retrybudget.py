"""
Tests for L{txlb.retrybudget}: Envoy's retry budget.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txlb.retrybudget import RetryBudget, parsePercent


def withRequests(count: int, percent: float = 20.0) -> RetryBudget:
    budget = RetryBudget(percent)
    for _ in range(count):
        budget.requestStarted()
    return budget


class RetryBudgetTests(SynchronousTestCase):
    def test_allowed(self) -> None:
        """
        The retries allowed in flight are C{percent} of the requests in
        flight, rounded down, and at least 3; 20% of 15 is exactly 3.
        """
        for requests, percent, allowed in [
            (0, 20, 3),
            (1, 20, 3),
            (14, 20, 3),
            (15, 20, 3),
            (19, 20, 3),
            (20, 20, 4),
            (24, 20, 4),
            (25, 20, 5),
            (100, 20, 20),
            (1000, 0, 3),
            (40, 12.5, 5),
            (10, 100, 10),
            (2, 100, 3),
        ]:
            self.assertEqual(
                withRequests(requests, percent).allowed(), allowed, (requests, percent)
            )

    def test_sequence(self) -> None:
        """
        With 25 requests in flight, 5 retries may start; the sixth is
        refused and counted, until one ends.
        """
        budget = withRequests(25)
        self.assertEqual([budget.startRetry() for _ in range(6)], [True] * 5 + [False])
        self.assertEqual((budget.retries, budget.refused), (5, 1))
        budget.retryEnded()
        self.assertEqual([budget.startRetry(), budget.startRetry()], [True, False])
        self.assertEqual((budget.retries, budget.refused), (5, 2))

    def test_requestsEnding(self) -> None:
        """
        As requests end, the budget shrinks to the floor; retries already in
        flight stay, new ones wait until they are under it.
        """
        budget = withRequests(25)
        for _ in range(5):
            budget.startRetry()
        for _ in range(20):
            budget.requestEnded()
        self.assertEqual(budget.allowed(), 3)
        self.assertFalse(budget.startRetry())
        budget.retryEnded()
        budget.retryEnded()
        self.assertFalse(budget.startRetry())
        budget.retryEnded()
        self.assertTrue(budget.startRetry())

    def test_everyBackendFails(self) -> None:
        """
        When every backend fails, 100 requests each wanting 2 retries at
        once make at most 20 retries in flight, instead of 200.
        """
        budget = withRequests(100)
        started = [budget.startRetry() for _ in range(200)]
        self.assertEqual(started.count(True), 20)
        self.assertEqual((budget.retries, budget.refused), (20, 180))


class ParseTests(SynchronousTestCase):
    def test_valid(self) -> None:
        for text, value in [("20", 20.0), ("0", 0.0), ("100", 100.0), ("12.5", 12.5)]:
            self.assertEqual(parsePercent(text), value)

    def test_invalid(self) -> None:
        for text in ["-1", "101", "x", "", "nan", "inf", "20%"]:
            e = self.assertRaises(ValueError, parsePercent, text)
            self.assertEqual(str(e), f"{text!r} is not a percentage from 0 to 100")

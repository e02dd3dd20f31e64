"""
The retry budget (C{--retry-budget PERCENT}, Envoy's C{retry_budget}):
retries in flight may be at most C{PERCENT} of the requests in flight,
and always at least C{minimum} (3), so that when every backend fails,
txlb does not multiply the load by C{1 + --retries} at the worst moment.

Envoy's formula (C{RetryBudgetImpl::max}):
C{max(floor(percent / 100 * requests in flight), min_retry_concurrency)},
with a retry allowed while fewer than that are in flight.  Requests in
flight count those queued for a backend too (Envoy's pending requests).
"""

from __future__ import annotations

from fractions import Fraction

#: Envoy's defaults: 20% of the requests in flight, at least 3.
DEFAULT_PERCENT = 20.0
MIN_RETRIES = 3


def parsePercent(text: str) -> float:
    """
    Parse C{--retry-budget}: a percentage from 0 to 100.

    @raise ValueError: With a one-line reason.
    """
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise ValueError(f"{text!r} is not a percentage from 0 to 100")
    return value


class RetryBudget:
    """
    The counts a retry budget needs, for one pool.

    The exchange calls L{requestStarted} when a request arrives and
    L{requestEnded} when it is over; before each retry, L{startRetry}, and
    if that allowed it, L{retryEnded} when the retry is over (it failed in
    turn, or the request ended).

    @ivar requests: Requests in flight.
    @ivar retries: Retries in flight.
    @ivar refused: Retries the budget refused.
    """

    def __init__(self, percent: float = DEFAULT_PERCENT, minimum: int = MIN_RETRIES) -> None:
        self.minimum = minimum
        self.setPercent(percent)
        self.requests = 0
        self.retries = 0
        self.refused = 0

    def setPercent(self, percent: float) -> None:
        """
        Allow C{percent} of the requests in flight from now on (a reload);
        the counts go on.
        """
        self.percent = percent
        # In whole numbers: 20% of 15 requests is 3, where 0.2 * 15 is a
        # little more.
        self._numerator, self._denominator = (Fraction(str(percent)) / 100).as_integer_ratio()

    def allowed(self) -> int:
        """
        How many retries may be in flight now.
        """
        return max(self.requests * self._numerator // self._denominator, self.minimum)

    def requestStarted(self) -> None:
        self.requests += 1

    def requestEnded(self) -> None:
        self.requests -= 1

    def startRetry(self) -> bool:
        """
        Whether a retry may start now; if so, it is counted in flight.
        """
        if self.retries < self.allowed():
            self.retries += 1
            return True
        self.refused += 1
        return False

    def retryEnded(self) -> None:
        self.retries -= 1

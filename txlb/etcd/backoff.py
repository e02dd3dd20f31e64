"""
How long to wait before trying etcd again.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable


class Backoff:
    """
    Exponential backoff with jitter: the n-th wait in a row is drawn from
    the upper half of C{min(initial * 2**n, maximum)}, so that a fleet that
    lost etcd together does not come back in step, yet never waits less
    than half the cap once there.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 10.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self._random = random
        self._failures = 0

    def next(self) -> float:
        """
        The wait after one more failure in a row.
        """
        ceiling = min(self.initial * 2 ** min(self._failures, 60), self.maximum)
        self._failures += 1
        return ceiling * (0.5 + self._random() / 2)

    def reset(self) -> None:
        """
        Start again from C{initial}: the last try succeeded.
        """
        self._failures = 0

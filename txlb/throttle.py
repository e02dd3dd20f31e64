"""
Log entries about one recurring problem, at most one a minute: a policy
that raises, an algorithm that fails to pick.
"""

from __future__ import annotations

import math
from typing import Any

#: Seconds between two log entries about the same misbehaving policy.
LOG_INTERVAL = 60.0


class Throttle:
    """
    Lets one log entry through per C{interval} seconds, counting those it
    holds back so the next one can say how many there were.

    @ivar held: Entries held back since the last one let through.
    """

    def __init__(self, clock: Any, interval: float = LOG_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._next = -math.inf
        self.held = 0

    def allow(self) -> bool:
        """
        Whether an entry may be logged now.
        """
        now = self._clock.seconds()
        if now < self._next:
            self.held += 1
            return False
        self._next = now + self._interval
        return True

    def release(self) -> int:
        """
        How many entries were held back since the last one, starting the
        count again.
        """
        held, self.held = self.held, 0
        return held

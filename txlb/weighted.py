"""
Weighted round robin: round robin over a schedule in which each backend
appears as many times as its weight, in the order given.

For weights 1:3:2 the schedule is A, B, B, B, C, C, then again from A.  It is
built once, when the algorithm is made, so a pick costs O(1); the schedule
holds sum(weights) entries.

Best for backends of different capacity: give more traffic to the stronger
ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


@implementer(IAlgorithm)
class WeightedRoundRobin:
    name = "weighted"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._schedule = [b for b in self.backends for _ in range(b.weight)]
        self._next = 0

    def pick(self, clientHost: str) -> Backend:
        backend = self._schedule[self._next]
        self._next = (self._next + 1) % len(self._schedule)
        return backend

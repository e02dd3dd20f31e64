"""
Weighted round robin: round robin over a schedule in which each backend
appears as many times as its weight, in the order given; backends that are
down are skipped.

For weights 1:3:2 the schedule is A, B, B, B, C, C, then again from A.  It is
built once, when the algorithm is made, so a pick costs O(1) when all
backends are up, and at most one walk of the schedule (sum(weights) entries)
otherwise.

Best for backends of different capacity: give more traffic to the stronger
ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


@implementer(IAlgorithm)
class WeightedRoundRobin:
    name = "weighted"
    usesWeights = True

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._schedule = [b for b in self.backends for _ in range(self._share(b))]
        self._next = 0

    @staticmethod
    def _share(backend: Backend) -> int:
        """
        How many times C{backend} appears in the schedule.
        """
        return backend.weight

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        count = len(self._schedule)
        for _ in range(count):
            backend = self._schedule[self._next]
            self._next = (self._next + 1) % count
            if backend in candidates:
                return backend
        raise ValueError("no candidate is one of this algorithm's backends")

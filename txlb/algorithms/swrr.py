"""
Smooth weighted round robin, as nginx does it (Maxim Dounin, 2012): each
backend keeps a current weight; at every pick each candidate adds its weight
to its current weight, the first with the largest current weight wins, and
the winner gives back the sum of the weights.

Weights 1:3:2 over 8081-8083 pick 8082, 8083, 8081, 8082, 8083, 8082 and then
again: the same shares as C{weighted}, but interleaved, so a heavy backend
never takes its whole share in a row.  A backend that is not a candidate
(down, tried, in slow start) neither gains nor gives back for that pick, as
in nginx.

Cost: O(n) per pick for n backends.  State: one current weight per backend,
per process, reset when the backends or weights change.

Best for backends of different capacity, with the load spread evenly in
time.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


@implementer(IAlgorithm)
class SmoothWeightedRoundRobin:
    name = "swrr"
    usesWeights = True

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._current = [0] * len(self.backends)

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        current = self._current
        total = 0
        best = -1
        for index, backend in enumerate(self.backends):
            if backend not in candidates:
                continue
            current[index] += backend.weight
            total += backend.weight
            if best < 0 or current[index] > current[best]:
                best = index
        if best < 0:
            raise ValueError("no candidate is one of this algorithm's backends")
        current[best] -= total
        return self.backends[best]

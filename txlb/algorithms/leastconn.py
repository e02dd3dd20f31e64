"""
Least connections: the backend with the fewest requests in flight right now,
among those that are up.

Ties go round robin: the search starts just after the previous pick, so idle
backends share the load instead of the first one taking it all.  Weights are
not used.  Cost: O(n) per pick for n backends.

Best for mixed workloads where some requests take much longer than others
(uploads beside small API calls).
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


@implementer(IAlgorithm)
class LeastConnections:
    name = "leastconn"
    usesWeights = False

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._start = 0

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        count = len(self.backends)
        chosen = -1
        for offset in range(count):
            index = (self._start + offset) % count
            backend = self.backends[index]
            if backend in candidates and (
                chosen < 0 or backend.active < self.backends[chosen].active
            ):
                chosen = index
        if chosen < 0:
            raise ValueError("no candidate is one of this algorithm's backends")
        self._start = (chosen + 1) % count
        return self.backends[chosen]

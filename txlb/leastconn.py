"""
Least connections: the backend with the fewest requests in flight right now.

Ties go round robin: the search starts just after the previous pick, so idle
backends share the load instead of the first one taking it all.  Weights are
not used.  Cost: O(n) per pick for n backends.

Best for mixed workloads where some requests take much longer than others
(uploads beside small API calls).
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


@implementer(IAlgorithm)
class LeastConnections:
    name = "leastconn"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._start = 0

    def pick(self, clientHost: str) -> Backend:
        count = len(self.backends)
        best = self._start
        for offset in range(1, count):
            index = (self._start + offset) % count
            if self.backends[index].active < self.backends[best].active:
                best = index
        self._start = (best + 1) % count
        return self.backends[best]

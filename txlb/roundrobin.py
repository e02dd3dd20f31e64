"""
Round robin: each backend in turn, one request at a time; backends that are
down are skipped.

Best for backends of equal capacity serving requests of similar cost.
Cost: O(1) per pick when all backends are up, O(n) for n backends otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


@implementer(IAlgorithm)
class RoundRobin:
    name = "roundrobin"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._next = 0

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        count = len(self.backends)
        for _ in range(count):
            backend = self.backends[self._next]
            self._next = (self._next + 1) % count
            if backend in candidates:
                return backend
        raise ValueError("no candidate is one of this algorithm's backends")

"""
Round robin: each backend in turn, one request at a time.

Best for backends of equal capacity serving requests of similar cost.
Cost: O(1) per pick.
"""

from __future__ import annotations

from collections.abc import Sequence

from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


@implementer(IAlgorithm)
class RoundRobin:
    name = "roundrobin"

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._next = 0

    def pick(self, clientHost: str) -> Backend:
        backend = self.backends[self._next]
        self._next = (self._next + 1) % len(self.backends)
        return backend

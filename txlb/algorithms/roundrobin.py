"""
Round robin: each backend in turn, one request at a time; backends that are
down are skipped.

It is weighted round robin with every weight 1, whatever the backends'
weights: the seed's order, A, B, C, then again from A.

Best for backends of equal capacity serving requests of similar cost.
Cost: O(1) per pick when all backends are up, O(n) for n backends otherwise.
"""

from __future__ import annotations

from txlb.algorithms.weighted import WeightedRoundRobin
from txlb.backend import Backend


class RoundRobin(WeightedRoundRobin):
    name = "roundrobin"
    usesWeights = False

    @staticmethod
    def _share(backend: Backend) -> int:
        return 1

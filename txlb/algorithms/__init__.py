"""
The load-balancing algorithms, one module each, and the registry that
names them.

Each module holds one L{txlb.interfaces.IAlgorithm} provider, as HAProxy
keeps one C{lb_*.c} per algorithm; L{shadow} asks a second algorithm beside
the live one, and L{policyloader} loads algorithms from outside txlb.
L{algorithmNamed} is what C{--algo}, C{--shadow-algo}, the admin API and
C{txlb-replay} turn a name into.
"""

from __future__ import annotations

from functools import partial

from txlb.algorithms.ewma import PeakEWMA
from txlb.algorithms.iphash import IPHash
from txlb.algorithms.keyhash import DEFAULT_BALANCE_FACTOR, KeyHash
from txlb.algorithms.leastconn import LeastConnections
from txlb.algorithms.p2c import PowerOfTwoChoices
from txlb.algorithms.policyloader import MakeAlgorithm, findAlgorithm
from txlb.algorithms.roundrobin import RoundRobin
from txlb.algorithms.swrr import SmoothWeightedRoundRobin
from txlb.algorithms.weighted import WeightedRoundRobin

#: The built-in algorithms, by their C{--algo} name.
ALGORITHMS: dict[str, MakeAlgorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        RoundRobin,
        WeightedRoundRobin,
        LeastConnections,
        IPHash,
        SmoothWeightedRoundRobin,
        PowerOfTwoChoices,
        PeakEWMA,
        KeyHash,
    )
}


def algorithmNamed(
    spec: str, hashKey: str = "ip", balanceFactor: float = DEFAULT_BALANCE_FACTOR
) -> MakeAlgorithm:
    """
    What makes the algorithm C{spec} names: one of L{ALGORITHMS} (C{hash}
    with C{hashKey} and C{balanceFactor}), a name an installed package
    offers, or C{package.module:Name}.

    @raise ValueError: With one line, if C{spec} names none.
    """
    if spec == KeyHash.name:
        return partial(KeyHash, key=hashKey, balanceFactor=balanceFactor)
    return findAlgorithm(spec, ALGORITHMS)

"""
Power of two choices (Mitzenmacher; Envoy's least request, nginx's
C{random two least_conn}, HAProxy's C{random(2)}): draw two different
candidates at random and send the request to the less loaded of them.

The load of a backend is its requests in flight, plus one, divided by its
capacity: its weight, times the share it reports free in the load header
(L{txlb.backend.Backend.capacity}).  So a backend of weight 2 takes about
twice the requests in flight of one of weight 1, and a backend reporting 0.9
load about a tenth of its share.  Ties go to the first one drawn.

Two draws instead of a scan of every backend: the busiest backend never
gets a new request while it is the busiest, and balancers (or processes)
that do not share counts do not all pile onto the same least-loaded backend
at once.  The randomness is a C{random.Random}, injected for tests.

Cost: two random draws and two loads per pick.  State: the random
generator, per process.

Best for backends of equal or weighted capacity whose requests vary in
cost, the general-purpose default (Envoy's, and HAProxy's since 3.3).
"""

from __future__ import annotations

import random as _random
from collections.abc import Sequence
from typing import Any

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


def drawTwo(generator: _random.Random, candidates: Sequence[Backend]) -> tuple[Backend, Backend]:
    """
    Two different candidates drawn at random (at least two are given).
    Only C{randrange} is used, whose sequence for a seed is the same on
    every Python since 3.2.
    """
    count = len(candidates)
    first = generator.randrange(count)
    second = generator.randrange(count - 1)
    if second >= first:
        second += 1
    return candidates[first], candidates[second]


@implementer(IAlgorithm)
class PowerOfTwoChoices:
    name = "p2c"
    usesWeights = True

    def __init__(
        self,
        backends: Sequence[Backend],
        random: _random.Random | None = None,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.backends = tuple(backends)
        self._random = random or _random.Random()
        self._clock = reactor

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        if len(candidates) == 1:
            return candidates[0]
        one, other = drawTwo(self._random, candidates)
        now = self._clock.seconds()
        if (other.active + 1) / other.capacity(now) < (one.active + 1) / one.capacity(now):
            return other
        return one

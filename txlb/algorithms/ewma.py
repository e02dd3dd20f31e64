"""
Peak EWMA (Finagle, Linkerd): send each request to the backend expected to
answer soonest, judged by its recent latency times its requests in flight.

For each backend it keeps a moving average of the time to its response
heads that jumps up at once to a slower answer (the peak) and comes down
gradually, by time rather than by count: a sample C{dt} seconds after the
last one weighs C{1 - exp(-dt / DECAY)}.  Read at a later time, the average
fades towards 0 the same way, so a backend that gets no traffic (because it
was slow) looks fast again after a few times L{DECAY} and is retried.

A backend's cost is that latency times (in flight + 1), divided by its
capacity (weight times the share it reports free in the load header).  A
backend with no answer yet costs 0 while idle, and more than any measured
one while it has a request in flight, so a new backend takes one request at
a time until it has a latency.  Two candidates are drawn at random and the
cheaper one wins, as in C{p2c}.

A backend that turns slow loses traffic at its first slow answer; one that
recovers wins it back over about L{DECAY} seconds.

Cost: two random draws, two costs (one C{exp} each) per pick, and one
C{exp} per response.  State: a latency and its time per backend, per
process, started again when the backends change.

Best for backends whose speed differs or changes (a noisy neighbour, a
garbage-collection pause, a cold cache), where tail latency matters.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Sequence
from typing import Any

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.algorithms.p2c import drawTwo
from txlb.backend import Backend
from txlb.interfaces import IAlgorithm, IResponseObserver

#: Seconds in which the latency average forgets 1 - 1/e of the past
#: (Finagle's and Linkerd's default).
DECAY = 10.0

#: The cost of a backend with no latency yet and a request in flight.
PENALTY = 1e6


@implementer(IAlgorithm, IResponseObserver)
class PeakEWMA:
    name = "ewma"
    usesWeights = True

    def __init__(
        self,
        backends: Sequence[Backend],
        random: _random.Random | None = None,
        reactor: Any = None,
        decay: float = DECAY,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.backends = tuple(backends)
        self._random = random or _random.Random()
        self._clock = reactor
        self._decay = decay
        #: Per backend: the latency in seconds, and when it was measured.
        self._latency = {backend: [0.0, 0.0] for backend in self.backends}

    def latency(self, backend: Backend, now: float) -> float:
        """
        The latency of C{backend} as it stands at C{now}, in seconds.
        """
        value, measured = self._latency[backend]
        return value * math.exp((measured - now) / self._decay)

    def cost(self, backend: Backend, now: float) -> float:
        """
        How long C{backend} is expected to take, relative to the others.
        """
        latency = self.latency(backend, now)
        if latency == 0 and backend.active:
            return PENALTY + backend.active
        return latency * (backend.active + 1) / backend.capacity(now)

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        if len(candidates) == 1:
            return candidates[0]
        one, other = drawTwo(self._random, candidates)
        now = self._clock.seconds()
        return other if self.cost(other, now) < self.cost(one, now) else one

    def answered(self, backend: Backend, seconds: float) -> None:
        state = self._latency.get(backend)
        if state is None:
            # Removed since the request was sent.
            return
        now = self._clock.seconds()
        value, measured = state
        if seconds > value:
            state[0] = seconds
        else:
            kept = math.exp((measured - now) / self._decay)
            state[0] = value * kept + seconds * (1 - kept)
        state[1] = now

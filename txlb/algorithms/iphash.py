"""
IP hash: the same client IP always reaches the same backend while it is up.

It uses rendezvous (highest-random-weight) hashing: every backend gets a
score from a hash of the client IP and the backend's address, and the highest
score among the backends that are up wins.  The hash is BLAKE2b, not Python's
salted C{hash()}, so a client lands on the same backend in every process and
after every restart.  A pick depends only on the client IP and each
candidate's address (host in lower case) and weight: not on the order the
backends are listed in, nor on the process, its start time or
C{PYTHONHASHSEED}.  So several txlb over the same backends agree, which
C{tests/test_agreement.py} checks with three real processes.  When one of n
backends is removed or down, only the clients it had move (each to its own
next best), and they come back when it recovers; everybody else stays where
they were.  Weights bias the scores
(C{-weight / ln(u)}, the weighted form of rendezvous hashing), so a backend of
weight 2 gets about twice the clients of one of weight 1.

Cost: n hashes per pick for n backends.

Best for stateful backends where a client must keep reaching the same server
(sessions held in memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from hashlib import blake2b

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm


def clientHost(request: IRequest) -> str:
    """
    The IP address of the client that sent C{request} (the real client's
    under the PROXY protocol), or C{""} on a UNIX socket.
    """
    return getattr(request.getClientAddress(), "host", "")


def score(key: str | bytes, backend: Backend) -> float:
    """
    The rendezvous score of C{backend} for C{key}: higher wins.  It depends
    on the key, the backend's address (in lower case) and its weight only.
    """
    if isinstance(key, str):
        key = key.encode()
    # Lower case: API.internal and api.internal are the same backend.
    digest = blake2b(key + b" " + backend.address.lower().encode(), digest_size=8)
    # A uniform number in the open interval (0, 1).
    unit = (int.from_bytes(digest.digest(), "big") + 1) / (2**64 + 1)
    return -backend.weight / math.log(unit)


@implementer(IAlgorithm)
class IPHash:
    name = "iphash"
    usesWeights = True

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        host = clientHost(request)
        return max(candidates, key=lambda backend: score(host, backend))

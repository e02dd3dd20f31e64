"""
Consistent hashing on a key taken from the request (C{--hash-key}), with
bounded loads.

The key is the client IP (C{ip}), the path without the query (C{path}), the
whole request-target (C{uri}), or the value of a header (C{header:NAME},
repeated fields joined with C{", "}), a cookie (C{cookie:NAME}) or a query
parameter (C{query:NAME}, its first value, undecoded).  A request without
the key, or with it empty, goes round robin.

Backends are ranked for a key by rendezvous hashing, as C{iphash} does
(BLAKE2b of the key and the backend's address, biased by weight): the
ranking depends on the key, the addresses and the weights only, never on
the order of the backends, the process or the time it started, so every
txlb process sends a key to the same backend.  C{--hash-key ip} without
bounded loads picks exactly as C{iphash}.

Bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2016; HAProxy's
C{hash-balance-factor}): a backend takes the request only if its requests
in flight stay within C{balanceFactor} times its fair share of those of all
candidates, this one included: C{active < ceil(factor * (total + 1) *
weight / total weight)}.  Otherwise the request walks down the key's
ranking to the first backend under its bound; one always is, since the
bounds add up to more than the total.  A hot key so spills over onto its
next choices instead of overloading its first, and comes back as the load
falls.  A factor of 0 turns the bound off.

Cost: one hash per candidate per pick, and a sort of the candidates when
the first choice is full.  State: the round-robin cursor for requests
without a key, per process.

Best for caches and sharded state where a key should keep reaching the same
backend, with skewed keys that must not overload one backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from urllib.parse import parse_qs

from twisted.web.iweb import IRequest
from zope.interface import implementer

from txlb.algorithms.iphash import clientHost, score
from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend
from txlb.interfaces import IAlgorithm

#: The kinds of key C{--hash-key} takes, and whether each needs a name.
KINDS = {"ip": False, "path": False, "uri": False, "header": True, "cookie": True, "query": True}

#: HAProxy's suggested hash-balance-factor, and the issue's target.
DEFAULT_BALANCE_FACTOR = 1.25


def parseKey(text: str) -> tuple[str, str]:
    """
    Parse C{--hash-key}: C{ip}, C{path}, C{uri} or C{header:NAME},
    C{cookie:NAME}, C{query:NAME}, as C{(kind, name)}.

    @raise ValueError: With a one-line reason.
    """
    kind, colon, name = text.partition(":")
    if kind not in KINDS:
        raise ValueError(
            f"{text!r}: the key is one of ip, path, uri, header:NAME, cookie:NAME or query:NAME"
        )
    if KINDS[kind] != bool(name) or (colon and not name):
        usage = f"{kind}:NAME" if KINDS[kind] else kind
        raise ValueError(f"{text!r}: expected {usage}")
    if not name.isascii() or not name.isprintable() or " " in name:
        raise ValueError(f"{text!r}: the name must be printable ASCII without spaces")
    return kind, name


def requestKey(request: IRequest, kind: str, name: str) -> bytes | None:
    """
    The key of C{request}, or C{None} if it has none (or an empty one).
    """
    if kind == "ip":
        key: bytes | None = clientHost(request).encode()
    elif kind == "uri":
        key = request.uri
    elif kind == "path":
        key = request.uri.partition(b"?")[0]
    elif kind == "header":
        values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
        key = None if values is None else b", ".join(values)
    elif kind == "cookie":
        key = request.getCookie(name.encode("ascii"))
    else:
        query = request.uri.partition(b"?")[2]
        key = parse_qs(query, keep_blank_values=True).get(name.encode("ascii"), [None])[0]
    return key or None


@implementer(IAlgorithm)
class KeyHash:
    name = "hash"
    usesWeights = True

    def __init__(
        self,
        backends: Sequence[Backend],
        key: str = "ip",
        balanceFactor: float = DEFAULT_BALANCE_FACTOR,
    ) -> None:
        self.backends = tuple(backends)
        self.kind, self.keyName = parseKey(key)
        self.balanceFactor = balanceFactor
        self._factor = Fraction(str(balanceFactor)).as_integer_ratio()
        self._roundRobin = RoundRobin(self.backends)

    def pick(self, request: IRequest, candidates: Sequence[Backend]) -> Backend:
        key = requestKey(request, self.kind, self.keyName)
        if key is None:
            return self._roundRobin.pick(request, candidates)
        ranked = [(score(key, backend), backend) for backend in candidates]
        first = max(ranked, key=_byScore)[1]
        if not self.balanceFactor or len(ranked) == 1:
            return first
        # In whole numbers, exactly: active < ceil(factor * total * weight
        # / weights).
        numerator, denominator = self._factor
        total = (sum(backend.active for backend in candidates) + 1) * numerator
        weights = sum(backend.weight for backend in candidates) * denominator

        def fits(backend: Backend) -> bool:
            return backend.active < -(-total * backend.weight // weights)

        if fits(first):
            return first
        ranked.sort(key=_byScore, reverse=True)
        return next(backend for _, backend in ranked if fits(backend))


def _byScore(ranked: tuple[float, Backend]) -> float:
    return ranked[0]

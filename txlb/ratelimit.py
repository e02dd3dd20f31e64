"""
Rate limits (C{--rate-limit}): a token bucket per key, a request over it
answered 429 with C{Retry-After}.

A bucket holds at most C{burst} tokens and gains C{rate} of them a second;
each request takes one, and a request that finds none is refused, without
taking one, and told to come back when there will be one: C{Retry-After}
is C{ceil((1 - tokens) / rate)} seconds, at least 1.  A key seen for the
first time (or forgotten) starts with a full bucket.  So over any time
C{T}, a key gets at most C{burst + rate * T} requests through, and a
client sending steadily below C{rate} is never refused (Envoy's local rate
limit and Traefik's C{rateLimit}, which also answer 429; nginx's
C{limit_req} is the same bucket, counted as excess instead of tokens).

The key is the client's address (C{ip}, the PROXY protocol's when it is
used), a header's value (C{header:NAME}) or a cookie's (C{cookie:NAME}),
read as C{--hash-key} reads them (L{txlb.algorithms.keyhash.requestKey}).  A request
without the key, or with it empty, is not limited (as nginx's empty keys).

The buckets live in L{txlb.keytables.Buckets}: at most C{--rate-limit-keys}
of them, in memory allocated once, shared by every worker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

from twisted.web.iweb import IRequest

from txlb.algorithms.keyhash import parseKey, requestKey
from txlb.keytables import Buckets

#: The kinds of key C{--rate-limit-key} takes (C{--hash-key}'s others, the
#: path and the query, would give every path its own bucket).
KINDS = ("ip", "header", "cookie")

#: The units of a rate, in seconds.
UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}

#: How many keys have a bucket at most, by default (nginx's 1 MB zone holds
#: about 16,000; HAProxy's tables are sized by the user).
DEFAULT_KEYS = 100_000


class Rate(NamedTuple):
    """
    A rate: C{requests} per C{seconds}.
    """

    requests: int
    seconds: float

    @property
    def perSecond(self) -> float:
        return self.requests / self.seconds

    def __str__(self) -> str:
        unit = next(name for name, seconds in UNITS.items() if seconds == self.seconds)
        return f"{self.requests}/{unit}"


def parseRate(text: str) -> Rate:
    """
    Parse C{--rate-limit}: a whole number of requests per C{s}, C{min} or
    C{h}, as in C{100/s} or C{6000/min}.

    @raise ValueError: With a one-line reason.
    """
    count, slash, unit = text.partition("/")
    if not slash or unit not in UNITS or not count.isdigit() or not count.isascii():
        raise ValueError(f"{text!r} is not a rate like 100/s, 6000/min or 1000/h")
    if int(count) < 1:
        raise ValueError(f"{text!r}: the count must be at least 1")
    return Rate(int(count), UNITS[unit])


def parseRateKey(text: str) -> str:
    """
    Parse C{--rate-limit-key}: C{ip}, C{header:NAME} or C{cookie:NAME}.

    @raise ValueError: With a one-line reason.
    """
    if text.partition(":")[0] not in KINDS:
        raise ValueError(f"{text!r}: the key is one of ip, header:NAME or cookie:NAME")
    parseKey(text)
    return text


def defaultBurst(rate: Rate) -> int:
    """
    The burst when C{--rate-limit-burst} is not given: one second's worth
    of requests, at least 1 (a page's parallel requests should not be
    refused under C{100/s}).
    """
    return max(1, math.ceil(rate.perSecond))


class RateLimit:
    """
    One rate limit: its rate, its burst and its key, over buckets that
    several limits (one per route) and several workers may share.

    @ivar name: Told apart from other limits' keys in the shared buckets.
    """

    def __init__(
        self,
        buckets: Buckets,
        fingerprint: Callable[[bytes], int],
        rate: Rate,
        burst: int | None = None,
        key: str = "ip",
        name: bytes = b"",
    ) -> None:
        """
        @param fingerprint: L{txlb.keytables.Region.fingerprint} of the
            buckets' region.
        @param burst: The most tokens a bucket holds, the requests let
            through at once; L{defaultBurst} if C{None}.
        """
        self.rate = rate
        self.burst = defaultBurst(rate) if burst is None else burst
        self.key = key
        self.kind, self.keyName = parseKey(key)
        self.name = name
        self._perSecond = rate.perSecond
        self._buckets = buckets
        self._fingerprint = fingerprint
        self._prefix = name + b"\x00" if name else b""

    def check(self, request: IRequest) -> int:
        """
        Whether C{request} may go on; it takes a token if so.

        @return: 0 if it may, else the seconds the client should wait, for
            C{Retry-After}: whole, rounded up, at least 1.
        """
        key = requestKey(request, self.kind, self.keyName)
        if key is None:
            return 0
        return self.checkKey(key)

    def checkKey(self, key: bytes) -> int:
        """
        As L{check}, for the request whose key is C{key}.
        """
        wait = self._buckets.take(
            self._fingerprint(self._prefix + key), self._perSecond, self.burst
        )
        return math.ceil(wait) if wait else 0

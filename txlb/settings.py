"""
How the proxy treats backends and clients: L{ProxySettings}, made from the
options (L{txlb.tap.Options.settings}) and swapped whole on a reload.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from txlb import headers
from txlb.admission import DEFAULT_MAX_QUEUE, DEFAULT_QUEUE_TIMEOUT
from txlb.retrybudget import DEFAULT_PERCENT


@dataclass(frozen=True)
class ProxySettings:
    """
    How the proxy treats backends and clients; every timeout is finite.

    @ivar connectTimeout: Seconds to make a backend connection.
    @ivar responseTimeout: Seconds from sending a request to the response
        head.
    @ivar idleTimeout: Seconds without a byte either way while a response
        body is relayed.
    @ivar clientTimeout: Seconds a client may take to send a request head,
        or stay silent on a kept-alive connection.
    @ivar retries: How many more backends to try for one request.
    @ivar retryNonIdempotent: Whether a request the backend may have
        received is retried whatever its method.
    @ivar maxBodySize: The largest request body accepted, or C{None}.
    @ivar forwardedFor: Append the client to C{X-Forwarded-For} and set
        C{X-Forwarded-Proto} and C{X-Forwarded-Host}.
    @ivar forwarded: Append an RFC 7239 C{Forwarded} element.
    @ivar via: Append C{1.1 txlb} to C{Via}.
    @ivar accessLog: C{"text"} for the seed's line per request, C{"json"} for
        one JSON object per request.
    @ivar loadHeader: The response field a backend reports its load in
        (L{txlb.loadreport}), which the client never sees.
    @ivar maxConn: The most requests in flight on a backend without a limit
        of its own (0: none), or C{"auto"} for a limit each learns
        (L{txlb.admission}).
    @ivar maxQueue: The most requests waiting for a backend below its
        limit.
    @ivar queueTimeout: Seconds a request waits there at most.
    @ivar retryBudget: Retries in flight, in percent of the requests in
        flight (at least 3; L{txlb.retrybudget}).
    @ivar workers: The processes that share each limit (C{--workers}): each
        admits its share of a fixed C{maxConn}.
    @ivar loadField: C{loadHeader} lower-cased, derived.
    @ivar toClientDrop: The response fields the client never sees, derived.
    """

    connectTimeout: float = 5.0
    responseTimeout: float = 30.0
    idleTimeout: float = 60.0
    clientTimeout: float = 30.0
    retries: int = 2
    retryNonIdempotent: bool = False
    maxBodySize: int | None = None
    forwardedFor: bool = False
    forwarded: bool = False
    via: bool = False
    accessLog: str = "text"
    loadHeader: str = "X-Txlb-Load"
    maxConn: int | str = 0
    maxQueue: int = DEFAULT_MAX_QUEUE
    queueTimeout: float = DEFAULT_QUEUE_TIMEOUT
    retryBudget: float = DEFAULT_PERCENT
    workers: int = 1
    loadField: bytes = field(init=False, repr=False, compare=False)
    toClientDrop: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        loadField = self.loadHeader.lower().encode("ascii")
        object.__setattr__(self, "loadField", loadField)
        object.__setattr__(self, "toClientDrop", headers.dropToClient([loadField]))

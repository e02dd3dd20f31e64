"""
What the proxy needs of a client's request, whichever HTTP version carries
it: HTTP/1.x (L{txlb.server.TransparentRequest}) or HTTP/2
(L{txlb.http2.HTTP2Request}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.python.failure import Failure
from twisted.web import server

from txlb.flow import HIGH_WATER
from txlb.upload import StreamingBody


class Refused(NamedTuple):
    """
    How txlb refused the rest of a request it was forwarding: the proxy's
    exchange logs it when the connection is gone.

    @ivar code: The status answered.
    @ivar error: What was wrong.
    @ivar flag: The access-log flag.
    """

    code: int
    error: str
    flag: str


class Routing(NamedTuple):
    """
    Where a request goes, decided once (see L{txlb.routing}).

    @ivar match: The route it matched and what that route makes of it (a
        L{txlb.routes.Match}), or C{None} if no route did.
    @ivar pool: The pool (a L{txlb.proxy.LoadBalancerResource}) that
        forwards it, or C{None} if txlb answers it itself.
    @ivar mirror: The pool a copy of it goes to, or C{None}.
    """

    match: Any
    pool: Any
    mirror: Any = None


#: The routing of a request not routed (yet): no route, no pool.
UNROUTED = Routing(None, None)


def forwardTarget(request: server.Request) -> bytes:
    """
    The request-target C{request} goes to its backend with: the one it
    came with, unless its route rewrote it.
    """
    match = request.routing.match  # type: ignore[attr-defined]
    if match is not None and match.target is not None:
        target: bytes = match.target
        return target
    return request.uri


class ClientRequest(server.Request):
    """
    A request the proxy forwards: it adds nothing to the response the
    backend sent (no C{Server}, C{Date} or C{Content-Type} of Twisted's),
    and its body, if any, streams to the backend as it arrives.

    Each version's class also has C{writeHead(code, phrase, fields,
    length)}, which writes the response head from the backend's fields in
    their order, C{writeInterim(code, phrase, fields)}, which writes an
    interim (1xx) head, and C{abort()}, which cuts the response short so
    that one that cannot be finished does not pass for a whole one.

    @ivar stream: The L{StreamingBody} of a request with a body, else
        C{None}.
    """

    defaultContentType = None
    #: Response bytes queued in txlb above which reading from the backend
    #: pauses.
    highWater = HIGH_WATER
    stream: StreamingBody | None = None
    #: How txlb refused this request, once forwarded.
    refused: Refused | None = None
    #: Where it goes.
    routing = UNROUTED
    #: The largest body it may have: its pool's C{--max-body-size}.
    bodyLimit: int | None = None
    bodyBytes = 0
    #: Called with the reason if the client connection closes before the
    #: response is finished: what
    #: L{notifyFinish<twisted.web.http.Request.notifyFinish>}'s errback would
    #: be, without a L{Deferred<twisted.internet.defer.Deferred>} per request.
    #: The exchange relaying the response sets it.
    whenLost: Callable[[Failure], object] | None = None

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if self.whenLost is not None:
            self.whenLost(reason)

"""
What the proxy needs of a client's request, whichever HTTP version carries
it: HTTP/1.x (L{txlb.server.TransparentRequest}) or HTTP/2
(L{txlb.http2.HTTP2Request}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

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

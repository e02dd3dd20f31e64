"""
Every private Twisted API txlb uses, in one module, so that a Twisted
upgrade that changes one breaks one obvious test (C{tests/test_twisted.py}
pins each, on Twisted 25.5 under Debian's PyPy and 26.4 and 26.10 under
CPython), as Klein keeps its C{_*_compat.py} modules.

No other module of txlb touches a private name of Twisted's; they come here:

  - the health checks' connection factory: L{HTTP11ClientFactory} (private
    C{twisted.web.client._HTTP11ClientFactory}) and the pool's private
    C{_factory} that builds it (L{setConnectionFactory});
  - a log event whose text is formatted already: Twisted's flattened form
    (L{FLATTENED_LINE}, the key L{twisted.logger} flattens C{{line}} to),
    which every formatter uses instead of formatting C{log_format} again;
  - sending what a socket transport buffered now, at the end of the turn
    rather than after epoll says it is writable (L{txlb.writes}): the
    C{startWriting} that L{FileDescriptor.write} calls (taken by
    L{takeStartWriting}), its C{doWrite} and C{dataBuffer}
    (L{sendBuffered}).

txlb's own HTTP/1.1 server channel (L{txlb.server.ProxyChannel}) is no
Twisted channel: it uses none of C{HTTPChannel}'s private state.  What
Twisted's request asks of its channel, which is not documented, is pinned
too: L{REQUEST_USES_OF_CHANNEL}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.abstract import FileDescriptor
from twisted.web.client import HTTPConnectionPool
from twisted.web.client import _HTTP11ClientFactory as HTTP11ClientFactory

__all__ = [
    "FLATTENED_LINE",
    "REQUEST_USES_OF_CHANNEL",
    "HTTP11ClientFactory",
    "sendBuffered",
    "setConnectionFactory",
    "startWriting",
    "takeStartWriting",
]

#: The key under which L{twisted.logger} flattens the C{{line}} field of a
#: C{log_format} of C{"{line}"}: an event with C{log_flattened} set to
#: C{{FLATTENED_LINE: text}} is shown as C{text}, unformatted.
FLATTENED_LINE = "line!s:"

#: The attributes of its channel that L{twisted.web.server.Request} uses
#: (C{site} and C{factory} being the L{twisted.web.server.Site}), which a
#: channel of txlb's own provides.
REQUEST_USES_OF_CHANNEL = frozenset(
    {
        "factory",
        "getHost",
        "getPeer",
        "registerProducer",
        "requestDone",
        "site",
        "transport",
        "unregisterProducer",
        "write",
        "writeHeaders",
        "writeSequence",
    }
)


def setConnectionFactory(pool: HTTPConnectionPool, factory: type[HTTP11ClientFactory]) -> None:
    """
    Make C{pool} build its connections' factories with C{factory}, a
    subclass of L{HTTP11ClientFactory}.
    """
    pool._factory = factory


def takeStartWriting(transport: FileDescriptor, call: Callable[[], None]) -> None:
    """
    Have C{call} called, instead of the reactor being asked to watch the
    socket, when something is written to C{transport} (L{FileDescriptor.write}
    buffers it, then calls C{self.startWriting()}).
    """
    transport.startWriting = call  # type: ignore[method-assign]


def startWriting(transport: FileDescriptor) -> None:
    """
    Have the reactor watch C{transport}'s socket and send when it is
    writable, as L{FileDescriptor.write} would have.
    """
    FileDescriptor.startWriting(transport)


def sendBuffered(transport: Any) -> bool:
    """
    Send what C{transport} buffered, as the reactor does when its socket is
    writable.

    @return: Whether the reactor must still watch the socket: the socket did
        not take it all, or sending failed (the reactor's next C{doWrite}
        meets the error again, and closes the connection).
    """
    return transport.doWrite() is not None or bool(transport.dataBuffer)

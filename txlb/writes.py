"""
Writes sent at the end of the reactor's turn, without asking epoll first.

Twisted buffers what a protocol writes and registers the socket for
writability; on the next turn epoll says it is writable, Twisted sends, and
unregisters it.  That is two C{epoll_ctl} calls and a reactor dispatch per
write, though a socket with an empty buffer is almost always writable.  A
proxied request makes two writes (the request to the backend, the response
to the client), so four C{epoll_ctl} calls: on this project's benchmark
machine a fifth of a lean relay's time.

L{WriteBatcher} sends instead at the start of the next turn (one
C{callLater(0)} shared by every connection written to in this turn), through
the transport's own C{doWrite}: everything written in one turn still leaves
in one C{send}, in order, and Twisted's buffer, producers and limits work as
before.  Only when the socket does not take it all, or the connection is
closing, is the socket registered as Twisted would have done.  A connection
on which a whole message was written (a response, a request) is sent at
once instead (L{WriteBatcher.send}): nothing more is due on it in this
turn, and the message leaves before the turn's bookkeeping.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.logger import Logger

from txlb import _twisted


class WriteBatcher:
    """
    Sends the writes of adopted connections once per reactor turn.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        # A dict, as an ordered set.
        self._pending: dict[FileDescriptor, None] = {}
        self._call: Any = None

    def adopt(self, transport: object) -> None:
        """
        Send C{transport}'s writes at the end of the turn, if it is a socket
        of Twisted's own (TCP or UNIX, not TLS or an in-memory transport).
        """
        if isinstance(transport, FileDescriptor):
            # FileDescriptor.write calls self.startWriting() after
            # buffering: the instance attribute takes that call.
            _twisted.takeStartWriting(transport, lambda: self._schedule(transport))

    def _schedule(self, transport: FileDescriptor) -> None:
        self._pending[transport] = None
        if self._call is None:
            self._call = self._reactor.callLater(0, self._flush)

    def send(self, transport: Any) -> None:
        """
        Send what C{transport} has waiting now, not at the end of the turn:
        a whole message was written to it (a response finished, a request
        sent), so nothing more is due on it this turn, and the message need
        not wait for the rest of the turn's work (an access-log line, the
        metrics).
        """
        pending = self._pending
        if transport in pending:
            del pending[transport]
            self._write(transport)
            if not pending and self._call is not None:
                # Made this turn, cancelled before the reactor looks at it:
                # no turn is spent on it.
                self._call.cancel()
                self._call = None

    def _flush(self) -> None:
        pending, self._pending, self._call = self._pending, {}, None
        for transport in pending:
            self._write(transport)

    def _write(self, transport: FileDescriptor) -> None:
        if transport.disconnected:
            return
        if transport.disconnecting or not transport.connected:
            # Let the reactor close it as it would have.
            _twisted.startWriting(transport)
            return
        try:
            more = _twisted.sendBuffered(transport)
        except Exception:
            self._log.failure("Sending on {transport}", transport=transport)
            more = True
        if more:
            # An error (the reactor's next doWrite finds it again and
            # closes the connection), or more than the socket took: wait
            # for the socket, as Twisted does.
            _twisted.startWriting(transport)

"""
Request bodies streamed to the backend as they arrive, and to a mirror
beside it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from txlb.flow import Valve

#: Request body bytes kept so that a retry can send the body again.
REPLAY_LIMIT = 1024 * 1024


class BodyCopy(Protocol):
    """
    Where a copy of a request body goes as it arrives (a mirror's, see
    L{txlb.mirror}): it takes every chunk at once and can hold nothing
    back.
    """

    def received(self, data: bytes) -> None:
        """
        Another chunk of the body arrived.
        """

    def finished(self, trailers: Sequence[tuple[bytes, bytes]]) -> None:
        """
        The whole body has arrived; C{trailers} are the trailer fields to
        send after it, if it goes chunked.
        """

    def abandoned(self) -> None:
        """
        The body will not arrive whole: the client's request ended before
        it did.
        """


class BodyProducer:
    """
    The L{IBodyProducer} half of a body passed on as it arrives, to the
    connection that sends it (a backend's, or a mirror's): that connection
    starts it, pauses and resumes it, and stops it when it is gone.  A
    subclass keeps what waits, and writes it in L{_flush} while a consumer
    is set and not paused, firing C{_done} once all of it was written.
    """

    def __init__(self) -> None:
        self._consumer: Any = None
        self._done: Deferred[None] | None = None
        self._paused = False

    def _flush(self) -> None:
        raise NotImplementedError()

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self._consumer = consumer
        self._done = done = Deferred[None]()
        self._flush()
        return done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        # The connection is gone (the attempt or the copy is over, and
        # fails by itself): the Deferred it got must never fire.
        self._consumer = self._done = None


@implementer(IBodyProducer)
class StreamingBody(BodyProducer):
    """
    A client's request body, sent to the backend as it arrives.

    Chunks wait here while the backend connection is being made, or while
    the backend cannot take more; a L{Valve} pauses reading from the client
    while too many wait.  The first
    L{REPLAY_LIMIT} bytes are also kept, so that a retry can send the body
    again from its start; past that, only a request of which the backend got
    nothing can be retried.

    @ivar started: Whether the request has been handed to the resource.
    @ivar complete: Whether the whole body has arrived.
    @ivar trailers: The trailer fields to send after the body, when it is
        sent chunked (it has no length); set before it is complete.
    @ivar whenSent: Called when the whole body has been sent to the backend
        of the current attempt.
    @ivar copy: Where a copy of the body goes as it arrives (a mirror's), or
        C{None}.  It is given each chunk as the client sends it, whatever
        the backend takes, and never holds the client back: the flow
        control here is the backend's alone.
    """

    whenSent: Callable[[], None] | None = None
    copy: BodyCopy | None = None

    def __init__(self, length: int | None, client: Any) -> None:
        super().__init__()
        self.length = UNKNOWN_LENGTH if length is None else length
        self.trailers: list[tuple[bytes, bytes]] = []
        self.started = False
        self.complete = False
        self._kept: list[bytes] | None = []
        self._keptBytes = 0
        self._waiting: deque[bytes] = deque()
        self._valve = Valve(producer=client)
        self._sent = 0
        self._discarding = False

    def received(self, data: bytes) -> None:
        """
        Another chunk of the body arrived from the client.
        """
        if self._discarding:
            return
        if self.copy is not None:
            self.copy.received(data)
        if self._kept is not None:
            if self._keptBytes + len(data) <= REPLAY_LIMIT:
                self._kept.append(data)
                self._keptBytes += len(data)
            else:
                self._kept = None
        self._waiting.append(data)
        self._valve.fill(len(data))
        self._flush()
        self._valve.pauseIfFull()

    def finished(self) -> None:
        """
        The whole body has arrived.
        """
        self.complete = True
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.finished(self.trailers)
        self._flush()

    @property
    def discarding(self) -> bool:
        """
        Whether the rest of the body is being thrown away (L{discard}).
        """
        return self._discarding

    def discard(self) -> None:
        """
        The exchange is over, or its answer is: drop the rest of the body as
        it arrives, without holding the client back.  A backend still taking
        the body has answered already; its connection is closed, as it can
        serve nothing else before the body ends.  A copy of the body is
        abandoned: it cannot be whole either.
        """
        if self.complete:
            return
        self._discarding = True
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.abandoned()
        if self._consumer is not None:
            self._consumer.transport.abortConnection()
            self._consumer = self._done = None
        self._waiting.clear()
        self._valve.empty()
        self._kept = None
        self._flush()

    def canRestart(self) -> bool:
        """
        Whether the body can be sent again from its start.
        """
        return self._kept is not None or self._sent == 0

    def restart(self) -> None:
        """
        Send from the start again, to another backend.
        """
        if self._sent:
            assert self._kept is not None
            self._waiting = deque(self._kept)
            self._valve.waiting = self._keptBytes
        self._sent = 0
        self._paused = False

    def _flush(self) -> None:
        """
        Write what waits to the backend, as far as it takes it; let the
        client send again once little waits.
        """
        sent = 0
        while self._consumer is not None and not self._paused and self._waiting:
            data = self._waiting.popleft()
            sent += len(data)
            self._consumer.write(data)
        if sent:
            self._sent += sent
            self._valve.drain(sent)
        if self.complete and not self._waiting and self._done is not None:
            done, self._done, self._consumer = self._done, None, None
            done.callback(None)
            if self.whenSent is not None:
                self.whenSent()

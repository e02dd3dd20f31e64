"""
How a request ended: its L{Outcome} for the access log, the metrics and the
backend's counts, the termination flags, and the plain-text answers txlb
gives when no backend answer can be relayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web import http

from txlb import tls
from txlb.backend import Backend

#: The termination flags of the access log, in the spirit of Envoy's
#: response flags: normal, backend connection failure, backend timeout, no
#: healthy backend, backend reset, backend protocol error (a malformed
#: response), client disconnected, client protocol error (a request that
#: broke HTTP/1.1's syntax or framing, or the head's size limits), rate
#: limited (429, C{--rate-limit}), no route (404: no route matched, and
#: there is no C{default} pool), queue full and queue time-out (503,
#: every backend at its C{--max-conn}; L{txlb.admission}).
(
    NORMAL,
    CONNECT_FAILURE,
    TIMEOUT,
    NO_HEALTHY,
    RESET,
    PROTOCOL_ERROR,
    CLIENT_GONE,
    CLIENT_PROTOCOL_ERROR,
    RATE_LIMITED,
    NO_ROUTE,
    QUEUE_FULL,
    QUEUE_TIMEOUT,
) = ("-", "UF", "UT", "UH", "UR", "UPE", "DC", "DPE", "RL", "NR", "QF", "QT")

#: The flags that blame the backend.
_BACKEND_FLAGS = frozenset({CONNECT_FAILURE, TIMEOUT, RESET, NO_HEALTHY, PROTOCOL_ERROR})


@dataclass
class Outcome:
    """
    How a request ended, for the access log, the backend's counts and the
    metrics.

    @ivar backend: The backend that had the request last, or C{None}.
    @ivar status: The status sent to the client, or C{None} if none was.
    @ivar flag: What ended it (see L{NORMAL} and the flags after it).
    @ivar connected: When the last backend connection was made, or C{None}
        if a pooled one was reused (or none was made).
    @ivar firstByte: When the backend's response head arrived, or C{None}.
    @ivar queued: Seconds the request waited in the queue for a backend
        below its limit, or C{None} if it never waited there.
    """

    request: Any
    clientHost: str
    backend: Backend | None
    status: int | None
    started: float
    error: str | None = None
    level: LogLevel = LogLevel.info
    flag: str = NORMAL
    retries: int = 0
    connected: float | None = None
    firstByte: float | None = None
    queued: float | None = None

    @property
    def backendError(self) -> str | None:
        """
        What the backend did wrong, if anything: a flag of its own, or a
        5xx.
        """
        if self.flag in _BACKEND_FLAGS:
            return self.error
        if self.status is not None and self.status >= 500:
            return self.error or f"status {self.status}"
        return None


#: Status codes txlb answers with that Twisted has no reason phrase for.
TOO_MANY_REQUESTS = 429
_PHRASES = {TOO_MANY_REQUESTS: b"Too Many Requests"}


def answer(request: Any, code: int, text: str) -> None:
    """
    Answer C{request} with a short plain-text error of txlb's own.
    """
    phrase = http.RESPONSES.get(code) or _PHRASES[code]
    body = f"{code} {phrase.decode()}: {text}\n".encode()
    request.setResponseCode(code, phrase)
    request.responseHeaders.setRawHeaders(b"Date", [http.datetimeToString()])
    request.responseHeaders.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
    request.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
    request.write(body)
    request.finish()


def describe(failure: Failure) -> str:
    """
    A short description of why talking to a backend failed.
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return describe(reasons[0])
    return tls.failureReason(failure) or failure.getErrorMessage() or repr(failure.value)

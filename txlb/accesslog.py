"""
The access log: L{AccessLog} formats one line per request, text or JSON,
for twistd's log or for a file of its own.

That file (C{--access-log-file}, L{AccessLogFile}) is written the way
nginx (C{access_log ... buffer= flush=}) and Envoy (a flush interval) write
theirs: lines are buffered and written at most every L{FLUSH_INTERVAL}
seconds, or as soon as L{BUFFER_SIZE} bytes wait.

Through twistd's log, each line costs a formatted timestamp, a formatted
event and an unbuffered C{write()}: more than the rest of relaying a small
request.  Here the timestamp is formatted once a second and one C{write()}
carries many lines.  The file is opened for appending and reopened by
L{AccessLogFile.reopen} (on SIGHUP), so logrotate can move it away.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, BinaryIO

from twisted.logger import Logger, LogLevel

from txlb import _twisted
from txlb.outcome import Outcome

#: Seconds a line may wait in memory before it is written.
FLUSH_INTERVAL = 1.0
#: Bytes of lines that make a write happen at once.
BUFFER_SIZE = 64 * 1024


class AccessLogFile:
    """
    An access-log file, written in batches.

    @ivar path: The file's path.
    """

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self._reactor = reactor
        self._file: BinaryIO = open(path, "ab", buffering=0)
        self._lines: list[bytes] = []
        self._size = 0
        self._flushing: Any = None
        self._second = -1
        self._stamp = ""

    def timestamp(self) -> str:
        """
        The current time as twistd's log shows it (local time, ISO 8601),
        formatted again only when the second changes.
        """
        now = self._reactor.seconds()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
        return self._stamp

    def write(self, line: str) -> None:
        """
        Add C{line} (without its end) to the file, soon.
        """
        data = line.encode("utf-8", "backslashreplace") + b"\n"
        self._lines.append(data)
        self._size += len(data)
        if self._size >= BUFFER_SIZE:
            self.flush()
        elif self._flushing is None:
            self._flushing = self._reactor.callLater(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """
        Write the lines waiting, in one C{write()}.
        """
        if self._flushing is not None:
            if self._flushing.active():
                self._flushing.cancel()
            self._flushing = None
        if self._lines:
            data = memoryview(b"".join(self._lines))
            self._lines, self._size = [], 0
            while data:
                data = data[self._file.write(data) :]

    def reopen(self) -> None:
        """
        Write what waits, then open the path again: after logrotate has
        moved the file, new lines go to a new one.
        """
        self.flush()
        self._file.close()
        self._file = open(self.path, "ab", buffering=0)

    def close(self) -> None:
        """
        Write what waits and close the file.
        """
        self.flush()
        self._file.close()


class AccessLog:
    """
    The access log: one line per request, text (the seed's line) or JSON,
    to twistd's log, or to an L{AccessLogFile} when there is one (failures
    go to twistd's log too).

    @ivar file: The L{AccessLogFile} lines go to, or C{None} for twistd's
        log.
    """

    file: AccessLogFile | None = None
    #: Whether the site has routes: the text line names them then.
    routes = False

    def __init__(self, log: Logger) -> None:
        """
        @param log: The logger whose namespace and source the events carry.
        """
        self._log = log

    def record(
        self,
        outcome: Outcome,
        pool: str,
        address: str,
        status: str,
        seconds: float,
        asJSON: bool,
    ) -> None:
        """
        Log the line of a request that ended with C{outcome}, in C{pool}
        (C{-} for none) on C{address} (C{-} for none) with C{status} (C{-}
        for none), C{seconds} after it arrived.

        With routes, the text line also names the request's route (its
        name, or its place in the list; C{-} for none) and pool; JSON always
        does (C{null} for none).

        The line is formatted here, once, with an f-string; the event
        carries it pre-formatted (as a flattened event, so no observer runs
        C{string.Formatter} on it) beside every field, for JSON and other
        structured observers.
        """
        request = outcome.request
        method = _text(getattr(request, "method", None))
        target = _text(getattr(request, "uri", None))
        file = self.file
        # Failures go to the main log too, even with an access-log file.
        fileOnly = file is not None and outcome.level == LogLevel.info
        if not asJSON:
            line = (
                f"client={outcome.clientHost} method={method} path={target} "
                f"\N{RIGHTWARDS ARROW} backend={address} status={status} ms={seconds * 1000:.1f}"
            )
            if outcome.queued is not None:
                # Only when it waited: the seed's line stays as it was.
                line += f" queued={outcome.queued * 1000:.1f}ms"
            if self.routes:
                line += f" route={_routeLabel(request) or '-'} pool={pool}"
            if outcome.error is not None:
                line += f' error="{outcome.error}"'
            if file is not None:
                file.write(f"{file.timestamp()} {line}")
                if fileOnly:
                    # The fields are for the event, which is not needed.
                    return
        fields = {
            "client": outcome.clientHost,
            "method": method,
            "target": target,
            "backend": address,
            "status": outcome.status,
            "bytesIn": getattr(request, "bodyBytes", 0),
            "bytesOut": getattr(request, "sentLength", 0),
            "connectMs": _milliseconds(outcome.connected, outcome.started),
            "firstByteMs": _milliseconds(outcome.firstByte, outcome.started),
            "totalMs": _tenths(seconds * 1000),
            "queueMs": None if outcome.queued is None else _tenths(outcome.queued * 1000),
            "retries": outcome.retries,
            "flag": outcome.flag,
            "error": outcome.error,
            "route": _routeLabel(request),
            "pool": None if pool == "-" else pool,
        }
        if asJSON:
            line = json.dumps(fields)
            if file is not None:
                file.write(json.dumps({"time": file.timestamp(), **fields}))
                if fileOnly:
                    return
        # Logger.emit, without its check of the level (it iterates every
        # LogLevel), and with the line pre-formatted as a flattened event, so
        # no observer runs string.Formatter on it.
        log = self._log
        fields.update(
            line=line,
            log_flattened={_twisted.FLATTENED_LINE: line},
            log_format="{line}",
            log_level=outcome.level,
            log_logger=log,
            log_namespace=log.namespace,
            log_source=log.source,
            log_time=time.time(),
        )
        log.observer(fields)


def _routeLabel(request: Any) -> str | None:
    """
    The label of the route C{request} took, or C{None}.
    """
    match = getattr(request, "routing", None)
    match = None if match is None else match.match
    return None if match is None else match.route.label


#: A text line as L{AccessLog.record} writes it, after its time, for those
#: who read the log (C{txlb-replay}): the client, method, target, backend,
#: status, total milliseconds, the route and pool when there are routes,
#: and the error in quotes when there was one.
TEXT_LINE = re.compile(
    r"client=(?P<client>\S*) method=(?P<method>\S+) path=(?P<target>.*?)"
    r" → backend=(?P<backend>\S+) status=(?P<status>\S+)"
    r" ms=(?P<ms>[0-9]+(?:\.[0-9]+)?)(?: queued=(?P<queued>[0-9]+(?:\.[0-9]+)?)ms)?"
    r"(?: route=(?P<route>\S+) pool=(?P<pool>\S+))?"
    r"(?: error=\".*\")?$"
)


def _text(value: bytes | str | None) -> str:
    """
    A request's method or target for the log; C{-} before it was read.
    """
    if not isinstance(value, bytes):
        return "-"
    return value.decode("ascii", "backslashreplace")


def _milliseconds(moment: float | None, started: float) -> float | None:
    return None if moment is None else _tenths((moment - started) * 1000)


def _tenths(value: float) -> float:
    """
    C{value}, not negative, to one decimal: C{round(value, 1)} is slow on
    PyPy.
    """
    return int(value * 10 + 0.5) / 10

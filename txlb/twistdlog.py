"""
twistd's own log (C{--logfile}, or standard output with C{-n}), written
once per reactor turn.

twistd's text observer writes each event as it comes: a timestamp formatted
through a C{datetime}, the event formatted through C{string.Formatter}, then
a C{write()} and a C{flush()}.  With one access-log line per request, that
was more than the rest of relaying a small request, and the C{write()} came
before the response left (see L{txlb.writes}).  L{TurnLog} writes exactly
the text twistd's observer writes, in the order the events come, but
gathers the lines of one reactor turn and writes them in one C{write()} at
the end of it (or at once past L{BUFFER_SIZE}); the timestamp is formatted
once a second, and an access-log line, which comes formatted already, is
not formatted again.  A line waits at most until the end of its turn: a
process killed loses the lines of the turn it was in, no more.

Lines are gathered only while the reactor runs, in its thread: before it
runs, after it stopped (twistd's last lines, C{Main loop terminated.}, come
then), and from any other thread, each event is written as it comes, after
whatever waits, so the order holds.

twistd makes its observer when it starts logging, from its application's
L{ILogObserver} component if it has one (L{twisted.application.app.AppLogger.start}):
L{twistdLog} makes a L{TurnLog} on the file twistd would have opened, for
the service to set as that component; when twistd is told to log elsewhere
(C{--logger}, C{--syslog}), it is left alone.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.compat import ioType
from twisted.python.logfile import LogFile
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

from txlb import _twisted

#: Characters of text waiting that make a write happen at once.
BUFFER_SIZE = 64 * 1024


@implementer(ILogObserver)
class TurnLog:
    """
    Writes log events to a file as twistd's text observer
    (L{twisted.logger.textFileLogObserver}) does, the events of one reactor
    turn in one C{write()}.

    @ivar file: The file written to: a L{LogFile}, or a text or binary
        stream.
    """

    def __init__(self, file: Any, reactor: Any) -> None:
        self.file = file
        self._reactor = reactor
        self._encode = ioType(file) is not str
        self._pending: list[str] = []
        self._size = 0
        self._flushing: Any = None
        # Events may come from other threads.
        self._lock = threading.Lock()
        self._second = -1
        self._stamp = ""
        reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def __call__(self, event: LogEvent) -> None:
        text = self.format(event)
        if not text:
            return
        with self._lock:
            self._pending.append(text)
            self._size += len(text)
            if self._size < BUFFER_SIZE and self._reactor.running and isInIOThread():
                if self._flushing is None:
                    self._flushing = self._reactor.callLater(0, self.flush)
                return
            self._write()

    def format(self, event: LogEvent) -> str | None:
        """
        The text of C{event}, as L{formatEventAsClassicLogText} makes it
        with twistd's time format.
        """
        flattened = event.get("log_flattened")
        if (
            flattened is not None
            and event.get("log_format") == "{line}"
            and "log_failure" not in event
            and "log_system" not in event
        ):
            # A line formatted already (txlb.accesslog): what Twisted's
            # formatter would make of it, without parsing "{line}" again.
            text = str(flattened[_twisted.FLATTENED_LINE])
            if not text:
                return None
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
            text = text.replace("\n", "\n\t")
            return f"{self.formatTime(event.get('log_time'))} [{system}] {text}\n"
        return formatEventAsClassicLogText(event, formatTime=self.formatTime)

    def formatTime(self, when: float | None) -> str:
        """
        C{when} as twistd's log shows it, formatted again only when the
        second changes.
        """
        if when is None:
            return formatTime(when)
        second = int(when)
        if when - second >= 0.9999995:
            # The datetime Twisted formats rounds to the microsecond: this
            # close to the next second, it shows that one.
            return formatTime(when, timeFormatRFC3339)
        if second != self._second:
            self._second, self._stamp = second, formatTime(second, timeFormatRFC3339)
        return self._stamp

    def flush(self) -> None:
        """
        Write the text waiting, in one C{write()}.
        """
        with self._lock:
            self._write()

    def _write(self) -> None:
        if self._flushing is not None:
            if self._flushing.active():
                self._flushing.cancel()
            self._flushing = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending, self._size = [], 0
        self.file.write(text.encode("utf-8") if self._encode else text)
        self.file.flush()

    def rotate(self) -> None:
        """
        Write the text waiting, then rotate the log file, as twistd does on
        SIGUSR1.
        """
        self.flush()
        self.file.rotate()


def twistdLog(options: Any, reactor: Any) -> TurnLog | None:
    """
    The L{TurnLog} for the log twistd would write, given its options
    (C{twistd}'s own, the parent of txlb's): its C{--logfile} (a
    L{LogFile}, rotated on SIGUSR1 as twistd does), or standard output with
    C{-n} and no C{--logfile}, as C{twisted.scripts._twistd_unix}'s
    C{UnixAppLogger} chooses.

    @return: C{None} if twistd logs elsewhere (C{--logger}, C{--syslog}),
        would refuse its options (a daemon logging to standard output), or
        txlb does not run under twistd.
    """
    if options is None or not hasattr(options, "get"):
        return None
    if options.get("logger") or options.get("syslog"):
        return None
    path = options.get("logfile") or ""
    nodaemon = options.get("nodaemon", False)
    if path == "-":
        if not nodaemon:
            return None
        return TurnLog(sys.stdout, reactor)
    if nodaemon and not path:
        return TurnLog(sys.stdout, reactor)
    observer = TurnLog(LogFile.fromFullPath(path or "twistd.log"), reactor)
    if not signal.getsignal(signal.SIGUSR1):

        def rotateLog(number: int, frame: object) -> None:
            reactor.callFromThread(observer.rotate)

        signal.signal(signal.SIGUSR1, rotateLog)
    return observer

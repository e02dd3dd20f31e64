"""
The access log as a file of its own (C{--access-log-file}), written the way
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

import time
from typing import Any, BinaryIO

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

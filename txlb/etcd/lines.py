"""
Newline-delimited messages out of a stream of chunks, in bounded memory.

etcd's watch stream is one JSON object per line, but HTTP chunks do not
follow lines: a chunk may hold several, or a piece of one.  A line longer
than the limit is an error rather than memory without end.
"""

from __future__ import annotations

from txlb.etcd.errors import MessageTooLongError


class LineBuffer:
    """
    Split chunks into lines (without their C{\\n} or C{\\r\\n}; empty
    lines are skipped).  Each byte is scanned once, however the lines are
    cut into chunks.
    """

    def __init__(self, maxLength: int) -> None:
        """
        @param maxLength: The longest line accepted, in bytes.
        """
        self.maxLength = maxLength
        self._pieces: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """
        The lines that C{chunk} completes.

        @raise MessageTooLongError: When a line grows past C{maxLength}.
        """
        lines = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            line = chunk[start:end]
            if self._pieces:
                self._pieces.append(line)
                line = b"".join(self._pieces)
                self._pieces = []
                self._size = 0
            self._check(len(line))
            line = line.rstrip(b"\r")
            if line:
                lines.append(line)
            start = end + 1
        if start < len(chunk):
            self._size += len(chunk) - start
            self._check(self._size)
            self._pieces.append(chunk[start:])
        return lines

    def rest(self) -> bytes:
        """
        What came after the last newline (etcd ends a stream with an error
        line that has none).
        """
        rest = b"".join(self._pieces).strip()
        self._pieces = []
        self._size = 0
        return rest

    def _check(self, length: int) -> None:
        if length > self.maxLength:
            raise MessageTooLongError(
                f"a message of more than {self.maxLength} bytes (the limit) in the watch stream"
            )

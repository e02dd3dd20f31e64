"""
Flow control, the same in every direction: bytes wait in txlb while the
receiving side cannot take more, and past a high mark of waiting bytes txlb
stops reading from the sending side until they are back under a quarter of
it.  A slow reader therefore holds about the high mark in memory, whatever
the size of the message.

One L{Valve} does this wherever bytes wait: a request body waiting for its
backend (L{txlb.upload}), a response waiting in the exchange's queue for
its client (L{txlb.exchange}), and a response waiting on an HTTP/2 stream
for its window (L{txlb.http2}).
"""

from __future__ import annotations

from typing import Any

#: Waiting bytes above which reading from the sender pauses (HTTP/1.x).
HIGH_WATER = 512 * 1024


class Valve:
    """
    Counts the bytes waiting between a producer and its consumer, and
    pauses the producer when C{high} or more wait, resuming it once no more
    than a quarter of that do.

    Bytes are counted (L{fill}) before they are passed on, since passing
    them on may send them at once (L{drain}); whether the producer must
    pause is asked after (L{pauseIfFull}), of what still waits then.

    @ivar high: The high mark, in bytes.
    @ivar low: The low mark: a quarter of C{high}.
    @ivar waiting: The bytes waiting now.
    @ivar paused: Whether this valve has paused the producer.
    @ivar producer: The producer to pause and resume, or C{None} while there
        is none (the valve still counts).
    """

    __slots__ = ("high", "low", "paused", "producer", "waiting")

    def __init__(self, high: int = HIGH_WATER, producer: Any = None) -> None:
        self.high = high
        self.low = high // 4
        self.waiting = 0
        self.paused = False
        self.producer = producer

    def fill(self, size: int) -> None:
        """
        C{size} more bytes wait.
        """
        self.waiting += size

    def pauseIfFull(self) -> None:
        """
        Pause the producer if too much waits.
        """
        if self.waiting >= self.high and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def drain(self, size: int) -> None:
        """
        C{size} bytes went on: resume the producer if it was paused and
        little waits now.
        """
        self.waiting -= size
        if self.paused and self.waiting <= self.low:
            self.paused = False
            if self.producer is not None:
                self.producer.resumeProducing()

    def empty(self) -> None:
        """
        Nothing waits any more (it was dropped): resume the producer if it
        was paused.
        """
        self.drain(self.waiting)

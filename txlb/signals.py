"""
The signals a txlb process stops and reloads on, the same for a balancer
and for the supervisor of C{--workers}: the first SIGTERM or SIGINT stops
gracefully (the reactor stops, which stops the services and lets them
drain), a second one cuts what is still in flight, and SIGHUP reloads.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

#: The signals that stop a process gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Signals:
    """
    A process's handlers of SIGTERM, SIGINT and SIGHUP.

    @ivar stopping: Whether a stop signal has come.
    """

    def __init__(
        self,
        reactor: Any,
        log: Logger,
        stop: str,
        again: str,
        cut: Callable[[], object],
        reload: Callable[[], object],
        stops: tuple[signal.Signals, ...] = STOP_SIGNALS,
    ) -> None:
        """
        @param stop: What the log says at the first stop signal, with its
            name as C{{signal}}.
        @param again: What it says at the next ones.
        @param cut: Called at the next ones: cut what is in flight.
        @param reload: Called on SIGHUP.
        @param stops: The signals that stop; the others of
            L{STOP_SIGNALS} are ignored (a worker of C{--workers} ignores
            the SIGINT a terminal's Ctrl-C sends its supervisor too).
        """
        self._reactor = reactor
        self._log = log
        self._stop = stop
        self._again = again
        self._cut = cut
        self._reload = reload
        self._stops = stops
        self.stopping = False

    def install(self) -> None:
        """
        Handle the signals from now on: after twistd's own handlers are in
        place, which would stop at once and exit with the signal's status.
        """
        for number in STOP_SIGNALS:
            signal.signal(number, self._stopSignal if number in self._stops else signal.SIG_IGN)
        signal.signal(signal.SIGHUP, self._reloadSignal)

    def _reloadSignal(self, number: int, frame: object) -> None:
        self._reactor.callFromThread(self._reload)

    def _stopSignal(self, number: int, frame: object) -> None:
        name = signal.Signals(number).name
        if self.stopping:
            self._log.warn(self._again, signal=name)
            self._reactor.callFromThread(self._cut)
            return
        self.stopping = True
        self._log.info(self._stop, signal=name)
        self._reactor.callFromThread(self._reactor.stop)

"""
The two-signal graceful stop and the reload signal, which a balancer and
the supervisor of C{--workers} share (L{txlb.signals}).
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txlb.signals import STOP_SIGNALS, Signals


class _Reactor:
    """
    What the handlers ask of the reactor, noted.
    """

    def __init__(self) -> None:
        self.stopped = 0

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)

    def stop(self) -> None:
        self.stopped += 1


class SignalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        for number in (*STOP_SIGNALS, signal.SIGHUP):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.reactor = _Reactor()
        self.cuts: list[None] = []
        self.reloads: list[None] = []
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def install(self, **kwargs: Any) -> Signals:
        signals = Signals(
            self.reactor,
            Logger(),
            "Received {signal}: stopping",
            "Received {signal} again: cutting",
            lambda: self.cuts.append(None),
            lambda: self.reloads.append(None),
            **kwargs,
        )
        signals.install()
        return signals

    def deliver(self, number: int) -> None:
        signal.getsignal(number)(number, None)  # type: ignore[operator]

    def test_firstStopsGracefully(self) -> None:
        """
        The first SIGTERM (or SIGINT) stops the reactor, once: the services
        then stop and drain; nothing is cut.
        """
        signals = self.install()
        self.deliver(signal.SIGINT)
        self.assertEqual((self.reactor.stopped, self.cuts, signals.stopping), (1, [], True))
        self.assertEqual([formatEvent(e) for e in self.events], ["Received SIGINT: stopping"])

    def test_secondCuts(self) -> None:
        """
        A stop signal after the first cuts what is in flight, and stops
        nothing again.
        """
        self.install()
        self.deliver(signal.SIGTERM)
        self.deliver(signal.SIGTERM)
        self.assertEqual((self.reactor.stopped, len(self.cuts)), (1, 1))
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            ["Received SIGTERM: stopping", "Received SIGTERM again: cutting"],
        )

    def test_ignored(self) -> None:
        """
        A stop signal that is not one of this process's is ignored.
        """
        self.install(stops=(signal.SIGTERM,))
        self.assertIs(signal.getsignal(signal.SIGINT), signal.SIG_IGN)

    def test_reload(self) -> None:
        """
        SIGHUP reloads.
        """
        self.install()
        self.deliver(signal.SIGHUP)
        self.assertEqual((len(self.reloads), self.reactor.stopped), (1, 0))

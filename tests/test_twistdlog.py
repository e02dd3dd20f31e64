"""
L{txlb.twistdlog}: twistd's log written once per reactor turn, with the
text twistd's own observer writes, in order, nothing lost.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from typing import Any

from twisted.application.service import Application, IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, LogLevel, textFileLogObserver
from twisted.python import threadable
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import GET, OK, Harness
from txlb.accesslog import AccessLog
from txlb.outcome import Outcome
from txlb.service import LoadBalancerService
from txlb.tap import Options
from txlb.twistdlog import BUFFER_SIZE, TurnLog, twistdLog


class RecordingFile(io.StringIO):
    """
    A text file that records each C{write()}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def runningReactor(testCase: SynchronousTestCase) -> MemoryReactorClock:
    """
    A memory reactor that says it runs, in this thread.
    """
    reactor = MemoryReactorClock()
    reactor.running = True
    threadable.registerAsIOThread()
    return reactor


def events() -> list[dict[str, Any]]:
    """
    Events of every shape twistd's log gets: access lines as txlb logs them
    (one with a newline in its error), formatted events with and without a
    system, a failure, one at another level, and one with nothing to show.
    """
    captured: list[dict[str, Any]] = []
    log = Logger(namespace="txlb.proxy.LoadBalancerResource", observer=captured.append)
    access = AccessLog(log)

    class Request:
        method, uri, bodyBytes, sentLength = b"GET", b"/p?q=1", 0, 5

    access.record(Outcome(Request(), "10.0.0.7", None, 200, 0.0), "-", "b:1", "200", 0.0013, False)
    access.record(
        Outcome(Request(), "10.0.0.7", None, 502, 0.0, "down\nhard", LogLevel.warn),
        "-",
        "b:1",
        "502",
        0.25,
        False,
    )
    access.record(Outcome(Request(), "10.0.0.7", None, 200, 0.0), "-", "b:1", "200", 0.001, True)
    log.info("Backend {backend} is up", backend="b:1")
    log.warn("twice: {a} {a!r}", a="x")
    captured.append({"log_format": "plain", "log_system": "-", "log_time": 1.5})
    log.failure("Internal error relaying {path}", Failure(ZeroDivisionError("boom")), path=b"/x")
    captured.append({"log_level": LogLevel.info, "log_time": 2.0})
    captured.append({"log_format": "{line}", "log_flattened": {"line!s:": ""}, "log_time": 3})
    return captured


class FormatTests(SynchronousTestCase):
    def test_sameTextAsTwistd(self) -> None:
        """
        Every event is written as twistd's text observer writes it.
        """
        theirs, ours = io.StringIO(), io.StringIO()
        observer = TurnLog(ours, MemoryReactorClock())
        for event in events():
            textFileLogObserver(theirs)(event)
            observer(event)
        self.assertEqual(ours.getvalue(), theirs.getvalue())
        self.assertIn("Traceback", ours.getvalue())
        self.assertIn('error="down\n\thard"', ours.getvalue())

    def test_timestampNextSecond(self) -> None:
        """
        A time within half a microsecond of the next second shows that
        second, as twistd shows it; the second before is not cached as it.
        """
        theirs, ours = io.StringIO(), io.StringIO()
        observer = TurnLog(ours, MemoryReactorClock())
        for when in (1000.2, 1000.9999999, 1000.5, 1001.0):
            event = {"log_format": "at {when}", "when": when, "log_time": when}
            textFileLogObserver(theirs)(event)
            observer(event)
        self.assertEqual(ours.getvalue(), theirs.getvalue())

    def test_bytesFile(self) -> None:
        """
        A binary file gets the text in UTF-8.
        """
        out = io.BytesIO()
        TurnLog(out, MemoryReactorClock())({"log_format": "caf\u00e9", "log_time": 0.0})
        self.assertTrue(out.getvalue().endswith(" [-#-] caf\u00e9\n".encode()))


class BatchingTests(SynchronousTestCase):
    def test_oneWritePerTurn(self) -> None:
        """
        While the reactor runs, the events of one turn are written in one
        write, at the end of the turn.
        """
        reactor = runningReactor(self)
        out = RecordingFile()
        observer = TurnLog(out, reactor)
        for n in range(3):
            observer({"log_format": "line {n}", "n": n, "log_time": 0.0})
        self.assertEqual(out.writes, [])
        reactor.advance(0)
        self.assertEqual(len(out.writes), 1)
        self.assertEqual(
            [line.split("] ")[1] for line in out.writes[0].splitlines()],
            ["line 0", "line 1", "line 2"],
        )
        observer({"log_format": "next", "log_time": 0.0})
        reactor.advance(0)
        self.assertEqual(len(out.writes), 2)

    def test_notRunning(self) -> None:
        """
        Before the reactor runs, or after it stopped, each event is written
        as it comes, after what waits.
        """
        reactor = runningReactor(self)
        out = RecordingFile()
        observer = TurnLog(out, reactor)
        observer({"log_format": "waiting", "log_time": 0.0})
        reactor.running = False
        observer({"log_format": "at once", "log_time": 0.0})
        self.assertEqual(len(out.writes), 1)
        self.assertEqual(
            [line.split("] ")[1] for line in out.getvalue().splitlines()], ["waiting", "at once"]
        )

    def test_flushedAfterShutdown(self) -> None:
        """
        What waits when the reactor stops is written once it has.
        """
        reactor = runningReactor(self)
        out = RecordingFile()
        observer = TurnLog(out, reactor)
        observer({"log_format": "last", "log_time": 0.0})
        reactor.running = False
        for trigger in reactor.triggers["after"]["shutdown"]:
            trigger[0](*trigger[1], **trigger[2])
        self.assertTrue(out.getvalue().endswith("] last\n"))

    def test_otherThread(self) -> None:
        """
        An event from another thread is written at once, after what waits.
        """
        reactor = runningReactor(self)
        out = RecordingFile()
        observer = TurnLog(out, reactor)
        observer({"log_format": "first", "log_time": 0.0})
        thread = threading.Thread(
            target=observer, args=({"log_format": "thread", "log_time": 0.0},)
        )
        thread.start()
        thread.join()
        self.assertEqual(
            [line.split("] ")[1] for line in out.getvalue().splitlines()], ["first", "thread"]
        )
        reactor.advance(0)
        self.assertEqual(len(out.writes), 1)

    def test_bufferFull(self) -> None:
        """
        Once L{BUFFER_SIZE} characters wait, they are written without
        waiting for the end of the turn.
        """
        reactor = runningReactor(self)
        out = RecordingFile()
        observer = TurnLog(out, reactor)
        line = {"log_format": "x" * 1000, "log_time": 0.0}
        while not out.writes:
            observer(line)
        self.assertGreaterEqual(len(out.writes[0]), BUFFER_SIZE)

    def test_rotate(self) -> None:
        """
        Rotating the log file writes what waits to the old file first.
        """
        reactor = runningReactor(self)
        path = os.path.abspath(self.mktemp())
        observer = TurnLog(LogFile.fromFullPath(path), reactor)
        observer({"log_format": "before", "log_time": 0.0})
        observer.rotate()
        observer({"log_format": "after", "log_time": 0.0})
        reactor.advance(0)
        with open(path + ".1") as old, open(path) as new:
            self.assertTrue(old.read().endswith("] before\n"))
            self.assertTrue(new.read().endswith("] after\n"))


class TwistdOptionsTests(SynchronousTestCase):
    """
    L{twistdLog} writes where twistd would have.
    """

    def setUp(self) -> None:
        handler = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, handler)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def test_logFile(self) -> None:
        """
        C{--logfile PATH}: that file, rotated on SIGUSR1 as twistd does.
        """
        path = os.path.abspath(self.mktemp())
        reactor = MemoryReactorClock()
        calls: list[Any] = []
        reactor.callFromThread = calls.append  # type: ignore[attr-defined]
        observer = twistdLog({"logfile": path, "nodaemon": True}, reactor)
        assert observer is not None
        self.assertIsInstance(observer.file, LogFile)
        self.assertEqual(observer.file.path, path)
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)  # type: ignore[operator]
        self.assertEqual(calls, [observer.rotate])

    def test_daemonDefault(self) -> None:
        """
        A daemon without C{--logfile} logs to C{twistd.log}.
        """
        observer = twistdLog({"logfile": None, "nodaemon": False}, MemoryReactorClock())
        assert observer is not None
        self.assertEqual(os.path.basename(observer.file.path), "twistd.log")
        observer.file.close()
        os.remove(observer.file.path)

    def test_standardOutput(self) -> None:
        """
        C{-n} without C{--logfile}, or C{--logfile -}: standard output.
        """
        for options in ({"logfile": None, "nodaemon": True}, {"logfile": "-", "nodaemon": True}):
            observer = twistdLog(options, MemoryReactorClock())
            assert observer is not None
            self.assertIs(observer.file, sys.stdout)

    def test_elsewhere(self) -> None:
        """
        Logging elsewhere (C{--logger}, C{--syslog}), a daemon asked to log
        to standard output (twistd refuses it), or no twistd: twistd is left
        alone.
        """
        for options in (
            {"logger": "some.observer", "nodaemon": True},
            {"syslog": True},
            {"logfile": "-", "nodaemon": False},
            None,
        ):
            self.assertIsNone(twistdLog(options, MemoryReactorClock()), options)


class ServiceTests(SynchronousTestCase):
    """
    The service gives twistd's application its log observer.
    """

    def service(self) -> LoadBalancerService:
        harness = Harness(self)
        config = Options()
        config.parseOptions(["--backends", "127.0.0.1:8081"])
        return LoadBalancerService(config, harness.site, harness.reactor)

    def test_application(self) -> None:
        """
        An application without a log observer gets L{mainLog}.
        """
        service = self.service()
        service.mainLog = TurnLog(io.StringIO(), MemoryReactorClock())
        application = Application("txlb")
        service.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), service.mainLog)
        self.assertIn(service, list(IServiceCollection(application)))

    def test_applicationWithObserver(self) -> None:
        """
        An application that has a log observer keeps it.
        """
        service = self.service()
        service.mainLog = TurnLog(io.StringIO(), MemoryReactorClock())
        application = Application("txlb")
        theirs = textFileLogObserver(io.StringIO())
        application.setComponent(ILogObserver, theirs)
        service.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), theirs)

    def test_noMainLog(self) -> None:
        """
        Without L{mainLog}, the application's logging is left alone.
        """
        service = self.service()
        application = Application("txlb")
        service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver))


class AccessLinesTests(SynchronousTestCase):
    def test_relayedThenLogged(self) -> None:
        """
        Through a L{TurnLog} on the global log, a request's access line is
        written at the end of the turn, once the response has gone.
        """
        reactor = runningReactor(self)
        out = RecordingFile()
        harness = Harness(self)
        harness.resource.accessLog = AccessLog(
            Logger(namespace="txlb.proxy.LoadBalancerResource", observer=TurnLog(out, reactor))
        )
        _, client = harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(out.writes, [])
        reactor.advance(0)
        self.assertIn("client=10.0.0.7 method=GET path=/item ", out.getvalue())

"""
Active health checks, in memory with C{treq.testing}.
"""

from __future__ import annotations

from treq.testing import RequestTraversalAgent
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import server
from twisted.web.resource import Resource

from txlb.backend import Backend, BackendPool
from txlb.health import HealthChecker


class Backends(Resource):
    """
    Health endpoints whose answer each test sets per port: a status code,
    or None to never answer.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[int, int | None] = {}
        self.seen: list[tuple[int, bytes, list[bytes]]] = []

    def render(self, request: server.Request) -> bytes | int:
        port = request.getHost().port
        self.seen.append((port, request.uri, request.requestHeaders.getRawHeaders(b"cookie", [])))
        status = self.status.get(port, 200)
        if status is None:
            return server.NOT_DONE_YET
        request.setResponseCode(status)
        if status == 302:
            request.setHeader(b"Location", b"http://elsewhere/")
        request.setHeader(b"Set-Cookie", b"sticky=1")
        return b"ok"


class HealthCheckerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.backends = Backends()
        self.a, self.b = Backend("127.0.0.1", 8081), Backend("127.0.0.1", 8082)
        self.pool = BackendPool([self.a, self.b], self.clock)
        self.checker = HealthChecker(
            self.pool,
            "/health",
            self.clock,
            interval=5,
            timeout=2,
            rise=2,
            fall=3,
            agent=RequestTraversalAgent(self.backends),
        )
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self) -> None:
        self.checker.startService()
        self.addCleanup(lambda: self.checker.running and self.checker.stopService())

    def messages(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def rounds(self, count: int) -> None:
        """
        Let C{count} more rounds of checks happen, a second at a time (a
        timer set while L{Clock.advance} runs counts from its end).
        """
        for _ in range(count * 5):
            self.clock.advance(1)

    def test_checksEveryBackendEachInterval(self) -> None:
        """
        Each backend's health path is requested at start and then every
        interval.
        """
        self.start()
        self.assertEqual(
            [seen[:2] for seen in self.backends.seen], [(8081, b"/health"), (8082, b"/health")]
        )
        self.rounds(2)
        self.assertEqual(len(self.backends.seen), 6)

    def test_downAfterFall(self) -> None:
        """
        A backend goes down after C{fall} failed checks in a row, not
        before, and that is logged.
        """
        self.backends.status[8082] = 500
        self.start()
        self.rounds(1)
        self.assertTrue(self.b.healthy)
        self.rounds(1)
        self.assertFalse(self.b.healthy)
        self.assertTrue(self.a.healthy)
        self.assertIn("Backend 127.0.0.1:8082 is down (health check: status 500)", self.messages())

    def test_failureRecorded(self) -> None:
        """
        Each failed check is counted on the backend and becomes its last
        error, with its time, so that a backend the checks took down says
        why where its errors are shown; a passed check leaves both.
        """
        self.backends.status[8082] = 500
        self.start()
        self.rounds(2)
        self.assertEqual(
            (self.b.checkFailures, self.b.lastError, self.b.lastErrorTime, self.b.errors),
            (3, "health check: status 500", 10.0, 0),
        )
        self.backends.status[8082] = 200
        self.rounds(1)
        self.assertEqual(
            (self.b.checkFailures, self.b.lastError, self.b.health),
            (3, "health check: status 500", "passed"),
        )
        self.assertEqual((self.a.checkFailures, self.a.lastError), (0, None))

    def test_upAfterRise(self) -> None:
        """
        A down backend comes back after C{rise} passed checks in a row.
        """
        self.backends.status[8082] = 503
        self.start()
        self.rounds(2)
        self.backends.status[8082] = 204
        self.rounds(1)
        self.assertFalse(self.b.healthy)
        self.rounds(1)
        self.assertTrue(self.b.healthy)
        self.assertIn("Backend 127.0.0.1:8082 is up (health check passed)", self.messages())

    def test_upStartsSlowStart(self) -> None:
        """
        A backend that comes back up starts its slow start then; one that
        never went down does not.
        """
        self.backends.status[8082] = 503
        self.start()
        self.rounds(2)
        self.backends.status[8082] = 204
        self.rounds(2)
        self.assertEqual((self.a.upSince, self.b.upSince), (float("-inf"), self.clock.seconds()))

    def test_flapNotCounted(self) -> None:
        """
        A passed check between failed ones starts the count again.
        """
        self.backends.status[8082] = 500
        self.start()
        self.rounds(1)
        self.backends.status[8082] = 200
        self.rounds(1)
        self.backends.status[8082] = 500
        self.rounds(2)
        self.assertTrue(self.b.healthy)

    def test_redirectIsHealthyNotFollowed(self) -> None:
        """
        A 3xx answer is healthy, and the redirect is not followed.
        """
        self.backends.status[8082] = 302
        self.start()
        self.rounds(3)
        self.assertTrue(self.b.healthy)
        self.assertEqual({seen[1] for seen in self.backends.seen}, {b"/health"})

    def test_noCookies(self) -> None:
        """
        A cookie a backend sets is never sent back with later checks.
        """
        self.start()
        self.rounds(2)
        self.assertEqual({tuple(seen[2]) for seen in self.backends.seen}, {()})

    def test_timeout(self) -> None:
        """
        A check with no answer within the timeout fails, and no new check is
        sent to that backend while one is in flight.
        """
        self.backends.status[8082] = None
        self.start()
        self.clock.advance(2)
        self.rounds(2)
        self.assertFalse(self.b.healthy)
        self.assertIn("Backend 127.0.0.1:8082 is down (health check: timeout)", self.messages())

    def test_stops(self) -> None:
        """
        Once stopped, no more checks are sent, and one in flight is
        dropped.
        """
        self.backends.status[8082] = None
        self.start()
        self.checker.stopService()
        self.rounds(3)
        self.assertEqual(len(self.backends.seen), 2)
        self.assertTrue(self.b.healthy)


class QuietConnectionsTests(SynchronousTestCase):
    def test_noFactoryLogLine(self) -> None:
        """
        The connection a check makes logs nothing of its own: Agent's
        factory would write "Starting factory" for every check.  (This pins
        the private C{HTTPConnectionPool._factory} the checker replaces.)
        """
        reactor = MemoryReactorClock()
        backend = Backend("127.0.0.1", 8081)
        checker = HealthChecker(BackendPool([backend], reactor), "/health", reactor)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        checker.startService()
        self.addCleanup(checker.stopService)
        (host, port, factory, _, _) = reactor.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 8081))
        factory.doStart()
        factory.doStop()
        self.assertEqual([e for e in events if "factory" in e.get("log_format", "")], [])

"""
Active health checks: a request to each backend every interval.

A backend is healthy while its checks answer 2xx or 3xx in time.  It goes
down after C{fall} failed checks in a row and comes back after C{rise}
passed ones, so one slow answer does not flap it (HAProxy's rise/fall).
Checks are sent with treq, with no cookie jar and no redirect following:
each check is what the backend says to a fresh client.  An C{https://}
backend is checked over TLS with the settings requests use
(L{txlb.tls.BackendTLS}), so a check fails when its handshake would.
"""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from txlb import _twisted
from txlb.backend import Backend, BackendPool
from txlb.metrics import Metrics
from txlb.tls import BackendTLS, failureReason


class _NoCookies(CookieJar):
    """
    A cookie jar that keeps nothing: checks must not carry state.
    """

    def add_cookie_header(self, request: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


class _QuietClientFactory(_twisted.HTTP11ClientFactory):
    """
    Agent's connection factory without the "Starting factory" log line it
    writes for every new connection, which is every check.
    """

    noisy = False


def quietPool(reactor: Any) -> HTTPConnectionPool:
    """
    A pool of one connection per check, whose connections log nothing when
    they open and close (through the pool's private factory: see
    L{txlb._twisted}).
    """
    pool = HTTPConnectionPool(reactor, persistent=False)
    _twisted.setConnectionFactory(pool, _QuietClientFactory)
    return pool


def checkClient(agent: Any) -> HTTPClient:
    """
    The treq client checks are sent with: no cookies kept.
    """
    return HTTPClient(agent, cookiejar=_NoCookies())  # type: ignore[arg-type]


class HealthChecker(Service):
    """
    Checks every backend of a pool every C{interval} seconds and sets its
    C{healthy} flag.
    """

    _log = Logger()

    def __init__(
        self,
        pool: BackendPool,
        path: str,
        reactor: Any,
        interval: float = 5.0,
        timeout: float = 2.0,
        rise: int = 2,
        fall: int = 3,
        agent: Any = None,
        metrics: Metrics | None = None,
        tls: BackendTLS | None = None,
        poolName: str = "default",
    ) -> None:
        """
        @param poolName: The name of the pool, for the metrics.
        """
        self.pool = pool
        self._poolName = poolName
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.rise = rise
        self.fall = fall
        self._reactor = reactor
        self._metrics = metrics
        # A new connection per check: a check also proves the backend
        # accepts connections.
        self._client = checkClient(
            agent
            or Agent(
                reactor,
                contextFactory=tls or BackendTLS(),
                connectTimeout=timeout,
                pool=quietPool(reactor),
            )
        )
        self._inFlight: dict[Backend, Deferred[Any]] = {}
        self._streak: dict[Backend, int] = {}
        self._loop = LoopingCall(self.checkAll)
        self._loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> Any:
        super().stopService()
        self._loop.stop()
        for check in list(self._inFlight.values()):
            check.cancel()

    def checkAll(self) -> None:
        """
        Check each backend whose previous check has finished.
        """
        for gone in set(self._streak) - set(self.pool.backends):
            del self._streak[gone]
        for backend in self.pool.backends:
            if backend not in self._inFlight:
                self._check(backend)

    def _check(self, backend: Backend) -> None:
        scheme = "https" if backend.tls else "http"
        url = f"{scheme}://{backend.address}{self.path}"
        self._inFlight[backend] = d = self._client.get(
            url, allow_redirects=False, timeout=self.timeout, reactor=self._reactor
        )
        d.addCallback(self._answered)
        d.addCallbacks(lambda why: self._result(backend, why), lambda f: self._failed(backend, f))

    def _answered(self, response: Any) -> Deferred[str | None]:
        """
        Read and drop the body (so the connection ends cleanly), then say
        why the check failed, or C{None} if it passed.
        """
        verdict = None if 200 <= response.code < 400 else f"status {response.code}"
        return treq.collect(response, lambda data: None).addCallback(lambda _: verdict)

    def _failed(self, backend: Backend, failure: Failure) -> None:
        """
        A check that got no response: treq cancels one that runs out of
        time, and nothing else cancels a check of a running checker.
        """
        reasons = getattr(failure.value, "reasons", None)
        cause = reasons[0] if reasons else failure
        if cause.check(CancelledError, ConnectingCancelledError):
            why = "timeout"
        else:
            why = failureReason(cause) or cause.getErrorMessage() or repr(cause.value)
        self._result(backend, why)

    def _result(self, backend: Backend, failed: str | None) -> None:
        """
        Count a passed (C{failed} is C{None}) or failed check towards the
        backend's rise or fall.
        """
        self._inFlight.pop(backend, None)
        if not self.running:
            return
        passed = failed is None
        backend.checked(self._reactor.seconds(), failed)
        if self._metrics is not None:
            result = "passed" if passed else "failed"
            self._metrics.healthChecks.labels(self._poolName, backend.address, result).inc()
        if passed == backend.healthy:
            self._streak[backend] = 0
            return
        streak = self._streak.get(backend, 0) + 1
        self._streak[backend] = streak
        if streak < (self.rise if passed else self.fall):
            return
        backend.healthy = passed
        self._streak[backend] = 0
        if passed:
            self.pool.cameUp(backend)
            self._log.info("Backend {backend} is up (health check passed)", backend=backend.address)
        else:
            self._log.warn(
                "Backend {backend} is down (health check: {why})",
                backend=backend.address,
                why=failed,
            )

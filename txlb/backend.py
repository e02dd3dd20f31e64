"""
The backends and what txlb knows about their health.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from twisted.logger import Logger
from twisted.web.client import URI


class Backend:
    """
    One backend: where it is, its weight, how many requests it has in
    flight, and its health.

    @ivar address: C{host:port} (C{[v6]:port}), for logs, error pages and
        the IP hash.
    @ivar uri: The backend's root as an Agent L{URI}: Agent takes its pool key
        from it, and the C{Host} header of a request that came without one.
    @ivar active: Requests sent to this backend whose response has not yet
        been fully relayed, failed or been abandoned by the client.  The proxy
        increments it when it sends a request and decrements it exactly once
        when that request is over; least connections reads it.
    @ivar healthy: The verdict of the active health checks (always L{True}
        when they are off).
    @ivar failures: Connection failures, resets and timeouts in a row (the
        passive check).
    @ivar downUntil: When enough failures in a row took the backend out, the
        time it may be tried again.
    @ivar probing: Whether one request is probing a backend that was out.
    """

    def __init__(self, host: str, port: int, weight: int = 1) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.active = 0
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.uri = URI.fromBytes(f"http://{self.address}/".encode("ascii"))
        self.healthy = True
        self.failures = 0
        self.downUntil = 0.0
        self.probing = False

    def available(self, now: float) -> bool:
        """
        Whether new requests may go to this backend at time C{now}.
        """
        return self.healthy and now >= self.downUntil and not self.probing


class BackendPool:
    """
    The backends one balancer forwards to, and the passive health check:
    after C{maxFails} failures in a row a backend is out for C{failTimeout}
    seconds, then a single request probes it, and its success brings it back.
    """

    _log = Logger()

    def __init__(
        self,
        backends: Sequence[Backend],
        reactor: Any,
        maxFails: int = 3,
        failTimeout: float = 10.0,
    ) -> None:
        self.backends = tuple(backends)
        self._reactor = reactor
        self.maxFails = maxFails
        self.failTimeout = failTimeout
        self._panicking = False

    def candidates(self, exclude: Collection[Backend] = ()) -> Sequence[Backend]:
        """
        The backends a new request may go to: those that are up, leaving out
        C{exclude} (those already tried) unless no other is up.

        When every backend is down, trying them beats answering 503 until a
        check notices a recovery (Envoy's panic mode); that is logged once
        each time it starts.  Then the untried ones the active checks find
        healthy (out only after failures on real traffic, or being probed)
        go first, then the rest.
        """
        now = self._reactor.seconds()
        up = [b for b in self.backends if b.available(now)]
        if up:
            self._panicking = False
            return [b for b in up if b not in exclude] or up
        if not self._panicking:
            self._panicking = True
            self._log.warn("Every backend is down: trying them all until one recovers")
        untried = [b for b in self.backends if b not in exclude] or list(self.backends)
        return [b for b in untried if b.healthy] or untried

    def sending(self, backend: Backend) -> None:
        """
        A request is being sent to C{backend}.
        """
        backend.active += 1
        if backend.failures >= self.maxFails and self._reactor.seconds() >= backend.downUntil:
            backend.probing = True

    def done(self, backend: Backend) -> None:
        """
        A request sent to C{backend} is over.
        """
        backend.active -= 1

    def succeeded(self, backend: Backend) -> None:
        """
        C{backend} answered.
        """
        if backend.failures >= self.maxFails:
            self._log.info("Backend {backend} is back", backend=backend.address)
        backend.failures = 0
        backend.probing = False

    def failed(self, backend: Backend, why: str) -> None:
        """
        C{backend} could not be reached, reset the connection or timed out.
        """
        backend.failures += 1
        wasProbing, backend.probing = backend.probing, False
        if backend.failures >= self.maxFails:
            backend.downUntil = self._reactor.seconds() + self.failTimeout
            if backend.failures > self.maxFails and not wasProbing:
                # Already out (a request sent in panic mode, or before it went
                # out): said already.
                return
            self._log.warn(
                "Backend {backend} is out for {seconds} s after {failures} failures"
                " in a row ({why})",
                backend=backend.address,
                seconds=self.failTimeout,
                failures=backend.failures,
                why=why,
            )

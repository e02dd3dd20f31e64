"""
The backends and what txlb knows about their health.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from twisted.logger import Logger

from txlb.loadreport import parseLoad

#: The largest weight: weighted round robin keeps a schedule as long as the
#: sum of the weights.
MAX_WEIGHT = 1000

#: The largest limit of requests in flight a backend may be given.
MAX_CONN = 1_000_000

#: Seconds in which a reported load fades to 1/e of its value when the
#: backend stops reporting (Finagle's and Linkerd's decay time for latency).
LOAD_DECAY = 10.0

#: The least share of its capacity a fully loaded backend keeps, so that it is
#: still tried, and reports again, when the others are busy enough.
MIN_HEADROOM = 0.05

#: Seconds over which the request rate is averaged (the current one, still
#: counting, is left out).
RATE_WINDOW = 11


class Backend:
    """
    One backend: where it is, its weight, how many requests it has in
    flight, and its health.

    @ivar address: C{host:port} (C{[v6]:port}), for logs, error pages and
        the IP hash.
    @ivar tls: Whether it is an C{https://} backend.
    @ivar maxConn: Its own limit of requests in flight (C{=WEIGHT/MAXCONN}
        in C{--backends}), or 0 for the pool's (see L{txlb.admission}).
    @ivar active: Requests sent to this backend whose response has not yet
        been fully relayed, failed or been abandoned by the client.  The proxy
        increments it when it sends a request and decrements it exactly once
        when that request is over; least connections reads it.
    @ivar healthy: The verdict of the active health checks (always C{True}
        when they are off).
    @ivar failures: Connection failures, resets and timeouts in a row (the
        passive check).
    @ivar downUntil: When enough failures in a row took the backend out, the
        time it may be tried again.
    @ivar probing: Whether one request is probing a backend that was out.
    @ivar draining: Whether the backend is being drained: it takes no new
        requests, and those in flight finish.
    @ivar health: The last active check's verdict (C{"passed"} or
        C{"failed: ..."}), or C{None} when there are no active checks.
    @ivar requests: Requests that ended on this backend.
    @ivar errors: Those that ended in an error of the backend's (a 5xx, a
        failure to connect, a reset, a timeout).
    @ivar checkFailures: Active health checks that failed.
    @ivar lastError: What the last of those errors or failed checks was (a
        check's as C{"health check: ..."}), so that a backend the checks
        took down says why where its errors are.
    @ivar lastErrorTime: When that was, or C{None}.
    @ivar latencyMs: A moving average of the time requests took, in
        milliseconds, or C{None} before the first one.
    @ivar load: The last load the backend reported (0 to 1, see
        L{txlb.loadreport}), or C{None}; L{reportedLoad} is what is left of
        it now.
    @ivar loadReported: When it reported it.
    @ivar upSince: When it was added or came back up (minus infinity for a
        backend there from the start), for slow start.
    @ivar rampCredit: Slow start's share of picks owed to it, see
        L{BackendPool.candidates}.
    """

    def __init__(
        self, host: str, port: int, weight: int = 1, tls: bool = False, maxConn: int = 0
    ) -> None:
        self.host = host
        self.port = port
        self.weight = weight
        self.tls = tls
        self.maxConn = maxConn
        self.active = 0
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.healthy = True
        self.failures = 0
        self.downUntil = 0.0
        self.probing = False
        self.draining = False
        self.health: str | None = None
        self.requests = 0
        self.errors = 0
        self.checkFailures = 0
        self.lastError: str | None = None
        self.lastErrorTime: float | None = None
        self.latencyMs: float | None = None
        self.load: float | None = None
        self.loadReported = 0.0
        self.upSince = -math.inf
        self.rampCredit = 0.0
        self._rate = [0] * RATE_WINDOW
        self._rateSecond = 0

    @property
    def key(self) -> tuple[str, int]:
        """
        What makes two backends the same one.
        """
        return (self.host.lower(), self.port)

    def available(self, now: float) -> bool:
        """
        Whether new requests may go to this backend at time C{now}.
        """
        return self.healthy and now >= self.downUntil and not self.probing and not self.draining

    def state(self, now: float) -> str:
        """
        C{"draining"}, C{"up"} or C{"down"} (out after failed checks or
        failures on real traffic, or being probed).
        """
        if self.draining:
            return "draining"
        return "up" if self.available(now) else "down"

    def ended(self, now: float, milliseconds: float, error: str | None) -> None:
        """
        Count a request that ended on this backend, C{error} saying what the
        backend did wrong, if anything.
        """
        self.requests += 1
        if error is not None:
            self.errors += 1
            self.lastError, self.lastErrorTime = error, now
        self.latencyMs = (
            milliseconds if self.latencyMs is None else 0.9 * self.latencyMs + 0.1 * milliseconds
        )
        self._advance(now)
        self._rate[int(now) % RATE_WINDOW] += 1

    def checked(self, now: float, failed: str | None) -> None:
        """
        An active health check ended at C{now}: it passed if C{failed} is
        C{None}, else C{failed} says why not.  (Whether that takes the
        backend down or brings it up is the checker's rise and fall.)
        """
        if failed is None:
            self.health = "passed"
            return
        self.health = f"failed: {failed}"
        self.checkFailures += 1
        self.lastError, self.lastErrorTime = f"health check: {failed}", now

    def reportLoad(self, value: bytes, now: float) -> None:
        """
        The backend reported C{value} in its load header at C{now}; a value
        that is no load report is ignored.
        """
        load = parseLoad(value)
        if load is not None:
            self.load, self.loadReported = load, now

    def reportedLoad(self, now: float) -> float:
        """
        The load the backend last reported, fading with time since
        (C{exp(-elapsed / LOAD_DECAY)}); 0 if it never reported one.
        """
        if self.load is None:
            return 0.0
        return self.load * math.exp((self.loadReported - now) / LOAD_DECAY)

    def capacity(self, now: float) -> float:
        """
        The weight, times the share the backend reports free (at least
        L{MIN_HEADROOM}): the weight C{p2c} and C{ewma} balance by.
        """
        if self.load is None:
            return self.weight
        return self.weight * max(1.0 - self.reportedLoad(now), MIN_HEADROOM)

    def requestsPerSecond(self, now: float) -> float:
        """
        Requests ended per second over the last L{RATE_WINDOW} whole
        seconds.
        """
        self._advance(now)
        current = self._rate[int(now) % RATE_WINDOW]
        return (sum(self._rate) - current) / (RATE_WINDOW - 1)

    def _advance(self, now: float) -> None:
        """
        Clear the per-second counts of the seconds that passed.
        """
        second = int(now)
        for past in range(max(self._rateSecond + 1, second - RATE_WINDOW + 1), second + 1):
            self._rate[past % RATE_WINDOW] = 0
        self._rateSecond = max(self._rateSecond, second)


class BackendPool:
    """
    The backends one balancer forwards to, and the passive health check:
    after C{maxFails} failures in a row a backend is out for C{failTimeout}
    seconds, then a single request probes it, and its success brings it back.
    """

    _log = Logger()

    #: Whether every backend was down the last time candidates were asked
    #: for (panic mode).
    panicking = False

    #: Called when a backend was added or came back up, if set: requests
    #: waiting for a backend below its limit may take it.
    whenUp: Callable[[], None] | None = None

    def __init__(
        self,
        backends: Sequence[Backend],
        reactor: Any,
        maxFails: int = 3,
        failTimeout: float = 10.0,
        slowStart: float = 0.0,
    ) -> None:
        self.backends = tuple(backends)
        self._reactor = reactor
        self.maxFails = maxFails
        self.failTimeout = failTimeout
        self.slowStart = slowStart
        #: When the last backend in slow start leaves it.
        self._rampEnds = -math.inf

    def cameUp(self, backend: Backend) -> None:
        """
        C{backend} was just added or came back up: with slow start, its share
        of the traffic grows from 0 to full over C{slowStart} seconds.
        (Backends there from the start are not ramped, as in HAProxy.)
        """
        now = self._reactor.seconds()
        backend.upSince = now
        backend.rampCredit = 0.0
        self._rampEnds = max(self._rampEnds, now + self.slowStart)
        if self.whenUp is not None:
            self.whenUp()

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
            self.panicking = False
            if exclude:
                up = [b for b in up if b not in exclude] or up
            if now < self._rampEnds and self.slowStart:
                up = self._ramp(up, now)
            return up
        if not self.panicking:
            self.panicking = True
            self._log.warn("Every backend is down: trying them all until one recovers")
        # Draining backends stay out even now: they are being taken away.
        serving = [b for b in self.backends if not b.draining] or list(self.backends)
        untried = [b for b in serving if b not in exclude] or serving
        return [b for b in untried if b.healthy] or untried

    def _ramp(self, up: list[Backend], now: float) -> list[Backend]:
        """
        Slow start: leave out of C{up} the backends ramping up, but for a
        share of the picks that grows linearly with the time since they came
        up (a quarter of the way through the window, one pick in four).

        Each such backend earns that share as credit at every pick and is a
        candidate when its credit reaches one, so the picks it takes are
        spread evenly and exactly, with no randomness.  Whatever the
        algorithm, it gets about that share of the traffic it would have
        had: its effective weight ramps from 0 to its weight.  If every
        backend is ramping and none has credit, all are candidates.
        """
        admitted = []
        for backend in up:
            share = (now - backend.upSince) / self.slowStart
            if share < 1:
                backend.rampCredit += share
                if backend.rampCredit < 1:
                    continue
                backend.rampCredit -= 1
            admitted.append(backend)
        return admitted or up

    def sending(self, backend: Backend) -> None:
        """
        A request is being sent to C{backend}.
        """
        backend.active += 1
        if backend.failures >= self.maxFails and self._reactor.seconds() >= backend.downUntil:
            backend.probing = True

    def done(self, backend: Backend) -> None:
        """
        A request sent to C{backend} is over.  If it was a probe and ended
        with no verdict (its client left), the next request probes again.
        """
        backend.active -= 1
        backend.probing = False

    def succeeded(self, backend: Backend) -> None:
        """
        C{backend} answered.
        """
        cameBack = backend.failures >= self.maxFails
        backend.failures = 0
        backend.probing = False
        if cameBack:
            self._log.info("Backend {backend} is back", backend=backend.address)
            self.cameUp(backend)

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


#: A host name as backends and C{--backend-sni} may give it.
HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def parseBackend(spec: str) -> Backend:
    """
    Parse one C{[http://|https://]HOST:PORT[=WEIGHT[/MAXCONN]]}.

    @raise ValueError: With a one-line reason.
    """
    text = spec.strip()
    scheme, hasScheme, rest = text.partition("://")
    if hasScheme:
        if scheme.lower() not in ("http", "https"):
            raise ValueError(f"unknown scheme {scheme!r} (use http://, https:// or none)")
        text = rest.removesuffix("/")
    address, sep, weightText = text.partition("=")
    weight = 1
    maxConn = 0
    if sep:
        weightText, slash, maxConnText = weightText.partition("/")
        if not weightText.isdigit() or not 1 <= int(weightText) <= MAX_WEIGHT:
            raise ValueError(f"the weight must be a whole number from 1 to {MAX_WEIGHT}")
        weight = int(weightText)
        if slash:
            if not (maxConnText.isascii() and maxConnText.isdigit()) or not (
                1 <= int(maxConnText) <= MAX_CONN
            ):
                raise ValueError(
                    f"the limit of requests in flight (after /) must be a whole number "
                    f"from 1 to {MAX_CONN}"
                )
            maxConn = int(maxConnText)
    if address.startswith("["):
        host, _, portText = address[1:].partition("]")
        if not portText.startswith(":"):
            raise ValueError("missing port (expected [IPV6]:PORT)")
        portText = portText[1:]
        valid = ":" in host
    else:
        host, colon, portText = address.rpartition(":")
        if not colon:
            raise ValueError("missing port (expected HOST:PORT)")
        valid = HOSTNAME.fullmatch(host) is not None
    if not valid:
        raise ValueError(f"bad host {host!r}")
    if not portText.isdigit() or not 1 <= int(portText) <= 65535:
        raise ValueError(f"bad port {portText!r} (expected 1-65535)")
    tls = bool(hasScheme) and scheme.lower() == "https"
    return Backend(host, int(portText), weight, tls=tls, maxConn=maxConn)


def parseBackends(specs: str) -> list[Backend]:
    """
    Parse a comma-separated list of L{parseBackend} specs (C{--backends}),
    each backend once.

    @raise ValueError: With a one-line reason.
    """
    if not specs.strip():
        raise ValueError("no backends given")
    backends: dict[tuple[str, int], Backend] = {}
    for spec in specs.split(","):
        if not spec.strip():
            raise ValueError(f"{specs!r}: an empty entry")
        try:
            backend = parseBackend(spec)
        except ValueError as e:
            raise ValueError(f"{spec!r}: {e}") from None
        if backend.key in backends:
            raise ValueError(f"{backend.address} is listed twice")
        backends[backend.key] = backend
    return list(backends.values())

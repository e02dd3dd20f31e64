"""
The C{twistd txlb} command: its options and the service they make.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from txlb.backend import Backend, BackendPool
from txlb.client import makeAgent
from txlb.health import HealthChecker
from txlb.iphash import IPHash
from txlb.leastconn import LeastConnections
from txlb.proxy import LoadBalancerResource, ProxySettings
from txlb.roundrobin import RoundRobin
from txlb.server import LoadBalancerSite
from txlb.testbackend import makeBackendService
from txlb.weighted import WeightedRoundRobin

ALGORITHMS = {
    algorithm.name: algorithm
    for algorithm in (RoundRobin, WeightedRoundRobin, LeastConnections, IPHash)
}

#: The backends C{--demo} starts: the seed's three, weighted 1:3:2.
DEMO_BACKENDS = "127.0.0.1:8081=1,127.0.0.1:8082=3,127.0.0.1:8083=2"

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def parseBackend(spec: str) -> Backend:
    """
    Parse one C{[http://]HOST:PORT[=WEIGHT]}.

    @raise usage.UsageError: With a one-line reason naming C{spec}.
    """

    def bad(why: str) -> usage.UsageError:
        return usage.UsageError(f"--backends: {spec!r}: {why}")

    text = spec.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() == "https":
            raise bad("https:// backends are not supported yet (no TLS to backends)")
        if scheme.lower() != "http":
            raise bad(f"unknown scheme {scheme!r} (use http:// or none)")
        text = rest.removesuffix("/")
    address, sep, weightText = text.partition("=")
    weight = 1
    if sep:
        if not weightText.isdigit() or int(weightText) < 1:
            raise bad("the weight must be a whole number of at least 1")
        weight = int(weightText)
    if address.startswith("["):
        host, _, portText = address[1:].partition("]")
        if not portText.startswith(":"):
            raise bad("missing port (expected [IPV6]:PORT)")
        portText = portText[1:]
        valid = ":" in host
    else:
        host, sep, portText = address.rpartition(":")
        if not sep:
            raise bad("missing port (expected HOST:PORT)")
        valid = _HOSTNAME.fullmatch(host) is not None
    if not valid:
        raise bad(f"bad host {host!r}")
    if not portText.isdigit() or not 1 <= int(portText) <= 65535:
        raise bad(f"bad port {portText!r} (expected 1-65535)")
    return Backend(host, int(portText), weight)


def parseBackends(specs: str) -> list[Backend]:
    """
    Parse C{--backends}: comma-separated L{parseBackend} specs, each backend
    once.
    """
    if not specs.strip():
        raise usage.UsageError("--backends: no backends given")
    backends: dict[tuple[str, int], Backend] = {}
    for spec in specs.split(","):
        if not spec.strip():
            raise usage.UsageError(f"--backends: {specs!r}: an empty entry")
        backend = parseBackend(spec)
        key = (backend.host.lower(), backend.port)
        if key in backends:
            raise usage.UsageError(f"--backends: {backend.address} is listed twice")
        backends[key] = backend
    return list(backends.values())


def parseAlgorithm(name: str) -> str:
    if name not in ALGORITHMS:
        raise usage.UsageError(
            f"--algo: unknown algorithm {name!r} (choose from {', '.join(ALGORITHMS)})"
        )
    return name


def seconds(option: str) -> Callable[[str], float]:
    """
    A coerce function for an option taking a positive number of seconds.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0
        if not 0 < value < float("inf"):
            raise usage.UsageError(f"{option}: {text!r} is not a positive number of seconds")
        return value

    return parse


def count(option: str, minimum: int) -> Callable[[str], int]:
    """
    A coerce function for an option taking a whole number of at least
    C{minimum}.
    """

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise usage.UsageError(
                f"{option}: {text!r} is not a whole number of at least {minimum}"
            )
        return int(text)

    return parse


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parseSize(text: str) -> int:
    """
    Parse C{--max-body-size}: bytes, or with a K, M or G suffix (powers of
    1024).
    """
    digits, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS:
        digits, unit = text, ""
    if not digits.isdigit() or int(digits) < 1:
        raise usage.UsageError(f"--max-body-size: {text!r} is not a size like 1048576 or 10M")
    return int(digits) * _UNITS[unit]


def parsePath(text: str) -> str:
    if not text.startswith("/") or any(c <= " " or c > "~" for c in text):
        raise usage.UsageError(f"--health-path: {text!r} is not a path like /health")
    return text


class Options(usage.Options):
    synopsis = "[--listen DESCRIPTION] (--backends LIST | --demo) [--algo NAME] [options]"
    longdesc = (
        "A transparent HTTP load balancer: every request is forwarded as the "
        "client sent it to a backend picked by the algorithm, and the answer "
        "comes back as the backend sent it."
    )

    optParameters = [
        ["listen", "l", "tcp:8080", "Endpoint description to listen on."],
        [
            "backends",
            "b",
            None,
            "Comma-separated [http://]HOST:PORT[=WEIGHT] (weight default 1).",
            parseBackends,
        ],
        [
            "algo",
            "a",
            None,
            f"Algorithm: {', '.join(ALGORITHMS)} (default roundrobin).",
            parseAlgorithm,
        ],
        # Health.
        ["health-path", None, None, "Path of active health checks (off if absent).", parsePath],
        ["health-interval", None, 5.0, "Seconds between checks.", seconds("--health-interval")],
        ["health-timeout", None, 2.0, "Seconds a check may take.", seconds("--health-timeout")],
        ["health-rise", None, 2, "Passed checks in a row to be up.", count("--health-rise", 1)],
        ["health-fall", None, 3, "Failed checks in a row to be down.", count("--health-fall", 1)],
        [
            "max-fails",
            None,
            3,
            "Failures in a row on real traffic that take a backend out.",
            count("--max-fails", 1),
        ],
        [
            "fail-timeout",
            None,
            10.0,
            "Seconds a backend stays out after --max-fails failures.",
            seconds("--fail-timeout"),
        ],
        # Retries and timeouts.
        ["retries", None, 2, "Other backends to try for one request.", count("--retries", 0)],
        [
            "connect-timeout",
            None,
            5.0,
            "Seconds to wait for a connection to a backend.",
            seconds("--connect-timeout"),
        ],
        [
            "response-timeout",
            None,
            30.0,
            "Seconds to wait for a backend's response head.",
            seconds("--response-timeout"),
        ],
        [
            "idle-timeout",
            None,
            60.0,
            "Seconds without a byte either way mid-body.",
            seconds("--idle-timeout"),
        ],
        [
            "client-timeout",
            None,
            30.0,
            "Seconds a client may take to send a request head, or stay idle.",
            seconds("--client-timeout"),
        ],
        [
            "drain-timeout",
            None,
            30.0,
            "Seconds requests in flight may take to finish on SIGTERM/SIGINT.",
            seconds("--drain-timeout"),
        ],
        ["max-body-size", None, None, "Largest request body (e.g. 10M); 413 above.", parseSize],
    ]
    optFlags = [
        [
            "demo",
            None,
            "Also serve three test backends on 127.0.0.1:8081-8083 and "
            "balance over them (weights 1:3:2, weighted algorithm unless "
            "--algo says otherwise).",
        ],
        [
            "retry-non-idempotent",
            None,
            "Also retry POST and PATCH requests that reached a failing backend.",
        ],
        [
            "forwarded-for",
            None,
            "Append the client to X-Forwarded-For; set X-Forwarded-Proto and -Host.",
        ],
        ["forwarded", None, "Append an RFC 7239 Forwarded element."],
        ["via", None, "Append this hop to Via."],
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse as usual, but end a bad command line with one line naming what
        is wrong, not twistd's whole usage text.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"txlb: {e} (see twistd txlb --help)") from None

    def postOptions(self) -> None:
        if self["demo"]:
            if self["backends"] is not None:
                raise usage.UsageError("--demo starts its own backends: drop --backends")
            self["backends"] = parseBackends(DEMO_BACKENDS)
            self["algo"] = self["algo"] or "weighted"
        if self["backends"] is None:
            raise usage.UsageError("no backends: give --backends HOST:PORT[,...] or --demo")
        self["algo"] = self["algo"] or "roundrobin"
        from twisted.internet import reactor

        try:
            serverFromString(reactor, self["listen"])
        except Exception as e:
            raise usage.UsageError(f"--listen: {self['listen']!r}: {e}") from None

    def settings(self) -> ProxySettings:
        """
        The proxy's settings from these options.
        """
        return ProxySettings(
            connectTimeout=self["connect-timeout"],
            responseTimeout=self["response-timeout"],
            idleTimeout=self["idle-timeout"],
            clientTimeout=self["client-timeout"],
            retries=self["retries"],
            retryNonIdempotent=self["retry-non-idempotent"],
            maxBodySize=self["max-body-size"],
            forwardedFor=self["forwarded-for"],
            forwarded=self["forwarded"],
            via=self["via"],
        )


class LoadBalancerService(MultiService):
    """
    The balancer: its listener, its health checks, the backend connections
    it keeps, the demo backends if it runs them, and its graceful stop.

    On SIGTERM or SIGINT it stops accepting connections, closes idle
    kept-alive ones, lets the requests in flight finish (for up to
    C{--drain-timeout} seconds, then cuts them) and exits 0.  A second signal
    cuts them at once.
    """

    _log = Logger()

    def __init__(
        self,
        config: Options,
        site: LoadBalancerSite,
        listener: IService,
        reactor: Any,
    ) -> None:
        super().__init__()
        self.config = config
        self.site = site
        self.listener = listener
        self._reactor = reactor
        self._stopping = False

    def privilegedStartService(self) -> None:
        """
        Bind the listening ports, ending with one line if one cannot be
        bound (busy, out of range, not permitted).
        """
        try:
            super().privilegedStartService()
            self.listener.privilegedStartService()
        except (CannotListenError, OverflowError, OSError) as e:
            raise SystemExit(f"txlb: cannot listen: {e}") from None

    def startService(self) -> None:
        self._log.info(
            "txlb listening on {listen}, algorithm {algo}, backends {backends}",
            listen=self.config["listen"],
            algo=self.config["algo"],
            backends=", ".join(f"{b.address} (weight {b.weight})" for b in self.config["backends"]),
        )
        super().startService()
        self.listener.startService()
        # After twistd's own handlers are in place, which would stop at once
        # and exit with the signal's status.
        self._reactor.addSystemEventTrigger("after", "startup", self._catchStopSignals)

    def _catchStopSignals(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._stopSignal)

    def _stopSignal(self, number: int, frame: object) -> None:
        name = signal.Signals(number).name
        if self._stopping:
            self._log.warn("Received {signal} again: cutting requests in flight", signal=name)
            self._reactor.callFromThread(self.site.abortConnections)
            return
        self._stopping = True
        self._log.info("Received {signal}: stopping gracefully", signal=name)
        self._reactor.callFromThread(self._reactor.stop)

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """
        Stop accepting, close idle connections, wait for the requests in
        flight (cutting them after the drain timeout), then stop the rest.
        """
        await self.listener.stopService()
        self.site.closeIdleConnections()
        resource: LoadBalancerResource = self.site.resource
        timeout = self.config["drain-timeout"]
        if resource.inFlight():
            self._log.info(
                "Waiting for {count} requests in flight (at most {timeout} s)",
                count=resource.inFlight(),
                timeout=timeout,
            )
        try:
            await resource.whenIdle().addTimeout(timeout, self._reactor)
        except TimeoutError:
            self._log.warn(
                "Cutting {count} requests still in flight after {timeout} s",
                count=resource.inFlight(),
                timeout=timeout,
            )
            self.site.abortConnections()
        await super().stopService()
        await resource.agent.pool.closeCachedConnections()


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    The balancer described by C{config}, with the demo backends if asked.
    """
    if reactor is None:
        from twisted.internet import reactor
    backends = config["backends"]
    pool = BackendPool(backends, reactor, config["max-fails"], config["fail-timeout"])
    algorithm = ALGORITHMS[config["algo"]](backends)
    agent = makeAgent(reactor, config["connect-timeout"])
    resource = LoadBalancerResource(algorithm, agent, reactor, pool, config.settings())
    site = LoadBalancerSite(resource, reactor)
    listener = strports.service(config["listen"], site, reactor=reactor)
    balancer = LoadBalancerService(config, site, listener, reactor)
    if config["demo"]:
        demo = makeBackendService([b.port for b in backends], reactor=reactor)
        demo.setServiceParent(balancer)
    if config["health-path"] is not None:
        HealthChecker(
            pool,
            config["health-path"],
            reactor,
            interval=config["health-interval"],
            timeout=config["health-timeout"],
            rise=config["health-rise"],
            fall=config["health-fall"],
        ).setServiceParent(balancer)
    return balancer

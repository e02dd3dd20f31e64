"""
The C{twistd txlb} command: its options and the service they make.
"""

from __future__ import annotations

import ipaddress
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, cast

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage

from txlb import config
from txlb.accesslog import AccessLogFile
from txlb.admin import AdminResource, AdminSite
from txlb.backend import Backend, BackendPool, parseBackend
from txlb.client import BackendClient
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
        try:
            backend = parseBackend(spec)
        except ValueError as e:
            raise usage.UsageError(f"--backends: {spec!r}: {e}") from None
        if backend.key in backends:
            raise usage.UsageError(f"--backends: {backend.address} is listed twice")
        backends[backend.key] = backend
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


def parseLogFormat(text: str) -> str:
    if text not in ("text", "json"):
        raise usage.UsageError(f"--access-log: {text!r} is not text or json")
    return text


def loopbackOnly(description: str) -> bool:
    """
    Whether an endpoint description listens on loopback (or a UNIX
    socket) only; anything this cannot tell counts as not.
    """
    kind, _, rest = description.partition(":")
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for argument in re.split(r"(?<!\\):", rest):  # colons escaped as \: are in values
        name, equals, value = argument.partition("=")
        if equals and name == "interface":
            value = value.replace("\\", "")
            if value == "localhost":
                return True
            try:
                return ipaddress.ip_address(value).is_loopback
            except ValueError:
                return False
    return False


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
        # Operations.
        ["config", "c", None, "TOML file of these options; SIGHUP reloads it."],
        [
            "access-log",
            None,
            "text",
            "Access log format: text (one line) or json (one object).",
            parseLogFormat,
        ],
        [
            "access-log-file",
            None,
            None,
            "Write the access log to this file, in batches, instead of the main log "
            "(failures go to both); SIGHUP reopens it.",
        ],
        ["admin", None, None, "Endpoint of the admin API and status page (off if absent)."],
        ["admin-token", None, None, "Bearer token the admin API's changes need."],
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

    #: The command line given, which overrides the configuration file.
    commandLine: list[str] = []
    _fromFile = False

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse as usual, but end a bad command line with one line naming what
        is wrong, not twistd's whole usage text.
        """
        self.commandLine = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(f"txlb: {e} (see twistd txlb --help)") from None

    @classmethod
    def fromFile(cls, path: str, commandLine: list[str]) -> Options:
        """
        The options of the configuration file at C{path}, overridden by
        C{commandLine}, checked as a command line is.

        @raise usage.UsageError: With one line saying what is wrong.
        """
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
            parameters = {row[0] for row in cast(list[list[str]], cls.optParameters)}
            flags = {row[0] for row in cast(list[list[str]], cls.optFlags)}
            fileArguments = config.arguments(text, parameters, flags)
        except (OSError, UnicodeDecodeError, config.ConfigError) as e:
            raise usage.UsageError(f"--config {path}: {e}") from None
        options = cls()
        options._fromFile = True
        options.commandLine = commandLine
        usage.Options.parseOptions(options, fileArguments + commandLine)
        return options

    def postOptions(self) -> None:
        if self["config"] is not None and not self._fromFile:
            self.update(self.fromFile(self["config"], self.commandLine))
            return
        if self["demo"]:
            if self["backends"] is not None:
                raise usage.UsageError("--demo starts its own backends: drop --backends")
            self["backends"] = parseBackends(DEMO_BACKENDS)
            self["algo"] = self["algo"] or "weighted"
        if self["backends"] is None:
            raise usage.UsageError("no backends: give --backends HOST:PORT[,...] or --demo")
        self["algo"] = self["algo"] or "roundrobin"
        from twisted.internet import reactor

        for option in ("listen", "admin"):
            if self[option] is None:
                continue
            try:
                serverFromString(reactor, self[option])
            except Exception as e:
                raise usage.UsageError(f"--{option}: {self[option]!r}: {e}") from None
        if (
            self["admin"] is not None
            and not self["admin-token"]
            and not loopbackOnly(self["admin"])
        ):
            raise usage.UsageError(
                f"--admin: {self['admin']!r} is not loopback-only: give --admin-token, "
                "or listen on 127.0.0.1 (e.g. tcp:9000:interface=127.0.0.1)"
            )

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
            accessLog=self["access-log"],
        )


#: Seconds between two looks at whether requests are still in flight during
#: a graceful stop.
DRAIN_POLL = 0.05


class LoadBalancerService(MultiService):
    """
    The balancer: its listener, its health checks, its admin listener, the
    backend connections it keeps, the demo backends if it runs them, its
    configuration reloads and its graceful stop.

    On SIGHUP it re-reads C{--config}: an invalid file is logged and the
    running configuration stays; a valid one is applied at once (see
    L{apply}).  On SIGTERM or SIGINT it stops accepting connections, closes
    idle kept-alive ones, lets the requests in flight finish (for up to
    C{--drain-timeout} seconds, then cuts them) and exits 0.  A second signal
    cuts them at once.

    @ivar started: When the service started, for the uptime.
    """

    _log = Logger()

    def __init__(self, config: Options, site: LoadBalancerSite, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.site = site
        self.resource: LoadBalancerResource = site.resource
        self.started = reactor.seconds()
        self.reactor = reactor
        self._stopping = False
        self._health: HealthChecker | None = None
        self.listeners = [strports.service(config["listen"], site, reactor=reactor)]
        if config["admin"] is not None:
            admin = AdminSite(AdminResource(self, config["admin-token"]))
            self.listeners.append(strports.service(config["admin"], admin, reactor=reactor))

    def privilegedStartService(self) -> None:
        """
        Bind the listening ports, ending with one line if one cannot be
        bound (busy, out of range, not permitted).
        """
        self._openAccessLog(self.config["access-log-file"], failHard=True)
        try:
            super().privilegedStartService()
            for listener in self.listeners:
                listener.privilegedStartService()
        except (CannotListenError, OverflowError, OSError) as e:
            raise SystemExit(f"txlb: cannot listen: {e}") from None

    def _openAccessLog(self, path: str | None, failHard: bool = False) -> None:
        """
        Write the access log to C{path} from now on (to the main log if
        L{None}), closing the file it went to.
        """
        old = self.resource.accessLogFile
        try:
            self.resource.accessLogFile = (
                None if path is None else AccessLogFile(path, self.reactor)
            )
        except OSError as e:
            if failHard:
                raise SystemExit(f"txlb: --access-log-file: {e}") from None
            self._log.error("Cannot open the access log, it stays as it was: {why}", why=e)
            return
        if old is not None:
            old.close()

    def startService(self) -> None:
        self._log.info(
            "txlb listening on {listen}, algorithm {algo}, backends {backends}",
            listen=self.config["listen"],
            algo=self.config["algo"],
            backends=", ".join(f"{b.address} (weight {b.weight})" for b in self.config["backends"]),
        )
        self.started = self.reactor.seconds()
        self._checkHealth(self.config)
        super().startService()
        for listener in self.listeners:
            listener.startService()
        # After twistd's own handlers are in place, which would stop at once
        # and exit with the signal's status.
        self.reactor.addSystemEventTrigger("after", "startup", self._catchSignals)

    def _checkHealth(self, config: Options) -> None:
        """
        Run the active health checks C{config} asks for, instead of the
        current ones.
        """
        if self._health is not None:
            self._health.disownServiceParent()
            self._health = None
            for backend in self.resource.pool.backends:
                # Only new checks may say a backend is down now.
                backend.healthy, backend.health = True, None
        if config["health-path"] is not None:
            self._health = HealthChecker(
                self.resource.pool,
                config["health-path"],
                self.reactor,
                interval=config["health-interval"],
                timeout=config["health-timeout"],
                rise=config["health-rise"],
                fall=config["health-fall"],
                metrics=self.resource.metrics,
            )
            self._health.setServiceParent(self)

    def _catchSignals(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._stopSignal)
        signal.signal(signal.SIGHUP, self._reloadSignal)

    def _reloadSignal(self, number: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """
        Re-read the configuration file and apply it if it is valid.

        @return: Whether it was applied.
        """
        accessLogFile = self.resource.accessLogFile
        if accessLogFile is not None:
            # After logrotate moved it away.
            accessLogFile.reopen()
        path = self.config["config"]
        if path is None:
            if accessLogFile is None:
                self._log.warn("Nothing to reload: txlb was started without --config")
            return False
        try:
            new = Options.fromFile(path, self.config.commandLine)
        except usage.UsageError as e:
            self.resource.metrics.reloads.labels("failure").inc()
            self._log.error("Reload failed, the configuration stays as it was: {why}", why=e)
            return False
        self.apply(new)
        self.resource.metrics.reloads.labels("success").inc()
        self._log.info("Reloaded {path}", path=path)
        return True

    def apply(self, new: Options) -> None:
        """
        Switch to C{new} at once: new requests use it, requests in flight
        finish on their backends, client connections stay open, and the
        counts of backends that stay are kept.  Listening addresses and the
        admin token only change with a restart.
        """
        for option in ("listen", "admin", "admin-token"):
            if new[option] != self.config[option]:
                self._log.warn(
                    "--{option} changes need a restart; it stays {value!r}",
                    option=option,
                    value=self.config[option],
                )
                new[option] = self.config[option]
        resource = self.resource
        resource.pool.maxFails = new["max-fails"]
        resource.pool.failTimeout = new["fail-timeout"]
        resource.client.connectTimeout = new["connect-timeout"]
        resource.setBackends(new["backends"], ALGORITHMS[new["algo"]])
        for backend in resource.pool.backends:
            # The file lists it: it serves, whatever the admin API said.
            backend.draining = False
        resource.settings = new.settings()
        if new["access-log-file"] != self.config["access-log-file"]:
            self._openAccessLog(new["access-log-file"])
        # The idle timeout of client connections made from now on.
        self.site.timeOut = new["client-timeout"]
        self._checkHealth(new)
        self.config = new

    def _stopSignal(self, number: int, frame: object) -> None:
        name = signal.Signals(number).name
        if self._stopping:
            self._log.warn("Received {signal} again: cutting requests in flight", signal=name)
            self.reactor.callFromThread(self.site.abortConnections)
            return
        self._stopping = True
        self._log.info("Received {signal}: stopping gracefully", signal=name)
        self.reactor.callFromThread(self.reactor.stop)

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """
        Stop accepting, close idle connections, wait for the requests in
        flight (cutting them after the drain timeout), then stop the rest;
        the admin listener last, so the drain can be watched.
        """
        await self.listeners[0].stopService()
        self.site.closeIdleConnections()
        resource = self.resource
        timeout = self.config["drain-timeout"]
        if resource.inFlight():
            self._log.info(
                "Waiting for {count} requests in flight (at most {timeout} s)",
                count=resource.inFlight(),
                timeout=timeout,
            )
        deadline = self.reactor.seconds() + timeout
        while resource.inFlight() or self.site.busy():
            if self.reactor.seconds() >= deadline:
                self._log.warn(
                    "Cutting {count} requests still in flight after {timeout} s",
                    count=resource.inFlight(),
                    timeout=timeout,
                )
                self.site.abortConnections()
                break
            await deferLater(self.reactor, DRAIN_POLL)
        await super().stopService()
        for listener in self.listeners[1:]:
            await listener.stopService()
        await resource.client.closeCachedConnections()
        self._openAccessLog(None)


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    The balancer described by C{config}, with the demo backends if asked.
    """
    if reactor is None:
        from twisted.internet import reactor
    backends = config["backends"]
    pool = BackendPool(backends, reactor, config["max-fails"], config["fail-timeout"])
    algorithm = ALGORITHMS[config["algo"]](backends)
    client = BackendClient(reactor, config["connect-timeout"])
    resource = LoadBalancerResource(algorithm, client, reactor, pool, config.settings())
    balancer = LoadBalancerService(config, LoadBalancerSite(resource, reactor), reactor)
    if config["demo"]:
        demo = makeBackendService([b.port for b in backends], reactor=reactor)
        demo.setServiceParent(balancer)
    return balancer

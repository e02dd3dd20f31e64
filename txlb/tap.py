"""
The C{twistd txlb} command: its options and the service they make.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage

from txlb.backend import Backend
from txlb.iphash import IPHash
from txlb.leastconn import LeastConnections
from txlb.proxy import LoadBalancerResource, LoadBalancerSite, makeAgent
from txlb.roundrobin import RoundRobin
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


def parseSeconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0
    if not 0 < seconds < float("inf"):
        raise usage.UsageError(f"{text!r} is not a positive number of seconds")
    return seconds


class Options(usage.Options):
    synopsis = "[--listen DESCRIPTION] (--backends LIST | --demo) [--algo NAME]"
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
        [
            "connect-timeout",
            None,
            5.0,
            "Seconds to wait for a connection to a backend.",
            parseSeconds,
        ],
    ]
    optFlags = [
        [
            "demo",
            None,
            "Also serve three test backends on 127.0.0.1:8081-8083 and "
            "balance over them (weights 1:3:2, weighted algorithm unless "
            "--algo says otherwise).",
        ],
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


class LoadBalancerService(MultiService):
    """
    The balancer: its listener, the backend connections it keeps, and the
    demo backends if it runs them.
    """

    _log = Logger()

    def __init__(self, config: Options, agent: Any) -> None:
        super().__init__()
        self.config = config
        self.agent = agent

    def privilegedStartService(self) -> None:
        """
        Bind the listening ports, ending with one line if one cannot be
        bound (busy, out of range, not permitted).
        """
        try:
            super().privilegedStartService()
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

    def stopService(self) -> Any:
        d = super().stopService()
        d.addCallback(lambda _: self.agent.pool.closeCachedConnections())
        return d


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    The balancer described by C{config}, with the demo backends if asked.
    """
    if reactor is None:
        from twisted.internet import reactor
    agent = makeAgent(reactor, config["connect-timeout"])
    algorithm = ALGORITHMS[config["algo"]](config["backends"])
    site = LoadBalancerSite(LoadBalancerResource(algorithm, agent, reactor), reactor)
    balancer = LoadBalancerService(config, agent)
    if config["demo"]:
        demo = makeBackendService([b.port for b in config["backends"]], reactor=reactor)
        demo.setServiceParent(balancer)
    strports.service(config["listen"], site, reactor=reactor).setServiceParent(balancer)
    return balancer

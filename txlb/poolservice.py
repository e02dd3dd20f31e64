"""
One pool of backends at run time: the resource that forwards to it, its
health checks, its backends from DNS, what the admin API changed, and its
part of a reload.

L{txlb.service.LoadBalancerService} runs one L{PoolService} per pool of the
configuration (the command line's backends are the pool C{default}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.application.service import MultiService
from twisted.logger import Logger

from txlb.accesslog import AccessLog
from txlb.adminstate import AdminState
from txlb.backend import Backend, BackendPool
from txlb.client import BackendClient
from txlb.dns import DNSDiscovery, DNSName, TCPResolver, makeResolver
from txlb.health import HealthChecker
from txlb.interfaces import IAlgorithm
from txlb.metrics import Metrics
from txlb.proxy import LoadBalancerResource
from txlb.settings import ProxySettings
from txlb.sticky import StickyCookie

#: Seconds between two looks at whether a backend that left DNS has
#: finished its requests, and can go.
LEAVING_POLL = 1.0

#: The options whose change on a reload starts DNS discovery afresh.
DNS_OPTIONS = ("backends-dns", "dns-server", "dns-min-ttl", "dns-max-ttl")

#: The options that make a pool's algorithm: when none of them, nor the
#: backends, changes on a reload, the algorithm and its state are kept.
ALGORITHM_OPTIONS = ("algo", "hash-key", "hash-balance-factor")


class PoolConfiguration(Protocol):
    """
    What a pool needs of its options: those of C{twistd txlb} by long
    name, and what follows from them (L{txlb.tap.PoolSettings}).

    @ivar name: The pool's name.
    @ivar optParameters: The options it takes with a value, as
        L{twisted.python.usage.Options} lists them.
    @ivar optFlags: The options it takes without one.
    """

    name: str
    optParameters: Any
    optFlags: Any

    def __getitem__(self, option: str) -> Any: ...

    def __setitem__(self, option: str, value: Any) -> None: ...

    def settings(self) -> ProxySettings:
        """
        The proxy's settings.
        """

    def algorithm(self) -> Callable[[Sequence[Backend]], IAlgorithm]:
        """
        What makes the algorithm these options name, from the backends.
        """

    def shadow(self) -> Callable[[Sequence[Backend]], IAlgorithm] | None:
        """
        What makes the shadow algorithm these options name, if any.
        """

    def sticky(self, clock: Any) -> StickyCookie | None:
        """
        The sticky cookie these options ask for, if any.
        """

    def checkedAlgorithm(
        self, option: str, spec: str, backends: Sequence[Backend]
    ) -> Callable[[Sequence[Backend]], IAlgorithm]:
        """
        What makes the algorithm C{spec} names, checked on C{backends}.

        @raise usage.UsageError: With one line saying what is wrong.
        """


def makePool(
    options: PoolConfiguration, clock: Any, metrics: Metrics, accessLog: AccessLog
) -> LoadBalancerResource:
    """
    The pool C{options} describe, counted in C{metrics} and logged in
    C{accessLog}, which every pool of a balancer shares.
    """
    backends = options["backends"]
    members = BackendPool(
        backends, clock, options["max-fails"], options["fail-timeout"], options["slow-start"]
    )
    makeAlgorithm = options.algorithm()
    client = BackendClient(clock, options["connect-timeout"], tls=options["backend-tls"])
    pool = LoadBalancerResource(
        makeAlgorithm(backends),
        client,
        clock,
        members,
        options.settings(),
        makeAlgorithm,
        name=options.name,
        metrics=metrics,
        accessLog=accessLog,
    )
    pool.useShadow(options["shadow-algo"], options.shadow())
    pool.sticky = options.sticky(clock)
    return pool


class PoolService(MultiService):
    """
    One pool at run time.

    With C{backends-dns}, the backends DNS gives join the pool, and those
    it no longer gives are drained, then removed once their requests are
    over.  A backend that C{backends} lists is never touched by DNS.

    @ivar options: The pool's options, which a reload replaces.
    @ivar resource: The pool's L{LoadBalancerResource}.
    @ivar adminState: What the admin API changed about its backends, until
        the next reload.
    """

    _log = Logger()

    def __init__(
        self,
        options: PoolConfiguration,
        resource: LoadBalancerResource,
        clock: Any,
        whenBackends: Callable[[], object] = lambda: None,
    ) -> None:
        """
        @param whenBackends: Called whenever DNS changed the backends.
        """
        super().__init__()
        self.setName(options.name)
        self.options = options
        self.resource = resource
        self.clock = clock
        self.adminState = AdminState()
        self._whenBackends = whenBackends
        self._health: HealthChecker | None = None
        self._dns: DNSDiscovery | None = None
        #: The backends in the pool because DNS gives them.
        self._fromDNS: set[tuple[str, int]] = set()
        #: Those DNS no longer gives, draining until their requests are over.
        self._leaving: set[Backend] = set()
        self._sweeping: Any = None

    @property
    def waiting(self) -> bool:
        """
        Whether it has no backends yet: DNS has not given any.
        """
        return not self.resource.pool.backends

    def startService(self) -> None:
        self._checkHealth(self.options)
        super().startService()
        self._discover(self.options, {})

    def stopService(self) -> Any:
        self._stopDiscovery()
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        return super().stopService()

    def _checkHealth(self, options: PoolConfiguration) -> None:
        """
        Run the active health checks C{options} ask for, instead of the
        current ones.
        """
        if self._health is not None:
            self._health.disownServiceParent()
            self._health = None
            for backend in self.resource.pool.backends:
                # Only new checks may say a backend is down now.
                backend.healthy, backend.health = True, None
        if options["health-path"] is not None:
            self._health = HealthChecker(
                self.resource.pool,
                options["health-path"],
                self.clock,
                interval=options["health-interval"],
                timeout=options["health-timeout"],
                rise=options["health-rise"],
                fall=options["health-fall"],
                metrics=self.resource.metrics,
                tls=self.resource.client.tls,
                poolName=self.options.name,
            )
            self._health.setServiceParent(self)

    def _discover(self, options: PoolConfiguration, lastGood: dict[DNSName, list[Backend]]) -> None:
        """
        Follow the DNS names C{options} give, instead of the current ones,
        starting from C{lastGood}.
        """
        self._stopDiscovery()
        if not options["backends-dns"]:
            if self._fromDNS:
                self._dnsChanged([])
            return
        self._dns = DNSDiscovery(
            options["backends-dns"],
            getattr(self.parent, "resolver", None)
            or makeResolver(options["dns-server"], self.clock),
            self.clock,
            self._dnsChanged,
            minTTL=options["dns-min-ttl"],
            maxTTL=options["dns-max-ttl"],
            metrics=self.resource.metrics,
            lastGood=lastGood,
        )
        self._dns.setServiceParent(self)

    def _stopDiscovery(self) -> None:
        """
        Stop following DNS, and close the connections to its servers.
        """
        if self._dns is None:
            return
        self._dns.disownServiceParent()
        if isinstance(self._dns.resolver, TCPResolver):
            self._dns.resolver.close()
        self._dns = None

    def _dnsChanged(self, backends: list[Backend]) -> None:
        """
        Balance over C{backends}, the backends DNS gives now, and the
        others: the ones DNS gave before and no longer does drain.  What the
        admin API changed about an address holds (L{AdminState}).
        """
        static = {b.key for b in self.options["backends"]}
        wanted = {}
        for backend in backends:
            changed = self.adminState.applied(backend)
            if changed is not None and changed.key not in static:
                wanted[changed.key] = changed
        fromDNS = set(wanted)
        merged = []
        for backend in self.resource.pool.backends:
            new = wanted.pop(backend.key, None)
            if new is not None:
                if backend in self._leaving:
                    self._leaving.discard(backend)
                    backend.draining = new.draining
                # setBackends keeps the object, with the weight DNS (or the
                # admin API) gives.
                merged.append(new)
            elif backend in self._leaving:
                # Still draining: the sweep removes it.
                merged.append(backend)
            elif backend.key in self._fromDNS:
                if backend.active:
                    self._log.info(
                        "Backend {backend} of pool {pool} left DNS: draining its {count} requests",
                        backend=backend.address,
                        pool=self.name,
                        count=backend.active,
                    )
                    backend.draining = True
                    self._leaving.add(backend)
                    merged.append(backend)
                else:
                    self._log.info(
                        "Backend {backend} of pool {pool} left DNS: removed",
                        backend=backend.address,
                        pool=self.name,
                    )
            else:
                merged.append(backend)
        merged += wanted.values()
        if not merged:
            return
        self._fromDNS = fromDNS
        self.resource.setBackends(merged)
        if self._leaving and self._sweeping is None:
            self._sweeping = self.clock.callLater(LEAVING_POLL, self._sweep)
        self._whenBackends()

    def _sweep(self) -> None:
        """
        Remove the backends that left DNS and have finished their requests.
        """
        self._sweeping = None
        done = {b for b in self._leaving if not b.active}
        if done:
            self._leaving -= done
            self.resource.setBackends([b for b in self.resource.pool.backends if b not in done])
            for backend in done:
                self._log.info(
                    "Removed backend {backend} of pool {pool}, drained",
                    backend=backend.address,
                    pool=self.name,
                )
        if self._leaving:
            self._sweeping = self.clock.callLater(LEAVING_POLL, self._sweep)

    def apply(self, new: PoolConfiguration) -> None:
        """
        Switch to C{new} at once: new requests use it, requests in flight
        finish on their backends, and the counts and health of backends that
        stay are kept; so is the algorithm, with its state (an EWMA's
        estimates, a round robin's place), when neither the backends nor the
        options that make it changed.  The TLS files are read again, and
        idle connections to C{https://} backends closed, so new ones use
        them.  What the admin API changed is forgotten: the file says what
        the backends are.
        """
        old = self.options
        self.adminState.clear()
        resource = self.resource
        resource.pool.maxFails = new["max-fails"]
        resource.pool.failTimeout = new["fail-timeout"]
        resource.pool.slowStart = new["slow-start"]
        resource.client.connectTimeout = new["connect-timeout"]
        # Read again: the files may have changed under the same names.
        resource.client.setTLS(new["backend-tls"])
        static = {b.key for b in new["backends"]}
        self._fromDNS -= static
        self._leaving = {b for b in self._leaving if b.key not in static}
        fromDNS = [
            b
            for b in resource.pool.backends
            if b.key not in static and (b.key in self._fromDNS or b in self._leaving)
        ]
        shadow = resource.shadow
        if shadow is not None and shadow.name == new["shadow-algo"]:
            # The same shadow, perhaps with new options: its counts go on,
            # and setBackends makes it again.
            shadow.makeAlgorithm = new.shadow()  # type: ignore[assignment]
        else:
            resource.useShadow(new["shadow-algo"], new.shadow())
        backends = [*new["backends"], *fromDNS]
        if _sameBackends(resource.pool.backends, backends) and all(
            new[option] == old[option] for option in ALGORITHM_OPTIONS
        ):
            for backend, wanted in zip(resource.pool.backends, backends):
                backend.draining = False
                # Its own limit (=WEIGHT/MAXCONN) may have changed.
                backend.maxConn = wanted.maxConn
            resource.admission.setBackends(resource.pool.backends)
        else:
            resource.setBackends(backends, new.algorithm())
        if new["sticky-cookie"] != old["sticky-cookie"]:
            resource.sticky = new.sticky(self.clock)
        for backend in resource.pool.backends:
            if backend not in self._leaving:
                # The file or DNS lists it: it serves, whatever the admin API said.
                backend.draining = False
        resource.settings = new.settings()
        self._checkHealth(new)
        self.options = new
        if any(new[option] != old[option] for option in DNS_OPTIONS):
            self._discover(new, self._dns.lastGood if self._dns is not None else {})
        elif self._dns is not None:
            # A backend the file no longer lists may still be in DNS.
            self._dnsChanged(self._dns.backends)

    def switchAlgorithm(self, changes: dict[str, str | None]) -> None:
        """
        Switch the algorithm (C{changes["algo"]}) and/or the shadow
        (C{changes["shadow-algo"]}, C{None} for none) at once, after
        checking every one: requests in flight keep their backends, new
        ones (and retries) are picked by the new algorithm.  A reload sets
        them to the file's again.

        @raise usage.UsageError: With one line, changing nothing.
        """
        resource = self.resource
        backends = resource.pool.backends
        made = {
            option: None if spec is None else self.options.checkedAlgorithm(option, spec, backends)
            for option, spec in changes.items()
        }
        if "shadow-algo" in changes:
            resource.useShadow(changes["shadow-algo"], made["shadow-algo"])
        if made.get("algo") is not None:
            resource.setBackends(backends, made["algo"])
        for option, spec in changes.items():
            self.options[option] = spec
        self._log.info(
            "Pool {pool}: algorithm now {algo}, shadow {shadow}",
            pool=self.name,
            algo=self.options["algo"],
            shadow=self.options["shadow-algo"] or "none",
        )


def _sameBackends(current: Sequence[Backend], wanted: Sequence[Backend]) -> bool:
    """
    Whether C{wanted} are the backends of C{current}, in the same order,
    with the same weights and schemes.
    """
    return [(b.key, b.weight, b.tls) for b in current] == [(b.key, b.weight, b.tls) for b in wanted]

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
from twisted.python import usage

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

#: The sources of backends beside the configuration, most trusted first:
#: etcd's members (L{txlb.fleet}) and DNS's answers.
ETCD, DNS = "etcd", "DNS"
SOURCES = (ETCD, DNS)

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
        #: Whether the admin state is the fleet's (L{useFleetState}), which a
        #: reload keeps.
        self.sharedState = False
        #: The algorithm and shadow the fleet's admin API switched to, by
        #: option, which hold over the configuration's.
        self.algorithmOverride: dict[str, str | None] = {}
        self._configured = {option: options[option] for option in ("algo", "shadow-algo")}
        self._whenBackends = whenBackends
        self._health: HealthChecker | None = None
        self._dns: DNSDiscovery | None = None
        #: The backends each source (L{DNS}, L{ETCD}) gives now.
        self._sources: dict[str, list[Backend]] = {}
        #: The source of each backend in the pool because a source gives it.
        self._origins: dict[tuple[str, int], str] = {}
        #: Those no longer given, draining until their requests are over.
        self._leaving: set[Backend] = set()
        self._sweeping: Any = None

    @property
    def waiting(self) -> bool:
        """
        Whether it has no backends yet: DNS (or etcd) has not given any.
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
            if self._sources.get(DNS):
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
        DNS gives C{backends} now: balance over them and the others (see
        L{_merge}).  An answer that would leave the pool empty is not
        applied: the last backends stay.
        """
        self._sources[DNS] = backends
        self._merge(keepOne=True)

    def useFleetState(
        self,
        members: list[Backend],
        state: AdminState,
        algorithm: dict[str, str | None],
    ) -> None:
        """
        Apply what etcd holds for this pool (L{txlb.fleet}): its C{members}
        (which join and leave as DNS's backends do, and may leave the pool
        empty: etcd's set is the fleet's word, not an answer that may be
        wrong), the admin API's changes every instance shares (which a
        reload keeps: only the admin API or etcd undoes them), and the
        algorithm and shadow the admin API switched to (C{algo},
        C{shadow-algo}; those it leaves out are the configuration's).
        """
        self.sharedState = True
        self._sources[ETCD] = members
        self.adminState = state
        self._merge(keepOne=False)
        if algorithm != self.algorithmOverride:
            self.algorithmOverride = algorithm
            wanted = {**self._configured, **algorithm}
            changes = {o: v for o, v in wanted.items() if self.options[o] != v}
            if changes:
                try:
                    self.switchAlgorithm(changes)
                except usage.UsageError as e:
                    self._log.error(
                        "Pool {pool}: etcd's algorithm cannot be used, it stays {algo}: {why}",
                        pool=self.name,
                        algo=self.options["algo"],
                        why=e,
                    )

    def _merge(self, keepOne: bool) -> None:
        """
        Balance over what the pool should have now: its static backends,
        those its sources give (etcd's members first: a registration's
        weight beats DNS's; the file's beat both), and those the admin API
        added, each with what the admin API changed about its address
        (L{AdminState}).  A backend that was in the pool and no longer
        should be (it left DNS or etcd, or the admin API removed it) is
        drained, and removed once its requests are over.  The algorithm is
        made again only when the backends or their weights changed.

        @param keepOne: Apply nothing that would leave the pool empty.
        """
        state = self.adminState
        wanted: dict[tuple[str, int], Backend] = {}
        static = {b.key for b in self.options["backends"]}
        for backend in self.options["backends"]:
            changed = state.applied(backend)
            if changed is not None:
                wanted[changed.key] = changed
        origins = {}
        for source in SOURCES:
            for backend in self._sources.get(source, ()):
                if backend.key in static or backend.key in wanted:
                    continue
                changed = state.applied(backend)
                if changed is not None:
                    wanted[changed.key] = changed
                    origins[changed.key] = source
        for backend in state.added.values():
            if backend.key not in wanted and backend.key not in state.removed:
                wanted[backend.key] = state.applied(backend) or backend
        current = self.resource.pool.backends
        merged = []
        for backend in current:
            new = wanted.pop(backend.key, None)
            if new is not None:
                if backend in self._leaving:
                    self._leaving.discard(backend)
                backend.draining = new.draining
                # setBackends keeps the object, with the weight given now.
                merged.append(new)
            elif backend in self._leaving:
                # Still draining: the sweep removes it.
                merged.append(backend)
            else:
                why = self._origins.get(backend.key)
                why = f"left {why}" if why else "no longer in the pool"
                if backend.active:
                    self._log.info(
                        "Backend {backend} of pool {pool} {why}: draining its {count} requests",
                        backend=backend.address,
                        pool=self.name,
                        why=why,
                        count=backend.active,
                    )
                    backend.draining = True
                    self._leaving.add(backend)
                    merged.append(backend)
                else:
                    self._log.info(
                        "Backend {backend} of pool {pool} {why}: removed",
                        backend=backend.address,
                        pool=self.name,
                        why=why,
                    )
        merged += wanted.values()
        if not merged and keepOne:
            return
        self._origins = origins
        if not _sameBackends(current, merged):
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
        if not self.sharedState:
            self.adminState.clear()
        state = self.adminState
        resource = self.resource
        resource.pool.maxFails = new["max-fails"]
        resource.pool.failTimeout = new["fail-timeout"]
        resource.pool.slowStart = new["slow-start"]
        resource.client.connectTimeout = new["connect-timeout"]
        # Read again: the files may have changed under the same names.
        resource.client.setTLS(new["backend-tls"])
        static = {b.key for b in new["backends"]}
        for key in static:
            self._origins.pop(key, None)
        self._leaving = {b for b in self._leaving if b.key not in static}
        configured = [c for c in map(state.applied, new["backends"]) if c is not None]
        others = [
            b
            for b in resource.pool.backends
            if b.key not in static
            and (b.key in self._origins or b in self._leaving or b.key in state.added)
        ]
        backends = [*configured, *others]
        self._configured = {option: new[option] for option in ("algo", "shadow-algo")}
        self._overrideAlgorithm(new, backends)
        shadow = resource.shadow
        if shadow is not None and shadow.name == new["shadow-algo"]:
            # The same shadow, perhaps with new options: its counts go on,
            # and setBackends makes it again.
            shadow.makeAlgorithm = new.shadow()  # type: ignore[assignment]
        else:
            resource.useShadow(new["shadow-algo"], new.shadow())
        if _sameBackends(resource.pool.backends, backends) and all(
            new[option] == old[option] for option in ALGORITHM_OPTIONS
        ):
            for backend, wanted in zip(resource.pool.backends, backends):
                # Its own limit (=WEIGHT/MAXCONN) may have changed.
                backend.maxConn = wanted.maxConn
            resource.admission.setBackends(resource.pool.backends)
        else:
            resource.setBackends(backends, new.algorithm())
        if new["sticky-cookie"] != old["sticky-cookie"]:
            resource.sticky = new.sticky(self.clock)
        for backend in resource.pool.backends:
            if backend not in self._leaving:
                # The configuration or a source lists it: it serves, unless
                # the fleet's shared admin state drains it.
                backend.draining = backend.key in state.drained
        resource.settings = new.settings()
        self._checkHealth(new)
        self.options = new
        if any(new[option] != old[option] for option in DNS_OPTIONS):
            self._discover(new, self._dns.lastGood if self._dns is not None else {})
        if self._sources:
            # A backend the configuration no longer lists may still be in
            # DNS or etcd.
            self._merge(keepOne=True)

    def _overrideAlgorithm(self, new: PoolConfiguration, backends: list[Backend]) -> None:
        """
        Put the fleet's algorithm switch (L{useFleetState}) into C{new},
        if it works with C{new}'s options.
        """
        for option, spec in self.algorithmOverride.items():
            if spec is not None:
                try:
                    new.checkedAlgorithm(option, spec, backends)
                except usage.UsageError as e:
                    self._log.error(
                        "Pool {pool}: etcd's {option} {spec} does not work with the new "
                        "configuration, which names {configured}: {why}",
                        pool=self.name,
                        option=option,
                        spec=spec,
                        configured=new[option],
                        why=e,
                    )
                    continue
            new[option] = spec

    @property
    def configuredAlgorithm(self) -> dict[str, str | None]:
        """
        The algorithm and shadow the configuration names (C{algo},
        C{shadow-algo}), whatever the admin API switched to.
        """
        return dict(self._configured)

    def checkAlgorithm(self, changes: dict[str, str | None]) -> None:
        """
        Check that C{changes} (C{algo}, C{shadow-algo}) name algorithms
        that work on the pool's backends, changing nothing.

        @raise usage.UsageError: With one line saying what is wrong.
        """
        self._made(changes)

    def _made(self, changes: dict[str, str | None]) -> dict[str, Any]:
        """
        What makes each algorithm C{changes} names, checked.
        """
        backends = self.resource.pool.backends
        return {
            option: None if spec is None else self.options.checkedAlgorithm(option, spec, backends)
            for option, spec in changes.items()
        }

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
        made = self._made(changes)
        if "shadow-algo" in changes:
            resource.useShadow(changes["shadow-algo"], made["shadow-algo"])
        if made.get("algo") is not None:
            resource.setBackends(resource.pool.backends, made["algo"])
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

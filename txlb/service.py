"""
The balancer as a twistd service: its listeners, health checks, admin API,
configuration reloads and graceful stop.

L{txlb.tap} builds it from the command line, as Twisted's own C{tap}
modules build theirs; this module knows the options only through
L{Configuration}, so that it need not import the module that imports it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage

from txlb.accesslog import AccessLogFile
from txlb.admin import AdminResource, AdminSite
from txlb.adminstate import AdminState
from txlb.backend import Backend
from txlb.clientlimits import ClientLimits
from txlb.dns import DNSDiscovery, DNSName, TCPResolver, makeResolver
from txlb.health import HealthChecker
from txlb.interfaces import IAlgorithm
from txlb.proxy import LoadBalancerResource
from txlb.server import LoadBalancerSite, TLSListeningReactor
from txlb.settings import ProxySettings
from txlb.sticky import StickyCookie


class Configuration(Protocol):
    """
    What the service needs of its configuration: the options of
    C{twistd txlb} by long name, and what follows from them, as
    L{txlb.tap.Options} provides them.

    @ivar commandLine: The command line given, which overrides the
        configuration file on a reload.
    """

    commandLine: list[str]
    #: The options that take no value, as L{usage.Options} lists them.
    optFlags: list[list[str | None]]

    def __getitem__(self, option: str) -> Any: ...

    def __setitem__(self, option: str, value: Any) -> None: ...

    def keys(self) -> Iterable[str]:
        """
        The long names of the options.
        """

    def fromFile(self, path: str, commandLine: list[str]) -> Configuration:
        """
        The configuration the file at C{path} gives, overridden by
        C{commandLine}.

        @raise usage.UsageError: With one line saying what is wrong.
        """

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

    def configureLimits(self, limits: ClientLimits) -> None:
        """
        Set the client limits as these options say.
        """


class StartupError(Exception):
    """
    Something the balancer needs to start cannot be had; the message says
    what, in one line.
    """


#: Seconds between two looks at whether requests are still in flight during
#: a graceful stop.
DRAIN_POLL = 0.05

#: Seconds between two looks at whether a backend that left DNS has
#: finished its requests, and can go.
LEAVING_POLL = 1.0

#: The options whose change on a reload starts DNS discovery afresh.
DNS_OPTIONS = ("backends-dns", "dns-server", "dns-min-ttl", "dns-max-ttl")


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

    With C{--backends-dns}, the backends DNS gives join the pool, and those
    it no longer gives are drained, then removed once their requests are
    over.  A backend that C{--backends} lists is never touched by DNS.
    Without static backends, the main listener starts only once DNS gave
    some: until then there is nothing to forward to.

    @ivar started: When the service started, for the uptime.
    @ivar resolver: The twisted.names resolver DNS names are resolved with,
        or C{None} for one asking C{--dns-server} (or the system's servers).
    @ivar stopSignals: The signals that stop it gracefully; a worker of
        C{--workers} ignores SIGINT, which a terminal's Ctrl-C sends to its
        supervisor too, and stops on the SIGTERM the supervisor sends.
    """

    resolver: Any = None

    _log = Logger()
    stopSignals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

    def __init__(
        self,
        config: Configuration,
        site: LoadBalancerSite,
        reactor: Any,
        endpoints: tuple[IStreamServerEndpoint, IStreamServerEndpoint | None] | None = None,
    ) -> None:
        """
        @param endpoints: The listening and admin endpoints, instead of
            those C{--listen} and C{--admin} describe (a worker's inherited
            sockets).
        """
        super().__init__()
        self.config = config
        self.site = site
        self.resource: LoadBalancerResource = site.resource
        self.started = reactor.seconds()
        self.reactor = reactor
        self._stopping = False
        self._health: HealthChecker | None = None
        self._dns: DNSDiscovery | None = None
        #: The backends in the pool because DNS gives them.
        self._fromDNS: set[tuple[str, int]] = set()
        #: Those DNS no longer gives, draining until their requests are over.
        self._leaving: set[Backend] = set()
        #: What the admin API changed, until the next reload.
        self.adminState = AdminState()
        self._sweeping: Any = None
        self._waitingForBackends = not config["backends"]
        self._bound = False
        if config["admin"] is not None:
            admin = AdminSite(AdminResource(self, config["admin-token"]))
        #: Where the admin API listens, to say at start; a worker's is its
        #: supervisor's business.
        self._admin = config["admin"] if endpoints is None else None
        if endpoints is None:
            listenReactor: Any = (
                TLSListeningReactor(reactor) if config["listen"].startswith("ssl:") else reactor
            )
            self.listeners = [strports.service(config["listen"], site, reactor=listenReactor)]
            if config["admin"] is not None:
                self.listeners.append(strports.service(config["admin"], admin, reactor=reactor))
        else:
            self.listeners = [StreamServerEndpointService(endpoints[0], site)]
            if endpoints[1] is not None:
                self.listeners.append(StreamServerEndpointService(endpoints[1], admin))

    def bind(self) -> None:
        """
        Open the access log and bind the listening ports (the demo
        backends' too): everything at start-up that can fail.

        L{txlb.tap.makeService} calls this, so that twistd reports a
        failure before it daemonizes and redirects the standard streams:
        once daemonized, a failure could only reach the user through
        twistd's start-up pipe, in its own words.

        @raise StartupError: With one line, if something cannot be had (a
            port busy, out of range or not permitted, an access log that
            cannot be opened for appending).
        """
        if self._bound:
            return
        path = self.config["access-log-file"]
        if path is not None:
            try:
                # Absolute: twistd changes to --rundir after this, and the
                # file is opened again on SIGHUP.
                self.resource.accessLog.file = AccessLogFile(os.path.abspath(path), self.reactor)
            except OSError as e:
                raise StartupError(f"txlb: --access-log-file: {e}") from None
        try:
            super().privilegedStartService()
            for listener in self.listeners[self._waitingForBackends :]:
                listener.privilegedStartService()
        except (CannotListenError, OverflowError, OSError) as e:
            raise StartupError(f"txlb: cannot listen: {e}") from None
        self._bound = True

    def privilegedStartService(self) -> None:
        """
        Bind (see L{bind}) unless that is done.  A failure here raises
        L{StartupError}, an ordinary exception, which twistd reports
        through its start-up pipe when daemonized (a C{SystemExit} would
        leave it waiting on that pipe forever).
        """
        self.bind()

    def _openAccessLog(self, path: str | None) -> None:
        """
        Write the access log to C{path} from now on (to the main log if
        C{None}), closing the file it went to.
        """
        old = self.resource.accessLog.file
        try:
            self.resource.accessLog.file = (
                None if path is None else AccessLogFile(path, self.reactor)
            )
        except OSError as e:
            self._log.error("Cannot open the access log, it stays as it was: {why}", why=e)
            return
        if old is not None:
            old.close()

    def startService(self) -> None:
        self._log.info(
            "txlb {listening} {listen}, algorithm {algo}, backends {backends}",
            listening="waiting for DNS to listen on"
            if self._waitingForBackends
            else "listening on",
            listen=self.config["listen"],
            algo=self.config["algo"],
            backends=", ".join(
                [
                    *(
                        f"{'https://' if b.tls else ''}{b.address} (weight {b.weight})"
                        for b in self.config["backends"]
                    ),
                    *(f"DNS {name}" for name in self.config["backends-dns"]),
                ]
            ),
        )
        if self._admin is not None:
            logAdmin(self._log, self._admin)
        self._warnInsecure(self.config)
        self.started = self.reactor.seconds()
        self._checkHealth(self.config)
        super().startService()
        for listener in self.listeners[self._waitingForBackends :]:
            listener.startService()
        self._discover(self.config, {})
        # After twistd's own handlers are in place, which would stop at once
        # and exit with the signal's status.
        self.reactor.addSystemEventTrigger("after", "startup", self._catchSignals)

    def _warnInsecure(self, config: Configuration) -> None:
        if config["backend-insecure"]:
            self._log.warn(
                "TLS to backends is NOT VERIFIED (--backend-insecure): any certificate is"
                " accepted, so anyone on the path to an https:// backend can read and"
                " change its traffic"
            )

    def _checkHealth(self, config: Configuration) -> None:
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
                tls=self.resource.client.tls,
            )
            self._health.setServiceParent(self)

    def _discover(self, config: Configuration, lastGood: dict[DNSName, list[Backend]]) -> None:
        """
        Follow the DNS names C{config} gives, instead of the current ones,
        starting from C{lastGood}.
        """
        self._stopDiscovery()
        if not config["backends-dns"]:
            if self._fromDNS:
                self._dnsChanged([])
            return
        self._dns = DNSDiscovery(
            config["backends-dns"],
            self.resolver or makeResolver(config["dns-server"], self.reactor),
            self.reactor,
            self._dnsChanged,
            minTTL=config["dns-min-ttl"],
            maxTTL=config["dns-max-ttl"],
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
        static = {b.key for b in self.config["backends"]}
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
                        "Backend {backend} left DNS: draining its {count} requests",
                        backend=backend.address,
                        count=backend.active,
                    )
                    backend.draining = True
                    self._leaving.add(backend)
                    merged.append(backend)
                else:
                    self._log.info("Backend {backend} left DNS: removed", backend=backend.address)
            else:
                merged.append(backend)
        merged += wanted.values()
        if not merged:
            return
        self._fromDNS = fromDNS
        self.resource.setBackends(merged)
        if self._leaving and self._sweeping is None:
            self._sweeping = self.reactor.callLater(LEAVING_POLL, self._sweep)
        self._listenOnceBackends()

    def _listenOnceBackends(self) -> None:
        """
        Start the main listener if it waited for backends and there are some
        now.
        """
        if not self._waitingForBackends or not self.resource.pool.backends:
            return
        self._waitingForBackends = False
        try:
            self.listeners[0].privilegedStartService()
        except (CannotListenError, OverflowError, OSError) as e:
            self._log.error("txlb: cannot listen: {why}", why=e)
            self.reactor.stop()
            return
        self.listeners[0].startService()
        self._log.info("txlb listening on {listen}", listen=self.config["listen"])

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
                self._log.info("Removed backend {backend}, drained", backend=backend.address)
        if self._leaving:
            self._sweeping = self.reactor.callLater(LEAVING_POLL, self._sweep)

    def _catchSignals(self) -> None:
        for number in (signal.SIGTERM, signal.SIGINT):
            stops = number in self.stopSignals
            signal.signal(number, self._stopSignal if stops else signal.SIG_IGN)
        signal.signal(signal.SIGHUP, self._reloadSignal)

    def _reloadSignal(self, number: int, frame: object) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> bool:
        """
        Re-read the configuration file and apply it if it is valid.

        @return: Whether it was applied.
        """
        accessLogFile = self.resource.accessLog.file
        if accessLogFile is not None:
            # After logrotate moved it away.
            accessLogFile.reopen()
        path = self.config["config"]
        if path is None:
            if accessLogFile is None:
                self._log.warn("Nothing to reload: txlb was started without --config")
            return False
        try:
            new = self.config.fromFile(path, self.config.commandLine)
        except usage.UsageError as e:
            self.resource.metrics.reloads.labels("failure").inc()
            self._log.error("Reload failed, the configuration stays as it was: {why}", why=e)
            return False
        old, before = self.config, _poolState(self.resource.pool.backends)
        self.apply(new)
        self.resource.metrics.reloads.labels("success").inc()
        changes = [
            *_optionChanges(old, new),
            *_backendChanges(before, _poolState(self.resource.pool.backends)),
        ]
        self._log.info(
            "Reloaded {path}: {summary}",
            path=path,
            summary="; ".join(changes) or "nothing changed",
            changes=changes,
        )
        return True

    def apply(self, new: Configuration) -> None:
        """
        Switch to C{new} at once: new requests use it, requests in flight
        finish on their backends, client connections stay open, and the
        counts of backends that stay are kept.  The TLS files are read again,
        and idle connections to C{https://} backends closed, so new ones use
        them.  Listening addresses, the admin token and the size of the
        client limits' tables only change with a restart.  What the admin
        API changed is forgotten: the file says what the backends are.
        """
        for option in ("listen", "admin", "admin-token", "rate-limit-keys"):
            if new[option] != self.config[option]:
                self._log.warn(
                    "--{option} changes need a restart; it stays {value!r}",
                    option=option,
                    value=self.config[option],
                )
                new[option] = self.config[option]
        self.adminState.clear()
        resource = self.resource
        resource.pool.maxFails = new["max-fails"]
        resource.pool.failTimeout = new["fail-timeout"]
        resource.pool.slowStart = new["slow-start"]
        resource.client.connectTimeout = new["connect-timeout"]
        # Read again: the files may have changed under the same names.
        resource.client.setTLS(new["backend-tls"])
        if not self.config["backend-insecure"]:
            self._warnInsecure(new)
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
        resource.setBackends([*new["backends"], *fromDNS], new.algorithm())
        if new["sticky-cookie"] != self.config["sticky-cookie"]:
            resource.sticky = new.sticky(self.reactor)
        for backend in resource.pool.backends:
            if backend not in self._leaving:
                # The file or DNS lists it: it serves, whatever the admin API said.
                backend.draining = False
        resource.settings = new.settings()
        if resource.clientLimits is not None:
            new.configureLimits(resource.clientLimits)
        if new["access-log-file"] != self.config["access-log-file"]:
            self._openAccessLog(new["access-log-file"])
        # The idle timeout and protocols of client connections made from now
        # on.
        self.site.timeOut = new["client-timeout"]
        self.site.http2, self.site.h2c = not new["no-http2"], new["h2c"]
        self._checkHealth(new)
        old, self.config = self.config, new
        if any(new[option] != old[option] for option in DNS_OPTIONS):
            self._discover(new, self._dns.lastGood if self._dns is not None else {})
        elif self._dns is not None:
            # A backend the file no longer lists may still be in DNS.
            self._dnsChanged(self._dns.backends)
        self._listenOnceBackends()

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
            option: None if spec is None else self.config.checkedAlgorithm(option, spec, backends)
            for option, spec in changes.items()
        }
        if "shadow-algo" in changes:
            resource.useShadow(changes["shadow-algo"], made["shadow-algo"])
        if made.get("algo") is not None:
            resource.setBackends(backends, made["algo"])
        for option, spec in changes.items():
            self.config[option] = spec
        self._log.info(
            "Algorithm now {algo}, shadow {shadow}",
            algo=self.config["algo"],
            shadow=self.config["shadow-algo"] or "none",
        )

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
        self._stopDiscovery()
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        if self.listeners[0].running:
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


def logAdmin(log: Logger, description: str) -> None:
    """
    Log where the admin API and the status page are: their endpoint, and
    the URL to open when it can be told from it.
    """
    url = adminURL(description)
    log.info(
        "Admin API and status page on {admin}{url}",
        admin=description,
        url="" if url is None else f" ({url})",
    )


def adminURL(description: str) -> str | None:
    """
    The URL of the admin listener described by the endpoint description
    C{description}: on this machine, for one listening on every address.
    C{None} for one no URL reaches (a UNIX socket, a socket from systemd)
    or whose port the system picks (0).
    """
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6", "ssl"):
        return None
    port, interface = None, ""
    for argument in re.split(r"(?<!\\):", rest):  # colons escaped as \: are in values
        name, equals, value = argument.partition("=")
        if not equals and port is None:
            port = name
        elif name == "port":
            port = value
        elif name == "interface":
            interface = value.replace("\\", "")
    if port is None or not port.isdigit() or int(port) == 0:
        return None
    if interface in ("", "0.0.0.0", "::"):
        interface = "::1" if kind == "tcp6" else "127.0.0.1"
    host = f"[{interface}]" if ":" in interface else interface
    return f"{'https' if kind == 'ssl' else 'http'}://{host}:{int(port)}/"


#: Options a reload does not report among the others: the backends (the
#: pool's changes are reported), the algorithm and shadow (reported first),
#: what a reload cannot change, and what follows from other options.  The
#: listening addresses and the admin token stay as they are
#: (L{LoadBalancerService.apply} warns), so they never differ.
_UNREPORTED = frozenset(
    {"backends", "algo", "shadow-algo", "config", "demo", "workers", "backend-tls"}
)


def _optionChanges(old: Configuration, new: Configuration) -> list[str]:
    """
    What a reload changed in the options, as C{NAME OLD -> NEW}, the
    algorithm and shadow first.
    """
    flags = {row[0] for row in new.optFlags}

    def shown(option: str, value: Any) -> str:
        if option in flags:
            return "on" if value else "off"
        if value is None:
            return "none"
        if isinstance(value, list):
            return ", ".join(map(_shownItem, value)) or "none"
        return str(value)

    changes = []
    for option, label in (("algo", "algorithm"), ("shadow-algo", "shadow")):
        if old[option] != new[option]:
            changes.append(f"{label} {shown(option, old[option])} -> {shown(option, new[option])}")
    for option in sorted(set(new.keys()) - _UNREPORTED):
        if old[option] != new[option]:
            changes.append(f"{option} {shown(option, old[option])} -> {shown(option, new[option])}")
    return changes


def _shownItem(item: Any) -> str:
    """
    An item of a repeatable option as a log line shows it: a DNS name, or a
    DNS server's C{(IP, port)}.
    """
    if type(item) is tuple:
        host, port = item
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(item)


def _poolState(backends: Sequence[Backend]) -> dict[str, tuple[int, bool]]:
    """
    Each backend's weight and whether it drains, by the name a log line
    gives it.
    """
    return {f"{'https://' if b.tls else ''}{b.address}": (b.weight, b.draining) for b in backends}


def _backendChanges(
    before: dict[str, tuple[int, bool]], after: dict[str, tuple[int, bool]]
) -> list[str]:
    """
    What a reload did to the pool: backends added, removed, reweighted,
    drained or no longer drained (the admin API's changes undone
    included).
    """
    changes = []
    for name, (weight, draining) in after.items():
        if name not in before:
            changes.append(f"added {name} (weight {weight})")
            continue
        oldWeight, wasDraining = before[name]
        if weight != oldWeight:
            changes.append(f"{name} weight {oldWeight} -> {weight}")
        if draining != wasDraining:
            changes.append(f"{name} {'draining' if draining else 'no longer draining'}")
    changes += [f"removed {name}" for name in before if name not in after]
    return changes

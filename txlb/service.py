"""
The balancer as a twistd service: its listeners, its pools (each a
L{txlb.poolservice.PoolService}, with its health checks and DNS
discovery), the admin API, configuration reloads and the graceful stop.

L{txlb.tap} builds it from the command line, as Twisted's own C{tap}
modules build theirs; this module knows the options only through
L{Configuration}, so that it need not import the module that imports it.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from twisted.application import strports
from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized

from txlb.accesslog import AccessLogFile
from txlb.admin import AdminResource, AdminSite
from txlb.backend import Backend
from txlb.clientlimits import ClientLimits
from txlb.fleet import Fleet
from txlb.history import INTERVAL as HISTORY_INTERVAL
from txlb.poolservice import PoolConfiguration, PoolService, makePool
from txlb.proxy import DEFAULT_POOL, LoadBalancerResource
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite, TLSListeningReactor
from txlb.signals import STOP_SIGNALS, Signals
from txlb.twistdlog import TurnLog


class Configuration(PoolConfiguration, Protocol):
    """
    What the service needs of its configuration: the options of
    C{twistd txlb} by long name, and what follows from them, as
    L{txlb.tap.Options} provides them; they are also the pool C{default}'s
    (when the command line or the file's top level names backends).

    @ivar commandLine: The command line given, which overrides the
        configuration file on a reload.
    @ivar routeWarnings: What the check of the routes warns of.
    @ivar optFlags: The options that take no value.
    """

    commandLine: list[str]
    routeWarnings: list[str]
    optFlags: Any

    def fromFile(self, path: str, commandLine: list[str]) -> Configuration:
        """
        The configuration the file at C{path} gives, overridden by
        C{commandLine}.

        @raise usage.UsageError: With one line saying what is wrong.
        """

    def withDocument(self, text: str | None, where: str) -> Configuration:
        """
        The configuration etcd's document C{text} gives, over this one's
        file and command line (C{None}: no document).

        @raise usage.UsageError: With one line per problem.
        """

    def pools(self) -> Mapping[str, PoolConfiguration]:
        """
        The options of each pool, by name.
        """

    def keys(self) -> Iterable[str]: ...

    def configureLimits(self, limits: ClientLimits) -> None:
        """
        Set the client limits as these options say.
        """


class StartupError(Exception):
    """
    Something the balancer needs to start cannot be had; the message says
    what, in one line.
    """


#: The options only a restart changes: a reload warns and keeps them as
#: they are, and etcd's C{config.toml} may not hold them.
RESTART_KEYS = frozenset(
    {
        "listen",
        "workers",
        "admin",
        "admin-token",
        "rate-limit-keys",
        "etcd",
        "etcd-prefix",
        "etcd-ca",
        "etcd-cert",
        "etcd-key",
        "etcd-user",
        "etcd-password-file",
        "etcd-timeout",
    }
)

#: Seconds between two looks at whether requests are still in flight during
#: a graceful stop, or in a pool a reload removed.
DRAIN_POLL = 0.05


class LoadBalancerService(MultiService):
    """
    The balancer: its listeners, its pools, its admin listener, the demo
    backends if it runs them, its configuration reloads and its graceful
    stop.

    On SIGHUP it re-reads C{--config}: an invalid file is logged and the
    running configuration stays; a valid one is applied at once (see
    L{apply}).  On SIGTERM or SIGINT it stops accepting connections, closes
    idle kept-alive ones, lets the requests in flight finish (for up to
    C{--drain-timeout} seconds, then cuts them) and exits 0.  A second signal
    cuts them at once.

    A pool without static backends has none until DNS gives some: the
    listeners start only once every pool has backends, since until then
    some requests would have nothing to go to.

    @ivar resource: The site's L{RoutingResource}.
    @ivar pools: The L{PoolService} of each pool, by name.
    @ivar started: When the service started, for the uptime.
    @ivar resolver: The twisted.names resolver DNS names are resolved with,
        or C{None} for one asking C{--dns-server} (or the system's servers).
    @ivar stopSignals: The signals that stop it gracefully; a worker of
        C{--workers} ignores SIGINT, which a terminal's Ctrl-C sends to its
        supervisor too, and stops on the SIGTERM the supervisor sends.
    """

    resolver: Any = None
    #: twistd's log, written once per reactor turn (L{txlb.twistdlog}), for
    #: twistd to log to; C{None} to leave twistd's logging as it is.
    mainLog: TurnLog | None = None

    _log = Logger()
    stopSignals: tuple[signal.Signals, ...] = STOP_SIGNALS

    def __init__(
        self,
        config: Configuration,
        site: LoadBalancerSite,
        reactor: Any,
        endpoints: tuple[list[IStreamServerEndpoint], IStreamServerEndpoint | None] | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        """
        @param endpoints: The listening endpoints and the admin one, instead
            of those C{--listen} and C{--admin} describe (a worker's
            inherited sockets).
        @param fleet: What follows etcd (C{--etcd}), whose pools' members
            and admin changes apply from the start.
        """
        super().__init__()
        self.config = config
        self.site = site
        self.resource: RoutingResource = site.resource
        self.started = reactor.seconds()
        self.reactor = reactor
        self.fleet = fleet
        if fleet is not None:
            fleet.attach(self)
        self.pools: dict[str, PoolService] = {}
        self._waitingForBackends: list[str] = []
        for name, options in config.pools().items():
            self._addPool(options, self.resource.pools[name])
        #: Pools a reload removed, until their requests are over.
        self._retired: set[PoolService] = set()
        self._waitingForBackends = self._waiting()
        self._bound = False
        if config["admin"] is not None:
            adminResource = AdminResource(self, config["admin-token"])
            admin = AdminSite(adminResource)
            recorder = TimerService(HISTORY_INTERVAL, adminResource.api.record)
            recorder.clock = reactor
            recorder.setServiceParent(self)
        #: Where the admin API listens, to say at start; a worker's is its
        #: supervisor's business.
        self._admin = config["admin"] if endpoints is None else None
        if endpoints is None:
            self.listeners = [
                strports.service(description, site, reactor=_listening(description, reactor))
                for description in config["listen"]
            ]
            if config["admin"] is not None:
                self.listeners.append(strports.service(config["admin"], admin, reactor=reactor))
        else:
            self.listeners = [StreamServerEndpointService(e, site) for e in endpoints[0]]
            if endpoints[1] is not None:
                self.listeners.append(StreamServerEndpointService(endpoints[1], admin))
        #: How many of the listeners serve the site (the admin one follows).
        self._siteListeners = len(config["listen"]) if endpoints is None else len(endpoints[0])
        if fleet is not None:
            fleet.setServiceParent(self)

    def _addPool(self, options: PoolConfiguration, resource: LoadBalancerResource) -> None:
        pool = self.pools[options.name] = PoolService(
            options, resource, self.reactor, self._listenOnceBackends
        )
        if self.fleet is not None:
            self.fleet.poolAdded(pool)
        pool.setServiceParent(self)

    def _waiting(self) -> list[str]:
        """
        The pools that have no backends yet.
        """
        return [name for name, pool in self.pools.items() if pool.waiting]

    def _startingListeners(self) -> list[Any]:
        """
        The listeners to start now: the site's wait for every pool to have
        backends.
        """
        if self._waitingForBackends:
            return self.listeners[self._siteListeners :]
        return self.listeners

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
            for listener in self._startingListeners():
                listener.privilegedStartService()
        except (CannotListenError, OverflowError, OSError) as e:
            raise StartupError(f"txlb: cannot listen: {e}") from None
        self._bound = True

    def setServiceParent(self, parent: Any) -> None:
        """
        Join C{parent}; if it is twistd's new application, give it
        L{mainLog} as its log observer.

        twistd hands the service a plugin makes to a new application, then
        starts logging with that application's L{ILogObserver} component,
        if it has one, instead of its own text observer
        (L{twisted.application.app.AppLogger.start}).
        """
        if (
            self.mainLog is not None
            and isinstance(parent, Componentized)
            and parent.getComponent(ILogObserver) is None
        ):
            parent.setComponent(ILogObserver, self.mainLog)
        super().setServiceParent(parent)

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
        waiting = self._waitingForBackends
        waitingFor = "DNS or etcd" if self.fleet is not None else "DNS"
        listen = ", ".join(self.config["listen"])
        if list(self.pools) == [DEFAULT_POOL]:
            self._log.info(
                "txlb {listening} {listen}, algorithm {algo}, backends {backends}",
                listening=f"waiting for backends ({waitingFor}) to listen on"
                if waiting
                else "listening on",
                listen=listen,
                algo=self.config["algo"],
                backends=_describeBackends(self.config),
            )
        else:
            self._log.info(
                "txlb {listening} {listen}, {routes} routes, pools {pools}",
                listening=f"waiting for backends ({waitingFor}) to listen on"
                if waiting
                else "listening on",
                listen=listen,
                routes=len(self.resource.routes),
                pools="; ".join(
                    f"{name} ({pool.options['algo']}: {_describeBackends(pool.options)})"
                    for name, pool in self.pools.items()
                ),
            )
        self._logRouteWarnings(self.config)
        if self._admin is not None:
            logAdmin(self._log, self._admin)
        self._warnInsecure(self.config)
        self.started = self.reactor.seconds()
        super().startService()
        for listener in self._startingListeners():
            listener.startService()
        # After twistd's own handlers are in place, which would stop at once
        # and exit with the signal's status.
        signals = Signals(
            self.reactor,
            self._log,
            "Received {signal}: stopping gracefully",
            "Received {signal} again: cutting requests in flight",
            self.site.abortConnections,
            self.reload,
            self.stopSignals,
        )
        self.reactor.addSystemEventTrigger("after", "startup", signals.install)

    def _logRouteWarnings(self, config: Configuration) -> None:
        for warning in config.routeWarnings:
            self._log.warn("Routes: {text}", text=warning)

    def _warnInsecure(self, config: Configuration) -> None:
        insecure = [name for name, options in config.pools().items() if options["backend-insecure"]]
        if insecure:
            self._log.warn(
                "TLS to backends is NOT VERIFIED (--backend-insecure){where}: any certificate"
                " is accepted, so anyone on the path to an https:// backend can read and change"
                " its traffic",
                where="" if insecure == [DEFAULT_POOL] else f" in pool {', '.join(insecure)}",
            )

    def _listenOnceBackends(self) -> None:
        """
        Start the site's listeners if they waited for backends and every
        pool has some now.
        """
        if not self._waitingForBackends or self._waiting():
            return
        self._waitingForBackends = []
        listeners = self.listeners[: self._siteListeners]
        try:
            for listener in listeners:
                listener.privilegedStartService()
        except (CannotListenError, OverflowError, OSError) as e:
            self._log.error("txlb: cannot listen: {why}", why=e)
            self.reactor.stop()
            return
        for listener in listeners:
            listener.startService()
        self._log.info("txlb listening on {listen}", listen=", ".join(self.config["listen"]))

    def reload(self) -> bool:
        """
        Re-read the configuration file and apply it if it is valid (with
        etcd's document over it, in a fleet).

        @return: Whether it was applied.
        """
        accessLogFile = self.resource.accessLog.file
        if accessLogFile is not None:
            # After logrotate moved it away.
            accessLogFile.reopen()
        path = self.config["config"]
        if path is None:
            if accessLogFile is None:
                self._log.warn(
                    "Nothing to reload: txlb was started without --config"
                    + (" (etcd's configuration applies as it changes)" if self.fleet else "")
                )
            return False
        try:
            new = self.config.fromFile(path, self.config.commandLine)
            if self.fleet is not None:
                new = self.fleet.rebased(new)
        except usage.UsageError as e:
            self.resource.metrics.reloads.labels("failure").inc()
            for line in str(e).splitlines():
                self._log.error("Reload failed, the configuration stays as it was: {why}", why=line)
            return False
        changes = self.reconfigure(new)
        self._log.info(
            "Reloaded {path}: {summary}",
            path=path,
            summary="; ".join(changes) or "nothing changed",
            changes=changes,
        )
        return True

    def reconfigure(self, new: Configuration) -> list[str]:
        """
        Apply C{new} (see L{apply}), counted as a reload.

        @return: What changed, for the log.
        """
        old = self.config
        before = {
            name: _poolState(pool.resource.pool.backends) for name, pool in self.pools.items()
        }
        self.apply(new)
        self.resource.metrics.reloads.labels("success").inc()
        return _changes(old, new, before, self.pools)

    def apply(self, new: Configuration) -> None:
        """
        Switch to C{new} at once: new requests use its pools and routes,
        requests in flight finish in theirs, client connections stay open.
        A pool that stays keeps its backends' counts and health, and its
        algorithm's state when its backends and algorithm are the same
        (L{PoolService.apply}); a new pool starts; a pool the file no longer
        has takes no new requests, and its connections close once its
        requests are over.  Listening addresses, the admin listener and
        token, and the size of the client limits' tables only change with a
        restart.  What the admin API changed is forgotten: the file says
        what the backends are (but in a fleet, whose admin changes etcd
        holds, L{txlb.fleet}).
        """
        for option in sorted(RESTART_KEYS):
            if new[option] != self.config[option]:
                value = self.config[option]
                self._log.warn(
                    "--{option} changes need a restart; it stays {value!r}",
                    option=option,
                    value=", ".join(value) if isinstance(value, list) else value,
                )
                new[option] = self.config[option]
        resource = self.resource
        wanted = new.pools()
        for name in list(self.pools):
            if name not in wanted:
                self._retire(self.pools.pop(name))
        for name, options in wanted.items():
            pool = self.pools.get(name)
            if pool is None:
                self._addPool(
                    options, makePool(options, self.reactor, resource.metrics, resource.accessLog)
                )
            else:
                pool.apply(options)
        resource.use({name: pool.resource for name, pool in self.pools.items()}, new["routes"])
        resource.settings = new.settings()
        if resource.clientLimits is not None:
            new.configureLimits(resource.clientLimits)
        if new["access-log-file"] != self.config["access-log-file"]:
            self._openAccessLog(new["access-log-file"])
        # The idle timeout and protocols of client connections made from now
        # on.
        self.site.timeOut = new["client-timeout"]
        self.site.http2, self.site.h2c = not new["no-http2"], new["h2c"]
        self._warnInsecure(new)
        self._logRouteWarnings(new)
        self.config = new
        self._listenOnceBackends()

    def _retire(self, pool: PoolService) -> None:
        """
        Stop C{pool}, which a reload removed: no health checks or DNS any
        more, and its connections closed once its requests are over.
        """
        pool.disownServiceParent()
        self._retired.add(pool)
        self._log.info("Pool {pool} removed: draining", pool=pool.name)

        async def drain() -> None:
            while pool.resource.inFlight():
                await deferLater(self.reactor, DRAIN_POLL)
            self._retired.discard(pool)
            await pool.resource.client.closeCachedConnections()
            self._log.info("Pool {pool} removed: drained", pool=pool.name)

        Deferred.fromCoroutine(drain())

    def inFlight(self) -> int:
        """
        How many requests are being forwarded, in every pool (those a
        reload removed included).
        """
        return self.resource.inFlight() + sum(p.resource.inFlight() for p in self._retired)

    def switchAlgorithm(self, changes: dict[str, str | None], pool: str = DEFAULT_POOL) -> None:
        """
        Switch the algorithm and/or the shadow of C{pool} (see
        L{PoolService.switchAlgorithm}).

        @raise usage.UsageError: With one line, changing nothing.
        @raise KeyError: If there is no such pool.
        """
        self.pools[pool].switchAlgorithm(changes)

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """
        Stop accepting, close idle connections, wait for the requests in
        flight (cutting them after the drain timeout), then stop the rest;
        the admin listener last, so the drain can be watched.
        """
        for listener in self.listeners[: self._siteListeners]:
            if listener.running:
                await listener.stopService()
        self.site.closeIdleConnections()
        timeout = self.config["drain-timeout"]
        if self.inFlight():
            self._log.info(
                "Waiting for {count} requests in flight (at most {timeout} s)",
                count=self.inFlight(),
                timeout=timeout,
            )
        deadline = self.reactor.seconds() + timeout
        while self.inFlight() or self.site.busy():
            if self.reactor.seconds() >= deadline:
                self._log.warn(
                    "Cutting {count} requests still in flight after {timeout} s",
                    count=self.inFlight(),
                    timeout=timeout,
                )
                self.site.abortConnections()
                break
            await deferLater(self.reactor, DRAIN_POLL)
        await super().stopService()
        for listener in self.listeners[self._siteListeners :]:
            await listener.stopService()
        for pool in [*self.pools.values(), *self._retired]:
            await pool.resource.client.closeCachedConnections()
        self._openAccessLog(None)


def _listening(description: str, reactor: Any) -> Any:
    """
    The reactor a listener of C{description} listens with: one that answers
    plain HTTP on a TLS port (L{TLSListeningReactor}) for C{ssl:}.
    """
    return TLSListeningReactor(reactor) if description.startswith("ssl:") else reactor


def _describeBackends(options: PoolConfiguration) -> str:
    """
    A pool's backends, as the start-up line names them.
    """
    return ", ".join(
        [
            *(
                f"{'https://' if b.tls else ''}{b.address} (weight {b.weight})"
                for b in options["backends"]
            ),
            *(f"DNS {name}" for name in options["backends-dns"]),
        ]
    )


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
    {"backends", "algo", "shadow-algo", "config", "demo", "workers", "backend-tls", "routes"}
)


def _changes(
    old: Configuration,
    new: Configuration,
    before: dict[str, dict[str, tuple[int, bool]]],
    pools: dict[str, PoolService],
) -> list[str]:
    """
    What a reload from C{old} to C{new} changed: the options, the routes,
    the pools added and removed, and each pool's options and backends
    (C{before}: each pool's backends before the reload, as L{_poolState}
    gives them).  The pool C{default}'s are said without its name.
    """
    changes = _optionChanges(old, new)
    if [route.config for route in old["routes"]] != [route.config for route in new["routes"]]:
        changes.append(f"routes changed ({len(new['routes'])} now)")
    oldPools, newPools = old.pools(), new.pools()
    changes += [f"pool {name} removed" for name in oldPools if name not in newPools]
    for name, options in newPools.items():
        if name not in oldPools:
            changes.append(f"pool {name} added")
            continue
        prefix = "" if name == DEFAULT_POOL else f"pool {name}: "
        if name != DEFAULT_POOL:
            own = {row[0] for row in [*options.optParameters, *options.optFlags]}
            changes += [prefix + c for c in _optionChanges(oldPools[name], options, own)]
        after = _poolState(pools[name].resource.pool.backends)
        changes += [prefix + c for c in _backendChanges(before[name], after)]
    return changes


def _optionChanges(old: Any, new: Any, only: Iterable[str] | None = None) -> list[str]:
    """
    What a reload changed in the options (or in C{only} these), as
    C{NAME OLD -> NEW}, the algorithm and shadow first.
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
    for option in sorted(set(new.keys() if only is None else only) - _UNREPORTED):
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

"""
Backends found in DNS, as Consul and Kubernetes publish them.

A name is either C{_service._proto.NAME}, whose SRV records (RFC 2782) give
the backends, or C{NAME:PORT}, whose A and AAAA records give their addresses
on that port.  SRV targets are looked up (A and AAAA) through the same
resolver, so a backend is always an IP address and port: the address is what
the IP hash and the admin API name it by.  Only the lowest SRV priority
present is used, as a client of RFC 2782 would use it; SRV weights become
backend weights.

An answer is a set: DNS servers rotate the order of their records (dnsmasq
on every query), so the order never counts.  A name's backends are sorted
by address, and an address two SRV records give is one backend with the sum
of their weights, so that the same records always give the same backends.

A and AAAA are asked separately, and one failing (REFUSED, which dnsmasq
answers for AAAA in a zone it is not C{--local} for, SERVFAIL, a timeout)
does not discard the other: that family keeps its last good addresses, if
it had any, and the rest of the answer is used.

Each name is resolved again when its records expire: the smallest TTL of the
answer, bounded by C{minTTL} and C{maxTTL}.  A failed resolution (a timeout,
SERVFAIL) or an empty one keeps the name's last good set and is retried after
C{minTTL}, as is a partial one: a DNS outage never empties the pool.  Each
change (new set, failure, partial answer, recovery) is logged once.

Cost: one round of queries per name per TTL (one SRV query and two address
queries per target, or two address queries), none per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred, DeferredList, gatherResults
from twisted.internet.error import ConnectionClosed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.names import client
from twisted.names import dns as records
from twisted.names.error import (
    AuthoritativeDomainError,
    DNSFormatError,
    DNSNameError,
    DNSNotImplementedError,
    DNSQueryRefusedError,
    DNSQueryTimeoutError,
    DNSServerError,
    DNSUnknownError,
    TimeoutError,
)
from twisted.python.failure import Failure

from txlb.backend import MAX_WEIGHT, Backend, parseBackend

#: Seconds to wait for an answer from one server (one try over TCP): as
#: long as HAProxy's resolvers wait in all by default (1 s per try, 3
#: retries).
QUERY_TIMEOUT = (4,)

#: Seconds to wait for a TCP connection to a DNS server, before asking the
#: next one.  A server that is up accepts in a round trip; Twisted's 30 s
#: would hold every query that long behind one that is gone.
CONNECT_TIMEOUT = 1.0

#: Answer codes that say this server cannot answer now, not that the name
#: has no records: the next server is asked, as glibc's resolver does.
NEXT_SERVER = frozenset({records.ESERVER, records.ENOTIMP, records.EREFUSED})

#: Short names of the errors of a DNS answer's code, for the logs.
_CODES = (
    (DNSFormatError, "FORMERR"),
    (DNSServerError, "SERVFAIL"),
    (DNSNameError, "NXDOMAIN"),
    (DNSNotImplementedError, "NOTIMP"),
    (DNSQueryRefusedError, "REFUSED"),
    (DNSUnknownError, "an unknown answer code"),
)


class DNSName(NamedTuple):
    """
    One C{--backends-dns} name: C{port} is C{None} for an SRV name.
    """

    name: str
    port: int | None

    def __str__(self) -> str:
        return self.name if self.port is None else f"{self.name}:{self.port}"


def parseDNSName(text: str) -> DNSName:
    """
    Parse C{_service._proto.NAME} (SRV) or C{NAME:PORT} (A and AAAA).

    @raise ValueError: With a one-line reason.
    """
    text = text.strip().rstrip(".")
    if text.startswith("_"):
        labels = text.split(".")
        if len(labels) < 3 or not labels[1].startswith("_") or not all(labels):
            raise ValueError(f"{text!r} is not an SRV name like _http._tcp.api.service.consul")
        return DNSName(text, None)
    try:
        backend = parseBackend(text)
    except ValueError as e:
        raise ValueError(
            f"{text!r}: {e} (expected NAME:PORT, or _service._proto.NAME for SRV records)"
        ) from None
    if "=" in text or "://" in text:
        raise ValueError(f"{text!r}: expected NAME:PORT, with no weight or scheme")
    try:
        ipaddress.ip_address(backend.host)
    except ValueError:
        return DNSName(backend.host, backend.port)
    raise ValueError(f"{text!r} is an IP address, not a name: give it to --backends")


def parseServer(text: str) -> tuple[str, int]:
    """
    Parse C{--dns-server}: C{IP[:PORT]} or C{[IPv6][:PORT]}, port 53 by
    default.

    @raise ValueError: With a one-line reason.
    """
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r} is not IP[:PORT] or [IPV6][:PORT]")
            port = rest[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: bad port {port!r} (expected 1-65535)")
    return host, int(port)


def srvTargets(answers: Iterable[Any]) -> list[tuple[str, int, int, int]]:
    """
    The C{(target, port, weight, ttl)} of the SRV records of C{answers} that
    have the lowest priority present (RFC 2782), in the order given; a
    target of C{.} ("no such service here") counts as none.  A weight of 0
    becomes 1 and one above L{MAX_WEIGHT} becomes L{MAX_WEIGHT}, the range of
    backend weights.
    """
    srv = [a for a in answers if a.type == records.SRV and a.payload.target.name not in (b"", b".")]
    if not srv:
        return []
    lowest = min(a.payload.priority for a in srv)
    return [
        (
            a.payload.target.name.decode("ascii"),
            a.payload.port,
            min(max(a.payload.weight, 1), MAX_WEIGHT),
            a.ttl,
        )
        for a in srv
        if a.payload.priority == lowest
    ]


def refreshDelay(ttl: float, minTTL: float, maxTTL: float) -> float:
    """
    Seconds until a name whose answer had C{ttl} is resolved again.
    """
    return min(max(ttl, minTTL), maxTTL)


class ResolutionError(Exception):
    """
    A name did not resolve to any backend; the message says why.
    """


class NoAnswerError(Exception):
    """
    Every DNS server failed to answer a query; the message says how each
    did.
    """


class _Connection(records.DNSProtocol):
    """
    One TCP connection to a DNS server.  Unlike Twisted's, it fails the
    queries waiting on it as soon as it is lost (a server closes its
    connections after some queries, dnsmasq after 100, and on a restart), so
    that they can be asked again at once instead of waiting for their
    timeout; and its timeouts use the reactor it is given.

    @ivar server: The server's address and port.
    @ivar lost: Fires when the connection is gone.
    """

    def __init__(self, resolver: TCPResolver, server: tuple[str, int], reactor: Any) -> None:
        super().__init__(resolver, reactor)
        self.server = server
        self.reactor = reactor
        self.lost: Deferred[None] = Deferred()

    def ask(self, queries: list[records.Query], timeout: float) -> Deferred[records.Message]:
        """
        Send C{queries} in one message.

        @return: A L{Deferred} firing with the answer, failing with
            L{DNSQueryTimeoutError} after C{timeout} seconds or with
            L{ConnectionClosed} if the connection is lost first; cancelling it
            forgets the query.
        """
        id = self.pickID()
        message = records.Message(id, recDes=1)
        message.queries = queries
        answer: Deferred[records.Message] = Deferred(lambda _: self._forget(id))
        self.writeMessage(message)
        self.liveMessages[id] = (answer, self.reactor.callLater(timeout, self._expired, id))
        return answer

    def _forget(self, id: int) -> None:
        _, expiry = self.liveMessages.pop(id)
        expiry.cancel()

    def _expired(self, id: int) -> None:
        answer, _ = self.liveMessages.pop(id)
        answer.errback(DNSQueryTimeoutError(id))

    def failWaiting(self, reason: Failure) -> None:
        """
        Fail every query waiting for its answer with C{reason}.
        """
        waiting, self.liveMessages = self.liveMessages, {}
        for answer, expiry in waiting.values():
            expiry.cancel()
            answer.errback(reason)

    def close(self) -> None:
        """
        Close the connection: the queries waiting on it fail once it is lost.
        """
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # The resolver forgets it first, so that the queries asked again
        # go to a new one.
        super().connectionLost(reason)
        self.failWaiting(Failure(ConnectionClosed("the server closed the connection")))
        self.lost.callback(None)


class _ConnectionFactory(Factory):
    """
    Makes the one L{_Connection} to C{server}, without a log line.
    """

    noisy = False

    def __init__(self, resolver: TCPResolver, server: tuple[str, int], reactor: Any) -> None:
        self.resolver, self.server, self.reactor = resolver, server, reactor

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self.resolver, self.server, self.reactor)


class TCPResolver(client.Resolver):
    """
    A twisted.names resolver that asks over kept TCP connections (RFC
    7766), not a new UDP socket per query: Twisted logs four lines for each
    of those, which every few seconds would drown the log.  TCP answers are
    never truncated either, however many backends a name has.

    A query goes to the server that answered last (the first one to begin
    with).  If that server cannot be reached within C{connectTimeout}, does
    not answer in time (its connection is then closed, as perhaps dead), or
    answers SERVFAIL, NOTIMP or REFUSED, the query goes to the next server
    at once, each server being asked once per round of C{timeout} (one
    round by default).  A query whose connection is lost while it waits
    (the server closed it) is asked again at once on a new connection, once.
    A switch to another server is logged once.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        servers: Sequence[tuple[str, int]] | None = None,
        resolv: str | None = None,
        timeout: Sequence[float] = QUERY_TIMEOUT,
        connectTimeout: float = CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(
            resolv=resolv,
            servers=None if servers is None else list(servers),
            timeout=timeout,
            reactor=reactor,
        )
        self.reactor = reactor
        self.connectTimeout = connectTimeout
        self._connected: dict[tuple[str, int], _Connection] = {}
        self._connecting: dict[
            tuple[str, int], tuple[Deferred[Any], list[Deferred[_Connection]]]
        ] = {}
        #: The server queries go to first: the last that answered.
        self._preferred: tuple[str, int] | None = None
        self._closed = False

    def queryUDP(self, queries: Any, timeout: Sequence[float] | None = None) -> Deferred[Any]:
        tries = cast(Sequence[float], self.timeout if timeout is None else timeout)
        return Deferred.fromCoroutine(self._query(queries, tries))

    def queryTCP(self, queries: Any, timeout: float = 10) -> Deferred[Any]:
        return self.queryUDP(queries, (timeout,))

    def _servers(self) -> list[tuple[str, int]]:
        return list(self.servers) + list(self.dynServers)

    async def _query(self, queries: list[records.Query], tries: Sequence[float]) -> Any:
        """
        The answer to C{queries}: from the preferred server, or else from
        the first of the others that gives one.

        @raise NoAnswerError: When no server answered (or the error of the
            only one).
        """
        servers = self._servers()
        if not servers:
            raise NoAnswerError("no DNS servers")
        first = servers.index(self._preferred) if self._preferred in servers else 0
        failures: list[tuple[tuple[str, int], Failure]] = []
        refusal = None
        for timeout in tries:
            for index in range(first, first + len(servers)):
                server = servers[index % len(servers)]
                try:
                    message = await self._ask(server, queries, timeout)
                except CancelledError:
                    raise
                except Exception:
                    failures.append((server, Failure()))
                    continue
                if message.rCode in NEXT_SERVER:
                    refusal = message
                    continue
                if self._preferred != server and failures:
                    self._log.warn(
                        "DNS server {server} answers, {failed}: asking it first from now on",
                        server=_serverName(server),
                        failed="; ".join(
                            f"{_serverName(s)} failed ({_reason(f)})" for s, f in failures
                        ),
                    )
                self._preferred = server
                return message
        if refusal is not None:
            # Each server that answered refused: Resolver.filterAnswers
            # makes the error of the last one's code.
            return refusal
        if len(failures) == 1:
            failures[0][1].raiseException()
        raise NoAnswerError(
            "; ".join(f"{_serverName(server)}: {_reason(failure)}" for server, failure in failures)
        )

    async def _ask(
        self, server: tuple[str, int], queries: list[records.Query], timeout: float
    ) -> records.Message:
        """
        The answer of C{server} to C{queries}, asked again at once on a new
        connection if the one it was asked on is lost first.
        """
        for attempt in range(2):
            connection = await self._connection(server)
            try:
                return await connection.ask(queries, timeout)
            except ConnectionClosed:
                if attempt or self._closed:
                    raise
            except DNSQueryTimeoutError:
                # Perhaps a dead connection: no new query goes to it, and
                # those waiting on it are asked again on a new one.
                self._forget(connection)
                connection.close()
                raise
        raise AssertionError("not reached")

    async def _connection(self, server: tuple[str, int]) -> _Connection:
        """
        The connection to C{server}: the one there is, or a new one.
        """
        if self._closed:
            raise NoAnswerError("the resolver is closed")
        connection = self._connected.get(server)
        if connection is not None:
            return connection
        if server not in self._connecting:
            host, port = server
            kind = endpoints.TCP6ClientEndpoint if ":" in host else endpoints.TCP4ClientEndpoint
            endpoint = kind(self.reactor, host, port, timeout=self.connectTimeout)
            attempt = endpoint.connect(_ConnectionFactory(self, server, self.reactor))
            self._connecting[server] = (attempt, [])
            attempt.addBoth(self._connectionDone, server)
        waiter: Deferred[_Connection] = Deferred()
        self._connecting[server][1].append(waiter)
        return await waiter

    def _connectionDone(self, result: Any, server: tuple[str, int]) -> None:
        """
        The connection to C{server} is made (C{result}) or failed: hand it
        to those waiting for it.
        """
        _, waiters = self._connecting.pop(server, (None, []))
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def connectionMade(self, protocol: _Connection) -> None:
        self._connected[protocol.server] = protocol

    def connectionLost(self, protocol: _Connection) -> None:
        self._forget(protocol)

    def _forget(self, connection: _Connection) -> None:
        """
        Ask no new query over C{connection}.
        """
        if self._connected.get(connection.server) is connection:
            del self._connected[connection.server]

    def close(self) -> Deferred[Any]:
        """
        Close the connections to the servers, failing the queries waiting on
        them, and stop reading C{resolv.conf}.

        @return: A L{Deferred} firing once they are closed.
        """
        self._closed = True
        closed = Failure(NoAnswerError("the resolver is closed"))
        connecting, self._connecting = self._connecting, {}
        for attempt, waiters in connecting.values():
            for waiter in waiters:
                waiter.errback(closed)
            attempt.cancel()
        closing = []
        for connection in list(self._connected.values()):
            connection.failWaiting(closed)
            connection.close()
            closing.append(connection.lost)
        # Twisted's Resolver reads resolv.conf again every minute, and has
        # no public way to stop.
        parseCall = getattr(self, "_parseCall", None)
        if parseCall is not None and parseCall.active():
            parseCall.cancel()
        return gatherResults(closing)


def _serverName(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def makeResolver(servers: Sequence[tuple[str, int]], reactor: Any) -> TCPResolver:
    """
    A resolver asking C{servers}, or those of the system's
    C{/etc/resolv.conf} when there are none.
    """
    if servers:
        return TCPResolver(reactor, servers=servers)
    return TCPResolver(reactor, resolv="/etc/resolv.conf")


#: The address families a host is looked up in, with their record types.
_FAMILIES = (("A", records.A), ("AAAA", records.AAAA))


class _Addresses(NamedTuple):
    """
    What the A and AAAA queries of one host gave: its addresses, the TTLs
    of the records that gave them, and what failed.
    """

    addresses: list[str]
    ttls: list[int]
    failed: list[tuple[str, str]]


async def _addresses(
    resolver: Any, host: str, timeout: Sequence[float], known: dict[tuple[str, str], list[str]]
) -> _Addresses:
    """
    The A and AAAA addresses of C{host}.  A family that fails keeps the
    addresses C{known} gives it (its last good ones), and is said to have
    failed; one that answers updates C{known}.  A name that does not exist
    has no addresses in that family.
    """
    results = await DeferredList(
        [
            resolver.lookupAddress(host, timeout=timeout),
            resolver.lookupIPV6Address(host, timeout=timeout),
        ],
        consumeErrors=True,
    )
    found = _Addresses([], [], [])
    for (family, type), (ok, result) in zip(_FAMILIES, results):
        if ok:
            addresses = []
            for answer in result[0]:
                if answer.type == type:
                    addresses.append(
                        answer.payload.dottedQuad()
                        if type == records.A
                        else str(ipaddress.IPv6Address(answer.payload.address))
                    )
                    found.ttls.append(answer.ttl)
            known[(host, family)] = addresses
        elif result.check(DNSNameError, AuthoritativeDomainError):
            # No such name: DNSNameError from a server, the other from an
            # authority asked in-process.
            addresses = known[(host, family)] = []
        else:
            addresses = known.get((host, family), [])
            kept = f", keeping its last {len(addresses)}" if addresses else ""
            found.failed.append((f"{family} {host}", f"{_reason(result)}{kept}"))
        found.addresses.extend(addresses)
    return found


def _reason(failure: Failure) -> str:
    """
    A one-line reason for a failed query.
    """
    if failure.check(TimeoutError):
        return "no answer in time"
    for error, name in _CODES:
        if failure.check(error):
            return name
    if failure.check(NoAnswerError, ResolutionError):
        return str(failure.value)
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}".rstrip(": ")


class Resolution(NamedTuple):
    """
    What a name stands for now.

    @ivar backends: Its backends, sorted by address.
    @ivar ttl: The smallest TTL of the records that said so.
    @ivar failed: What failed of a partial answer, one line each.
    """

    backends: list[Backend]
    ttl: int
    failed: list[str]


def _sortKey(backend: Backend) -> tuple[int, int, int]:
    address = ipaddress.ip_address(backend.host)
    return (address.version, int(address), backend.port)


async def resolve(
    resolver: Any,
    name: DNSName,
    timeout: Sequence[float] = QUERY_TIMEOUT,
    known: dict[tuple[str, str], list[str]] | None = None,
) -> Resolution:
    """
    The backends C{name} stands for now.

    @param known: The last good addresses of each target host and family,
        kept for a family whose query fails, and updated.

    @raise ResolutionError: When a query failed so that nothing was found,
        or nothing was found.
    """
    known = {} if known is None else known
    weights: dict[tuple[str, int], int] = {}
    ttls = []
    if name.port is None:
        try:
            answers, _, _ = await resolver.lookupService(name.name, timeout=timeout)
        except (DNSNameError, AuthoritativeDomainError):
            answers = []
        except Exception:
            raise ResolutionError(_reason(Failure())) from None
        targets = srvTargets(answers)
        ttls += [ttl for _, _, _, ttl in targets]
    else:
        targets = [(name.name, name.port, 1, 0)]
    hosts: dict[str, _Addresses] = {}
    for host, port, weight, _ in targets:
        if host not in hosts:
            hosts[host] = await _addresses(resolver, host, timeout, known)
        for address in hosts[host].addresses:
            # Two records for one address and port give one backend, with
            # the weight of both, whichever comes first.
            key = (address, port)
            weights[key] = min(weights.get(key, 0) + weight, MAX_WEIGHT)
    for host in {host for host, _ in known} - set(hosts):
        for family, _ in _FAMILIES:
            known.pop((host, family), None)
    failed = [(what, why) for found in hosts.values() for what, why in found.failed]
    if not weights or len(failed) == len(_FAMILIES) * len(hosts) > 0:
        # Nothing found, or every address query failed: the last good
        # addresses are no answer.
        reasons = {why.partition(",")[0] for _, why in failed}
        if len(reasons) == 1:
            raise ResolutionError(reasons.pop())
        raise ResolutionError("; ".join(f"{what}: {why}" for what, why in failed) or "no records")
    ttls += [ttl for found in hosts.values() for ttl in found.ttls]
    backends = sorted((Backend(host, port, w) for (host, port), w in weights.items()), key=_sortKey)
    return Resolution(backends, min(ttls, default=0), [f"{what}: {why}" for what, why in failed])


class DNSDiscovery(Service):
    """
    Keeps the backends of some DNS names current, and calls C{changed} with
    all of them (in the order of the names, each address once, the first
    name's weight winning) whenever that set changes: a set of addresses
    and weights, which records given in another order do not change.

    @ivar lastGood: Each name's last good set of backends, which a reload
        hands to the next discovery so that nothing moves while it resolves.
    @ivar backends: The backends last reported.
    """

    _log = Logger()

    def __init__(
        self,
        names: Sequence[DNSName],
        resolver: Any,
        reactor: Any,
        changed: Callable[[list[Backend]], None],
        minTTL: float = 5.0,
        maxTTL: float = 60.0,
        metrics: Any = None,
        lastGood: dict[DNSName, list[Backend]] | None = None,
        timeout: Sequence[float] = QUERY_TIMEOUT,
    ) -> None:
        self.names = list(names)
        self.resolver = resolver
        self.reactor = reactor
        self.changed = changed
        self.minTTL = minTTL
        self.maxTTL = maxTTL
        self.timeout = timeout
        self._metrics = metrics
        self.lastGood = {n: b for n, b in (lastGood or {}).items() if n in self.names}
        self._tried = set(self.lastGood)
        self._failing: dict[DNSName, str] = {}
        #: What failed of each name's last answer, when it was partial.
        self._partial: dict[DNSName, list[str]] = {}
        #: Each name's last good addresses of each target and family.
        self._known: dict[DNSName, dict[tuple[str, str], list[str]]] = {n: {} for n in self.names}
        self._reported: frozenset[tuple[tuple[str, int], int]] | None = None
        self.backends: list[Backend] = []
        self._calls: dict[DNSName, IDelayedCall] = {}
        self._queries: dict[DNSName, Deferred[Any]] = {}

    def startService(self) -> None:
        super().startService()
        if self.lastGood:
            self._report()
        for name in self.names:
            self._resolve(name)

    def stopService(self) -> None:
        super().stopService()
        for call in self._calls.values():
            if call.active():
                call.cancel()
        for query in list(self._queries.values()):
            query.cancel()

    def _resolve(self, name: DNSName) -> None:
        query = Deferred.fromCoroutine(
            resolve(self.resolver, name, self.timeout, self._known[name])
        )
        self._queries[name] = query
        query.addCallbacks(self._resolved, self._failed, callbackArgs=(name,), errbackArgs=(name,))

    def _resolved(self, result: Resolution, name: DNSName) -> None:
        del self._queries[name]
        self._count(name, "success")
        if name in self._failing:
            del self._failing[name]
            self._log.info("DNS {name} resolves again", name=str(name))
        if result.failed != self._partial.get(name, []):
            if result.failed:
                self._log.warn(
                    "DNS {name}: part of the answer failed ({failed}): using the rest",
                    name=str(name),
                    failed="; ".join(result.failed),
                )
            else:
                self._log.info("DNS {name}: whole answers again", name=str(name))
            self._partial[name] = result.failed
        old = self.lastGood.get(name)
        if old is None or _summary(old) != _summary(result.backends):
            self._log.info(
                "DNS {name}: backends {backends}",
                name=str(name),
                backends=", ".join(f"{b.address} (weight {b.weight})" for b in result.backends),
            )
        self.lastGood[name] = result.backends
        self._tried.add(name)
        self._report()
        # A partial answer is asked again soon, as a failed one.
        ttl = 0 if result.failed else result.ttl
        self._schedule(name, refreshDelay(ttl, self.minTTL, self.maxTTL))

    def _failed(self, failure: Failure, name: DNSName) -> None:
        del self._queries[name]
        if not self.running:
            # Cancelled by stopService.
            return
        self._count(name, "failure")
        why = failure.getErrorMessage()
        if self._failing.get(name) != why:
            self._failing[name] = why
            kept = len(self.lastGood.get(name, ()))
            self._log.warn(
                "DNS {name} failed ({why}): keeping its last good set of {kept} backends",
                name=str(name),
                why=why,
                kept=kept,
            )
        self._tried.add(name)
        self._report()
        self._schedule(name, self.minTTL)

    def _schedule(self, name: DNSName, delay: float) -> None:
        if self.running:
            self._calls[name] = self.reactor.callLater(delay, self._resolve, name)

    def _count(self, name: DNSName, result: str) -> None:
        if self._metrics is not None:
            self._metrics.dnsResolutions.labels(str(name), result).inc()

    def _report(self) -> None:
        """
        Call C{changed} when every name has been tried once and the
        backends differ from the last ones reported (as a set).
        """
        if self._tried != set(self.names):
            return
        merged: dict[tuple[str, int], Backend] = {}
        for name in self.names:
            for backend in self.lastGood.get(name, ()):
                merged.setdefault(backend.key, backend)
        backends = list(merged.values())
        summary = _summary(backends)
        if summary != self._reported:
            self._reported = summary
            self.backends = backends
            self.changed(backends)


def _summary(backends: Iterable[Backend]) -> frozenset[tuple[tuple[str, int], int]]:
    """
    What makes two answers the same: their addresses and weights, in
    whatever order.
    """
    return frozenset((b.key, b.weight) for b in backends)

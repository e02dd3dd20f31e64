"""
Backends found in DNS, as Consul and Kubernetes publish them.

A name is either C{_service._proto.NAME}, whose SRV records (RFC 2782) give
the backends, or C{NAME:PORT}, whose A and AAAA records give their addresses
on that port.  SRV targets are looked up (A and AAAA) through the same
resolver, so a backend is always an IP address and port: the address is what
the IP hash and the admin API name it by.  Only the lowest SRV priority
present is used, as a client of RFC 2782 would use it; SRV weights become
backend weights.

Each name is resolved again when its records expire: the smallest TTL of the
answer, bounded by C{minTTL} and C{maxTTL}.  A failed resolution (a timeout,
SERVFAIL) or an empty one keeps the name's last good set and is retried after
C{minTTL}: a DNS outage never empties the pool.  Each change (new set,
failure, recovery) is logged once.

Cost: one round of queries per name per TTL (one SRV query and two address
queries per target, or two address queries), none per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.names import client
from twisted.names import dns as records
from twisted.names.error import AuthoritativeDomainError, DNSNameError, TimeoutError
from twisted.python.failure import Failure

from txlb.backend import MAX_WEIGHT, Backend, parseBackend

#: Seconds to wait for an answer (one try over TCP): as long as HAProxy's
#: resolvers wait in all by default (1 s per try, 3 retries).
QUERY_TIMEOUT = (4,)


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


class TCPResolver(client.Resolver):
    """
    A twisted.names resolver that asks over a kept TCP connection (RFC
    7766), not a new UDP socket per query: Twisted logs four lines for each
    of those, which every few seconds would drown the log.  TCP answers are
    never truncated either, however many backends a name has.  The servers
    are tried in turn, one per query.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # No "Starting factory" line for each new connection.
        cast(Any, self.factory).noisy = False

    def queryUDP(self, queries: Any, timeout: Sequence[int] | None = None) -> Deferred[Any]:
        tries = cast(Sequence[int], self.timeout if timeout is None else timeout)
        return self.queryTCP(queries, sum(tries))

    def close(self) -> None:
        """
        Close the connections to the servers.
        """
        for connection in list(self.connections):
            connection.transport.loseConnection()


def makeResolver(servers: Sequence[tuple[str, int]], reactor: Any) -> TCPResolver:
    """
    A resolver asking C{servers}, or those of the system's
    C{/etc/resolv.conf} when there are none.
    """
    if servers:
        return TCPResolver(servers=list(servers), reactor=reactor)
    return TCPResolver(resolv="/etc/resolv.conf", reactor=reactor)


async def _addresses(resolver: Any, name: str, timeout: Sequence[int]) -> tuple[list[str], int]:
    """
    The A and AAAA addresses of C{name} and the smallest TTL among them.  A
    name that does not exist has none; any other failure of either query
    fails the whole.
    """
    results = await DeferredList(
        [
            resolver.lookupAddress(name, timeout=timeout),
            resolver.lookupIPV6Address(name, timeout=timeout),
        ],
        consumeErrors=True,
    )
    found: list[str] = []
    ttls = []
    for ok, result in results:
        if not ok:
            if result.check(DNSNameError, AuthoritativeDomainError):
                # No such name: DNSNameError from a server, the others from
                # an authority asked in-process.
                continue
            raise ResolutionError(_reason(result))
        for answer in result[0]:
            if answer.type in (records.A, records.AAAA):
                found.append(
                    answer.payload.dottedQuad()
                    if answer.type == records.A
                    else _ipv6(answer.payload.address)
                )
                ttls.append(answer.ttl)
    return found, min(ttls, default=0)


def _ipv6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))


def _reason(failure: Failure) -> str:
    """
    A one-line reason for a failed query.
    """
    if failure.check(TimeoutError):
        return "no answer in time"
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}".rstrip(": ")


async def resolve(
    resolver: Any, name: DNSName, timeout: Sequence[int] = QUERY_TIMEOUT
) -> tuple[list[Backend], int]:
    """
    The backends C{name} stands for now, and the smallest TTL of the records
    that said so.

    @raise ResolutionError: When a query failed or nothing was found.
    """
    backends: dict[tuple[str, int], Backend] = {}
    ttls = []
    if name.port is None:
        try:
            answers, _, _ = await resolver.lookupService(name.name, timeout=timeout)
        except (DNSNameError, AuthoritativeDomainError):
            answers = []
        except Exception:
            raise ResolutionError(_reason(Failure())) from None
        targets = srvTargets(answers)
    else:
        targets = [(name.name, name.port, 1, 0)]
    for target, port, weight, ttl in targets:
        found, addressTTL = await _addresses(resolver, target, timeout)
        if name.port is None:
            ttls.append(ttl)
        if found:
            ttls.append(addressTTL)
        for address in found:
            backend = Backend(address, port, weight)
            backends.setdefault(backend.key, backend)
    if not backends:
        raise ResolutionError("no records")
    return list(backends.values()), min(ttls)


class DNSDiscovery(Service):
    """
    Keeps the backends of some DNS names current, and calls C{changed} with
    all of them (in the order of the names, each address once, the first
    name's weight winning) whenever that list changes.

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
        timeout: Sequence[int] = QUERY_TIMEOUT,
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
        self._reported: list[tuple[tuple[str, int], int]] | None = None
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
        query = Deferred.fromCoroutine(resolve(self.resolver, name, self.timeout))
        self._queries[name] = query
        query.addCallbacks(self._resolved, self._failed, callbackArgs=(name,), errbackArgs=(name,))

    def _resolved(self, result: tuple[list[Backend], int], name: DNSName) -> None:
        del self._queries[name]
        backends, ttl = result
        self._count(name, "success")
        if name in self._failing:
            del self._failing[name]
            self._log.info("DNS {name} resolves again", name=str(name))
        old = self.lastGood.get(name)
        if old is None or _summary(old) != _summary(backends):
            self._log.info(
                "DNS {name}: backends {backends}",
                name=str(name),
                backends=", ".join(f"{b.address} (weight {b.weight})" for b in backends),
            )
        self.lastGood[name] = backends
        self._tried.add(name)
        self._report()
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
        backends differ from the last ones reported.
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


def _summary(backends: Sequence[Backend]) -> list[tuple[tuple[str, int], int]]:
    return [(b.key, b.weight) for b in backends]

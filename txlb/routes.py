"""
Routes: which pool, or which answer of txlb's own, each request gets, and
what is rewritten on the way.

The routes are an ordered list, and the first route whose every condition
holds wins.  L{txlb.routeconfig} reads them from the C{[[routes]]} of the
configuration file; a L{Table} matches requests against them;
C{docs/routing.md} is the users' reference.

Matching costs a few dictionary lookups whatever the number of routes: the
table is indexed when it is made, by exact host, then by the wildcard's
suffix, then by exact path and by element-wise prefix (one lookup per
prefix length the table uses), and only the routes those lookups leave are
checked further, in order.  The result is always the one a scan of every
route in order would give (the tests compare both on random tables).

Paths are matched normalized (L{txlb.paths}).  A path that some servers
read otherwise (C{;parameters}, an encoded C{/} or backslash, a backslash,
C{#}, NUL), or an absolute-form target whose authority and C{Host} field
differ, is matched under each reading; if the readings would take
different routes, the request gets L{AMBIGUOUS} (400), so that no backend
acts on a path or host that txlb routed as another.
"""

from __future__ import annotations

import ipaddress
import math
import random as _random
import re
import string
from collections.abc import Callable, Collection, Sequence
from hashlib import blake2b
from typing import Any, NamedTuple, Union

from twisted.web.http_headers import Headers

from txlb.headers import Fields
from txlb.importing import oneLine
from txlb.paths import (
    Target,
    normalizeHost,
    normalizePath,
    otherReadings,
    parseQuery,
    percentEncoded,
    segmentsAfter,
    splitTarget,
)
from txlb.sticky import cookieValue

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class Response(NamedTuple):
    """
    What a C{respond} route answers.

    @ivar body: Empty if the route gives none.
    @ivar contentType: C{None} without a body.
    """

    status: int
    body: bytes
    contentType: bytes | None


class Match(NamedTuple):
    """
    Where a request goes.

    @ivar route: The route that took it.
    @ivar pool: The pool to forward to (a C{pool} route's, the pick of a
        C{split}, a router's answer), or C{None} if txlb answers itself
        (C{respond}, C{redirect}).
    @ivar mirror: The pool a copy of the request goes to, or C{None} (no
        C{mirror}, or not this time, under C{mirror-percent}, or the mirror
        is the pool the request goes to).
    @ivar target: The request-target to forward if C{strip-prefix} or
        C{set-host} rewrote it, else C{None}: forward the one received.
    @ivar location: The C{Location} of a C{redirect}, else C{None}.
    """

    route: Route
    pool: str | None
    mirror: str | None
    target: bytes | None
    location: bytes | None


class Facts:
    """
    What conditions read of one request beyond its host and path, parsed
    once, when a condition first needs it.
    """

    __slots__ = ("_address", "_addressRead", "_query", "client", "headers", "method", "rawQuery")

    def __init__(
        self, method: bytes, headers: Headers, rawQuery: bytes | None, client: str
    ) -> None:
        self.method = method
        self.headers = headers
        self.rawQuery = rawQuery
        self.client = client
        self._query: dict[bytes, list[bytes]] | None = None
        self._address: Address | None = None
        self._addressRead = False

    def query(self) -> dict[bytes, list[bytes]]:
        if self._query is None:
            self._query = parseQuery(self.rawQuery) if self.rawQuery else {}
        return self._query

    def address(self) -> Address | None:
        if not self._addressRead:
            self._address = _address(self.client)
            self._addressRead = True
        return self._address


def _address(client: str) -> Address | None:
    """
    The client's address, an IPv4-mapped IPv6 one as IPv4 (a dual-stack
    listener's), or C{None} (a UNIX socket's C{""}).
    """
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# The conditions besides the host's.  Each holds or not for a request's
# normalized path (None without one) and its other facts, and knows when
# it holds for every request another condition holds for (covers), for the
# warnings about routes that can never match.


class PathPrefix:
    """
    C{path-prefix}: the path is the prefix, or continues it with a C{/}.
    """

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._below = prefix.rstrip(b"/") + b"/"

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return path is not None and (path == self.prefix or path.startswith(self._below))

    def covers(self, other: Condition) -> bool:
        if isinstance(other, (PathPrefix, ExactPath)):
            path = other.prefix if isinstance(other, PathPrefix) else other.path
            return path == self.prefix or path.startswith(self._below)
        return False


class ExactPath:
    """
    C{path}: the path is this one.
    """

    def __init__(self, path: bytes) -> None:
        self.path = path

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return path == self.path

    def covers(self, other: Condition) -> bool:
        return isinstance(other, ExactPath) and other.path == self.path


class PathRegex:
    """
    C{path-regex}: the regular expression matches the whole path.
    """

    def __init__(self, regex: re.Pattern[bytes]) -> None:
        self.regex = regex

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return path is not None and self.regex.fullmatch(path) is not None

    def covers(self, other: Condition) -> bool:
        return isinstance(other, PathRegex) and other.regex.pattern == self.regex.pattern


class Methods:
    """
    C{method}: the method is one of these.
    """

    def __init__(self, methods: frozenset[bytes]) -> None:
        self.methods = methods

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return facts.method in self.methods

    def covers(self, other: Condition) -> bool:
        return isinstance(other, Methods) and other.methods <= self.methods


class Header:
    """
    One field of C{header}: a line of the field has the value, or (C{None})
    the field is there.
    """

    def __init__(self, name: bytes, value: bytes | None) -> None:
        self.name = name
        self.value = value

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        values = facts.headers.getRawHeaders(self.name)
        if values is None:
            return False
        return self.value is None or self.value in values

    def covers(self, other: Condition) -> bool:
        return (
            isinstance(other, Header)
            and other.name == self.name
            and (self.value is None or other.value == self.value)
        )


class QueryParameter:
    """
    One parameter of C{query}: one of its decoded values is the value, or
    (C{None}) the parameter is there.
    """

    def __init__(self, name: bytes, value: bytes | None) -> None:
        self.name = name
        self.value = value

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        values = facts.query().get(self.name)
        if values is None:
            return False
        return self.value is None or self.value in values

    def covers(self, other: Condition) -> bool:
        return (
            isinstance(other, QueryParameter)
            and other.name == self.name
            and (self.value is None or other.value == self.value)
        )


class Client:
    """
    C{client}: the client's address is in one of these networks.
    """

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        address = facts.address()
        return address is not None and any(address in network for network in self.networks)

    def covers(self, other: Condition) -> bool:
        return isinstance(other, Client) and all(
            any(_within(network, wider) for wider in self.networks) for network in other.networks
        )


def _within(network: Network, wider: Network) -> bool:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(wider, ipaddress.IPv4Network):
        return network.subnet_of(wider)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(wider, ipaddress.IPv6Network):
        return network.subnet_of(wider)
    return False


Condition = Union[PathPrefix, ExactPath, PathRegex, Methods, Header, QueryParameter, Client]


class Template:
    """
    A C{redirect} template, split once into literal text and placeholders
    (C{{host}} and C{{uri}}; a brace is written twice, as C{str.format}
    takes it).

    @raise ValueError: For a template C{str.format} would not take, or a
        placeholder with a conversion or a format.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[tuple[bytes, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError:
            # Not the interpreter's words, which differ between CPython and
            # PyPy.
            raise ValueError("a '{' or '}' without its pair (write '{{' or '}}')") from None
        for literal, field, spec, conversion in parsed:
            if spec or conversion:
                raise ValueError(f"{{{field}}} takes no conversion or format")
            self.parts.append((literal.encode("ascii"), field))
        self.needsHost = any(field == "host" for _, field in self.parts)

    def expand(self, host: bytes | None, uri: bytes) -> bytes:
        """
        The C{Location}, each value percent-encoded where it is not
        printable ASCII.
        """
        values = {"host": host or b"", "uri": uri}
        pieces = []
        for literal, field in self.parts:
            pieces.append(literal)
            if field is not None:
                pieces.append(percentEncoded(values[field]))
        return b"".join(pieces)


class Route:
    """
    One route, checked.

    @ivar index: Its place in the list, from 1.
    @ivar name: Its C{name}, or C{None}.
    @ivar label: What logs and metrics call it: its name, or its index.
    @ivar config: The table it was read from, as given.
    @ivar hosts: The exact hosts of its C{host} condition, normalized, or
        C{None} if it has none.
    @ivar wildcards: The suffixes of its wildcard hosts (C{example.com} for
        C{*.example.com}).
    @ivar conditions: Every other condition.
    @ivar prefix: Its C{path-prefix}, or C{None}.
    @ivar exact: Its C{path}, or C{None}.
    @ivar residual: The conditions a L{Table}'s index does not answer for:
        all but the exact path if there is one, else all but the prefix.
    @ivar action: C{"pool"}, C{"split"}, C{"respond"}, C{"redirect"} or
        C{"router"}.
    @ivar pool: A C{pool} route's pool.
    @ivar split: A C{split} route's pools and weights, in order.
    @ivar splitKey: C{(kind, name)} of its C{split-key} (C{"cookie"},
        C{"header"} or C{"ip"}, a name for the first two), or C{None}.
    @ivar response: A C{respond} route's answer.
    @ivar redirect: A C{redirect} route's template.
    @ivar redirectStatus: A C{redirect} route's status.
    @ivar router: A C{router} route's L{txlb.interfaces.IRouter}.
    @ivar mirror: The pool copies go to, or C{None}.
    @ivar mirrorPercent: The share of requests copied, from 0 to 100.
    @ivar stripPrefix: Whether the matched prefix is taken off the target.
    @ivar setHost: The C{Host} the backend gets instead, or C{None}.
    @ivar requestRemove: The request fields removed, lower-cased.
    @ivar requestAdd: The request fields added.
    @ivar responseRemove: The response fields removed, lower-cased.
    @ivar responseAdd: The response fields added.
    @ivar rateLimit: Its C{rate-limit} (a L{txlb.ratelimit.Rate}), or
        C{None}.
    @ivar rateLimitBurst: Its C{rate-limit-burst}, or C{None} (a second's
        worth of the rate).
    @ivar rateLimitKey: Its C{rate-limit-key}, or C{None} (the top level's
        C{--rate-limit-key}).
    """

    name: str | None = None
    action = "pool"
    pool: str | None = None
    split: tuple[tuple[str, int], ...] = ()
    splitTotal = 0
    splitKey: tuple[str, bytes] | None = None
    response: Response | None = None
    redirect: Template | None = None
    redirectStatus = 308
    router: Any = None
    mirror: str | None = None
    mirrorPercent: float = 100.0
    stripPrefix = False
    setHost: bytes | None = None
    requestRemove: frozenset[bytes] = frozenset()
    requestAdd: Fields
    responseRemove: frozenset[bytes] = frozenset()
    responseAdd: Fields
    rateLimit: Any = None
    rateLimitBurst: int | None = None
    rateLimitKey: str | None = None

    def __init__(
        self,
        index: int,
        config: dict[str, Any],
        hosts: frozenset[bytes] | None = None,
        wildcards: frozenset[bytes] = frozenset(),
        conditions: Sequence[Condition] = (),
    ) -> None:
        self.index = index
        self.config = config
        self.hosts = hosts
        self.wildcards = wildcards
        self.conditions = tuple(conditions)
        self.prefix = next((c.prefix for c in conditions if isinstance(c, PathPrefix)), None)
        self.exact = next((c.path for c in conditions if isinstance(c, ExactPath)), None)
        indexed = ExactPath if self.exact is not None else PathPrefix
        self.residual = tuple(c for c in conditions if not isinstance(c, indexed))
        self.requestAdd = []
        self.responseAdd = []
        self._matches: dict[tuple[str | None, str | None], Match] = {}

    def __repr__(self) -> str:
        return f"<Route {self.label}>"

    @property
    def label(self) -> str:
        return self.name if self.name is not None else str(self.index)

    @property
    def catchesAll(self) -> bool:
        """
        Whether it takes every request: no condition, and no router that
        could let one through.
        """
        return self.hosts is None and not self.conditions and self.router is None

    def hostHolds(self, host: bytes | None) -> bool:
        """
        Whether its C{host} condition holds for a normalized host.
        """
        if self.hosts is None:
            return True
        if host is None:
            return False
        if host in self.hosts:
            return True
        first, dot, rest = host.partition(b".")
        return bool(first and dot) and rest in self.wildcards

    def holds(self, host: bytes | None, path: bytes | None, facts: Facts) -> bool:
        """
        Whether every condition holds for a request read with this host and
        path (both normalized).
        """
        return self.hostHolds(host) and _allHold(self.conditions, path, facts)

    def matched(self, pool: str | None = None, mirror: str | None = None) -> Match:
        """
        The L{Match} of a request this route takes to C{pool} (and a copy
        to C{mirror}) without a rewritten target: made once, as there are
        few, so that matching allocates nothing.
        """
        try:
            return self._matches[pool, mirror]
        except KeyError:
            made = self._matches[pool, mirror] = Match(self, pool, mirror, None, None)
            return made

    def pools(self) -> set[str]:
        """
        The pools it may send requests (or copies) to, routers aside.
        """
        named = {pool for pool, _ in self.split}
        if self.pool is not None:
            named.add(self.pool)
        if self.mirror is not None:
            named.add(self.mirror)
        return named

    def pickSplit(self, key: bytes | None, chance: Callable[[], float]) -> str:
        """
        The pool of a C{split} for a request: by key if it has one (the same
        key always gets the same pool), else by C{chance()}, uniform in
        [0, 1).

        The key's pool is the highest of weighted rendezvous scores
        (BLAKE2b of the pool's name and the key, as C{iphash} does for
        backends): each pool gets its weight's share of keys, the choice
        is the same in every process and after restarts, and raising one
        pool's weight moves keys only to that pool, never between the
        others, so a canary grown from 5 to 10 keeps its users.
        """
        if key:
            return max(self.split, key=lambda split: _score(split[0], split[1], key))[0]
        point = chance() * self.splitTotal
        for pool, weight in self.split:
            point -= weight
            if point < 0:
                return pool
        return self.split[-1][0]

    def forwardTarget(self, target: bytes, parts: Target) -> bytes:
        """
        The target to forward after C{strip-prefix} and C{set-host}: the
        rest of the path after the matched prefix, byte for byte
        (L{segmentsAfter}), and an absolute-form target's authority
        replaced by the new host.  The query and anything after it are
        kept as they came.
        """
        head = target[: parts.start]
        path = parts.path or b""
        if self.stripPrefix and self.prefix is not None:
            path = segmentsAfter(path, self.prefix.count(b"/"))
        if self.setHost is not None and parts.authority is not None:
            head = head[: len(head) - len(parts.authority)] + self.setHost
        return head + path + target[parts.end :]

    def requestFields(self, fields: Fields) -> Fields:
        """
        The request's field lines after this route's rewrites: C{remove},
        then C{set-host}, then C{add}.  The same list if there are none.
        """
        if not (self.requestRemove or self.requestAdd or self.setHost is not None):
            return fields
        kept = _without(fields, self.requestRemove)
        if self.setHost is not None:
            at = next((i for i, (name, _) in enumerate(kept) if name.lower() == b"host"), 0)
            kept = [field for field in kept if field[0].lower() != b"host"]
            kept.insert(at, (b"Host", self.setHost))
        kept.extend(self.requestAdd)
        return kept

    def responseFields(self, fields: Fields) -> Fields:
        """
        The response's field lines after this route's rewrites: C{remove},
        then C{add}.  The same list if there are none.
        """
        if not (self.responseRemove or self.responseAdd):
            return fields
        kept = _without(fields, self.responseRemove)
        kept.extend(self.responseAdd)
        return kept


def _allHold(conditions: Sequence[Condition], path: bytes | None, facts: Facts) -> bool:
    for condition in conditions:
        if not condition.holds(path, facts):
            return False
    return True


def _without(fields: Fields, names: frozenset[bytes]) -> Fields:
    if not names:
        return list(fields)
    return [field for field in fields if field[0].lower() not in names]


def _score(pool: str, weight: int, key: bytes) -> float:
    digest = blake2b(key, digest_size=8, person=b"txlb-split")
    digest.update(b"\0" + pool.encode())
    unit = (int.from_bytes(digest.digest(), "big") + 1) / (2**64 + 1)
    return -weight / math.log(unit)


def _refusal(label: str, body: bytes) -> Route:
    route = Route(0, {})
    route.name = label
    route.action = "respond"
    route.response = Response(400, body, b"text/plain; charset=utf-8")
    return route


#: What a request gets when readings of its path or host that servers
#: differ on would take different routes.
AMBIGUOUS = _refusal(
    "(ambiguous)", b"The request's path or host reads differently to different servers.\n"
)
#: What a request without a host gets from a redirect that needs one.
NO_HOST = _refusal("(no host)", b"The redirect needs the request's Host.\n")


class _Bucket:
    """
    The routes that may match requests for one host (or one wildcard
    suffix, or any other host), indexed by path.

    Each list holds, in order, the routes a lookup leaves, the routes
    without a path condition merged in, and ends at the first route that
    is sure to match there (no condition the index does not answer for, no
    router): a request for one host and path costs one or two dictionary
    lookups and no merge.

    @ivar pathless: For a request without a path (CONNECT, C{*}): the
        routes without a path, exact path or element-wise prefix condition.
    @ivar rooted: For a path no exact path nor prefix meets: those, and the
        routes with the prefix C{/}.
    @ivar byPath: By exact path: its routes and C{rooted}.
    @ivar byPrefix: By prefix other than C{/}: its routes and C{rooted}.
    @ivar depths: The prefixes' lengths in segments, ascending.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        pathless: list[Route] = []
        rooted: list[Route] = []
        byPath: dict[bytes, list[Route]] = {}
        byPrefix: dict[bytes, list[Route]] = {}
        for route in routes:
            if route.exact is not None:
                byPath.setdefault(route.exact, []).append(route)
            elif route.prefix == b"/":
                rooted.append(route)
            elif route.prefix is not None:
                byPrefix.setdefault(route.prefix, []).append(route)
            else:
                pathless.append(route)
                rooted.append(route)
        self.pathless = _cut(pathless)
        self.rooted = _cut(rooted)
        self.byPath = {path: _cut(found + rooted) for path, found in byPath.items()}
        self.byPrefix = {prefix: _cut(found + rooted) for prefix, found in byPrefix.items()}
        self.depths = tuple(sorted({prefix.count(b"/") for prefix in byPrefix}))

    def candidates(self, path: bytes | None) -> Sequence[Route]:
        """
        The routes, in order, that may match a request with this
        normalized path, given its host: a superset of those that do, up
        to the first that surely does.
        """
        if path is None or path[:1] != b"/":
            return self.pathless
        found = None
        if self.byPath:
            found = self.byPath.get(path)
        if self.depths:
            size = len(path)
            end = level = 0
            for depth in self.depths:
                while level < depth and end < size:
                    following = path.find(b"/", end + 1)
                    end = size if following < 0 else following
                    level += 1
                if level < depth:
                    break
                hit = self.byPrefix.get(path[:end])
                if hit is not None:
                    found = hit if found is None else _merged(found, hit)
        return self.rooted if found is None else found


def _cut(routes: list[Route]) -> tuple[Route, ...]:
    """
    C{routes} in order, up to the first that surely matches where they
    were looked up.
    """
    routes.sort(key=_index)
    for at, route in enumerate(routes):
        if not route.residual and route.router is None:
            return tuple(routes[: at + 1])
    return tuple(routes)


def _merged(first: Sequence[Route], second: Sequence[Route]) -> tuple[Route, ...]:
    """
    Two candidate lists as one, in order: for a path that meets two
    prefixes, or an exact path and a prefix.
    """
    return _cut(list({route.index: route for route in (*first, *second)}.values()))


def _index(route: Route) -> int:
    return route.index


class Table:
    """
    Routes compiled for matching.

    @ivar routes: The routes, in order.
    """

    #: How many hosts' normalized forms are remembered.
    hostCache = 512

    def __init__(
        self,
        routes: Sequence[Route],
        pools: Collection[str],
        onRouterError: Callable[[Route, str], object] | None = None,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """
        @param pools: The names of the pools: a router's answer must be one.
        @param onRouterError: Called with the route and one line each time
            its router raises or answers what is not a pool (the request
            falls through to the next route); the caller counts it and
            rate-limits its log.
        @param random: Uniform in [0, 1): splits without a key, and
            C{mirror-percent}.
        """
        self.routes = tuple(routes)
        self._pools = frozenset(pools)
        self._onRouterError = onRouterError
        self._random = random
        self._hosts: dict[bytes, bytes | None] = {}
        exact: set[bytes] = set()
        suffixes: set[bytes] = set()
        for route in self.routes:
            exact |= route.hosts or set()
            suffixes |= route.wildcards
        self._exact = {host: self._bucket(host) for host in exact}
        self._wildcards = {
            suffix: _Bucket([r for r in self.routes if r.hosts is None or suffix in r.wildcards])
            for suffix in suffixes
        }
        self._anyHost = self._bucket(None)

    def _bucket(self, host: bytes | None) -> _Bucket:
        return _Bucket([route for route in self.routes if route.hostHolds(host)])

    def _bucketFor(self, host: bytes | None) -> _Bucket:
        if host is None:
            return self._anyHost
        bucket = self._exact.get(host)
        if bucket is not None:
            return bucket
        if self._wildcards:
            first, dot, rest = host.partition(b".")
            if first and dot:
                bucket = self._wildcards.get(rest)
                if bucket is not None:
                    return bucket
        return self._anyHost

    def _hostName(self, host: bytes) -> bytes | None:
        """
        L{normalizeHost}, remembered for the last few hundred hosts.
        """
        try:
            return self._hosts[host]
        except KeyError:
            pass
        name = normalizeHost(host)
        if len(self._hosts) >= self.hostCache:
            self._hosts.clear()
        self._hosts[host] = name
        return name

    def match(
        self,
        method: bytes,
        target: bytes,
        host: bytes | None,
        headers: Headers,
        client: str,
        request: object = None,
    ) -> Match | None:
        """
        The route a request takes, and where it goes; C{None} if no route
        matches (the C{default} pool takes it if there is one, else txlb
        answers 404, flag C{NR}).

        @param method: The request's method.
        @param target: The request-target, raw.
        @param host: The C{Host} field's value (HTTP/1.x) or C{:authority}
            (HTTP/2), raw, or C{None}.  An absolute-form target's authority
            takes its place (RFC 9112 section 3.2.2).
        @param headers: The request's fields: a
            L{twisted.web.http_headers.Headers} (only C{getRawHeaders} is
            used).
        @param client: The client's address (under the PROXY protocol, the
            real client's): C{"10.0.0.1"}, C{"::1"}, or C{""}.
        @param request: What a router is given: the C{twisted.web} request.
        """
        # (Single bytes are looked for as integers: on CPython, "in" with a
        # bytes needle costs three times more.)
        if target[:1] == b"/" and 0x23 not in target:
            # Origin form, as nearly every request: the path read one way
            # unless it holds a byte that servers read differently (%, ;,
            # backslash, NUL, or # above).
            path, question, query = target.partition(b"?")
            if 0x25 not in path and 0x3B not in path and 0x5C not in path and 0 not in path:
                if b"//" in path or b"/." in path:
                    path = normalizePath(path)
                name = None if host is None else self._hostName(host)
                return self._first(
                    self._bucketFor(name).candidates(path),
                    name,
                    path,
                    query if question else None,
                    method,
                    target,
                    headers,
                    client,
                    request,
                )
        return self._matchAnyForm(method, target, host, headers, client, request)

    def _matchAnyForm(
        self,
        method: bytes,
        target: bytes,
        host: bytes | None,
        headers: Headers,
        client: str,
        request: object,
    ) -> Match | None:
        """
        L{match} for any request-target, read every way servers may read
        it: each route in order must hold for all readings or for none.
        """
        parts = splitTarget(target)
        path = None if parts.path is None else normalizePath(parts.path)
        if parts.authority is not None:
            name = normalizeHost(parts.authority)
        else:
            name = None if host is None else self._hostName(host)
        hosts = [name]
        if parts.authority is not None and host is not None:
            fieldName = self._hostName(host)
            if fieldName != name:
                hosts.append(fieldName)
        paths = [path, *otherReadings(target, parts)]
        readings = [(each, reading) for each in hosts for reading in paths]
        if len(readings) == 1:
            return self._first(
                self._bucketFor(name).candidates(path),
                name,
                path,
                parts.query,
                method,
                target,
                headers,
                client,
                request,
            )
        facts = Facts(method, headers, parts.query, client)
        seen: dict[int, Route] = {}
        for each, reading in readings:
            for route in self._bucketFor(each).candidates(reading):
                seen[route.index] = route
        for index in sorted(seen):
            route = seen[index]
            holding = [route.holds(each, reading, facts) for each, reading in readings]
            if not any(holding):
                continue
            if not all(holding):
                return AMBIGUOUS.matched()
            pool = None
            if route.router is not None:
                pool = self._ask(route, request)
                if pool is None:
                    continue
            return self._matched(route, pool, target, name, headers, client)
        return None

    def _first(
        self,
        candidates: Sequence[Route],
        name: bytes | None,
        path: bytes | None,
        query: bytes | None,
        method: bytes,
        target: bytes,
        headers: Headers,
        client: str,
        request: object,
    ) -> Match | None:
        """
        The first of the candidates that holds for a request read one way.
        """
        facts = None
        for route in candidates:
            if route.residual:
                if facts is None:
                    facts = Facts(method, headers, query, client)
                if not _allHold(route.residual, path, facts):
                    continue
            pool = None
            if route.router is not None:
                pool = self._ask(route, request)
                if pool is None:
                    continue
            return self._matched(route, pool, target, name, headers, client)
        return None

    def _ask(self, route: Route, request: object) -> str | None:
        """
        A router's answer: a pool, or C{None} to fall through to the next
        route (reported if the router raised or answered no pool).
        """
        try:
            answer = route.router.route(request)
        except Exception as e:
            self._routerFailed(route, f"raised {oneLine(e)}")
            return None
        if answer is not None and (not isinstance(answer, str) or answer not in self._pools):
            self._routerFailed(route, f"answered {answer!r}, which is not a pool")
            return None
        return answer

    def _routerFailed(self, route: Route, text: str) -> None:
        if self._onRouterError is not None:
            self._onRouterError(route, text)

    def _matched(
        self,
        route: Route,
        pool: str | None,
        target: bytes,
        host: bytes | None,
        headers: Headers,
        client: str,
    ) -> Match:
        action = route.action
        if action == "pool":
            pool = route.pool
        elif action == "split":
            pool = route.pickSplit(_splitKey(route, headers, client), self._random)
        elif action == "respond":
            return route.matched()
        elif action == "redirect":
            assert route.redirect is not None
            if host is None and route.redirect.needsHost:
                return NO_HOST.matched()
            return Match(route, None, None, None, route.redirect.expand(host, _uri(target)))
        mirror = route.mirror
        if mirror == pool:
            # The pool has the request already: a copy would double it there.
            mirror = None
        elif mirror is not None and route.mirrorPercent < 100:
            if self._random() * 100 >= route.mirrorPercent:
                mirror = None
        if route.stripPrefix or (route.setHost is not None and target[:1] != b"/"):
            return Match(
                route, pool, mirror, route.forwardTarget(target, splitTarget(target)), None
            )
        return route.matched(pool, mirror)


def _uri(target: bytes) -> bytes:
    """
    A redirect's C{{uri}}: the request-target in origin form (an
    absolute-form one's path and what follows, C{/} for an empty path),
    empty for CONNECT's authority form.
    """
    parts = splitTarget(target)
    if parts.authority is None:
        return target
    if parts.path is None:
        return b""
    return (parts.path or b"/") + target[parts.end :]


def _splitKey(route: Route, headers: Headers, client: str) -> bytes | None:
    """
    The value of a split's key in a request, or C{None}.
    """
    if route.splitKey is None:
        return None
    kind, name = route.splitKey
    if kind == "cookie":
        return cookieValue(headers.getRawHeaders(b"cookie", ()), name)
    if kind == "header":
        values = headers.getRawHeaders(name)
        return None if values is None else b", ".join(values)
    return client.encode()

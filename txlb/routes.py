"""
Routes: which pool, or which answer of txlb's own, each request gets.

The C{[[routes]]} of the configuration file are an ordered list, and the
first route whose every condition holds wins (L{parseRoutes} checks them,
L{Table} matches them).  Conditions: C{host}, C{path-prefix}, C{path},
C{path-regex}, C{method}, C{header}, C{query}, C{client}; actions: C{pool},
C{split}, C{respond}, C{redirect} or C{router}, with C{mirror} and the
opt-in rewrites on the routes that forward.  C{docs/routing.md} is the
users' reference.

Matching costs what a few dictionary lookups cost, whatever the number of
routes: the table is indexed when it is made, by exact host, then by the
wildcard's suffix, then by exact path and by element-wise prefix (one
lookup per prefix length the table uses), and only the routes those
lookups leave are checked further, in order.  The result is always the one
a scan of every route in order would give (the tests compare both on
random tables).

Paths are matched normalized (L{txlb.paths}).  A path that some servers
read otherwise (C{;parameters}, C{%2F}, C{\\\\}, C{#}), or an absolute-form
target whose host differs from its C{Host} field, is matched under each
reading; if the readings would take different routes, the request gets
L{AMBIGUOUS} (400), so that no backend acts on a path or host that txlb
routed as another.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import random as _random
import re
import string
from collections.abc import Callable, Collection, Sequence
from hashlib import blake2b
from typing import Any, NamedTuple, Union

from twisted.web.http_headers import Headers
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from txlb.headers import HOP_BY_HOP, Fields
from txlb.http1 import isToken
from txlb.importing import importName, oneLine
from txlb.interfaces import IRouter
from txlb.paths import (
    ENCODED_SLASH,
    Target,
    normalizeEscapes,
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

#: The keys a route may have, in the order the reference lists them.
KEYS = (
    "name",
    "host",
    "path-prefix",
    "path",
    "path-regex",
    "method",
    "header",
    "query",
    "client",
    "pool",
    "split",
    "split-key",
    "respond",
    "body",
    "content-type",
    "redirect",
    "redirect-status",
    "router",
    "mirror",
    "mirror-percent",
    "strip-prefix",
    "set-host",
    "request-headers",
    "response-headers",
)
#: The actions, one per route.
ACTIONS = ("pool", "split", "respond", "redirect", "router")
#: The actions that forward the request to a pool.
FORWARDING = ("pool", "split", "router")
#: The keys that only make sense on a forwarding route.
FORWARD_ONLY = (
    "mirror",
    "strip-prefix",
    "set-host",
    "request-headers",
    "response-headers",
)
#: The statuses a redirect may have.
REDIRECTS = (301, 302, 303, 307, 308)
#: The placeholders of a redirect template.
PLACEHOLDERS = ("host", "uri")
#: Methods RFC 9110 and RFC 5789 define: a lower-case one is a typo.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(rb"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
_SET_HOST = re.compile(rb"([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")
_SCHEME_OR_PATH = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:|/")
#: A field value: printable ASCII, spaces and tabs inside.
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?|")
#: Fields txlb writes itself, so a route may neither add nor remove them.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class RoutesError(ValueError):
    """
    The routes cannot be used.

    @ivar problems: One line per problem, each naming its route.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class Response(NamedTuple):
    """
    What a C{respond} route answers.

    @ivar body: Empty if the route gives none.
    @ivar contentType: L{None} without a body.
    """

    status: int
    body: bytes
    contentType: bytes | None


class Match(NamedTuple):
    """
    Where a request goes.

    @ivar route: The route that took it.
    @ivar pool: The pool to forward to (a C{pool} route's, the pick of a
        C{split}, a router's answer), or L{None} if txlb answers itself
        (C{respond}, C{redirect}).
    @ivar mirror: The pool a copy of the request goes to, or L{None} (no
        C{mirror}, or not this time, under C{mirror-percent}).
    @ivar target: The request-target to forward: the one received, the
        same object, unless C{strip-prefix} or C{set-host} rewrote it.
    @ivar location: The C{Location} of a C{redirect}, else L{None}.
    """

    route: Route
    pool: str | None
    mirror: str | None
    target: bytes
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
    listener's), or L{None} (a UNIX socket's C{""}).
    """
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# Conditions other than the host: each holds or not for a normalized path
# (None without one) and the request's other facts.


class _PathPrefix:
    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._below = prefix.rstrip(b"/") + b"/"

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return path is not None and (path == self.prefix or path.startswith(self._below))


class _Path:
    def __init__(self, path: bytes) -> None:
        self.path = path

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return path == self.path


class _PathRegex:
    def __init__(self, regex: re.Pattern[bytes]) -> None:
        self.regex = regex

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return path is not None and self.regex.fullmatch(path) is not None


class _Method:
    def __init__(self, methods: frozenset[bytes]) -> None:
        self.methods = methods

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        return facts.method in self.methods


class _Header:
    def __init__(self, name: bytes, value: bytes | None) -> None:
        self.name = name
        self.value = value

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        values = facts.headers.getRawHeaders(self.name)
        if values is None:
            return False
        return self.value is None or self.value in values


class _Query:
    def __init__(self, name: bytes, value: bytes | None) -> None:
        self.name = name
        self.value = value

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        values = facts.query().get(self.name)
        if values is None:
            return False
        return self.value is None or self.value in values


class _Client:
    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)

    def holds(self, path: bytes | None, facts: Facts) -> bool:
        address = facts.address()
        return address is not None and any(address in network for network in self.networks)


_Condition = Union[_PathPrefix, _Path, _PathRegex, _Method, _Header, _Query, _Client]


class _Template:
    """
    A C{redirect} template, split once into literal text and placeholders.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[tuple[bytes, str | None]] = []
        for literal, field, spec, conversion in string.Formatter().parse(text):
            if spec or conversion:
                raise ValueError(f"{{{field}}} takes no conversion or format")
            self.parts.append((literal.encode("ascii"), field))
        self.needsHost = any(field == "host" for _, field in self.parts)

    def expand(self, host: bytes | None, uri: bytes) -> bytes:
        values = {"host": host or b"", "uri": uri}
        pieces = []
        for literal, field in self.parts:
            pieces.append(literal)
            if field is not None:
                pieces.append(percentEncoded(values[field]))
        return b"".join(pieces)


class Route:
    """
    One checked C{[[routes]]} entry.

    @ivar index: Its place in the list, from 1.
    @ivar name: Its C{name}, or L{None}.
    @ivar label: What logs and metrics call it: its name, or its index.
    @ivar config: The table it was read from, as given.
    @ivar action: One of L{ACTIONS}.
    @ivar pool: A C{pool} route's pool.
    @ivar split: A C{split} route's pools and weights, in order.
    @ivar splitKey: C{(kind, name)} of its C{split-key} (C{"cookie"},
        C{"header"} or C{"ip"}, a name for the first two), or L{None}.
    @ivar response: A C{respond} route's answer.
    @ivar redirectStatus: A C{redirect} route's status.
    @ivar router: A C{router} route's L{IRouter}.
    @ivar mirror: The pool copies go to, or L{None}.
    @ivar mirrorPercent: The share of requests copied, from 0 to 100.
    @ivar stripPrefix: Whether the matched prefix is taken off the target.
    @ivar setHost: The C{Host} the backend gets instead, or L{None}.
    """

    index = 0
    name: str | None = None
    config: dict[str, Any]
    action = "pool"
    # Conditions.
    hosts: frozenset[bytes] | None = None
    wildcards: frozenset[bytes] = frozenset()
    prefix: bytes | None = None
    exact: bytes | None = None
    regex: re.Pattern[bytes] | None = None
    methods: frozenset[bytes] | None = None
    headerPairs: tuple[tuple[bytes, bytes | None], ...] = ()
    queryPairs: tuple[tuple[bytes, bytes | None], ...] = ()
    networks: tuple[Network, ...] | None = None
    #: Every condition but the host's.
    conditions: tuple[_Condition, ...] = ()
    #: The conditions the table's index does not answer for.
    residual: tuple[_Condition, ...] = ()
    # Actions.
    pool: str | None = None
    split: tuple[tuple[str, int], ...] = ()
    splitTotal = 0
    splitKey: tuple[str, bytes] | None = None
    response: Response | None = None
    redirect: _Template | None = None
    redirectStatus = 308
    router: Any = None
    mirror: str | None = None
    mirrorPercent: float = 100.0
    # Rewrites.
    stripPrefix = False
    setHost: bytes | None = None
    requestRemove: frozenset[bytes] = frozenset()
    requestAdd: Fields
    responseRemove: frozenset[bytes] = frozenset()
    responseAdd: Fields

    def __init__(self, index: int, config: dict[str, Any]) -> None:
        self.index = index
        self.config = config
        self.requestAdd = []
        self.responseAdd = []

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


def _allHold(conditions: Sequence[_Condition], path: bytes | None, facts: Facts) -> bool:
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

    @ivar always: The routes without a path, element-wise prefix or exact
        path condition.
    @ivar rooted: Those with the prefix C{/}.
    @ivar byPath: Those with an exact path, by path.
    @ivar byPrefix: Those with another prefix, by prefix.
    @ivar depths: The prefixes' lengths in segments, ascending.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        always: list[Route] = []
        rooted: list[Route] = []
        self.byPath: dict[bytes, list[Route]] = {}
        self.byPrefix: dict[bytes, list[Route]] = {}
        for route in routes:
            if route.exact is not None:
                self.byPath.setdefault(route.exact, []).append(route)
            elif route.prefix == b"/":
                rooted.append(route)
            elif route.prefix is not None:
                self.byPrefix.setdefault(route.prefix, []).append(route)
            else:
                always.append(route)
            if not route.conditions and route.router is None:
                break  # Nothing after it can match these hosts.
        self.always = tuple(always)
        self.rooted = tuple(rooted)
        self.depths = tuple(sorted({prefix.count(b"/") for prefix in self.byPrefix}))

    def candidates(self, path: bytes | None) -> Sequence[Route]:
        """
        The routes, in order, that may match a request with this
        normalized path, given its host: a superset of those that do.
        """
        if path is None or path[:1] != b"/":
            return self.always
        found: list[Route] | None = None
        groups = 0
        if self.rooted:
            found = list(self.rooted)
            groups = 1
        if self.byPath:
            hit = self.byPath.get(path)
            if hit is not None:
                found = hit if found is None else found + hit
                groups += 1
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
                    found = hit if found is None else found + hit
                    groups += 1
        if found is None:
            return self.always
        if self.always:
            found = found + list(self.always)
            groups += 1
        if groups > 1:
            found.sort(key=_index)
        return found


def _index(route: Route) -> int:
    return route.index


class Table:
    """
    Routes compiled for matching.

    @ivar routes: The routes, in order.
    """

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
        exact: set[bytes] = set()
        suffixes: set[bytes] = set()
        for route in self.routes:
            exact |= route.hosts or set()
            suffixes |= route.wildcards
        self._usesHost = any(route.hosts is not None for route in self.routes)
        self._exact = {host: self._bucket(host) for host in exact}
        self._wildcards = {
            suffix: _Bucket([r for r in self.routes if r.hosts is None or suffix in r.wildcards])
            for suffix in suffixes
        }
        self._anyHost = self._bucket(None)

    def _bucket(self, host: bytes | None) -> _Bucket:
        return _Bucket([route for route in self.routes if route.hostHolds(host)])

    def _bucketFor(self, host: bytes | None) -> _Bucket:
        if host is None or not self._usesHost:
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
        The route a request takes, and where it goes; L{None} if no route
        matches (the C{default} pool takes it if there is one, else txlb
        answers 404, flag C{NR}).

        @param method: The request's method.
        @param target: The request-target, raw.
        @param host: The C{Host} field's value (HTTP/1.x) or C{:authority}
            (HTTP/2), raw, or L{None}.  An absolute-form target's authority
            takes its place (RFC 9112 section 3.2.2).
        @param headers: The request's fields: a
            L{twisted.web.http_headers.Headers} (only C{getRawHeaders} is
            used).
        @param client: The client's address (under the PROXY protocol, the
            real client's): C{"10.0.0.1"}, C{"::1"}, or C{""}.
        @param request: What a router is given: the C{twisted.web} request.
        """
        parts = splitTarget(target)
        path = parts.path
        if path is not None and (not path or b"%" in path or b"//" in path or b"/." in path):
            path = normalizePath(path)
        if parts.authority is not None:
            name = normalizeHost(parts.authority)
        elif host is not None:
            name = normalizeHost(host)
        else:
            name = None
        facts = None
        raw = parts.path
        if raw is not None and (
            b"%" in raw or b";" in raw or b"\\" in raw or b"\0" in raw or b"#" in target
        ):
            # What otherReadings looks for, found or not in a few searches.
            others = otherReadings(target, parts)
        else:
            others = []
        otherHost = None
        if parts.authority is not None and host is not None:
            otherHost = normalizeHost(host)
            if otherHost == name:
                otherHost = None
        if others or otherHost is not None:
            return self._matchReadings(
                name, path, others, otherHost, parts, target, method, headers, client, request
            )
        for route in self._bucketFor(name).candidates(path):
            if route.residual:
                if facts is None:
                    facts = Facts(method, headers, parts.query, client)
                if not _allHold(route.residual, path, facts):
                    continue
            pool = None
            if route.router is not None:
                pool = self._ask(route, request)
                if pool is None:
                    continue
            return self._matched(route, pool, parts, target, name, headers, client)
        return None

    def _matchReadings(
        self,
        name: bytes | None,
        path: bytes | None,
        others: list[bytes],
        otherHost: bytes | None,
        parts: Target,
        target: bytes,
        method: bytes,
        headers: Headers,
        client: str,
        request: object,
    ) -> Match | None:
        """
        L{match} for a request read several ways: each route in order must
        hold for all readings or for none.
        """
        hosts = [name] if otherHost is None else [name, otherHost]
        readings = [(host, each) for host in hosts for each in [path, *others]]
        facts = Facts(method, headers, parts.query, client)
        seen: dict[int, Route] = {}
        for host, each in readings:
            for route in self._bucketFor(host).candidates(each):
                seen[route.index] = route
        for index in sorted(seen):
            route = seen[index]
            holding = [route.holds(host, each, facts) for host, each in readings]
            if not any(holding):
                continue
            if not all(holding):
                return Match(AMBIGUOUS, None, None, target, None)
            pool = None
            if route.router is not None:
                pool = self._ask(route, request)
                if pool is None:
                    continue
            return self._matched(route, pool, parts, target, name, headers, client)
        return None

    def _ask(self, route: Route, request: object) -> str | None:
        """
        A router's answer: a pool, or L{None} to fall through to the next
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
        parts: Target,
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
            return Match(route, None, None, target, None)
        elif action == "redirect":
            assert route.redirect is not None
            if host is None and route.redirect.needsHost:
                return Match(NO_HOST, None, None, target, None)
            if parts.authority is not None:
                uri = (parts.path or b"/") + target[parts.end :]
            elif parts.path is None:
                uri = b""
            else:
                uri = target
            return Match(route, None, None, target, route.redirect.expand(host, uri))
        mirror = route.mirror
        if mirror is not None and route.mirrorPercent < 100:
            if self._random() * 100 >= route.mirrorPercent:
                mirror = None
        if route.stripPrefix or (route.setHost is not None and parts.authority is not None):
            target = route.forwardTarget(target, parts)
        return Match(route, pool, mirror, target, None)


def _splitKey(route: Route, headers: Headers, client: str) -> bytes | None:
    """
    The value of a split's key in a request, or L{None}.
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


# Reading the configuration.


def parseRoutes(
    entries: object, pools: Collection[str], fallback: str | None = None
) -> tuple[list[Route], list[str]]:
    """
    Check the C{[[routes]]} of a configuration file.

    @param entries: The C{routes} value, as C{tomllib} gives it.
    @param pools: The names of the pools there are.
    @param fallback: The pool that takes requests no route matches
        (C{"default"} if there is one), or L{None} (they get 404).
    @return: The routes, and one warning per line: a route that can never
        match, a pool no request can reach.
    @raise RoutesError: With one line per problem.
    """
    if not isinstance(entries, list):
        raise RoutesError([f"routes: expected a list of tables ([[routes]]), not {entries!r}"])
    problems: list[str] = []
    routes: list[Route] = []
    named: dict[str, int] = {}
    for index, entry in enumerate(entries, 1):
        reader = _RouteReader(index, entry, frozenset(pools))
        route = reader.read()
        problems += reader.problems
        if route is None:
            continue
        if route.name is not None:
            if route.name in named:
                problems.append(
                    f"{reader.where}: name {route.name!r} is route {named[route.name]}'s already"
                )
            named.setdefault(route.name, index)
        routes.append(route)
    if problems:
        raise RoutesError(problems)
    return routes, _warnings(routes, pools, fallback)


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _RouteReader:
    """
    Reads one C{[[routes]]} entry into a L{Route}, a problem per line.
    """

    def __init__(self, index: int, entry: object, pools: frozenset[str]) -> None:
        self.index = index
        self.entry = entry
        self.pools = pools
        self.problems: list[str] = []
        self.where = f"route {index}"

    def problem(self, text: str) -> None:
        self.problems.append(f"{self.where}: {text}")

    def read(self) -> Route | None:
        entry = self.entry
        if not isinstance(entry, dict):
            self.problem(f"expected a table, not {entry!r}")
            return None
        route = Route(self.index, entry)
        name = entry.get("name")
        if name is not None:
            if isinstance(name, str) and _NAME.fullmatch(name):
                route.name = name
                self.where = f"route {self.index} ({name})"
            else:
                self.problem(
                    f"name: expected up to 64 letters, digits, '.', '_' or '-', starting with a"
                    f" letter, not {name!r}"
                )
        for key in entry:
            if key not in KEYS:
                self.problem(f"unknown key {key!r}{_suggest(key, KEYS)}")
        self.readConditions(route, entry)
        self.readAction(route, entry)
        self.readRewrites(route, entry)
        return route

    # Conditions.

    def readConditions(self, route: Route, entry: dict[str, Any]) -> None:
        conditions: list[_Condition] = []
        if "host" in entry:
            hosts = self.strings("host", entry["host"])
            names, wildcards = set(), set()
            for text in hosts:
                pattern = self.hostPattern(text)
                if pattern is not None:
                    if text.startswith("*."):
                        wildcards.add(pattern)
                    else:
                        names.add(pattern)
            route.hosts = frozenset(names)
            route.wildcards = frozenset(wildcards)
        if "path-prefix" in entry:
            prefix = self.pathPattern("path-prefix", entry["path-prefix"])
            if prefix is not None:
                route.prefix = prefix
                conditions.append(_PathPrefix(prefix))
        if "path" in entry:
            exact = self.pathPattern("path", entry["path"])
            if exact is not None:
                route.exact = exact
                conditions.append(_Path(exact))
        if "path-regex" in entry:
            regex = self.regex(entry["path-regex"])
            if regex is not None:
                route.regex = regex
                conditions.append(_PathRegex(regex))
        if "method" in entry:
            methods = frozenset(
                self.method(text) for text in self.strings("method", entry["method"])
            )
            route.methods = methods
            conditions.append(_Method(methods))
        if "header" in entry:
            route.headerPairs = self.pairs("header", entry["header"], self.fieldName)
            conditions += [_Header(name, value) for name, value in route.headerPairs]
        if "query" in entry:
            route.queryPairs = self.pairs("query", entry["query"], _utf8)
            conditions += [_Query(name, value) for name, value in route.queryPairs]
        if "client" in entry:
            networks = []
            for text in self.strings("client", entry["client"]):
                try:
                    networks.append(ipaddress.ip_network(text, strict=False))
                except ValueError as e:
                    self.problem(f"client {text!r}: {e}")
            route.networks = tuple(networks)
            conditions.append(_Client(networks))
        route.conditions = tuple(conditions)
        # The table's index answers for the exact path if there is one,
        # else for the prefix.
        indexed = _Path if route.exact is not None else _PathPrefix
        route.residual = tuple(c for c in conditions if not isinstance(c, indexed))

    def strings(self, key: str, value: object) -> list[str]:
        """
        A string or a non-empty list of strings, as a list.
        """
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
            return value
        self.problem(f"{key}: expected a string or a list of strings, not {value!r}")
        return []

    def hostPattern(self, text: str) -> bytes | None:
        """
        A host pattern, normalized as request hosts are: an exact host, or
        the suffix after C{*.} of a wildcard one.
        """
        wildcard = text.startswith("*.")
        name = text[2:] if wildcard else text
        if "*" in name:
            self.problem(
                f"host {text!r}: a wildcard is one whole leading label, as in '*.example.com'"
                " (leave host out to match every host)"
            )
            return None
        if ":" in name and not wildcard:
            literal = name[1:-1] if name.startswith("[") and name.endswith("]") else name
            try:
                address = ipaddress.IPv6Address(literal)
            except ValueError:
                host, _, port = name.rpartition(":")
                if port.isdigit():
                    self.problem(
                        f"host {text!r}: hosts are compared without a port; write {host!r}"
                    )
                else:
                    self.problem(f"host {text!r}: not a host name")
                return None
            return b"[" + address.compressed.encode("ascii") + b"]"
        try:
            encoded = name.encode("ascii") if name.isascii() else name.encode("idna")
        except UnicodeError as e:
            self.problem(f"host {text!r}: not a host name ({e})")
            return None
        normalized = encoded.lower().rstrip(b".")
        if not _HOST.fullmatch(normalized):
            self.problem(f"host {text!r}: not a host name")
            return None
        return normalized

    def pathPattern(self, key: str, value: object) -> bytes | None:
        if not isinstance(value, str):
            self.problem(f"{key}: expected a string, not {value!r}")
            return None
        if not value.startswith("/"):
            self.problem(f"{key} {value!r}: a path starts with '/'")
            return None
        if "?" in value or "#" in value:
            self.problem(f"{key} {value!r}: the path ends before any '?' or '#' (see query)")
            return None
        encoded = normalizeEscapes(percentEncoded(value.encode("utf-8")))
        if b"\\" in encoded or b";" in encoded or ENCODED_SLASH.search(encoded):
            self.problem(
                f"{key} {value!r}: a path with ';', '\\' or an encoded '/' or '\\' is read"
                " differently by different servers, and refused when that changes its route"
            )
            return None
        if key == "path-prefix" and len(encoded) > 1 and encoded.endswith(b"/"):
            encoded = encoded[:-1]  # element-wise: /static/ is /static
        normalized = normalizePath(encoded)
        if normalized != encoded:
            self.problem(
                f"{key} {value!r}: paths are matched normalized, so this never matches;"
                f" write {normalized.decode('ascii')!r}"
            )
            return None
        return encoded

    def regex(self, value: object) -> re.Pattern[bytes] | None:
        if not isinstance(value, str):
            self.problem(f"path-regex: expected a string, not {value!r}")
            return None
        if not value.isascii():
            self.problem(
                f"path-regex {value!r}: write it in ASCII: the path it matches keeps non-ASCII"
                " bytes percent-encoded ('%C3%A9' for 'é')"
            )
            return None
        try:
            return re.compile(value.encode("ascii"))
        except re.error as e:
            self.problem(f"path-regex {value!r}: {e}")
            return None

    def method(self, text: str) -> bytes:
        if not text.isascii() or not isToken(text.encode("ascii")):
            self.problem(f"method {text!r}: not a method name")
        elif text not in _METHODS and text.upper() in _METHODS:
            self.problem(f"method {text!r}: methods are case-sensitive; write {text.upper()!r}")
        return text.encode("utf-8")

    def fieldName(self, text: str) -> bytes:
        encoded = text.encode("utf-8")
        if not isToken(encoded):
            self.problem(f"{text!r} is not a header field name")
        return encoded.lower()

    def pairs(
        self, key: str, value: object, readName: Callable[[str], bytes]
    ) -> tuple[tuple[bytes, bytes | None], ...]:
        """
        A table of name to exact value, or C{"*"} for any value.
        """
        if not isinstance(value, dict) or not value:
            self.problem(f'{key}: expected a table of names to values (or "*"), not {value!r}')
            return ()
        pairs = []
        for name, wanted in value.items():
            if not isinstance(wanted, str):
                self.problem(f'{key} {name!r}: expected a string (or "*"), not {wanted!r}')
                continue
            if key == "header" and not _FIELD_VALUE.fullmatch(wanted):
                self.problem(
                    f"header {name!r}: a field value is printable ASCII without spaces around it,"
                    f" not {wanted!r}"
                )
                continue
            pairs.append((readName(name), None if wanted == "*" else _utf8(wanted)))
        return tuple(pairs)

    # Actions.

    def readAction(self, route: Route, entry: dict[str, Any]) -> None:
        actions = [key for key in ACTIONS if key in entry]
        if not actions:
            self.problem(f"no action: give one of {', '.join(ACTIONS)}")
            return
        if len(actions) > 1:
            self.problem(f"more than one action ({', '.join(actions)}): choose one")
            return
        action = route.action = actions[0]
        value = entry[action]
        if action == "pool":
            route.pool = self.pool("pool", value)
        elif action == "split":
            route.split = self.split(value)
            route.splitTotal = sum(weight for _, weight in route.split)
        elif action == "respond":
            route.response = self.response(value, entry)
        elif action == "redirect":
            route.redirect = self.template(value)
            status = entry.get("redirect-status", 308)
            if type(status) is not int or status not in REDIRECTS:
                self.problem(
                    f"redirect-status: expected one of {', '.join(map(str, REDIRECTS))},"
                    f" not {status!r}"
                )
            else:
                route.redirectStatus = status
        else:
            route.router = self.router(value)
        for key, needs in (
            ("split-key", "split"),
            ("body", "respond"),
            ("content-type", "respond"),
            ("redirect-status", "redirect"),
        ):
            if key in entry and action != needs:
                self.problem(f"{key} only goes with {needs}")
        if "split-key" in entry and action == "split":
            route.splitKey = self.splitKey(entry["split-key"])
        for key in FORWARD_ONLY:
            if key in entry and action not in FORWARDING:
                self.problem(
                    f"{key} only goes with a route that forwards ({', '.join(FORWARDING)}),"
                    f" not {action}"
                )
        if "mirror" in entry and action in FORWARDING:
            route.mirror = self.pool("mirror", entry["mirror"])
        if "mirror-percent" in entry:
            percent = entry["mirror-percent"]
            if "mirror" not in entry:
                self.problem("mirror-percent only goes with mirror")
            elif isinstance(percent, bool) or not isinstance(percent, (int, float)):
                self.problem(f"mirror-percent: expected a number, not {percent!r}")
            elif not 0 < percent <= 100:
                self.problem(f"mirror-percent: expected more than 0 and at most 100, not {percent}")
            else:
                route.mirrorPercent = float(percent)

    def pool(self, key: str, value: object) -> str | None:
        if not isinstance(value, str):
            self.problem(f"{key}: expected a pool's name, not {value!r}")
            return None
        if value not in self.pools:
            self.problem(f"{key}: unknown pool {value!r}{self.known(value)}")
            return None
        return value

    def known(self, name: str) -> str:
        suggestion = _suggest(name, self.pools)
        if suggestion:
            return suggestion
        return f" (pools: {', '.join(sorted(self.pools))})" if self.pools else " (no pools)"

    def split(self, value: object) -> tuple[tuple[str, int], ...]:
        if not isinstance(value, dict) or not value:
            self.problem(f"split: expected a table of pools to weights, not {value!r}")
            return ()
        split = []
        for pool, weight in value.items():
            if pool not in self.pools:
                self.problem(f"split: unknown pool {pool!r}{self.known(pool)}")
            elif type(weight) is not int or weight <= 0:
                self.problem(
                    f"split: the weight of {pool!r} must be a positive integer, not {weight!r}"
                )
            else:
                split.append((pool, weight))
        return tuple(split)

    def splitKey(self, value: object) -> tuple[str, bytes] | None:
        if isinstance(value, str):
            kind, _, name = value.partition(":")
            if value == "ip":
                return ("ip", b"")
            if kind in ("cookie", "header") and name and name.isascii():
                encoded = name.encode("ascii")
                if isToken(encoded):
                    return (kind, encoded.lower() if kind == "header" else encoded)
        self.problem(f'split-key: expected "cookie:NAME", "header:NAME" or "ip", not {value!r}')
        return None

    def response(self, status: object, entry: dict[str, Any]) -> Response | None:
        if type(status) is not int or not 200 <= status <= 599:
            self.problem(f"respond: expected a status from 200 to 599, not {status!r}")
            return None
        body = entry.get("body", "")
        if not isinstance(body, str):
            self.problem(f"body: expected a string, not {body!r}")
            return None
        contentType = entry.get("content-type", "text/plain; charset=utf-8")
        if (
            not isinstance(contentType, str)
            or not contentType
            or not _FIELD_VALUE.fullmatch(contentType)
        ):
            self.problem(f"content-type: expected a field value, not {contentType!r}")
            return None
        if body and status in (204, 205, 304):
            self.problem(f"body: a {status} response has no body")
            return None
        if "content-type" in entry and not body:
            self.problem("content-type only goes with a body")
            return None
        return Response(status, body.encode("utf-8"), contentType.encode("ascii") if body else None)

    def template(self, value: object) -> _Template | None:
        if not isinstance(value, str):
            self.problem(f"redirect: expected a string, not {value!r}")
            return None
        if not value.isascii() or not value.isprintable() or " " in value:
            self.problem(f"redirect {value!r}: a URL is printable ASCII without spaces")
            return None
        try:
            template = _Template(value)
        except ValueError as e:
            self.problem(f"redirect {value!r}: {e}")
            return None
        for _, field in template.parts:
            if field is not None and field not in PLACEHOLDERS:
                self.problem(
                    f"redirect {value!r}: unknown placeholder {{{field}}}"
                    " (known: {host}, {uri})"
                )
                return None
        if not _SCHEME_OR_PATH.match(value):
            self.problem(
                f"redirect {value!r}: start with a scheme ('https://') or a path ('/'), so that"
                " the request cannot choose the site"
            )
            return None
        return template

    def router(self, value: object) -> Any:
        if not isinstance(value, str):
            self.problem(f"router: expected package.module:Name, not {value!r}")
            return None
        try:
            made = importName(value)
        except ValueError as e:
            self.problem(f"router: {e}")
            return None
        try:
            router = made()
        except Exception as e:
            self.problem(f"router {value!r} raised when made: {oneLine(e)}")
            return None
        if not IRouter.providedBy(router):
            self.problem(
                f"router {value!r} does not declare IRouter: give its class @implementer(IRouter)"
            )
            return None
        try:
            verifyObject(IRouter, router)
        except Invalid as e:
            # What is wrong, without zope's "The object <...> has failed to
            # implement interface ...: " before it.
            why = str(e).partition(f"{IRouter.__identifier__}: ")[2] or oneLine(e)
            self.problem(f"router {value!r} is not an IRouter provider: {why}")
            return None
        return router

    # Rewrites.

    def readRewrites(self, route: Route, entry: dict[str, Any]) -> None:
        if route.action not in FORWARDING:
            return
        if "strip-prefix" in entry:
            strip = entry["strip-prefix"]
            if not isinstance(strip, bool):
                self.problem(f"strip-prefix: expected true or false, not {strip!r}")
            elif strip and route.prefix in (None, b"/"):
                self.problem("strip-prefix needs a path-prefix other than '/'")
            else:
                route.stripPrefix = strip
        if "set-host" in entry:
            host = entry["set-host"]
            encoded = host.encode("ascii", "replace") if isinstance(host, str) else b""
            if not isinstance(host, str) or not _SET_HOST.fullmatch(encoded):
                self.problem(f"set-host: expected a host, with a port or not, not {host!r}")
            else:
                route.setHost = encoded
        if "request-headers" in entry:
            route.requestRemove, route.requestAdd = self.rewrite(
                "request-headers", entry["request-headers"], HOP_BY_HOP | _FRAMING | {b"host"}
            )
        if "response-headers" in entry:
            route.responseRemove, route.responseAdd = self.rewrite(
                "response-headers", entry["response-headers"], HOP_BY_HOP | _FRAMING
            )

    def rewrite(
        self, key: str, value: object, forbidden: frozenset[bytes]
    ) -> tuple[frozenset[bytes], Fields]:
        if not isinstance(value, dict):
            self.problem(f"{key}: expected a table with add and remove, not {value!r}")
            return frozenset(), []
        for part in value:
            if part not in ("add", "remove"):
                self.problem(f"{key}: unknown key {part!r}{_suggest(part, ('add', 'remove'))}")
        remove = value.get("remove", [])
        names = []
        if not isinstance(remove, list) or not all(isinstance(name, str) for name in remove):
            self.problem(f"{key}.remove: expected a list of field names, not {remove!r}")
        else:
            names = [self.rewritten(key, "remove", name, forbidden) for name in remove]
        add = value.get("add", {})
        fields: Fields = []
        if not isinstance(add, dict):
            self.problem(f"{key}.add: expected a table of field names to values, not {add!r}")
        else:
            for name, text in add.items():
                if not isinstance(text, str) or not _FIELD_VALUE.fullmatch(text):
                    self.problem(
                        f"{key}.add {name!r}: a field value is printable ASCII without spaces"
                        f" around it, not {text!r}"
                    )
                elif self.rewritten(key, "add", name, forbidden):
                    fields.append((name.encode("ascii"), text.encode("ascii")))
        return frozenset(name for name in names if name), fields

    def rewritten(self, key: str, part: str, name: str, forbidden: frozenset[bytes]) -> bytes:
        """
        A field name to add or remove, lower-cased, or C{b""} if it may not
        be.
        """
        encoded = name.encode("utf-8")
        if not isToken(encoded):
            self.problem(f"{key}.{part}: {name!r} is not a header field name")
            return b""
        if encoded.lower() in forbidden:
            use = "; use set-host" if encoded.lower() == b"host" else ""
            self.problem(f"{key}.{part}: txlb writes {name} itself{use}")
            return b""
        return encoded.lower()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


# Warnings.


def _warnings(routes: Sequence[Route], pools: Collection[str], fallback: str | None) -> list[str]:
    warnings = []
    reachable: list[Route] = []
    for route in routes:
        cover = next((earlier for earlier in reachable if _covers(earlier, route)), None)
        if cover is None:
            reachable.append(route)
        elif cover.catchesAll:
            warnings.append(
                f"route {route.label} can never match: route {cover.label} before it matches"
                " every request"
            )
        else:
            warnings.append(
                f"route {route.label} can never match: route {cover.label} before it matches"
                " every request it would"
            )
    if any(route.router is not None for route in reachable):
        return warnings  # A router may answer any pool.
    used: set[str] = set()
    for route in reachable:
        used |= route.pools()
    catchAll = next((route for route in reachable if route.catchesAll), None)
    for pool in sorted(pools):
        if pool in used:
            continue
        if pool == fallback:
            if catchAll is not None:
                warnings.append(
                    f"pool {pool!r} is never used: route {catchAll.label} matches every request,"
                    " so none falls through to it"
                )
        else:
            warnings.append(f"pool {pool!r} is never used: no route sends requests to it")
    return warnings


def _covers(earlier: Route, later: Route) -> bool:
    """
    Whether C{earlier} matches every request C{later} would (never when
    C{earlier} has a router, which may let a request through).  It errs
    towards no: a warning it does not give is one missed, never a false one.
    """
    if earlier.router is not None:
        return False
    return (
        _hostsCover(earlier, later)
        and _pathsCover(earlier, later)
        and (
            earlier.methods is None
            or (later.methods is not None and later.methods <= earlier.methods)
        )
        and _pairsCover(earlier.headerPairs, later.headerPairs)
        and _pairsCover(earlier.queryPairs, later.queryPairs)
        and _networksCover(earlier.networks, later.networks)
    )


def _hostsCover(earlier: Route, later: Route) -> bool:
    if earlier.hosts is None:
        return True
    if later.hosts is None:
        return False
    return (
        all(earlier.hostHolds(host) for host in later.hosts)
        and later.wildcards <= earlier.wildcards
    )


def _under(path: bytes, prefix: bytes) -> bool:
    return prefix == b"/" or path == prefix or path.startswith(prefix + b"/")


def _pathsCover(earlier: Route, later: Route) -> bool:
    if earlier.regex is not None and (
        later.regex is None or later.regex.pattern != earlier.regex.pattern
    ):
        return False
    if earlier.exact is not None and later.exact != earlier.exact:
        return False
    if earlier.prefix is not None:
        if later.exact is not None:
            return _under(later.exact, earlier.prefix)
        return later.prefix is not None and _under(later.prefix, earlier.prefix)
    return True


def _pairsCover(
    earlier: Sequence[tuple[bytes, bytes | None]], later: Sequence[tuple[bytes, bytes | None]]
) -> bool:
    return all(
        any(name == other and (value is None or value == given) for other, given in later)
        for name, value in earlier
    )


def _networksCover(earlier: Sequence[Network] | None, later: Sequence[Network] | None) -> bool:
    if earlier is None:
        return True
    if later is None:
        return False
    return all(
        any(
            network.version == wider.version and network.subnet_of(wider)  # type: ignore[arg-type]
            for wider in earlier
        )
        for network in later
    )

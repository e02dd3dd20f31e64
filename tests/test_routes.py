"""
Routes (L{txlb.routes}): which route each request takes, table by table;
the index against a scan of every route; splits, redirects, rewrites,
routers; and what loading says about a bad table.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from zope.interface import implementer

from tests import routerexamples
from tests.algorithmrequest import makeRequest
from txlb.interfaces import IRouter
from txlb.keytables import MAX_ROUTE_LIMITS
from txlb.paths import normalizeHost, normalizePath, otherReadings, splitTarget
from txlb.routeconfig import RoutesError, parseRoutes
from txlb.routes import AMBIGUOUS, NO_HOST, Facts, Match, Response, Table

POOLS = frozenset({"api", "web", "static", "canary", "shadow", "default"})


def load(*entries: dict[str, Any], pools: frozenset[str] = POOLS, **options: Any) -> Table:
    routes, _ = parseRoutes(list(entries), pools)
    return Table(routes, pools, **options)


def headers(fields: Sequence[tuple[bytes, bytes]] = ()) -> Headers:
    made = Headers()
    for name, value in fields:
        made.addRawHeader(name, value)
    return made


def match(
    table: Table,
    target: bytes = b"/",
    host: bytes | None = b"example.com",
    method: bytes = b"GET",
    fields: Sequence[tuple[bytes, bytes]] = (),
    client: str = "10.0.0.1",
) -> Match | None:
    return table.match(method, target, host, headers(fields), client)


def taken(table: Table, target: bytes = b"/", **request: Any) -> str | None:
    """
    The label of the route a request takes, or L{None}.
    """
    found = match(table, target, **request)
    return None if found is None else found.route.label


class HostTests(SynchronousTestCase):
    table = load(
        {"name": "api", "host": "api.example.com", "pool": "api"},
        {"name": "wild", "host": "*.example.com", "pool": "web"},
        {"name": "v6", "host": "[::1]", "pool": "static"},
        {"name": "list", "host": ["a.test", "B.Test."], "pool": "web"},
        {"name": "idn", "host": "b\u00fccher.example", "pool": "web"},
        {"name": "v4", "host": "10.0.0.1", "pool": "web"},
    )

    def test_table(self) -> None:
        """
        Each row: the Host field, the route it takes.  Hosts compare in
        lower case without port or trailing dot; a wildcard is one label.
        """
        table = [
            (b"api.example.com", "api"),
            (b"API.Example.COM", "api"),
            (b"api.example.com:8443", "api"),
            (b"api.example.com.", "api"),
            (b"api.example.com.:80", "api"),
            (b"www.example.com", "wild"),
            (b"WWW.example.com:80", "wild"),
            # One label: not the apex, not two, not an empty one.
            (b"example.com", None),
            (b"a.b.example.com", None),
            (b".example.com", None),
            (b"[::1]", "v6"),
            (b"[0:0::1]:8080", "v6"),
            (b"a.test", "list"),
            (b"b.test", "list"),
            (b"xn--bcher-kva.example", "idn"),
            (b"10.0.0.1:80", "v4"),
            (b"other.org", None),
            (None, None),
            (b"", None),
        ]
        for host, expected in table:
            self.assertEqual(taken(self.table, b"/", host=host), expected, host)

    def test_absoluteForm(self) -> None:
        """
        An absolute-form target's authority is the host (RFC 9112 section
        3.2.2), whatever the Host field says, when both read to the same
        route.
        """
        table = [
            (b"http://API.example.com:80/x", None, "api"),
            (b"http://api.example.com", b"api.example.com:80", "api"),
            (b"https://www.example.com/", None, "wild"),
            (b"http://other.org/", None, None),
        ]
        for target, host, expected in table:
            self.assertEqual(taken(self.table, target, host=host), expected, target)

    def test_absoluteFormDisagreeing(self) -> None:
        """
        An absolute-form target whose authority and Host field would take
        different routes is ambiguous: a backend that reads the Host field
        instead must not be reached around the route.
        """
        table = [
            (b"http://www.example.com/", b"api.example.com"),
            (b"http://api.example.com/", b"www.example.com"),
            (b"http://other.org/", b"api.example.com"),
        ]
        for target, host in table:
            self.assertEqual(taken(self.table, target, host=host), AMBIGUOUS.label, target)


class PathPrefixTests(SynchronousTestCase):
    table = load(
        {"name": "static", "path-prefix": "/static/", "pool": "static"},
        {"name": "ab", "path-prefix": "/a/b", "pool": "api"},
        {"name": "encoded", "path-prefix": "/caf\u00e9", "pool": "api"},
        {"name": "root", "path-prefix": "/", "pool": "web"},
    )

    def test_table(self) -> None:
        """
        Each row: a target, the route it takes.  Prefixes match whole
        segments; a trailing / in the prefix changes nothing.
        """
        table = [
            (b"/static", "static"),
            (b"/static/", "static"),
            (b"/static/a.css", "static"),
            (b"/static?v=1", "static"),
            (b"/static/a/b/c", "static"),
            (b"/staticky", "root"),
            (b"/stati", "root"),
            (b"/a/b", "ab"),
            (b"/a/b/c", "ab"),
            (b"/a/bc", "root"),
            (b"/a", "root"),
            (b"/caf%C3%A9/menu", "encoded"),
            (b"/caf%c3%a9", "encoded"),
            (b"/", "root"),
            # Without a path (CONNECT's authority form) or with *, no
            # prefix holds, / neither.
            (b"example.com:443", None),
            (b"*", None),
        ]
        for target, expected in table:
            self.assertEqual(taken(self.table, target), expected, target)


class PathTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        An exact path is exact after normalization; the query is not part
        of it, a trailing / is.
        """
        table = load({"name": "login", "path": "/login", "pool": "api"})
        rows = [
            (b"/login", "login"),
            (b"/login?next=/", "login"),
            (b"/%6cogin", "login"),
            (b"//login", "login"),
            (b"/login/", None),
            (b"/login/.", None),
            (b"/login/x", None),
            (b"/logins", None),
        ]
        for target, expected in rows:
            self.assertEqual(taken(table, target), expected, target)


class BypassTests(SynchronousTestCase):
    """
    A route that answers 403 for C{/admin} cannot be walked around: every
    spelling of research section 2.2-2.3 either meets it or, when servers
    would read it differently, gets 400 (L{AMBIGUOUS}); none reaches a
    pool.
    """

    table = load(
        {"name": "public", "path-prefix": "/public", "pool": "static"},
        {"name": "deny", "path-prefix": "/admin", "respond": 403},
        {"name": "web", "pool": "web"},
    )

    def test_spellings(self) -> None:
        """
        Each row: a spelling of C{/admin}, and what it meets.
        """
        deny, ambiguous = "deny", AMBIGUOUS.label
        table = [
            (b"/admin", deny),
            (b"/admin/", deny),
            (b"/admin/x", deny),
            (b"/admin?x=1", deny),
            (b"/admin/.", deny),
            (b"/admin/x/..", deny),
            (b"/%61dmin", deny),
            (b"/%61%64%6D%69%6E", deny),
            (b"//admin", deny),
            (b"///admin//", deny),
            (b"/./admin", deny),
            (b"/x/../admin", deny),
            (b"/public/../admin", deny),
            (b"/%2e%2e/admin", deny),
            (b"/x/%2E%2E/admin", deny),
            (b"/x/.%2e/admin", deny),
            (b"/../../admin", deny),
            (b"/a//../admin", deny),
            (b"http://other.example/admin", deny),
            (b"HTTP://other.example:8080/x/../admin?q", deny),
            # Tomcat's ;parameters.
            (b"/admin;x", ambiguous),
            (b"/admin;x/", ambiguous),
            (b"/public/..;/admin", ambiguous),
            (b"/public;x/..;/admin/", ambiguous),
            # Encoded separators.
            (b"/admin%2f", ambiguous),
            (b"/admin%2Fx", ambiguous),
            (b"/public%2f..%2fadmin", ambiguous),
            (b"/public%5C..%5Cadmin", ambiguous),
            # A backslash as a separator.
            (b"/admin\\", ambiguous),
            (b"/public\\..\\admin", ambiguous),
            # A fragment, kept or dropped.
            (b"/admin#x", ambiguous),
            (b"/public#/../admin", ambiguous),
            # NUL truncation.
            (b"/admin%00", ambiguous),
            (b"/admin%00.png", ambiguous),
            (b"/admin\x00", ambiguous),
        ]
        for target, expected in table:
            self.assertEqual(taken(self.table, target), expected, target)

    def test_ambiguousAnswer(self) -> None:
        """
        An ambiguous request gets a 400 of txlb's own, with a line saying
        why; no pool.
        """
        found = match(self.table, b"/admin;x")
        assert found is not None
        self.assertEqual(
            found,
            Match(AMBIGUOUS, None, None, None, None),
        )
        self.assertEqual(
            AMBIGUOUS.response,
            Response(
                400,
                b"The request's path or host reads differently to different servers.\n",
                b"text/plain; charset=utf-8",
            ),
        )

    def test_readingsThatAgree(self) -> None:
        """
        A path read differently, but to the same route every way, is
        routed: ;parameters and encoded slashes are refused only where
        they change the route.
        """
        table = [
            (b"/public/a;jsessionid=1", "public"),
            (b"/public/a%2Fb", "public"),
            (b"/public/a\\b", "public"),
            (b"/x;y/z", "web"),
            (b"/app/page#top", "web"),
            (b"/files/a%00", "web"),
        ]
        for target, expected in table:
            self.assertEqual(taken(self.table, target), expected, target)

    def test_pathsAreCaseSensitive(self) -> None:
        """
        C{/ADMIN} is not C{/admin}: paths compare case-sensitively, as RFC
        3986 section 6.2.2.1, POSIX file systems, nginx, HAProxy, Envoy and
        Kubernetes have them.  (A backend that folds case needs a
        case-insensitive C{path-regex} for its deny route.)
        """
        self.assertEqual(taken(self.table, b"/ADMIN"), "web")
        self.assertEqual(taken(self.table, b"/Admin/x"), "web")
        table = load(
            {"name": "deny", "path-regex": "(?i)/admin(/.*)?", "respond": 403},
            {"name": "web", "pool": "web"},
        )
        for target in (b"/ADMIN", b"/Admin/x", b"/%41dmin", b"/admin"):
            self.assertEqual(taken(table, target), "deny", target)

    def test_hostBypass(self) -> None:
        """
        A route denying a host cannot be walked around by case, port,
        trailing dot or an absolute-form target naming another host.
        """
        table = load(
            {"name": "deny", "host": "admin.example.com", "respond": 403},
            {"name": "web", "pool": "web"},
        )
        rows = [
            (b"/", b"ADMIN.example.com", "deny"),
            (b"/", b"admin.example.com.:443", "deny"),
            (b"http://admin.example.com/", b"www.example.com", AMBIGUOUS.label),
            (b"http://www.example.com/", b"admin.example.com", AMBIGUOUS.label),
        ]
        for target, host, expected in rows:
            self.assertEqual(taken(table, target, host=host), expected, (target, host))


class RegexTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        A C{path-regex} must match the whole normalized path, without the
        query.
        """
        table = load({"name": "user", "path-regex": "/v[0-9]+/users/[0-9]+", "pool": "api"})
        rows = [
            (b"/v1/users/42", "user"),
            (b"/v1/users/42?full=1", "user"),
            (b"//v1/users/4%32", "user"),
            (b"/v1/users/42/", None),
            (b"/v1/users/42/x", None),
            (b"/x/v1/users/42", None),
            (b"/v1/users/", None),
        ]
        for target, expected in rows:
            self.assertEqual(taken(table, target), expected, target)

    def test_seesEscapesInUpperCase(self) -> None:
        """
        Escapes that stay in the normalized path are in upper case.
        """
        table = load({"name": "space", "path-regex": "/a%20b", "pool": "api"})
        self.assertEqual(taken(table, b"/a%20b"), "space")
        self.assertEqual(taken(table, b"/a%20%62"), "space")


class ConditionTests(SynchronousTestCase):
    def test_method(self) -> None:
        """
        Methods compare exactly: case-sensitive, HEAD is not GET.
        """
        table = load({"name": "read", "method": ["GET", "OPTIONS"], "pool": "api"})
        rows = [(b"GET", "read"), (b"OPTIONS", "read"), (b"get", None), (b"HEAD", None)]
        for method, expected in rows:
            self.assertEqual(taken(table, b"/", method=method), expected, method)

    def test_header(self) -> None:
        """
        A field holds if one of its lines has the value exactly (the name in
        any case); C{"*"} if it is there at all.
        """
        table = load(
            {"name": "canary", "header": {"X-Canary": "1"}, "pool": "canary"},
            {"name": "traced", "header": {"traceparent": "*"}, "pool": "web"},
        )
        rows = [
            ([(b"X-Canary", b"1")], "canary"),
            ([(b"x-canary", b"1")], "canary"),
            ([(b"X-Canary", b"2"), (b"X-Canary", b"1")], "canary"),
            ([(b"X-Canary", b"1, 2")], None),
            ([(b"X-Canary", b"01")], None),
            ([(b"Traceparent", b"")], "traced"),
            ([(b"X-Canary", b"2"), (b"traceparent", b"00-a-b-01")], "traced"),
            ([], None),
        ]
        for fields, expected in rows:
            self.assertEqual(taken(table, b"/", fields=fields), expected, fields)

    def test_headerConditionsAllHold(self) -> None:
        """
        Several fields in one C{header} table must all hold.
        """
        table = load({"name": "both", "header": {"A": "1", "B": "*"}, "pool": "api"})
        self.assertEqual(taken(table, fields=[(b"A", b"1"), (b"B", b"x")]), "both")
        self.assertIsNone(taken(table, fields=[(b"A", b"1")]))

    def test_query(self) -> None:
        """
        Parameters compare decoded, as the application reads them: any of a
        repeated parameter's values; C{"*"} if it is there at all.
        """
        table = load(
            {"name": "debug", "query": {"debug": "1"}, "pool": "canary"},
            {"name": "search", "query": {"q": "a b"}, "pool": "api"},
            {"name": "page", "query": {"page": "*"}, "pool": "web"},
        )
        rows = [
            (b"/?debug=1", "debug"),
            (b"/?%64ebug=%31", "debug"),
            (b"/?debug=0&debug=1", "debug"),
            (b"/x/?a=&debug=1#f", "debug"),
            (b"/?debug=1x", None),
            (b"/?debug", None),
            (b"/", None),
            (b"/?q=a+b", "search"),
            (b"/?q=a%20b", "search"),
            (b"/?page", "page"),
            (b"/?page=", "page"),
            (b"/;page=1", None),
        ]
        for target, expected in rows:
            self.assertEqual(taken(table, target), expected, target)

    def test_client(self) -> None:
        """
        The client's address is checked against CIDR networks, IPv4 and
        IPv6; an IPv4-mapped address as IPv4; a UNIX socket's never holds.
        """
        table = load(
            {
                "name": "office",
                "client": ["10.0.0.0/8", "2001:db8::/32", "192.168.1.7/24"],
                "pool": "api",
            }
        )
        rows = [
            ("10.1.2.3", "office"),
            ("11.0.0.1", None),
            ("192.168.1.200", "office"),
            ("::ffff:10.0.0.1", "office"),
            ("2001:db8::1", "office"),
            ("2001:db9::1", None),
            ("::1", None),
            ("", None),
        ]
        for client, expected in rows:
            self.assertEqual(taken(table, client=client), expected, client)


class OrderTests(SynchronousTestCase):
    def test_firstMatchWins(self) -> None:
        """
        The first route whose conditions all hold wins, whichever kinds of
        condition come first.
        """
        table = load(
            {"name": "header", "header": {"X-A": "1"}, "pool": "web"},
            {"name": "exact", "path": "/a/b", "pool": "api"},
            {"name": "prefix", "path-prefix": "/a", "pool": "static"},
            {"name": "regex", "path-regex": "/a.*|/b", "pool": "canary"},
            {"name": "post", "path-prefix": "/", "method": "POST", "pool": "api"},
            {"name": "host", "host": "example.com", "pool": "web"},
            {"name": "all", "pool": "default"},
        )
        rows = [
            (b"/a/b", [(b"X-A", b"1")], b"GET", b"example.com", "header"),
            (b"/a/b", [], b"GET", b"example.com", "exact"),
            (b"/a/c", [], b"POST", b"example.com", "prefix"),
            (b"/b", [], b"POST", b"example.com", "regex"),
            (b"/c", [], b"POST", b"example.com", "post"),
            (b"/c", [], b"GET", b"example.com", "host"),
            (b"/c", [], b"GET", b"other", "all"),
            (b"*", [], b"OPTIONS", None, "all"),
        ]
        for target, fields, method, host, expected in rows:
            self.assertEqual(
                taken(table, target, fields=fields, method=method, host=host), expected, target
            )

    def test_earlierPrefixBeforeLongerOne(self) -> None:
        """
        Order, not length, decides: a shorter prefix listed first takes
        what a longer one listed later would.
        """
        table = load(
            {"name": "short", "path-prefix": "/a", "method": "GET", "pool": "web"},
            {"name": "long", "path-prefix": "/a/b", "pool": "api"},
        )
        self.assertEqual(taken(table, b"/a/b/c"), "short")
        self.assertEqual(taken(table, b"/a/b/c", method=b"PUT"), "long")


# The index against a scan of every route.

HOST_PATTERNS = ["a.example.com", "example.com", "*.example.com", "*.a.example.com", "other.org"]
REQUEST_HOSTS = [
    b"a.example.com",
    b"A.Example.com:80",
    b"example.com.",
    b"b.example.com",
    b"x.a.example.com",
    b"y.x.a.example.com",
    b"other.org",
    b"unknown",
    b".example.com",
    None,
]
PATH_PATTERNS = ["/", "/a", "/a/b", "/b", "/a/b/c", "/c", "/a/c"]
#: Plain segments mostly, so that requests meet the patterns; the others
#: are read several ways.
SEGMENTS = [b"a", b"b", b"c"] * 4 + [b"", b".", b"..", b"%61", b"%2F", b"a;x", b"..;", b"a\\b"]


@implementer(IRouter)
class ParityRouter:
    """
    A router that answers by the target's length: C{web}, C{nope} (no
    pool) or L{None}.
    """

    def route(self, request: Any) -> str | None:
        return [None, "web", "nope"][len(request) % 3]


#: One condition, the path ones more often than the others.
CONDITION = st.one_of(
    st.tuples(st.just("host"), st.lists(st.sampled_from(HOST_PATTERNS), min_size=1, max_size=2)),
    st.tuples(st.just("path-prefix"), st.sampled_from(PATH_PATTERNS)),
    st.tuples(st.just("path-prefix"), st.sampled_from(PATH_PATTERNS)),
    st.tuples(st.just("path"), st.sampled_from([*PATH_PATTERNS, "/a/"])),
    st.tuples(st.just("path"), st.sampled_from([*PATH_PATTERNS, "/a/"])),
    st.tuples(st.just("path-regex"), st.sampled_from(["/a/.*", "/[ab]+", ".*c", "/a;x"])),
    st.tuples(st.just("method"), st.sampled_from([["GET"], ["POST"], ["GET", "POST"]])),
    st.tuples(st.just("header"), st.sampled_from([{"X-K": "1"}, {"X-K": "*"}])),
    st.tuples(st.just("query"), st.sampled_from([{"q": "1"}, {"q": "*"}])),
    st.tuples(st.just("client"), st.sampled_from([["10.0.0.0/8"], ["::1/128"]])),
)
ACTIONS = st.sampled_from(
    [
        {"pool": "api"},
        {"pool": "web"},
        {"respond": 403},
        {"router": "tests.test_routes:ParityRouter"},
    ]
)
ENTRIES = st.lists(st.tuples(st.lists(CONDITION, max_size=3), ACTIONS), max_size=12).map(
    lambda routes: [{**dict(conditions), **action} for conditions, action in routes]
)


@st.composite
def requests(draw: Any) -> tuple[bytes, bytes, bytes | None, list[tuple[bytes, bytes]], str]:
    path = b"/" + b"/".join(draw(st.lists(st.sampled_from(SEGMENTS), max_size=3)))
    target = path + draw(st.sampled_from([b"", b"", b"?q=1", b"?q", b"?x=1", b"#f"]))
    host = draw(st.sampled_from(REQUEST_HOSTS))
    if draw(st.integers(0, 3)) == 0:
        authority = draw(st.sampled_from([b"a.example.com", b"B.example.com:8080", b"other.org"]))
        target = b"http://" + authority + target
    target = draw(st.sampled_from([target] * 8 + [b"*", b"example.com:443"]))
    method = draw(st.sampled_from([b"GET", b"POST"]))
    fields = draw(st.sampled_from([[], [(b"x-k", b"1")], [(b"X-K", b"2")]]))
    client = draw(st.sampled_from(["10.1.1.1", "::1", ""]))
    return method, target, host, fields, client


def naiveMatch(
    table: Table,
    method: bytes,
    target: bytes,
    host: bytes | None,
    fields: list[tuple[bytes, bytes]],
    client: str,
) -> tuple[str, str | None] | None:
    """
    What a scan of every route in order gives, written out from the rules:
    read the host and path every way, take the first route that holds
    for some reading; ambiguous unless it holds for all.
    """
    parts = splitTarget(target)
    hosts = []
    if parts.authority is not None:
        hosts.append(normalizeHost(parts.authority))
    if host is not None and normalizeHost(host) not in hosts:
        hosts.append(normalizeHost(host))
    hosts = hosts[:2] if parts.authority is not None else hosts[:1]
    hosts = hosts or [None]
    paths = [None if parts.path is None else normalizePath(parts.path)]
    paths += otherReadings(target, parts)
    facts = Facts(method, headers(fields), parts.query, client)
    for route in table.routes:
        holding = [route.holds(h, p, facts) for h in hosts for p in paths]
        if not any(holding):
            continue
        if not all(holding):
            return AMBIGUOUS.label, None
        if route.router is not None:
            pool = route.router.route(target)
            if pool not in POOLS:
                continue
            return route.label, pool
        return route.label, route.pool
    return None


class IndexTests(SynchronousTestCase):
    @settings(max_examples=500, deadline=None)
    @given(ENTRIES, st.lists(requests(), min_size=1, max_size=10))
    def test_indexAgreesWithScan(
        self,
        entries: list[dict[str, Any]],
        requests: list[tuple[bytes, bytes, bytes | None, list[tuple[bytes, bytes]], str]],
    ) -> None:
        """
        On random tables and requests, the indexed table takes the route a
        scan of every route, in order, takes.
        """
        routes, _ = parseRoutes(entries, POOLS)
        table = Table(routes, POOLS)
        for method, target, host, fields, client in requests:
            found = table.match(method, target, host, headers(fields), client, request=target)
            got = None if found is None else (found.route.label, found.pool)
            self.assertEqual(
                got, naiveMatch(table, method, target, host, fields, client), (target, host)
            )

    def test_fiftyRoutes(self) -> None:
        """
        The benchmark's table: 50 routes on 10 hosts and their prefixes,
        each request matched as a scan would.
        """
        entries = fiftyRoutes()
        routes, _ = parseRoutes(entries, POOLS)
        table = Table(routes, POOLS)
        self.assertEqual(len(routes), 50)
        for host in [b"h3.example.com", b"X.wild.example.com", b"other"]:
            for path in [b"/", b"/p2/x", b"/p4", b"/shared/1/2", b"/p1/../p3/y"]:
                found = match(table, path, host=host)
                got = None if found is None else (found.route.label, found.pool)
                self.assertEqual(got, naiveMatch(table, b"GET", path, host, [], "10.0.0.1"))


class AnyInputTests(SynchronousTestCase):
    table = load(
        {"host": "*.example.com", "path-prefix": "/a", "pool": "api"},
        {"path": "/b", "query": {"q": "1"}, "pool": "web"},
        {"path-regex": "/c.*", "client": "10.0.0.0/8", "pool": "web"},
        {"redirect": "https://{host}{uri}", "method": "POST"},
        {"path-prefix": "/s", "strip-prefix": True, "set-host": "x", "pool": "api"},
    )

    @given(
        st.one_of(
            st.binary(max_size=40),
            st.text(alphabet="/.%;#?\\:@[]2fF05cCaAsbx*", max_size=30).map(str.encode),
            st.text(alphabet="/.%;#?\\:@[]2fF0aA", max_size=20).map(
                lambda text: b"http://" + text.encode()
            ),
        ),
        st.one_of(st.none(), st.binary(max_size=20)),
        st.sampled_from(["10.0.0.1", "::1", "", "not an address"]),
    )
    def test_neverRaises(self, target: bytes, host: bytes | None, client: str) -> None:
        """
        Whatever bytes the target and host hold (HTTP/2 lets more through
        than HTTP/1.1), matching answers a match or none, and never raises.
        """
        for method in (b"GET", b"POST"):
            found = self.table.match(method, target, host, headers(), client)
            self.assertIsInstance(found, (Match, type(None)))


def fiftyRoutes() -> list[dict[str, Any]]:
    """
    Ten hosts with four prefixes each, a wildcard host, and nine
    host-less routes: the table the benchmark matches against.
    """
    entries: list[dict[str, Any]] = []
    for number in range(10):
        for prefix in range(1, 5):
            entries.append(
                {
                    "host": f"h{number}.example.com",
                    "path-prefix": f"/p{prefix}",
                    "pool": "api" if prefix % 2 else "web",
                }
            )
    entries.append({"host": "*.wild.example.com", "pool": "static"})
    for prefix in range(8):
        entries.append({"path-prefix": f"/shared/{prefix}", "pool": "static"})
    entries.append({"pool": "default"})
    return entries


# Actions.


class SplitTests(SynchronousTestCase):
    def shares(self, table: Table, requests: int, **request: Any) -> dict[str, float]:
        counts = Counter(match(table, **request).pool for _ in range(requests))  # type: ignore[union-attr]
        return {pool: count / requests for pool, count in counts.items()}

    def test_proportions(self) -> None:
        """
        Without a key, each pool gets its weight's share of requests, within
        2 points over 10,000.
        """
        for split in ({"web": 95, "canary": 5}, {"web": 1, "api": 2, "canary": 1}):
            table = load({"split": split}, random=random.Random(15).random)
            shares = self.shares(table, 10_000)
            total = sum(split.values())
            for pool, weight in split.items():
                self.assertApproximates(shares[pool], weight / total, 0.02, split)

    def test_keyProportions(self) -> None:
        """
        With a key, 10,000 different keys spread by weight too.
        """
        table = load(
            {"split": {"web": 95, "canary": 5}, "split-key": "cookie:session"},
            random=_noRandom,
        )
        counts = Counter(
            match(table, fields=[(b"Cookie", b"session=%d" % n)]).pool  # type: ignore[union-attr]
            for n in range(10_000)
        )
        self.assertApproximates(counts["canary"] / 10_000, 0.05, 0.02)

    def test_sticky(self) -> None:
        """
        The same key always gets the same pool, whichever the key's kind.
        """
        rows = [
            ("cookie:session", {"fields": [(b"Cookie", b"a=session=1; session=u1")]}),
            ("header:X-User", {"fields": [(b"X-User", b"u1")]}),
            ("ip", {"client": "10.9.8.7"}),
        ]
        for key, request in rows:
            table = load({"split": {"web": 1, "canary": 1}, "split-key": key}, random=_noRandom)
            pools = {match(table, **request).pool for _ in range(100)}  # type: ignore[union-attr]
            self.assertEqual(len(pools), 1, key)

    def test_sameInEveryProcess(self) -> None:
        """
        A key's pool depends on the key, the pools and the weights only
        (BLAKE2b, not Python's salted hash()): these are the pools of
        twelve users in every process, on every run, CPython and PyPy.
        """
        table = load(
            {"split": {"web": 2, "canary": 1}, "split-key": "header:X-User"}, random=_noRandom
        )
        pools = [
            match(table, fields=[(b"X-User", b"user-%d" % n)]).pool  # type: ignore[union-attr]
            for n in range(12)
        ]
        self.assertEqual(pools, GOLDEN_SPLIT)

    def test_growingMovesKeysOneWay(self) -> None:
        """
        Raising the canary's weight from 5 to 10 moves users to it, never
        away from it.
        """
        before = load({"split": {"web": 95, "canary": 5}, "split-key": "ip"}, random=_noRandom)
        after = load({"split": {"web": 90, "canary": 10}, "split-key": "ip"}, random=_noRandom)
        moved = Counter()
        for n in range(2000):
            client = f"10.0.{n // 250}.{n % 250}"
            old = match(before, client=client).pool  # type: ignore[union-attr]
            new = match(after, client=client).pool  # type: ignore[union-attr]
            moved[(old, new)] += 1
        self.assertEqual(moved[("canary", "web")], 0)
        self.assertGreater(moved[("web", "canary")], 0)

    def test_withoutTheKey(self) -> None:
        """
        A request without the key (no cookie, an empty one) is split by
        chance.
        """
        table = load(
            {"split": {"web": 1, "canary": 3}, "split-key": "cookie:session"},
            random=iter([0.2, 0.3, 0.9]).__next__,
        )
        self.assertEqual(match(table).pool, "web")  # type: ignore[union-attr]
        self.assertEqual(match(table, fields=[(b"Cookie", b"other=1")]).pool, "canary")  # type: ignore[union-attr]
        self.assertEqual(match(table, fields=[(b"Cookie", b"session=")]).pool, "canary")  # type: ignore[union-attr]


def _noRandom() -> float:
    raise AssertionError("no chance expected")


#: The pools of user-0 to user-11 for C{split = {web = 2, canary = 1}}.
GOLDEN_SPLIT = "web canary web web web canary canary canary web canary web canary".split()


class MirrorTests(SynchronousTestCase):
    def test_everyRequest(self) -> None:
        """
        Without C{mirror-percent}, every request is copied, and no chance is
        drawn.
        """
        table = load({"pool": "api", "mirror": "shadow"}, random=_noRandom)
        self.assertEqual(match(table), Match(table.routes[0], "api", "shadow", None, None))

    def test_percent(self) -> None:
        """
        C{mirror-percent} copies that share of requests, the split drawn
        first.
        """
        table = load(
            {"split": {"web": 1, "api": 1}, "mirror": "shadow", "mirror-percent": 10},
            random=iter([0.7, 0.099, 0.2, 0.1]).__next__,
        )
        self.assertEqual(match(table)[1:3], ("api", "shadow"))  # type: ignore[index]
        self.assertEqual(match(table)[1:3], ("web", None))  # type: ignore[index]
        table = load(
            {"pool": "api", "mirror": "shadow", "mirror-percent": 12.5},
            random=random.Random(4).random,
        )
        copies = sum(match(table).mirror is not None for _ in range(10_000))  # type: ignore[union-attr]
        self.assertApproximates(copies / 10_000, 0.125, 0.02)

    def test_notToTheRequestsPool(self) -> None:
        """
        A request that a split sends to the mirror pool is not copied there
        as well (nor is a chance drawn for it): the pool has it already.
        """
        table = load(
            {"split": {"web": 1, "canary": 1}, "mirror": "canary", "mirror-percent": 50},
            random=iter([0.7, 0.2, 0.2]).__next__,
        )
        self.assertEqual(match(table)[1:3], ("canary", None))  # type: ignore[index]
        self.assertEqual(match(table)[1:3], ("web", "canary"))  # type: ignore[index]


class RespondTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        A C{respond} route's answer, with its body and type; no pool.
        """
        rows = [
            ({"respond": 403}, Response(403, b"", None)),
            (
                {"respond": 404, "body": "gone \u2014 sorry\n"},
                Response(404, "gone \u2014 sorry\n".encode(), b"text/plain; charset=utf-8"),
            ),
            (
                {"respond": 200, "body": "{}", "content-type": "application/json"},
                Response(200, b"{}", b"application/json"),
            ),
        ]
        for entry, expected in rows:
            table = load(entry)
            found = match(table, b"/x")
            self.assertEqual(found, Match(table.routes[0], None, None, None, None))
            self.assertEqual(table.routes[0].response, expected)


class RedirectTests(SynchronousTestCase):
    def location(self, template: str, target: bytes, host: bytes | None) -> bytes | None:
        found = match(load({"redirect": template}), target, host=host)
        assert found is not None
        return found.location

    def test_table(self) -> None:
        """
        C{{host}} is the request's host without port; C{{uri}} its raw
        target (an absolute-form one's path and query).
        """
        rows = [
            (
                "https://{host}{uri}",
                b"/a%20b?x=1",
                b"Example.COM:8080",
                b"https://example.com/a%20b?x=1",
            ),
            ("https://{host}{uri}", b"/", b"[::1]:80", b"https://[::1]/"),
            ("https://{host}{uri}", b"http://h:81/p?q", None, b"https://h/p?q"),
            ("https://{host}{uri}", b"http://h:81", b"x", b"https://h/"),
            ("https://{host}{uri}", b"//x/../y", b"h", b"https://h//x/../y"),
            ("https://new.example{uri}", b"/p", None, b"https://new.example/p"),
            ("/moved{uri}", b"/p?q", b"h", b"/moved/p?q"),
            ("https://h/{{literal}}", b"/", b"h", b"https://h/{literal}"),
            # Bytes that may not go in a field are percent-encoded.
            ("https://{host}{uri}", b"/\x01\xff", b"a b", b"https://a%20b/%01%FF"),
        ]
        for template, target, host, expected in rows:
            self.assertEqual(self.location(template, target, host), expected, target)

    def test_status(self) -> None:
        """
        308 unless C{redirect-status} says otherwise.
        """
        self.assertEqual(load({"redirect": "/x"}).routes[0].redirectStatus, 308)
        table = load({"redirect": "/x", "redirect-status": 301})
        self.assertEqual(table.routes[0].redirectStatus, 301)

    def test_noHost(self) -> None:
        """
        A request without a host (HTTP/1.0) cannot be sent to C{{host}}: it
        gets a 400 of txlb's own.
        """
        found = match(load({"redirect": "https://{host}{uri}"}), b"/", host=None)
        self.assertEqual(found, Match(NO_HOST, None, None, None, None))
        self.assertEqual(NO_HOST.response.status, 400)  # type: ignore[union-attr]


class RewriteTests(SynchronousTestCase):
    def test_stripPrefix(self) -> None:
        """
        C{strip-prefix} takes the matched prefix off the target, however
        it was spelt, and keeps the rest byte for byte.
        """
        table = load({"path-prefix": "/api/v1", "strip-prefix": True, "pool": "api"})
        rows = [
            (b"/api/v1/users?x=%2F#f", b"/users?x=%2F#f"),
            (b"/api/v1", b"/"),
            (b"/api/v1/", b"/"),
            (b"/api/v1?x", b"/?x"),
            (b"//api//v1//users/%7e", b"//users/%7e"),
            (b"/%61pi/v%31/users", b"/users"),
            (b"/x/../api/./v1/a/../b;p", b"/a/../b;p"),
            (b"/api/v1/a/../../v1/b", b"/b"),
            (b"http://h:8080/api/v1/users?q", b"http://h:8080/users?q"),
        ]
        for target, expected in rows:
            found = match(table, target)
            assert found is not None
            self.assertEqual(found.target, expected, target)

    def test_untouchedWithoutRewrites(self) -> None:
        """
        Without rewrites there is no new target (the one received is
        forwarded), and the fields are the very list received.
        """
        table = load({"path-prefix": "/api", "pool": "api"})
        found = match(table, b"/api/%7e")
        assert found is not None
        self.assertIsNone(found.target)
        fields = [(b"Host", b"h")]
        self.assertIs(found.route.requestFields(fields), fields)
        self.assertIs(found.route.responseFields(fields), fields)

    def test_setHost(self) -> None:
        """
        C{set-host} replaces the Host field where it was (or puts one
        first), and an absolute-form target's authority.
        """
        table = load({"set-host": "backend.internal:8080", "pool": "api"})
        route = table.routes[0]
        rows = [
            (
                [(b"Accept", b"*/*"), (b"host", b"example.com"), (b"X", b"1")],
                [(b"Accept", b"*/*"), (b"Host", b"backend.internal:8080"), (b"X", b"1")],
            ),
            ([(b"X", b"1")], [(b"Host", b"backend.internal:8080"), (b"X", b"1")]),
            (
                [(b"Host", b"a"), (b"Host", b"b")],
                [(b"Host", b"backend.internal:8080")],
            ),
        ]
        for fields, expected in rows:
            self.assertEqual(route.requestFields(fields), expected, fields)
        found = match(table, b"http://example.com:80/p?q")
        assert found is not None
        self.assertEqual(found.target, b"http://backend.internal:8080/p?q")
        self.assertIsNone(match(table, b"/p").target)  # type: ignore[union-attr]

    def test_headers(self) -> None:
        """
        C{remove} takes every line of each field named (in any case), then
        C{add} appends its fields: both together set a field.
        """
        table = load(
            {
                "pool": "api",
                "request-headers": {"remove": ["X-Debug", "x-user"], "add": {"X-User": "anon"}},
                "response-headers": {"remove": ["Server"], "add": {"X-Frame-Options": "DENY"}},
            }
        )
        route = table.routes[0]
        self.assertEqual(
            route.requestFields(
                [(b"x-debug", b"1"), (b"Host", b"h"), (b"X-User", b"root"), (b"X-DEBUG", b"2")]
            ),
            [(b"Host", b"h"), (b"X-User", b"anon")],
        )
        self.assertEqual(
            route.responseFields([(b"server", b"nginx"), (b"Content-Type", b"text/plain")]),
            [(b"Content-Type", b"text/plain"), (b"X-Frame-Options", b"DENY")],
        )


class RouterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reports: list[tuple[str, str]] = []
        self.table = load(
            {"name": "custom", "router": "tests.routerexamples:ByField", "mirror": "shadow"},
            {"name": "raising", "router": "tests.routerexamples:Raising"},
            {"name": "number", "router": "tests.routerexamples:NotAString"},
            {"name": "rest", "pool": "default"},
            onRouterError=lambda route, text: self.reports.append((route.label, text)),
        )

    def ask(self, *fields: tuple[bytes, bytes]) -> Match | None:
        request = makeRequest(fields=fields)
        return self.table.match(
            request.method, request.uri, None, request.requestHeaders, "127.0.0.1", request
        )

    def test_answer(self) -> None:
        """
        A router's pool is the request's, with the route's mirror.
        """
        found = self.ask((b"X-Pool", b"api"))
        self.assertEqual(found, Match(self.table.routes[0], "api", "shadow", None, None))
        self.assertEqual(self.reports, [])

    def test_fallThrough(self) -> None:
        """
        L{None} lets the next route decide; an exception or an answer that
        is no pool is reported, one line each, and falls through too.
        """
        found = self.ask((b"X-Pool", b"nope"))
        assert found is not None
        self.assertEqual(found.route.label, "rest")
        self.assertEqual(
            self.reports,
            [
                ("custom", "answered 'nope', which is not a pool"),
                ("raising", "raised RuntimeError: a bug in two lines"),
                ("number", "answered 1, which is not a pool"),
            ],
        )

    def test_madeOnceAskedPerRequest(self) -> None:
        """
        A router is made once, when the routes are loaded, checked to
        provide L{IRouter}, and asked once for each request that meets its
        route's conditions, not for the others.
        """
        before = routerexamples.Counted.made
        table = load(
            {"path-prefix": "/app", "router": "tests.routerexamples:Counted"},
            {"pool": "web"},
        )
        router = table.routes[0].router
        self.assertEqual(routerexamples.Counted.made, before + 1)
        self.assertTrue(IRouter.providedBy(router))
        for target in (b"/app/1", b"/other", b"/app/2"):
            self.assertEqual(taken(table, target), "2")
        self.assertEqual(routerexamples.Counted.made, before + 1)
        self.assertEqual(router.asked, 2)


class LabelTests(SynchronousTestCase):
    def test_nameOrIndex(self) -> None:
        """
        A route is called by its name, or its place in the list from 1.
        """
        table = load({"pool": "api"}, {"name": "web-2", "pool": "web"})
        self.assertEqual([route.label for route in table.routes], ["1", "web-2"])
        self.assertEqual(repr(table.routes[1]), "<Route web-2>")

    def test_keepsItsTable(self) -> None:
        """
        A route keeps the table it was read from, for the admin API.
        """
        entry = {"host": "h", "pool": "api"}
        self.assertIs(load(entry).routes[0].config, entry)


# Loading.


def problems(*entries: Any, pools: frozenset[str] = POOLS) -> list[str]:
    try:
        parseRoutes(list(entries), pools)
    except RoutesError as e:
        return e.problems
    return []


class ProblemTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: a route, and the one line per problem loading it gives.
        """
        table: list[tuple[Any, list[str]]] = [
            ({"pool": "api"}, []),
            ("api", ["route 1: expected a table, not 'api'"]),
            ({}, ["route 1: no action: give one of pool, split, respond, redirect, router"]),
            (
                {"pool": "api", "respond": 404},
                ["route 1: more than one action (pool, respond): choose one"],
            ),
            (
                {"path_prefix": "/a", "pool": "api"},
                ["route 1: unknown key 'path_prefix' (did you mean 'path-prefix'?)"],
            ),
            ({"colour": "red", "pool": "api"}, ["route 1: unknown key 'colour'"]),
            (
                {"name": "API", "pool": "apii"},
                ["route 1 (API): pool: unknown pool 'apii' (did you mean 'api'?)"],
            ),
            (
                {"pool": "zzz"},
                [
                    "route 1: pool: unknown pool 'zzz'"
                    " (pools: api, canary, default, shadow, static, web)"
                ],
            ),
            ({"pool": 3}, ["route 1: pool: expected a pool's name, not 3"]),
            (
                {"name": "1st", "pool": "api"},
                [
                    "route 1: name: expected up to 64 letters, digits, '.', '_' or '-',"
                    " starting with a letter, not '1st'"
                ],
            ),
            # Conditions.
            (
                {"host": 5, "pool": "api"},
                ["route 1: host: expected a string or a list of strings, not 5"],
            ),
            (
                {"host": [], "pool": "api"},
                ["route 1: host: expected a string or a list of strings, not []"],
            ),
            (
                {"host": "api.example.com:8080", "pool": "api"},
                [
                    "route 1: host 'api.example.com:8080': hosts are compared without a port;"
                    " write 'api.example.com'"
                ],
            ),
            (
                {"host": "*", "pool": "api"},
                [
                    "route 1: host '*': a wildcard is one whole leading label, as in"
                    " '*.example.com' (leave host out to match every host)"
                ],
            ),
            (
                {"host": "a.*.example.com", "pool": "api"},
                [
                    "route 1: host 'a.*.example.com': a wildcard is one whole leading label, as in"
                    " '*.example.com' (leave host out to match every host)"
                ],
            ),
            ({"host": "a b", "pool": "api"}, ["route 1: host 'a b': not a host name"]),
            ({"host": "a:b", "pool": "api"}, ["route 1: host 'a:b': not a host name"]),
            (
                {"path-prefix": "static", "pool": "api"},
                ["route 1: path-prefix 'static': a path starts with '/'"],
            ),
            (
                {"path": "/a?b=1", "pool": "api"},
                ["route 1: path '/a?b=1': the path ends before any '?' or '#' (see query)"],
            ),
            (
                {"path-prefix": "/a/../b", "pool": "api"},
                [
                    "route 1: path-prefix '/a/../b': paths are matched normalized, so this never"
                    " matches; write '/b'"
                ],
            ),
            (
                {"path": "//a", "pool": "api"},
                [
                    "route 1: path '//a': paths are matched normalized, so this never matches;"
                    " write '/a'"
                ],
            ),
            (
                {"path": "/a;b", "pool": "api"},
                [
                    "route 1: path '/a;b': a path with ';', '\\' or an encoded '/' or '\\' is read"
                    " differently by different servers, and refused when that changes its route"
                ],
            ),
            (
                {"path-prefix": "/a%2fb", "pool": "api"},
                [
                    "route 1: path-prefix '/a%2fb': a path with ';', '\\' or an encoded '/' or '\\'"
                    " is read differently by different servers, and refused when that changes"
                    " its route"
                ],
            ),
            ({"path": 1, "pool": "api"}, ["route 1: path: expected a string, not 1"]),
            (
                {"path-regex": "/(a", "pool": "api"},
                ["route 1: path-regex '/(a': missing ), unterminated subpattern at position 1"],
            ),
            (
                {"path-regex": "/caf\u00e9", "pool": "api"},
                [
                    "route 1: path-regex '/caf\u00e9': write it in ASCII: the path it matches"
                    " keeps non-ASCII bytes percent-encoded ('%C3%A9' for '\u00e9')"
                ],
            ),
            (
                {"method": "get", "pool": "api"},
                ["route 1: method 'get': methods are case-sensitive; write 'GET'"],
            ),
            ({"method": ["G T"], "pool": "api"}, ["route 1: method 'G T': not a method name"]),
            (
                {"header": {"X Y": "1"}, "pool": "api"},
                ["route 1: header 'X Y': not a field name"],
            ),
            (
                {"header": {"X": " 1"}, "pool": "api"},
                [
                    "route 1: header 'X': a field value is printable ASCII without spaces"
                    " around it, not ' 1'"
                ],
            ),
            (
                {"header": {"X": 1}, "pool": "api"},
                ["route 1: header 'X': expected a string (or \"*\"), not 1"],
            ),
            (
                {"query": ["a"], "pool": "api"},
                ["route 1: query: expected a table of names to values (or \"*\"), not ['a']"],
            ),
            (
                {"client": ["10.0.0.0/33", "::1"], "pool": "api"},
                [
                    "route 1: client '10.0.0.0/33': '10.0.0.0/33' does not appear to be an IPv4"
                    " or IPv6 network"
                ],
            ),
            # Actions.
            (
                {"split": {"web": 95, "canary": 0}},
                ["route 1: split: the weight of 'canary' must be a positive integer, not 0"],
            ),
            (
                {"split": {"web": 9.5, "canary": True}},
                [
                    "route 1: split: the weight of 'web' must be a positive integer, not 9.5",
                    "route 1: split: the weight of 'canary' must be a positive integer, not True",
                ],
            ),
            (
                {"split": {"web": 1, "canry": 1}},
                ["route 1: split: unknown pool 'canry' (did you mean 'canary'?)"],
            ),
            ({"split": {}}, ["route 1: split: expected a table of pools to weights, not {}"]),
            (
                {"split": {"web": 1}, "split-key": "session"},
                [
                    'route 1: split-key: expected "cookie:NAME", "header:NAME" or "ip",'
                    " not 'session'"
                ],
            ),
            ({"pool": "web", "split-key": "ip"}, ["route 1: split-key only goes with split"]),
            ({"respond": 99}, ["route 1: respond: expected a status from 200 to 599, not 99"]),
            ({"respond": True}, ["route 1: respond: expected a status from 200 to 599, not True"]),
            ({"respond": 204, "body": "x"}, ["route 1: body: a 204 response has no body"]),
            (
                {"respond": 404, "content-type": "text/html"},
                ["route 1: content-type only goes with a body"],
            ),
            ({"pool": "api", "body": "x"}, ["route 1: body only goes with respond"]),
            (
                {"redirect": "https://{host}{path}"},
                [
                    "route 1: redirect 'https://{host}{path}': unknown placeholder {path}"
                    " (known: {host}, {uri})"
                ],
            ),
            (
                {"redirect": "https://{host!r}"},
                ["route 1: redirect 'https://{host!r}': {host} takes no conversion or format"],
            ),
            (
                {"redirect": "https://{host"},
                [
                    "route 1: redirect 'https://{host': a '{' or '}' without its pair"
                    " (write '{{' or '}}')"
                ],
            ),
            (
                {"redirect": "https://h/}"},
                [
                    "route 1: redirect 'https://h/}': a '{' or '}' without its pair (write '{{' or '}}')"
                ],
            ),
            (
                {"redirect": "{host}{uri}"},
                [
                    "route 1: redirect '{host}{uri}': start with a scheme ('https://') or a path"
                    " ('/'), so that the request cannot choose the site"
                ],
            ),
            (
                {"redirect": "/x", "redirect-status": 200},
                ["route 1: redirect-status: expected one of 301, 302, 303, 307, 308, not 200"],
            ),
            # Mirrors and rewrites go with routes that forward.
            (
                {"respond": 403, "mirror": "shadow", "strip-prefix": True},
                [
                    "route 1: mirror only goes with a route that forwards (pool, split, router),"
                    " not respond",
                    "route 1: strip-prefix only goes with a route that forwards (pool, split,"
                    " router), not respond",
                ],
            ),
            (
                {"redirect": "/x", "request-headers": {"add": {"X": "1"}}},
                [
                    "route 1: request-headers only goes with a route that forwards (pool, split,"
                    " router), not redirect"
                ],
            ),
            (
                {"pool": "api", "mirror": "shadw"},
                ["route 1: mirror: unknown pool 'shadw' (did you mean 'shadow'?)"],
            ),
            (
                {"pool": "api", "mirror-percent": 5},
                ["route 1: mirror-percent only goes with mirror"],
            ),
            (
                {"pool": "api", "mirror": "api"},
                ["route 1: mirror: 'api' is the route's pool: every request goes there already"],
            ),
            (
                {"pool": "api", "mirror": "shadow", "mirror-percent": 0},
                ["route 1: mirror-percent: expected more than 0 and at most 100, not 0"],
            ),
            ({"pool": "api", "rate-limit": "10/s"}, []),
            (
                {
                    "respond": 204,
                    "rate-limit": "600/min",
                    "rate-limit-burst": 5,
                    "rate-limit-key": "header:X-Api-Key",
                },
                [],
            ),
            (
                {"pool": "api", "rate-limit": "100"},
                ["route 1: rate-limit: '100' is not a rate like 100/s, 6000/min or 1000/h"],
            ),
            (
                {"pool": "api", "rate-limit": 100},
                ['route 1: rate-limit: expected a rate like "100/s", not 100'],
            ),
            (
                {"pool": "api", "rate-limit": "0/s"},
                ["route 1: rate-limit: '0/s': the count must be at least 1"],
            ),
            (
                {"pool": "api", "rate-limit-burst": 5, "rate-limit-key": "ip"},
                [
                    "route 1: rate-limit-burst only goes with rate-limit",
                    "route 1: rate-limit-key only goes with rate-limit",
                ],
            ),
            (
                {"pool": "api", "rate-limit": "1/s", "rate-limit-burst": 0},
                ["route 1: rate-limit-burst: expected a whole number from 1, not 0"],
            ),
            (
                {"pool": "api", "rate-limit": "1/s", "rate-limit-burst": True},
                ["route 1: rate-limit-burst: expected a whole number from 1, not True"],
            ),
            (
                {"pool": "api", "rate-limit": "1/s", "rate-limit-key": "path"},
                [
                    "route 1: rate-limit-key: 'path': the key is one of ip, header:NAME or"
                    " cookie:NAME"
                ],
            ),
            (
                {"pool": "api", "rate-limit": "1/s", "rate-limit-key": "header:"},
                ["route 1: rate-limit-key: 'header:': expected header:NAME"],
            ),
            (
                {"pool": "api", "rate-limit": "1/s", "rate-limit-key": 3},
                ["route 1: rate-limit-key: 3: the key is one of ip, header:NAME or cookie:NAME"],
            ),
            (
                {"pool": "api", "strip-prefix": True},
                ["route 1: strip-prefix needs a path-prefix other than '/'"],
            ),
            (
                {"pool": "api", "path-prefix": "/a", "strip-prefix": "yes"},
                ["route 1: strip-prefix: expected true or false, not 'yes'"],
            ),
            (
                {"pool": "api", "set-host": "a b"},
                ["route 1: set-host: expected a host, with a port or not, not 'a b'"],
            ),
            (
                {"pool": "api", "request-headers": {"remove": ["Host", "Connection"]}},
                [
                    "route 1: request-headers.remove: txlb writes Host itself; use set-host",
                    "route 1: request-headers.remove: txlb writes Connection itself",
                ],
            ),
            (
                {"pool": "api", "response-headers": {"add": {"Content-Length": "1"}}},
                ["route 1: response-headers.add: txlb writes Content-Length itself"],
            ),
            (
                {"pool": "api", "response-headers": {"add": {"X": "a\nb"}, "delete": []}},
                [
                    "route 1: response-headers: unknown key 'delete'",
                    "route 1: response-headers.add 'X': a field value is printable ASCII without"
                    " spaces around it, not 'a\\nb'",
                ],
            ),
            (
                {"pool": "api", "request-headers": {"add": {"X Y": "1"}, "remove": ["a:b"]}},
                [
                    "route 1: request-headers.remove 'a:b': not a field name",
                    "route 1: request-headers.add 'X Y': not a field name",
                ],
            ),
            (
                {"pool": "api", "request-headers": {"remove": "X"}},
                ["route 1: request-headers.remove: expected a list of field names, not 'X'"],
            ),
            # Routers.
            (
                {"router": "tests.nosuchmodule:X"},
                ["route 1: router: 'tests.nosuchmodule:X': no module named 'tests.nosuchmodule'"],
            ),
            (
                {"router": "tests.routerexamples:Nothing"},
                [
                    "route 1: router: 'tests.routerexamples:Nothing': tests.routerexamples has no"
                    " 'Nothing'"
                ],
            ),
            (
                {"router": "tests.routerexamples:NOT_CALLABLE"},
                ["route 1: router: 'tests.routerexamples:NOT_CALLABLE' is not a class"],
            ),
            (
                {"router": "tests.routerexamples:Unmakeable"},
                [
                    "route 1: router 'tests.routerexamples:Unmakeable' raised when made:"
                    " RuntimeError: needs a config file"
                ],
            ),
            (
                {"router": "tests.routerexamples:Undeclared"},
                [
                    "route 1: router 'tests.routerexamples:Undeclared' does not declare IRouter:"
                    " give its class @implementer(IRouter)"
                ],
            ),
            (
                {"router": "tests.routerexamples:NoRouteMethod"},
                [
                    "route 1: router 'tests.routerexamples:NoRouteMethod' is not an IRouter"
                    " provider: The txlb.interfaces.IRouter.route(request) attribute was not"
                    " provided."
                ],
            ),
            (
                {"router": "tests.routerexamples:WrongSignature"},
                [
                    "route 1: router 'tests.routerexamples:WrongSignature' is not an IRouter"
                    " provider: The contract of txlb.interfaces.IRouter.route(request) is violated"
                    " because 'WrongSignature.route()' doesn't allow enough arguments."
                ],
            ),
        ]
        for entry, expected in table:
            self.assertEqual(problems(entry), expected, entry)

    def test_routerNeedsArguments(self) -> None:
        """
        A router class that cannot be made with no arguments is refused
        with the interpreter's reason, on one line.
        """
        (problem,) = problems({"router": "tests.routerexamples:NeedsArguments"})
        self.assertTrue(
            problem.startswith(
                "route 1: router 'tests.routerexamples:NeedsArguments' raised when made:"
                " TypeError: "
            ),
            problem,
        )
        self.assertTrue(
            problem.endswith("__init__() missing 1 required positional argument: 'pools'"),
            problem,
        )

    def test_everyProblem(self) -> None:
        """
        Every problem of every route is given, each naming its route.
        """
        self.assertEqual(
            problems(
                {"name": "a", "pool": "api"},
                {"name": "a", "pool": "nope", "method": "post"},
                {"respond": 700},
            ),
            [
                "route 2 (a): method 'post': methods are case-sensitive; write 'POST'",
                "route 2 (a): pool: unknown pool 'nope' (pools: api, canary, default, shadow,"
                " static, web)",
                "route 2 (a): name 'a' is route 1's already",
                "route 3: respond: expected a status from 200 to 599, not 700",
            ],
        )
        with self.assertRaises(RoutesError) as caught:
            parseRoutes([{}, {}], POOLS)
        self.assertEqual(
            str(caught.exception),
            "route 1: no action: give one of pool, split, respond, redirect, router\n"
            "route 2: no action: give one of pool, split, respond, redirect, router",
        )

    def test_tooManyRateLimits(self) -> None:
        """
        At most L{MAX_ROUTE_LIMITS} routes may have a rate limit: each has
        a table of its own in the key tables, whose directory is bounded.
        """
        limited = {"pool": "api", "rate-limit": "1/s"}
        self.assertEqual(problems(*[limited] * MAX_ROUTE_LIMITS), [])
        self.assertEqual(
            problems(*[limited] * (MAX_ROUTE_LIMITS + 1), {"pool": "web"}),
            ["routes: 65 routes have a rate-limit; at most 64 may"],
        )

    def test_notAList(self) -> None:
        """
        C{routes} must be a list of tables.
        """
        with self.assertRaises(RoutesError) as caught:
            parseRoutes({"pool": "api"}, POOLS)
        self.assertEqual(
            caught.exception.problems,
            ["routes: expected a list of tables ([[routes]]), not {'pool': 'api'}"],
        )


class WarningTests(SynchronousTestCase):
    def warnings(
        self,
        *entries: dict[str, Any],
        pools: Sequence[str] = ("api", "web"),
        fallback: str | None = None,
    ) -> list[str]:
        return parseRoutes(list(entries), frozenset(pools), fallback)[1]

    def test_table(self) -> None:
        """
        Each row: routes, the pools and the fallback, and the warnings.
        """
        rows: list[tuple[list[dict[str, Any]], Sequence[str], str | None, list[str]]] = [
            (
                [{"pool": "api"}, {"pool": "web"}],
                ("api", "web"),
                None,
                [
                    "route 2 can never match: route 1 before it matches every request",
                    "pool 'web' is never used: no route sends requests to it",
                ],
            ),
            (
                [
                    {"path-prefix": "/a", "pool": "api"},
                    {"path-prefix": "/a/b", "method": "GET", "pool": "web"},
                ],
                ("api", "web"),
                None,
                [
                    "route 2 can never match: route 1 before it matches every request it would",
                    "pool 'web' is never used: no route sends requests to it",
                ],
            ),
            (
                [
                    {
                        "host": ["*.example.com", "a.test"],
                        "method": ["GET", "HEAD"],
                        "header": {"X": "*"},
                        "client": "10.0.0.0/8",
                        "pool": "api",
                    },
                    {
                        "host": "b.example.com",
                        "method": "GET",
                        "header": {"X": "1", "Y": "2"},
                        "client": "10.1.0.0/16",
                        "path": "/x",
                        "pool": "web",
                    },
                ],
                ("api", "web"),
                None,
                [
                    "route 2 can never match: route 1 before it matches every request it would",
                    "pool 'web' is never used: no route sends requests to it",
                ],
            ),
            # Not covered: another host, a regex, a narrower network, a router.
            (
                [
                    {"host": "a.example.com", "pool": "api"},
                    {"host": "b.example.com", "pool": "web"},
                ],
                ("api", "web"),
                None,
                [],
            ),
            (
                [{"path-regex": "/a.*", "pool": "api"}, {"path": "/ab", "pool": "web"}],
                ("api", "web"),
                None,
                [],
            ),
            (
                [{"client": "10.1.0.0/16", "pool": "api"}, {"client": "10.0.0.0/8", "pool": "web"}],
                ("api", "web"),
                None,
                [],
            ),
            (
                [{"router": "tests.routerexamples:ByField"}, {"pool": "web"}],
                ("api", "web"),
                None,
                [],
            ),
            # The fallback is used unless a route catches everything.
            ([{"path-prefix": "/a", "pool": "api"}], ("api", "default"), "default", []),
            (
                [{"pool": "api"}],
                ("api", "default"),
                "default",
                [
                    "pool 'default' is never used: route 1 matches every request, so none falls"
                    " through to it",
                ],
            ),
            # A mirror's pool is used.
            ([{"pool": "api", "mirror": "web"}], ("api", "web"), None, []),
            # So is a pool a router may answer.
            ([{"router": "tests.routerexamples:ByField"}], ("api", "web"), None, []),
            # A pool only a route that never matches names is not.
            (
                [{"respond": 404}, {"pool": "api", "mirror": "web"}],
                ("api", "web"),
                None,
                [
                    "route 2 can never match: route 1 before it matches every request",
                    "pool 'api' is never used: no route sends requests to it",
                    "pool 'web' is never used: no route sends requests to it",
                ],
            ),
        ]
        for entries, pools, fallback, expected in rows:
            self.assertEqual(
                self.warnings(*entries, pools=pools, fallback=fallback), expected, entries
            )

"""
What matching a route costs per request, in microseconds, beside what
twisted.web costs to read and answer one request in memory, so the cost of
a route table can be judged against a request's.

Rows:

  - C{call}: an empty function called with C{match}'s six arguments;
  - C{twisted.web}: one keep-alive GET with four header fields, parsed by
    C{HTTPChannel} and answered by a C{Resource} in memory (no sockets, no
    access log);
  - C{one route}: a table with one route that takes everything, as txlb's
    single pool would be;
  - C{50 routes: ...}: the table of C{tests.test_routes.fiftyRoutes} (ten
    hosts with four element-wise prefixes each, a wildcard host, eight
    shared prefixes, a catch-all), for requests that end at different
    places in it, and for fifty of them in turn; and a scan of every route
    in order (each condition checked), as a table without an index would
    match.

Run it under each interpreter from the checkout:
C{python bench/routing.py} and C{.tox/pypy3/bin/python bench/routing.py}.
Each row is the best of C{--repeat} rounds of C{--number} calls, timed in
the process's CPU time, which other processes on a shared machine do not
inflate as they do the wall clock's.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.testing import StringTransport
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.test_routes import fiftyRoutes
from txlb.paths import normalizeHost, normalizePath, splitTarget
from txlb.routeconfig import parseRoutes
from txlb.routes import Facts, Table

POOLS = {"api", "web", "static", "default"}

#: Requests: a label, the target and the Host field.
REQUESTS = [
    ("host and prefix", b"/p2/users/42?x=1", b"h7.example.com"),
    ("wildcard host", b"/anything", b"a.wild.example.com"),
    ("shared prefix", b"/shared/5/a.css", b"www.other.org"),
    ("catch-all", b"/", b"www.other.org:8080"),
    ("normalized path", b"/p1/../p3//y", b"h3.example.com"),
    ("two readings", b"/p2;jsessionid=1/x", b"h3.example.com"),
]

RAW_REQUEST = (
    b"GET /p2/users/42?x=1 HTTP/1.1\r\nHost: h7.example.com\r\nUser-Agent: bench\r\n"
    b"Accept: */*\r\nCookie: session=abc\r\n\r\n"
)


class Pong(Resource):
    isLeaf = True

    def render_GET(self, request: object) -> bytes:
        return b"ok"


def scan(table: Table, method: bytes, target: bytes, host: bytes, headers: Headers, client: str):
    """
    The first route whose every condition holds, checking every route in
    order (one reading of the request).
    """
    parts = splitTarget(target)
    name = normalizeHost(host)
    path = normalizePath(parts.path)
    facts = Facts(method, headers, parts.query, client)
    for route in table.routes:
        if route.holds(name, path, facts):
            return route
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    headers = Headers({b"user-agent": [b"bench"], b"accept": [b"*/*"], b"cookie": [b"session=abc"]})
    fifty = Table(parseRoutes(fiftyRoutes(), POOLS)[0], POOLS)
    one = Table(parseRoutes([{"pool": "default"}], POOLS)[0], POOLS)

    site = Site(Pong(), timeout=None)
    site.log = lambda request: None  # No access log: the request alone.
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)

    def twistedWeb() -> None:
        channel.dataReceived(RAW_REQUEST)
        transport.clear()

    def call(method, target, host, headers, client, request=None):
        return None

    rows = [
        ("call", lambda: call(b"GET", b"/", b"h", headers, "10.0.0.1")),
        ("twisted.web", twistedWeb),
        ("one route", lambda: one.match(b"GET", b"/p2/x", b"h7.example.com", headers, "10.0.0.1")),
    ]
    for label, target, host in REQUESTS:
        rows.append(
            (
                f"50 routes: {label}",
                lambda target=target, host=host: fifty.match(
                    b"GET", target, host, headers, "10.0.0.1"
                ),
            )
        )
    # The same requests in turn, with ten hosts, so that neither
    # interpreter sees one request over and over.
    mixed = itertools.cycle(
        [
            (target, host.replace(b"h7", b"h%d" % number))
            for number in range(10)
            for _, target, host in REQUESTS[:5]
        ]
    )

    def mix() -> None:
        target, host = next(mixed)
        fifty.match(b"GET", target, host, headers, "10.0.0.1")

    rows.append(("50 routes: 50 requests in turn", mix))
    for label, target, host in REQUESTS[:4]:
        rows.append(
            (
                f"50 routes, scanned: {label}",
                lambda target=target, host=host: scan(
                    fifty, b"GET", target, host, headers, "10.0.0.1"
                ),
            )
        )

    twistedTime = None
    print(f"{platform.python_implementation()} {platform.python_version()}")
    print(f"{'row':<38} {'us':>8} {'x twisted.web':>14}")
    for label, function in rows:
        best = min(
            timeit.repeat(function, number=args.number, repeat=args.repeat, timer=time.process_time)
        )
        micros = best / args.number * 1e6
        if label == "twisted.web":
            twistedTime = micros
        ratio = f"{micros / twistedTime:.3f}" if twistedTime else "-"
        print(f"{label:<38} {micros:8.2f} {ratio:>14}")


if __name__ == "__main__":
    main()

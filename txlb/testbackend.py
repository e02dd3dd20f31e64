"""
A throwaway HTTP backend to put behind the balancer.

The README's walkthrough and the balancer's C{--demo} mode need a few origin
servers that say which one answered (C{/ping}) and exactly what arrived
(C{/echo}), so that forwarding of methods, request-targets, repeated headers
and bodies can be checked by eye or by test.  Several of them run in one
process on loopback, one port each.

For trying the algorithms, a port can answer after a delay
(C{BACKEND_DELAY_MS}) and report a load in C{X-Txlb-Load}
(C{BACKEND_LOAD}), as a slow or busy server would.  For trying overload,
a port can have a capacity (C{BACKEND_CAPACITY}): it serves that many
requests at a time at its usual speed, and a request that finds more in
flight (itself included) takes one delay more for each one beyond it, as
a server whose threads are all busy does, so that latency climbs with
the load, for everyone.

For trying a fleet, each port can register itself in etcd
(C{BACKEND_ETCD}), under a lease it keeps alive, as a backend of a pool
(L{registrationsFromEnvironment}).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.endpoints import quoteStringArgument
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from txlb.backend import MAX_WEIGHT
from txlb.etcd import DEFAULT_PREFIX, DEFAULT_TTL, EtcdClient, Registration
from txlb.etcd.layout import memberKey, memberValue

__all__ = [
    "CAPACITY_DELAY",
    "DEFAULT_BACKEND_PORTS",
    "BackendResource",
    "capacitiesFromEnvironment",
    "makeBackendService",
    "makeBackendSite",
    "perPortFromEnvironment",
    "portsFromEnvironment",
    "registrationsFromEnvironment",
    "resourceFromEnvironment",
]

DEFAULT_BACKEND_PORTS = "8081,8082,8083"

#: Seconds a request takes on a port with a capacity and no delay.
CAPACITY_DELAY = 0.010

#: The largest capacity a port may be given.
MAX_CAPACITY = 100_000

_log = Logger()


class BackendResource(Resource):
    """
    Answer C{/ping} and C{/echo} for any method; 404 for anything else.

    This is a leaf overriding C{render} rather than C{render_GET} and friends:
    Twisted's per-method dispatch would answer 405/501 to PURGE, lower-case
    C{get} or any other method token, and the balancer must be tested with
    exactly those.
    """

    isLeaf = True

    def __init__(
        self,
        delays: Mapping[int, float] | None = None,
        loads: Mapping[int, str] | None = None,
        reactor: Any = None,
        capacities: Mapping[int, int] | None = None,
    ) -> None:
        """
        @param delays: Seconds each port waits before it answers (none if
            absent); read at each request, so a change takes effect at
            once.
        @param loads: The C{X-Txlb-Load} value each port reports, if any.
        @param capacities: The requests each port serves at a time at its
            usual speed, if it has a limit; such a port without a delay
            takes L{CAPACITY_DELAY}.
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.delays = {} if delays is None else delays
        self.loads = {} if loads is None else loads
        self.capacities = {} if capacities is None else capacities
        #: The requests each port has in flight, and the most it had.
        self.inFlight: dict[int, int] = {}
        self.mostInFlight: dict[int, int] = {}
        self._reactor = reactor

    def render(self, request: Request) -> bytes | int:
        """
        Answer, after the port's delay if it has one, longer if the port is
        over its capacity.
        """
        port = request.getHost().port
        load = self.loads.get(port)
        if load is not None:
            request.setHeader(b"X-Txlb-Load", load.encode("ascii"))
        delay = self.delays.get(port)
        capacity = self.capacities.get(port)
        if capacity is not None:
            inFlight = self.inFlight[port] = self.inFlight.get(port, 0) + 1
            self.mostInFlight[port] = max(self.mostInFlight.get(port, 0), inFlight)
            request.notifyFinish().addBoth(self._over, port)
            delay = (delay or CAPACITY_DELAY) * (1 + max(0, inFlight - capacity))
        if not delay:
            return self._answer(request)
        call = self._reactor.callLater(delay, self._answerLater, request)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return NOT_DONE_YET

    def _over(self, result: object, port: int) -> None:
        """
        A request to C{port} is answered, or its client left.
        """
        self.inFlight[port] -= 1

    def _answerLater(self, request: Request) -> None:
        body = self._answer(request)
        if request.method != b"HEAD":
            # Framed as an answer given at once is, not chunked.
            request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()

    def _answer(self, request: Request) -> bytes:
        """
        Route on the path alone (the query string is ignored for routing but
        reported by C{/echo}) and log one line per request.
        """
        if request.path == b"/ping":
            body = self._ping(request)
        elif request.path == b"/echo":
            body = self._echo(request)
        else:
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            body = b"not found: try /ping or /echo\n"
        _log.info(
            "backend :{port} {method} {target} -> {status}",
            port=request.getHost().port,
            method=request.method.decode("latin-1"),
            target=request.uri.decode("latin-1"),
            status=request.code,
        )
        if request.method == b"HEAD":
            # Same headers as GET, no body.  Returning the body would work
            # too, but Twisted logs a warning for every such HEAD.
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            return b""
        return body

    def _ping(self, request: Request) -> bytes:
        """
        Name the port the request arrived on, so round-robin is visible.
        """
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"pong from backend :%d\n" % (request.getHost().port,)

    def _echo(self, request: Request) -> bytes:
        """
        Describe the request as received.  Bytes are decoded as latin-1 so
        that every byte value survives the trip through JSON unchanged.
        """
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        received = {
            "method": request.method.decode("latin-1"),
            "target": request.uri.decode("latin-1"),
            "version": request.clientproto.decode("latin-1"),
            "headers": [
                [name.decode("latin-1"), value.decode("latin-1")]
                for name, values in request.requestHeaders.getAllRawHeaders()
                for value in values
            ],
            "body": body.decode("latin-1"),
            "port": request.getHost().port,
        }
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(received).encode("ascii") + b"\n"


class _BackendSite(Site):
    """
    A L{Site} without the combined-log access log: with several backends in
    one twistd process it would drown everything else, and
    L{BackendResource} logs a shorter line of its own.
    """

    def log(self, request: http.Request) -> None:
        """
        Do nothing; see the class docstring.
        """


def makeBackendSite(resource: BackendResource | None = None) -> Site:
    """
    Build the site the backend ports serve.  Form bodies are left unparsed:
    C{/echo} must report the body bytes, not Twisted's reading of them.
    """
    return _BackendSite(resource or BackendResource(), parsePOSTFormSubmission=False)


def makeBackendService(
    ports: Iterable[int],
    interface: str = "127.0.0.1",
    reactor: Any = None,
    resource: BackendResource | None = None,
) -> MultiService:
    """
    Serve L{BackendResource} on each of C{ports}.

    The default interface is loopback: the backends are a test fixture that
    runs next to the balancer and have no business being reachable from
    elsewhere.  Each port is a L{strports.service}, which raises from
    C{startService} if the port is taken instead of logging and carrying on.

    @param ports: TCP port numbers.
    @param interface: The address to bind, IPv4 or IPv6.
    @param resource: What they serve, if not a L{BackendResource} without
        delays or loads.
    """
    parent = MultiService()
    site = makeBackendSite(resource)
    for port in ports:
        description = f"tcp:{port}:interface={quoteStringArgument(interface)}"
        strports.service(description, site, reactor=reactor).setServiceParent(parent)
    return parent


def portsFromEnvironment(environ: Mapping[str, str] | None = None) -> list[int]:
    """
    Read the backend ports from C{BACKEND_PORTS} (comma-separated, default
    C{8081,8082,8083}).

    @raise ValueError: With a one-line message naming the offending value,
        for anything but a non-empty list of distinct ports in 1-65535.
    """
    if environ is None:
        environ = os.environ
    raw = environ.get("BACKEND_PORTS", DEFAULT_BACKEND_PORTS)
    if not raw.strip():
        raise ValueError("BACKEND_PORTS is empty; expected e.g. 8081,8082,8083")
    ports: list[int] = []
    for item in raw.split(","):
        text = item.strip()
        if not (text.isascii() and text.isdecimal()):
            raise ValueError(f"BACKEND_PORTS: {text!r} is not a port number")
        port = int(text)
        if not 1 <= port <= 65535:
            raise ValueError(f"BACKEND_PORTS: {port} is not in 1-65535")
        if port in ports:
            raise ValueError(f"BACKEND_PORTS: {port} is listed twice")
        ports.append(port)
    return ports


def perPortFromEnvironment(
    name: str, ports: list[int], environ: Mapping[str, str] | None = None
) -> dict[int, str]:
    """
    Read C{PORT:VALUE} pairs, comma-separated, from the environment
    variable C{name} (none if it is unset or empty): C{BACKEND_DELAY_MS} is
    C{8083:10}, C{BACKEND_LOAD} is C{8082:0.9,8083:0.2}.

    @raise ValueError: With a one-line message naming the offending pair,
        for a port not in C{ports}, one listed twice, or no C{:}.
    """
    if environ is None:
        environ = os.environ
    values: dict[int, str] = {}
    for item in environ.get(name, "").split(","):
        if not item.strip():
            continue
        portText, colon, value = item.strip().partition(":")
        if not colon or not portText.isdigit() or int(portText) not in ports:
            raise ValueError(f"{name}: {item.strip()!r} is not PORT:VALUE for one of {ports}")
        if int(portText) in values:
            raise ValueError(f"{name}: port {portText} is listed twice")
        values[int(portText)] = value.strip()
    return values


def capacitiesFromEnvironment(
    ports: list[int], environ: Mapping[str, str] | None = None
) -> dict[int, int]:
    """
    Read C{BACKEND_CAPACITY}: a number of requests for every port (C{10}),
    or C{PORT:N} pairs (C{8081:10,8083:4}); none if unset or empty.

    @raise ValueError: With a one-line message naming the offending value.
    """
    if environ is None:
        environ = os.environ
    text = environ.get("BACKEND_CAPACITY", "").strip()
    if text and ":" not in text:
        values = {port: text for port in ports}
    else:
        values = perPortFromEnvironment("BACKEND_CAPACITY", ports, environ)
    capacities = {}
    for port, value in values.items():
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_CAPACITY:
            raise ValueError(
                f"BACKEND_CAPACITY: {value!r} is not a number of requests (1-{MAX_CAPACITY})"
            )
        capacities[port] = int(value)
    return capacities


def resourceFromEnvironment(
    ports: list[int], environ: Mapping[str, str] | None = None
) -> BackendResource:
    """
    A L{BackendResource} with the delays in C{BACKEND_DELAY_MS}
    (milliseconds, C{8083:10}), the loads in C{BACKEND_LOAD} (a number
    from 0 to 1, C{8083:0.9}) and the capacities in C{BACKEND_CAPACITY}
    (see L{capacitiesFromEnvironment}).

    @raise ValueError: With a one-line message naming the offending value.
    """
    delays = {}
    for port, text in perPortFromEnvironment("BACKEND_DELAY_MS", ports, environ).items():
        try:
            milliseconds = float(text)
        except ValueError:
            milliseconds = -1
        if not 0 <= milliseconds <= 60_000:
            raise ValueError(f"BACKEND_DELAY_MS: {text!r} is not a delay in milliseconds (0-60000)")
        delays[port] = milliseconds / 1000
    loads = perPortFromEnvironment("BACKEND_LOAD", ports, environ)
    for text in loads.values():
        try:
            load = float(text)
        except ValueError:
            load = -1
        if not 0 <= load <= 1:
            raise ValueError(f"BACKEND_LOAD: {text!r} is not a load from 0 to 1")
    capacities = capacitiesFromEnvironment(ports, environ)
    return BackendResource(delays, loads, capacities=capacities)


def registrationsFromEnvironment(
    ports: list[int],
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
    interface: str = "127.0.0.1",
) -> MultiService | None:
    """
    With C{BACKEND_ETCD} set (etcd's URLs, comma-separated), one
    L{Registration} per port: C{pools/POOL/backends/INTERFACE:PORT} under
    C{BACKEND_ETCD_PREFIX} (default C{/txlb/}), with the value
    C{{"weight": N}}, under a lease of C{BACKEND_ETCD_TTL} seconds (default
    10) kept alive while the backend runs and revoked when it stops.
    C{BACKEND_ETCD_POOL} names the pool (default C{default}),
    C{BACKEND_ETCD_WEIGHT} gives weights per port (C{8083:3}; 1 for the
    others).

    @return: The registrations, or C{None} without C{BACKEND_ETCD}.
    @raise ValueError: With a one-line message naming the offending value.
    """
    if environ is None:
        environ = os.environ
    urls = [u.strip() for u in environ.get("BACKEND_ETCD", "").split(",") if u.strip()]
    if not urls:
        return None
    if reactor is None:
        from twisted.internet import reactor
    try:
        client = EtcdClient(urls, reactor)
    except ValueError as e:
        raise ValueError(f"BACKEND_ETCD: {e}") from None
    pool = environ.get("BACKEND_ETCD_POOL", "default").strip()
    prefix = environ.get("BACKEND_ETCD_PREFIX", DEFAULT_PREFIX).strip()
    ttlText = environ.get("BACKEND_ETCD_TTL", str(DEFAULT_TTL)).strip()
    if not (ttlText.isascii() and ttlText.isdigit() and 1 <= int(ttlText) <= 3600):
        raise ValueError(f"BACKEND_ETCD_TTL: {ttlText!r} is not a number of seconds (1-3600)")
    weights = perPortFromEnvironment("BACKEND_ETCD_WEIGHT", ports, environ)
    parent = MultiService()
    for port in ports:
        weightText = weights.get(port, "1")
        if not (
            weightText.isascii() and weightText.isdigit() and 1 <= int(weightText) <= MAX_WEIGHT
        ):
            raise ValueError(
                f"BACKEND_ETCD_WEIGHT: {weightText!r} is not a weight (1-{MAX_WEIGHT})"
            )
        address = f"[{interface}]:{port}" if ":" in interface else f"{interface}:{port}"
        try:
            key = prefix + memberKey(pool, address)
        except ValueError as e:
            raise ValueError(f"BACKEND_ETCD_POOL: {e}") from None
        Registration(
            client, key.encode("utf-8"), memberValue(int(weightText)), reactor, int(ttlText)
        ).setServiceParent(parent)
    return parent

"""
A throwaway HTTP backend to put behind the balancer.

The README's walkthrough and the balancer's C{--demo} mode need a few origin
servers that say which one answered (C{/ping}) and exactly what arrived
(C{/echo}), so that forwarding of methods, request-targets, repeated headers
and bodies can be checked by eye or by test.  Several of them run in one
process on loopback, one port each.
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
from twisted.web.server import Request, Site

__all__ = [
    "DEFAULT_BACKEND_PORTS",
    "BackendResource",
    "makeBackendService",
    "makeBackendSite",
    "portsFromEnvironment",
]

DEFAULT_BACKEND_PORTS = "8081,8082,8083"

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

    def render(self, request: Request) -> bytes:
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


def makeBackendSite() -> Site:
    """
    Build the site one backend port serves.  Form bodies are left unparsed:
    C{/echo} must report the body bytes, not Twisted's reading of them.
    """
    return _BackendSite(BackendResource(), parsePOSTFormSubmission=False)


def makeBackendService(
    ports: Iterable[int], interface: str = "127.0.0.1", reactor: Any = None
) -> MultiService:
    """
    Serve L{BackendResource} on each of C{ports}.

    The default interface is loopback: the backends are a test fixture that
    runs next to the balancer and have no business being reachable from
    elsewhere.  Each port is a L{strports.service}, which raises from
    C{startService} if the port is taken instead of logging and carrying on.

    @param ports: TCP port numbers.
    @param interface: The address to bind, IPv4 or IPv6.
    """
    parent = MultiService()
    site = makeBackendSite()
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

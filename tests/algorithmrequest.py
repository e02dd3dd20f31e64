"""
Requests as algorithms see them, for tests.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel


def makeRequest(
    clientHost: str = "127.0.0.1",
    target: bytes = b"/",
    fields: tuple[tuple[bytes, bytes], ...] = (),
) -> Request:
    """
    A request from C{clientHost} for C{target} with header C{fields}, as the
    proxy hands it to C{IAlgorithm.pick}: its head read, cookies parsed.
    """
    request = Request(DummyChannel())
    request.method, request.uri = b"GET", target
    for name, value in fields:
        request.requestHeaders.addRawHeader(name, value)
    request.parseCookies()
    kind = IPv6Address if ":" in clientHost else IPv4Address
    request.client = kind("TCP", clientHost, 40000)
    return request

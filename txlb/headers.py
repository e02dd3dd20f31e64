"""
Which header fields cross the balancer, as pure functions.

txlb forwards every field as the client or backend sent it, with all its
repeated values, except the hop-by-hop fields of RFC 9110 section 7.6.1: they
describe one connection, not the message, so each hop makes its own.
"""

from __future__ import annotations

import re

from twisted.web.http_headers import Headers

#: Fields that always describe the connection, lower-cased (RFC 9110 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def tokens(headers: Headers, name: bytes) -> frozenset[bytes]:
    """
    The comma-separated tokens of every C{name} field, lower-cased.
    """
    return frozenset(
        token.strip().lower()
        for value in headers.getRawHeaders(name, ())
        for token in value.split(b",")
        if token.strip()
    )


def withoutHopByHop(headers: Headers, alsoDrop: frozenset[bytes] = frozenset()) -> Headers:
    """
    A copy of C{headers} without the hop-by-hop fields: those in
    L{HOP_BY_HOP}, those the C{Connection} field names (but C{Host}, which
    every request must carry), and C{alsoDrop}.
    """
    drop = HOP_BY_HOP | (tokens(headers, b"connection") - {b"host"}) | alsoDrop
    kept = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in drop:
            kept.setRawHeaders(name, values)
    return kept


def toBackend(received: Headers) -> Headers:
    """
    The fields to send to the backend, given those the client sent.

    C{Content-Length} is dropped too: Agent writes the framing of the body it
    sends (the same length, or chunks), and a second copy would make the
    message ambiguous.  C{TE: trailers} is kept, as it says something about
    the client, not the connection.
    """
    forwarded = withoutHopByHop(received, alsoDrop=frozenset({b"content-length"}))
    if b"trailers" in tokens(received, b"te"):
        forwarded.setRawHeaders(b"TE", [b"trailers"])
    return forwarded


def toClient(received: Headers) -> Headers:
    """
    The fields to send to the client, given those of the backend's response.

    Agent has already taken the framing and connection fields out (and with
    them C{Connection}, so the fields it names cannot be seen here); the
    C{Content-Length} of a response to C{HEAD} is left in, and is kept.
    """
    return withoutHopByHop(received)


def _quoted(value: bytes) -> bytes:
    """
    C{value} as an RFC 7239 token, or quoted if it is not one.
    """
    if _TOKEN.fullmatch(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def addForwardedFor(outgoing: Headers, client: bytes, proto: bytes, host: bytes) -> None:
    """
    Append C{client} to C{X-Forwarded-For} and set C{X-Forwarded-Proto} and
    C{X-Forwarded-Host}, as most proxies do (the de facto convention).
    """
    chain = outgoing.getRawHeaders(b"x-forwarded-for", [])
    outgoing.setRawHeaders(b"X-Forwarded-For", [b", ".join([*chain, client])])
    outgoing.setRawHeaders(b"X-Forwarded-Proto", [proto])
    outgoing.setRawHeaders(b"X-Forwarded-Host", [host])


def addForwarded(outgoing: Headers, client: bytes, proto: bytes, host: bytes) -> None:
    """
    Append an RFC 7239 C{Forwarded} element for this hop.
    """
    node = b"[" + client + b"]" if b":" in client else client
    element = b"for=%s;proto=%s;host=%s" % (_quoted(node), proto, _quoted(host))
    outgoing.addRawHeader(b"Forwarded", element)


def addVia(outgoing: Headers, version: bytes) -> None:
    """
    Append this hop to C{Via} (RFC 9110 section 7.6.3), with the version of
    the request as received.
    """
    received = version.removeprefix(b"HTTP/")
    outgoing.addRawHeader(b"Via", received + b" txlb")

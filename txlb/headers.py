"""
Which header fields cross the balancer, as pure functions.

txlb forwards every field as the client or backend sent it, with all its
repeated values, except the hop-by-hop fields of RFC 9110 section 7.6.1: they
describe one connection, not the message, so each hop makes its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.web.http_headers import Headers

from txlb.http1 import isToken

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


#: A field list: C{(name, value)} for each field line, in order.
Fields = list[tuple[bytes, bytes]]


def toBackend(received: Headers) -> Fields:
    """
    The field lines to send to the backend, given those the client sent:
    all but the hop-by-hop ones (those in L{HOP_BY_HOP} and those the
    C{Connection} field names, but C{Host}, which every request must carry).

    C{Content-Length} is dropped too: the client writes the framing of the
    body it sends (the same length, or chunks), and a second copy would make
    the message ambiguous.  C{TE: trailers} is kept, as it says something
    about the client, not the connection.
    """
    drop = _TO_BACKEND_DROP
    if received.hasHeader(b"connection"):
        drop = drop | (tokens(received, b"connection") - {b"host"})
    fields = [
        (name, value)
        for name, values in received.getAllRawHeaders()
        if name.lower() not in drop
        for value in values
    ]
    if received.hasHeader(b"te") and b"trailers" in tokens(received, b"te"):
        fields.append((b"TE", b"trailers"))
    return fields


#: What L{toBackend} always drops: the hop-by-hop fields but C{Trailer},
#: and C{Content-Length}.  C{Trailer} announces the trailer fields, which
#: txlb forwards with a chunked body (L{trailersToBackend}); RFC 9110
#: section 6.6.2 asks their sender to announce them, and section 7.6.1 does
#: not count it among the hop-by-hop fields (RFC 2616 did).
_TO_BACKEND_DROP = (HOP_BY_HOP - {b"trailer"}) | {b"content-length"}


def trailersToBackend(received: Headers, trailers: Fields) -> Fields:
    """
    The trailer fields to send to the backend after a chunked body, given
    those the client sent after its own and the fields of its head,
    C{received}: all but the hop-by-hop ones and those the head's
    C{Connection} names, as for the head (L{toBackend}).  The channel has
    refused a trailer C{Content-Length} or C{Transfer-Encoding}.
    """
    drop = HOP_BY_HOP
    if received.hasHeader(b"connection"):
        drop = drop | tokens(received, b"connection")
    return [field for field in trailers if field[0].lower() not in drop]


#: Response fields the proxy frames itself.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


#: The fields L{toClient} always drops: the hop-by-hop ones and the framing.
TO_CLIENT_DROP = HOP_BY_HOP | _FRAMING


def toClient(
    fields: Fields, connection: frozenset[bytes], drop: frozenset[bytes] = TO_CLIENT_DROP
) -> Fields:
    """
    The field lines to send to the client, given those of the backend's
    response and the tokens of its C{Connection} field: all but the
    hop-by-hop ones, those C{Connection} names, and the framing, which the
    proxy writes for the body it relays.

    @param drop: The lower-cased names to drop besides those C{Connection}
        names, from L{dropToClient}.
    """
    if connection:
        drop = drop | connection
    return [field for field in fields if field[0].lower() not in drop]


#: Connection tokens that name no field beyond the hop-by-hop ones.
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close"})

#: The lengths of the names each drop set holds, with C{date}'s and the
#: watched name's, for the few drop sets in use (see L{forClient}).
_lengths: dict[tuple[frozenset[bytes], bytes], frozenset[int]] = {}


def forClient(
    fields: Fields, connection: frozenset[bytes], drop: frozenset[bytes], watched: bytes
) -> tuple[Fields, bool, list[bytes]]:
    """
    What L{toClient} keeps of a response's C{fields}, in one pass with what
    the relay needs to know of them: whether a C{Date} is among them, and
    the values of the C{watched} field (the load header, lower-cased, which
    C{drop} holds).  Only names of the lengths of those in question are
    lower-cased.

    @return: The fields kept, whether C{Date} is among them, and the
        values of C{watched}, in order.
    """
    if connection and not connection <= _CONNECTION_OPTIONS:
        drop = drop | connection
        lengths = frozenset(len(name) for name in drop | {b"date", watched})
    else:
        lengths = _lengths.get((drop, watched))  # type: ignore[assignment]
        if lengths is None:
            if len(_lengths) > 16:
                _lengths.clear()
            lengths = _lengths[drop, watched] = frozenset(
                len(name) for name in drop | {b"date", watched}
            )
    kept = []
    date = False
    values = []
    for field in fields:
        name = field[0]
        if len(name) in lengths:
            lower = name.lower()
            if lower == watched:
                values.append(field[1])
            if lower in drop:
                continue
            if lower == b"date":
                date = True
        kept.append(field)
    return kept, date, values


def dropToClient(names: Iterable[bytes]) -> frozenset[bytes]:
    """
    What L{toClient} drops when it drops C{names} too (the load header, which
    is for txlb only).
    """
    return TO_CLIENT_DROP | {name.lower() for name in names}


def _quoted(value: bytes) -> bytes:
    """
    C{value} as an RFC 7239 token, or quoted if it is not one.
    """
    if isToken(value):
        return value
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _values(fields: Fields, name: bytes) -> list[bytes]:
    return [value for field, value in fields if field.lower() == name]


def _replace(fields: Fields, name: bytes, value: bytes) -> None:
    """
    Make C{value} the only C{name} field, where the first one was, or last.
    """
    at = next((i for i, (field, _) in enumerate(fields) if field.lower() == name.lower()), None)
    fields[:] = [field for field in fields if field[0].lower() != name.lower()]
    fields.insert(len(fields) if at is None else at, (name, value))


def addForwardedFor(outgoing: Fields, client: bytes, proto: bytes, host: bytes) -> None:
    """
    Append C{client} to C{X-Forwarded-For} and set C{X-Forwarded-Proto} and
    C{X-Forwarded-Host}, as most proxies do (the de facto convention).
    """
    chain = _values(outgoing, b"x-forwarded-for")
    _replace(outgoing, b"X-Forwarded-For", b", ".join([*chain, client]))
    _replace(outgoing, b"X-Forwarded-Proto", proto)
    _replace(outgoing, b"X-Forwarded-Host", host)


def addForwarded(outgoing: Fields, client: bytes, proto: bytes, host: bytes) -> None:
    """
    Append an RFC 7239 C{Forwarded} element for this hop.
    """
    node = b"[" + client + b"]" if b":" in client else client
    element = b"for=%s;proto=%s;host=%s" % (_quoted(node), proto, _quoted(host))
    outgoing.append((b"Forwarded", element))


def addVia(outgoing: Fields, version: bytes) -> None:
    """
    Append this hop to C{Via} (RFC 9110 section 7.6.3), with the version of
    the request as received.
    """
    received = version[5:] if version.startswith(b"HTTP/") else version
    outgoing.append((b"Via", received + b" txlb"))

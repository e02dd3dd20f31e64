"""
Requests txlb refuses on the client connection, and why.

Twisted's HTTP server refuses a malformed request with a bare
C{400 Bad Request} and no word of why, and it waits for a CRLF that a
client ending its lines with a bare LF never sends.  The channel
(L{txlb.server.ProxyChannel}) answers, logs and counts every refusal; this
module says what was wrong, for the access log, and the class of it, for
the metrics.  It holds the checks Twisted lacks or applies differently
between versions (line endings, control characters in fields, the request
line's target, the framing rules of RFC 9112 section 6, the head's limits
as 431, the trailer section of a chunked body) and explains the refusals
Twisted makes itself.  They are pure functions over a request's lines and
fields, run once per line at most; a valid request costs no check that
Twisted already makes.  HTTP/2 requests (L{txlb.http2}) are held to the
same rules where HTTP/2 does not settle them itself.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from twisted.web.http_headers import Headers

from txlb.http1 import isToken
from txlb.outcome import CLIENT_PROTOCOL_ERROR, NORMAL

# The classes of refusal: the values of the reason label of
# txlb_client_refusals_total.  The set is fixed, so the metric's series are
# bounded whatever clients send.

#: The request line: not three words, a method that is not a token, a
#: request-target outside printable ASCII, a version other than HTTP/1.x.
REQUEST_LINE = "request_line"
#: A header or trailer field: no colon, a name that is not a token, a
#: control character (RFC 9110 section 5.5 allows none but HTAB).
HEADER = "header"
#: A line not ended by CRLF: a bare LF, or a CR not followed by LF.
LINE_ENDING = "line_ending"
#: How the body is delimited: both Content-Length and Transfer-Encoding, one
#: of them twice, a Content-Length that is not a number or is 2^63 or more,
#: a coding other than chunked, either of them in a trailer section.
FRAMING = "framing"
#: A chunked body that does not follow the chunked coding.
CHUNKED_BODY = "chunked_body"
#: A request line, header line or head over the size limits, or too many
#: header fields; the same of a trailer section.
HEAD_TOO_LARGE = "head_too_large"
#: A body over C{--max-body-size}.
BODY_TOO_LARGE = "body_too_large"
#: A head not complete within C{--client-timeout}.
TIMEOUT = "timeout"
#: A connection that broke HTTP/2 (RFC 9113): a malformed frame or request
#: head, or a flow-control or stream-state error.  It ends with GOAWAY.
HTTP2 = "http2"
#: HTTP in the clear sent to a TLS listener (an C{http://} URL for an
#: C{https://} site).
PLAIN_HTTP = "plain_http"

REASONS = (
    REQUEST_LINE,
    HEADER,
    LINE_ENDING,
    FRAMING,
    CHUNKED_BODY,
    HEAD_TOO_LARGE,
    BODY_TOO_LARGE,
    TIMEOUT,
    HTTP2,
    PLAIN_HTTP,
)


#: The reason phrases of the statuses txlb refuses with (RFC 9110).
_PHRASES = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
}

#: Printable ASCII, the bytes of a request-target.
_VCHAR = bytes(range(0x21, 0x7F))

#: The bytes of a field line that need no second look: printable ASCII, SP
#: and HTAB.  C{line.translate(None, FIELD_BYTES)} leaves nothing of such a
#: line: one pass in C, measured cheaper per line than a regular expression
#: on CPython and not much dearer on PyPy.  What it leaves is either
#: obs-text (bytes from 0x80, which RFC 9110 section 5.5 allows in a value)
#: or what L{fieldControl} refuses.
FIELD_BYTES = b"\t" + bytes(range(0x20, 0x7F))

#: Control characters, but HTAB (CR and LF included).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: The largest Content-Length taken, 2^63 - 1: a backend that reads it into
#: a signed 64-bit integer reads it right.  llhttp refuses 2^64 and more
#: ("Content-Length overflow"); a parser that wraps would read
#: 18446744073709551651 as 35, and the bytes after those 35 as a request.
MAX_CONTENT_LENGTH = 2**63 - 1


class Refusal(NamedTuple):
    """
    A request refused on its client connection.

    @ivar code: The status answered.
    @ivar error: What was wrong, for the access log's C{error}.  It never
        holds bytes the client sent, so it cannot break the log line.
    @ivar reason: Its class, one of L{REASONS}.
    """

    code: int
    error: str
    reason: str

    @property
    def status(self) -> bytes:
        """
        The status line's code and reason phrase, as in C{b"400 Bad Request"}.
        """
        return b"%d %s" % (self.code, _PHRASES[self.code])

    @property
    def protocolError(self) -> bool:
        """
        Whether the request broke HTTP/1.1 or the head's limits (flag
        L{txlb.outcome.CLIENT_PROTOCOL_ERROR}), rather than being too slow
        or its body too large, which have their own statuses.
        """
        return self.reason not in (TIMEOUT, BODY_TOO_LARGE)

    @property
    def flag(self) -> str:
        """
        The access-log flag of a request refused so.
        """
        return CLIENT_PROTOCOL_ERROR if self.protocolError else NORMAL


def lineEnding(line: bytes) -> Refusal | None:
    """
    Check the ending of a line split at LF (with the LF removed).

    A line must end with CRLF.  RFC 9112 section 2.2 lets a recipient take
    a bare LF for a line's end, but not every parser on a request's way
    does: txlb refuses it at once, rather than read the head one way while
    another proxy reads it another.  A CR anywhere else in the line is
    refused too (section 2.2 allows that or a space).
    """
    end = len(line) - 1
    if end >= 0 and line.find(b"\r") == end:
        return None
    if end < 0 or line[end] != 0x0D:
        return Refusal(400, "a line ended by a bare LF", LINE_ENDING)
    return Refusal(400, "a CR not followed by LF", LINE_ENDING)


def headTooLarge(limit: int) -> Refusal:
    """
    A request head over C{limit} bytes in all, counted as Twisted does:
    request line and fields, without their CRLF.  Twisted would answer 400.
    """
    return Refusal(431, f"a request head over {limit} bytes", HEAD_TOO_LARGE)


def lineTooLong(kind: str, limit: int) -> Refusal:
    """
    A request line (414), or a header or trailer line (431), over C{limit}
    bytes.

    @param kind: C{"request"}, C{"header"} or C{"trailer"}.
    """
    code = 414 if kind == "request" else 431
    return Refusal(code, f"a {kind} line over {limit} bytes", HEAD_TOO_LARGE)


def trailersTooLarge(limit: int) -> Refusal:
    """
    A trailer section over C{limit} bytes in all, counted as a head is.
    """
    return Refusal(431, f"a trailer section over {limit} bytes", HEAD_TOO_LARGE)


def tooManyTrailers(limit: int) -> Refusal:
    """
    More than C{limit} trailer fields, as for header fields.
    """
    return Refusal(431, f"more than {limit} trailer fields", HEAD_TOO_LARGE)


def fieldControl(line: bytes, section: str = "header") -> Refusal | None:
    """
    Check a field line, without its CRLF, for control characters: RFC 9110
    section 5.5 allows none in a value but HTAB, and a name is a token.
    h11 or llhttp refuses each; Twisted refuses only NUL (and CR and LF),
    and forwarded DEL, VT or FF to the backend.  The error names the byte,
    not what the client sent around it.

    @param section: C{"header"} or C{"trailer"}, for the error.
    """
    found = _CONTROL.search(line)
    if found is None:
        return None
    at = found.start()
    colon = line.find(b":")
    where = "value" if 0 <= colon < at else "name"
    return Refusal(400, f"a control character (0x{line[at]:02x}) in a {section} {where}", HEADER)


def trailerLine(line: bytes) -> Refusal | None:
    """
    Check a line of the trailer section of a chunked body (RFC 9112 section
    7.1.2), without its CRLF, as header lines are checked: C{token ":"
    value}, no obs-fold, no control character (L{fieldControl}); and no
    Content-Length or Transfer-Encoding, which framed the body and have no
    place after it (RFC 9110 section 6.5.1).

    Twisted's decoder took any line for a trailer, even a request line with
    no colon (C{0\\r\\nGET /admin HTTP/1.1\\r\\n\\r\\n}), where h11 and llhttp
    refuse it: a proxy in front could take that for a second request that
    txlb never saw.
    """
    if line[:1] == b" " or line[:1] == b"\t":
        return Refusal(400, "a folded trailer line (obs-fold)", HEADER)
    refusal = fieldControl(line, "trailer")
    if refusal is not None:
        return refusal
    name, colon, _ = line.partition(b":")
    if not colon:
        return Refusal(400, "a trailer line without a colon", HEADER)
    if not isToken(name):
        return Refusal(400, "a trailer name that is not a token", HEADER)
    name = name.lower()
    if name == b"content-length":
        return Refusal(400, "a Content-Length in the trailer section", FRAMING)
    if name == b"transfer-encoding":
        return Refusal(400, "a Transfer-Encoding in the trailer section", FRAMING)
    return None


#: A field line folded onto the next (obs-fold): RFC 9112 section 5.2 lets a
#: server refuse it or join it with a space; txlb refuses it, since a proxy
#: on the way may read it otherwise (as a field of its own, or framing).
FOLDED = Refusal(400, "a folded header line (obs-fold)", HEADER)

#: More than the one empty line before a request line that RFC 9112 section
#: 2.2 says to ignore, and Twisted ignores.
EMPTY_LINES = Refusal(400, "more than one empty line before a request", REQUEST_LINE)


def requestLine(line: bytes) -> Refusal | None:
    """
    Check a request line as Twisted parses it, but with the target held to
    printable ASCII (Twisted lets bytes up to 0xB0 through).
    """
    parts = line.split(b" ")
    if len(parts) != 3:
        return Refusal(400, "a request line that is not METHOD SP TARGET SP VERSION", REQUEST_LINE)
    method, target, version = parts
    if not isToken(method):
        return Refusal(400, "a method that is not a token", REQUEST_LINE)
    if not target or target.translate(None, _VCHAR):
        return Refusal(
            400, "a request-target empty or with bytes outside printable ASCII", REQUEST_LINE
        )
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        return Refusal(400, "a version other than HTTP/1.0 and HTTP/1.1", REQUEST_LINE)
    return None


def http2RequestLine(method: bytes, path: bytes) -> Refusal | None:
    """
    Check the C{:method} and C{:path} of an HTTP/2 request, which make the
    request line the backend gets, as L{requestLine} checks an HTTP/1.1
    one's: hyper-h2 refuses a NUL, CR or LF in them, not a space or
    another control character.
    """
    if not isToken(method):
        return Refusal(400, "a :method that is not a token", REQUEST_LINE)
    if not path or path.translate(None, _VCHAR):
        return Refusal(400, "a :path empty or with bytes outside printable ASCII", REQUEST_LINE)
    return None


def framing(fields: Headers) -> Refusal | None:
    """
    Check the framing fields of a whole head for what Twisted lets through:
    a request is delimited one way only, Transfer-Encoding must be chunked
    alone (RFC 9112 sections 6.1 and 6.3), and a Content-Length must fit in
    63 bits (L{contentLength}).  Twisted takes C{Transfer-Encoding:
    identity} as no coding at all, beside a Content-Length or another
    Transfer-Encoding, and a Content-Length of any size.
    """
    lengths = fields.getRawHeaders(b"content-length")
    codings = fields.getRawHeaders(b"transfer-encoding")
    if codings is None:
        return None if lengths is None else contentLength(lengths[0])
    if lengths is not None:
        return Refusal(400, "both Content-Length and Transfer-Encoding", FRAMING)
    if len(codings) > 1:
        return Refusal(400, "more than one Transfer-Encoding", FRAMING)
    if codings[0].lower() != b"chunked":
        return Refusal(400, "a Transfer-Encoding other than chunked", FRAMING)
    return None


def contentLength(value: bytes) -> Refusal | None:
    """
    Check a Content-Length value: digits (RFC 9110 section 8.6), at most 19
    of them and at most L{MAX_CONTENT_LENGTH}.  A longer value is refused
    even when its digits are zeros: a parser that keeps 19 digits, or
    counts in 64 bits, cannot read it.  A value within these bounds but
    over C{--max-body-size} gets 413, as any body over it.
    """
    if not value.isdigit():
        return Refusal(400, "a Content-Length that is not a number", FRAMING)
    if len(value) > 19:
        return Refusal(400, "a Content-Length longer than 19 digits", FRAMING)
    if int(value) > MAX_CONTENT_LENGTH:
        return Refusal(400, "a Content-Length over 2^63 - 1", FRAMING)
    return None


def headerField(
    line: bytes, lengthSeen: bool, chunkedSeen: bool, count: int, maxFields: int
) -> Refusal | None:
    """
    Check a header field line, without its CRLF, after C{count} fields (a
    C{Content-Length} among them if C{lengthSeen}, a chunked
    C{Transfer-Encoding} if C{chunkedSeen}), as Twisted's channel checked
    each: a token for a name before a colon; one framing field, a
    C{Content-Length} of digits or a C{Transfer-Encoding} of C{chunked}
    (C{identity} is taken here, and refused with the whole head by
    L{framing}); at most C{maxFields} fields (431, where Twisted answered
    400).  Its bytes and folding were checked before (L{fieldControl},
    L{FOLDED}).
    """
    name, colon, value = line.partition(b":")
    if not colon:
        return Refusal(400, "a header line without a colon", HEADER)
    if not isToken(name):
        return Refusal(400, "a header name that is not a token", HEADER)
    name = name.lower()
    if name == b"content-length":
        if not value.strip(b" \t").isdigit():
            return Refusal(400, "a Content-Length that is not a number", FRAMING)
        if lengthSeen:
            return Refusal(400, "more than one Content-Length", FRAMING)
        if chunkedSeen:
            return Refusal(400, "both Content-Length and Transfer-Encoding", FRAMING)
    elif name == b"transfer-encoding":
        coding = value.strip(b" \t").lower()
        if coding not in (b"chunked", b"identity"):
            return Refusal(400, "a Transfer-Encoding other than chunked", FRAMING)
        if coding == b"chunked" and lengthSeen:
            return Refusal(400, "both Content-Length and Transfer-Encoding", FRAMING)
        if coding == b"chunked" and chunkedSeen:
            return Refusal(400, "more than one Transfer-Encoding", FRAMING)
    if count >= maxFields:
        return Refusal(431, f"more than {maxFields} header fields", HEAD_TOO_LARGE)
    return None


#: A chunked body that breaks the chunked coding (RFC 9112 section 7.1): a
#: chunk size that is not 1 to 16 hex digits, a chunk not followed by CRLF,
#: a control character in an extension, a chunk-size line over 4 KiB.  The
#: decoder's own words quote the client's bytes, so the log says no more.
MALFORMED_CHUNKS = Refusal(400, "a malformed chunked body", CHUNKED_BODY)


def tooSlow(seconds: float) -> Refusal:
    """
    A request head that was not complete in C{seconds}.
    """
    return Refusal(408, f"no whole request head within {seconds:g} s", TIMEOUT)


def bodyTooLarge(limit: int) -> Refusal:
    """
    A request body over C{limit} bytes.
    """
    return Refusal(413, f"a body over {limit} bytes", BODY_TOO_LARGE)


#: The request a client sent in the clear to a TLS listener.
PLAIN_HTTP_REFUSAL = Refusal(400, "plain HTTP sent to a TLS port", PLAIN_HTTP)

#: The first byte of a TLS record that carries a handshake, as a
#: ClientHello does (RFC 8446 section 5.1).
_HANDSHAKE = 0x16

#: The longest method L{plainHTTP} waits for: longer than any registered.
_LONGEST_METHOD = 20


def plainHTTP(first: bytes) -> bool | None:
    """
    Whether the first bytes a client sent to a TLS listener are an HTTP
    request in the clear: a method (a token) and a space, as a request line
    starts.  C{None} while too few have come to tell.

    A TLS client starts with a handshake record, whose first byte is no
    token character; anything else that is not a request line is left to
    TLS, which refuses it.
    """
    if not first:
        return None
    if first[0] == _HANDSHAKE:
        return False
    space = first.find(b" ", 0, _LONGEST_METHOD + 1)
    if space < 0:
        # Still a method so far: wait for the rest of it.
        return None if len(first) <= _LONGEST_METHOD and isToken(first) else False
    return space > 0 and isToken(first[:space])

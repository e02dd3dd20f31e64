"""
Strict parsing of the HTTP/1.1 responses backends send (RFC 9112).

A proxy that guesses where a malformed response ends can be made to hand one
client's bytes to another (response splitting, desynchronisation), so
nothing here guesses: a status line that is not C{HTTP/1.0} or C{HTTP/1.1},
a field line that is not C{token ":" value}, obs-fold, a control character
(NUL included) in a field, both C{Content-Length} and C{Transfer-Encoding},
differing C{Content-Length} values, a transfer coding other than
C{chunked}, a bad chunk, or a head or chunk line over its limit all raise
L{BadResponseError}, and the proxy answers 502 and closes that connection.  What
is accepted is always accepted by h11 too, with the same meaning (the tests
check this with hypothesis).

The one leniency is the one RFC 9112 section 2.2 allows: a bare LF ends a
line of the head, as it does for h11, nginx and HAProxy.  A bare CR never
does.

These are plain functions and classes without I/O, so the client protocol
stays small and the parser can be tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: The largest response head accepted, in bytes (HAProxy's default buffer is
#: 16 KiB, nginx's proxy buffers 4-8 KiB; Twisted's server accepts 16 KiB
#: lines).
MAX_HEAD = 64 * 1024
#: The longest chunk-size line, extensions included.
MAX_CHUNK_LINE = 4096

#: Control characters, less HTAB: never in a field value or reason phrase.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


#: The characters of a token (RFC 9110 section 5.6.2).
_TOKEN_CHARACTERS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def isToken(data: bytes) -> bool:
    """
    Whether C{data} is a token (RFC 9110 section 5.6.2), as methods and
    field names must be, in requests and responses alike: a C{translate}
    that leaves nothing, measured faster than a regular expression on
    CPython and on PyPy.
    """
    return bool(data) and not data.translate(None, _TOKEN_CHARACTERS)


class BadResponseError(Exception):
    """
    A backend's response is malformed; the message says how.
    """


class ResponseHead:
    """
    A parsed response head.

    @ivar version: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar code: The status code.
    @ivar phrase: The reason phrase, as sent (possibly empty).
    @ivar fields: Every field line as C{(name, value)}, in order, the names
        as sent and the values without surrounding whitespace.
    @ivar contentLength: The C{Content-Length}, or C{None} without one.
    @ivar chunked: Whether the body is chunked.
    @ivar connection: The lower-cased tokens of C{Connection}.
    """

    __slots__ = ("chunked", "code", "connection", "contentLength", "fields", "phrase", "version")

    def __init__(
        self,
        version: bytes,
        code: int,
        phrase: bytes,
        fields: list[tuple[bytes, bytes]],
        contentLength: int | None,
        chunked: bool,
        connection: frozenset[bytes],
    ) -> None:
        self.version = version
        self.code = code
        self.phrase = phrase
        self.fields = fields
        self.contentLength = contentLength
        self.chunked = chunked
        self.connection = connection

    def bodyLength(self, method: bytes) -> int | None:
        """
        How long the body of this response to C{method} is: a byte count,
        or C{None} for a chunked body or one ended by the backend closing
        (RFC 9112 section 6.3).
        """
        if method == b"HEAD" or self.code < 200 or self.code in (204, 304):
            return 0
        if self.chunked:
            return None
        return self.contentLength

    def keepAlive(self) -> bool:
        """
        Whether the connection may carry another request after this
        response, as far as its head says.
        """
        if b"close" in self.connection:
            return False
        return self.version == b"HTTP/1.1" or b"keep-alive" in self.connection


def headEnd(buffer: bytes, start: int = 0) -> int:
    """
    Where the head at the start of C{buffer} ends (the index just after its
    empty line), or -1 if it has not ended yet; the search begins at
    C{start}, as far as an earlier search found nothing.  A bare LF may end
    a line (RFC 9112 section 2.2), so the empty line is the first LF
    followed by CRLF or by LF.
    """
    crlf = buffer.find(b"\n\r\n", start)
    lf = buffer.find(b"\n\n", start)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf + 3
    if lf >= 0:
        return lf + 2
    return -1


def _normalised(head: bytes) -> bytes:
    """
    C{head} with every line ended by CRLF: a bare LF may end a line (RFC
    9112 section 2.2), a bare CR never does.
    """
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf:
        raise BadResponseError("a bare CR in the response head")
    if head.count(b"\n") != crlf:
        head = head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return head


def parseFields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """
    Field lines as C{(name, value)} pairs, checked one by one.

    @raise BadResponseError: If a line is not C{token ":" OWS value OWS},
        folds (obs-fold), or has a control character in its value.
    """
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not isToken(name):
            if line[:1] in (b" ", b"\t"):
                raise BadResponseError("a folded field line (obs-fold)")
            raise BadResponseError(f"a malformed field line {line[:40]!r}")
        value = value.strip(b" \t")
        if _CONTROL.search(value):
            raise BadResponseError(f"a control character in field {name.decode('ascii')}")
        fields.append((name, value))
    return fields


#: Control characters other than HTAB, CR and LF.
_CONTROL_IN_HEAD = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


#: The bytes a plain head has besides CR and LF: HTAB, printable ASCII and
#: obs-text.
_HEAD_TEXT = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))


def parseHead(head: bytes) -> ResponseHead:
    """
    Parse a response head, from its status line to its empty line included.

    This runs for every response, so a plain head (CRLF line ends, no
    control character; nearly every head) is read with the fewest byte
    string operations, measured on CPython and on PyPy: one C{translate}
    and one C{count} over the whole head for its bytes and line ends, then
    per line a partition, and a name that is letters, digits and hyphens
    needs no closer look.  Any other head, and any error, goes to
    L{_parseHeadStrictly}, which says what is wrong.

    @raise BadResponseError: If it is malformed.
    """
    ends = head.translate(None, _HEAD_TEXT)
    # CRLFs counted in the head itself: in what translate leaves, a bare CR
    # and a later bare LF would meet.
    if len(ends) != 2 * head.count(b"\r\n"):
        # A bare CR or LF, or a control character.
        return _parseHeadStrictly(head)
    lines = head.split(b"\r\n")
    del lines[-2:]
    if not lines:
        raise BadResponseError("an empty response head")
    version, _, rest = lines[0].partition(b" ")
    code, _, phrase = rest.partition(b" ")
    if version not in _VERSIONS or len(code) != 3 or not code.isdigit() or code[:1] == b"0":
        return _parseHeadStrictly(head)
    length: bytes | None = None
    codings: list[bytes] = []
    connection = _NO_TOKENS
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not (name.replace(b"-", b"").isalnum() or isToken(name)):
            return _parseHeadStrictly(head)
        value = value.strip(b" \t")
        fields.append((name, value))
        # Only the framing fields matter here: look at the others no further.
        size = len(name)
        if size != 14 and size != 10 and size != 17:
            continue
        lower = name.lower()
        if lower == b"content-length":
            length = _contentLength(value, length)
        elif lower == b"connection":
            if value == b"keep-alive" and not connection:
                connection = _KEEP_ALIVE
            else:
                connection = connection.union(
                    t.strip().lower() for t in value.split(b",")
                ).difference((b"",))
        elif lower == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",")]
    return _head(version, int(code), phrase, fields, length, codings, connection)


def _parseHeadStrictly(head: bytes) -> ResponseHead:
    """
    Parse a response head that is not plain (see L{parseHead}): with bare
    LFs for line ends, which RFC 9112 section 2.2 allows, or malformed.

    @raise BadResponseError: If it is malformed, saying how.
    """
    head = _normalised(head)
    lines = head.split(b"\r\n")
    del lines[-2:]
    if not lines:
        raise BadResponseError("an empty response head")
    version, _, rest = lines[0].partition(b" ")
    if version not in _VERSIONS:
        raise BadResponseError(f"a status line that is not HTTP/1.x: {lines[0][:40]!r}")
    code, _, phrase = rest.partition(b" ")
    if len(code) != 3 or not code.isdigit() or code[:1] == b"0":
        raise BadResponseError(f"a malformed status code {code[:10]!r}")
    if _CONTROL_IN_HEAD.search(head):
        if _CONTROL.search(phrase):
            raise BadResponseError("a control character in the reason phrase")
        # Say which field.
        parseFields(lines[1:])
    length: bytes | None = None
    codings: list[bytes] = []
    connection: list[bytes] = []
    fields = parseFields(lines[1:])
    for name, value in fields:
        if len(name) not in (10, 14, 17):
            continue
        lower = name.lower()
        if lower == b"content-length":
            length = _contentLength(value, length)
        elif lower == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",")]
        elif lower == b"connection":
            connection += [t.strip().lower() for t in value.split(b",")]
    tokens = frozenset(connection).difference((b"",)) if connection else _NO_TOKENS
    return _head(version, int(code), phrase, fields, length, codings, tokens)


def _head(
    version: bytes,
    code: int,
    phrase: bytes,
    fields: list[tuple[bytes, bytes]],
    length: bytes | None,
    codings: list[bytes],
    connection: frozenset[bytes],
) -> ResponseHead:
    """
    The L{ResponseHead} of a parsed head, once its framing is checked.
    """
    contentLength = None if length is None else int(length)
    if codings:
        if contentLength is not None:
            raise BadResponseError("both Content-Length and Transfer-Encoding")
        if codings != [b"chunked"]:
            raise BadResponseError(f"unsupported Transfer-Encoding {b', '.join(codings)!r}")
        if version != b"HTTP/1.1":
            raise BadResponseError("Transfer-Encoding in an HTTP/1.0 response")
    return ResponseHead(version, code, phrase, fields, contentLength, bool(codings), connection)


_NO_TOKENS: frozenset[bytes] = frozenset()
_KEEP_ALIVE = frozenset([b"keep-alive"])


def _contentLength(value: bytes, seen: bytes | None) -> bytes:
    """
    The length a C{Content-Length} value gives, as sent, which must be the
    same as any seen before (RFC 9110 section 8.6 allows a list of one
    repeated value; C{5} and C{05} are not the same).
    """
    if value.isdigit() and len(value) <= 18:
        # One length, as nearly every response has it.
        if seen is not None and seen != value:
            raise BadResponseError("differing Content-Length values")
        return value
    lengths = {v.strip() for v in value.split(b",")}
    if len(lengths) != 1:
        raise BadResponseError("differing Content-Length values")
    length = lengths.pop()
    if not length.isdigit() or len(length) > 18:
        raise BadResponseError(f"a malformed Content-Length {length[:20]!r}")
    if seen is not None and seen != length:
        raise BadResponseError("differing Content-Length values")
    return length


#: States of L{ChunkedDecoder}.
_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """
    Decodes a chunked body (RFC 9112 section 7.1) as it arrives, strictly:
    hex sizes, CRLF after each chunk, a bounded size line.  A response's
    trailer fields are checked and dropped (a Twisted server cannot send
    trailers); a request's trailer section is left to the client channel
    (L{txlb.server.ProxyChannel}), which reads it as it reads a head.

    @ivar done: Whether the last chunk and, if read here, the trailer
        section have arrived.
    """

    def __init__(self, deliver: Callable[[bytes], object], readTrailers: bool = True) -> None:
        """
        @param deliver: Called with each piece of chunk data.
        @param readTrailers: Whether to read the trailer section; if not,
            the decoder is done once the last chunk's size line is in, and
            L{feed} returns what follows it, the trailer section first.
        """
        self._deliver = deliver
        self._readTrailers = readTrailers
        self._state = _SIZE
        self._remaining = 0
        self._buffer = b""
        self._trailerBytes = 0
        #: How far the buffered trailer line was searched for its end.
        self._scanned = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """
        Decode C{data}, delivering the chunk data in it.

        @return: The bytes after the end of the body (none, normally).
        @raise BadResponseError: If the framing is malformed.
        """
        data = self._buffer + data
        self._buffer = b""
        position = 0
        end = len(data)
        while position < end:
            state = self._state
            if state == _DATA:
                taken = min(self._remaining, end - position)
                self._deliver(data[position : position + taken])
                position += taken
                self._remaining -= taken
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if end - position < 2:
                    break
                if data[position : position + 2] != b"\r\n":
                    raise BadResponseError("no CRLF after a chunk")
                position += 2
                self._state = _SIZE
            elif state == _SIZE:
                lineEnd = data.find(b"\r\n", position, position + MAX_CHUNK_LINE)
                if lineEnd < 0:
                    if end - position >= MAX_CHUNK_LINE:
                        raise BadResponseError("a chunk-size line over 4 KiB")
                    break
                self._remaining = _chunkSize(data[position:lineEnd])
                position = lineEnd + 2
                if self._remaining:
                    self._state = _DATA
                elif self._readTrailers:
                    self._state = _TRAILER
                else:
                    self._state = _DONE
                    self.done = True
                    return data[position:]
            elif state == _TRAILER:
                lineEnd = data.find(b"\r\n", position + self._scanned)
                if lineEnd < 0:
                    if end - position + self._trailerBytes >= MAX_HEAD:
                        raise BadResponseError("a trailer section over 64 KiB")
                    self._scanned = max(0, end - position - 1)
                    break
                self._scanned = 0
                line = data[position:lineEnd]
                self._trailerBytes += len(line) + 2
                if self._trailerBytes > MAX_HEAD:
                    raise BadResponseError("a trailer section over 64 KiB")
                position = lineEnd + 2
                if not line:
                    self._state = _DONE
                    self.done = True
                    return data[position:]
                for name, _ in parseFields([line]):
                    if name.lower() in (b"content-length", b"transfer-encoding"):
                        # Framing has no place after the body (RFC 9110
                        # section 6.5.1).
                        raise BadResponseError(f"a {name.decode()} field in the trailer section")
            else:
                return data[position:]
        self._buffer = data[position:]
        return b""


def _chunkSize(line: bytes) -> int:
    """
    The size a chunk-size line gives: hex digits, then optional extensions,
    which are ignored but may not hold control characters.
    """
    size, _, extensions = line.partition(b";")
    if not _HEX.fullmatch(size):
        raise BadResponseError(f"a malformed chunk size {size[:20]!r}")
    if _CONTROL.search(extensions):
        raise BadResponseError("a control character in a chunk extension")
    return int(size, 16)

"""
The strict response parser, L{txlb.http1}: the heads and chunked bodies it
accepts and what it makes of them, every malformed shape it refuses, and
(with hypothesis, against h11) that whatever it accepts h11 accepts with the
same meaning, while what only h11 accepts is refused for a documented reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import h11

# h11's own body-framing and persistence rules, which the differential tests
# compare txlb's answers with.  Private: if h11 moves them, this import fails.
from h11._connection import _body_framing, _keep_alive
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.http1 import (
    MAX_CHUNK_LINE,
    MAX_HEAD,
    BadResponseError,
    ChunkedDecoder,
    ResponseHead,
    headEnd,
    parseHead,
)

NGINX = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.24.0\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: text/html\r\n"
    b"Content-Length: 615\r\n"
    b"Last-Modified: Tue, 11 Apr 2023 01:45:34 GMT\r\n"
    b"Connection: keep-alive\r\n"
    b'ETag: "6434bbbe-267"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"\r\n"
)
NGINX_FIELDS = [
    (b"Server", b"nginx/1.24.0"),
    (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
    (b"Content-Type", b"text/html"),
    (b"Content-Length", b"615"),
    (b"Last-Modified", b"Tue, 11 Apr 2023 01:45:34 GMT"),
    (b"Connection", b"keep-alive"),
    (b"ETag", b'"6434bbbe-267"'),
    (b"Accept-Ranges", b"bytes"),
]


def head(*fields: bytes, status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    """
    A head with CRLF line ends: C{status}, then each field line.
    """
    return b"".join(line + b"\r\n" for line in (status, *fields)) + b"\r\n"


def parse(data: bytes) -> ResponseHead:
    """
    Parse C{data}, which must be one whole head, as the client does.
    """
    assert headEnd(data) == len(data), data
    return parseHead(data)


class HeadEndTests(SynchronousTestCase):
    def test_whole(self) -> None:
        """
        The end is the index just after the empty line, for CRLF, bare-LF
        and mixed heads, whatever follows.
        """
        table = [
            (NGINX, len(NGINX)),
            (NGINX + b"body", len(NGINX)),
            (b"HTTP/1.1 200 OK\n\n", 17),
            (b"HTTP/1.1 200 OK\nA: b\n\nHTTP/1.1 200 OK\r\n\r\n", 22),
            # A bare-LF line followed by a CRLF empty line.
            (b"HTTP/1.1 200 OK\r\nA: b\n\r\nrest", 24),
            # A CRLF line followed by a bare-LF empty line.
            (b"HTTP/1.1 200 OK\r\nA: b\r\n\nrest", 24),
        ]
        for data, expected in table:
            self.assertEqual(headEnd(data), expected, data)

    def test_incomplete(self) -> None:
        """
        Without its empty line a head has not ended: -1.  A bare CR never
        ends a line.
        """
        table = [
            b"",
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n\r",
            b"HTTP/1.1 200 OK\r\r",
            b"HTTP/1.1 200 OK\r\nA: b\r\r\n",
        ]
        for data in table:
            self.assertEqual(headEnd(data), -1, data)

    def test_byteByByte(self) -> None:
        """
        A head arriving a byte at a time gives -1 until its last byte, then
        the same end as when it arrives whole.
        """
        for data in [NGINX, NGINX.replace(b"\r\n", b"\n")]:
            for size in range(len(data)):
                self.assertEqual(headEnd(data[:size]), -1, (data, size))
            self.assertEqual(headEnd(data), len(data))
            self.assertEqual(headEnd(data + b"HTTP/1.1 200 OK\r\n\r\n"), len(data))


class ParseHeadTests(SynchronousTestCase):
    def test_nginx(self) -> None:
        """
        A typical nginx head is parsed into its version, code, phrase,
        fields, length and connection tokens.
        """
        parsed = parse(NGINX)
        self.assertEqual(parsed.version, b"HTTP/1.1")
        self.assertEqual(parsed.code, 200)
        self.assertEqual(parsed.phrase, b"OK")
        self.assertEqual(parsed.fields, NGINX_FIELDS)
        self.assertEqual(parsed.contentLength, 615)
        self.assertFalse(parsed.chunked)
        self.assertEqual(parsed.connection, frozenset({b"keep-alive"}))

    def test_bareLF(self) -> None:
        """
        A bare LF ends a line (RFC 9112 section 2.2), mixed with CRLF or
        not: the head means the same.
        """
        mixed = NGINX.replace(b"\r\n", b"\n", 4)
        self.assertIn(b"\r\n", mixed)
        for data in [NGINX.replace(b"\r\n", b"\n"), mixed]:
            parsed = parse(data)
            self.assertEqual((parsed.code, parsed.phrase), (200, b"OK"))
            self.assertEqual(parsed.fields, NGINX_FIELDS)
            self.assertEqual(parsed.contentLength, 615)

    def test_contentLengthList(self) -> None:
        """
        A Content-Length that is a list of one repeated value gives that
        value (RFC 9110 section 8.6); the field stays as sent.
        """
        table = [b"5, 5", b"5,5", b"5 ,5 , 5"]
        for value in table:
            parsed = parse(head(b"Content-Length: " + value))
            self.assertEqual(parsed.contentLength, 5, value)
            self.assertEqual(parsed.fields, [(b"Content-Length", value)])

    def test_repeatedContentLength(self) -> None:
        """
        Repeated identical Content-Length fields give their value, and both
        fields are kept.
        """
        parsed = parse(head(b"Content-Length: 5", b"X-A: b", b"content-length: 5"))
        self.assertEqual(parsed.contentLength, 5)
        self.assertEqual(
            parsed.fields,
            [(b"Content-Length", b"5"), (b"X-A", b"b"), (b"content-length", b"5")],
        )

    def test_chunked(self) -> None:
        """
        C{Transfer-Encoding: chunked}, in any case, makes a chunked body
        without a length.
        """
        for value in [b"chunked", b"Chunked", b"CHUNKED", b" chunked\t"]:
            parsed = parse(head(b"Transfer-Encoding: " + value))
            self.assertTrue(parsed.chunked, value)
            self.assertIsNone(parsed.contentLength, value)

    def test_contentLengthDigits(self) -> None:
        """
        Content-Length is decimal; leading zeros are allowed; 18 digits is
        the most accepted.
        """
        table = [(b"0", 0), (b"007", 7), (b"9" * 18, 10**18 - 1)]
        for value, expected in table:
            self.assertEqual(parse(head(b"Content-Length: " + value)).contentLength, expected)

    def test_fieldsAsSent(self) -> None:
        """
        Field names keep their case and order (repeats included); values
        lose surrounding SP and HTAB only, keeping inner whitespace,
        obs-text and quotes; an empty value is allowed.
        """
        parsed = parse(
            head(
                b"x-lower: a",
                b"X-UPPER:b",
                b"x-lower:  \t a \t b \t ",
                b"X-Obs: \xa0\xff\xa0",
                b'X-Q: "a, b"',
                b"X-Empty:",
                b"X-Blank: \t ",
            )
        )
        self.assertEqual(
            parsed.fields,
            [
                (b"x-lower", b"a"),
                (b"X-UPPER", b"b"),
                (b"x-lower", b"a \t b"),
                (b"X-Obs", b"\xa0\xff\xa0"),
                (b"X-Q", b'"a, b"'),
                (b"X-Empty", b""),
                (b"X-Blank", b""),
            ],
        )

    def test_phrase(self) -> None:
        """
        The reason phrase is everything after the code's space, as sent:
        empty when only the space is there or when it is missing, inner and
        trailing whitespace and obs-text kept.
        """
        table = [
            (b"HTTP/1.1 200 \r\n\r\n", 200, b""),
            (b"HTTP/1.1 200\r\n\r\n", 200, b""),
            (b"HTTP/1.1 204\n\n", 204, b""),
            (b"HTTP/1.1 404 Not  Found \r\n\r\n", 404, b"Not  Found "),
            (b"HTTP/1.1 200 \tOK\r\n\r\n", 200, b"\tOK"),
            (b"HTTP/1.1 200 \xc3\xa7a va\r\n\r\n", 200, b"\xc3\xa7a va"),
        ]
        for data, code, phrase in table:
            parsed = parse(data)
            self.assertEqual((parsed.code, parsed.phrase), (code, phrase), data)

    def test_versionsAndCodes(self) -> None:
        """
        Both HTTP/1.x versions and every code from 100 to 999 are accepted.
        """
        table = [
            (b"HTTP/1.0 200 OK", b"HTTP/1.0", 200),
            (b"HTTP/1.1 100 Continue", b"HTTP/1.1", 100),
            (b"HTTP/1.1 103 Early Hints", b"HTTP/1.1", 103),
            (b"HTTP/1.1 599 X", b"HTTP/1.1", 599),
            (b"HTTP/1.1 999 X", b"HTTP/1.1", 999),
        ]
        for status, version, code in table:
            parsed = parse(head(status=status))
            self.assertEqual((parsed.version, parsed.code), (version, code))

    def test_connection(self) -> None:
        """
        The Connection tokens of every Connection field, lower-cased,
        trimmed, empty ones dropped.
        """
        parsed = parse(head(b"Connection: Keep-Alive, ,Upgrade", b"connection: X-Foo ,"))
        self.assertEqual(parsed.connection, frozenset({b"keep-alive", b"upgrade", b"x-foo"}))


class ResponseHeadTests(SynchronousTestCase):
    def test_keepAlive(self) -> None:
        """
        HTTP/1.1 is persistent unless Connection says close; HTTP/1.0 is
        not unless Connection says keep-alive (and not close).
        """
        table = [
            (head(), True),
            (head(b"Connection: close"), False),
            (head(b"Connection: Keep-Alive, Close"), False),
            (head(b"Connection: keep-alive"), True),
            (head(status=b"HTTP/1.0 200 OK"), False),
            (head(b"Connection: close", status=b"HTTP/1.0 200 OK"), False),
            (head(b"Connection: Keep-Alive", status=b"HTTP/1.0 200 OK"), True),
            (head(b"Connection: keep-alive, close", status=b"HTTP/1.0 200 OK"), False),
        ]
        for data, expected in table:
            self.assertEqual(parse(data).keepAlive(), expected, data)

    def test_bodyLength(self) -> None:
        """
        Each row: the head, the request method, the body length (L{None}
        for chunked or close-delimited), per RFC 9112 section 6.3.
        """
        table = [
            (head(b"Content-Length: 10"), b"GET", 10),
            (head(b"Content-Length: 0"), b"GET", 0),
            (head(b"Content-Length: 10"), b"HEAD", 0),
            (head(b"Transfer-Encoding: chunked"), b"HEAD", 0),
            (head(), b"HEAD", 0),
            (head(b"Content-Length: 10", status=b"HTTP/1.1 100 Continue"), b"GET", 0),
            (head(status=b"HTTP/1.1 103 Early Hints"), b"POST", 0),
            (head(b"Content-Length: 10", status=b"HTTP/1.1 204 No Content"), b"GET", 0),
            (head(b"Transfer-Encoding: chunked", status=b"HTTP/1.1 204 No Content"), b"GET", 0),
            (head(b"Content-Length: 10", status=b"HTTP/1.1 304 Not Modified"), b"GET", 0),
            (head(b"Transfer-Encoding: chunked"), b"GET", None),
            (head(b"Transfer-Encoding: chunked", status=b"HTTP/1.1 404 Not Found"), b"POST", None),
            (head(), b"GET", None),
            (head(status=b"HTTP/1.0 200 OK"), b"GET", None),
            (head(b"Content-Length: 3", status=b"HTTP/1.0 200 OK"), b"GET", 3),
        ]
        for data, method, expected in table:
            self.assertEqual(parse(data).bodyLength(method), expected, (data, method))


class RejectionTests(SynchronousTestCase):
    """
    Each malformed head raises L{BadResponseError}, with a message that says
    which rule it broke.
    """

    def assertRejected(self, table: list[bytes], keyword: str) -> None:
        for data in table:
            self.assertEqual(headEnd(data), len(data), data)
            with self.assertRaises(BadResponseError, msg=data) as caught:
                parseHead(data)
            self.assertIn(keyword, str(caught.exception), data)

    def test_version(self) -> None:
        """
        A status line that does not start with exactly C{HTTP/1.0} or
        C{HTTP/1.1} and a space.
        """
        table = [
            b"HTTP/2.0 200 OK",
            b"HTTP/1.2 200 OK",
            b"HTTP/0.9 200 OK",
            b"http/1.1 200 OK",
            b"ICY 200 OK",
            b"HTTP/1 200 OK",
            b"HTTP/1.10 200 OK",
            b" HTTP/1.1 200 OK",
            b"HTTP/1.1\t200 OK",
            b"",
        ]
        self.assertRejected([head(status=status) for status in table], "not HTTP/1.x")

    def test_statusCode(self) -> None:
        """
        A code that is missing or not three ASCII digits from 100 to 999.
        """
        table = [
            b"HTTP/1.1",
            b"HTTP/1.1 ",
            b"HTTP/1.1 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 099 X",
            b"HTTP/1.1 000 X",
            b"HTTP/1.1 2x0 OK",
            b"HTTP/1.1 +20 OK",
            b"HTTP/1.1 -20 OK",
            b"HTTP/1.1 200\tOK",
            b"HTTP/1.1 \xef\xbc\x92\xef\xbc\x90\xef\xbc\x90 OK",
        ]
        self.assertRejected([head(status=status) for status in table], "status code")

    def test_reasonControl(self) -> None:
        """
        A control character other than HTAB in the reason phrase.
        """
        table = [b"O\x00K", b"O\x01K", b"\x1b[31mOK", b"OK\x7f", b"O\x0bK", b"O\x0cK"]
        self.assertRejected(
            [head(status=b"HTTP/1.1 200 " + phrase) for phrase in table], "reason phrase"
        )

    def test_fieldLine(self) -> None:
        """
        A field line that is not C{token ":" value}: no colon, whitespace
        before the colon, an empty name, a name with non-token characters.
        A bare LF inside a value ends the line (RFC 9112 section 2.2), so
        what follows is a line without a colon.
        """
        table = [
            b"X-A b",
            b"X-A : b",
            b"X-A\t: b",
            b": b",
            b"X A: b",
            b"X@A: b",
            b"X(A): b",
            b'X"A: b',
            b"X/A: b",
            b"[X]: b",
            b"X{A}: b",
            b"X,A: b",
            b"X\x00A: b",
            b"X\x7fA: b",
            b"\xc3\x84: b",
            b"X-A: a\nb",
        ]
        self.assertRejected([head(line) for line in table], "field line")

    def test_obsFold(self) -> None:
        """
        A line starting with SP or HTAB (obs-fold, RFC 9112 section 5.2),
        after a field or as the first field line.
        """
        table = [
            head(b"X-A: a", b" b"),
            head(b"X-A: a", b"\tb"),
            head(b"X-A: a", b"  b: c"),
            head(b" X-A: a"),
            head(b"X-A: a", b" "),
            b"HTTP/1.1 200 OK\nX-A: a\n b\n\n",
        ]
        self.assertRejected(table, "obs-fold")

    def test_fieldControl(self) -> None:
        """
        NUL, DEL or any other control character but HTAB in a field value,
        inside it or at its edges.
        """
        table = [b"a\x00b", b"\x00", b"a\x7fb", b"a\x01b", b"a\x08", b"\x0ba", b"a\x0cb", b"a\x1fb"]
        table = [head(b"X-N: " + value) for value in table]
        table.append(head(b"Content-Length: 5\x00"))
        self.assertRejected(table, "control character")

    def test_bareCR(self) -> None:
        """
        A bare CR, as a line end or inside a line, and a CR before CRLF.
        """
        table = [
            b"HTTP/1.1 200 OK\rX-A: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: a\rX-B: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-A: b\r\r\n\r\n",
            b"HTTP/1.1 200 OK\nX-A: a\rb\n\n",
            b"HTTP/1.1 200 O\rK\r\n\r\n",
            # A bare CR, then a bare LF later on: the fuzzing's find.
            b"HTTP/1.1 100 \r0:\n0:\r\n\r\n",
        ]
        self.assertRejected(table, "bare CR")

    def test_leadingEmptyLine(self) -> None:
        """
        A response starting with an empty line: its head is that empty line
        and the next, or that empty line and the status line, so it has no
        status line.
        """
        table = [b"\r\n\r\n", b"\n\n", b"\r\n\n", b"\r\nHTTP/1.1 200 OK\r\n\r\n"]
        self.assertRejected(table, "not HTTP/1.x")

    def test_empty(self) -> None:
        """
        Given only an empty line (which L{headEnd} never returns as a head),
        L{parseHead} refuses it too.
        """
        for data in [b"\r\n", b"\n"]:
            with self.assertRaises(BadResponseError) as caught:
                parseHead(data)
            self.assertIn("empty", str(caught.exception))

    def test_lengthAndCoding(self) -> None:
        """
        Both Content-Length and Transfer-Encoding, in either order, even
        where the body would have no length anyway.
        """
        table = [
            head(b"Content-Length: 5", b"Transfer-Encoding: chunked"),
            head(b"Transfer-Encoding: chunked", b"Content-Length: 5"),
            head(b"transfer-encoding: chunked", b"content-length: 0"),
            head(b"Content-Length: 5", b"Transfer-Encoding: chunked", status=b"HTTP/1.1 304 X"),
        ]
        self.assertRejected(table, "both Content-Length and Transfer-Encoding")

    def test_differingLengths(self) -> None:
        """
        Content-Length values that differ, in two fields or in one list.
        """
        table = [
            head(b"Content-Length: 5", b"Content-Length: 6"),
            head(b"Content-Length: 5", b"X-A: b", b"content-length: 50"),
            head(b"Content-Length: 5, 6"),
            head(b"Content-Length: 5,5,6"),
            head(b"Content-Length: 5,"),
            head(b"Content-Length: ,5"),
            head(b"Content-Length: 5, 05"),
        ]
        self.assertRejected(table, "differing Content-Length")

    def test_malformedLength(self) -> None:
        """
        A Content-Length that is not plain decimal digits (no sign, no hex,
        no inner space, not empty), or has more than 18 digits.
        """
        table = [b"abc", b"-1", b"+5", b"0x5", b"5.0", b"1e3", b"5 5", b"", b"\xd9\xa5", b"1" * 19]
        self.assertRejected(
            [head(b"Content-Length: " + value) for value in table], "malformed Content-Length"
        )

    def test_transferCoding(self) -> None:
        """
        A Transfer-Encoding other than exactly one C{chunked}, across every
        Transfer-Encoding field.
        """
        table = [
            head(b"Transfer-Encoding: gzip, chunked"),
            head(b"Transfer-Encoding: chunked, gzip"),
            head(b"Transfer-Encoding: identity"),
            head(b"Transfer-Encoding: chunked, chunked"),
            head(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
            head(b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"),
            head(b"Transfer-Encoding: chunked,"),
            head(b"Transfer-Encoding: chunked;q=1"),
            head(b"Transfer-Encoding:"),
        ]
        self.assertRejected(table, "unsupported Transfer-Encoding")

    def test_codingOnHTTP10(self) -> None:
        """
        Transfer-Encoding in an HTTP/1.0 response (RFC 9112 section 6.1).
        """
        table = [head(b"Transfer-Encoding: chunked", status=b"HTTP/1.0 200 OK")]
        self.assertRejected(table, "HTTP/1.0")


BODY = (
    b"5;name=value\r\nhello\r\n"
    b'1A;a;b="x y"\r\n0\r\n\r\n\r\nabcdefghijklmnopqrs\r\n'
    b"000b\r\n, world!!\r\n\r\n"
    b"0;last\r\nX-Sum: 42\r\nX-Other:  a b \r\n\r\n"
)
BODY_DATA = b"hello" + b"0\r\n\r\n\r\nabcdefghijklmnopqrs" + b", world!!\r\n"
AFTER = b"HTTP/1.1 200 OK\r\n"


def decode(pieces: list[bytes]) -> tuple[list[bytes], bool, bytes]:
    """
    Feed C{pieces} to a fresh L{ChunkedDecoder}: what it delivered, whether
    it is done, what it returned as following the body.
    """
    delivered: list[bytes] = []
    decoder = ChunkedDecoder(delivered.append)
    rest = b"".join([decoder.feed(piece) for piece in pieces])
    return delivered, decoder.done, rest


class ChunkedDecoderTests(SynchronousTestCase):
    def test_whole(self) -> None:
        """
        A body with extensions, upper- and lower-case hex, leading zeros,
        chunk data that looks like framing, and trailers: the data is
        delivered, the decoder is done, the bytes after are returned.
        """
        delivered, done, rest = decode([BODY + AFTER])
        self.assertEqual(b"".join(delivered), BODY_DATA)
        self.assertTrue(done)
        self.assertEqual(rest, AFTER)

    def test_everySplit(self) -> None:
        """
        Split in two at every point, the same body gives the same data and
        the same rest, never delivers an empty string, and is done only
        once its last byte arrived.
        """
        whole = BODY + AFTER
        for cut in range(len(whole) + 1):
            delivered, done, rest = decode([whole[:cut]])
            self.assertEqual(done, cut >= len(BODY), cut)
            delivered, done, rest = decode([whole[:cut], whole[cut:]])
            self.assertEqual(b"".join(delivered), BODY_DATA, cut)
            self.assertNotIn(b"", delivered, cut)
            self.assertTrue(done, cut)
            self.assertEqual(rest, AFTER, cut)

    def test_byteByByte(self) -> None:
        """
        Fed a byte at a time, the body gives the same data and rest.
        """
        whole = BODY + AFTER
        delivered, done, rest = decode([whole[i : i + 1] for i in range(len(whole))])
        self.assertEqual(b"".join(delivered), BODY_DATA)
        self.assertTrue(done)
        self.assertEqual(rest, AFTER)

    def test_afterDone(self) -> None:
        """
        Once done, whatever is fed comes back untouched.
        """
        delivered, done, rest = decode([b"0\r\n\r\n", b"", b"5\r\nhello\r\n"])
        self.assertEqual((delivered, done, rest), ([], True, b"5\r\nhello\r\n"))

    def test_sizes(self) -> None:
        """
        Sizes are hex, either case, up to 16 digits with leading zeros, and
        may be followed by an extension, even an empty one, on the last
        chunk too.
        """
        table = [
            (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"000000000000000a\r\n0123456789\r\n0000000000000000\r\n\r\n", b"0123456789"),
            (b"1;\r\nx\r\n0;\r\n\r\n", b"x"),
            (b'1;a=" \t";b\r\nx\r\n0\r\n\r\n', b"x"),
            (b"0\r\n\r\n", b""),
        ]
        for body, data in table:
            delivered, done, rest = decode([body])
            self.assertEqual((b"".join(delivered), done, rest), (data, True, b""), body)

    def test_incomplete(self) -> None:
        """
        A body that stops short is neither done nor refused.
        """
        for body in [b"", b"5", b"5\r", b"5\r\nhel", b"5\r\nhello\r", b"0\r\n", b"0\r\nX-A: b\r\n"]:
            _, done, rest = decode([body])
            self.assertEqual((done, rest), (False, b""), body)

    def test_limits(self) -> None:
        """
        The limits are 4 KiB for a chunk-size line and 64 KiB for a head or a
        trailer section.
        """
        self.assertEqual((MAX_CHUNK_LINE, MAX_HEAD), (4096, 65536))

    def test_chunkLineLimit(self) -> None:
        """
        A chunk-size line of C{MAX_CHUNK_LINE} bytes with its CRLF is
        accepted, whole or a byte at a time; one byte more is refused.
        """
        line = b"1;" + b"a" * (MAX_CHUNK_LINE - 4) + b"\r\n"
        self.assertEqual(len(line), MAX_CHUNK_LINE)
        body = line + b"x\r\n0\r\n\r\n"
        for pieces in [[body], [body[i : i + 1] for i in range(len(body))]]:
            self.assertEqual(decode(pieces)[:2], ([b"x"], True))
        longer = b"1;a" + line[2:] + b"x\r\n0\r\n\r\n"
        for pieces in [[longer], [longer[i : i + 1] for i in range(len(longer))]]:
            self.assertRaises(BadResponseError, decode, pieces)

    def test_trailerLimit(self) -> None:
        """
        A trailer section of C{MAX_HEAD} bytes, its empty line included, is
        accepted, whole or in 1000-byte pieces; one byte more is refused.
        """
        line = b"X-A: " + b"a" * 993 + b"\r\n"
        count, extra = divmod(MAX_HEAD - 2, len(line))
        trailers = line * count + b"X-B: " + b"b" * (extra - 7) + b"\r\n\r\n"
        self.assertEqual(len(trailers), MAX_HEAD)
        for body, accepted in [(b"0\r\n" + trailers, True), (b"0\r\nX" + trailers, False)]:
            for size in [len(body), 1000]:
                pieces = [body[i : i + size] for i in range(0, len(body), size)]
                if accepted:
                    self.assertEqual(decode(pieces), ([], True, b""))
                else:
                    self.assertRaises(BadResponseError, decode, pieces)


class ChunkedRejectionTests(SynchronousTestCase):
    """
    Each malformed chunked body raises L{BadResponseError}, whole or a byte at
    a time, with a message that says which rule it broke.
    """

    def assertRejected(self, table: list[bytes], keyword: str, byteByByte: bool = True) -> None:
        for body in table:
            splits = [[body]]
            if byteByByte:
                splits.append([body[i : i + 1] for i in range(len(body))])
            for pieces in splits:
                with self.assertRaises(BadResponseError, msg=body) as caught:
                    decode(pieces)
                self.assertIn(keyword, str(caught.exception), body)

    def test_size(self) -> None:
        """
        A size that is not 1 to 16 hex digits: non-hex, empty, signed,
        C{0x}, a leading space, trailing whitespace without an extension,
        17 digits, a bare LF as its line end.
        """
        table = [
            b"g\r\nx\r\n0\r\n\r\n",
            b"\r\n0\r\n\r\n",
            b";a\r\n0\r\n\r\n",
            b"-1\r\nx\r\n0\r\n\r\n",
            b"+1\r\nx\r\n0\r\n\r\n",
            b"0x1\r\nx\r\n0\r\n\r\n",
            b" 1\r\nx\r\n0\r\n\r\n",
            b"1 \r\nx\r\n0\r\n\r\n",
            b"1\t\r\nx\r\n0\r\n\r\n",
            b"0" * 16 + b"1\r\nx\r\n0\r\n\r\n",
            b"1\nx\r\n0\r\n\r\n",
            b"1\rx\r\n0\r\n\r\n",
        ]
        self.assertRejected(table, "chunk size")

    def test_extensionControl(self) -> None:
        """
        A control character other than HTAB in a chunk extension.
        """
        table = [b"1;a\x00\r\nx\r\n0\r\n\r\n", b"1;a\rb\r\nx\r\n0\r\n\r\n", b"0;\x7f\r\n\r\n"]
        self.assertRejected(table, "chunk extension")

    def test_dataEnd(self) -> None:
        """
        Chunk data not followed by exactly CRLF: something else, a bare LF,
        more data than the size said.
        """
        table = [
            b"1\r\nxy\r\n0\r\n\r\n",
            b"1\r\nx\n0\r\n\r\n",
            b"1\r\nx\r0\r\n\r\n",
            b"1\r\nx0\r\n\r\n",
            b"5\r\nhello world\r\n0\r\n\r\n",
        ]
        self.assertRejected(table, "no CRLF after a chunk")

    def test_chunkLineTooLong(self) -> None:
        """
        A chunk-size line over C{MAX_CHUNK_LINE} with no CRLF yet.
        """
        self.assertRejected([b"1;" + b"a" * MAX_CHUNK_LINE], "chunk-size line")
        self.assertRejected([b"1" * MAX_CHUNK_LINE], "chunk-size line")

    def test_trailerField(self) -> None:
        """
        A trailer that is not a well-formed field line: a control character,
        obs-fold, no colon, a bare LF line end.
        """
        self.assertRejected(
            [b"0\r\nX-A: a\x00b\r\n\r\n", b"0\r\nX-A: b\n\r\n"], "control character"
        )
        self.assertRejected([b"0\r\nX-A: a\r\n b\r\n\r\n"], "obs-fold")
        self.assertRejected([b"0\r\nX-A b\r\n\r\n", b"0\r\nX-A : b\r\n\r\n"], "field line")

    def test_trailersTooLong(self) -> None:
        """
        A trailer section over C{MAX_HEAD}: one endless line, or many
        complete ones.
        """
        table = [
            b"0\r\nX-A: " + b"a" * MAX_HEAD,
            b"0\r\n" + b"X-A: b\r\n" * (MAX_HEAD // 8 + 1) + b"\r\n",
        ]
        self.assertRejected(table, "trailer section", byteByByte=False)


# Differential fuzzing against h11.
#
# The generators build response heads and chunked bodies piece by piece
# (status line, each field line, each line end; each chunk's size, extension
# and ends, each trailer).  Every piece has a clean strategy, which keeps the
# piece well-formed, and a wild one, which mixes in the malformed shapes:
# other versions, codes and phrases; non-token names; values with CTLs, NUL,
# DEL, CR, LF and obs-text; SP/HTAB at the edges; whitespace before the
# colon; obs-fold; good and bad framing fields in every combination; bare-LF,
# bare-CR and CR CR LF line ends.  A head or body is all clean, all wild, or
# clean with one wild piece, so that both the accepting and the refusing
# paths get many examples.  Both parsers get the same bytes.

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CLEAN = [b"a", b"Z", b"5", b"0", b",", b";", b"=", b'"', b":", b"/", b" ", b"\t", b"\x80", b"\xff"]
_DIRTY = [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f", b"\x7f", b"\r", b"\n"]
_CLEAN_VALUES = st.lists(st.sampled_from(_CLEAN), max_size=6).map(b"".join)
_WILD_VALUES = st.lists(st.sampled_from(_CLEAN + _DIRTY), min_size=1, max_size=6).map(b"".join)
_TOKENS = st.one_of(
    st.text(_TCHAR, min_size=1, max_size=5).map(str.encode),
    st.sampled_from([b"Server", b"Set-Cookie", b"X-N", b"ETag"]),
)
_CLEAN_FRAMING = st.one_of(
    st.tuples(
        st.sampled_from([b"Content-Length", b"content-length"]),
        st.sampled_from([b"5", b"05", b"0", b"5, 5", b"5,5", b"9" * 18]),
    ),
    st.tuples(
        st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]),
        st.sampled_from([b"chunked", b"Chunked"]),
    ),
    st.tuples(
        st.sampled_from([b"Connection", b"connection"]),
        st.sampled_from([b"close", b"Keep-Alive", b"upgrade, close", b"x, ,y"]),
    ),
).map(b": ".join)
_WILD_FRAMING = st.one_of(
    st.tuples(
        st.sampled_from([b"Content-Length", b"CONTENT-LENGTH"]),
        st.sampled_from(
            [b"5, 6", b"5, 05", b"+5", b"-1", b"0x5", b"", b"5,", b"5 5", b"9" * 19, b"9" * 21]
        ),
    ),
    st.tuples(
        st.sampled_from([b"Transfer-Encoding", b"TRANSFER-ENCODING"]),
        st.sampled_from(
            [
                b"gzip, chunked",
                b"chunked, gzip",
                b"identity",
                b"chunked, chunked",
                b"",
                b"chunked,",
                b"chunked;q=1",
            ]
        ),
    ),
).map(b": ".join)
_PLAIN_FIELDS = st.tuples(_TOKENS, st.sampled_from([b":", b": ", b":\t", b":  "]), _CLEAN_VALUES)
# One field in four is a framing or Connection field.
_CLEAN_FIELDS = st.one_of(
    _PLAIN_FIELDS.map(b"".join),
    _PLAIN_FIELDS.map(b"".join),
    _PLAIN_FIELDS.map(b"".join),
    _CLEAN_FRAMING,
)
_WILD_FIELDS = st.one_of(
    # Names that are mostly not tokens: empty, SP, separators, CTLs, obs-text.
    st.tuples(st.binary(min_size=1, max_size=3), st.just(b":"), _CLEAN_VALUES).map(b"".join),
    st.tuples(_TOKENS, st.sampled_from([b" :", b"\t:", b""]), _CLEAN_VALUES).map(b"".join),
    st.tuples(_TOKENS, st.just(b": "), _WILD_VALUES).map(b"".join),
    _WILD_FRAMING,
    # obs-fold.
    st.tuples(st.sampled_from([b" ", b"\t"]), _CLEAN_VALUES).map(b"".join),
)
_CLEAN_EOLS = st.sampled_from([b"\r\n", b"\r\n", b"\n"])
_WILD_EOLS = st.sampled_from([b"\r", b"\r\r\n", b"\n\r", b"\x00\r\n"])
_CLEAN_STATUS = st.tuples(
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
    st.one_of(
        st.integers(100, 599).map(b"%d".__mod__),
        st.sampled_from([b"101", b"204", b"304", b"999"]),
    ),
    st.one_of(st.none(), _CLEAN_VALUES),
).map(lambda t: t[0] + b" " + t[1] + (b"" if t[2] is None else b" " + t[2]))
_WILD_STATUS = st.tuples(
    st.sampled_from(
        [
            b"HTTP/1.1",
            b"HTTP/2.0",
            b"HTTP/1.2",
            b"HTTP/0.9",
            b"HTTP/9.9",
            b"http/1.1",
            b"ICY",
            b"HTTP/1",
            b"",
        ]
    ),
    st.sampled_from([b" ", b" ", b"", b"  ", b"\t"]),
    st.sampled_from([b"200", b"101", b"099", b"000", b"20", b"2000", b"2x0", b""]),
    st.one_of(st.none(), _WILD_VALUES),
).map(lambda t: t[0] + t[1] + t[2] + (b"" if t[3] is None else b" " + t[3]))


def _mode(draw: st.DrawFn, pieces: int) -> Callable[[int], bool]:
    """
    Pick how wild a generated message is: whether each of its C{pieces}
    pieces, by index, is wild.
    """
    mode = draw(st.sampled_from(["clean", "clean", "one", "wild"]))
    bad = draw(st.integers(0, pieces - 1))
    return lambda index: mode == "wild" or (mode == "one" and index == bad)


@st.composite
def _heads(draw: st.DrawFn) -> bytes:
    """
    A response head ending with an empty line (or, with bare-CR line ends,
    maybe not ending at all), maybe followed by body bytes.
    """
    count = draw(st.integers(0, 5))
    wild = _mode(draw, 2 * count + 2)
    data = draw(_WILD_STATUS if wild(0) else _CLEAN_STATUS)
    data += draw(_WILD_EOLS if wild(1) else _CLEAN_EOLS)
    for index in range(2, 2 * count + 2, 2):
        data += draw(_WILD_FIELDS if wild(index) else _CLEAN_FIELDS)
        data += draw(_WILD_EOLS if wild(index + 1) else _CLEAN_EOLS)
    return data + draw(st.sampled_from([b"\r\n", b"\n"])) + draw(st.sampled_from([b"", b"body"]))


def _h11Response(data: bytes) -> tuple[object, bytes]:
    """
    What h11, as a client that sent a GET, makes of C{data} as the start of
    the response: the event (or the L{h11.RemoteProtocolError}) and the bytes
    it has not consumed.  When the code is 101 the GET offered an upgrade,
    since h11 refuses a 101 that was not asked for (txlb's client refuses
    it a level above the parser).
    """
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    fields = [(b"Host", b"backend")]
    if data[9:12] == b"101":
        fields += [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")]
    connection.send(h11.Request(method=b"GET", target=b"/", headers=fields))
    connection.send(h11.EndOfMessage())
    connection.receive_data(data)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError as e:
        return e, data
    return event, connection.trailing_data[0]


def _asH11(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """
    txlb's fields as h11 presents them.  h11's C{raw_items()} keeps names as
    sent, so names are compared exactly, not lower-cased.  The only
    normalisations are h11's own:
      - only the first Content-Length field is kept, and its value is the
        one number a list repeats (C{"5, 5"} becomes C{"5"});
      - a Transfer-Encoding value is lower-cased.
    """
    result = []
    seenLength = False
    for name, value in fields:
        lower = name.lower()
        if lower == b"content-length":
            if seenLength:
                continue
            seenLength = True
            value = value.split(b",")[0].strip()
        elif lower == b"transfer-encoding":
            value = value.lower()
        result.append((name, value))
    return result


#: Control characters h11 allows in a field value or reason phrase (it only
#: refuses NUL and whitespace other than SP and HTAB) and txlb does not.
_H11_ONLY_CONTROL = re.compile(rb"[\x01-\x08\x0e-\x1f\x7f]")


def _stricterRules(data: bytes, event: h11.InformationalResponse | h11.Response) -> dict[str, str]:
    """
    The documented rules by which txlb refuses a head h11 accepts (as
    C{event}), each with the keyword of txlb's message for it.  h11 also
    refuses whitespace before a colon, a Transfer-Encoding other than one
    C{chunked}, differing Content-Lengths and bare CRs, so those are not
    here.
    """
    lines = [line.rstrip(b"\r") for line in data[: headEnd(data)].split(b"\n")[:-2]]
    rules = {}
    if lines[0][:8] not in (b"HTTP/1.0", b"HTTP/1.1"):
        rules["a version other than HTTP/1.0 and HTTP/1.1"] = "not HTTP/1.x"
    if any(line[:1] in (b" ", b"\t") for line in lines[1:]):
        rules["obs-fold"] = "obs-fold"
    if _H11_ONLY_CONTROL.search(lines[0][12:]):
        rules["a control character in the reason phrase"] = "reason phrase"
    if any(_H11_ONLY_CONTROL.search(line) for line in lines[1:]):
        rules["a control character in a field"] = "control character"
    names = {name for name, _ in event.headers}
    if {b"content-length", b"transfer-encoding"} <= names:
        rules["both Content-Length and Transfer-Encoding"] = "both"
    if b"transfer-encoding" in names and event.http_version == b"1.0":
        rules["Transfer-Encoding in HTTP/1.0"] = "HTTP/1.0"
    if any(name == b"content-length" and len(value) > 18 for name, value in event.headers):
        rules["a Content-Length over 18 digits"] = "malformed Content-Length"
    return rules


class H11HeadTests(SynchronousTestCase):
    """
    The heads txlb accepts are the heads h11 accepts, less documented
    stricter rules.
    """

    @FUZZ
    @given(_heads())
    def test_acceptedMeansSame(self, data: bytes) -> None:
        """
        Whenever txlb accepts a head, h11 accepts it too, as an interim or
        final response with the same version, code, reason phrase and
        fields (after h11's normalisations, see L{_asH11}), ending at the
        same byte, with the same body framing for a GET and the same
        persistence (but for HTTP/1.0 keep-alive, which h11 does not do).
        """
        end = headEnd(data)
        if end < 0:
            return
        try:
            parsed = parseHead(data[:end])
        except BadResponseError:
            return
        event, rest = _h11Response(data)
        expected = h11.InformationalResponse if parsed.code < 200 else h11.Response
        self.assertIsInstance(event, expected, data)
        assert isinstance(event, (h11.InformationalResponse, h11.Response))
        self.assertEqual(b"HTTP/" + event.http_version, parsed.version)
        self.assertEqual(event.status_code, parsed.code)
        self.assertEqual(event.reason, parsed.phrase)
        self.assertEqual(event.headers.raw_items(), _asH11(parsed.fields))
        self.assertEqual(rest, data[end:])
        if isinstance(event, h11.InformationalResponse):
            self.assertEqual(parsed.bodyLength(b"GET"), 0)
            return
        framing, arguments = _body_framing(b"GET", event)
        if framing == "content-length":
            self.assertEqual(parsed.bodyLength(b"GET"), arguments[0])
        else:
            self.assertEqual(parsed.bodyLength(b"GET"), None)
            self.assertEqual(parsed.chunked, framing == "chunked")
        if parsed.version == b"HTTP/1.1":
            self.assertEqual(parsed.keepAlive(), _keep_alive(event))
        else:
            # h11 never reuses an HTTP/1.0 connection; txlb does when its
            # Connection says keep-alive and not close.
            tokens = {
                token.strip().lower()
                for name, value in event.headers
                if name == b"connection"
                for token in value.split(b",")
            }
            self.assertEqual(parsed.keepAlive(), b"keep-alive" in tokens and b"close" not in tokens)

    @FUZZ
    @given(_heads())
    def test_refusedOnlyByRule(self, data: bytes) -> None:
        """
        Whenever h11 accepts a head txlb refuses, one of the documented
        stricter rules applies to it (checked on the bytes, see
        L{_stricterRules}), and txlb's message names one that applies.
        """
        event, _ = _h11Response(data)
        if not isinstance(event, (h11.InformationalResponse, h11.Response)):
            return
        try:
            parseHead(data[: headEnd(data)])
        except BadResponseError as e:
            rules = _stricterRules(data, event)
            self.assertTrue(rules, (data, e))
            self.assertTrue(any(keyword in str(e) for keyword in rules.values()), (data, e, rules))


_CLEAN_EXTENSIONS = st.one_of(
    st.just(b""),
    st.lists(
        st.sampled_from([b";a", b";a=b", b';a="q q"', b";", b";a=\t", b";\x80"]), max_size=3
    ).map(b"".join),
)
_WILD_EXTENSIONS = st.lists(
    st.sampled_from([b";a", b" ", b"\t", b"\x00", b"\x01", b"\x7f", b"\r", b"\n"]),
    min_size=1,
    max_size=3,
).map(b"".join)
_CLEAN_SIZES = st.sampled_from([b"%x", b"%x", b"%X", b"00%x", b"000000000000000%x"])
_WILD_SIZES = st.sampled_from([b"0000000000000000%x", b" %x", b"0x%x", b"-%x", b"%x ", b"g%x"])
_CLEAN_TRAILERS = st.tuples(_TOKENS, st.sampled_from([b":", b": "]), _CLEAN_VALUES).map(b"".join)


@st.composite
def _chunkedBodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """
    A chunked body, maybe followed by other bytes, and whether a chunk-size
    line has BWS before C{;} (RFC 9112 allows it, h11 does not).
    """
    chunks = draw(st.lists(st.binary(min_size=1, max_size=12), max_size=3))
    trailers = draw(st.integers(0, 3))
    # Per chunk (the last, empty one included): size, wrong size, BWS,
    # extension, size line end, data end; per trailer: line, line end.
    wild = _mode(draw, 6 * (len(chunks) + 1) + 2 * trailers)
    body = b""
    bws = False
    for index, data in enumerate([*chunks, b""]):
        index *= 6
        size = len(data) + (draw(st.sampled_from([1, -1])) if wild(index + 1) else 0)
        space = draw(st.sampled_from([b" ", b"\t"])) if wild(index + 2) else b""
        extension = draw(_WILD_EXTENSIONS if wild(index + 3) else _CLEAN_EXTENSIONS)
        line = draw(_WILD_SIZES if wild(index) else _CLEAN_SIZES) % max(size, 0) + space + extension
        bws = bws or re.match(rb"[0-9A-Fa-f]+[ \t]+;", line) is not None
        body += line
        body += draw(st.sampled_from([b"\n", b"\r", b""]) if wild(index + 4) else st.just(b"\r\n"))
        if data:
            body += data
            body += draw(
                st.sampled_from([b"\n", b"", b"\r\r\n", b"x\r\n"])
                if wild(index + 5)
                else st.just(b"\r\n")
            )
    for index in range(6 * (len(chunks) + 1), 6 * (len(chunks) + 1) + 2 * trailers, 2):
        body += draw(_WILD_FIELDS if wild(index) else _CLEAN_TRAILERS)
        body += draw(_WILD_EOLS if wild(index + 1) else st.just(b"\r\n"))
    return body + b"\r\n" + draw(st.sampled_from([b"", b"", AFTER, b"0\r\n\r\n"])), bws


def _txlbChunked(pieces: list[bytes]) -> tuple[object, ...]:
    """
    What txlb makes of a chunked body fed as C{pieces}: C{(done, data,
    rest)} or C{("error", message)}.
    """
    try:
        delivered, done, rest = decode(pieces)
    except BadResponseError as e:
        return ("error", str(e))
    return (done, b"".join(delivered), rest)


def _h11Chunked(body: bytes) -> tuple[object, ...]:
    """
    What h11, as a client reading a chunked response to a GET, makes of
    C{body}: C{(done, data, rest)} or C{("error", message)}.
    """
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    connection.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"backend")]))
    connection.send(h11.EndOfMessage())
    connection.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    data = b""
    try:
        assert isinstance(connection.next_event(), h11.Response)
        while True:
            event = connection.next_event()
            if isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                return (True, data, connection.trailing_data[0])
            else:
                return (False, data, b"")
    except h11.RemoteProtocolError as e:
        return ("error", str(e))


#: h11's chunk-size line (its C{chunk_header}): up to 20 hex digits, an
#: extension that is anything but LF, trailing whitespace.
_H11_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(;[^\n]*)?([ \t]*)\r\n")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: The rule for a trailer section ended by a bare-LF empty line, which txlb
#: does not see as an empty line.
_BARE_LF_END = "a bare LF as the trailer section's empty line"


def _chunkStricterRules(body: bytes) -> dict[str, str]:
    """
    The documented rules by which txlb refuses a chunked body h11 accepts,
    found by walking C{body} as h11 does, each with the keyword of txlb's
    message for it.  h11 also refuses a bad size, data not followed by CRLF
    and malformed trailer lines, so those are not here.
    """
    rules = {}
    position = 0
    while True:
        end = body.index(b"\r\n", position) + 2
        header = _H11_CHUNK_LINE.fullmatch(body, position, end)
        assert header is not None
        if len(header.group(1)) > 16:
            rules["a chunk size over 16 hex digits"] = "chunk size"
        if header.group(3) and not header.group(2):
            rules["whitespace after a chunk size without an extension"] = "chunk size"
        if _CONTROL.search(header.group(2) or b""):
            rules["a control character in a chunk extension"] = "chunk extension"
        size = int(header.group(1), 16)
        if not size:
            break
        position = end + size + 2
    # The trailer section, split as h11 splits it: its lines (each with
    # its CR, if any) and the empty line that ends it.
    section = body[end:]
    if section[:1] == b"\n":
        lines, empty = [], b"\n"
    elif section[:2] == b"\r\n":
        lines, empty = [], b"\r\n"
    else:
        last = re.search(rb"\n\r?\n", section)
        assert last is not None
        lines, empty = section[: last.start()].split(b"\n"), last.group()[1:]
    if empty == b"\n":
        rules[_BARE_LF_END] = "field line"
    for line in lines:
        if not line.endswith(b"\r"):
            rules["a bare LF ending a trailer line"] = "control character"
        if line[:1] in (b" ", b"\t"):
            rules["obs-fold in the trailers"] = "obs-fold"
        if _H11_ONLY_CONTROL.search(line):
            rules["a control character in a trailer"] = "control character"
        if re.match(rb"(?i)(content-length|transfer-encoding):", line):
            rules["a framing field in the trailers"] = "trailer section"
    return rules


class H11ChunkedTests(SynchronousTestCase):
    @FUZZ
    @given(_chunkedBodies(), st.data())
    def test_acceptedMeansSame(self, generated: tuple[bytes, bool], draw: st.DataObject) -> None:
        """
        However a chunked body is split, txlb makes the same of it (the same
        data, rest and completeness, or the same error) as when it arrives
        whole; and whenever txlb completes it, h11 also does, with the same
        data and the same bytes left after it.
        """
        body, _bws = generated
        whole = _txlbChunked([body])
        cuts = [0, *sorted(draw.draw(st.lists(st.integers(0, len(body)), max_size=4))), len(body)]
        pieces = [body[cuts[i] : cuts[i + 1]] for i in range(len(cuts) - 1)]
        self.assertEqual(_txlbChunked(pieces), whole, (body, cuts))
        if whole[0] is not True:
            return
        reference = _h11Chunked(body)
        self.assertEqual(reference, whole, body)

    @FUZZ
    @given(_chunkedBodies())
    def test_refusedOnlyByRule(self, generated: tuple[bytes, bool]) -> None:
        """
        Whenever h11 completes a chunked body txlb refuses or still waits
        on, one of the documented stricter rules applies to it (checked on
        the bytes, see L{_chunkStricterRules}), and txlb's message names one
        that applies (or, if it waits, the trailer section ended with a bare
        LF).
        """
        body, _ = generated
        if _h11Chunked(body)[0] is not True:
            return
        verdict = _txlbChunked([body])
        if verdict[0] is True:
            return
        rules = _chunkStricterRules(body)
        if verdict[0] is False:
            self.assertIn(_BARE_LF_END, rules, body)
        else:
            message = verdict[1]
            assert isinstance(message, str)
            self.assertTrue(
                any(keyword in message for keyword in rules.values()), (body, message, rules)
            )


class FramingAsH11Tests(SynchronousTestCase):
    """
    Response framing refused as h11 refuses it, beyond what the differential
    tests above generate.
    """

    def test_lengthSpelledTwoWays(self) -> None:
        """
        Content-Length fields giving one number spelled two ways (C{5} and
        C{05}) are refused, as one list C{5, 05} already is, and as h11
        does.
        """
        with self.assertRaises(BadResponseError) as caught:
            parseHead(head(b"Content-Length: 5", b"Content-Length: 05"))
        self.assertIn("differing Content-Length", str(caught.exception))

    def test_extensionBWS(self) -> None:
        """
        Whitespace between a chunk size and C{;} is refused, as h11 does.
        """
        for body in [b"1 ;a\r\nx\r\n0\r\n\r\n", b"1\t;a\r\nx\r\n0\r\n\r\n"]:
            self.assertRaises(BadResponseError, decode, [body])

    def test_framingTrailers(self) -> None:
        """
        Content-Length or Transfer-Encoding in the trailers is refused
        (RFC 9110 section 6.5.1: framing fields are not allowed there).
        """
        for trailer in [b"Content-Length: x", b"Content-Length: 5", b"Transfer-Encoding: gzip"]:
            body = b"0\r\n" + trailer + b"\r\n\r\n"
            with self.assertRaises(BadResponseError) as caught:
                decode([body])
            self.assertIn("trailer", str(caught.exception))

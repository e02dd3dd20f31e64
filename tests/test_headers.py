"""
The header rules, table by table.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from txlb.headers import dropToClient, forClient, toBackend, toClient, tokens, trailersToBackend


def headers(*pairs: tuple[bytes, bytes]) -> Headers:
    made = Headers()
    for name, value in pairs:
        made.addRawHeader(name, value)
    return made


def pairs(made: Headers) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, values in made.getAllRawHeaders() for value in values]


class TokensTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Tokens are split on commas across repeated fields, trimmed,
        lower-cased, empty ones dropped.
        """
        table = [
            ([], frozenset()),
            ([b"close"], {b"close"}),
            ([b"Keep-Alive, X-Foo"], {b"keep-alive", b"x-foo"}),
            ([b"a,,b ,", b" C"], {b"a", b"b", b"c"}),
        ]
        for values, expected in table:
            given = headers(*[(b"Connection", value) for value in values])
            self.assertEqual(tokens(given, b"connection"), expected, values)


class ToBackendTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: what the client sent, what the backend gets.
        """
        table = [
            # End-to-end fields pass with every repeated value, in order.
            (
                [(b"Cookie", b"a=1"), (b"Cookie", b"b=2"), (b"Host", b"Example.COM:8080")],
                [(b"Cookie", b"a=1"), (b"Cookie", b"b=2"), (b"Host", b"Example.COM:8080")],
            ),
            # The fixed hop-by-hop fields go.
            (
                [
                    (b"Connection", b"keep-alive"),
                    (b"Keep-Alive", b"timeout=5"),
                    (b"Proxy-Connection", b"keep-alive"),
                    (b"TE", b"gzip"),
                    (b"Transfer-Encoding", b"chunked"),
                    (b"Upgrade", b"websocket"),
                    (b"Accept", b"*/*"),
                ],
                [(b"Accept", b"*/*")],
            ),
            # Trailer passes: it announces the trailer fields, which pass
            # too after a chunked body (RFC 9110 section 6.6.2).
            (
                [(b"Trailer", b"X-Sum"), (b"TE", b"trailers")],
                [(b"Trailer", b"X-Sum"), (b"TE", b"trailers")],
            ),
            # So does every field Connection names, in any case.
            (
                [
                    (b"Connection", b"X-Secret, x-other"),
                    (b"X-Secret", b"1"),
                    (b"X-Other", b"2"),
                    (b"X-Kept", b"3"),
                ],
                [(b"X-Kept", b"3")],
            ),
            # Host cannot be named away: a request must carry it.
            ([(b"Host", b"h"), (b"Connection", b"host")], [(b"Host", b"h")]),
            # TE: trailers survives, on its own.
            ([(b"TE", b"trailers, deflate"), (b"Connection", b"TE")], [(b"TE", b"trailers")]),
            # Content-Length is the backend client's to write.
            (
                [(b"Content-Length", b"5"), (b"Content-Type", b"text/plain")],
                [(b"Content-Type", b"text/plain")],
            ),
            # Forwarding fields are end-to-end: they pass as sent.
            (
                [
                    (b"X-Forwarded-For", b"1.2.3.4"),
                    (b"Forwarded", b"for=1.2.3.4"),
                    (b"Via", b"1.1 a"),
                ],
                [
                    (b"X-Forwarded-For", b"1.2.3.4"),
                    (b"Forwarded", b"for=1.2.3.4"),
                    (b"Via", b"1.1 a"),
                ],
            ),
            ([], []),
        ]
        for sent, expected in table:
            self.assertEqual(sorted(toBackend(headers(*sent))), sorted(expected), sent)

    def test_inputUnchanged(self) -> None:
        """
        The client's headers are copied, not changed in place.
        """
        sent = headers((b"Connection", b"close"), (b"Accept", b"*/*"))
        toBackend(sent)
        self.assertEqual(pairs(sent), [(b"Connection", b"close"), (b"Accept", b"*/*")])


class TrailersToBackendTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: the head's fields, the trailer fields the client sent,
        what the backend gets after the last chunk: every field in order
        and spelling, less the hop-by-hop ones and those the head's
        Connection names.
        """
        table = [
            ([], [], []),
            (
                [(b"Host", b"h")],
                [(b"X-Sum", b"1"), (b"x-sum", b"2"), (b"Server-Timing", b"db;dur=53")],
                [(b"X-Sum", b"1"), (b"x-sum", b"2"), (b"Server-Timing", b"db;dur=53")],
            ),
            (
                [(b"Host", b"h")],
                [
                    (b"Connection", b"close"),
                    (b"Keep-Alive", b"timeout=5"),
                    (b"Proxy-Connection", b"close"),
                    (b"TE", b"trailers"),
                    (b"Trailer", b"X-A"),
                    (b"Upgrade", b"websocket"),
                    (b"X-A", b"1"),
                ],
                [(b"X-A", b"1")],
            ),
            (
                [(b"Connection", b"X-Hop, keep-alive")],
                [(b"x-hop", b"1"), (b"X-End", b"2")],
                [(b"X-End", b"2")],
            ),
        ]
        for head, trailers, expected in table:
            self.assertEqual(trailersToBackend(headers(*head), trailers), expected, trailers)


class ToClientTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: the backend's response fields, the tokens of its
        Connection field, what the client gets.
        """
        table = [
            (
                [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Set-Cookie", b"c=3")],
                frozenset(),
                [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"), (b"Set-Cookie", b"c=3")],
            ),
            (
                [(b"Server", b"nginx"), (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT")],
                frozenset(),
                [(b"Server", b"nginx"), (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT")],
            ),
            # Trailer describes the hop's chunked framing.
            (
                [(b"Trailer", b"X-Sum"), (b"Content-Encoding", b"gzip")],
                frozenset(),
                [(b"Content-Encoding", b"gzip")],
            ),
            # The framing is the proxy's to write.
            (
                [(b"Content-Length", b"1234"), (b"Transfer-Encoding", b"chunked")],
                frozenset(),
                [],
            ),
            # Connection goes, and so do the fields it names, in any case.
            (
                [
                    (b"Connection", b"X-Hop, keep-alive"),
                    (b"x-hop", b"1"),
                    (b"Keep-Alive", b"timeout=5"),
                    (b"X-Kept", b"2"),
                ],
                frozenset({b"x-hop", b"keep-alive"}),
                [(b"X-Kept", b"2")],
            ),
            # Names keep their case and the fields their order.
            (
                [(b"x-b", b"1"), (b"X-A", b"2"), (b"x-b", b"3")],
                frozenset(),
                [(b"x-b", b"1"), (b"X-A", b"2"), (b"x-b", b"3")],
            ),
        ]
        for sent, connection, expected in table:
            self.assertEqual(toClient(sent, connection), expected, sent)

    def test_forClient(self) -> None:
        """
        L{forClient} keeps what L{toClient} keeps, and says in the same pass
        whether a C{Date} is kept and what values the watched field had.
        """
        drop = dropToClient([b"X-Txlb-Load"])
        table = [
            ([(b"Server", b"nginx"), (b"dAtE", b"Mon")], frozenset(), True, []),
            ([(b"Dates", b"no"), (b"X-Txlb-Load", b"0.5")], frozenset(), False, [b"0.5"]),
            (
                [(b"x-txlb-load", b"1"), (b"Connection", b"keep-alive"), (b"X-TXLB-LOAD", b"2")],
                frozenset({b"keep-alive"}),
                False,
                [b"1", b"2"],
            ),
            (
                [(b"Connection", b"Date, X-Hop"), (b"Date", b"Mon"), (b"x-hop", b"1"), (b"X", b"")],
                frozenset({b"date", b"x-hop"}),
                False,
                [],
            ),
            (
                [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked"), (b"TE", b"x")],
                frozenset({b"close"}),
                False,
                [],
            ),
        ]
        for sent, connection, dated, loads in table:
            self.assertEqual(
                forClient(sent, connection, drop, b"x-txlb-load"),
                (toClient(sent, connection, drop), dated, loads),
                sent,
            )

    def test_toClientDropsMore(self) -> None:
        """
        The names L{dropToClient} adds (the load header) go too, in any
        case, beside the hop-by-hop ones and those C{Connection} names.
        """
        sent = [
            (b"X-Txlb-Load", b"0.5"),
            (b"x-txlb-load", b"cpu=1"),
            (b"X-Hop", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"X-Kept", b"2"),
        ]
        drop = dropToClient([b"X-Txlb-Load"])
        self.assertEqual(toClient(sent, frozenset({b"x-hop"}), drop), [(b"X-Kept", b"2")])
        self.assertEqual(len(toClient(sent, frozenset())), 4)

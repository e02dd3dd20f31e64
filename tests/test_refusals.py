"""
Requests refused on the client connection, whoever refused them: the bytes
the client gets, the access-log line with its error and flag, and the
counts, in memory; and the head checks as tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from tests.helpers import OK, OK_TO_CLIENT, Harness
from txlb import refusals
from txlb.outcome import CLIENT_PROTOCOL_ERROR
from txlb.refusals import Refusal

ARROW = "\N{RIGHTWARDS ARROW}"


def answer(status: bytes) -> bytes:
    """
    The whole answer of a refusal with C{status}.
    """
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def accessEvents(harness: Harness) -> list[dict[str, Any]]:
    """
    The access-log events, with their keyword fields.
    """
    return [
        event
        for event in harness.events
        if event.get("log_namespace") == "txlb.proxy.LoadBalancerResource" and "flag" in event
    ]


class RefusedTestCase(SynchronousTestCase):
    """
    Tests of requests refused before they reach a backend.
    """

    def assertRefused(
        self,
        request: bytes,
        status: bytes,
        line: str,
        reason: str,
        flag: str = CLIENT_PROTOCOL_ERROR,
        **settings: Any,
    ) -> Harness:
        """
        Send C{request} and check that it is refused at once, before any
        backend: the client gets C{status} and the connection closes; the
        one access-log line is C{line}, with C{flag}; and the refusal is
        counted under C{reason}, and in the requests by status.
        """
        harness = Harness(self, **settings)
        _, client = harness.client(request)
        self.assertEqual(client.value(), answer(status))
        self.assertTrue(client.disconnecting)
        self.assertEqual(harness.reactor.tcpClients, [])
        events = accessEvents(harness)
        self.assertEqual([formatEvent(event) for event in events], [line])
        self.assertEqual(events[0]["flag"], flag)
        metrics = harness.resource.metrics.exposition()
        self.assertIn(b'txlb_client_refusals_total{reason="%s"} 1.0\n' % reason.encode(), metrics)
        self.assertIn(
            b'txlb_requests_total{backend="-",code="%s",pool="-"} 1.0\n' % status[:3],
            metrics,
        )
        return harness


class LineEndingTests(RefusedTestCase):
    """
    Lines must end with CRLF; a bare LF or a stray CR gets 400 at once.
    """

    def test_bareLF(self) -> None:
        """
        A request whose lines all end with a bare LF gets 400 at once, not a
        408 when the head deadline passes.
        """
        harness = self.assertRefused(
            b"GET / HTTP/1.1\nHost: h\n\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=- path=- {ARROW} backend=- status=400 ms=0.0"
            ' error="a line ended by a bare LF"',
            refusals.LINE_ENDING,
        )
        harness.reactor.advance(60)
        self.assertEqual(len(accessEvents(harness)), 1)

    def test_bareLFAfterRequestLine(self) -> None:
        """
        A header line ended by a bare LF gets 400, and the log line has the
        request's method and target.
        """
        self.assertRefused(
            b"GET /a HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=GET path=/a {ARROW} backend=- status=400 ms=0.0"
            ' error="a line ended by a bare LF"',
            refusals.LINE_ENDING,
        )

    def test_lineFeedHidingAField(self) -> None:
        """
        A field hidden after a bare LF inside another field's line, which
        Twisted 26.4 would take as part of the value and a lenient parser
        as a field of its own, is refused.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: h\r\nX: a\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 3\r\n\r\n0\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=POST path=/ {ARROW} backend=- status=400 ms=0.0"
            ' error="a line ended by a bare LF"',
            refusals.LINE_ENDING,
        )

    def test_bareCR(self) -> None:
        """
        A CR inside a line gets 400 (Twisted 26.4 would have made it a
        space).
        """
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=400 ms=0.0"
            ' error="a CR not followed by LF"',
            refusals.LINE_ENDING,
        )

    def test_afterAnswer(self) -> None:
        """
        A kept-alive client whose next request ends its lines with a bare
        LF gets its first answer, then 400.
        """
        harness = Harness(self)
        _, client = harness.client(
            b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\nHost: h\n\n"
        )
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertEqual(client.value(), OK_TO_CLIENT + answer(b"400 Bad Request"))
        self.assertEqual(
            sorted(event["flag"] for event in accessEvents(harness)),
            ["-", CLIENT_PROTOCOL_ERROR],
        )


class FramingTests(RefusedTestCase):
    """
    A body is delimited one way only, as RFC 9112 section 6 requires: the
    requests that smuggling relies on are refused.
    """

    def assertFramingRefused(self, fields: bytes, error: str) -> None:
        self.assertRefused(
            b"POST /f HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n0\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=POST path=/f {ARROW} backend=- status=400 ms=0.0"
            f' error="{error}"',
            refusals.FRAMING,
        )

    def test_contentLengthAndTransferEncoding(self) -> None:
        """
        Content-Length then Transfer-Encoding gets 400.
        """
        self.assertFramingRefused(
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "both Content-Length and Transfer-Encoding",
        )

    def test_smuggledRequestNotRead(self) -> None:
        """
        The request after a refused one, in the same bytes, is never read:
        one answer, one log line, no backend.
        """
        self.assertRefused(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=POST path=/ {ARROW} backend=- status=400 ms=0.0"
            ' error="both Content-Length and Transfer-Encoding"',
            refusals.FRAMING,
        )

    def test_transferEncodingAndContentLength(self) -> None:
        """
        Transfer-Encoding then Content-Length gets 400.
        """
        self.assertFramingRefused(
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "both Content-Length and Transfer-Encoding",
        )

    def test_twoContentLengths(self) -> None:
        """
        Two Content-Length fields get 400, even with the same value.
        """
        self.assertFramingRefused(
            b"Content-Length: 5\r\nContent-Length: 5\r\n", "more than one Content-Length"
        )

    def test_twoTransferEncodings(self) -> None:
        """
        Two Transfer-Encoding fields get 400.
        """
        self.assertFramingRefused(
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "more than one Transfer-Encoding",
        )

    def test_contentLengthNotANumber(self) -> None:
        """
        A Content-Length that is not a number gets 400.
        """
        self.assertFramingRefused(
            b"Content-Length: +5\r\n", "a Content-Length that is not a number"
        )

    def test_contentLengthOf2To64AndMore(self) -> None:
        """
        A Content-Length longer than 19 digits gets 400: 2^64 + 35 (which a
        parser counting in 64 bits reads as 35), 2^64, and 20 digits that
        are mostly zeros.
        """
        for length in [b"18446744073709551651", b"18446744073709551616", b"0" * 19 + b"5"]:
            self.assertFramingRefused(
                b"Content-Length: " + length + b"\r\n", "a Content-Length longer than 19 digits"
            )

    def test_contentLengthOf2To63(self) -> None:
        """
        A Content-Length of 19 digits over 2^63 - 1 gets 400.
        """
        for length in [b"9223372036854775808", b"9999999999999999999"]:
            self.assertFramingRefused(
                b"Content-Length: " + length + b"\r\n", "a Content-Length over 2^63 - 1"
            )

    def test_contentLengthOf2To63Less1(self) -> None:
        """
        A Content-Length of 2^63 - 1 is forwarded, with its head at once,
        when there is no body limit.
        """
        harness = Harness(self)
        harness.client(
            b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\nab"
        )
        _, toBackend = harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"PUT /f HTTP/1.1\r\nContent-Length: 9223372036854775807\r\nHost: h\r\n\r\nab",
        )

    def test_contentLengthOverLimit(self) -> None:
        """
        Under C{--max-body-size}, a Content-Length of 2^63 - 1 gets 413, as
        any length over the limit, but one of 2^63 gets 400: it is
        malformed before it is large.
        """
        self.assertRefused(
            b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n",
            b"413 Content Too Large",
            f"client=10.0.0.7 method=PUT path=/f {ARROW} backend=- status=413 ms=0.0"
            ' error="a body over 4 bytes"',
            refusals.BODY_TOO_LARGE,
            flag="-",
            maxBodySize=4,
        )
        self.assertRefused(
            b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=PUT path=/f {ARROW} backend=- status=400 ms=0.0"
            ' error="a Content-Length over 2^63 - 1"',
            refusals.FRAMING,
            maxBodySize=4,
        )

    def test_identityCoding(self) -> None:
        """
        C{Transfer-Encoding: identity}, which Twisted takes for no coding,
        gets 400: chunked must be the final coding (RFC 9112 section 6.3).
        """
        self.assertFramingRefused(
            b"Transfer-Encoding: identity\r\n", "a Transfer-Encoding other than chunked"
        )

    def test_identityBesideContentLength(self) -> None:
        """
        C{Transfer-Encoding: identity} beside a Content-Length, which
        Twisted would frame by the Content-Length, gets 400.
        """
        self.assertFramingRefused(
            b"Transfer-Encoding: identity\r\nContent-Length: 3\r\n",
            "both Content-Length and Transfer-Encoding",
        )

    def test_codingsList(self) -> None:
        """
        A list of codings gets 400, even one ending with chunked.
        """
        self.assertFramingRefused(
            b"Transfer-Encoding: gzip, chunked\r\n", "a Transfer-Encoding other than chunked"
        )

    def test_chunkedAnyCase(self) -> None:
        """
        C{Transfer-Encoding: Chunked} is chunked: the request is forwarded.
        """
        harness = Harness(self)
        harness.client(
            b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
        )
        _, toBackend = harness.backend()
        self.assertTrue(toBackend.value().endswith(b"\r\n\r\n1\r\na\r\n0\r\n\r\n"))


class ChunkedBodyTests(SynchronousTestCase):
    """
    A malformed chunked body is refused through the same place, after its
    request has been forwarded.  txlb decodes it, with the decoder of
    responses' chunked bodies (L{txlb.http1.ChunkedDecoder}), in the place
    of Twisted's (the channel's private C{_transferDecoder}), which took any
    line after the last chunk for a trailer: the tests of trailers pin that
    this replacement holds.
    """

    def test_malformedChunk(self) -> None:
        """
        A chunk size that is not hexadecimal gets 400 and the connection
        closes; the request's one log line names its backend, the error and
        the flag.  The backend, still being connected to, gets nothing.
        """
        harness = Harness(self)
        channel, client = harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
        )
        self.assertEqual(client.value(), answer(b"400 Bad Request"))
        self.assertTrue(client.disconnecting)
        self.assertTrue(harness.reactor.connectors[0].stoppedConnecting)
        channel.connectionLost(Failure(ConnectionDone()))
        events = accessEvents(harness)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                f"client=10.0.0.7 method=POST path=/up {ARROW} backend=127.0.0.1:8081"
                ' status=400 ms=0.0 error="a malformed chunked body"'
            ],
        )
        self.assertEqual(events[0]["flag"], CLIENT_PROTOCOL_ERROR)
        metrics = harness.resource.metrics.exposition()
        self.assertIn(b'txlb_client_refusals_total{reason="chunked_body"} 1.0\n', metrics)
        self.assertIn(
            b'txlb_requests_total{backend="127.0.0.1:8081",code="400",pool="default"} 1.0\n',
            metrics,
        )

    def test_malformedChunks(self) -> None:
        """
        Each way of breaking the chunked coding gets 400: no CRLF after a
        chunk's data, a bare LF after a size, a chunk size of 17 hex digits
        (a 64-bit count cannot hold it; Twisted took any number), a
        control character in an extension.
        """
        for body in [
            b"3\r\nabcX\r\n",
            b"3\nabc\r\n",
            b"1" + b"0" * 16 + b"\r\n",
            b"3;a=\x01\r\nabc\r\n",
        ]:
            harness = Harness(self)
            _, client = harness.client(
                b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
            )
            self.assertEqual(client.value(), answer(b"400 Bad Request"), body)


#: A chunked request up to its last chunk, and what the backend gets of it.
CHUNKED = b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
CHUNKED_TO_BACKEND = (
    b"POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n3\r\nabc\r\n"
)


class TrailerTests(SynchronousTestCase):
    """
    The trailer section of a chunked body is checked as a head is, line by
    line: the request, forwarded as soon as its head was in, is refused
    before its body ends at the backend.
    """

    def assertTrailersRefused(
        self, trailers: bytes, error: str, reason: str, status: bytes = b"400 Bad Request"
    ) -> None:
        """
        Send L{CHUNKED}, then C{trailers} after its last chunk, followed by
        a request, and check the refusal: the client gets C{status} and the
        connection closes; the backend never gets the last chunk, and its
        connection is closed; the request after is not read; the one log
        line names the backend, C{error} and the flag, and the refusal is
        counted under C{reason}.
        """
        harness = Harness(self)
        channel, client = harness.client(CHUNKED)
        _, toBackend = harness.backend()
        channel.dataReceived(b"0\r\n" + trailers + b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(client.value(), answer(status))
        self.assertTrue(client.disconnecting)
        self.assertEqual(toBackend.value(), CHUNKED_TO_BACKEND)
        self.assertTrue(toBackend.disconnected)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(harness.reactor.tcpClients, [])
        events = accessEvents(harness)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                f"client=10.0.0.7 method=POST path=/t {ARROW} backend=127.0.0.1:8081"
                f' status={status[:3].decode()} ms=0.0 error="{error}"'
            ],
        )
        self.assertEqual(events[0]["flag"], CLIENT_PROTOCOL_ERROR)
        self.assertIn(
            b'txlb_client_refusals_total{reason="%s"} 1.0\n' % reason.encode(),
            harness.resource.metrics.exposition(),
        )

    def test_requestLineAsTrailer(self) -> None:
        """
        A request line after the last chunk is not a trailer field: 400,
        where Twisted took it for one and the request got a 200 (a proxy in
        front could have read a second request there).
        """
        self.assertTrailersRefused(
            b"GET /admin HTTP/1.1\r\n\r\n", "a trailer line without a colon", refusals.HEADER
        )

    def test_beforeBackendConnected(self) -> None:
        """
        Refused before its backend connection is made, the request never
        reaches the backend: the connection attempt stops.
        """
        harness = Harness(self)
        channel, client = harness.client(CHUNKED + b"0\r\nGET /admin HTTP/1.1\r\n\r\n")
        self.assertEqual(client.value(), answer(b"400 Bad Request"))
        self.assertTrue(harness.reactor.connectors[0].stoppedConnecting)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            [formatEvent(event) for event in accessEvents(harness)],
            [
                f"client=10.0.0.7 method=POST path=/t {ARROW} backend=127.0.0.1:8081"
                ' status=400 ms=0.0 error="a trailer line without a colon"'
            ],
        )

    def test_bareLF(self) -> None:
        """
        A trailer line or the empty line ended by a bare LF gets 400 at
        once, as in a head.
        """
        for trailers in [b"GET /admin HTTP/1.1\n\n", b"X-T: 1\n\r\n", b"\n"]:
            self.assertTrailersRefused(trailers, "a line ended by a bare LF", refusals.LINE_ENDING)

    def test_bareCR(self) -> None:
        """
        A CR anywhere but before the LF gets 400.
        """
        for trailers in [b"X-T: 1\rX-U: 2\r\n\r\n", b"X-T: 1\r\r\n\r\n", b"\r\r\n"]:
            self.assertTrailersRefused(trailers, "a CR not followed by LF", refusals.LINE_ENDING)

    def test_controlCharacters(self) -> None:
        """
        Every control character but HTAB gets 400 in a trailer's name and
        value (CR and LF are line endings, above).
        """
        for byte in [*range(0x20), 0x7F]:
            if byte in (0x09, 0x0A, 0x0D):
                continue
            control = bytes([byte])
            self.assertTrailersRefused(
                b"X-T: a" + control + b"b\r\n\r\n",
                f"a control character (0x{byte:02x}) in a trailer value",
                refusals.HEADER,
            )
            self.assertTrailersRefused(
                b"X" + control + b"T: ab\r\n\r\n",
                f"a control character (0x{byte:02x}) in a trailer name",
                refusals.HEADER,
            )

    def test_malformedFields(self) -> None:
        """
        A trailer line that is not C{token ":" value}, or that folds, gets
        400.
        """
        for trailers, error in [
            (b"X-T 1\r\n\r\n", "a trailer line without a colon"),
            (b"X-T : 1\r\n\r\n", "a trailer name that is not a token"),
            (b": 1\r\n\r\n", "a trailer name that is not a token"),
            (b"X-T: 1\r\n 2\r\n\r\n", "a folded trailer line (obs-fold)"),
            (b"\tX-T: 1\r\n\r\n", "a folded trailer line (obs-fold)"),
        ]:
            self.assertTrailersRefused(trailers, error, refusals.HEADER)

    def test_framingFields(self) -> None:
        """
        Content-Length and Transfer-Encoding have no place after the body
        (RFC 9110 section 6.5.1): 400.
        """
        self.assertTrailersRefused(
            b"content-length: 5\r\n\r\n",
            "a Content-Length in the trailer section",
            refusals.FRAMING,
        )
        self.assertTrailersRefused(
            b"Transfer-Encoding: chunked\r\n\r\n",
            "a Transfer-Encoding in the trailer section",
            refusals.FRAMING,
        )

    def test_sectionTooLarge(self) -> None:
        """
        A trailer section over 16384 bytes in all, counted as a head is,
        gets 431.
        """
        self.assertTrailersRefused(
            (b"X-T: " + b"y" * 8000 + b"\r\n") * 3 + b"\r\n",
            "a trailer section over 16384 bytes",
            refusals.HEAD_TOO_LARGE,
            b"431 Request Header Fields Too Large",
        )

    def test_lineTooLong(self) -> None:
        """
        A trailer line over 16384 bytes gets 431.
        """
        self.assertTrailersRefused(
            b"X-T: " + b"y" * 16384 + b"\r\n\r\n",
            "a trailer line over 16384 bytes",
            refusals.HEAD_TOO_LARGE,
            b"431 Request Header Fields Too Large",
        )

    def test_tooManyFields(self) -> None:
        """
        More than 500 trailer fields get 431.
        """
        self.assertTrailersRefused(
            b"X: y\r\n" * 501 + b"\r\n",
            "more than 500 trailer fields",
            refusals.HEAD_TOO_LARGE,
            b"431 Request Header Fields Too Large",
        )

    def test_limitsReached(self) -> None:
        """
        500 trailer fields, in a section of 16384 bytes, pass.
        """
        last = b"X: " + b"y" * (16384 - 499 * 4 - 3)
        trailers = b"X: y\r\n" * 499 + last + b"\r\n\r\n"
        harness = Harness(self)
        harness.client(CHUNKED + b"0\r\n" + trailers)
        _, toBackend = harness.backend()
        self.assertEqual(toBackend.value(), CHUNKED_TO_BACKEND + b"0\r\n" + trailers)

    def test_refusedAfterAnswerStarted(self) -> None:
        """
        Refused once the backend's answer has started going out, the
        connection is aborted instead: a refusal cannot follow the first
        bytes of a response, which must show cut short.
        """
        harness = Harness(self)
        channel, client = harness.client(CHUNKED)
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
        started = client.value()
        self.assertTrue(started.startswith(b"HTTP/1.1 200 OK\r\n"))
        channel.dataReceived(b"0\r\nGET /admin HTTP/1.1\r\n\r\n")
        backend.dataReceived(b"cde")
        self.assertEqual(client.value(), started)
        self.assertTrue(client.disconnected)

    def test_refusedAfterWholeAnswer(self) -> None:
        """
        Refused once the backend's whole answer is in, held back only until
        the body ended, the answer is ended (its last chunk) and the
        connection closed: the client keeps the answer it got, with no
        refusal after it.
        """
        harness = Harness(self)
        channel, client = harness.client(CHUNKED)
        backend, _ = harness.backend()
        backend.dataReceived(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n"
        )
        self.assertFalse(client.value().endswith(b"\r\n0\r\n\r\n"))
        channel.dataReceived(b"0\r\nGET /admin HTTP/1.1\r\n\r\n")
        self.assertEqual(
            client.value(),
            b"HTTP/1.1 401 Unauthorized\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
        )
        self.assertTrue(client.disconnecting)
        self.assertFalse(client.disconnected)


class RefusedWhileForwardedTests(SynchronousTestCase):
    """
    A body refused as it streams to the backend ends its exchange cleanly.
    """

    def test_bodyTooLargeAfterAnswerStarted(self) -> None:
        """
        A body that goes over the limit once the backend's answer has
        started going out aborts the connection: no 413 head in the middle
        of that answer.
        """
        harness = Harness(self, maxBodySize=10)
        channel, client = harness.client(CHUNKED)
        backend, _ = harness.backend()
        backend.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
        started = client.value()
        channel.dataReceived(b"8\r\n12345678\r\n")
        self.assertEqual(client.value(), started)
        self.assertTrue(client.disconnected)

    def test_exchangeEndsWithRefusal(self) -> None:
        """
        A request refused while forwarded (its body over the limit) ends
        its exchange at once, not when the connection is gone: the backend
        connection is closed, and what the backend had sent is not
        relayed after the refusal; the log line has the refusal.
        """
        harness = Harness(self, maxBodySize=10)
        channel, client = harness.client(CHUNKED)
        backend, toBackend = harness.backend()
        channel.dataReceived(b"8\r\n12345678\r\n")
        self.assertEqual(client.value(), answer(b"413 Content Too Large"))
        self.assertTrue(toBackend.disconnected)
        backend.dataReceived(OK)
        self.assertEqual(client.value(), answer(b"413 Content Too Large"))
        self.assertEqual(
            [formatEvent(event) for event in accessEvents(harness)],
            [
                f"client=10.0.0.7 method=POST path=/t {ARROW} backend=127.0.0.1:8081"
                ' status=413 ms=0.0 error="a body over 10 bytes"'
            ],
        )


class RequestLineTests(RefusedTestCase):
    """
    A malformed request line gets 400, with what was wrong with it.
    """

    def assertLineRefused(self, line: bytes, error: str) -> None:
        self.assertRefused(
            line + b"\r\nHost: h\r\n\r\n",
            b"400 Bad Request",
            f'client=10.0.0.7 method=- path=- {ARROW} backend=- status=400 ms=0.0 error="{error}"',
            refusals.REQUEST_LINE,
        )

    def test_extraWord(self) -> None:
        """
        A request line of four words gets 400.
        """
        self.assertLineRefused(
            b"GET / HTTP/1.1 extra", "a request line that is not METHOD SP TARGET SP VERSION"
        )

    def test_methodNotAToken(self) -> None:
        """
        A method with a byte no token has gets 400.
        """
        self.assertLineRefused(b"GE(T / HTTP/1.1", "a method that is not a token")

    def test_targetOutsidePrintableAscii(self) -> None:
        """
        A request-target with a byte outside printable ASCII gets 400 and
        the connection closes, whether Twisted would have refused it (a NUL)
        or let it through (0xA9).
        """
        for target in [b"/a\x00b", b"/caf\xa9"]:
            self.assertLineRefused(
                b"GET " + target + b" HTTP/1.1",
                "a request-target empty or with bytes outside printable ASCII",
            )

    def test_version(self) -> None:
        """
        A version other than HTTP/1.0 and HTTP/1.1 gets 400.
        """
        self.assertLineRefused(b"GET / HTTP/2.0", "a version other than HTTP/1.0 and HTTP/1.1")

    def test_twoEmptyLinesFirst(self) -> None:
        """
        Two empty lines before a request line get 400.
        """
        self.assertRefused(
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=- path=- {ARROW} backend=- status=400 ms=0.0"
            ' error="more than one empty line before a request"',
            refusals.REQUEST_LINE,
        )

    def test_oneEmptyLineFirst(self) -> None:
        """
        One empty line before a request line is ignored (RFC 9112 section
        2.2), as Twisted does: the request is forwarded.
        """
        harness = Harness(self)
        harness.client(b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        _, toBackend = harness.backend()
        self.assertEqual(toBackend.value(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")


class HeaderFieldTests(RefusedTestCase):
    """
    A malformed header field gets 400, with what was wrong with it.
    """

    def assertFieldRefused(self, field: bytes, error: str) -> None:
        self.assertRefused(
            b"GET /h HTTP/1.1\r\nHost: h\r\n" + field + b"\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=GET path=/h {ARROW} backend=- status=400 ms=0.0"
            f' error="{error}"',
            refusals.HEADER,
        )

    def test_nul(self) -> None:
        """
        A NUL in a field value gets 400.
        """
        self.assertFieldRefused(b"X-A: a\x00b", "a control character (0x00) in a header value")

    def test_controlCharacters(self) -> None:
        """
        Every control character but HTAB gets 400 in a field value (DEL, VT
        and FF were forwarded) and in a field name, saying which byte and
        where; CR and LF end lines, and are refused as line endings.
        """
        for byte in [*range(0x20), 0x7F]:
            if byte in (0x09, 0x0A, 0x0D):
                continue
            control = bytes([byte])
            self.assertFieldRefused(
                b"X-A: a" + control + b"b", f"a control character (0x{byte:02x}) in a header value"
            )
            self.assertFieldRefused(
                b"X-" + control + b"A: ab", f"a control character (0x{byte:02x}) in a header name"
            )

    def test_controlCharacterAtValueEdge(self) -> None:
        """
        A control character that Twisted would strip or keep at a value's
        end, or that stands for the whole value, gets 400 too.
        """
        for field, byte in [(b"X-A: a\x7f", "7f"), (b"X-A:\x0c", "0c"), (b"X-A: \x0b a", "0b")]:
            self.assertFieldRefused(field, f"a control character (0x{byte}) in a header value")

    def test_tabAndObsTextForwarded(self) -> None:
        """
        HTAB inside a value, and obs-text (bytes from 0x80), which RFC 9110
        section 5.5 allows, are forwarded byte for byte.
        """
        harness = Harness(self)
        harness.client(b"GET /h HTTP/1.1\r\nHost: h\r\nX-A: a\tb\r\nX-B: caf\xe9\xff\r\n\r\n")
        _, toBackend = harness.backend()
        self.assertEqual(
            toBackend.value(),
            b"GET /h HTTP/1.1\r\nHost: h\r\nX-A: a\tb\r\nX-B: caf\xe9\xff\r\n\r\n",
        )

    def test_notLast(self) -> None:
        """
        A malformed field before others gets one answer and one log line.
        """
        self.assertRefused(
            b"GET /h HTTP/1.1\r\nX-A: a\x00\r\nHost: h\r\nX-B: b\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=GET path=/h {ARROW} backend=- status=400 ms=0.0"
            ' error="a control character (0x00) in a header value"',
            refusals.HEADER,
        )

    def test_noColon(self) -> None:
        """
        A field line without a colon gets 400.
        """
        self.assertFieldRefused(b"X-A a", "a header line without a colon")

    def test_spaceBeforeColon(self) -> None:
        """
        A space between a field name and its colon gets 400 (RFC 9112
        section 5.1).
        """
        self.assertFieldRefused(b"X-A : a", "a header name that is not a token")

    def test_continuationFirst(self) -> None:
        """
        A continuation line before any field gets 400.
        """
        self.assertRefused(
            b"GET /h HTTP/1.1\r\n X-A: a\r\nHost: h\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=GET path=/h {ARROW} backend=- status=400 ms=0.0"
            ' error="a folded header line (obs-fold)"',
            refusals.HEADER,
        )

    def test_hostRules(self) -> None:
        """
        The proxy's own 400s, for two Host fields or none on HTTP/1.1, carry
        the flag DPE and count as header refusals; the connection stays
        open, as the request was read whole.
        """
        for request, why in (
            (b"GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host header"),
            (b"GET /h HTTP/1.1\r\n\r\n", "no Host header"),
        ):
            harness = Harness(self)
            _, client = harness.client(request)
            self.assertTrue(client.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"))
            self.assertFalse(client.disconnecting)
            (event,) = accessEvents(harness)
            self.assertEqual((event["flag"], event["error"]), (CLIENT_PROTOCOL_ERROR, why))
            self.assertIn(
                b'txlb_client_refusals_total{reason="header"} 1.0\n',
                harness.resource.metrics.exposition(),
            )

    def test_obsFold(self) -> None:
        """
        A field folded onto the next line (obs-fold) gets 400, in any field:
        joined, a folded Transfer-Encoding could read one way here and
        another at the backend.
        """
        for fold in (b" chunked", b"\tchunked"):
            self.assertRefused(
                b"POST /h HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n" + fold + b"\r\n\r\n",
                b"400 Bad Request",
                f"client=10.0.0.7 method=POST path=/h {ARROW} backend=- status=400 ms=0.0"
                ' error="a folded header line (obs-fold)"',
                refusals.HEADER,
            )


class LimitTests(RefusedTestCase):
    """
    Heads over the limits, slow heads and large bodies are refused with
    their own statuses; only the heads are protocol errors.
    """

    def test_tooManyFields(self) -> None:
        """
        More than 500 header fields get 431, where Twisted would answer 400.
        """
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 500 + b"\r\n",
            b"431 Request Header Fields Too Large",
            f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=431 ms=0.0"
            ' error="more than 500 header fields"',
            refusals.HEAD_TOO_LARGE,
        )

    def test_headTooLarge(self) -> None:
        """
        A head over 16384 bytes in all gets 431, where Twisted would answer
        400.
        """
        self.assertRefused(
            b"GET / HTTP/1.1\r\nHost: h\r\n" + (b"X: " + b"y" * 8000 + b"\r\n") * 3 + b"\r\n",
            b"431 Request Header Fields Too Large",
            f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=431 ms=0.0"
            ' error="a request head over 16384 bytes"',
            refusals.HEAD_TOO_LARGE,
        )

    def test_headerLineTooLong(self) -> None:
        """
        A header line over 16384 bytes gets 431.
        """
        self.assertRefused(
            b"GET / HTTP/1.1\r\nX: " + b"y" * 16384 + b"\r\n\r\n",
            b"431 Request Header Fields Too Large",
            f"client=10.0.0.7 method=GET path=/ {ARROW} backend=- status=431 ms=0.0"
            ' error="a header line over 16384 bytes"',
            refusals.HEAD_TOO_LARGE,
        )

    def test_requestLineTooLong(self) -> None:
        """
        A request line over 16384 bytes gets 414.
        """
        self.assertRefused(
            b"GET /" + b"a" * 16384 + b" HTTP/1.1\r\n\r\n",
            b"414 URI Too Long",
            f"client=10.0.0.7 method=- path=- {ARROW} backend=- status=414 ms=0.0"
            ' error="a request line over 16384 bytes"',
            refusals.HEAD_TOO_LARGE,
        )

    def test_longestRequestLinePasses(self) -> None:
        """
        A request line of 16384 bytes, the limit, is forwarded.
        """
        line = b"GET /" + b"a" * (16384 - len(b"GET / HTTP/1.0")) + b" HTTP/1.0"
        self.assertEqual(len(line), 16384)
        harness = Harness(self)
        harness.client(line + b"\r\n\r\n")
        _, toBackend = harness.backend()
        self.assertTrue(toBackend.value().startswith(line.replace(b"1.0", b"1.1") + b"\r\n"))

    def test_slowHead(self) -> None:
        """
        A head not complete within the client timeout gets 408, flagged
        C{-}: the request was not malformed.
        """
        harness = Harness(self, clientTimeout=30)
        _, client = harness.client(b"GET /s HTTP/1.1\r\nHost: h\r\n")
        harness.reactor.advance(30)
        self.assertEqual(client.value(), answer(b"408 Request Timeout"))
        events = accessEvents(harness)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                f"client=10.0.0.7 method=GET path=/s {ARROW} backend=- status=408 ms=0.0"
                ' error="no whole request head within 30 s"'
            ],
        )
        self.assertEqual(events[0]["flag"], "-")
        self.assertIn(
            b'txlb_client_refusals_total{reason="timeout"} 1.0\n',
            harness.resource.metrics.exposition(),
        )

    def test_bodyTooLarge(self) -> None:
        """
        A body over the limit gets 413, flagged C{-}, and is counted.
        """
        harness = Harness(self, maxBodySize=4)
        _, client = harness.client(b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(client.value(), answer(b"413 Content Too Large"))
        events = accessEvents(harness)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                f"client=10.0.0.7 method=POST path=/b {ARROW} backend=- status=413 ms=0.0"
                ' error="a body over 4 bytes"'
            ],
        )
        self.assertEqual(events[0]["flag"], "-")
        self.assertIn(
            b'txlb_client_refusals_total{reason="body_too_large"} 1.0\n',
            harness.resource.metrics.exposition(),
        )


class AccessLogTests(SynchronousTestCase):
    def test_json(self) -> None:
        """
        With the JSON access log, a refusal is one object with its status,
        error and flag.
        """
        harness = Harness(self, accessLog="json")
        harness.client(b"GET / HTTP/1.1\nHost: h\n\n")
        (event,) = accessEvents(harness)
        self.assertEqual(
            json.loads(event["line"]),
            {
                "client": "10.0.0.7",
                "method": "-",
                "target": "-",
                "backend": "-",
                "status": 400,
                "bytesIn": 0,
                "bytesOut": 0,
                "connectMs": None,
                "firstByteMs": None,
                "totalMs": 0.0,
                "queueMs": None,
                "retries": 0,
                "flag": "DPE",
                "error": "a line ended by a bare LF",
                "route": None,
                "pool": None,
            },
        )


class MetricsTests(SynchronousTestCase):
    def test_everyReasonFromStart(self) -> None:
        """
        Every reason has its series from the start, at 0.
        """
        metrics = Harness(self).resource.metrics.exposition()
        for reason in refusals.REASONS:
            self.assertIn(
                b'txlb_client_refusals_total{reason="%s"} 0.0\n' % reason.encode(), metrics
            )

    def test_unknownReason(self) -> None:
        """
        A reason outside the fixed set is not counted: the label's values
        stay bounded.
        """
        metrics = Harness(self).resource.metrics
        self.assertRaises(ValueError, metrics.countRefusal, "client said 'hi'")
        self.assertNotIn(b"client said", metrics.exposition())


class RuleTests(SynchronousTestCase):
    """
    The rules, as tables.
    """

    def test_lineEndings(self) -> None:
        """
        A line split at LF must end with its CR, and have no other.
        """
        table = [
            (b"Host: h\r", None),
            (b"\r", None),
            (b"", "a line ended by a bare LF"),
            (b"Host: h", "a line ended by a bare LF"),
            (b"Host: h\rX: y", "a line ended by a bare LF"),
            (b"X: a\rb\r", "a CR not followed by LF"),
            (b"\r\r", "a CR not followed by LF"),
        ]
        for line, error in table:
            refusal = refusals.lineEnding(line)
            self.assertEqual(refusal and refusal.error, error, line)

    def test_requestLines(self) -> None:
        """
        Request lines that Twisted accepts pass, unless their target has a
        byte outside printable ASCII.
        """
        table = [
            (b"GET / HTTP/1.1", None),
            (b"get /a%2Fb?x=%7e&y= HTTP/1.0", None),
            (b"OPTIONS * HTTP/1.1", None),
            (b"M-SEARCH http://h/x? HTTP/1.1", None),
            (b"GET /a b HTTP/1.1", "a request line that is not METHOD SP TARGET SP VERSION"),
            (b"GET / HTTP/1.1 ", "a request line that is not METHOD SP TARGET SP VERSION"),
            (b"GET  HTTP/1.1", "a request-target empty or with bytes outside printable ASCII"),
            (b"GET /\x7f HTTP/1.1", "a request-target empty or with bytes outside printable ASCII"),
            (b"GET / http/1.1", "a version other than HTTP/1.0 and HTTP/1.1"),
            (b"GET / HTTP/0.9", "a version other than HTTP/1.0 and HTTP/1.1"),
            (b"G@T / HTTP/1.1", "a method that is not a token"),
        ]
        for line, error in table:
            refusal = refusals.requestLine(line)
            self.assertEqual(refusal and refusal.error, error, line)

    def test_framing(self) -> None:
        """
        A head passes with one Content-Length, or one Transfer-Encoding that
        is chunked, or neither.
        """
        table: list[tuple[dict[bytes, list[bytes]], str | None]] = [
            ({}, None),
            ({b"Content-Length": [b"3"]}, None),
            ({b"Transfer-Encoding": [b"Chunked"]}, None),
            ({b"Transfer-Encoding": [b"identity"]}, "a Transfer-Encoding other than chunked"),
            (
                {b"Transfer-Encoding": [b"identity"], b"Content-Length": [b"3"]},
                "both Content-Length and Transfer-Encoding",
            ),
            (
                {b"Transfer-Encoding": [b"chunked", b"identity"]},
                "more than one Transfer-Encoding",
            ),
            ({b"Content-Length": [b"9223372036854775808"]}, "a Content-Length over 2^63 - 1"),
            (
                {b"Content-Length": [b"18446744073709551651"]},
                "a Content-Length longer than 19 digits",
            ),
        ]
        for fields, error in table:
            refusal = refusals.framing(Headers(fields))
            self.assertEqual(refusal and refusal.error, error, fields)

    def test_contentLengths(self) -> None:
        """
        A Content-Length is 1 to 19 digits, at most 2^63 - 1.
        """
        table = [
            (b"0", None),
            (b"35", None),
            (b"0" * 19, None),
            (b"9223372036854775807", None),
            (b"9223372036854775808", "a Content-Length over 2^63 - 1"),
            (b"9999999999999999999", "a Content-Length over 2^63 - 1"),
            (b"0" * 20, "a Content-Length longer than 19 digits"),
            (b"18446744073709551651", "a Content-Length longer than 19 digits"),
            (b"", "a Content-Length that is not a number"),
            (b"+5", "a Content-Length that is not a number"),
            (b"5_0", "a Content-Length that is not a number"),
            (b"\xd9\xa3", "a Content-Length that is not a number"),
        ]
        for value, error in table:
            refusal = refusals.contentLength(value)
            self.assertEqual(refusal and refusal.error, error, value)
            if refusal is not None:
                self.assertEqual((refusal.code, refusal.reason), (400, refusals.FRAMING))

    def test_fieldControl(self) -> None:
        """
        Every control character but HTAB is found, and said to be in the
        name or the value; the rest passes (obs-text included).
        """
        table = [
            (b"X-A: a\tb", None),
            (b"X-A: caf\xe9\x80\xff", None),
            (b"X-A: a\x7f", "a control character (0x7f) in a header value"),
            (b"X-A:\x00", "a control character (0x00) in a header value"),
            (b"X-A: a\rb", "a control character (0x0d) in a header value"),
            (b"X-A: a:\x0b", "a control character (0x0b) in a header value"),
            (b"X\x1fA: a\x0b", "a control character (0x1f) in a header name"),
            (b"\x01", "a control character (0x01) in a header name"),
        ]
        for line, error in table:
            refusal = refusals.fieldControl(line)
            self.assertEqual(refusal and refusal.error, error, line)
        refusal = refusals.fieldControl(b"X: \x0c", "trailer")
        self.assertEqual(
            refusal, Refusal(400, "a control character (0x0c) in a trailer value", refusals.HEADER)
        )

    def test_trailerLines(self) -> None:
        """
        A trailer line is a field line, not a framing one.
        """
        table = [
            (b"X-Sum: 1", None),
            (b"X-Sum:", None),
            (b"x-a:\t1 2\t", None),
            (b"Host: other", None),
            (b"GET /admin HTTP/1.1", "a trailer line without a colon"),
            (b"X-A 1", "a trailer line without a colon"),
            (b"X-A : 1", "a trailer name that is not a token"),
            (b"X@A: 1", "a trailer name that is not a token"),
            (b" X-A: 1", "a folded trailer line (obs-fold)"),
            (b"\t1", "a folded trailer line (obs-fold)"),
            (b"X-A: 1\x7f", "a control character (0x7f) in a trailer value"),
            (b"X\x00A: 1", "a control character (0x00) in a trailer name"),
            (b"Content-Length: 5", "a Content-Length in the trailer section"),
            (b"TRANSFER-ENCODING: chunked", "a Transfer-Encoding in the trailer section"),
        ]
        for line, error in table:
            refusal = refusals.trailerLine(line)
            self.assertEqual(refusal and refusal.error, error, line)

    def test_http2RequestLines(self) -> None:
        """
        An HTTP/2 request's :method is a token and its :path printable
        ASCII, as an HTTP/1.1 request line's method and target.
        """
        table = [
            (b"GET", b"/", None),
            (b"PURGE", b"/a%20b?x=~", None),
            (b"OPTIONS", b"*", None),
            (b"GET", b"", "a :path empty or with bytes outside printable ASCII"),
            (b"GET", b"/a b", "a :path empty or with bytes outside printable ASCII"),
            (b"GET", b"/a\x0bb", "a :path empty or with bytes outside printable ASCII"),
            (b"GET", b"/caf\xe9", "a :path empty or with bytes outside printable ASCII"),
            (b"GE T", b"/", "a :method that is not a token"),
            (b"GET\x7f", b"/", "a :method that is not a token"),
        ]
        for method, path, error in table:
            refusal = refusals.http2RequestLine(method, path)
            self.assertEqual(refusal and refusal.error, error, (method, path))

    def test_lineLimits(self) -> None:
        """
        A request line over the limit is 414, a header or trailer line 431.
        """
        self.assertEqual(
            [refusals.lineTooLong(kind, 10) for kind in ["request", "header", "trailer"]],
            [
                Refusal(414, "a request line over 10 bytes", refusals.HEAD_TOO_LARGE),
                Refusal(431, "a header line over 10 bytes", refusals.HEAD_TOO_LARGE),
                Refusal(431, "a trailer line over 10 bytes", refusals.HEAD_TOO_LARGE),
            ],
        )

    def test_headerFields(self) -> None:
        """
        A header field is refused, after the fields before it, as Twisted's
        channel refused it: a token name before a colon, one framing field,
        and at most as many fields as allowed (431).
        """
        # (line, Content-Length seen, chunked seen, fields before, refusal)
        table: list[tuple[bytes, bool, bool, int, Refusal | None]] = [
            (
                b"X-A a",
                False,
                False,
                0,
                Refusal(400, "a header line without a colon", refusals.HEADER),
            ),
            (
                b": a",
                False,
                False,
                0,
                Refusal(400, "a header name that is not a token", refusals.HEADER),
            ),
            (
                b"X\x00: a",
                False,
                False,
                0,
                Refusal(400, "a header name that is not a token", refusals.HEADER),
            ),
            (
                b"Content-Length: 1, 1",
                False,
                False,
                0,
                Refusal(400, "a Content-Length that is not a number", refusals.FRAMING),
            ),
            (
                b"Content-Length: 1",
                True,
                False,
                1,
                Refusal(400, "more than one Content-Length", refusals.FRAMING),
            ),
            (
                b"Content-Length: 1",
                False,
                True,
                1,
                Refusal(400, "both Content-Length and Transfer-Encoding", refusals.FRAMING),
            ),
            (
                b"Transfer-Encoding: gzip",
                False,
                False,
                0,
                Refusal(400, "a Transfer-Encoding other than chunked", refusals.FRAMING),
            ),
            (
                b"Transfer-Encoding: chunked",
                True,
                False,
                1,
                Refusal(400, "both Content-Length and Transfer-Encoding", refusals.FRAMING),
            ),
            (
                b"Transfer-Encoding: chunked",
                False,
                True,
                1,
                Refusal(400, "more than one Transfer-Encoding", refusals.FRAMING),
            ),
            (
                b"X: y",
                True,
                False,
                2,
                Refusal(431, "more than 2 header fields", refusals.HEAD_TOO_LARGE),
            ),
            (b"X: y", True, False, 1, None),
            (b"Content-Length:  12 ", False, False, 1, None),
            # Refused with the whole head (refusals.framing).
            (b"Transfer-Encoding: identity", True, False, 1, None),
        ]
        for line, lengthSeen, chunkedSeen, count, refusal in table:
            self.assertEqual(
                refusals.headerField(line, lengthSeen, chunkedSeen, count, 2), refusal, line
            )

    def test_protocolErrors(self) -> None:
        """
        Every refusal but a slow head and a large body is a protocol error.
        """
        self.assertEqual(
            [r for r in refusals.REASONS if not Refusal(400, "", r).protocolError],
            [refusals.BODY_TOO_LARGE, refusals.TIMEOUT],
        )


# Differential fuzzing of the request path against h11.
#
# A generated request (one wild piece, all wild, or none: a field line, a
# line end, the framing, a chunk, a trailer line) is sent to txlb, with a
# plain request after it; each request a backend gets is compared with what
# h11, as a server, makes of the same bytes.  Whatever txlb forwards whole,
# h11 reads whole too, with the same method, target, fields, body and
# trailers: no request reaches a backend in a shape another parser on its
# way could read otherwise.  (The converse, that txlb refuses only for its
# documented rules, is left to the tables above: h11 takes obs-fold, bare-LF
# line ends and long Content-Lengths, which txlb refuses on purpose.)

REQUEST_FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Names whose fields txlb or h11 treat apart (framing, hop-by-hop, Host,
#: Expect, Upgrade), which the generated plain fields avoid.
_SPECIAL = {
    b"host",
    b"te",
    b"trailer",
    b"upgrade",
    b"expect",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"content-length",
    b"transfer-encoding",
}
_NAMES = st.one_of(
    st.text(_TCHAR, min_size=1, max_size=5).map(str.encode),
    st.sampled_from([b"X-A", b"Cookie", b"Accept", b"x-sum"]),
).filter(lambda name: name.lower() not in _SPECIAL)
_CLEAN = [b"a", b"Z", b"5", b",", b";", b"=", b'"', b":", b"/", b" ", b"\t", b"\x80", b"\xff"]
_DIRTY = [b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f", b"\x7f", b"\r", b"\n"]
_CLEAN_VALUES = st.lists(st.sampled_from(_CLEAN), max_size=6).map(b"".join)
_WILD_VALUES = st.lists(st.sampled_from(_CLEAN + _DIRTY), min_size=1, max_size=6).map(b"".join)
_CLEAN_FIELDS = st.tuples(_NAMES, st.sampled_from([b":", b": ", b":\t"]), _CLEAN_VALUES).map(
    b"".join
)
_WILD_FIELDS = st.one_of(
    st.tuples(st.binary(min_size=1, max_size=3), st.just(b":"), _CLEAN_VALUES).map(b"".join),
    st.tuples(_NAMES, st.sampled_from([b" :", b"\t:", b""]), _CLEAN_VALUES).map(b"".join),
    st.tuples(_NAMES, st.just(b": "), _WILD_VALUES).map(b"".join),
    st.tuples(st.sampled_from([b" ", b"\t"]), _CLEAN_VALUES).map(b"".join),
    st.sampled_from(
        [b"GET /admin HTTP/1.1", b"Content-Length: 5", b"Transfer-Encoding: chunked", b""]
    ),
)
_CLEAN_EOLS = st.just(b"\r\n")
_WILD_EOLS = st.sampled_from([b"\n", b"\r", b"\r\r\n", b"\n\r", b"\x0b\r\n"])
_WILD_LENGTHS = st.sampled_from(
    [
        b"+3",
        b"3, 3",
        b"03",
        b"0" * 20 + b"3",
        b"18446744073709551619",
        b"9223372036854775808",
        b"3\x0b",
        b"",
    ]
)
_WILD_SIZES = st.sampled_from([b"%X", b"0%x", b"0" * 17 + b"%x", b"%x ", b"+%x", b"%xg", b""])
_WILD_EXTENSIONS = st.sampled_from([b";a\x01", b";a\n", b" ;a", b";"])


def _mode(draw: st.DrawFn, pieces: int) -> Callable[[int], bool]:
    """
    Pick how wild a generated request is: whether each of its C{pieces}
    pieces, by index, is wild.
    """
    mode = draw(st.sampled_from(["clean", "clean", "one", "wild"]))
    bad = draw(st.integers(0, pieces - 1))
    return lambda index: mode == "wild" or (mode == "one" and index == bad)


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    """
    A request with fields, maybe a body (by length or chunked, with
    trailers), then a plain request.
    """
    fields = draw(st.integers(0, 3))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=5), max_size=2))
    trailers = draw(st.integers(0, 2))
    framing = draw(st.sampled_from(["none", "length", "chunked", "chunked"]))
    # Per field: line, end; the framing; per chunk (and the last): size,
    # extension, data end; per trailer: line, end; the trailers' end.
    pieces = 2 * fields + 1 + 3 * (len(chunks) + 1) + 2 * trailers + 1
    wild = _mode(draw, pieces)
    data = b"POST /f?x=1 HTTP/1.1\r\nHost: h\r\n"
    for index in range(0, 2 * fields, 2):
        data += draw(_WILD_FIELDS if wild(index) else _CLEAN_FIELDS)
        data += draw(_WILD_EOLS if wild(index + 1) else _CLEAN_EOLS)
    index = 2 * fields
    body = b"".join(chunks)
    if framing == "length":
        length = draw(_WILD_LENGTHS) if wild(index) else b"%d" % len(body)
        data += b"Content-Length: " + length + b"\r\n\r\n" + body
    elif framing == "chunked":
        coding = (
            draw(st.sampled_from([b"gzip, chunked", b"chunked\x0b"])) if wild(index) else b"chunked"
        )
        data += b"Transfer-Encoding: " + coding + b"\r\n\r\n"
        for chunk in [*chunks, b""]:
            index += 3
            size = draw(_WILD_SIZES) if wild(index - 2) else b"%x"
            data += (size % len(chunk) if b"%" in size else size) + (
                draw(_WILD_EXTENSIONS) if wild(index - 1) else b""
            )
            data += b"\r\n" + chunk
            if chunk:
                data += draw(st.sampled_from([b"\n", b"", b"x\r\n"])) if wild(index) else b"\r\n"
        for trailer in range(index + 1, index + 1 + 2 * trailers, 2):
            data += draw(_WILD_FIELDS if wild(trailer) else _CLEAN_FIELDS)
            data += draw(_WILD_EOLS if wild(trailer + 1) else _CLEAN_EOLS)
        data += b"\n" if wild(pieces - 1) else b"\r\n"
    else:
        data += b"\r\n"
    return data + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


#: What one parser made of one request: method, target, its fields (lower
#: names, less the framing), body, trailers (lower names), and whether it
#: ended.
_Parsed = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, list[tuple[bytes, bytes]], bool]


def _h11Requests(data: bytes) -> list[_Parsed]:
    """
    The requests h11, as a server answering each, reads in C{data}, up to
    the first it refuses or that has not ended.
    """
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    requests: list[_Parsed] = []
    current: list[Any] | None = None
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError:
            break
        if isinstance(event, h11.Request):
            fields = [
                (name, value)
                for name, value in event.headers
                if name not in (b"content-length", b"transfer-encoding")
            ]
            current = [event.method, event.target, sorted(fields), b"", [], False]
        elif isinstance(event, h11.Data):
            assert current is not None
            current[3] += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert current is not None
            current[4] = list(event.headers)
            current[5] = True
            requests.append(tuple(current))  # type: ignore[arg-type]
            current = None
            connection.send(h11.Response(status_code=200, headers=[(b"Content-Length", b"0")]))
            connection.send(h11.EndOfMessage())
            connection.start_next_cycle()
        else:
            break
    if current is not None:
        requests.append(tuple(current))  # type: ignore[arg-type]
    return requests


def _txlbRequests(testCase: SynchronousTestCase, data: bytes, cut: int) -> list[_Parsed]:
    """
    The requests the backends get when a client sends C{data} through
    txlb, in two reads cut at C{cut}, each answered in turn, as h11 reads
    them.
    """
    harness = Harness(testCase)
    channel, _ = harness.client(data[:cut])
    channel.dataReceived(data[cut:])
    reactor = harness.reactor
    forwarded = []
    while reactor.tcpClients and not reactor.connectors[len(forwarded)].stoppedConnecting:
        backend, toBackend = harness.backend()
        forwarded.append(toBackend.value())
        backend.dataReceived(OK)
        reactor.advance(0)
    requests = []
    for sent in forwarded:
        parsed = _h11Requests(sent)
        testCase.assertEqual(len(parsed), 1, sent)
        requests += parsed
    return requests


class H11RequestTests(SynchronousTestCase):
    @REQUEST_FUZZ
    @given(_requests(), st.integers(0, 300))
    def test_forwardedMeansSame(self, data: bytes, cut: int) -> None:
        """
        Each request that reaches a backend whole is one h11 reads whole
        from what the client sent, in the same place, with the same method,
        target, fields, body and trailers; what a backend gets is always
        one request h11 reads.  Cut into two reads anywhere, the client's
        bytes make the same requests.
        """
        forwarded = _txlbRequests(self, data, len(data))
        self.assertEqual(_txlbRequests(self, data, min(cut, len(data))), forwarded, (data, cut))
        reference = _h11Requests(data)
        for index, request in enumerate(forwarded):
            if request[5]:
                self.assertGreater(len(reference), index, (data, forwarded))
                self.assertEqual(request, reference[index], (data, index))


class PlainHTTPTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        A TLS listener's first bytes are plain HTTP when they start a
        request line (a method, then a space), TLS when they start a
        handshake record, and undecided while a method may still be coming.
        """
        clientHello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        table = [
            (b"GET / HTTP/1.1\r\n", True),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True),
            (b"M-SEARCH * HTTP/1.1\r\n", True),
            (b"G", None),
            (b"OPTIONS", None),
            (b"", None),
            (clientHello, False),
            (b"\x16", False),
            (b"\x00\x01 hello", False),
            (b" GET / HTTP/1.1", False),
            (b"GET\r\n", False),
            (b"A" * 21, False),
            (b"A" * 20, None),
            (b"A" * 20 + b" /", True),
        ]
        self.assertEqual([(data, refusals.plainHTTP(data)) for data, _ in table], table)

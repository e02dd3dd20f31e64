"""
Requests refused on the client connection, whoever refused them: the bytes
the client gets, the access-log line with its error and flag, and the
counts, in memory; and the head checks as tables.
"""

from __future__ import annotations

import json
from typing import Any

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
    ) -> Harness:
        """
        Send C{request} and check that it is refused at once, before any
        backend: the client gets C{status} and the connection closes; the
        one access-log line is C{line}, with C{flag}; and the refusal is
        counted under C{reason}, and in the requests by status.
        """
        harness = Harness(self)
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
            b'txlb_requests_total{backend="-",code="%s"} 1.0\n' % status[:3],
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
    A chunked body that Twisted's decoder refuses is refused through the
    same place, after its request has been forwarded.
    """

    def test_malformedChunk(self) -> None:
        """
        A chunk size that is not hexadecimal gets 400 and the connection
        closes; the request's one log line, from the proxy once the
        connection is gone, names its backend, the error and the flag.

        Twisted (26.4 and 26.10) refuses a chunked body through its private
        C{HTTPChannel._respondToBadRequestAndDisconnect}, which
        L{txlb.server.ProxyChannel} overrides: this pins it.
        """
        harness = Harness(self)
        channel, client = harness.client(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
        )
        harness.backend()
        self.assertEqual(client.value(), answer(b"400 Bad Request"))
        self.assertTrue(client.disconnecting)
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
        self.assertIn(b'txlb_requests_total{backend="127.0.0.1:8081",code="400"} 1.0\n', metrics)


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
        self.assertFieldRefused(b"X-A: a\x00b", "a NUL in a header value")

    def test_notLast(self) -> None:
        """
        A malformed field before others gets one answer and one log line.
        """
        self.assertRefused(
            b"GET /h HTTP/1.1\r\nX-A: a\x00\r\nHost: h\r\nX-B: b\r\n\r\n",
            b"400 Bad Request",
            f"client=10.0.0.7 method=GET path=/h {ARROW} backend=- status=400 ms=0.0"
            ' error="a NUL in a header value"',
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

    def test_twistedRefusal(self) -> None:
        """
        Whatever Twisted's parser still refuses in a head is answered,
        logged and counted like the rest.
        """
        harness = Harness(self)
        channel, client = harness.client(b"GET /t HTTP/1.1\r\n")
        channel._respondToBadRequestAndDisconnect()
        self.assertEqual(client.value(), answer(b"400 Bad Request"))
        self.assertEqual(
            [formatEvent(event) for event in accessEvents(harness)],
            [
                f"client=10.0.0.7 method=GET path=/t {ARROW} backend=- status=400 ms=0.0"
                ' error="a malformed request head"'
            ],
        )
        self.assertIn(
            b'txlb_client_refusals_total{reason="header"} 1.0\n',
            harness.resource.metrics.exposition(),
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
                "retries": 0,
                "flag": "DPE",
                "error": "a line ended by a bare LF",
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
        ]
        for fields, error in table:
            refusal = refusals.framing(Headers(fields))
            self.assertEqual(refusal and refusal.error, error, fields)

    def test_fieldsTwistedRefuses(self) -> None:
        """
        Why Twisted refused a field, after the fields it had accepted.
        """
        table: list[tuple[bytes, dict[bytes, list[bytes]], Refusal]] = [
            (b"X-A a", {}, Refusal(400, "a header line without a colon", refusals.HEADER)),
            (b": a", {}, Refusal(400, "a header name that is not a token", refusals.HEADER)),
            (b"X\x00: a", {}, Refusal(400, "a header name that is not a token", refusals.HEADER)),
            (b"X: a\x00", {}, Refusal(400, "a NUL in a header value", refusals.HEADER)),
            (
                b"Content-Length: 1, 1",
                {},
                Refusal(400, "a Content-Length that is not a number", refusals.FRAMING),
            ),
            (
                b"Content-Length: 1",
                {b"Content-Length": [b"1"]},
                Refusal(400, "more than one Content-Length", refusals.FRAMING),
            ),
            (
                b"Content-Length: 1",
                {b"Transfer-Encoding": [b"chunked"]},
                Refusal(400, "both Content-Length and Transfer-Encoding", refusals.FRAMING),
            ),
            (
                b"Transfer-Encoding: gzip",
                {},
                Refusal(400, "a Transfer-Encoding other than chunked", refusals.FRAMING),
            ),
            (
                b"Transfer-Encoding: chunked",
                {b"Content-Length": [b"1"]},
                Refusal(400, "both Content-Length and Transfer-Encoding", refusals.FRAMING),
            ),
            (
                b"Transfer-Encoding: chunked",
                {b"Transfer-Encoding": [b"chunked"]},
                Refusal(400, "more than one Transfer-Encoding", refusals.FRAMING),
            ),
            (
                b"Content-Length: 1",
                {b"X": [b"y"] * 2, b"Content-Length": [b"1"]},
                Refusal(431, "more than 2 header fields", refusals.HEAD_TOO_LARGE),
            ),
            (b"X: y", {}, Refusal(400, "a malformed header field", refusals.HEADER)),
        ]
        for line, previous, refusal in table:
            self.assertEqual(refusals.fieldRefused(line, Headers(previous), 2), refusal, line)

    def test_protocolErrors(self) -> None:
        """
        Every refusal but a slow head and a large body is a protocol error.
        """
        self.assertEqual(
            [r for r in refusals.REASONS if not Refusal(400, "", r).protocolError],
            [refusals.BODY_TOO_LARGE, refusals.TIMEOUT],
        )


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

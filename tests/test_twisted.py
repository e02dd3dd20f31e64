"""
Twisted behaviour that txlb relies on and that differs between the Twisted
versions it supports: 25.5 (the newest on Debian's pypy3, Python 3.9), 26.4
(the newest on CPython 3.9) and 26.10 and later.

The private APIs txlb uses (C{HTTPChannel._command}, C{_path}, C{_version},
C{_dataBuffer} and C{_transferDecoder}, the client's
C{HTTPConnectionPool._factory} and C{Agent._requestWithEndpoint}) have the
same code in all three; the tests of the modules that use them pin them.
"""

from __future__ import annotations

from twisted.copyright import version
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http


class _Recording(http.Request):
    """
    A request that notes the C{X} values it got, and answers at once.
    """

    seen: list[list[bytes] | None]

    def process(self) -> None:
        self.seen.append(self.requestHeaders.getRawHeaders(b"x"))
        self.finish()


class HeaderLineBreakTests(SynchronousTestCase):
    """
    A bare CR or LF inside a request header value never reaches txlb as
    such, so it can never reach a backend: Twisted 26.10 answers 400 (RFC
    9110 section 5.5), and earlier versions turn each line break into a
    space (C{http_headers._sanitizeLinearWhitespace}).
    """

    def test_bareLineBreaks(self) -> None:
        for value in [b"a\rb", b"a\nb", b"a\rb\nc"]:
            seen: list[list[bytes] | None] = []
            channel = http.HTTPChannel()
            channel.requestFactory = type("Request", (_Recording,), {"seen": seen})
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + value + b"\r\n\r\n")
            if tuple(map(int, version.split(".")[:2])) >= (26, 10):
                self.assertEqual(seen, [])
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), value)
            else:
                self.assertEqual(seen, [[value.replace(b"\r", b" ").replace(b"\n", b" ")]])
                self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), value)
            channel.connectionLost(connectionDone)

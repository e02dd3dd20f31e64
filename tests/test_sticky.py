"""
Cookie affinity (C{--sticky-cookie}): the cookie rules as tables, then the
proxy in memory, byte for byte on both sides.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import CONFIG, OK, OK_TO_CLIENT, Harness, ServiceHarness
from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend
from txlb.sticky import StickyCookie, cookieValue, withoutCookie
from txlb.tap import Options

#: The tokens of 127.0.0.1:8081, 8082 and 8083 for a cookie named C{srv}.
TOKENS = [b"4982d0e1463f995a", b"c43fcb3e646c2055", b"af04154b7186662c"]


def request(cookie: bytes | None = None) -> bytes:
    field = b"" if cookie is None else b"Cookie: " + cookie + b"\r\n"
    return b"GET / HTTP/1.1\r\nHost: h\r\n" + field + b"\r\n"


def response(token: bytes) -> bytes:
    """
    L{OK} as the client gets it with the cookie naming C{token} inserted.
    """
    return OK_TO_CLIENT.replace(
        b"\r\nContent-Length",
        b"\r\nSet-Cookie: srv=" + token + b"; Path=/; HttpOnly\r\nContent-Length",
    )


class CookieRuleTests(SynchronousTestCase):
    def test_withoutCookie(self) -> None:
        """
        Only the named cookie goes; the rest stay byte for byte.
        """
        table = [
            (b"a=1; srv=x; b=2", b"a=1; b=2"),
            (b"srv=x; a=1", b"a=1"),
            (b"a=1; srv=x", b"a=1"),
            (b"a=1;srv=x;b=2", b"a=1;b=2"),
            (b"srv=x", b""),
            (b"srv=x; srv=y; a=1", b"a=1"),
            (b"a=1;  b=2 ; srvx=3", b"a=1;  b=2 ; srvx=3"),
            (b"a=srv=1; xsrv=2", b"a=srv=1; xsrv=2"),
            (b"", b""),
        ]
        for value, expected in table:
            self.assertEqual(withoutCookie(value, b"srv"), expected, value)

    def test_cookieValue(self) -> None:
        """
        The first value of the named cookie, in any of the fields.
        """
        table = [
            ([b"a=1; srv=x; b=2"], b"x"),
            ([b"a=1", b"srv=y"], b"y"),
            ([b"srv=x; srv=y"], b"x"),
            ([b"srv="], b""),
            ([b"srv"], None),
            ([b"srvx=1; a=srv"], None),
            ([], None),
        ]
        for values, expected in table:
            self.assertEqual(cookieValue(values, b"srv"), expected, values)

    def test_token(self) -> None:
        """
        A backend's token is a keyed hash of its address: the same for the
        same name and address, whatever the host's case, and another for
        another cookie name.
        """
        sticky = StickyCookie("srv", None)
        self.assertEqual([sticky.token(Backend("127.0.0.1", 8081 + i)) for i in range(3)], TOKENS)
        self.assertEqual(
            StickyCookie("srv", None).token(Backend("LOCALHOST", 80)),
            sticky.token(Backend("localhost", 80)),
        )
        self.assertNotEqual(
            StickyCookie("other", None).token(Backend("127.0.0.1", 8081)), TOKENS[0]
        )


class StickyProxyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = Harness(self, count=3)
        self.harness.resource.sticky = StickyCookie("srv", self.harness.reactor)

    def send(self, data: bytes, answer: bytes = OK) -> tuple[int, bytes, bytes]:
        """
        Send C{data}; return the port of the backend it reached, what that
        backend received and what the client got.
        """
        _, client = self.harness.client(data)
        backend, toBackend = self.harness.backend()
        backend.dataReceived(answer)
        return backend.transport.getPeer().port, toBackend.value(), client.value()

    def test_inserted(self) -> None:
        """
        A request without the cookie goes where the algorithm says, and the
        response inserts the cookie naming that backend.
        """
        self.assertEqual(self.send(request()), (8081, request(), response(TOKENS[0])))

    def test_followed(self) -> None:
        """
        A request with the cookie goes to the backend it names (round robin
        would have picked 8081), without that cookie (the others byte for
        byte), and the response has no C{Set-Cookie}.
        """
        sent = request(b"a=1; srv=" + TOKENS[2] + b"; b=2")
        self.assertEqual(self.send(sent), (8083, request(b"a=1; b=2"), OK_TO_CLIENT))

    def test_onlyCookie(self) -> None:
        """
        When the sticky cookie is the only one, the C{Cookie} field goes.
        """
        self.assertEqual(self.send(request(b"srv=" + TOKENS[1])), (8082, request(), OK_TO_CLIENT))

    def test_draining(self) -> None:
        """
        A cookie naming a draining backend is not followed: the algorithm
        picks, and the response names the new backend.
        """
        self.harness.backends[2].draining = True
        self.assertEqual(
            self.send(request(b"srv=" + TOKENS[2])), (8081, request(), response(TOKENS[0]))
        )

    def test_down(self) -> None:
        """
        A cookie naming a backend that is out after failures is not
        followed.
        """
        backend = self.harness.backends[1]
        backend.failures, backend.downUntil = 3, 10.0
        self.assertEqual(
            self.send(request(b"srv=" + TOKENS[1])), (8081, request(), response(TOKENS[0]))
        )

    def test_unknown(self) -> None:
        """
        A cookie naming no backend is removed, and replaced.
        """
        self.assertEqual(
            self.send(request(b"srv=0123456789abcdef; a=1")),
            (8081, request(b"a=1"), response(TOKENS[0])),
        )

    def test_retried(self) -> None:
        """
        When the backend the cookie names refuses the connection, the retry
        goes to another, whose cookie the response inserts.
        """
        _, client = self.harness.client(request(b"srv=" + TOKENS[2]))
        self.harness.refuse(ConnectionRefusedError())
        backend, toBackend = self.harness.backend()
        backend.dataReceived(OK)
        self.assertEqual(backend.transport.getPeer().port, 8081)
        self.assertEqual((toBackend.value(), client.value()), (request(), response(TOKENS[0])))

    def test_secure(self) -> None:
        """
        Over TLS the cookie is C{Secure}.
        """
        self.patch(self.harness.site.requestFactory, "isSecure", lambda self: True)
        _, _, received = self.send(request())
        self.assertIn(
            b"\r\nSet-Cookie: srv=" + TOKENS[0] + b"; Path=/; HttpOnly; Secure\r\n", received
        )

    def test_off(self) -> None:
        """
        Without C{--sticky-cookie}, a cookie of that name passes untouched
        and nothing is inserted.
        """
        self.harness.resource.sticky = None
        sent = request(b"srv=" + TOKENS[2])
        self.assertEqual(self.send(sent), (8081, sent, OK_TO_CLIENT))


class StickyOptionTests(SynchronousTestCase):
    def test_option(self) -> None:
        """
        C{--sticky-cookie NAME} makes the cookie; it is off by default, and
        a name that is not a token is refused with one line.
        """
        options = Options()
        options.parseOptions(["--demo", "--sticky-cookie", "srv"])
        self.assertEqual(options.sticky(None).name, b"srv")  # type: ignore[union-attr]
        options = Options()
        options.parseOptions(["--demo"])
        self.assertIsNone(options.sticky(None))
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--demo", "--sticky-cookie", "a b"])
        self.assertEqual(
            str(caught.exception),
            "txlb: --sticky-cookie: 'a b' is not a cookie name (see twistd txlb --help)",
        )

    def test_reload(self) -> None:
        """
        A reload turns the cookie on and off.
        """
        harness = ServiceHarness(self, CONFIG)
        self.assertIsNone(harness.resource.sticky)
        harness.write(CONFIG + 'sticky-cookie = "srv"\n')
        self.assertTrue(harness.service.reload())
        self.assertEqual(harness.resource.sticky.name, b"srv")  # type: ignore[union-attr]
        harness.write(CONFIG)
        self.assertTrue(harness.service.reload())
        self.assertIsNone(harness.resource.sticky)


class StickyShadowTests(SynchronousTestCase):
    def test_shadowNotAsked(self) -> None:
        """
        A request the cookie routes was not picked by the algorithm, so a
        shadow policy is not asked about it either.
        """
        harness = Harness(self, count=3)
        resource = harness.resource
        resource.sticky = StickyCookie("srv", harness.reactor)
        resource.useShadow("roundrobin", RoundRobin)
        harness.client(request(b"srv=" + TOKENS[2]))
        harness.client(request())
        self.assertEqual(resource.shadow.compared, 1)  # type: ignore[union-attr]

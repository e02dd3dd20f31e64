"""
Tests for L{txlb.ratelimit}: C{--rate-limit} and its options, and a rate
limit on requests.
"""

from __future__ import annotations

import gc
import sys

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.algorithmrequest import makeRequest
from txlb.keytables import Buckets, Region
from txlb.ratelimit import DEFAULT_KEYS, Rate, RateLimit, defaultBurst, parseRate, parseRateKey


class ParseTests(SynchronousTestCase):
    def test_rates(self) -> None:
        """
        A rate is a whole number of requests per second, minute or hour.
        """
        for text, rate, perSecond in [
            ("100/s", Rate(100, 1.0), 100.0),
            ("6000/min", Rate(6000, 60.0), 100.0),
            ("1/h", Rate(1, 3600.0), 1 / 3600),
            ("1/s", Rate(1, 1.0), 1.0),
        ]:
            self.assertEqual(parseRate(text), rate, text)
            self.assertEqual(parseRate(text).perSecond, perSecond, text)
            self.assertEqual(str(parseRate(text)), text)

    def test_badRates(self) -> None:
        """
        Anything else is named in one line.
        """
        for text in ["100", "100/", "/s", "100/sec", "1.5/s", "-1/s", "100/S", "١٠/s", " 10/s", ""]:
            e = self.assertRaises(ValueError, parseRate, text)
            self.assertEqual(str(e), f"{text!r} is not a rate like 100/s, 6000/min or 1000/h")
        e = self.assertRaises(ValueError, parseRate, "0/s")
        self.assertEqual(str(e), "'0/s': the count must be at least 1")

    def test_keys(self) -> None:
        """
        The key is the client's address, a header or a cookie.
        """
        for text in ["ip", "header:X-Api-Key", "cookie:session"]:
            self.assertEqual(parseRateKey(text), text)

    def test_badKeys(self) -> None:
        """
        Other keys, and malformed ones, are named in one line.
        """
        for text, message in [
            ("path", "'path': the key is one of ip, header:NAME or cookie:NAME"),
            ("query:a", "'query:a': the key is one of ip, header:NAME or cookie:NAME"),
            ("host", "'host': the key is one of ip, header:NAME or cookie:NAME"),
            ("header", "'header': expected header:NAME"),
            ("header:", "'header:': expected header:NAME"),
            ("ip:x", "'ip:x': expected ip"),
            ("cookie:a b", "'cookie:a b': the name must be printable ASCII without spaces"),
        ]:
            e = self.assertRaises(ValueError, parseRateKey, text)
            self.assertEqual(str(e), message)

    def test_defaultBurst(self) -> None:
        """
        Without C{--rate-limit-burst}, a bucket holds a second's worth of
        requests, at least one.
        """
        for rate, burst in [
            (Rate(100, 1.0), 100),
            (Rate(6000, 60.0), 100),
            (Rate(90, 60.0), 2),
            (Rate(10, 60.0), 1),
            (Rate(1, 3600.0), 1),
        ]:
            self.assertEqual(defaultBurst(rate), burst, rate)


class RateLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.region = Region.create(1000)
        self.addCleanup(self.region.close)
        self.buckets = Buckets(self.region, self.clock.seconds)

    def limit(
        self, rate: str, burst: int | None = None, key: str = "ip", name: bytes = b""
    ) -> RateLimit:
        return RateLimit(self.buckets, self.region.fingerprint, parseRate(rate), burst, key, name)

    def test_perClientAddress(self) -> None:
        """
        By default each client address has its own bucket; a refusal says
        when to come back, in whole seconds.
        """
        limit = self.limit("2/s", burst=2)
        a, b = makeRequest("10.0.0.1"), makeRequest("2001:db8::1")
        self.assertEqual([limit.check(a) for _ in range(3)], [0, 0, 1])
        self.assertEqual([limit.check(b) for _ in range(3)], [0, 0, 1])

    def test_retryAfterRoundedUp(self) -> None:
        """
        C{Retry-After} is the wait rounded up to whole seconds, never 0.
        """
        limit = self.limit("1/min", burst=1)
        request = makeRequest()
        self.assertEqual(limit.check(request), 0)
        self.assertEqual(limit.check(request), 60)
        self.clock.advance(59.5)
        self.assertEqual(limit.check(request), 1)
        self.clock.advance(0.4999)
        self.assertEqual(limit.check(request), 1)
        self.clock.advance(0.0001)
        self.assertEqual(limit.check(request), 0)
        self.clock.advance(58.5)
        self.assertEqual(limit.check(request), 2)

    def test_defaultBurst(self) -> None:
        """
        Without a burst, a second's worth goes through at once.
        """
        limit = self.limit("5/s")
        self.assertEqual([limit.check(makeRequest()) for _ in range(6)], [0] * 5 + [1])

    def test_headerKey(self) -> None:
        """
        With C{header:NAME}, the header's value is the key (repeated fields
        joined), whatever the address; a request without it is not
        limited.
        """
        limit = self.limit("1/s", burst=1, key="header:X-Api-Key")
        one = makeRequest("10.0.0.1", fields=((b"X-Api-Key", b"one"),))
        alsoOne = makeRequest("10.0.0.2", fields=((b"x-api-key", b"one"),))
        two = makeRequest("10.0.0.1", fields=((b"X-Api-Key", b"two"),))
        joined = makeRequest("10.0.0.1", fields=((b"X-Api-Key", b"one"), (b"X-Api-Key", b"two")))
        self.assertEqual([limit.check(one), limit.check(alsoOne)], [0, 1])
        self.assertEqual([limit.check(two), limit.check(joined), limit.check(joined)], [0, 0, 1])
        self.assertEqual([limit.check(makeRequest("10.0.0.1")) for _ in range(5)], [0] * 5)
        empty = makeRequest("10.0.0.1", fields=((b"X-Api-Key", b""),))
        self.assertEqual([limit.check(empty) for _ in range(5)], [0] * 5)

    def test_cookieKey(self) -> None:
        """
        With C{cookie:NAME}, the cookie's value is the key.
        """
        limit = self.limit("1/s", burst=1, key="cookie:session")
        a = makeRequest(fields=((b"Cookie", b"other=1; session=abc"),))
        alsoA = makeRequest("10.9.9.9", fields=((b"Cookie", b"session=abc"),))
        b = makeRequest(fields=((b"Cookie", b"session=xyz"),))
        self.assertEqual([limit.check(a), limit.check(alsoA), limit.check(b)], [0, 1, 0])
        self.assertEqual([limit.check(makeRequest()) for _ in range(3)], [0] * 3)

    def test_limitsApart(self) -> None:
        """
        Limits of different names (one per route) sharing the buckets count
        apart, even for the same key.
        """
        first, second = self.limit("1/s", 1, name=b"api"), self.limit("1/s", 1, name=b"web")
        request = makeRequest()
        self.assertEqual([first.check(request), second.check(request)], [0, 0])
        self.assertEqual([first.check(request), second.check(request)], [1, 1])

    def test_boundedMemory(self) -> None:
        """
        A million distinct keys against the default C{--rate-limit-keys}:
        the process grows by no more than the buckets' table (24 bytes a
        key, allocated as first used) plus 1 MiB of slack, and once the
        table is full, new keys leave the Python heap as it was.
        """
        region = Region.create(DEFAULT_KEYS)
        self.addCleanup(region.close)
        limit = RateLimit(Buckets(region, self.clock.seconds), region.fingerprint, Rate(10, 1.0))
        tableBytes = region.clientsOffset - region.bucketsOffset
        self.assertEqual(tableBytes, 2_400_256)
        checkKey = limit.checkKey
        gc.collect()
        rssBefore = residentBytes()
        for index in range(1_000_000):
            checkKey(b"%d" % index)
        gc.collect()
        self.assertLess(residentBytes() - rssBefore, tableBytes + 1024 * 1024)
        self.assertEqual(len(limit._buckets), DEFAULT_KEYS)
        try:
            import tracemalloc
        except ImportError:
            # PyPy has none.
            return
        # tracemalloc slows every allocation down: a sample.
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        heapBefore = tracemalloc.get_traced_memory()[0]
        for index in range(1_000_000, 1_020_000):
            checkKey(b"%d" % index)
        gc.collect()
        self.assertLess(tracemalloc.get_traced_memory()[0] - heapBefore, 4096)


def residentBytes() -> int:
    """
    This process's resident memory, from Linux's C{/proc/self/statm}.
    """
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import mmap

    return pages * mmap.PAGESIZE


if sys.platform != "linux":
    RateLimitTests.test_boundedMemory.skip = "reads /proc/self/statm"  # type: ignore[attr-defined]

"""
How the router reads request-targets and hosts (L{txlb.paths}), table by
table.
"""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txlb.paths import (
    Target,
    normalizeHost,
    normalizePath,
    otherReadings,
    parseQuery,
    percentEncoded,
    segmentsAfter,
    splitTarget,
)

#: Path segments, ordinary and troublesome, for the properties below.
SEGMENTS = st.sampled_from(
    [b"a", b"b", b"", b".", b"..", b"%2e", b"%2E%2e", b"%61", b"%2F", b"a;b", b"..;", b"%7E"]
)
PATHS = st.lists(SEGMENTS, max_size=8).map(lambda segments: b"/" + b"/".join(segments))


class SplitTargetTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: a request-target, its authority, path and query, and where
        the path lies in it.
        """
        table = [
            (b"/", Target(None, b"/", None, 0, 1)),
            (b"/a/b?x=1&y", Target(None, b"/a/b", b"x=1&y", 0, 4)),
            (b"/a?", Target(None, b"/a", b"", 0, 2)),
            (b"/a??b", Target(None, b"/a", b"?b", 0, 2)),
            # A fragment is no part of the path or the query...
            (b"/a#f", Target(None, b"/a", None, 0, 2)),
            (b"/a?q#f", Target(None, b"/a", b"q", 0, 2)),
            # ... even when a "?" follows it (RFC 3986 section 3.5).
            (b"/a#f?q", Target(None, b"/a", None, 0, 2)),
            # Absolute form: the authority is the host the client means.
            (
                b"http://Example.com:8080/p?q",
                Target(b"Example.com:8080", b"/p", b"q", 23, 25),
            ),
            (b"HTTPS://h", Target(b"h", b"", None, 9, 9)),
            (b"http://h?q", Target(b"h", b"", b"q", 8, 8)),
            (b"http://[::1]:80/", Target(b"[::1]:80", b"/", None, 15, 16)),
            # Authority form (CONNECT) has no path; the asterisk form's is *.
            (b"example.com:443", Target(b"example.com:443", None, None, 15, 15)),
            (b"*", Target(None, b"*", None, 0, 1)),
        ]
        for target, expected in table:
            self.assertEqual(splitTarget(target), expected, target)


class NormalizePathTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: a path, what routes are matched against.
        """
        table = [
            (b"/", b"/"),
            (b"", b"/"),
            (b"*", b"*"),
            (b"/static/a.css", b"/static/a.css"),
            # Unreserved characters decoded, in either hex case.
            (b"/%61dmin", b"/admin"),
            (b"/%41%42", b"/AB"),
            (b"/a%2d%2E%5f%7e", b"/a-._~"),
            # Other escapes stay, in upper case: %2F stays in its segment.
            (b"/a%2fb", b"/a%2Fb"),
            (b"/a%5cb", b"/a%5Cb"),
            (b"/caf%c3%a9", b"/caf%C3%A9"),
            (b"/a%20b%3B", b"/a%20b%3B"),
            (b"/a%zz%4", b"/a%zz%4"),
            # Runs of / merged.
            (b"//admin", b"/admin"),
            (b"/a///b//", b"/a/b/"),
            # Dot segments removed, encoded or not.
            (b"/./admin", b"/admin"),
            (b"/x/../admin", b"/admin"),
            (b"/%2e%2e/admin", b"/admin"),
            (b"/x/%2E%2e/admin", b"/admin"),
            (b"/../../admin", b"/admin"),
            (b"/a/b/..", b"/a/"),
            (b"/a/b/.", b"/a/b/"),
            (b"/a/..", b"/"),
            (b"/..", b"/"),
            # Slashes merged before dot segments go, as nginx and POSIX do.
            (b"/a//../b", b"/b"),
            # Dots inside a segment are data.
            (b"/a/.hidden/..x/x..", b"/a/.hidden/..x/x.."),
            # ; is data (see otherReadings), case is kept.
            (b"/admin;x/..;/B", b"/admin;x/..;/B"),
        ]
        for path, expected in table:
            self.assertEqual(normalizePath(path), expected, path)

    @given(PATHS)
    def test_idempotent(self, path: bytes) -> None:
        """
        A normalized path normalizes to itself, with no empty or dot
        segment left.
        """
        once = normalizePath(path)
        self.assertEqual(normalizePath(once), once)
        self.assertNotIn(b"//", once)
        self.assertNotIn(b".", once.split(b"/"))
        self.assertNotIn(b"..", once.split(b"/"))


class OtherReadingsTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: a target, and the other normalized paths servers may read
        in it.
        """
        table = [
            (b"/admin", []),
            (b"/a%20b/%2e%2e/c?x=%2F;#", []),
            # Tomcat and Jetty strip ;parameters.
            (b"/admin;x", [b"/admin"]),
            (b"/v1/..;/internal/x", [b"/internal/x"]),
            # Encoded separators decoded.
            (b"/admin%2f", [b"/admin/"]),
            (b"/x%2F..%2Fadmin", [b"/admin"]),
            (b"/x%5c..%5cadmin", [b"/admin"]),
            # A backslash as a separator.
            (b"/x\\..\\admin", [b"/admin"]),
            # A # kept as data.
            (b"/public#/../admin", [b"/admin"]),
            (b"/admin#x", [b"/admin#x"]),
            # Cut at a NUL.
            (b"/admin%00.png", [b"/admin"]),
            (b"/admin\x00.png", [b"/admin"]),
            # Each combination: ;params stripped before slashes decoded.
            (b"/a;%2F..%2F", [b"/", b"/a"]),
            # An absolute-form target's path.
            (b"http://h/a;b?x", [b"/a"]),
            # No path, nothing to read.
            (b"h:443", []),
            (b"*", []),
        ]
        for target, expected in table:
            self.assertEqual(otherReadings(target, splitTarget(target)), expected, target)


class SegmentsAfterTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: a raw path, a prefix's depth in segments, what is left,
        byte for byte.
        """
        table = [
            (b"/api", 1, b"/"),
            (b"/api/", 1, b"/"),
            (b"/api/v1/users", 1, b"/v1/users"),
            (b"/api/v1/users", 2, b"/users"),
            # The rest keeps its spelling.
            (b"/api/a//b/../c/%7e", 1, b"/a//b/../c/%7e"),
            (b"//api//v1", 1, b"//v1"),
            (b"/api/./v1", 1, b"/./v1"),
            (b"/api/v1/..", 1, b"/v1/.."),
            # What normalizes into the prefix goes with it.
            (b"/%61pi/v1", 1, b"/v1"),
            (b"/./api/v1", 1, b"/v1"),
            (b"/x/../api/v1", 1, b"/v1"),
            # The rest never climbs above the cut.
            (b"/api/v1/../../api/v2", 1, b"/v2"),
            (b"/api/../api/v1/../v2", 1, b"/v1/../v2"),
        ]
        for path, depth, expected in table:
            self.assertEqual(segmentsAfter(path, depth), expected, path)

    @given(PATHS, PATHS)
    def test_restNormalizes(self, prefix: bytes, rest: bytes) -> None:
        """
        Whatever the spelling, when a path normalizes to one under a
        prefix, what is left normalizes to the rest of the normalized path,
        alone or after the prefix.
        """
        whole = normalizePath(prefix + rest)
        kept = normalizePath(prefix).rstrip(b"/")
        assume(kept and (whole == kept or whole.startswith(kept + b"/")))
        depth = kept.count(b"/")
        left = segmentsAfter(prefix + rest, depth)
        self.assertTrue(left.startswith(b"/"))
        self.assertEqual(normalizePath(kept + left).rstrip(b"/"), whole.rstrip(b"/"))
        # And on its own, as the backend reads it: nothing climbs above the
        # cut.
        self.assertEqual(normalizePath(left), whole[len(kept) :] or b"/")


class NormalizeHostTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: a Host value, the host routes compare.
        """
        table = [
            (b"example.com", b"example.com"),
            (b"Example.COM", b"example.com"),
            (b"example.com:8080", b"example.com"),
            (b"example.com:", b"example.com"),
            (b"example.com.", b"example.com"),
            (b"example.com..:443", b"example.com"),
            (b"user:pw@example.com:80", b"example.com"),
            (b"10.0.0.1:80", b"10.0.0.1"),
            (b"[::1]", b"[::1]"),
            (b"[0:0::1]:8443", b"[::1]"),
            (b"[2001:DB8::A]", b"[2001:db8::a]"),
            (b"[fe80::1%25eth0]", b"[fe80::1%25eth0]"),
            (b"[::1", b"[::1"),
            # Not a port: kept.
            (b"a:b", b"a:b"),
            # Not ASCII: only ASCII letters fold.
            ("\u00c9.example".encode(), "\u00c9.example".encode()),
            (b"", None),
            (b".", None),
            (b":80", None),
        ]
        for host, expected in table:
            self.assertEqual(normalizeHost(host), expected, host)


class ParseQueryTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Each row: a query, its parameters as an application reads them.
        """
        table = [
            (b"", {}),
            (b"a=1", {b"a": [b"1"]}),
            (b"a=1&a=2&b", {b"a": [b"1", b"2"], b"b": [b""]}),
            (b"a=x+y%20z&&%64ebug=%31", {b"a": [b"x y z"], b"debug": [b"1"]}),
            (b"a=%ZZ&b==", {b"a": [b"%ZZ"], b"b": [b"="]}),
            (b"a;b=1", {b"a;b": [b"1"]}),
        ]
        for query, expected in table:
            self.assertEqual(parseQuery(query), expected, query)


class PercentEncodedTests(SynchronousTestCase):
    def test_table(self) -> None:
        """
        Bytes outside printable ASCII, and a % that starts no escape, are
        encoded; escapes and printable bytes stay.
        """
        table = [
            (b"/a/b?c=d", b"/a/b?c=d"),
            ("/café".encode(), b"/caf%C3%A9"),
            (b"/a b\r\n\x00", b"/a%20b%0D%0A%00"),
            (b"/%2f%zz%", b"/%2f%25zz%25"),
        ]
        for data, expected in table:
            self.assertEqual(percentEncoded(data), expected, data)

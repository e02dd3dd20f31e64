"""
Tests for the pure parts of L{txlb.etcd}: reading etcd's JSON gateway
(L{txlb.etcd.gateway}), cutting a stream into lines, the backoff, the key
layout and the endpoint URLs.  The messages are those etcd 3.4.23 sends (see
C{docs/etcd.md}), with its omitted fields and numbers as strings.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from txlb.etcd import (
    Backoff,
    EtcdProtocolError,
    MessageTooLongError,
    gateway,
    parseEndpoint,
    readPassword,
    tlsSettings,
)
from txlb.etcd.layout import memberKey, memberValue, parseMember
from txlb.etcd.lines import LineBuffer

_HEADER = {
    "cluster_id": "15118495548433857066",
    "member_id": "13668033151171901709",
    "revision": "3",
    "raft_term": "2",
}


class EncodingTests(SynchronousTestCase):
    def test_prefixEnd(self) -> None:
        """
        A prefix's range ends at the prefix with its last byte plus one,
        carrying past 0xff; with no byte to increment, at C{\\0} (all keys).
        """
        cases = [
            (b"/txlb/", b"/txlb0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"a\xfe\xff\xff", b"a\xff"),
            (b"\xff\xff", b"\0"),
            (b"", b"\0"),
        ]
        for prefix, end in cases:
            self.assertEqual(gateway.prefixEnd(prefix), end, prefix)

    def test_encode(self) -> None:
        """
        Keys and values go as base64, as the research notes show for
        C{/txlb/}.
        """
        self.assertEqual(gateway.encode(b"/txlb/"), "L3R4bGIv")
        self.assertEqual(gateway.encode(b"/txlb0"), "L3R4bGIw")

    def test_integer(self) -> None:
        """
        int64 fields come as strings, are accepted as numbers, and are 0
        when left out; anything else is a protocol error.
        """
        self.assertEqual(gateway.integer({"revision": "12"}, "revision"), 12)
        self.assertEqual(gateway.integer({"revision": 12}, "revision"), 12)
        self.assertEqual(gateway.integer({"watch_id": "-1"}, "watch_id"), -1)
        self.assertEqual(gateway.integer({}, "revision"), 0)
        self.assertEqual(gateway.integer({"ID": "7587869580553435398"}, "ID"), 7587869580553435398)
        for bad in ["", "12a", "1.5", "٣", True, 1.5, [], {}]:
            self.assertRaises(EtcdProtocolError, gateway.integer, {"revision": bad}, "revision")

    def test_data(self) -> None:
        """
        Bytes fields are base64, empty when left out; anything else is a
        protocol error.
        """
        self.assertEqual(gateway.data({"value": "eA=="}, "value"), b"x")
        self.assertEqual(gateway.data({}, "value"), b"")
        for bad in ["e", "eA=", "e A==", "!!!!", 3]:
            self.assertRaises(EtcdProtocolError, gateway.data, {"value": bad}, "value")

    def test_parseObject(self) -> None:
        """
        An answer must be a JSON object; the error shows its start on one
        line.
        """
        self.assertEqual(gateway.parseObject(b'{"a": 1}', "x"), {"a": 1})
        error = self.assertRaises(EtcdProtocolError, gateway.parseObject, b"<html>\n<b>", "range")
        self.assertEqual(str(error), "range: not JSON: '<html> <b>'")
        error = self.assertRaises(EtcdProtocolError, gateway.parseObject, b"[1]", "range")
        self.assertEqual(str(error), "range: not a JSON object: '[1]'")


class AnswerTests(SynchronousTestCase):
    def test_rangeOfAMissingKey(self) -> None:
        """
        A key that does not exist answers only a header: no kvs, no count.
        """
        result = gateway.rangeResult({"header": _HEADER})
        self.assertEqual(result, gateway.RangeResult(3, [], 0, False))

    def test_range(self) -> None:
        """
        Each key's fields are read with their defaults (no lease, no
        value).
        """
        result = gateway.rangeResult(
            {
                "header": _HEADER,
                "kvs": [
                    {
                        "key": "L3R4bGIvYQ==",
                        "create_revision": "2",
                        "mod_revision": "3",
                        "version": "2",
                        "value": "eA==",
                        "lease": "7587869580553435398",
                    },
                    {"key": "L3R4bGIvYg==", "create_revision": "3", "mod_revision": "3"},
                ],
                "count": "2",
                "more": True,
            }
        )
        self.assertEqual(
            result,
            gateway.RangeResult(
                3,
                [
                    gateway.KeyValue(b"/txlb/a", b"x", 2, 3, 2, 7587869580553435398),
                    gateway.KeyValue(b"/txlb/b", b"", 3, 3, 0, 0),
                ],
                2,
                True,
            ),
        )

    def test_rangeOfTheWrongShape(self) -> None:
        """
        kvs that is not a list of objects is a protocol error, not a
        crash.
        """
        for kvs in ["x", [1], [{"key": 1}]]:
            self.assertRaises(EtcdProtocolError, gateway.rangeResult, {"kvs": kvs})

    def test_txn(self) -> None:
        """
        A failed comparison leaves C{succeeded} out.
        """
        self.assertEqual(
            gateway.txnResult({"header": _HEADER, "succeeded": True}), gateway.TxnResult(True, 3)
        )
        self.assertEqual(gateway.txnResult({"header": _HEADER}), gateway.TxnResult(False, 3))

    def test_errorAnswer(self) -> None:
        """
        An error answer gives etcd's message and gRPC code; a body that is
        not one gives an excerpt and 0.
        """
        body = b'{"error":"etcdserver: permission denied","message":"etcdserver: permission denied","code":7}'
        self.assertEqual(gateway.errorAnswer(body), ("etcdserver: permission denied", 7))
        self.assertEqual(gateway.errorAnswer(b'{"error":"x"}'), ("x", 0))
        self.assertEqual(gateway.errorAnswer(b"Not Found\n"), ("'Not Found'", 0))
        self.assertEqual(gateway.errorAnswer(b"{}"), ("'{}'", 0))


class WatchMessageTests(SynchronousTestCase):
    def test_created(self) -> None:
        """
        The first message of a watch: created, no watch_id (it is 0).
        """
        result = gateway.watchResult({"header": _HEADER, "created": True})
        self.assertEqual(result, gateway.WatchResult(3, True, False, 0, "", []))
        self.assertFalse(result.isProgressNotify)

    def test_putAndDelete(self) -> None:
        """
        A PUT event has no type; a DELETE event's key holds only the key
        and its revision.
        """
        result = gateway.watchResult(
            {
                "header": {**_HEADER, "revision": "7"},
                "events": [
                    {
                        "kv": {
                            "key": "YQ==",
                            "create_revision": "7",
                            "mod_revision": "7",
                            "version": "1",
                            "value": "eA==",
                        }
                    },
                    {"type": "DELETE", "kv": {"key": "Yg==", "mod_revision": "7"}},
                ],
            }
        )
        self.assertEqual(
            result.events,
            [
                gateway.Event(gateway.PUT, gateway.KeyValue(b"a", b"x", 7, 7, 1, 0)),
                gateway.Event(gateway.DELETE, gateway.KeyValue(b"b", b"", 0, 7, 0, 0)),
            ],
        )
        self.assertFalse(result.isProgressNotify)

    def test_unknownEventType(self) -> None:
        """
        An event type other than PUT and DELETE is a protocol error.
        """
        self.assertRaises(
            EtcdProtocolError, gateway.watchResult, {"events": [{"type": "TOUCH", "kv": {}}]}
        )

    def test_progressNotify(self) -> None:
        """
        A header alone is a progress notification (etcd's periodic one, or
        the answer to a progress request, with watch_id -1).
        """
        self.assertTrue(gateway.watchResult({"header": _HEADER}).isProgressNotify)
        self.assertTrue(gateway.watchResult({"header": _HEADER, "watch_id": "-1"}).isProgressNotify)

    def test_compacted(self) -> None:
        """
        A cancellation for compaction has no header revision, and the
        compaction's revision.
        """
        result = gateway.watchResult(
            {"header": {"raft_term": "2"}, "canceled": True, "compact_revision": "6"}
        )
        self.assertEqual(result, gateway.WatchResult(0, False, True, 6, "", []))
        self.assertFalse(result.isProgressNotify)

    def test_canceledWithReason(self) -> None:
        """
        A watch refused by authentication: created and canceled at once,
        with the reason.
        """
        reason = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        result = gateway.watchResult(
            {
                "header": _HEADER,
                "watch_id": "-1",
                "created": True,
                "canceled": True,
                "cancel_reason": reason,
            }
        )
        self.assertEqual(result, gateway.WatchResult(3, True, True, 0, reason, []))

    def test_streamError(self) -> None:
        """
        The error line etcd sends in a stream after the 200 reads as one
        line; any other message is not one.
        """
        line = json.loads(
            '{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}'
        )
        self.assertEqual(
            gateway.streamError(line), ("transport is closing (HTTP 503, code 14)", 503)
        )
        self.assertIsNone(gateway.streamError({"result": {"header": _HEADER}}))
        self.assertIsNone(gateway.streamError({"header": _HEADER, "error": "too many leases"}))


class LineBufferTests(SynchronousTestCase):
    def test_lines(self) -> None:
        """
        Lines come out whole however the chunks cut them, without their
        newline; empty lines are skipped.
        """
        stream = b'{"a":1}\n{"b":2}\r\n\n{"c":3}\n'
        expected = [b'{"a":1}', b'{"b":2}', b'{"c":3}']
        for size in range(1, len(stream) + 1):
            lines = LineBuffer(100)
            out = []
            for i in range(0, len(stream), size):
                out.extend(lines.feed(stream[i : i + size]))
            self.assertEqual(out, expected, size)
            self.assertEqual(lines.rest(), b"")

    def test_rest(self) -> None:
        """
        What follows the last newline is kept for the end of the stream.
        """
        lines = LineBuffer(100)
        self.assertEqual(lines.feed(b'{"a":1}\n{"err'), [b'{"a":1}'])
        self.assertEqual(lines.feed(b'or":1}'), [])
        self.assertEqual(lines.rest(), b'{"error":1}')
        self.assertEqual(lines.rest(), b"")

    def test_tooLong(self) -> None:
        """
        A line longer than the limit is an error as soon as it is longer,
        whether it arrives whole or in pieces; one at the limit is fine.
        """
        self.assertEqual(LineBuffer(5).feed(b"12345\n"), [b"12345"])
        self.assertRaises(MessageTooLongError, LineBuffer(5).feed, b"123456\n")
        lines = LineBuffer(5)
        lines.feed(b"123")
        self.assertRaises(MessageTooLongError, lines.feed, b"456")
        lines = LineBuffer(5)
        lines.feed(b"123")
        self.assertRaises(MessageTooLongError, lines.feed, b"456\n")


class BackoffTests(SynchronousTestCase):
    def test_doublesUpToTheCap(self) -> None:
        """
        Each wait doubles, up to the cap, drawn from the upper half of its
        ceiling; a reset starts again.
        """
        draws = iter([0.0, 1.0, 0.0, 1.0, 0.5, 0.0])
        backoff = Backoff(0.5, 3.0, lambda: next(draws))
        self.assertEqual([backoff.next() for _ in range(5)], [0.25, 1.0, 1.0, 3.0, 2.25])
        backoff.reset()
        self.assertEqual(backoff.next(), 0.25)

    def test_manyFailures(self) -> None:
        """
        However many failures in a row, the wait stays at the cap.
        """
        backoff = Backoff(0.5, 10.0, lambda: 1.0)
        self.assertEqual([backoff.next() for _ in range(100)][-1], 10.0)


class LayoutTests(SynchronousTestCase):
    def test_memberKey(self) -> None:
        """
        A backend's key in a pool; an IPv6 address in brackets.
        """
        self.assertEqual(memberKey("api", "10.0.0.1:8080"), "pools/api/backends/10.0.0.1:8080")
        self.assertEqual(memberKey("api", "[::1]:8080"), "pools/api/backends/[::1]:8080")
        self.assertEqual(memberValue(2), b'{"weight": 2}')

    def test_badMemberKey(self) -> None:
        """
        A pool name with a slash, an empty one, or an address that is not
        HOST:PORT is refused with one line.
        """
        for pool, address, message in [
            ("a/b", "h:1", "'a/b' is not a pool name (one path segment)"),
            ("", "h:1", "'' is not a pool name (one path segment)"),
            ("api", "h", "'h': missing port (expected HOST:PORT)"),
            ("api", "h:1=2", "'h:1=2' is not HOST:PORT"),
        ]:
            error = self.assertRaises(ValueError, memberKey, pool, address)
            self.assertEqual(str(error), message)

    def test_parseMember(self) -> None:
        """
        A member key and value give the pool and the backend with its
        weight: 1 for an empty value or one without a weight; keys that are
        not member keys give None.
        """
        cases = [
            ("pools/api/backends/10.0.0.1:8080", b'{"weight": 3}', ("api", "10.0.0.1:8080", 3)),
            ("pools/api/backends/[::1]:80", b"", ("api", "[::1]:80", 1)),
            ("pools/web/backends/web1:80", b'{"tls": false}', ("web", "web1:80", 1)),
        ]
        for key, value, (pool, address, weight) in cases:
            found = parseMember(key, value)
            assert found is not None
            self.assertEqual((found[0], found[1].address, found[1].weight), (pool, address, weight))
        for key in [
            "config.toml",
            "pools/api",
            "pools/api/weights/h:1",
            "state/x/y/z",
            "pools/a/b/c/d",
        ]:
            self.assertIsNone(parseMember(key, b""))

    def test_badMember(self) -> None:
        """
        A member whose address, value or weight cannot be read is refused
        with one line naming the key.
        """
        for key, value, message in [
            (
                "pools/api/backends/nope",
                b"",
                "pools/api/backends/nope: 'nope': missing port (expected HOST:PORT)",
            ),
            ("pools//backends/h:1", b"", "pools//backends/h:1: no pool name"),
            (
                "pools/api/backends",
                b"",
                "pools/api/backends: expected pools/NAME/backends/HOST:PORT",
            ),
            (
                "pools/api/backends/h:1/",
                b"",
                "pools/api/backends/h:1/: expected pools/NAME/backends/HOST:PORT",
            ),
            (
                "pools/api/backends/h:1",
                b"2",
                'pools/api/backends/h:1: the value is not a JSON object like {"weight": 2}',
            ),
            (
                "pools/api/backends/h:1",
                b"{",
                'pools/api/backends/h:1: the value is not a JSON object like {"weight": 2}',
            ),
            (
                "pools/api/backends/h:1",
                b'{"weight": 0}',
                "pools/api/backends/h:1: the weight must be a whole number from 1 to 1000",
            ),
            (
                "pools/api/backends/h:1",
                b'{"weight": "2"}',
                "pools/api/backends/h:1: the weight must be a whole number from 1 to 1000",
            ),
            (
                "pools/api/backends/h:1",
                b'{"weight": true}',
                "pools/api/backends/h:1: the weight must be a whole number from 1 to 1000",
            ),
        ]:
            error = self.assertRaises(ValueError, parseMember, key, value)
            self.assertEqual(str(error), message)


class EndpointTests(SynchronousTestCase):
    def test_parseEndpoint(self) -> None:
        """
        An endpoint is http(s)://HOST[:PORT], port 2379 by default.
        """
        cases = [
            ("http://127.0.0.1:2379", "http://127.0.0.1:2379"),
            ("http://127.0.0.1", "http://127.0.0.1:2379"),
            ("https://etcd.example:12379/", "https://etcd.example:12379"),
            (" http://[::1]:2379 ", "http://[::1]:2379"),
        ]
        for text, url in cases:
            self.assertEqual(parseEndpoint(text), url)

    def test_badEndpoint(self) -> None:
        """
        Anything else is refused with one line.
        """
        for text, message in [
            ("127.0.0.1:2379", "'127.0.0.1:2379': expected http://HOST:PORT or https://HOST:PORT"),
            (
                "unix:///run/etcd",
                "'unix:///run/etcd': expected http://HOST:PORT or https://HOST:PORT",
            ),
            ("http://", "'http://': no host"),
            ("http://h:99999", "'http://h:99999': Port out of range 0-65535"),
            ("http://h:0", "'http://h:0': port 0 is not a port etcd listens on"),
            (
                "http://h:2379/v3",
                "'http://h:2379/v3': expected only SCHEME://HOST:PORT, with no path",
            ),
            (
                "http://u:p@h:2379",
                "'http://u:p@h:2379': expected only SCHEME://HOST:PORT, with no path",
            ),
        ]:
            error = self.assertRaises(ValueError, parseEndpoint, text)
            self.assertEqual(str(error), message)


class OptionFileTests(SynchronousTestCase):
    """
    What C{--etcd-password-file}, C{--etcd-ca}, C{--etcd-cert} and
    C{--etcd-key} name.
    """

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(data)
        return path

    def test_password(self) -> None:
        """
        The password is the first line, without its end.
        """
        for data in [b"s3cret", b"s3cret\n", b"s3cret\r\n", b"s3cret\nignored\n"]:
            self.assertEqual(readPassword(self.write(data)), "s3cret")
        self.assertEqual(readPassword(self.write(b" pass word \n")), " pass word ")

    def test_badPasswordFile(self) -> None:
        """
        A file that is missing, empty or not UTF-8 is one line.
        """
        missing = self.mktemp()
        for path, message in [
            (missing, f"--etcd-password-file: {missing}: No such file or directory"),
            (self.write(b""), "no password on its first line"),
            (self.write(b"\nsecret"), "no password on its first line"),
            (self.write(b"\xff\n"), "the password is not UTF-8"),
        ]:
            error = self.assertRaises(ValueError, readPassword, path)
            self.assertTrue(str(error).endswith(message), str(error))
            self.assertEqual(len(str(error).splitlines()), 1)

    def test_tlsErrors(self) -> None:
        """
        TLS files that cannot be used are one line naming the option.
        """
        empty = self.write(b"")
        for arguments, message in [
            ((None, empty, None), "--etcd-cert and --etcd-key go together: give both"),
            ((empty, None, None), f"--etcd-ca: {empty}: no PEM certificate in the file"),
            ((None, empty, empty), f"--etcd-cert: {empty}: no PEM certificate in the file"),
        ]:
            error = self.assertRaises(ValueError, tlsSettings, *arguments)
            self.assertEqual(str(error), message)

"""
In-memory tests for L{txlb.etcd.client.EtcdClient}: the requests it sends
to etcd's JSON gateway, how it reads the answers (with the gateway's traps),
its endpoints, timeouts and authentication, and its watch streams however
their bytes are cut.  C{tests/test_etcd_real.py} runs the same calls against
a real etcd.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.etcdfake import (
    OPEN,
    Fixture,
    b64,
    created,
    error,
    events,
    header,
    line,
    rangeAnswer,
)
from txlb.etcd import (
    Delete,
    EtcdAuthError,
    EtcdProtocolError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    MessageTooLongError,
    Put,
    WatchCanceledError,
    WatchCompactedError,
    WatchEndedError,
    WatchResult,
    WatchStream,
)
from txlb.etcd.gateway import DELETE, PUT


def run(fixture: Fixture, coroutine: Any) -> Deferred[Any]:
    """
    Start a client call and deliver what the gateway answers.
    """
    d = Deferred.fromCoroutine(coroutine)
    fixture.stub.flush()
    return d


class _ClientTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.etcd = Fixture()
        self.gateway = self.etcd.gateway

    def call(self, coroutine: Any) -> Any:
        return self.successResultOf(run(self.etcd, coroutine))

    def fail_(self, coroutine: Any, *errors: type[Exception]) -> Exception:
        failure: Failure = self.failureResultOf(run(self.etcd, coroutine), *errors)
        return failure.value


class KeyValueTests(_ClientTestCase):
    def test_rangeOfAKey(self) -> None:
        """
        A read sends the key in base64 and reads the keys answered.
        """
        self.gateway.queue("/v3/kv/range", rangeAnswer(4, {b"/txlb/a": b"x"}))
        result = self.call(self.etcd.client.range(b"/txlb/a"))
        self.assertEqual(self.gateway.received[0].body, {"key": b64(b"/txlb/a")})
        self.assertEqual(self.gateway.received[0].endpoint, "etcd1:2379")
        self.assertEqual(result.revision, 4)
        self.assertEqual([(kv.key, kv.value) for kv in result.kvs], [(b"/txlb/a", b"x")])

    def test_rangeOfAPrefix(self) -> None:
        """
        A prefix read sends the end of the prefix's range; count_only when
        asked.
        """
        self.gateway.queue("/v3/kv/range", rangeAnswer(4, {}), b'{"header":{},"count":"3"}')
        result = self.call(self.etcd.client.range(b"/txlb/", prefix=True))
        self.assertEqual(result.kvs, [])
        result = self.call(self.etcd.client.range(b"/txlb/", prefix=True, countOnly=True))
        self.assertEqual(result.total, 3)
        self.assertEqual(
            [r.body for r in self.gateway.received],
            [
                {"key": "L3R4bGIv", "range_end": "L3R4bGIw"},
                {"key": "L3R4bGIv", "range_end": "L3R4bGIw", "count_only": True},
            ],
        )

    def test_put(self) -> None:
        """
        A put sends its lease as an int64 string and answers the revision.
        """
        self.gateway.queue("/v3/kv/put", json.dumps({"header": header(9)}).encode())
        self.assertEqual(self.call(self.etcd.client.put(b"k", b"v", lease=2**62 + 1)), 9)
        self.assertEqual(
            self.gateway.received[0].body,
            {"key": b64(b"k"), "value": b64(b"v"), "lease": str(2**62 + 1)},
        )

    def test_delete(self) -> None:
        """
        A delete answers the revision and how many keys went (none: the
        field is left out).
        """
        self.gateway.queue(
            "/v3/kv/deleterange",
            json.dumps({"header": header(5), "deleted": "2"}).encode(),
            json.dumps({"header": header(5)}).encode(),
        )
        self.assertEqual(self.call(self.etcd.client.delete(b"/p/", prefix=True)), (5, 2))
        self.assertEqual(self.call(self.etcd.client.delete(b"/p/x")), (5, 0))
        self.assertEqual(
            [r.body for r in self.gateway.received],
            [{"key": b64(b"/p/"), "range_end": b64(b"/p0")}, {"key": b64(b"/p/x")}],
        )

    def test_txn(self) -> None:
        """
        A transaction sends its changes as one success list, with its
        conditions on mod revisions.
        """
        self.gateway.queue(
            "/v3/kv/txn", json.dumps({"header": header(7), "succeeded": True}).encode()
        )
        result = self.call(
            self.etcd.client.txn(
                [Put(b"a", b"1"), Put(b"b", b"2", lease=5), Delete(b"c"), Delete(b"d/", True)],
                {b"a": 0, b"b": 6},
            )
        )
        self.assertEqual(result, (True, 7))
        self.assertEqual(
            self.gateway.received[0].body,
            {
                "success": [
                    {"request_put": {"key": b64(b"a"), "value": b64(b"1")}},
                    {"request_put": {"key": b64(b"b"), "value": b64(b"2"), "lease": "5"}},
                    {"request_delete_range": {"key": b64(b"c")}},
                    {"request_delete_range": {"key": b64(b"d/"), "range_end": b64(b"d0")}},
                ],
                "compare": [
                    {"key": b64(b"a"), "target": "MOD", "result": "EQUAL", "mod_revision": "0"},
                    {"key": b64(b"b"), "target": "MOD", "result": "EQUAL", "mod_revision": "6"},
                ],
            },
        )

    def test_txnNotSucceeded(self) -> None:
        """
        A transaction whose condition failed answers without C{succeeded}.
        """
        self.gateway.queue("/v3/kv/txn", json.dumps({"header": header(7)}).encode())
        self.assertEqual(self.call(self.etcd.client.txn([Put(b"a", b"1")], {b"a": 3})), (False, 7))


class LeaseTests(_ClientTestCase):
    def test_grant(self) -> None:
        """
        A lease's ID and TTL come as strings.
        """
        self.gateway.queue(
            "/v3/lease/grant",
            json.dumps({"header": header(2), "ID": "7587869580553435398", "TTL": "2"}).encode(),
        )
        lease = self.call(self.etcd.client.grant(1))
        self.assertEqual(lease, (7587869580553435398, 2))
        self.assertEqual(self.gateway.received[0].body, {"TTL": "1"})

    def test_grantRefused(self) -> None:
        """
        A grant answered with an C{error} field fails with it.
        """
        self.gateway.queue("/v3/lease/grant", b'{"header":{},"error":"too many leases"}')
        error = self.fail_(self.etcd.client.grant(5), EtcdRequestError)
        self.assertEqual(str(error), "etcd refused a lease: too many leases")

    def test_keepAlive(self) -> None:
        """
        A renewal answers the TTL inside C{result}; with no TTL the lease
        is gone.
        """
        self.gateway.queue(
            "/v3/lease/keepalive",
            line({"result": {"header": header(3), "ID": "12", "TTL": "5"}}),
            line({"result": {"header": header(3), "ID": "12"}}),
        )
        self.assertEqual(self.call(self.etcd.client.keepAlive(12)), 5)
        self.assertIsNone(self.call(self.etcd.client.keepAlive(12)))
        self.assertEqual(self.gateway.received[0].body, {"ID": "12"})

    def test_revoke(self) -> None:
        """
        Revoking a lease that is gone answers False, not an error.
        """
        self.gateway.queue(
            "/v3/lease/revoke",
            json.dumps({"header": header(3)}).encode(),
            error(404, 5, "etcdserver: requested lease not found"),
        )
        self.assertTrue(self.call(self.etcd.client.revoke(12)))
        self.assertFalse(self.call(self.etcd.client.revoke(12)))


class ErrorTests(_ClientTestCase):
    def test_errorAnswer(self) -> None:
        """
        An error answer is an L{EtcdRequestError} with one line: the
        endpoint, etcd's message and the status.
        """
        self.gateway.queue("/v3/kv/put", error(403, 7, "etcdserver: permission denied"))
        error_ = self.fail_(self.etcd.client.put(b"k", b"v"), EtcdRequestError)
        self.assertEqual(
            str(error_), "etcd http://etcd1:2379: etcdserver: permission denied (HTTP 403)"
        )
        assert isinstance(error_, EtcdRequestError)
        self.assertEqual((error_.status, error_.code), (403, 7))

    def test_notJSON(self) -> None:
        """
        An answer that is not JSON is a protocol error.
        """
        self.gateway.queue("/v3/kv/range", b"<html>")
        error_ = self.fail_(self.etcd.client.range(b"k"), EtcdProtocolError)
        self.assertEqual(str(error_), "etcd http://etcd1:2379/v3/kv/range: not JSON: '<html>'")

    def test_tooLong(self) -> None:
        """
        An answer longer than the limit is refused, not read on.
        """
        self.etcd = Fixture(maxMessage=100)
        self.etcd.gateway.queue("/v3/kv/range", b" " * 101)
        error_ = self.fail_(self.etcd.client.range(b"k"), MessageTooLongError)
        self.assertEqual(str(error_), "etcd http://etcd1:2379: an answer of more than 100 bytes")

    def test_errorLineAfter200(self) -> None:
        """
        An error line in a 200 (etcd stopping under a stream call) fails
        the call.
        """
        self.gateway.queue(
            "/v3/lease/keepalive",
            line({"error": {"grpc_code": 13, "http_code": 500, "message": "boom"}}),
        )
        error_ = self.fail_(self.etcd.client.keepAlive(1), EtcdRequestError)
        self.assertEqual(
            str(error_), "etcd http://etcd1:2379/v3/lease/keepalive: boom (HTTP 500, code 13)"
        )


class EndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.etcd = Fixture(("http://etcd1:2379", "http://etcd2:2379", "http://etcd3:2379"))
        self.gateway = self.etcd.gateway

    def test_nextOn503(self) -> None:
        """
        A 503 moves on to the next endpoint, which is then asked first.
        """
        self.gateway.queue(
            "/v3/kv/range",
            error(503, 14, "etcdserver: no leader"),
            rangeAnswer(3, {}),
            rangeAnswer(3, {}),
        )
        run(self.etcd, self.etcd.client.range(b"k"))
        run(self.etcd, self.etcd.client.range(b"k"))
        self.assertEqual(
            [r.endpoint for r in self.gateway.received], ["etcd1:2379", "etcd2:2379", "etcd2:2379"]
        )
        self.assertEqual(self.etcd.client.endpoint, "http://etcd2:2379")

    def test_nextOnErrorLine503(self) -> None:
        """
        An error line with HTTP 503 after a 200 moves on too.
        """
        self.gateway.queue(
            "/v3/lease/keepalive",
            line({"error": {"grpc_code": 14, "http_code": 503, "message": "transport is closing"}}),
            line({"result": {"ID": "1", "TTL": "5"}}),
        )
        self.assertEqual(self.successResultOf(run(self.etcd, self.etcd.client.keepAlive(1))), 5)
        self.assertEqual([r.endpoint for r in self.gateway.received], ["etcd1:2379", "etcd2:2379"])

    def test_allUnavailable(self) -> None:
        """
        When every endpoint answers 503 the call fails with one line giving
        each one's reason.
        """
        self.gateway.queue("/v3/kv/range", *[error(503, 14, "etcdserver: no leader")] * 3)
        failure = self.failureResultOf(
            run(self.etcd, self.etcd.client.range(b"k")), EtcdUnavailableError
        )
        self.assertEqual(
            str(failure.value),
            "etcd unreachable: http://etcd1:2379: etcdserver: no leader (HTTP 503); "
            "http://etcd2:2379: etcdserver: no leader (HTTP 503); "
            "http://etcd3:2379: etcdserver: no leader (HTTP 503)",
        )

    def test_otherErrorsDoNotMoveOn(self) -> None:
        """
        An error etcd answered (not a 503) is the answer: the next endpoint
        would answer the same.
        """
        self.gateway.queue(
            "/v3/kv/range", error(400, 11, "etcdserver: mvcc: required revision has been compacted")
        )
        self.failureResultOf(run(self.etcd, self.etcd.client.range(b"k")), EtcdRequestError)
        self.assertEqual(len(self.gateway.received), 1)

    def test_timeout(self) -> None:
        """
        An endpoint that accepts the request and says nothing fails the
        call at the timeout and closes the connection; the next call asks
        the next endpoint first.
        """
        self.gateway.queue("/v3/kv/put", OPEN, json.dumps({"header": header(3)}).encode())
        d = run(self.etcd, self.etcd.client.put(b"k", b"v"))
        self.assertNoResult(d)
        self.etcd.clock.advance(4.9)
        self.assertNoResult(d)
        self.etcd.clock.advance(0.1)
        self.etcd.stub.flush()
        failure = self.failureResultOf(d, EtcdTimeoutError)
        self.assertEqual(str(failure.value), "etcd http://etcd1:2379 did not answer within 5 s")
        self.assertTrue(self.gateway.received[0].request._disconnected)
        self.assertEqual(self.etcd.client.endpoint, "http://etcd2:2379")
        self.assertEqual(self.successResultOf(run(self.etcd, self.etcd.client.put(b"k", b"v"))), 3)
        self.assertEqual(self.gateway.received[1].endpoint, "etcd2:2379")
        self.assertEqual(self.etcd.clock.getDelayedCalls(), [])

    def test_timeoutDuringTheBody(self) -> None:
        """
        The timeout covers the body too: an answer whose head came and
        whose body stops fails at the timeout.
        """
        self.gateway.queue("/v3/lease/keepalive", OPEN)
        d = run(self.etcd, self.etcd.client.keepAlive(1))
        self.etcd.write(b'{"result":')
        self.etcd.clock.advance(5)
        self.etcd.stub.flush()
        self.failureResultOf(d, EtcdTimeoutError)

    def test_pinnedEndpoint(self) -> None:
        """
        A read pinned to an endpoint asks only it, even if another is
        first, and leaves the order alone when it answers.
        """
        self.gateway.queue("/v3/kv/range", error(503, 14, "etcdserver: no leader"))
        failure = self.failureResultOf(
            run(
                self.etcd,
                self.etcd.client.range(b"k", countOnly=True, endpoint="http://etcd3:2379"),
            ),
            EtcdUnavailableError,
        )
        self.assertEqual(
            str(failure.value),
            "etcd unreachable: http://etcd3:2379: etcdserver: no leader (HTTP 503)",
        )
        self.assertEqual(self.etcd.client.endpoint, "http://etcd1:2379")

    def test_cancel(self) -> None:
        """
        Cancelling a call closes its connection and leaves no timer.
        """
        self.gateway.queue("/v3/kv/range", OPEN)
        d = run(self.etcd, self.etcd.client.range(b"k"))
        d.cancel()
        self.etcd.stub.flush()
        self.failureResultOf(d)
        self.assertTrue(self.gateway.received[0].request._disconnected)
        self.assertEqual(self.etcd.clock.getDelayedCalls(), [])


class AuthenticationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.etcd = Fixture(user="txlb", password="secret")
        self.gateway = self.etcd.gateway

    def token(self, token: str) -> bytes:
        return json.dumps({"header": header(1), "token": token}).encode()

    def test_rawToken(self) -> None:
        """
        The client authenticates once and sends the token as the whole
        Authorization value (etcd refuses "Bearer").
        """
        self.gateway.queue("/v3/auth/authenticate", self.token("abc.1"))
        self.gateway.queue("/v3/kv/range", rangeAnswer(1, {}), rangeAnswer(1, {}))
        run(self.etcd, self.etcd.client.range(b"k"))
        run(self.etcd, self.etcd.client.range(b"k"))
        self.assertEqual(
            [(r.path, r.authorization) for r in self.gateway.received],
            [
                ("/v3/auth/authenticate", None),
                ("/v3/kv/range", "abc.1"),
                ("/v3/kv/range", "abc.1"),
            ],
        )
        self.assertEqual(self.gateway.received[0].body, {"name": "txlb", "password": "secret"})

    def test_reauthenticateOn401(self) -> None:
        """
        A token etcd no longer knows (401) is replaced and the call made
        again, once.
        """
        self.gateway.queue("/v3/auth/authenticate", self.token("abc.1"), self.token("abc.2"))
        self.gateway.queue(
            "/v3/kv/put",
            error(401, 16, "etcdserver: invalid auth token"),
            json.dumps({"header": header(4)}).encode(),
        )
        self.assertEqual(self.successResultOf(run(self.etcd, self.etcd.client.put(b"k", b"v"))), 4)
        self.assertEqual(
            [(r.path, r.authorization) for r in self.gateway.received],
            [
                ("/v3/auth/authenticate", None),
                ("/v3/kv/put", "abc.1"),
                ("/v3/auth/authenticate", None),
                ("/v3/kv/put", "abc.2"),
            ],
        )

    def test_only_once(self) -> None:
        """
        A second 401 in a row is the answer.
        """
        self.gateway.queue("/v3/auth/authenticate", self.token("abc.1"), self.token("abc.2"))
        self.gateway.queue("/v3/kv/put", *[error(401, 16, "etcdserver: invalid auth token")] * 2)
        failure = self.failureResultOf(
            run(self.etcd, self.etcd.client.put(b"k", b"v")), EtcdAuthError
        )
        self.assertEqual(
            str(failure.value), "etcd http://etcd1:2379: etcdserver: invalid auth token (HTTP 401)"
        )

    def test_authenticationOff(self) -> None:
        """
        While etcd's authentication is off the client goes on without a
        token (as etcd's own client does); once it is turned on, the
        client authenticates and repeats the call.
        """
        self.gateway.queue(
            "/v3/auth/authenticate",
            error(412, 9, "etcdserver: authentication is not enabled"),
            self.token("abc.1"),
        )
        self.gateway.queue(
            "/v3/kv/range",
            rangeAnswer(1, {}),
            error(400, 3, "etcdserver: user name is empty"),
            rangeAnswer(1, {}),
        )
        run(self.etcd, self.etcd.client.range(b"k"))
        self.successResultOf(run(self.etcd, self.etcd.client.range(b"k")))
        self.assertEqual(
            [(r.path, r.authorization) for r in self.gateway.received],
            [
                ("/v3/auth/authenticate", None),
                ("/v3/kv/range", None),
                ("/v3/kv/range", None),
                ("/v3/auth/authenticate", None),
                ("/v3/kv/range", "abc.1"),
            ],
        )

    def test_wrongPassword(self) -> None:
        """
        A refused password is one line naming the user.
        """
        self.gateway.queue(
            "/v3/auth/authenticate",
            error(400, 3, "etcdserver: authentication failed, invalid user ID or password"),
        )
        failure = self.failureResultOf(run(self.etcd, self.etcd.client.range(b"k")), EtcdAuthError)
        self.assertEqual(
            str(failure.value),
            "etcd http://etcd1:2379: cannot authenticate as 'txlb': "
            "etcdserver: authentication failed, invalid user ID or password",
        )

    def test_noUser(self) -> None:
        """
        Without a user, etcd's "user name is empty" says credentials are
        wanted.
        """
        etcd = Fixture()
        etcd.gateway.queue("/v3/kv/range", error(400, 3, "etcdserver: user name is empty"))
        failure = self.failureResultOf(run(etcd, etcd.client.range(b"k")), EtcdAuthError)
        self.assertEqual(
            str(failure.value),
            "etcd http://etcd1:2379: etcdserver: user name is empty (HTTP 400): "
            "etcd wants a user and password",
        )

    def test_watchWithAnInvalidToken(self) -> None:
        """
        A watch refused for its token (a 200 whose first message is created
        and canceled) is opened again with a new token.
        """
        self.gateway.queue("/v3/auth/authenticate", self.token("abc.1"), self.token("abc.2"))
        refused = {
            "header": header(3),
            "watch_id": "-1",
            "created": True,
            "canceled": True,
            "cancel_reason": "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token",
        }
        self.gateway.queue("/v3/watch", line({"result": refused}), OPEN)
        d = run(self.etcd, self.etcd.client.watch(b"k", lambda r: None))
        self.etcd.write(created(3))
        self.assertIsInstance(self.successResultOf(d), WatchStream)
        self.assertEqual(
            [(r.path, r.authorization) for r in self.gateway.received],
            [
                ("/v3/auth/authenticate", None),
                ("/v3/watch", "abc.1"),
                ("/v3/auth/authenticate", None),
                ("/v3/watch", "abc.2"),
            ],
        )


class WatchTests(_ClientTestCase):
    def open(self, **kwargs: Any) -> WatchStream:
        """
        Open a watch on C{/txlb/} and have etcd create it; its messages go
        to C{self.results}.
        """
        self.results: list[WatchResult] = []
        self.gateway.queue("/v3/watch", OPEN)
        d = run(
            self.etcd, self.etcd.client.watch(b"/txlb/", self.results.append, prefix=True, **kwargs)
        )
        self.assertNoResult(d)
        self.etcd.write(created(3))
        return self.successResultOf(d)

    def test_request(self) -> None:
        """
        The watch is one create request, from the revision given.
        """
        self.open(startRevision=4)
        self.assertEqual(
            self.gateway.received[0].body,
            {"create_request": {"key": "L3R4bGIv", "range_end": "L3R4bGIw", "start_revision": "4"}},
        )

    def test_messages(self) -> None:
        """
        Each message after the creation reaches the callback, in order; a
        progress notification too, recognisable as one.
        """
        stream = self.open()
        self.etcd.write(events(4, (b"/txlb/a", b"1")))
        self.etcd.write(line({"result": {"header": header(4)}}))
        self.etcd.write(events(5, (b"/txlb/a", None), (b"/txlb/b", b"2")))
        self.assertEqual([r.revision for r in self.results], [4, 4, 5])
        self.assertEqual(
            [(e.type, e.kv.key, e.kv.value) for e in self.results[2].events],
            [(DELETE, b"/txlb/a", b""), (PUT, b"/txlb/b", b"2")],
        )
        self.assertEqual([r.isProgressNotify for r in self.results], [False, True, False])
        self.assertNoResult(stream.done)

    def test_linesCutAnywhere(self) -> None:
        """
        However the chunks cut the lines, each message arrives whole, once.
        """
        self.open()
        data = (
            events(4, (b"/txlb/a", b"1"))
            + events(5, (b"/txlb/b", b"2" * 50))
            + events(6, (b"/txlb/a", None))
        )
        for size in (1, 7, 100):
            del self.results[:]
            for i in range(0, len(data), size):
                self.etcd.write(data[i : i + size])
            self.assertEqual([r.revision for r in self.results], [4, 5, 6], size)

    def test_errorLineAfter200(self) -> None:
        """
        The error line etcd sends when it stops (with no newline, then the
        end of the stream) ends the watch with its reason.
        """
        stream = self.open()
        self.etcd.write(
            b'{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing","http_status":"Service Unavailable"}}'
        )
        self.assertNoResult(stream.done)
        self.gateway.received[0].request.finish()
        self.etcd.stub.flush()
        failure = self.failureResultOf(stream.done, WatchEndedError)
        self.assertEqual(
            str(failure.value),
            "etcd http://etcd1:2379 ended the watch: transport is closing (HTTP 503, code 14)",
        )

    def test_endOfStream(self) -> None:
        """
        A stream that just ends ends the watch.
        """
        stream = self.open()
        self.gateway.received[0].request.finish()
        self.etcd.stub.flush()
        failure = self.failureResultOf(stream.done, WatchEndedError)
        self.assertEqual(str(failure.value), "etcd http://etcd1:2379 ended the watch stream")

    def test_compacted(self) -> None:
        """
        A cancellation with a compact revision (whose header has no
        revision) ends the watch with L{WatchCompactedError}, and closes the
        stream etcd leaves open.
        """
        stream = self.open(startRevision=2)
        self.etcd.write(
            line(
                {
                    "result": {
                        "header": {"raft_term": "2"},
                        "canceled": True,
                        "compact_revision": "6",
                    }
                }
            )
        )
        failure = self.failureResultOf(stream.done, WatchCompactedError)
        assert isinstance(failure.value, WatchCompactedError)
        self.assertEqual(failure.value.compactRevision, 6)
        self.assertTrue(self.gateway.received[0].request._disconnected)
        self.assertEqual(self.results, [])

    def test_canceled(self) -> None:
        """
        A cancellation without a compact revision ends the watch with
        L{WatchCanceledError}, not a compaction.
        """
        stream = self.open()
        self.etcd.write(line({"result": {"header": header(3), "canceled": True}}))
        failure = self.failureResultOf(stream.done, WatchCanceledError)
        self.assertNotIsInstance(failure.value, WatchCompactedError)
        self.assertEqual(str(failure.value), "etcd http://etcd1:2379 canceled the watch")

    def test_refusedAtCreation(self) -> None:
        """
        A watch created and canceled at once (permission denied) fails
        with the reason.
        """
        self.gateway.queue("/v3/watch", OPEN)
        d = run(self.etcd, self.etcd.client.watch(b"/x", lambda r: None))
        reason = "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
        self.etcd.write(
            line(
                {
                    "result": {
                        "header": header(3),
                        "watch_id": "-1",
                        "created": True,
                        "canceled": True,
                        "cancel_reason": reason,
                    }
                }
            )
        )
        failure = self.failureResultOf(d, WatchCanceledError)
        self.assertEqual(str(failure.value), f"etcd http://etcd1:2379 canceled the watch: {reason}")

    def test_badLines(self) -> None:
        """
        A line that is not a watch message ends the watch with a protocol
        error naming the problem.
        """
        for bad, message in [
            (b"<html>\n", "not JSON: '<html>'"),
            (b'{"header":{}}\n', "a watch message without result"),
            (b'{"result":{"events":[{"kv":{"key":"%%%"}}]}}\n', "'key' is not base64: '%%%'"),
            (b'{"result":{"header":{"revision":"x"}}}\n', "'revision' is \"x\", not an integer"),
        ]:
            self.setUp()
            stream = self.open()
            self.etcd.write(bad)
            failure = self.failureResultOf(stream.done, EtcdProtocolError)
            self.assertIn(message, str(failure.value))
            self.assertTrue(str(failure.value).startswith("etcd http://etcd1:2379 watch: "))
            self.assertTrue(self.gateway.received[0].request._disconnected)

    def test_lineTooLong(self) -> None:
        """
        A line longer than the limit ends the watch before it is all read.
        """
        self.etcd = Fixture(maxMessage=1000)
        self.gateway = self.etcd.gateway
        stream = self.open()
        self.etcd.write(b'{"result":' + b" " * 995)
        self.failureResultOf(stream.done, MessageTooLongError)

    def test_notCreatedFirst(self) -> None:
        """
        A stream whose first message is not the creation is a protocol
        error.
        """
        self.gateway.queue("/v3/watch", OPEN)
        d = run(self.etcd, self.etcd.client.watch(b"/x", lambda r: None))
        self.etcd.write(events(4, (b"/x", b"1")))
        self.failureResultOf(d, EtcdProtocolError)

    def test_creationTimeout(self) -> None:
        """
        A watch whose creation does not come within the timeout fails and
        its connection is closed.
        """
        self.gateway.queue("/v3/watch", OPEN)
        d = run(self.etcd, self.etcd.client.watch(b"/x", lambda r: None))
        self.etcd.clock.advance(5)
        self.etcd.stub.flush()
        self.failureResultOf(d, EtcdTimeoutError)
        self.assertTrue(self.gateway.received[0].request._disconnected)

    def test_stop(self) -> None:
        """
        Stopping a stream closes it; done fires with None, or fails with the
        reason given.
        """
        stream = self.open()
        stream.stop()
        self.etcd.stub.flush()
        self.assertIsNone(self.successResultOf(stream.done))
        self.assertTrue(self.gateway.received[0].request._disconnected)
        stream = self.open()
        stream.stop(ValueError("check failed"))
        self.failureResultOf(stream.done, ValueError)

    def test_cancelDone(self) -> None:
        """
        Cancelling done closes the stream and fails done with
        CancelledError, as a cancelled wait must.
        """
        stream = self.open()
        stream.done.cancel()
        self.etcd.stub.flush()
        self.failureResultOf(stream.done, CancelledError)
        self.assertTrue(self.gateway.received[0].request._disconnected)

    def test_callbackFails(self) -> None:
        """
        An exception in the callback ends the stream with it.
        """

        def fail(result: WatchResult) -> None:
            raise ZeroDivisionError()

        self.gateway.queue("/v3/watch", OPEN)
        d = run(self.etcd, self.etcd.client.watch(b"/x", fail))
        self.etcd.write(created(3))
        stream = self.successResultOf(d)
        self.etcd.write(events(4, (b"/x", b"1")))
        self.failureResultOf(stream.done, ZeroDivisionError)

    def test_notFound(self) -> None:
        """
        A watch answered with an error status fails with it.
        """
        self.gateway.queue("/v3/watch", (404, b"404 page not found\n"))
        d = run(self.etcd, self.etcd.client.watch(b"/x", lambda r: None))
        failure = self.failureResultOf(d, EtcdRequestError)
        self.assertEqual(
            str(failure.value), "etcd http://etcd1:2379: '404 page not found' (HTTP 404)"
        )

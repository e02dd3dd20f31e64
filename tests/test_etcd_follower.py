"""
In-memory tests for L{txlb.etcd.follower.EtcdFollower} and
L{txlb.etcd.registration.Registration}, over the fake gateway of
C{tests/etcdfake.py} and a clock: what they ask etcd, in which order and
when, and what they hand over and log.  C{tests/test_etcd_real.py} checks
the same behaviours against a real etcd.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import capturedLogs
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
from txlb.etcd import Backoff, EtcdFollower, Registration, Snapshot

_UNAVAILABLE = error(503, 14, "etcdserver: no leader")


def _texts(logs: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in logs]


class FollowerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.etcd = Fixture()
        self.gateway = self.etcd.gateway
        self.snapshots: list[Snapshot] = []
        # Waits of exactly the backoff's ceiling: 0.5, 1, 2, 4, 4...
        self.follower = EtcdFollower(
            self.etcd.client,
            self.snapshots.append,
            self.etcd.clock,
            backoff=Backoff(0.5, 4.0, lambda: 1.0),
        )
        self.addCleanup(lambda: self.follower.running and self.follower.stopService())

    def start(self, revision: int = 3, values: dict[bytes, bytes] | None = None) -> None:
        """
        Start following: the read answers C{values} at C{revision}, and the
        watch is created.
        """
        self.gateway.queue("/v3/kv/range", rangeAnswer(revision, values or {}))
        self.gateway.queue("/v3/watch", OPEN)
        self.follower.startService()
        self.etcd.stub.flush()
        self.etcd.write(created(revision))

    def watchStarts(self) -> list[int]:
        """
        The start revision of each watch asked for.
        """
        return [
            int(r.body["create_request"]["start_revision"])
            for r in self.gateway.requests("/v3/watch")
        ]

    def endStream(self) -> None:
        """
        End the open watch stream as etcd does when it stops.
        """
        self.etcd.write(
            b'{"error":{"grpc_code":14,"http_code":503,"message":"transport is closing"}}'
        )
        [r.request for r in self.gateway.received if not r.request.finished][-1].finish()
        self.etcd.stub.flush()

    def test_firstSnapshot(self) -> None:
        """
        The whole prefix is read and handed over, keys relative to the
        prefix, all of them changed; then watched from the next revision.
        """
        self.start(3, {b"/txlb/config.toml": b"x", b"/txlb/pools/a/backends/h:1": b""})
        self.assertEqual(
            self.snapshots,
            [
                Snapshot(
                    {"config.toml": b"x", "pools/a/backends/h:1": b""},
                    3,
                    frozenset({"config.toml", "pools/a/backends/h:1"}),
                )
            ],
        )
        self.assertEqual(
            self.gateway.requests("/v3/kv/range")[0].body,
            {"key": b64(b"/txlb/"), "range_end": b64(b"/txlb0")},
        )
        self.assertEqual(self.watchStarts(), [4])
        self.assertTrue(self.follower.connected)
        self.assertEqual(
            (self.follower.state, self.follower.endpoint), ("watching", "http://etcd1:2379")
        )

    def test_emptyFirstSnapshot(self) -> None:
        """
        An empty prefix is handed over too: the receiver learns that etcd
        holds nothing.
        """
        self.start(3)
        self.assertEqual(self.snapshots, [Snapshot({}, 3, frozenset())])

    def test_eachMessageOnce(self) -> None:
        """
        Each watch message is one call, with the keys it changed; all the
        events of a revision (a transaction) together.
        """
        self.start(3, {b"/txlb/a": b"1"})
        self.etcd.write(events(4, (b"/txlb/b", b"2")))
        self.etcd.write(events(5, (b"/txlb/a", None), (b"/txlb/c", b"3")))
        self.assertEqual(
            self.snapshots[1:],
            [
                Snapshot({"a": b"1", "b": b"2"}, 4, frozenset({"b"})),
                Snapshot({"b": b"2", "c": b"3"}, 5, frozenset({"a", "c"})),
            ],
        )
        self.assertEqual(self.follower.revision, 5)

    def test_snapshotsAreCopies(self) -> None:
        """
        A receiver may keep a snapshot: later changes do not alter it.
        """
        self.start(3, {b"/txlb/a": b"1"})
        self.etcd.write(events(4, (b"/txlb/a", b"2")))
        self.assertEqual(self.snapshots[0].values, {"a": b"1"})

    def test_noChangeNoCall(self) -> None:
        """
        A put of the value already there, a delete of a key not there and
        a progress notification change nothing: no call, but the revision
        a resume starts after moves on with the changes.
        """
        self.start(3, {b"/txlb/a": b"1"})
        self.etcd.write(events(4, (b"/txlb/a", b"1")))
        self.etcd.write(events(5, (b"/txlb/nope", None)))
        self.etcd.write(line({"result": {"header": header(9)}}))
        self.assertEqual(len(self.snapshots), 1)
        self.assertEqual(self.follower.revision, 5)

    def test_changedWithinAMessage(self) -> None:
        """
        A key put and deleted within one message (a catch-up of several
        revisions) has not changed; a key set back to its value neither.
        """
        self.start(3, {b"/txlb/a": b"1"})
        catchUp = {
            "result": {
                "header": header(7),
                "events": [
                    {"kv": {"key": b64(b"/txlb/gone"), "mod_revision": "4", "value": b64(b"x")}},
                    {"kv": {"key": b64(b"/txlb/a"), "mod_revision": "5", "value": b64(b"2")}},
                    {"type": "DELETE", "kv": {"key": b64(b"/txlb/gone"), "mod_revision": "6"}},
                    {"kv": {"key": b64(b"/txlb/a"), "mod_revision": "7", "value": b64(b"1")}},
                ],
            }
        }
        self.etcd.write(line(catchUp))
        self.assertEqual(len(self.snapshots), 1)
        self.assertEqual(self.follower.revision, 7)
        self.etcd.write(events(8, (b"/txlb/b", b"1"), (b"/txlb/b", None), (b"/txlb/a", b"3")))
        self.assertEqual(self.snapshots[1:], [Snapshot({"a": b"3"}, 8, frozenset({"a"}))])

    def test_oldEventsSkipped(self) -> None:
        """
        Events at or below the revision already applied are not applied
        again, even inside a message with newer ones.
        """
        self.start(3, {b"/txlb/a": b"1"})
        self.etcd.write(events(3, (b"/txlb/a", b"old")))
        self.assertEqual(len(self.snapshots), 1)
        catchUp = {
            "result": {
                "header": header(5),
                "events": [
                    {"kv": {"key": b64(b"/txlb/a"), "mod_revision": "2", "value": b64(b"older")}},
                    {"kv": {"key": b64(b"/txlb/b"), "mod_revision": "4", "value": b64(b"2")}},
                    {"kv": {"key": b64(b"/txlb/c"), "mod_revision": "5", "value": b64(b"3")}},
                ],
            }
        }
        self.etcd.write(line(catchUp))
        self.assertEqual(
            self.snapshots[1:],
            [Snapshot({"a": b"1", "b": b"2", "c": b"3"}, 5, frozenset({"b", "c"}))],
        )

    def test_resumeAfterDisconnect(self) -> None:
        """
        After the stream ends the follower waits, then watches again from
        the revision after the last applied, without reading again; it logs
        the loss and the return once each, however many tries it takes.
        """
        self.start(3, {b"/txlb/a": b"1"})
        self.etcd.write(events(4, (b"/txlb/a", b"2")))
        self.gateway.queue("/v3/watch", _UNAVAILABLE, _UNAVAILABLE, _UNAVAILABLE, OPEN)
        with capturedLogs() as logs:
            self.endStream()
            self.assertFalse(self.follower.connected)
            self.assertEqual(self.follower.state, "waiting")
            for wait in (0.5, 1.0, 2.0, 4.0):
                self.assertEqual(
                    len(self.gateway.requests("/v3/watch")),
                    1 + int(wait > 0.5) + int(wait > 1) + int(wait > 2),
                )
                self.etcd.clock.advance(wait)
                self.etcd.stub.flush()
            self.etcd.write(created(4))
        self.assertEqual(self.watchStarts(), [4, 5, 5, 5, 5])
        self.assertEqual(len(self.gateway.requests("/v3/kv/range")), 1)
        self.assertTrue(self.follower.connected)
        self.assertEqual(
            _texts(logs),
            [
                "etcd: etcd http://etcd1:2379 ended the watch: transport is closing (HTTP 503, code 14); "
                "keeping revision 4 of /txlb/ and retrying",
                "etcd http://etcd1:2379: following /txlb/ from revision 4",
            ],
        )
        self.etcd.write(events(5, (b"/txlb/a", b"3")))
        self.assertEqual([s.revision for s in self.snapshots], [3, 4, 5])

    def test_startWithEtcdDown(self) -> None:
        """
        Starting while etcd cannot be reached logs once and keeps trying;
        the first snapshot comes when it answers.
        """
        self.gateway.queue("/v3/kv/range", _UNAVAILABLE, _UNAVAILABLE, rangeAnswer(3, {}))
        self.gateway.queue("/v3/watch", OPEN)
        with capturedLogs() as logs:
            self.follower.startService()
            self.etcd.stub.flush()
            self.etcd.clock.advance(0.5)
            self.etcd.stub.flush()
            self.assertEqual(self.snapshots, [])
            self.etcd.clock.advance(1.0)
            self.etcd.stub.flush()
            self.etcd.write(created(3))
        self.assertEqual(self.snapshots, [Snapshot({}, 3, frozenset())])
        self.assertEqual(
            _texts(logs),
            [
                "etcd: etcd unreachable: http://etcd1:2379: etcdserver: no leader (HTTP 503); "
                "keeping revision 0 of /txlb/ and retrying",
                "etcd http://etcd1:2379: following /txlb/ from revision 3",
            ],
        )

    def test_compaction(self) -> None:
        """
        A watch cancelled for compaction is followed at once by a new read
        of the whole prefix (whatever was deleted meanwhile is gone from
        it) and a watch from after that read.
        """
        self.start(3, {b"/txlb/a": b"1", b"/txlb/b": b"2"})
        self.endStream()
        self.gateway.queue("/v3/watch", OPEN)
        self.gateway.queue("/v3/kv/range", rangeAnswer(9, {b"/txlb/b": b"2", b"/txlb/c": b"3"}))
        self.gateway.queue("/v3/watch", OPEN)
        self.etcd.clock.advance(0.5)
        self.etcd.stub.flush()
        self.etcd.write(created(9))
        with capturedLogs() as logs:
            self.etcd.write(
                line(
                    {
                        "result": {
                            "header": {"raft_term": "2"},
                            "canceled": True,
                            "compact_revision": "7",
                        }
                    }
                )
            )
            self.etcd.write(created(9))
        self.assertEqual(self.watchStarts(), [4, 4, 10])
        self.assertEqual(
            self.snapshots[1:], [Snapshot({"b": b"2", "c": b"3"}, 9, frozenset({"a", "c"}))]
        )
        self.assertEqual(
            _texts(logs),
            [
                "etcd compacted the revisions after 3 (up to 7): reading /txlb/ again",
            ],
        )

    def test_readAgainUnchanged(self) -> None:
        """
        A new read that finds what the snapshot holds is not handed over
        again.
        """
        self.start(3, {b"/txlb/a": b"1"})
        self.gateway.queue("/v3/kv/range", rangeAnswer(8, {b"/txlb/a": b"1"}))
        self.gateway.queue("/v3/watch", OPEN)
        self.etcd.write(line({"result": {"header": {}, "canceled": True, "compact_revision": "5"}}))
        self.etcd.write(created(8))
        self.assertEqual(len(self.snapshots), 1)
        self.assertEqual((self.follower.revision, self.watchStarts()), (8, [4, 9]))

    def test_tooLongReadsAgain(self) -> None:
        """
        A watch line too long (a catch-up of many revisions) is not resumed
        but replaced by a new read, which needs no catch-up.
        """
        self.etcd = Fixture(maxMessage=300)
        self.gateway = self.etcd.gateway
        self.follower = EtcdFollower(
            self.etcd.client,
            self.snapshots.append,
            self.etcd.clock,
            backoff=Backoff(0.5, 4.0, lambda: 1.0),
        )
        self.start(3)
        self.etcd.write(events(4, (b"/txlb/a", b"x" * 400)))
        self.gateway.queue("/v3/kv/range", rangeAnswer(4, {b"/txlb/a": b"y"}))
        self.gateway.queue("/v3/watch", OPEN)
        self.etcd.clock.advance(0.5)
        self.etcd.stub.flush()
        self.etcd.write(created(4))
        self.assertEqual(self.watchStarts(), [4, 5])
        self.assertEqual(self.snapshots[-1], Snapshot({"a": b"y"}, 4, frozenset({"a"})))

    def test_badLineResumes(self) -> None:
        """
        A line that cannot be parsed ends the stream; the watch resumes
        from the last revision applied.
        """
        self.start(3)
        self.etcd.write(events(4, (b"/txlb/a", b"1")))
        self.gateway.queue("/v3/watch", OPEN)
        self.etcd.write(b"{not json\n")
        self.assertFalse(self.follower.connected)
        self.etcd.clock.advance(0.5)
        self.etcd.stub.flush()
        self.etcd.write(created(4))
        self.assertEqual(self.watchStarts(), [4, 5])

    def test_probe(self) -> None:
        """
        Every probe interval the member the watch is on is asked for the
        prefix's count; when it fails the watch is closed and resumed.
        """
        self.start(3)
        self.gateway.queue("/v3/kv/range", b'{"header":{},"count":"0"}', _UNAVAILABLE)
        self.gateway.queue("/v3/watch", OPEN)
        self.etcd.clock.advance(10)
        self.etcd.stub.flush()
        self.assertTrue(self.follower.connected)
        self.assertEqual(
            self.gateway.requests("/v3/kv/range")[1].body,
            {"key": b64(b"/txlb/"), "range_end": b64(b"/txlb0"), "count_only": True},
        )
        with capturedLogs() as logs:
            self.etcd.clock.advance(10)
            self.etcd.stub.flush()
        self.assertFalse(self.follower.connected)
        self.assertTrue(self.gateway.requests("/v3/watch")[0].request._disconnected)
        self.assertEqual(
            _texts(logs),
            [
                "etcd: the check of the watch failed: etcd unreachable: http://etcd1:2379: "
                "etcdserver: no leader (HTTP 503); keeping revision 3 of /txlb/ and retrying"
            ],
        )
        self.etcd.clock.advance(0.5)
        self.etcd.stub.flush()
        self.etcd.write(created(3))
        self.assertTrue(self.follower.connected)
        self.assertEqual(self.watchStarts(), [4, 4])

    def test_probeTimeout(self) -> None:
        """
        A member that does not answer the check in time (frozen, or cut off
        from the others) has its watch closed too.
        """
        self.start(3)
        self.gateway.queue("/v3/kv/range", OPEN)
        self.etcd.clock.advance(10)
        self.etcd.stub.flush()
        self.assertTrue(self.follower.connected)
        self.etcd.clock.advance(5)
        self.etcd.stub.flush()
        self.assertFalse(self.follower.connected)

    def test_stop(self) -> None:
        """
        Stopping closes the watch and leaves no timer behind.
        """
        self.start(3)
        self.follower.stopService()
        self.etcd.stub.flush()
        self.assertTrue(self.gateway.requests("/v3/watch")[0].request._disconnected)
        self.assertEqual(self.etcd.clock.getDelayedCalls(), [])
        self.assertEqual((self.follower.state, self.follower.connected), ("stopped", False))

    def test_stopWhileWaiting(self) -> None:
        """
        Stopping while waiting to try again cancels the wait.
        """
        self.gateway.queue("/v3/kv/range", _UNAVAILABLE)
        self.follower.startService()
        self.etcd.stub.flush()
        self.follower.stopService()
        self.assertEqual(self.etcd.clock.getDelayedCalls(), [])

    def test_receiverFails(self) -> None:
        """
        A receiver that raises is logged; the follower goes on.
        """

        def receive(snapshot: Snapshot) -> None:
            self.snapshots.append(snapshot)
            if snapshot.revision == 4:
                raise ValueError("bad document")

        self.follower = EtcdFollower(self.etcd.client, receive, self.etcd.clock)
        with capturedLogs() as logs:
            self.start(3)
            self.etcd.write(events(4, (b"/txlb/a", b"1")))
            self.etcd.write(events(5, (b"/txlb/a", b"2")))
        self.assertEqual([s.revision for s in self.snapshots], [3, 4, 5])
        self.assertTrue(self.follower.connected)
        failures = [e for e in logs if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(_texts(failures), ["etcd: applying revision 4 failed"])
        self.flushLoggedErrors(ValueError)

    def test_keyNotUTF8(self) -> None:
        """
        A key that is not UTF-8 is left out, with a warning.
        """
        with capturedLogs() as logs:
            self.start(3, {b"/txlb/\xff": b"1", b"/txlb/a": b"2"})
        self.assertEqual(self.snapshots[0].values, {"a": b"2"})
        self.assertEqual(_texts(logs)[0], "etcd: ignoring key b'/txlb/\\xff', which is not UTF-8")

    def test_unexpectedError(self) -> None:
        """
        An error that is not etcd's (a bug) is logged with its traceback,
        and the follower tries again.
        """
        self.gateway.queue("/v3/kv/range", b'{"header":{"revision":"3"},"kvs":[]}')
        calls = []
        original = self.etcd.client.range

        async def failOnce(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            if len(calls) == 1:
                raise KeyError("oops")
            return await original(*args, **kwargs)

        self.etcd.client.range = failOnce  # type: ignore[method-assign]
        self.gateway.queue("/v3/watch", OPEN)
        with capturedLogs() as logs:
            self.follower.startService()
            self.etcd.clock.advance(0.5)
            self.etcd.stub.flush()
            self.etcd.write(created(3))
        self.assertTrue(self.follower.connected)
        self.assertEqual(_texts(logs)[0], "etcd: following /txlb/ failed")
        self.flushLoggedErrors(KeyError)


class RegistrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.etcd = Fixture()
        self.gateway = self.etcd.gateway
        self.registration = Registration(
            self.etcd.client,
            b"/txlb/pools/api/backends/127.0.0.1:8081",
            b'{"weight": 2}',
            self.etcd.clock,
            ttl=6,
            backoff=Backoff(0.5, 4.0, lambda: 1.0),
        )

    def lease(self, id: int, ttl: int = 6) -> bytes:
        return json.dumps({"header": header(2), "ID": str(id), "TTL": str(ttl)}).encode()

    def alive(self, id: int, ttl: int | None = 6) -> bytes:
        result: dict[str, Any] = {"header": header(2), "ID": str(id)}
        if ttl is not None:
            result["TTL"] = str(ttl)
        return line({"result": result})

    def put(self) -> bytes:
        return json.dumps({"header": header(3)}).encode()

    def paths(self) -> list[str]:
        return [r.path.rsplit("/", 1)[1] for r in self.gateway.received]

    def tick(self, seconds: float) -> None:
        self.etcd.clock.advance(seconds)
        self.etcd.stub.flush()

    def test_register(self) -> None:
        """
        A lease is granted, the key put under it, and the lease renewed
        every third of its TTL.
        """
        self.gateway.queue("/v3/lease/grant", self.lease(11))
        self.gateway.queue("/v3/kv/put", self.put())
        self.gateway.queue("/v3/lease/keepalive", self.alive(11), self.alive(11))
        with capturedLogs() as logs:
            self.registration.startService()
            self.etcd.stub.flush()
        self.assertEqual((self.registration.state, self.registration.lease), ("registered", 11))
        self.assertEqual(
            [r.body for r in self.gateway.received],
            [
                {"TTL": "6"},
                {
                    "key": b64(b"/txlb/pools/api/backends/127.0.0.1:8081"),
                    "value": b64(b'{"weight": 2}'),
                    "lease": "11",
                },
            ],
        )
        self.tick(1.9)
        self.assertEqual(self.paths(), ["grant", "put"])
        self.tick(0.1)
        self.tick(2)
        self.assertEqual(self.paths(), ["grant", "put", "keepalive", "keepalive"])
        self.assertEqual(
            _texts(logs),
            ["etcd: registered /txlb/pools/api/backends/127.0.0.1:8081 (lease b, TTL 6 s)"],
        )

    def test_raisedTTL(self) -> None:
        """
        The renewals follow the TTL etcd granted, not the one asked for.
        """
        self.gateway.queue("/v3/lease/grant", self.lease(11, ttl=9))
        self.gateway.queue("/v3/kv/put", self.put())
        self.gateway.queue("/v3/lease/keepalive", self.alive(11))
        self.registration.startService()
        self.etcd.stub.flush()
        self.tick(2.9)
        self.assertEqual(self.paths(), ["grant", "put"])
        self.tick(0.1)
        self.assertEqual(self.paths(), ["grant", "put", "keepalive"])

    def test_leaseGone(self) -> None:
        """
        A renewal answered without a TTL (the lease expired or was revoked)
        registers again with a new lease.
        """
        self.gateway.queue("/v3/lease/grant", self.lease(11), self.lease(12))
        self.gateway.queue("/v3/kv/put", self.put(), self.put())
        self.gateway.queue("/v3/lease/keepalive", self.alive(11, None))
        self.registration.startService()
        self.etcd.stub.flush()
        with capturedLogs() as logs:
            self.tick(2)
        self.assertEqual(self.paths(), ["grant", "put", "keepalive", "grant", "put"])
        self.assertEqual(self.gateway.received[-1].body["lease"], "12")
        self.assertEqual((self.registration.state, self.registration.lease), ("registered", 12))
        self.assertEqual(
            _texts(logs),
            [
                "etcd: the lease of /txlb/pools/api/backends/127.0.0.1:8081 expired; registering again",
                "etcd: registered /txlb/pools/api/backends/127.0.0.1:8081 (lease c, TTL 6 s)",
            ],
        )

    def test_leaseExpiredBeforeThePut(self) -> None:
        """
        A put refused because its lease is gone (404) takes a new lease.
        """
        self.gateway.queue("/v3/lease/grant", self.lease(11), self.lease(12))
        self.gateway.queue(
            "/v3/kv/put", error(404, 5, "etcdserver: requested lease not found"), self.put()
        )
        self.registration.startService()
        self.etcd.stub.flush()
        self.assertEqual(self.paths(), ["grant", "put", "grant", "put"])
        self.assertEqual((self.registration.state, self.registration.lease), ("registered", 12))

    def test_etcdAway(self) -> None:
        """
        When renewals fail it logs once, tries again sooner than the TTL,
        and once etcd answers renews the lease and puts the key again.
        """
        self.gateway.queue("/v3/lease/grant", self.lease(11))
        self.gateway.queue("/v3/kv/put", self.put(), self.put())
        self.gateway.queue(
            "/v3/lease/keepalive", _UNAVAILABLE, _UNAVAILABLE, _UNAVAILABLE, self.alive(11)
        )
        self.registration.startService()
        self.etcd.stub.flush()
        with capturedLogs() as logs:
            self.tick(2)
            self.assertEqual(self.registration.state, "lost")
            self.tick(0.5)
            self.tick(1)
            # The backoff's 2 s is capped at a third of the TTL.
            self.tick(1.9)
            self.assertEqual(self.paths().count("keepalive"), 3)
            self.tick(0.1)
        self.assertEqual(
            self.paths(),
            ["grant", "put", "keepalive", "keepalive", "keepalive", "keepalive", "put"],
        )
        self.assertEqual(self.registration.state, "registered")
        self.assertEqual(
            _texts(logs),
            [
                "etcd: cannot keep /txlb/pools/api/backends/127.0.0.1:8081 registered "
                "(etcd unreachable: http://etcd1:2379: etcdserver: no leader (HTTP 503)); retrying",
                "etcd: registered /txlb/pools/api/backends/127.0.0.1:8081 (lease b, TTL 6 s)",
            ],
        )

    def test_stopRevokes(self) -> None:
        """
        Stopping revokes the lease, so the key goes at once.
        """
        self.gateway.queue("/v3/lease/grant", self.lease(11))
        self.gateway.queue("/v3/kv/put", self.put())
        self.gateway.queue("/v3/lease/revoke", json.dumps({"header": header(4)}).encode())
        self.registration.startService()
        self.etcd.stub.flush()
        with capturedLogs() as logs:
            d = self.registration.stopService()
            self.etcd.stub.flush()
        assert d is not None
        self.successResultOf(d)
        self.assertEqual(self.gateway.received[-1].body, {"ID": "11"})
        self.assertEqual((self.registration.state, self.registration.lease), ("stopped", None))
        self.assertEqual(self.etcd.clock.getDelayedCalls(), [])
        self.assertEqual(
            _texts(logs), ["etcd: unregistered /txlb/pools/api/backends/127.0.0.1:8081"]
        )

    def test_stopRevokeFails(self) -> None:
        """
        A revocation that fails is logged in one line; the lease will
        expire.
        """
        self.gateway.queue("/v3/lease/grant", self.lease(11))
        self.gateway.queue("/v3/kv/put", self.put())
        self.gateway.queue("/v3/lease/revoke", _UNAVAILABLE)
        self.registration.startService()
        self.etcd.stub.flush()
        with capturedLogs() as logs:
            d = self.registration.stopService()
            self.etcd.stub.flush()
        assert d is not None
        self.successResultOf(d)
        self.assertEqual(
            _texts(logs),
            [
                "etcd: could not unregister /txlb/pools/api/backends/127.0.0.1:8081 "
                "(etcd unreachable: http://etcd1:2379: etcdserver: no leader (HTTP 503)); "
                "it goes when its lease expires"
            ],
        )

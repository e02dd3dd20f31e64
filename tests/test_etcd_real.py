"""
L{txlb.etcd} against a real etcd (Debian's etcd-server 3.4), started by
each test on loopback ports in a temporary folder (C{tests/etcdserver.py}):
the calls, the watch and its traps (an error line when etcd stops, a
compaction inside an open stream), a follower across restarts and
compactions, leases, authentication, TLS, and endpoints that are down or
silent.  Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.etcdserver import SKIP, Certificates, EtcdServer, startEtcd
from tests.helpers import freePort, waitFor
from txlb.etcd import (
    Backoff,
    Delete,
    EtcdAuthError,
    EtcdClient,
    EtcdFollower,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    Put,
    Registration,
    Snapshot,
    WatchCompactedError,
    WatchEndedError,
    WatchResult,
    tlsSettings,
)

TAC = Path(__file__).parent.parent / "backend_server.tac"
_RUN_TWISTD = "import sys; sys.path.remove(''); from twisted.scripts.twistd import run; run()"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class _RealTestCase(TestCase):
    skip = SKIP
    timeout = 60

    async def startEtcd(self, **keywords: Any) -> EtcdServer:
        self.server = await startEtcd(self, **keywords)
        self.addCleanup(lambda: Deferred.fromCoroutine(self.server.stop()))
        return self.server

    def client(self, *endpoints: str, **keywords: Any) -> EtcdClient:
        return EtcdClient(list(endpoints) or [self.server.url], reactor, **keywords)

    def follow(self, client: EtcdClient, **keywords: Any) -> tuple[EtcdFollower, list[Snapshot]]:
        """
        Start a follower of C{/txlb/}, stopped when the test ends; what it
        hands over goes to the list.
        """
        snapshots: list[Snapshot] = []
        keywords.setdefault("backoff", Backoff(0.1, 0.5))
        follower = EtcdFollower(client, snapshots.append, reactor, **keywords)
        follower.startService()
        self.addCleanup(follower.stopService)
        return follower, snapshots


class KeyValueTests(_RealTestCase):
    async def test_roundTrip(self) -> None:
        """
        Put, read (a key, a prefix, a count), delete.
        """
        await self.startEtcd()
        client = self.client()
        first = await client.put(b"/txlb/a", b"1")
        second = await client.put(b"/txlb/b", b"\x00\xff")
        await client.put(b"/txlbx", b"outside")
        self.assertEqual(second, first + 1)
        result = await client.range(b"/txlb/", prefix=True)
        self.assertEqual(
            [(kv.key, kv.value, kv.modRevision) for kv in result.kvs],
            [(b"/txlb/a", b"1", first), (b"/txlb/b", b"\x00\xff", second)],
        )
        self.assertEqual(result.revision, second + 1)
        self.assertEqual((await client.range(b"/txlb/", prefix=True, countOnly=True)).total, 2)
        self.assertEqual((await client.delete(b"/txlb/", prefix=True))[1], 2)
        missing = await client.range(b"/txlb/a")
        self.assertEqual((missing.kvs, missing.total, missing.more), ([], 0, False))

    async def test_txn(self) -> None:
        """
        A transaction's changes share one revision; a failed condition
        changes nothing.
        """
        await self.startEtcd()
        client = self.client()
        await client.put(b"/txlb/old", b"x")
        result = await client.txn(
            [Put(b"/txlb/a", b"1"), Put(b"/txlb/b", b"2"), Delete(b"/txlb/old")], {b"/txlb/a": 0}
        )
        self.assertTrue(result.succeeded)
        kvs = (await client.range(b"/txlb/", prefix=True)).kvs
        self.assertEqual(
            [(kv.key, kv.modRevision) for kv in kvs],
            [(b"/txlb/a", result.revision), (b"/txlb/b", result.revision)],
        )
        again = await client.txn([Put(b"/txlb/a", b"changed")], {b"/txlb/a": 0})
        self.assertFalse(again.succeeded)
        self.assertEqual((await client.range(b"/txlb/a")).kvs[0].value, b"1")

    async def test_errorAnswer(self) -> None:
        """
        etcd's refusals are one-line errors with etcd's own message and
        code: a put under a lease that does not exist.
        """
        await self.startEtcd()
        error = None
        try:
            await self.client().put(b"/txlb/a", b"1", lease=12345)
        except EtcdRequestError as e:
            error = e
        assert error is not None
        self.assertEqual(
            str(error), f"etcd {self.server.url}: etcdserver: requested lease not found (HTTP 404)"
        )
        self.assertEqual(error.code, 5)


class WatchTests(_RealTestCase):
    async def test_events(self) -> None:
        """
        A watch from an old revision replays what followed it; a
        transaction arrives as one message.
        """
        await self.startEtcd()
        client = self.client()
        start = await client.put(b"/txlb/a", b"1")
        await client.txn([Put(b"/txlb/b", b"2"), Delete(b"/txlb/a")])
        results: list[WatchResult] = []
        stream = await client.watch(b"/txlb/", results.append, prefix=True, startRevision=start)
        self.addCleanup(stream.stop)
        await waitFor(lambda: sum(len(r.events) for r in results) == 3, 10, "the replay")
        revision = await client.put(b"/txlb/c", b"3")
        await waitFor(lambda: sum(len(r.events) for r in results) == 4, 10, "the new put")
        events = [(e.type, e.kv.key, e.kv.modRevision) for r in results for e in r.events]
        self.assertEqual(
            events,
            [
                ("PUT", b"/txlb/a", start),
                ("PUT", b"/txlb/b", start + 1),
                ("DELETE", b"/txlb/a", start + 1),
                ("PUT", b"/txlb/c", revision),
            ],
        )
        self.assertEqual(results[-1].revision, revision)

    async def test_errorLineWhenEtcdStops(self) -> None:
        """
        When etcd stops, an open watch gets its error line after the 200
        and ends with it.
        """
        await self.startEtcd()
        stream = await self.client().watch(b"/txlb/", lambda r: None, prefix=True)
        await self.server.stop()
        try:
            await stream.done
        except WatchEndedError as e:
            self.assertEqual(
                str(e),
                f"etcd {self.server.url} ended the watch: transport is closing (HTTP 503, code 14)",
            )
        else:
            self.fail("the watch did not end")

    async def test_compacted(self) -> None:
        """
        A watch from a compacted revision is created, then cancelled with
        the compaction's revision; the client closes the stream etcd leaves
        open.
        """
        await self.startEtcd()
        client = self.client()
        first = await client.put(b"/txlb/a", b"1")
        await client.delete(b"/txlb/a")
        compacted = self.server.compact()
        stream = await client.watch(b"/txlb/", lambda r: None, prefix=True, startRevision=first)
        try:
            await stream.done
        except WatchCompactedError as e:
            self.assertEqual(e.compactRevision, compacted)
        else:
            self.fail("the watch was not cancelled")


class FollowerTests(_RealTestCase):
    async def test_snapshotThenEachChange(self) -> None:
        """
        The whole prefix first, then each change once, a transaction in one
        call.
        """
        await self.startEtcd()
        client = self.client()
        await client.put(b"/txlb/config.toml", b"a = 1")
        await client.put(b"/other", b"not followed")
        follower, snapshots = self.follow(self.client())
        await waitFor(lambda: follower.connected, 10, "connected")
        one = await client.put(b"/txlb/pools/api/backends/10.0.0.1:80", b'{"weight": 2}')
        two = await client.txn(
            [Put(b"/txlb/config.toml", b"a = 2"), Delete(b"/txlb/pools/api/backends/10.0.0.1:80")]
        )
        await client.put(b"/other", b"still not followed")
        await waitFor(lambda: len(snapshots) == 3, 10, "three snapshots")
        await sleep(0.2)
        self.assertEqual(
            snapshots,
            [
                Snapshot({"config.toml": b"a = 1"}, one - 1, frozenset({"config.toml"})),
                Snapshot(
                    {"config.toml": b"a = 1", "pools/api/backends/10.0.0.1:80": b'{"weight": 2}'},
                    one,
                    frozenset({"pools/api/backends/10.0.0.1:80"}),
                ),
                Snapshot(
                    {"config.toml": b"a = 2"},
                    two.revision,
                    frozenset({"config.toml", "pools/api/backends/10.0.0.1:80"}),
                ),
            ],
        )

    async def _restartMidWatch(self, crash: bool) -> None:
        """
        Stop etcd under a follower (SIGTERM, or SIGKILL as a crash), change
        things as soon as it is back (the follower catches up, perhaps
        several revisions in one message) and after it is back, and check
        that each snapshot is exactly etcd's state at its revision (so each
        key written once while it was away is there), with the keys that
        changed, the revisions rising up to etcd's last: nothing applied
        twice or missed.
        """
        await self.startEtcd()
        client = self.client()
        state: dict[str, bytes] = {}
        states: dict[int, dict[str, bytes]] = {}

        async def put(key: str, value: bytes) -> None:
            state[key] = value
            states[await client.put(b"/txlb/" + key.encode(), value)] = dict(state)

        async def delete(key: str) -> None:
            del state[key]
            states[(await client.delete(b"/txlb/" + key.encode()))[0]] = dict(state)

        await put("n", b"0")
        follower, snapshots = self.follow(self.client())
        await waitFor(lambda: follower.connected, 10, "connected")
        for i in range(1, 4):
            await put("n", b"%d" % i)
        await waitFor(lambda: follower.revision == max(states), 10, "caught up")
        if crash:
            self.server.kill()
        else:
            await self.server.stop()
        await waitFor(lambda: not follower.connected, 10, "disconnected")
        await self.server.start()
        for i in range(4, 8):
            await put("n", b"%d" % i)
            await put(f"k{i}", b"%d" % i)
        await put("gone", b"x")
        await delete("gone")
        await waitFor(lambda: follower.connected, 10, "connected again")
        await put("n", b"8")
        await put("m", b"9")
        await waitFor(lambda: follower.revision == max(states), 10, "caught up again")
        self.assertEqual(follower.revision, self.server.revision())
        revisions = [s.revision for s in snapshots]
        self.assertEqual(revisions, sorted(set(revisions)))
        self.assertEqual(revisions[-1], max(states))
        previous: dict[str, bytes] = {}
        for snapshot in snapshots:
            self.assertEqual(snapshot.values, states[snapshot.revision])
            changed = {
                k
                for k in snapshot.values.keys() | previous.keys()
                if snapshot.values.get(k) != previous.get(k)
            }
            self.assertEqual(snapshot.changed, changed)
            previous = snapshot.values

    async def test_etcdRestarted(self) -> None:
        """
        etcd stopped and started again: the watch resumes from its
        revision; nothing applied twice or missed.
        """
        await self._restartMidWatch(crash=False)

    async def test_etcdCrashed(self) -> None:
        """
        The same when etcd is killed (no error line: the connection just
        drops).
        """
        await self._restartMidWatch(crash=True)

    async def test_compactionWhileDisconnected(self) -> None:
        """
        A compaction while the follower was away: it reads the whole prefix
        again, so a key deleted meanwhile disappears (its DELETE was
        compacted away).
        """
        await self.startEtcd()
        client = self.client()
        await client.put(b"/txlb/a", b"1")
        await client.put(b"/txlb/b", b"1")
        # A fixed wait of 3 s before each try again: time to change and
        # compact while it is away.
        follower, snapshots = self.follow(self.client(), backoff=Backoff(3.0, 3.0, lambda: 1.0))
        await waitFor(lambda: follower.connected, 10, "connected")
        seen = follower.revision
        await self.server.restart()
        await waitFor(lambda: not follower.connected, 10, "disconnected")
        await client.delete(b"/txlb/a")
        await client.put(b"/txlb/c", b"1")
        self.server.compact()
        self.assertEqual(follower.revision, seen)
        await waitFor(lambda: follower.connected, 15, "connected again")
        await waitFor(lambda: len(snapshots) == 2, 10, "the new read")
        self.assertEqual(snapshots[-1].values, {"b": b"1", "c": b"1"})
        self.assertEqual(snapshots[-1].changed, frozenset({"a", "c"}))
        self.assertEqual(snapshots[-1].revision, self.server.revision())

    async def test_frozenEtcd(self) -> None:
        """
        An etcd that accepts connections and answers nothing (stopped with
        SIGSTOP): a call fails at its timeout, and the follower's check
        notices and drops the watch; when etcd runs again the follower
        comes back and gets what changed.
        """
        await self.startEtcd()
        client = self.client(timeout=0.5)
        follower, _ = self.follow(self.client(timeout=0.5), probeInterval=0.3)
        await waitFor(lambda: follower.connected, 10, "connected")
        self.server.freeze()
        start = reactor.seconds()
        try:
            await client.range(b"/txlb/a")
        except EtcdTimeoutError as e:
            self.assertEqual(str(e), f"etcd {self.server.url} did not answer within 0.5 s")
        else:
            self.fail("no timeout")
        self.assertLess(reactor.seconds() - start, 2)
        await waitFor(lambda: not follower.connected, 10, "the check noticed")
        self.server.thaw()
        await waitFor(lambda: follower.connected, 10, "connected again")
        await client.put(b"/txlb/a", b"1")
        await waitFor(lambda: follower.values == {"a": b"1"}, 10, "the change")


class LeaseTests(_RealTestCase):
    async def test_expiryDeletes(self) -> None:
        """
        A key under a lease that is not renewed goes when the lease
        expires, as a DELETE the follower applies.
        """
        await self.startEtcd()
        client = self.client()
        follower, snapshots = self.follow(self.client())
        lease = await client.grant(1)
        self.assertEqual(lease.ttl, 1)
        await client.put(b"/txlb/pools/a/backends/h:1", b"", lease=lease.id)
        await waitFor(lambda: "pools/a/backends/h:1" in follower.values, 10, "the key")
        await waitFor(lambda: follower.values == {}, 5, "the expiry")
        self.assertEqual(snapshots[-1].changed, frozenset({"pools/a/backends/h:1"}))
        self.assertIsNone(await client.keepAlive(lease.id))

    async def test_keepAliveKeeps(self) -> None:
        """
        Renewing every third of the TTL keeps the key well past its TTL.
        """
        await self.startEtcd()
        client = self.client()
        lease = await client.grant(1)
        await client.put(b"/txlb/k", b"", lease=lease.id)
        for _ in range(10):
            await sleep(0.33)
            self.assertEqual(await client.keepAlive(lease.id), 1)
        self.assertEqual(len((await client.range(b"/txlb/k")).kvs), 1)
        self.assertTrue(await client.revoke(lease.id))
        self.assertEqual((await client.range(b"/txlb/k")).kvs, [])
        self.assertFalse(await client.revoke(lease.id))


class RegistrationTests(_RealTestCase):
    key = b"/txlb/pools/api/backends/127.0.0.1:8081"

    def register(self, client: EtcdClient) -> Registration:
        registration = Registration(
            client, self.key, b'{"weight": 2}', reactor, ttl=1, backoff=Backoff(0.1, 0.3)
        )
        registration.startService()
        self.addCleanup(registration.stopService)
        return registration

    async def present(self, client: EtcdClient) -> bool:
        return bool((await client.range(self.key)).kvs)

    async def test_registerAndUnregister(self) -> None:
        """
        The key is there under a lease for as long as the service runs,
        well past the TTL, and goes at once when it stops.
        """
        await self.startEtcd()
        client = self.client()
        registration = self.register(self.client())
        await waitFor(lambda: registration.state == "registered", 10, "registered")
        kv = (await client.range(self.key)).kvs[0]
        self.assertEqual((kv.value, kv.lease), (b'{"weight": 2}', registration.lease))
        await sleep(2.5)
        self.assertTrue(await self.present(client))
        await registration.stopService()
        self.assertFalse(await self.present(client))

    async def test_survivesRestart(self) -> None:
        """
        After etcd restarts the key is there again, and stays.
        """
        await self.startEtcd()
        client = self.client()
        registration = self.register(self.client())
        await waitFor(lambda: registration.state == "registered", 10, "registered")
        await self.server.stop()
        await waitFor(lambda: registration.state == "lost", 10, "lost")
        await sleep(1.5)
        await self.server.start()
        await waitFor(lambda: registration.state == "registered", 10, "registered again")
        for _ in range(5):
            self.assertTrue(await self.present(client))
            await sleep(0.5)

    async def test_leaseRevokedElsewhere(self) -> None:
        """
        A lease revoked by someone else is noticed at the next renewal, and
        the key put back under a new one.
        """
        await self.startEtcd()
        client = self.client()
        registration = self.register(self.client())
        await waitFor(lambda: registration.state == "registered", 10, "registered")
        old = registration.lease
        assert old is not None
        await client.revoke(old)
        self.assertFalse(await self.present(client))
        await waitFor(lambda: registration.lease not in (old, None), 10, "a new lease")
        await waitFor(lambda: registration.state == "registered", 10, "registered again")
        self.assertEqual((await client.range(self.key)).kvs[0].lease, registration.lease)


class AuthenticationTests(_RealTestCase):
    async def test_wrongPassword(self) -> None:
        """
        A wrong password is one line naming the user.
        """
        await self.startEtcd()
        self.server.enableAuth("txlb", "right")
        try:
            await self.client(user="txlb", password="wrong").range(b"/txlb/a")
        except EtcdAuthError as e:
            self.assertEqual(
                str(e),
                f"etcd {self.server.url}: cannot authenticate as 'txlb': "
                "etcdserver: authentication failed, invalid user ID or password",
            )
        else:
            self.fail("authenticated with a wrong password")

    async def test_turnedOnLater(self) -> None:
        """
        A client given a user works while etcd's authentication is off,
        and goes on working once it is turned on.
        """
        await self.startEtcd()
        client = self.client(user="txlb", password="right")
        await client.put(b"/txlb/a", b"1")
        self.server.enableAuth("txlb", "right")
        await client.put(b"/txlb/a", b"2")
        self.assertEqual((await client.range(b"/txlb/a")).kvs[0].value, b"2")

    async def test_noUser(self) -> None:
        """
        Without a user, etcd's refusal says credentials are wanted.
        """
        await self.startEtcd()
        self.server.enableAuth("txlb", "right")
        try:
            await self.client().range(b"/txlb/a")
        except EtcdAuthError as e:
            self.assertEqual(
                str(e),
                f"etcd {self.server.url}: etcdserver: user name is empty (HTTP 400): "
                "etcd wants a user and password",
            )
        else:
            self.fail("read without a user")

    async def test_permissionDenied(self) -> None:
        """
        A write outside the user's keys is refused (403).
        """
        await self.startEtcd()
        self.server.enableAuth("txlb", "right")
        client = self.client(user="txlb", password="right")
        await client.put(b"/txlb/a", b"1")
        try:
            await client.put(b"/elsewhere", b"1")
        except EtcdRequestError as e:
            self.assertEqual(
                str(e), f"etcd {self.server.url}: etcdserver: permission denied (HTTP 403)"
            )
        else:
            self.fail("wrote outside the role's keys")

    async def test_tokenExpires(self) -> None:
        """
        When the token expires (etcd's TTL here: 1 s unused), the client
        authenticates again and the call succeeds; a follower's watch is
        authenticated too.
        """
        await self.startEtcd(options=["--auth-token-ttl=1"])
        self.server.enableAuth("txlb", "right")
        sent: list[tuple[str, str | None]] = []
        client = self.client(user="txlb", password="right", http=_Recording(sent))
        await client.put(b"/txlb/a", b"1")
        await sleep(2.5)
        await client.put(b"/txlb/a", b"2")
        paths = [path for path, _ in sent]
        self.assertEqual(
            paths,
            [
                "/v3/auth/authenticate",
                "/v3/kv/put",
                "/v3/kv/put",
                "/v3/auth/authenticate",
                "/v3/kv/put",
            ],
        )
        self.assertNotEqual(sent[1][1], sent[4][1])
        follower, _ = self.follow(self.client(user="txlb", password="right"))
        await waitFor(lambda: follower.values == {"a": b"2"}, 10, "the snapshot")
        await waitFor(lambda: follower.connected, 10, "the watch")
        await client.put(b"/txlb/a", b"3")
        await waitFor(lambda: follower.values == {"a": b"3"}, 10, "the change")


class _Recording:
    """
    A treq client that records the path and Authorization of each request.
    """

    def __init__(self, sent: list[tuple[str, str | None]]) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent

        self._sent = sent
        self._http = HTTPClient(Agent(reactor))

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self._sent.append(
            ("/" + url.split("/", 3)[3], kwargs["headers"].get("Authorization", [None])[0])
        )
        return self._http.request(method, url, **kwargs)


class TLSTests(_RealTestCase):
    async def test_clientCertificate(self) -> None:
        """
        Over TLS, trusting the CA given and sending a client certificate:
        calls and a follower's watch.
        """
        certificates = Certificates(self.mktemp())
        await self.startEtcd(tls=certificates)
        self.assertTrue(self.server.url.startswith("https://"))
        tls = tlsSettings(certificates.ca, certificates.client, certificates.clientKey)
        client = self.client(tls=tls)
        follower, _ = self.follow(self.client(tls=tls))
        await waitFor(lambda: follower.connected, 10, "connected")
        await client.put(b"/txlb/a", b"1")
        await waitFor(lambda: follower.values == {"a": b"1"}, 10, "the change")

    async def test_refused(self) -> None:
        """
        Without a client certificate, or trusting another CA, the handshake
        fails, and the error says which side refused.
        """
        certificates = Certificates(self.mktemp())
        await self.startEtcd(tls=certificates)
        for tls, reason in [
            (tlsSettings(certificates.ca, None, None), "TLS: client certificate refused"),
            (
                tlsSettings(certificates.otherCA, certificates.client, certificates.clientKey),
                "TLS: certificate not trusted",
            ),
        ]:
            try:
                await self.client(tls=tls).range(b"/txlb/a")
            except EtcdUnavailableError as e:
                self.assertTrue(
                    str(e).startswith(f"etcd unreachable: {self.server.url}: {reason}"), str(e)
                )
            else:
                self.fail("no TLS failure")


class _Silent(Protocol):
    """
    Accept a connection and never answer.
    """


class EndpointTests(_RealTestCase):
    async def test_firstDown(self) -> None:
        """
        With the first endpoint down, calls and the follower use the
        second.
        """
        await self.startEtcd()
        down = f"http://127.0.0.1:{freePort()}"
        client = self.client(down, self.server.url)
        await client.put(b"/txlb/a", b"1")
        self.assertEqual(client.endpoint, self.server.url)
        follower, _ = self.follow(self.client(down, self.server.url))
        await waitFor(lambda: follower.connected, 10, "connected")
        self.assertEqual(follower.endpoint, self.server.url)
        self.assertEqual(follower.values, {"a": b"1"})

    async def test_allDown(self) -> None:
        """
        When no endpoint can be reached, one line says why for each.
        """
        ports = [freePort(), freePort()]
        client = EtcdClient([f"http://127.0.0.1:{p}" for p in ports], reactor)
        try:
            await client.range(b"/txlb/a")
        except EtcdUnavailableError as e:
            self.assertEqual(
                str(e),
                f"etcd unreachable: http://127.0.0.1:{ports[0]}: connection refused; "
                f"http://127.0.0.1:{ports[1]}: connection refused",
            )
        else:
            self.fail("reached nothing")

    async def test_silentFirst(self) -> None:
        """
        An endpoint that accepts connections and says nothing fails the
        call at the timeout; the next call goes to the next endpoint.
        """
        await self.startEtcd()
        silent = reactor.listenTCP(0, Factory.forProtocol(_Silent), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        silentURL = f"http://127.0.0.1:{silent.getHost().port}"
        client = self.client(silentURL, self.server.url, timeout=0.5)
        try:
            await client.put(b"/txlb/a", b"1")
        except EtcdTimeoutError:
            pass
        else:
            self.fail("no timeout")
        self.assertEqual(client.endpoint, self.server.url)
        await client.put(b"/txlb/a", b"1")


class TestBackendTests(_RealTestCase):
    """
    C{backend_server.tac} with C{BACKEND_ETCD}: run by twistd, it registers
    each port, and unregisters them when stopped.
    """

    async def test_registersAndUnregisters(self) -> None:
        if not TAC.exists():
            raise self.skipTest(f"{TAC} not found (not running from a checkout)")
        await self.startEtcd()
        ports = [freePort(), freePort()]
        cwd = self.mktemp()
        os.mkdir(cwd)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(
            BACKEND_PORTS=",".join(map(str, ports)),
            BACKEND_ETCD=self.server.url,
            BACKEND_ETCD_POOL="api",
            BACKEND_ETCD_WEIGHT=f"{ports[1]}:3",
            BACKEND_ETCD_TTL="5",
        )
        process = subprocess.Popen(
            [sys.executable, "-c", _RUN_TWISTD, "-ny", str(TAC), "--pidfile="],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        client = self.client()
        found: dict[bytes, Any] = {}

        async def read() -> None:
            found.clear()
            for kv in (await client.range(b"/txlb/pools/api/backends/", prefix=True)).kvs:
                found[kv.key] = (json.loads(kv.value), kv.lease != 0)

        deadline = reactor.seconds() + 30
        while len(found) < 2 and reactor.seconds() < deadline:
            await sleep(0.1)
            await read()
        self.assertEqual(
            found,
            {
                b"/txlb/pools/api/backends/127.0.0.1:%d" % ports[0]: ({"weight": 1}, True),
                b"/txlb/pools/api/backends/127.0.0.1:%d" % ports[1]: ({"weight": 3}, True),
            },
        )
        process.send_signal(signal.SIGTERM)
        while process.poll() is None and reactor.seconds() < deadline:
            await sleep(0.05)
        output = process.communicate()[0].decode()
        # Twisted 24.7 and later end with the signal, as the default
        # handler would.
        self.assertIn(process.returncode, (0, -signal.SIGTERM), output)
        await read()
        # Gone at once, not when the 5 s leases would have expired.
        self.assertEqual(found, {})
        self.assertIn(f"etcd: unregistered /txlb/pools/api/backends/127.0.0.1:{ports[0]}", output)

"""
Follow every key under a prefix in etcd, as one snapshot kept current.

The follower reads the whole prefix (one linearizable range), hands the
snapshot to a callback, then watches the prefix from the next revision with
one streaming C{/v3/watch}.  Each watch message (all the events of one
revision together, or of several when the watch catches up) updates the
snapshot and calls the callback once, if anything changed.

When the stream breaks (etcd stopped, the connection was lost, an error
line after the 200, a line that cannot be parsed, a member that stopped
answering the periodic check) the snapshot stays as it is and the watch is
resumed from the last revision seen plus one, after a backoff: etcd then
sends every event missed, once.  If those revisions have been compacted
away, etcd cancels the watch (C{compact_revision}) and the follower reads
the whole prefix again instead, since the events are lost.  Events at or
below the revision already seen are skipped, so nothing is applied twice.

A watch open on a member cut off from the others would stay silent, as a
quiet one does; so every C{probeInterval} the follower reads the prefix's
count from that same member, and a check that fails or times out resumes
the watch elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.etcd.backoff import Backoff
from txlb.etcd.client import EtcdClient, WatchStream
from txlb.etcd.errors import EtcdError, MessageTooLongError, WatchCompactedError, WatchEndedError
from txlb.etcd.gateway import PUT, WatchResult

#: The prefix txlb's keys live under (C{--etcd-prefix}).
DEFAULT_PREFIX = "/txlb/"


class Snapshot(NamedTuple):
    """
    What etcd holds under the prefix.

    @ivar values: Each key (relative to the prefix) and its value; a fresh
        dict at each call, the receiver's to keep.
    @ivar revision: The etcd revision this is the state at: the last
        change seen under the prefix, or the store's revision at the last
        full read.
    @ivar changed: The keys added, changed or removed since the previous
        snapshot (all of them in the first one).
    """

    values: dict[str, bytes]
    revision: int
    changed: frozenset[str]


async def readPrefix(client: EtcdClient, prefix: str = DEFAULT_PREFIX) -> Snapshot:
    """
    Every key under C{prefix} now (one linearizable range), as a snapshot
    whose changed keys are all of them.

    @raise EtcdError: If etcd cannot be read.
    """
    key = prefix.encode("utf-8")
    result = await client.range(key, prefix=True)
    values = {}
    for kv in result.kvs:
        relative = _relative(key, kv.key)
        if relative is not None:
            values[relative] = kv.value
    return Snapshot(values, result.revision, frozenset(values))


def _relative(prefix: bytes, key: bytes) -> str | None:
    """
    C{key} without C{prefix}, or C{None} (and a warning) if it is not
    UTF-8: txlb's keys are text.
    """
    try:
        return key[len(prefix) :].decode("utf-8")
    except UnicodeDecodeError:
        _log.warn("etcd: ignoring key {key!r}, which is not UTF-8", key=key)
        return None


_log = Logger()


class EtcdFollower(Service):
    """
    Keep a snapshot of the keys under C{prefix} and call C{changed} with it
    whenever it changes.

    @ivar connected: Whether the watch is open (for C{txlb_etcd_connected}).
    @ivar revision: The revision of the snapshot (0 before the first read).
    @ivar values: The snapshot's keys and values.
    @ivar endpoint: The etcd URL the watch is open on, if it is.
    @ivar state: C{"stopped"}, C{"reading"} (the whole prefix),
        C{"watching"} (also while the watch is being opened) or
        C{"waiting"} (to try again).
    """

    _log = Logger()

    def __init__(
        self,
        client: EtcdClient,
        changed: Callable[[Snapshot], None],
        reactor: Any,
        prefix: str = DEFAULT_PREFIX,
        backoff: Backoff | None = None,
        probeInterval: float = 10.0,
        initial: Snapshot | None = None,
    ) -> None:
        """
        @param initial: A snapshot already read and applied (at start-up,
            before the reactor ran): the follower watches from its revision
            + 1 instead of reading the prefix first.
        """
        self.client = client
        self.prefix = prefix
        self.probeInterval = probeInterval
        self.connected = False
        self.revision = 0
        self.values: dict[str, bytes] = {}
        self.endpoint: str | None = None
        self.state = "stopped"
        self._changed = changed
        self._reactor = reactor
        self._backoff = backoff or Backoff()
        self._key = prefix.encode("utf-8")
        self._delivered = initial is not None
        if initial is not None:
            self.values, self.revision = dict(initial.values), initial.revision
        self._reported: bool | None = None
        self._following: Deferred[None] | None = None
        self._probeCall: IDelayedCall | None = None
        self._probing: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        self._following = Deferred.fromCoroutine(self._follow())
        # Only stopService ends it, by cancelling what it waits on (which
        # may then fail with another error, such as a connection attempt's).
        self._following.addErrback(lambda _: None)

    def stopService(self) -> None:
        super().stopService()
        following, self._following = self._following, None
        if following is not None:
            following.cancel()
        self.state = "stopped"
        self.connected = False
        self.endpoint = None

    async def _follow(self) -> None:
        """
        Read, watch, and start again as long as the service runs.
        """
        read = not self._delivered
        while True:
            try:
                if read:
                    self.state = "reading"
                    await self._read()
                    read = False
                self.state = "watching"
                await self._watch()
            except WatchCompactedError as e:
                self._log.info(
                    "etcd compacted the revisions after {revision} (up to {compacted}): "
                    "reading {prefix} again",
                    revision=self.revision,
                    compacted=e.compactRevision,
                    prefix=self.prefix,
                )
                read = True
                continue
            except Exception as e:
                if not self.running:
                    raise
                if not isinstance(e, EtcdError):
                    self._log.failure("etcd: following {prefix} failed", prefix=self.prefix)
                # A watch line too long may be a catch-up of many revisions:
                # a new read needs no catch-up.
                read = read or isinstance(e, MessageTooLongError)
                self._lost(str(e) if isinstance(e, EtcdError) else f"{type(e).__name__}: {e}")
            self.state = "waiting"
            await deferLater(self._reactor, self._backoff.next(), lambda: None)

    async def _read(self) -> None:
        """
        Read the whole prefix, and deliver it if it differs from the
        snapshot (or is the first).
        """
        snapshot = await readPrefix(self.client, self.prefix)
        values = snapshot.values
        changed = {
            k for k in values.keys() | self.values.keys() if values.get(k) != self.values.get(k)
        }
        self.values = values
        self.revision = snapshot.revision
        if changed or not self._delivered:
            self._deliver(changed)

    async def _watch(self) -> None:
        """
        Watch from the revision after the snapshot's until the stream ends.

        @raise EtcdError: Why it ended.
        """
        stream = await self.client.watch(
            self._key, self._received, prefix=True, startRevision=self.revision + 1
        )
        self._connected(stream.endpoint)
        self._backoff.reset()
        self._scheduleProbe(stream)
        try:
            await stream.done
        finally:
            self._stopProbing()
            self.endpoint = None
        raise WatchEndedError(f"etcd {stream.endpoint}: the watch stopped")

    def _received(self, result: WatchResult) -> None:
        """
        Apply a watch message's events that are newer than the snapshot.
        """
        events = [e for e in result.events if e.kv.modRevision > self.revision]
        if not events:
            # A progress notification, or events already applied.
            return
        before: dict[str, bytes | None] = {}
        for event in events:
            key = _relative(self._key, event.kv.key)
            if key is None:
                continue
            before.setdefault(key, self.values.get(key))
            if event.type == PUT:
                self.values[key] = event.kv.value
            else:
                self.values.pop(key, None)
        self.revision = max(e.kv.modRevision for e in events)
        # A key put then deleted within the message has not changed.
        changed = {key for key, value in before.items() if self.values.get(key) != value}
        if changed:
            self._deliver(changed)

    def _deliver(self, changed: set[str]) -> None:
        self._delivered = True
        try:
            self._changed(Snapshot(dict(self.values), self.revision, frozenset(changed)))
        except Exception:
            self._log.failure("etcd: applying revision {revision} failed", revision=self.revision)

    def _scheduleProbe(self, stream: WatchStream) -> None:
        self._probeCall = self._reactor.callLater(self.probeInterval, self._probe, stream)

    def _probe(self, stream: WatchStream) -> None:
        """
        Check that the member the watch is open on still answers: if it
        does not, end the watch (it is resumed, elsewhere if need be).
        """
        self._probeCall = None
        probing = Deferred.fromCoroutine(
            self.client.range(self._key, prefix=True, countOnly=True, endpoint=stream.endpoint)
        )
        self._probing = probing

        def answered(_: object) -> None:
            self._probing = None
            self._scheduleProbe(stream)

        def failed(failure: Failure) -> None:
            self._probing = None
            if not failure.check(CancelledError):
                stream.stop(
                    EtcdError(f"the check of the watch failed: {failure.getErrorMessage()}")
                )

        probing.addCallbacks(answered, failed)

    def _stopProbing(self) -> None:
        if self._probeCall is not None and self._probeCall.active():
            self._probeCall.cancel()
        self._probeCall = None
        if self._probing is not None:
            self._probing.cancel()

    def _connected(self, endpoint: str) -> None:
        self.connected = True
        self.endpoint = endpoint
        if self._reported is not True:
            self._reported = True
            self._log.info(
                "etcd {endpoint}: following {prefix} from revision {revision}",
                endpoint=endpoint,
                prefix=self.prefix,
                revision=self.revision,
            )

    def _lost(self, reason: str) -> None:
        self.connected = False
        if self._reported is not False:
            self._reported = False
            self._log.warn(
                "etcd: {reason}; keeping revision {revision} of {prefix} and retrying",
                reason=reason,
                revision=self.revision,
                prefix=self.prefix,
            )

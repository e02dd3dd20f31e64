"""
txlb as one of a fleet: its configuration, its pools' members and the
admin API's changes, all followed from etcd (C{--etcd}), so that every
instance (and every worker of C{--workers}) balances alike.

L{Fleet} follows the keys under C{--etcd-prefix} (L{txlb.etcd.layout}) with
one L{EtcdFollower}, and applies each revision as it comes:

  - C{config.toml}, a whole configuration document, is checked as a
    reload's file is, then applied at once (L{Configuration.withDocument}
    says how it combines with C{--config} and the command line); a bad one
    is logged and counted, and the last good one stays;
  - the members of each pool join it, and those that go (their lease
    expired, their key was deleted) drain and leave, as backends leaving
    DNS do (L{PoolService.useFleetState});
  - the admin API's changes under C{state/} apply on every instance, and
    hold until the admin API (or an operator with C{etcdctl}) undoes them:
    a new document does not.

The admin API writes its changes to etcd (L{Fleet.changeBackend},
L{Fleet.switchAlgorithm}), one transaction per change, conditional on the
key being as it was read, and answers once this instance has applied the
change from its own watch.

When etcd cannot be reached, the last configuration stays, and the
follower tries again with backoff.  Starting without C{--config}, txlb
waits for etcd (L{readAtStart}).

See C{docs/fleet.md}.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from txlb.adminstate import AdminState
from txlb.etcd import (
    Backoff,
    Delete,
    EtcdClient,
    EtcdError,
    EtcdFollower,
    Put,
    Snapshot,
    readPrefix,
)
from txlb.etcd.layout import CONFIG, algorithmKey, algorithmState, readLayout, stateKey
from txlb.poolservice import PoolService

#: Seconds the admin API waits for this instance to apply a change it wrote
#: to etcd (its watch brings it back, usually within milliseconds), before
#: answering that it was written but not applied yet.
APPLY_TIMEOUT = 3.0

#: Times a change is tried again when another was written to the same key
#: between its read and its write.
WRITE_ATTEMPTS = 5


class Configuration(Protocol):
    """
    What the fleet needs of a configuration (L{txlb.tap.Options}).
    """

    def withDocument(self, text: str | None, where: str) -> Any:
        """
        The configuration etcd's document C{text} gives, over this one's
        file and command line (C{None}: no document).

        @raise usage.UsageError: With one line per problem.
        """

    def __getitem__(self, option: str) -> Any: ...


class Balancer(Protocol):
    """
    What the fleet needs of the balancer it configures
    (L{txlb.service.LoadBalancerService}).
    """

    @property
    def pools(self) -> Mapping[str, PoolService]: ...

    @property
    def resource(self) -> Any:
        """
        The site's L{txlb.routing.RoutingResource}, with the metrics.
        """

    def reconfigure(self, new: Any) -> list[str]:
        """
        Apply the configuration C{new}, counted as a reload.

        @return: What changed, for the log.
        """


class Fleet(MultiService):
    """
    Follow etcd, and apply what it holds to the balancer.

    @ivar base: The configuration without etcd's document: C{--config}
        (as last reloaded) and the command line.
    @ivar document: The C{config.toml} applied, or C{None} (none, or none
        was good yet).
    @ivar configRevision: The revision at which it was applied (0: none).
    @ivar revision: The last revision applied.
    @ivar layout: What the keys say, pool by pool.
    @ivar follower: The L{EtcdFollower} of the prefix.
    """

    _log = Logger()

    def __init__(
        self,
        client: EtcdClient,
        base: Configuration,
        reactor: Any,
        prefix: str,
        initial: Snapshot | None = None,
        backoff: Backoff | None = None,
        probeInterval: float = 10.0,
    ) -> None:
        """
        @param initial: What was read at start (L{readAtStart}), which the
            configuration given to the balancer already applies.
        """
        super().__init__()
        self.client = client
        self.base = base
        self.prefix = prefix
        self.reactor = reactor
        self.balancer: Balancer | None = None
        self.document: bytes | None = None
        self.configRevision = 0
        self.revision = 0
        self.layout = readLayout({})
        self._refused: bytes | None = None
        self._unknownPools: set[str] = set()
        self._waiting: list[tuple[int, Deferred[bool]]] = []
        self.follower = EtcdFollower(
            client, self._changed, reactor, prefix, backoff, probeInterval, initial
        )
        self.follower.setServiceParent(self)
        if initial is not None:
            self.document = initial.values.get(CONFIG)
            self.configRevision = initial.revision if self.document is not None else 0
            self.revision = initial.revision
            self._read(initial.values)

    def configuration(self) -> Any:
        """
        The configuration to start with: etcd's document (read at start)
        over L{base}, or L{base} itself.

        @raise usage.UsageError: With one line per problem of the document.
        """
        if self.document is None:
            return self.base
        return self.base.withDocument(self._text(self.document), self._where)

    def attach(self, balancer: Balancer) -> None:
        """
        Apply etcd to C{balancer} from now on; its metrics show the
        connection to etcd.
        """
        self.balancer = balancer
        balancer.resource.metrics.followEtcd(self)

    @property
    def connected(self) -> bool:
        return self.follower.connected

    @property
    def problems(self) -> dict[str, str]:
        """
        The keys that cannot be read, and why.
        """
        return self.layout.problems

    @property
    def _where(self) -> str:
        return f"etcd {self.prefix}{CONFIG}"

    def status(self) -> dict[str, Any]:
        """
        The connection to etcd and what was applied, for C{/status}.
        """
        follower = self.follower
        return {
            "connected": follower.connected,
            "endpoint": follower.endpoint,
            "prefix": self.prefix,
            "revision": self.revision,
            "configRevision": self.configRevision or None,
            "refusedKeys": sorted(self.problems),
        }

    def poolAdded(self, pool: PoolService) -> None:
        """
        A pool was made (at start, or by a new configuration): give it its
        members and the admin API's changes.
        """
        self._apply(pool)

    def rebased(self, base: Configuration) -> Any:
        """
        C{--config} was reloaded (SIGHUP) into C{base}: the configuration
        to apply, etcd's document over it if there is one.

        @raise usage.UsageError: With one line per problem.
        """
        new = (
            base
            if self.document is None
            else base.withDocument(self._text(self.document), self._where)
        )
        self.base = base
        return new

    def _changed(self, snapshot: Snapshot) -> None:
        """
        Apply a new revision of the prefix.
        """
        self._read(snapshot.values)
        document = snapshot.values.get(CONFIG)
        if CONFIG in snapshot.changed and document != self.document:
            self._configure(document, snapshot.revision)
        balancer = self.balancer
        assert balancer is not None
        for pool in balancer.pools.values():
            self._apply(pool)
        self._noteUnknownPools(balancer.pools)
        self.revision = snapshot.revision
        waiting, self._waiting = self._waiting, []
        for revision, applied in waiting:
            if revision <= snapshot.revision:
                applied.callback(True)
            else:
                self._waiting.append((revision, applied))

    def _read(self, values: Mapping[str, bytes]) -> None:
        """
        Read the members and the admin state; log each key that cannot be
        read (once, while it stays so).
        """
        before = self.layout.problems
        self.layout = readLayout(values)
        for key, why in self.layout.problems.items():
            if before.get(key) != why:
                self._log.warn("etcd: ignoring {key}: {why}", key=key, why=why)

    def _configure(self, document: bytes | None, revision: int) -> None:
        """
        Apply etcd's configuration document (C{None}: it was deleted), if
        it is good; else log why, count it, and keep the configuration.
        """
        balancer = self.balancer
        assert balancer is not None
        if document is not None and document == self._refused:
            # Read again (after a compaction, say): already said.
            return
        try:
            new = self.base.withDocument(
                None if document is None else self._text(document), self._where
            )
        except usage.UsageError as e:
            self._refused = document
            balancer.resource.metrics.reloads.labels("failure").inc()
            for line in str(e).splitlines():
                self._log.error(
                    "etcd revision {revision}: {prefix}{key} refused, the configuration"
                    " stays as it was: {why}",
                    revision=revision,
                    prefix=self.prefix,
                    key=CONFIG,
                    why=line,
                )
            return
        self._refused = None
        changes = balancer.reconfigure(new)
        self.document = document
        self.configRevision = revision if document is not None else 0
        self._log.info(
            "{what} (etcd revision {revision}): {summary}",
            what=f"Applied {self.prefix}{CONFIG}"
            if document is not None
            else f"{self.prefix}{CONFIG} deleted: back to the local configuration",
            revision=revision,
            summary="; ".join(changes) or "nothing changed",
            changes=changes,
        )

    def _text(self, document: bytes) -> str:
        try:
            return document.decode("utf-8")
        except UnicodeDecodeError:
            raise usage.UsageError(f"{self._where}: the document is not UTF-8") from None

    def _apply(self, pool: PoolService) -> None:
        """
        Give C{pool} what etcd holds for it.
        """
        layout = self.layout
        name = pool.options.name
        pool.useFleetState(
            layout.members.get(name, []),
            layout.states.get(name) or AdminState(),
            layout.algorithms.get(name, {}),
        )

    def _noteUnknownPools(self, pools: Mapping[str, object]) -> None:
        """
        Log, once each, the pools etcd names that the configuration has
        not (their members join when it does).
        """
        layout = self.layout
        named = set(layout.members) | set(layout.states) | set(layout.algorithms)
        for name in sorted(named - set(pools) - self._unknownPools):
            self._log.info(
                "etcd names pool {pool}, which the configuration has not: its keys apply"
                " once a configuration names it",
                pool=name,
            )
        self._unknownPools = named - set(pools)

    async def changeBackend(
        self, pool: str, address: str, change: Callable[[bytes | None], bytes | None]
    ) -> int:
        """
        Write an admin API change of the backend at C{address} in C{pool}:
        C{change} makes its state key's new value (C{None}: delete it) from
        the current one.

        @return: The revision the change is at (to wait for, L{applied}).
        @raise EtcdError: If etcd cannot be written to.
        """
        return await self._update(self.prefix + stateKey(pool, address), change)

    async def switchAlgorithm(
        self, pool: str, changes: dict[str, str | None], configured: Mapping[str, str | None]
    ) -> int:
        """
        Write an admin API switch of C{pool}'s algorithm and/or shadow
        (C{configured}: the configuration's, which need no key).

        @return: The revision the change is at.
        @raise EtcdError: If etcd cannot be written to.
        """
        return await self._update(
            self.prefix + algorithmKey(pool),
            lambda value: algorithmState(value, changes, configured),
        )

    async def _update(self, key: str, change: Callable[[bytes | None], bytes | None]) -> int:
        """
        Change C{key} in one transaction, on the condition that it is still
        as it was read: else read it again and retry (another instance
        changed it meanwhile).
        """
        encoded = key.encode("utf-8")
        for _ in range(WRITE_ATTEMPTS):
            result = await self.client.range(encoded)
            kv = result.kvs[0] if result.kvs else None
            current = None if kv is None else kv.value
            new = change(current)
            if new == current:
                # Nothing to write: it is as asked, since its last change.
                return 0 if kv is None else kv.modRevision
            operation = Delete(encoded) if new is None else Put(encoded, new)
            done = await self.client.txn(
                [operation], {encoded: 0 if kv is None else kv.modRevision}
            )
            if done.succeeded:
                return done.revision
        raise EtcdError(f"etcd: {key} kept changing under {WRITE_ATTEMPTS} tries; try again")

    def applied(self, revision: int, timeout: float = APPLY_TIMEOUT) -> Deferred[bool]:
        """
        Wait until this instance has applied C{revision}.

        @return: A L{Deferred} firing C{True} then, or C{False} after
            C{timeout} seconds if it has not yet.
        """
        if revision <= self.revision:
            done: Deferred[bool] = Deferred()
            done.callback(True)
            return done
        waiter: Deferred[bool] = Deferred()
        entry = (revision, waiter)
        self._waiting.append(entry)

        def expired() -> None:
            if entry in self._waiting:
                self._waiting.remove(entry)
                waiter.callback(False)

        timer: IDelayedCall = self.reactor.callLater(timeout, expired)
        waiter.addBoth(_cancelling(timer))
        return waiter


def _cancelling(timer: IDelayedCall) -> Callable[[Any], Any]:
    def cancel(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        return result

    return cancel


def clientFor(config: Any, reactor: Any) -> EtcdClient:
    """
    The etcd client C{config}'s C{--etcd} options describe.
    """
    return EtcdClient(
        config["etcd"],
        reactor,
        tls=config.etcdTLS,
        user=config["etcd-user"],
        password=config.etcdPassword,
    )


def readAtStart(config: Any, output: Any = None) -> Snapshot:
    """
    Read the prefix once, before the reactor runs (in C{makeService},
    before twistd daemonizes, so that a failure reaches the terminal), for
    txlb started without C{--config}: it has nothing to serve until etcd
    answers.  While etcd does not, one line on C{output} (standard error)
    says so; after C{--etcd-timeout} seconds, give up.

    This turns a reactor of its own (a poll reactor, not the one twistd
    installed, which cannot run twice), for as long as it takes, iteration
    by iteration, so that it logs nothing of its own.

    @raise SystemExit: With one line, after C{--etcd-timeout}.
    """
    from twisted.internet.pollreactor import PollReactor

    output = sys.stderr if output is None else output
    own = PollReactor()
    client = clientFor(config, own)
    client.timeout = min(client.timeout, config["etcd-timeout"])
    timeout = config["etcd-timeout"]
    prefix = config["etcd-prefix"]
    outcome: list[Snapshot | BaseException] = []

    async def read() -> Snapshot:
        deadline = own.seconds() + timeout
        backoff = Backoff(0.25, 2.0)
        said = False
        while True:
            try:
                return await readPrefix(client, prefix)
            except EtcdError as e:
                left = deadline - own.seconds()
                if left <= 0:
                    raise SystemExit(
                        f"txlb: etcd did not answer within --etcd-timeout {timeout:g} s: {e}"
                    ) from None
                if not said:
                    said = True
                    output.write(
                        f"txlb: waiting for etcd to read {prefix} (no --config to start from;"
                        f" at most {timeout:g} s): {e}\n"
                    )
                    output.flush()
                await deferLater(own, min(backoff.next(), left), lambda: None)

    def done(result: Snapshot | Failure) -> None:
        outcome.append(result if isinstance(result, Snapshot) else result.value or Exception())

    # Names in --etcd are resolved in threads.
    threads = own.getThreadPool()
    threads.start()
    try:
        Deferred.fromCoroutine(read()).addBoth(done)
        while not outcome:
            own.iterate(min(own.timeout() or 0.1, 0.1))
    finally:
        threads.stop()
        own.disconnectAll()
        own.removeReader(own.waker)
        own.waker.connectionLost(None)
    [result] = outcome
    if isinstance(result, BaseException):
        raise result
    return result

"""
A backend registering itself in etcd under a lease, as a fleet member:
when it dies, the lease expires and its key goes with it.

The registration grants a lease of C{ttl} seconds, puts its key under it
and renews the lease every third of its TTL (as etcd's own client does), so
that one lost renewal does not let it expire.  If a renewal finds the lease
gone (etcd answers with no TTL: it expired while etcd could not be reached,
or someone revoked it), it registers again with a new lease.  After a
failure it renews the lease and puts the key again as soon as etcd answers,
in case the key was lost meanwhile.  Stopping the service revokes the
lease, which deletes the key at once.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from txlb.etcd.backoff import Backoff
from txlb.etcd.client import EtcdClient
from txlb.etcd.errors import EtcdError, EtcdRequestError

#: Seconds a registration lives without renewal: a dead backend leaves its
#: pools within this long.
DEFAULT_TTL = 10


class Registration(Service):
    """
    Keep C{key} set to C{value} in etcd for as long as the service runs.

    @ivar lease: The lease the key is under, if one was granted.
    @ivar state: C{"stopped"}, C{"registering"}, C{"registered"} or
        C{"lost"} (etcd could not be reached; trying again).
    """

    _log = Logger()

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        value: bytes,
        reactor: Any,
        ttl: int = DEFAULT_TTL,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.value = value
        self.ttl = ttl
        self.lease: int | None = None
        self.state = "stopped"
        self._reactor = reactor
        self._backoff = backoff or Backoff()
        self._granted = ttl
        self._keeping: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        self.state = "registering"
        self._keeping = Deferred.fromCoroutine(self._keep())
        self._keeping.addErrback(self._ended)

    def stopService(self) -> Deferred[None] | None:
        """
        Stop renewing and revoke the lease, so the key goes at once.
        """
        super().stopService()
        keeping, self._keeping = self._keeping, None
        if keeping is not None:
            keeping.cancel()
        self.state = "stopped"
        lease, self.lease = self.lease, None
        if lease is None:
            return None
        revoking = Deferred.fromCoroutine(self.client.revoke(lease))

        def revoked(_: object) -> None:
            self._log.info("etcd: unregistered {key}", key=self._name)

        def failed(failure: Any) -> None:
            self._log.warn(
                "etcd: could not unregister {key} ({why}); it goes when its lease expires",
                key=self._name,
                why=failure.getErrorMessage(),
            )

        return revoking.addCallbacks(revoked, failed)

    @property
    def _name(self) -> str:
        return self.key.decode("utf-8", "replace")

    async def _keep(self) -> None:
        recovering = False
        while True:
            try:
                if recovering and self.lease is not None:
                    if await self.client.keepAlive(self.lease) is None:
                        self.lease = None
                await self._register()
                recovering = False
                while await self._renewed():
                    pass
                self._log.warn(
                    "etcd: the lease of {key} expired; registering again", key=self._name
                )
                self.state = "registering"
            except EtcdError as e:
                self._lost(str(e))
                recovering = True
                await deferLater(
                    self._reactor, min(self._backoff.next(), self._granted / 3), lambda: None
                )

    async def _register(self) -> None:
        """
        Put the key under the lease, granting one first if there is none.
        """
        while True:
            if self.lease is None:
                lease = await self.client.grant(self.ttl)
                self.lease, self._granted = lease.id, lease.ttl
            try:
                await self.client.put(self.key, self.value, lease=self.lease)
            except EtcdRequestError as e:
                if e.code != 5:  # NotFound: the lease expired meanwhile.
                    raise
                self.lease = None
                continue
            break
        self._backoff.reset()
        if self.state != "registered":
            self.state = "registered"
            self._log.info(
                "etcd: registered {key} (lease {lease:x}, TTL {ttl} s)",
                key=self._name,
                lease=self.lease,
                ttl=self._granted,
            )

    async def _renewed(self) -> bool:
        """
        Wait a third of the TTL and renew the lease.

        @return: Whether it was still there.
        """
        await deferLater(self._reactor, self._granted / 3, lambda: None)
        assert self.lease is not None
        if await self.client.keepAlive(self.lease) is None:
            self.lease = None
            return False
        return True

    def _ended(self, failure: Any) -> None:
        """
        Only L{stopService} should end L{_keep}, by cancelling what it
        waits on (which may then fail with another error than
        L{CancelledError<twisted.internet.defer.CancelledError>}, such as a
        connection attempt's).
        """
        if self.running:
            self._log.failure("etcd: keeping {key} registered failed", failure, key=self._name)

    def _lost(self, reason: str) -> None:
        if self.state != "lost":
            self.state = "lost"
            self._log.warn(
                "etcd: cannot keep {key} registered ({reason}); retrying",
                key=self._name,
                reason=reason,
            )

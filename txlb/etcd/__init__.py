"""
etcd, through its v3 JSON gateway over HTTP: how a fleet of txlb instances
follows one configuration, and how backends join pools with leases.

  - L{client.EtcdClient}: range, put, delete, txn, leases and watch on a
    cluster's endpoints, with TLS, authentication and a timeout on every
    call;
  - L{follower.EtcdFollower}: a service that keeps a snapshot of a prefix
    current (one read, then one watch, resumed or read again as needed);
  - L{registration.Registration}: a service that keeps one key alive under
    a lease;
  - L{layout}: the keys txlb reads.

See C{docs/etcd.md}.
"""

from txlb.etcd.backoff import Backoff
from txlb.etcd.client import (
    DEFAULT_TIMEOUT,
    Delete,
    EtcdClient,
    Put,
    WatchStream,
    parseEndpoint,
    readPassword,
    tlsSettings,
)
from txlb.etcd.errors import (
    EtcdAuthError,
    EtcdError,
    EtcdProtocolError,
    EtcdRequestError,
    EtcdTimeoutError,
    EtcdUnavailableError,
    MessageTooLongError,
    WatchCanceledError,
    WatchCompactedError,
    WatchEndedError,
)
from txlb.etcd.follower import DEFAULT_PREFIX, EtcdFollower, Snapshot, readPrefix
from txlb.etcd.gateway import Event, KeyValue, Lease, RangeResult, TxnResult, WatchResult
from txlb.etcd.registration import DEFAULT_TTL, Registration

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TTL",
    "Backoff",
    "Delete",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdError",
    "EtcdFollower",
    "EtcdProtocolError",
    "EtcdRequestError",
    "EtcdTimeoutError",
    "EtcdUnavailableError",
    "Event",
    "KeyValue",
    "Lease",
    "MessageTooLongError",
    "Put",
    "RangeResult",
    "Registration",
    "Snapshot",
    "TxnResult",
    "WatchCanceledError",
    "WatchCompactedError",
    "WatchEndedError",
    "WatchResult",
    "WatchStream",
    "parseEndpoint",
    "readPassword",
    "readPrefix",
    "tlsSettings",
]

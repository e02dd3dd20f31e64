"""
What can go wrong when talking to etcd, each with a one-line message.
"""

from __future__ import annotations


class EtcdError(Exception):
    """
    A call to etcd failed; C{str()} of it is one line saying why.
    """


class EtcdUnavailableError(EtcdError):
    """
    No endpoint answered: connections refused or lost, TLS handshakes
    failed, or etcd answered 503 (no leader, shutting down).
    """


class EtcdTimeoutError(EtcdUnavailableError):
    """
    An endpoint did not answer in time (it may have accepted the
    connection and said nothing).
    """


class EtcdRequestError(EtcdError):
    """
    etcd answered with an error.

    @ivar status: The HTTP status.
    @ivar code: The gRPC code etcd gave (3 invalid argument, 5 not found, 7
        permission denied, 11 out of range, 16 unauthenticated), or 0.
    @ivar reason: etcd's own message (C{"etcdserver: ..."}).
    """

    def __init__(self, message: str, status: int = 0, code: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason


class EtcdAuthError(EtcdRequestError):
    """
    etcd refused the credentials, or wants some: a wrong password, no user
    given while authentication is on, or a token it no longer knows.
    """


class EtcdProtocolError(EtcdError):
    """
    An answer that is not what etcd's JSON gateway sends: not JSON, a field
    of the wrong type, bad base64.
    """


class MessageTooLongError(EtcdProtocolError):
    """
    An answer, or one line of a watch, longer than the client accepts.
    """


class WatchEndedError(EtcdError):
    """
    A watch stream ended: etcd closed it, an error line arrived in it after
    the 200, or the connection was lost.
    """


class WatchCanceledError(WatchEndedError):
    """
    etcd cancelled the watch (C{"canceled": true}); C{reason} is its
    C{cancel_reason}, if it gave one.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class WatchCompactedError(WatchCanceledError):
    """
    etcd cancelled the watch because the revision it was to start from has
    been compacted away: the events since are lost, and only a new read of
    the whole range can catch up.

    @ivar compactRevision: The compaction's revision.
    """

    def __init__(self, message: str, compactRevision: int) -> None:
        super().__init__(message)
        self.compactRevision = compactRevision

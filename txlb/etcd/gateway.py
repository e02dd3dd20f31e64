"""
etcd's v3 JSON gateway (etcd 3.4, C{/v3/...}): what it takes and what it
answers, as pure functions.

The gateway is gRPC's JSON mapping, with its traps: keys and values are
base64, 64-bit integers arrive as strings (C{"revision": "12"}), and every
field holding zero, false or nothing is left out (a key that does not exist
answers C{{"header": {...}}} with no C{kvs}; a PUT event has no C{type}).
Every field is therefore read through a function that knows its default
and checks its type: anything else is an L{EtcdProtocolError}, never a
C{KeyError} deep in the caller.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NamedTuple

from txlb.etcd.errors import EtcdProtocolError

#: The event types of a watch (C{mvccpb.Event.EventType}); PUT is 0 and so
#: never written out.
PUT = "PUT"
DELETE = "DELETE"


class KeyValue(NamedTuple):
    """
    One key as etcd holds it (C{mvccpb.KeyValue}).
    """

    key: bytes
    value: bytes
    createRevision: int
    modRevision: int
    version: int
    lease: int


class Event(NamedTuple):
    """
    One change in a watch: L{PUT} or L{DELETE} (whose C{kv} holds the key
    and the revision of the deletion only).
    """

    type: str
    kv: KeyValue


class RangeResult(NamedTuple):
    """
    A read: the keys found, at C{revision} (the store's revision when it was
    read, the one to watch after); C{total} is etcd's C{count}, the number
    of keys in the range (all of them, even with C{count_only}).
    """

    revision: int
    kvs: list[KeyValue]
    total: int
    more: bool


class TxnResult(NamedTuple):
    """
    A transaction: whether its comparisons held (and so its changes were
    made), and the store's revision after it.
    """

    succeeded: bool
    revision: int


class Lease(NamedTuple):
    """
    A lease granted: its ID and its TTL in seconds (etcd may raise the TTL
    asked for to its minimum).
    """

    id: int
    ttl: int


class WatchResult(NamedTuple):
    """
    One message of a watch stream (C{WatchResponse}).

    @ivar revision: The header's revision (0 when etcd left it out, as it
        does in a cancellation).
    @ivar events: All the events of the message: one revision's when the
        watch is current, several revisions' when it is catching up.
    """

    revision: int
    created: bool
    canceled: bool
    compactRevision: int
    cancelReason: str
    events: list[Event]

    @property
    def isProgressNotify(self) -> bool:
        """
        Whether this is a progress notification: only a header, as etcd's
        own client recognises it (C{clientv3.WatchResponse.IsProgressNotify}).
        """
        return not (self.events or self.created or self.canceled or self.compactRevision)


def encode(data: bytes) -> str:
    """
    A key or value as the gateway takes it: base64.
    """
    return base64.b64encode(data).decode("ascii")


def prefixEnd(prefix: bytes) -> bytes:
    """
    The C{range_end} that makes a range cover every key starting with
    C{prefix}: the prefix with its last byte plus one, carrying past 0xff;
    C{b"\\0"} (every key) when there is no such byte.
    """
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def parseObject(body: bytes, what: str) -> dict[str, Any]:
    """
    The JSON object in C{body}.

    @raise EtcdProtocolError: If it is not one.
    """
    try:
        value = json.loads(body)
    except ValueError:
        raise EtcdProtocolError(f"{what}: not JSON: {_excerpt(body)}") from None
    if not isinstance(value, dict):
        raise EtcdProtocolError(f"{what}: not a JSON object: {_excerpt(body)}")
    return value


def field(message: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """
    C{message[name]}, or C{default} when it is left out.

    @raise EtcdProtocolError: If it is there with another type.
    """
    value = message.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EtcdProtocolError(f"{name!r} is {_shown(value)}, not {kind.__name__}")
    return value


def integer(message: dict[str, Any], name: str) -> int:
    """
    An int64 field: a JSON string of digits (the gateway's way), or a
    number; 0 when left out.

    @raise EtcdProtocolError: For anything else.
    """
    value = message.get(name)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if digits.isascii() and digits.isdigit():
            return int(value)
    raise EtcdProtocolError(f"{name!r} is {_shown(value)}, not an integer")


def data(message: dict[str, Any], name: str) -> bytes:
    """
    A bytes field (base64); empty when left out.

    @raise EtcdProtocolError: If it is not base64.
    """
    text = field(message, name, str, "")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EtcdProtocolError(f"{name!r} is not base64: {_excerpt(text.encode())}") from None


def headerRevision(message: dict[str, Any]) -> int:
    """
    The revision in a message's C{header} (0 if left out).
    """
    return integer(field(message, "header", dict, {}), "revision")


def keyValue(message: dict[str, Any]) -> KeyValue:
    """
    Read a C{KeyValue}.
    """
    return KeyValue(
        key=data(message, "key"),
        value=data(message, "value"),
        createRevision=integer(message, "create_revision"),
        modRevision=integer(message, "mod_revision"),
        version=integer(message, "version"),
        lease=integer(message, "lease"),
    )


def rangeResult(message: dict[str, Any]) -> RangeResult:
    """
    Read a C{RangeResponse}.
    """
    return RangeResult(
        revision=headerRevision(message),
        kvs=[keyValue(_object(kv, "kvs")) for kv in field(message, "kvs", list, [])],
        total=integer(message, "count"),
        more=field(message, "more", bool, False),
    )


def txnResult(message: dict[str, Any]) -> TxnResult:
    """
    Read a C{TxnResponse}.
    """
    return TxnResult(field(message, "succeeded", bool, False), headerRevision(message))


def event(message: dict[str, Any]) -> Event:
    """
    Read an C{mvccpb.Event}: no C{type} is a PUT.
    """
    kind = field(message, "type", str, PUT)
    if kind not in (PUT, DELETE):
        raise EtcdProtocolError(f"unknown event type {kind!r}")
    return Event(kind, keyValue(field(message, "kv", dict, {})))


def watchResult(message: dict[str, Any]) -> WatchResult:
    """
    Read a C{WatchResponse}.
    """
    return WatchResult(
        revision=headerRevision(message),
        created=field(message, "created", bool, False),
        canceled=field(message, "canceled", bool, False),
        compactRevision=integer(message, "compact_revision"),
        cancelReason=field(message, "cancel_reason", str, ""),
        events=[event(_object(e, "events")) for e in field(message, "events", list, [])],
    )


def streamError(message: dict[str, Any]) -> tuple[str, int] | None:
    """
    The one-line reason and HTTP status of an error line in a stream
    (C{{"error": {"grpc_code": 14, "http_code": 503, "message": "transport
    is closing", ...}}}, sent after the 200 when etcd stops), or C{None} if
    C{message} is not one (a lease grant's C{"error"} is a string, and an
    answer of its own).
    """
    error = message.get("error")
    if not isinstance(error, dict):
        return None
    text = field(error, "message", str, "") or "no message"
    status = integer(error, "http_code")
    return f"{text} (HTTP {status}, code {integer(error, 'grpc_code')})", status


def errorAnswer(body: bytes) -> tuple[str, int]:
    """
    etcd's message and gRPC code in the body of an error answer
    (C{{"error": "...", "message": "...", "code": 3}}); an excerpt of the
    body and 0 if it is not that.
    """
    try:
        message = parseObject(body, "error")
        reason = field(message, "message", str, "") or field(message, "error", str, "")
        code = integer(message, "code")
    except EtcdProtocolError:
        return _excerpt(body), 0
    return reason or _excerpt(body), code


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EtcdProtocolError(f"an item of {where!r} is not an object")
    return value


def _shown(value: Any) -> str:
    """
    A JSON value on one line, cut short, for an error message.
    """
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _excerpt(body: bytes | str, limit: int = 80) -> str:
    """
    The start of C{body} on one line, for an error message.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")

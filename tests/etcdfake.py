"""
An in-memory stand-in for etcd's JSON gateway, for the tests of
L{txlb.etcd} that need exact control: which answer each request gets,
when a watch stream's bytes arrive and how they are cut into chunks.  The
answers are the ones a real etcd 3.4.23 sends (C{tests/test_etcd_real.py}
checks the same behaviours against one).
"""

from __future__ import annotations

import base64
import json
from typing import Any, NamedTuple

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from txlb.etcd import EtcdClient

#: An answer that never comes: the request stays open (a watch stream the
#: test writes to, or an etcd that accepted the connection and is silent).
OPEN = object()

HEADER = {"cluster_id": "1", "member_id": "2", "raft_term": "2"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def header(revision: int) -> dict[str, str]:
    return {**HEADER, "revision": str(revision)}


def line(message: dict[str, Any]) -> bytes:
    """
    One watch message, as etcd writes it: JSON and a newline.
    """
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def created(revision: int) -> bytes:
    return line({"result": {"header": header(revision), "created": True}})


def events(revision: int, *changes: tuple[bytes, bytes | None]) -> bytes:
    """
    A watch message with one event per C{(key, value)}: a PUT, or a DELETE
    when the value is None; all at C{revision}.
    """
    items = []
    for key, value in changes:
        if value is None:
            items.append({"type": "DELETE", "kv": {"key": b64(key), "mod_revision": str(revision)}})
        else:
            items.append(
                {
                    "kv": {
                        "key": b64(key),
                        "create_revision": str(revision),
                        "mod_revision": str(revision),
                        "version": "1",
                        "value": b64(value),
                    }
                }
            )
    return line({"result": {"header": header(revision), "events": items}})


def rangeAnswer(revision: int, values: dict[bytes, bytes]) -> bytes:
    kvs = [
        {
            "key": b64(k),
            "create_revision": "2",
            "mod_revision": "2",
            "version": "1",
            "value": b64(v),
        }
        for k, v in values.items()
    ]
    answer: dict[str, Any] = {"header": header(revision)}
    if kvs:
        answer.update(kvs=kvs, count=str(len(kvs)))
    return json.dumps(answer).encode()


def error(status: int, code: int, message: str) -> tuple[int, bytes]:
    """
    An error answer as the gateway gives it.
    """
    return status, json.dumps({"error": message, "message": message, "code": code}).encode()


class Received(NamedTuple):
    """
    One request the gateway received.
    """

    endpoint: str
    path: str
    body: dict[str, Any]
    authorization: str | None
    request: Request


class FakeGateway(Resource):
    """
    Answers each path with the answers queued for it, in order: C{(status,
    body)}, or L{OPEN}.  A path with no answer queued is a test error (500
    with the path, which the client reports).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, list[Any]] = {}
        self.received: list[Received] = []

    def queue(self, path: str, *answers: Any) -> None:
        """
        Answer the next requests to C{path} with C{answers}: bytes (200),
        C{(status, bytes)} or L{OPEN}.
        """
        self.answers.setdefault(path, []).extend(answers)

    def requests(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def render(self, request: Request) -> Any:
        assert request.content is not None
        path = request.path.decode()
        authorization = request.getHeader(b"authorization")
        self.received.append(
            Received(
                (request.getHeader(b"host") or b"").decode(),
                path,
                json.loads(request.content.read()),
                authorization.decode() if authorization is not None else None,
                request,
            )
        )
        queued = self.answers.get(path)
        if not queued:
            request.setResponseCode(500)
            return f"nothing queued for {path}".encode()
        answer = queued.pop(0)
        if answer is OPEN:
            request.setHeader(b"content-type", b"application/json")
            # Send the head now, as etcd does, with nothing after it yet.
            request.write(b"")
            return NOT_DONE_YET
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return body


class Fixture:
    """
    A fake gateway, a clock, and an L{EtcdClient} on them.
    """

    def __init__(self, endpoints: tuple[str, ...] = ("http://etcd1:2379",), **kwargs: Any):
        self.gateway = FakeGateway()
        self.stub = StubTreq(self.gateway)
        self.clock = Clock()
        self.client = EtcdClient(list(endpoints), self.clock, http=self.stub, **kwargs)

    def write(self, data: bytes, index: int = -1) -> None:
        """
        Write C{data} to the C{index}-th open stream and deliver it.
        """
        open_ = [r.request for r in self.gateway.received if not r.request.finished]
        open_[index].write(data)
        self.stub.flush()

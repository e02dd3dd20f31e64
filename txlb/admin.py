"""
The admin listener: status, metrics and runtime changes over HTTP.

  - C{GET /}: the status page (L{txlb.statuspage}), for people;
  - C{GET /status}: the balancer and each backend, as JSON;
  - C{GET /metrics}: Prometheus' text format;
  - C{GET /backends}: the backends, as in C{/status}; C{GET
    /backends/HOST:PORT}: one of them;
  - C{POST /backends} with C{{"address": "host:port", "weight": 2}}: add a
    backend;
  - C{PATCH /backends/HOST:PORT} with C{{"weight": 3}} and/or
    C{{"draining": false}}: change one;
  - C{POST /backends/HOST:PORT/drain}: drain one (no new requests; those in
    flight finish, and C{/status} shows them counting down);
  - C{DELETE /backends/HOST:PORT}: remove one (requests in flight finish on
    it);
  - C{PUT /algorithm} with C{{"algo": "p2c"}} and/or C{{"shadow": "ewma"}}
    (C{null} for no shadow): switch the algorithm or the shadow policy
    (requests in flight keep their backends).

A change to a backend holds until the next reload, by address: while the
backend is out of the pool, and whatever DNS says (L{txlb.adminstate}).
One to an address that is not a backend is refused with 404, unless it
carries C{Txlb-Replay: 1}, as the supervisor of C{--workers} sends the
changes it makes again on a restarted worker (which may not have resolved
DNS yet): then it is kept, and applied when the backend appears (202).

C{HEAD} is answered wherever C{GET} is.  With a token, every change needs
C{Authorization: Bearer TOKEN}; reads never do.  Without one, a change
that carries C{Origin} (a browser's, perhaps for another site's page) is
refused.  Errors are JSON too:
C{{"error": "..."}}, with 400, 401, 403, 404, 405 or 409.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Protocol
from urllib.parse import unquote

from twisted.logger import Logger
from twisted.python import usage
from twisted.web import http, server
from twisted.web.resource import Resource

from txlb import __version__
from txlb.adminstate import AdminState
from txlb.backend import MAX_WEIGHT, Backend, parseBackend
from txlb.metrics import BUCKETS
from txlb.proxy import LoadBalancerResource
from txlb.statuspage import StatusPage

#: The request header that asks to keep a change to an address that is not
#: a backend (yet), instead of refusing it.
REPLAY_HEADER = b"Txlb-Replay"


class _Options(Protocol):
    """
    Options looked up by their long name.
    """

    def __getitem__(self, option: str) -> Any: ...


class Balancer(Protocol):
    """
    What the admin API needs of the balancer it serves, a
    L{txlb.service.LoadBalancerService}; that module imports this one, so
    this one names what it uses instead of importing it.
    """

    @property
    def resource(self) -> LoadBalancerResource:
        """
        The resource that forwards requests, with the backend pool, the
        algorithm and the metrics.
        """

    @property
    def reactor(self) -> Any:
        """
        The reactor, for the time.
        """

    @property
    def started(self) -> float:
        """
        When the balancer started, in the reactor's seconds.
        """

    @property
    def config(self) -> _Options:
        """
        The configuration in use, which a reload replaces.
        """

    @property
    def adminState(self) -> AdminState:
        """
        What the admin API changed, until the next reload.
        """

    def switchAlgorithm(self, changes: dict[str, str | None]) -> None:
        """
        Switch C{--algo} and/or C{--shadow-algo} to what C{changes} names.

        @raise usage.UsageError: With one line, changing nothing.
        """


class _AdminError(Exception):
    """
    A request the admin API refuses, with its status and reason.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class AdminResource(Resource):
    """
    The admin listener's root: the status page at C{/}, the API below.
    """

    def __init__(self, balancer: Balancer, token: str | None) -> None:
        super().__init__()
        self.api = AdminAPI(balancer, token)
        self.putChild(b"", StatusPage())

    def getChild(self, path: bytes, request: server.Request) -> Resource:
        return self.api


class AdminAPI(Resource):
    """
    The admin API of one balancer, answering for every path below the root.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, balancer: Balancer, token: str | None) -> None:
        super().__init__()
        self.balancer = balancer
        self.token = token

    def render(self, request: server.Request) -> bytes:
        parts = (request.prepath or []) + (request.postpath or [])
        path = [unquote(part.decode("ascii", "replace")) for part in parts]
        method = b"GET" if request.method == b"HEAD" else request.method
        try:
            if method != b"GET":
                self._authorize(request)
            answer, code = self._route(method, [p for p in path if p], request)
        except _AdminError as e:
            answer, code = {"error": str(e)}, e.code
            if code == http.UNAUTHORIZED:
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="txlb"')
        request.setResponseCode(code)
        if isinstance(answer, bytes):
            request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
            body = answer
        else:
            request.setHeader(b"Content-Type", b"application/json")
            request.setHeader(b"Cache-Control", b"no-store")
            body = json.dumps(answer, indent=1).encode() + b"\n"
        if request.method == b"HEAD":
            request.setHeader(b"Content-Length", b"%d" % len(body))
            return b""
        return body

    def _authorize(self, request: server.Request) -> None:
        """
        Let a change through only with the token, if there is one.  Without
        a token (a loopback-only listener), refuse changes a browser makes
        for another site's page: browsers send C{Origin} with them, command
        line clients do not.
        """
        if self.token is None:
            if request.getHeader(b"origin") is not None:
                raise _AdminError(http.FORBIDDEN, "changes from a web page need --admin-token")
            return
        given = request.getHeader(b"authorization") or b""
        expected = b"Bearer " + self.token.encode()
        if not hmac.compare_digest(given, expected):
            raise _AdminError(http.UNAUTHORIZED, "changes need Authorization: Bearer TOKEN")

    def _route(self, method: bytes, path: list[str], request: server.Request) -> tuple[Any, int]:
        if path == ["status"] and method == b"GET":
            return self.status(), http.OK
        if path == ["metrics"] and method == b"GET":
            return self.balancer.resource.metrics.exposition(), http.OK
        if path == ["backends"] and method == b"GET":
            backends = self.balancer.resource.pool.backends
            return {"backends": [self._backendStatus(b) for b in backends]}, http.OK
        if path == ["backends"] and method == b"POST":
            return self._add(_body(request)), http.CREATED
        replay = request.getHeader(REPLAY_HEADER) is not None
        if len(path) == 2 and path[0] == "backends":
            if method == b"GET":
                _, backend = self._find(path[1], replay=False)
                assert backend is not None
                return self._backendStatus(backend), http.OK
            if method == b"PATCH":
                return self._change(path[1], _body(request), replay)
            if method == b"DELETE":
                return self._remove(path[1], replay)
        if len(path) == 3 and path[0] == "backends" and path[2] == "drain" and method == b"POST":
            return self._change(path[1], {"draining": True}, replay)
        if path == ["algorithm"] and method == b"PUT":
            return self._switch(_body(request)), http.OK
        if path in (["status"], ["metrics"], ["algorithm"]) or path[:1] == ["backends"]:
            raise _AdminError(http.NOT_ALLOWED, f"{method.decode()} is not allowed here")
        raise _AdminError(http.NOT_FOUND, "no such resource")

    def status(self) -> dict[str, Any]:
        """
        The balancer's state, as C{GET /status} gives it.
        """
        balancer = self.balancer
        now = balancer.reactor.seconds()
        shadow = balancer.resource.shadow
        buckets = balancer.resource.metrics.latencyBuckets()
        admission = balancer.resource.admission
        return {
            "version": __version__,
            "uptime": round(now - balancer.started, 1),
            "algorithm": balancer.config["algo"],
            "listen": balancer.config["listen"],
            "backendTLS": "insecure" if balancer.resource.client.tls.insecure else "verified",
            "shadow": None if shadow is None else shadow.status(),
            "latencyBounds": list(BUCKETS),
            "maxConn": admission.maxConn,
            "queue": _queueStatus(balancer.resource),
            "backends": [
                {
                    **_backendStatus(backend, now, admission.limitOf(backend)),
                    "latencyBuckets": buckets.get(backend.address),
                }
                for backend in balancer.resource.pool.backends
            ],
        }

    def _backendStatus(self, backend: Backend) -> dict[str, Any]:
        """
        C{backend} as C{/status} shows it now.
        """
        now = self.balancer.reactor.seconds()
        return _backendStatus(backend, now, self.balancer.resource.admission.limitOf(backend))

    def _switch(self, body: dict[str, Any]) -> dict[str, Any]:
        expected = 'expected {"algo": "NAME"} and/or {"shadow": "NAME" or null}'
        if not body or set(body) - {"algo", "shadow"}:
            raise _AdminError(http.BAD_REQUEST, expected)
        changes: dict[str, str | None] = {}
        for key, option in (("algo", "algo"), ("shadow", "shadow-algo")):
            if key not in body:
                continue
            spec = body[key]
            if not (isinstance(spec, str) or (spec is None and key == "shadow")):
                raise _AdminError(http.BAD_REQUEST, expected)
            changes[option] = spec
        try:
            self.balancer.switchAlgorithm(changes)
        except usage.UsageError as e:
            raise _AdminError(http.BAD_REQUEST, str(e)) from None
        config = self.balancer.config
        return {"algorithm": config["algo"], "shadow": config["shadow-algo"]}

    def _find(self, address: str, replay: bool) -> tuple[tuple[str, int], Backend | None]:
        """
        The key of C{address}, and the backend of the pool it names: none
        only for a replayed change.
        """
        try:
            wanted = parseBackend(address).key
        except ValueError as e:
            raise _AdminError(http.BAD_REQUEST, f"{address!r}: {e}") from None
        for backend in self.balancer.resource.pool.backends:
            if backend.key == wanted:
                return wanted, backend
        if replay:
            return wanted, None
        raise _AdminError(http.NOT_FOUND, f"no backend {address}")

    def _kept(self, address: str, change: str) -> tuple[dict[str, Any], int]:
        """
        The answer to a replayed C{change} of C{address}, which is not a
        backend yet.
        """
        self._log.info(
            "Admin API: {change} {backend} kept until it is a backend",
            change=change,
            backend=address,
        )
        return {"address": address, "kept": f"{change}, until it is a backend"}, http.ACCEPTED

    def _add(self, body: dict[str, Any]) -> dict[str, Any]:
        address = body.get("address")
        weight = body.get("weight", 1)
        if not isinstance(address, str) or "=" in address:
            raise _AdminError(http.BAD_REQUEST, 'expected {"address": "HOST:PORT", "weight": N}')
        _checkWeight(weight)
        try:
            backend = parseBackend(f"{address}={weight}")
        except ValueError as e:
            raise _AdminError(http.BAD_REQUEST, f"{address!r}: {e}") from None
        resource = self.balancer.resource
        if any(b.key == backend.key for b in resource.pool.backends):
            raise _AdminError(http.CONFLICT, f"{backend.address} is already a backend")
        self.balancer.adminState.add(backend)
        resource.setBackends([*resource.pool.backends, backend])
        self._log.info("Admin API: added backend {backend}", backend=backend.address)
        return self._backendStatus(backend)

    def _change(
        self, address: str, body: dict[str, Any], replay: bool
    ) -> tuple[dict[str, Any], int]:
        unknown = set(body) - {"weight", "draining"}
        if unknown or not body:
            raise _AdminError(http.BAD_REQUEST, 'expected {"weight": N} and/or {"draining": B}')
        if "weight" in body:
            _checkWeight(body["weight"])
        if "draining" in body and not isinstance(body["draining"], bool):
            raise _AdminError(http.BAD_REQUEST, "draining must be true or false")
        key, backend = self._find(address, replay)
        self.balancer.adminState.change(key, body.get("weight"), body.get("draining"))
        if backend is None:
            return self._kept(address, _describe(body))
        if "weight" in body:
            backend.weight = body["weight"]
            resource = self.balancer.resource
            resource.setBackends(resource.pool.backends)
        backend.draining = body.get("draining", backend.draining)
        self._log.info(
            "Admin API: backend {backend} now weight {weight}{draining}",
            backend=backend.address,
            weight=backend.weight,
            draining=", draining" if backend.draining else "",
        )
        return self._backendStatus(backend), http.OK

    def _remove(self, address: str, replay: bool) -> tuple[dict[str, Any], int]:
        key, backend = self._find(address, replay)
        if backend is None:
            self.balancer.adminState.remove(key)
            return self._kept(address, "removal")
        resource = self.balancer.resource
        remaining = [b for b in resource.pool.backends if b is not backend]
        if not remaining:
            raise _AdminError(http.CONFLICT, "cannot remove the last backend")
        self.balancer.adminState.remove(key)
        resource.setBackends(remaining)
        self._log.info("Admin API: removed backend {backend}", backend=backend.address)
        return self._backendStatus(backend), http.OK


def _body(request: server.Request) -> dict[str, Any]:
    """
    The JSON object a change request carries.
    """
    assert request.content is not None
    try:
        body = json.loads(request.content.read() or b"null")
    except ValueError as e:
        raise _AdminError(http.BAD_REQUEST, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise _AdminError(http.BAD_REQUEST, "the body must be a JSON object")
    return body


def _describe(body: dict[str, Any]) -> str:
    """
    What a change of a backend does, in words: C{weight 3, drain}.
    """
    words = [f"weight {body['weight']}"] if "weight" in body else []
    if "draining" in body:
        words.append("drain" if body["draining"] else "end of drain")
    return ", ".join(words)


def _checkWeight(weight: object) -> None:
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
        raise _AdminError(http.BAD_REQUEST, f"weight must be a whole number from 1 to {MAX_WEIGHT}")


def _queueStatus(resource: LoadBalancerResource) -> dict[str, Any]:
    """
    The pool's queue and retry budget as C{/status} shows them: the
    requests waiting now, the bounds, what was refused.
    """
    admission, budget = resource.admission, resource.retryBudget
    return {
        "length": admission.queued,
        "max": admission.maxQueue,
        "timeout": admission.timeout,
        "full": admission.full,
        "timedOut": admission.timedOut,
        "retriesRefused": budget.refused,
    }


def _backendStatus(backend: Backend, now: float, limit: int) -> dict[str, Any]:
    """
    One backend as C{/status} shows it, with C{limit}, its limit of requests
    in flight (0: none).
    """
    return {
        "address": backend.address,
        "tls": backend.tls,
        "weight": backend.weight,
        "state": backend.state(now),
        "active": backend.active,
        "requests": backend.requests,
        "failures": backend.failures,
        "lastError": backend.lastError,
        "health": backend.health,
        "requestsPerSecond": round(backend.requestsPerSecond(now), 2),
        "errors": backend.errors,
        "latencyMs": None if backend.latencyMs is None else round(backend.latencyMs, 2),
        "load": None if backend.load is None else round(backend.reportedLoad(now), 3),
        "limit": limit,
    }


class AdminSite(server.Site):
    """
    The admin listener's site, without an access log line per status poll.
    """

    def log(self, request: http.Request) -> None:
        pass

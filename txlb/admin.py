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
    (requests in flight keep their backends);
  - C{GET /routes}: the routes, in order, as the file gives them, with the
    requests each has matched;
  - C{/pools/NAME/backends...} and C{PUT /pools/NAME/algorithm}: the same
    for the pool C{NAME}; without C{/pools/NAME}, they act on the pool
    C{default}.

A change to a backend holds until the next reload, by address: while the
backend is out of the pool, and whatever DNS says (L{txlb.adminstate}).
One to an address that is not a backend is refused with 404, unless it
carries C{Txlb-Replay: 1}, as the supervisor of C{--workers} sends the
changes it makes again on a restarted worker (which may not have resolved
DNS yet): then it is kept, and applied when the backend appears (202).

C{GET /status?since=T} adds the samples of the last five minutes taken
after C{T} (L{txlb.history}), which the status page charts.

C{HEAD} is answered wherever C{GET} is.  A change a browser sends for
another site's page is refused (L{refuseChange}), and so is, without a
token, any change a browser sends.  With a token, every change needs
C{Authorization: Bearer TOKEN}; reads never do.  Errors are JSON too:
C{{"error": "..."}}, with 400, 401, 403, 404, 405 or 409.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import Resource

from txlb import __version__
from txlb.adminstate import AdminState
from txlb.backend import MAX_WEIGHT, Backend, parseBackend
from txlb.etcd import EtcdError
from txlb.etcd.layout import addedState, changedState, removedState
from txlb.fleet import Fleet
from txlb.history import History
from txlb.metrics import BUCKETS
from txlb.proxy import DEFAULT_POOL, LoadBalancerResource
from txlb.routing import RoutingResource
from txlb.statuspage import StatusPage

#: The request header that asks to keep a change to an address that is not
#: a backend (yet), instead of refusing it.
REPLAY_HEADER = b"Txlb-Replay"


class _Options(Protocol):
    """
    Options looked up by their long name.
    """

    def __getitem__(self, option: str) -> Any: ...


class Pool(Protocol):
    """
    What the admin API needs of a pool, a L{txlb.poolservice.PoolService}.
    """

    @property
    def resource(self) -> LoadBalancerResource:
        """
        The resource that forwards the pool's requests: its backends and
        its algorithm.
        """

    @property
    def options(self) -> _Options:
        """
        The pool's options, which a reload replaces.
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

    def checkAlgorithm(self, changes: dict[str, str | None]) -> None:
        """
        Check that C{changes} name algorithms that work on the pool.

        @raise usage.UsageError: With one line saying what is wrong.
        """

    @property
    def configuredAlgorithm(self) -> dict[str, str | None]:
        """
        The algorithm and shadow the configuration names (C{algo},
        C{shadow-algo}).
        """


class Balancer(Protocol):
    """
    What the admin API needs of the balancer it serves, a
    L{txlb.service.LoadBalancerService}; that module imports this one, so
    this one names what it uses instead of importing it.
    """

    @property
    def resource(self) -> RoutingResource:
        """
        The site's resource: the routes and the metrics.
        """

    @property
    def pools(self) -> Mapping[str, Pool]:
        """
        The pools, by name.
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
    def fleet(self) -> Fleet | None:
        """
        What follows etcd, in a fleet (C{--etcd}): the admin API's changes
        are written there, and every instance applies them.
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
        self.history = History(BUCKETS)

    def record(self) -> None:
        """
        Add a sample of every backend of every pool to the history.
        """
        pools = {pool["name"]: pool["backends"] for pool in self.status()["pools"]}
        self.history.record(self.balancer.reactor.seconds(), pools)

    def render(self, request: server.Request) -> bytes | int:
        parts = (request.prepath or []) + (request.postpath or [])
        path = [unquote(part.decode("ascii", "replace")) for part in parts]
        method = b"GET" if request.method == b"HEAD" else request.method
        try:
            if method != b"GET":
                refused = refuseChange(request, self.token)
                if refused is not None:
                    raise _AdminError(*refused)
            answer, code = self._route(method, [p for p in path if p], request)
        except _AdminError as e:
            answer, code = {"error": str(e)}, e.code
            if code == http.UNAUTHORIZED:
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="txlb"')
        if isinstance(answer, Deferred):
            self._later(request, answer)
            return server.NOT_DONE_YET
        return self._write(request, answer, code)

    def _write(self, request: server.Request, answer: Any, code: int) -> bytes:
        """
        Set C{request}'s status and headers for C{answer}, and return its
        body.
        """
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

    def _later(self, request: server.Request, answering: Deferred[tuple[Any, int]]) -> None:
        """
        Answer C{request} once C{answering} (a change written to etcd) has
        the answer: a refusal as such, and 503 if etcd could not take it.
        """
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)

        def failed(failure: Failure) -> tuple[Any, int]:
            if failure.check(_AdminError):
                error = failure.value
                assert isinstance(error, _AdminError)
                return {"error": str(error)}, error.code
            if failure.check(EtcdError):
                self._log.warn(
                    "Admin API: etcd did not take the change, nothing changed: {why}",
                    why=failure.getErrorMessage(),
                )
                return {"error": f"nothing changed: {failure.getErrorMessage()}"}, (
                    http.SERVICE_UNAVAILABLE
                )
            self._log.failure("Admin API: writing a change to etcd failed", failure)
            return {"error": "internal error"}, http.INTERNAL_SERVER_ERROR

        def send(result: tuple[Any, int]) -> None:
            if not gone:
                request.write(self._write(request, *result))
                request.finish()

        answering.addErrback(failed).addCallback(send)

    def _route(self, method: bytes, path: list[str], request: server.Request) -> tuple[Any, int]:
        if path == ["status"] and method == b"GET":
            try:
                since = sinceOf(request)
            except ValueError as e:
                raise _AdminError(http.BAD_REQUEST, str(e)) from None
            status = {**self.status(), "admin": adminAccess(request, self.token)}
            if since is not None:
                status["history"] = self.history.answer(since, mainPool(self.balancer.pools))
            return status, http.OK
        if path == ["metrics"] and method == b"GET":
            return self.balancer.resource.metrics.exposition(), http.OK
        if path == ["routes"] and method == b"GET":
            return {"routes": self._routes()}, http.OK
        if path[:1] == ["pools"] and len(path) >= 2:
            return self._poolRoute(path[1], self._pool(path[1]), method, path[2:], request)
        if path[:1] in (["backends"], ["algorithm"]):
            return self._poolRoute(DEFAULT_POOL, self._pool(DEFAULT_POOL), method, path, request)
        if path in (["status"], ["metrics"], ["routes"]):
            raise _AdminError(http.NOT_ALLOWED, f"{method.decode()} is not allowed here")
        raise _AdminError(http.NOT_FOUND, "no such resource")

    def _pool(self, name: str) -> Pool:
        pool = self.balancer.pools.get(name)
        if pool is None:
            raise _AdminError(http.NOT_FOUND, f"no pool {name!r}")
        return pool

    def _poolRoute(
        self, name: str, pool: Pool, method: bytes, path: list[str], request: server.Request
    ) -> tuple[Any, int]:
        """
        Answer a request about C{pool}'s (named C{name}) backends or
        algorithm.
        """
        if path == ["backends"] and method == b"GET":
            backends = pool.resource.pool.backends
            return {"backends": [self._backendOf(pool, b) for b in backends]}, http.OK
        fleet = self.balancer.fleet
        if fleet is not None and method in (b"POST", b"PATCH", b"DELETE", b"PUT"):
            return self._fleetChange(fleet, name, pool, method, path, request), http.ACCEPTED
        if path == ["backends"] and method == b"POST":
            return self._add(pool, _body(request)), http.CREATED
        replay = request.getHeader(REPLAY_HEADER) is not None
        if len(path) == 2 and path[0] == "backends":
            if method == b"GET":
                _, backend = self._find(pool, path[1], replay=False)
                assert backend is not None
                return self._backendOf(pool, backend), http.OK
            if method == b"PATCH":
                return self._change(pool, path[1], _body(request), replay)
            if method == b"DELETE":
                return self._remove(pool, path[1], replay)
        if len(path) == 3 and path[0] == "backends" and path[2] == "drain" and method == b"POST":
            return self._change(pool, path[1], {"draining": True}, replay)
        if path == ["algorithm"] and method == b"PUT":
            return self._switch(pool, _body(request)), http.OK
        if path == ["algorithm"] or path[:1] == ["backends"]:
            raise _AdminError(http.NOT_ALLOWED, f"{method.decode()} is not allowed here")
        raise _AdminError(http.NOT_FOUND, "no such resource")

    def _fleetChange(
        self,
        fleet: Fleet,
        name: str,
        pool: Pool,
        method: bytes,
        path: list[str],
        request: server.Request,
    ) -> Deferred[tuple[Any, int]]:
        """
        Check a change of C{pool} as it would be made here, then write it
        to etcd (L{Fleet}), which every instance (this one too) applies
        from its watch.

        @return: A L{Deferred} firing with the answer once this instance
            has applied it (or failing with L{EtcdError}, having changed
            nothing).
        """
        address: str | None = None
        written: Any
        if path == ["backends"] and method == b"POST":
            backend = self._checkAdd(pool, _body(request))
            address, code = backend.address, http.CREATED

            def added(value: bytes | None) -> bytes | None:
                return addedState(value, backend.weight)

            written, what = fleet.changeBackend(name, address, added), "addition"
        elif len(path) == 2 and path[0] == "backends" and method in (b"PATCH", b"DELETE"):
            found = self._find(pool, path[1], replay=False)[1]
            assert found is not None
            address, code = found.address, http.OK
            if method == b"PATCH":
                body = _checkChange(_body(request))
                weight, draining = body.get("weight"), body.get("draining")

                def changed(value: bytes | None) -> bytes | None:
                    return changedState(value, weight, draining)

                written, what = fleet.changeBackend(name, address, changed), _describe(body)
            else:
                if len(pool.resource.pool.backends) == 1:
                    raise _AdminError(http.CONFLICT, "cannot remove the last backend")
                written, what = fleet.changeBackend(name, address, removedState), "removal"
        elif len(path) == 3 and path[:1] == ["backends"] and path[2] == "drain":
            if method != b"POST":
                raise _AdminError(http.NOT_ALLOWED, f"{method.decode()} is not allowed here")
            found = self._find(pool, path[1], replay=False)[1]
            assert found is not None
            address, code = found.address, http.OK

            def drained(value: bytes | None) -> bytes | None:
                return changedState(value, draining=True)

            written, what = fleet.changeBackend(name, address, drained), "drain"
        elif path == ["algorithm"] and method == b"PUT":
            changes = _algorithmChanges(_body(request))
            try:
                pool.checkAlgorithm(changes)
            except usage.UsageError as e:
                raise _AdminError(http.BAD_REQUEST, str(e)) from None
            code = http.OK
            written = fleet.switchAlgorithm(name, changes, pool.configuredAlgorithm)
            what = "switch of " + ", ".join(f"{o} to {s}" for o, s in changes.items())
        elif path == ["algorithm"] or path[:1] == ["backends"]:
            raise _AdminError(http.NOT_ALLOWED, f"{method.decode()} is not allowed here")
        else:
            raise _AdminError(http.NOT_FOUND, "no such resource")
        return Deferred.fromCoroutine(
            self._applied(fleet, name, pool, address, written, what, code)
        )

    async def _applied(
        self,
        fleet: Fleet,
        name: str,
        pool: Pool,
        address: str | None,
        written: Any,
        what: str,
        code: int,
    ) -> tuple[Any, int]:
        """
        Wait for the change C{written} (a coroutine writing it to etcd),
        then for this instance to apply it.

        @return: The answer: the backend at C{address} (the algorithm, if
            none) as it is now, with the revision; 202 if this instance
            has not applied it within L{APPLY_TIMEOUT} seconds.
        """
        revision = await written
        self._log.info(
            "Admin API: {what}{of} in pool {pool} written to etcd (revision {revision})",
            what=what,
            of="" if address is None else f" of {address}",
            pool=name,
            revision=revision,
        )
        if not await fleet.applied(revision):
            return {
                "address": address,
                "etcdRevision": revision,
                "applied": False,
                "message": "written to etcd; this instance has not applied it yet",
            }, http.ACCEPTED
        if address is None:
            options = pool.options
            return {
                "algorithm": options["algo"],
                "shadow": options["shadow-algo"],
                "etcdRevision": revision,
            }, code
        key = parseBackend(address).key
        for backend in pool.resource.pool.backends:
            if backend.key == key:
                return {**self._backendOf(pool, backend), "etcdRevision": revision}, code
        return {"address": address, "etcdRevision": revision, "state": "removed"}, code

    def _routes(self) -> list[dict[str, Any]]:
        """
        The routes, as the file gives them, with their labels and the
        requests each has matched.
        """
        counts = self.balancer.resource.metrics.routeCounts()
        return [
            {"label": route.label, "config": route.config, "requests": counts.get(route.label, 0)}
            for route in self.balancer.resource.routes
        ]

    def status(self) -> dict[str, Any]:
        """
        The balancer's state, as C{GET /status} gives it: each pool with its
        algorithm and backends, the routes, and, at the top, the pool
        C{default}'s (or the first pool's) as before there were pools.
        """
        balancer = self.balancer
        now = balancer.reactor.seconds()
        buckets = balancer.resource.metrics.latencyBuckets()
        pools = [
            self._poolStatus(name, pool, now, buckets) for name, pool in balancer.pools.items()
        ]
        name = mainPool(balancer.pools)
        main = next((p for p in pools if p["name"] == name), None)
        return {
            "version": __version__,
            "uptime": round(now - balancer.started, 1),
            "listen": balancer.config["listen"],
            "algorithm": None if main is None else main["algorithm"],
            "usesWeights": True if main is None else main["usesWeights"],
            "backendTLS": None if main is None else main["backendTLS"],
            "shadow": None if main is None else main["shadow"],
            "latencyBounds": list(BUCKETS),
            "maxConn": None if main is None else main["maxConn"],
            "queue": None if main is None else main["queue"],
            "backends": [] if main is None else main["backends"],
            "pools": pools,
            "routes": self._routes(),
            **({} if balancer.fleet is None else {"etcd": balancer.fleet.status()}),
        }

    def _poolStatus(
        self, name: str, pool: Pool, now: float, buckets: dict[tuple[str, str], list[int]]
    ) -> dict[str, Any]:
        resource = pool.resource
        shadow = resource.shadow
        admission = resource.admission
        return {
            "name": name,
            "algorithm": pool.options["algo"],
            "usesWeights": getattr(resource.algorithm, "usesWeights", True),
            "backendTLS": "insecure" if resource.client.tls.insecure else "verified",
            "shadow": None if shadow is None else shadow.status(),
            "maxConn": admission.maxConn,
            "queue": _queueStatus(resource),
            "backends": [
                {
                    **_backendStatus(backend, now, admission.limitOf(backend)),
                    "latencyBuckets": buckets.get((name, backend.address)),
                }
                for backend in resource.pool.backends
            ],
        }

    def _backendOf(self, pool: Pool, backend: Backend) -> dict[str, Any]:
        """
        C{backend} of C{pool} as C{/status} shows it now.
        """
        now = self.balancer.reactor.seconds()
        return _backendStatus(backend, now, pool.resource.admission.limitOf(backend))

    def _switch(self, pool: Pool, body: dict[str, Any]) -> dict[str, Any]:
        changes = _algorithmChanges(body)
        try:
            pool.switchAlgorithm(changes)
        except usage.UsageError as e:
            raise _AdminError(http.BAD_REQUEST, str(e)) from None
        options = pool.options
        return {"algorithm": options["algo"], "shadow": options["shadow-algo"]}

    def _find(
        self, pool: Pool, address: str, replay: bool
    ) -> tuple[tuple[str, int], Backend | None]:
        """
        The key of C{address}, and the backend of the pool it names: none
        only for a replayed change.
        """
        try:
            wanted = parseBackend(address).key
        except ValueError as e:
            raise _AdminError(http.BAD_REQUEST, f"{address!r}: {e}") from None
        for backend in pool.resource.pool.backends:
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

    def _checkAdd(self, pool: Pool, body: dict[str, Any]) -> Backend:
        """
        The backend an addition's C{body} describes, which C{pool} has not.
        """
        address = body.get("address")
        weight = body.get("weight", 1)
        if not isinstance(address, str) or "=" in address:
            raise _AdminError(http.BAD_REQUEST, 'expected {"address": "HOST:PORT", "weight": N}')
        _checkWeight(weight)
        try:
            backend = parseBackend(f"{address}={weight}")
        except ValueError as e:
            raise _AdminError(http.BAD_REQUEST, f"{address!r}: {e}") from None
        if any(b.key == backend.key for b in pool.resource.pool.backends):
            raise _AdminError(http.CONFLICT, f"{backend.address} is already a backend")
        return backend

    def _add(self, pool: Pool, body: dict[str, Any]) -> dict[str, Any]:
        backend = self._checkAdd(pool, body)
        resource = pool.resource
        pool.adminState.add(backend)
        resource.setBackends([*resource.pool.backends, backend])
        self._log.info("Admin API: added backend {backend}", backend=backend.address)
        return self._backendOf(pool, backend)

    def _change(
        self, pool: Pool, address: str, body: dict[str, Any], replay: bool
    ) -> tuple[dict[str, Any], int]:
        _checkChange(body)
        key, backend = self._find(pool, address, replay)
        pool.adminState.change(key, body.get("weight"), body.get("draining"))
        if backend is None:
            return self._kept(address, _describe(body))
        if "weight" in body:
            backend.weight = body["weight"]
            pool.resource.setBackends(pool.resource.pool.backends)
        backend.draining = body.get("draining", backend.draining)
        self._log.info(
            "Admin API: backend {backend} now weight {weight}{draining}",
            backend=backend.address,
            weight=backend.weight,
            draining=", draining" if backend.draining else "",
        )
        return self._backendOf(pool, backend), http.OK

    def _remove(self, pool: Pool, address: str, replay: bool) -> tuple[dict[str, Any], int]:
        key, backend = self._find(pool, address, replay)
        if backend is None:
            pool.adminState.remove(key)
            return self._kept(address, "removal")
        resource = pool.resource
        remaining = [b for b in resource.pool.backends if b is not backend]
        if not remaining:
            raise _AdminError(http.CONFLICT, "cannot remove the last backend")
        pool.adminState.remove(key)
        resource.setBackends(remaining)
        self._log.info("Admin API: removed backend {backend}", backend=backend.address)
        return self._backendOf(pool, backend), http.OK


def mainPool(names: Iterable[str]) -> str | None:
    """
    The pool whose algorithm and backends C{/status} shows at its top
    level, as it did before there were pools: C{default}, else the first
    of C{names}; C{None} without pools.
    """
    names = list(names)
    return DEFAULT_POOL if DEFAULT_POOL in names else next(iter(names), None)


def refuseChange(request: server.Request, token: str | None) -> tuple[int, str] | None:
    """
    Why the change C{request} (not a C{GET} or C{HEAD}) must be refused,
    as a status and a reason, or C{None} to make it.

    Against cross-site request forgery, two checks, as Go's
    C{CrossOriginProtection} makes them: a browser's C{Sec-Fetch-Site}
    must say the request comes from a page of this origin (or from the
    user), and without it (older browsers), an C{Origin} must name the host
    the request was sent to.  Command-line clients send neither, and pass.
    Then, without a token (a loopback-only listener), a browser's change is
    refused all the same: a page of another site could be served from this
    origin's name by DNS rebinding, and only a secret it cannot know tells
    the operator's page from it.  With a token, the change needs
    C{Authorization: Bearer TOKEN}, a header a form cannot send and a page
    of another origin cannot send without a CORS preflight, which this API
    never allows.
    """
    site = request.getHeader(b"sec-fetch-site")
    origin = request.getHeader(b"origin")
    if site is not None:
        if site not in (b"same-origin", b"none"):
            return http.FORBIDDEN, "changes from another site's page are refused"
    elif origin is not None and origin.partition(b"://")[2] != request.getHeader(b"host"):
        return http.FORBIDDEN, "changes from another site's page are refused"
    if token is None:
        if site is not None or origin is not None:
            return http.FORBIDDEN, "changes from a web page need --admin-token"
        return None
    if not _hasToken(request, token):
        return http.UNAUTHORIZED, "changes need Authorization: Bearer TOKEN"
    return None


def _hasToken(request: server.Request, token: str) -> bool:
    given = request.getHeader(b"authorization") or b""
    return hmac.compare_digest(given, b"Bearer " + token.encode())


def adminAccess(request: server.Request, token: str | None) -> dict[str, bool]:
    """
    What C{/status} says of changes, for the status page: whether they
    need a token, and whether C{request} carried it (the page then offers
    them).
    """
    return {
        "token": token is not None,
        "authorized": token is not None and _hasToken(request, token),
    }


def sinceOf(request: server.Request) -> float | None:
    """
    The time after which C{/status} sends the history's samples
    (C{?since=T}), or C{None} when the request asks for none.

    @raise ValueError: With one line, when C{T} is not a number.
    """
    values = (request.args or {}).get(b"since")
    if not values:
        return None
    try:
        return float(values[0])
    except ValueError:
        raise ValueError("since must be a number of seconds") from None


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


def _checkChange(body: dict[str, Any]) -> dict[str, Any]:
    """
    Check the C{body} of a change of a backend: a weight and/or a drain.
    """
    unknown = set(body) - {"weight", "draining"}
    if unknown or not body:
        raise _AdminError(http.BAD_REQUEST, 'expected {"weight": N} and/or {"draining": B}')
    if "weight" in body:
        _checkWeight(body["weight"])
    if "draining" in body and not isinstance(body["draining"], bool):
        raise _AdminError(http.BAD_REQUEST, "draining must be true or false")
    return body


def _algorithmChanges(body: dict[str, Any]) -> dict[str, str | None]:
    """
    The options an algorithm switch's C{body} changes: C{algo} and/or
    C{shadow-algo}.
    """
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
    return changes


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
        "lastErrorAge": None
        if backend.lastErrorTime is None
        else round(now - backend.lastErrorTime, 1),
        "checkFailures": backend.checkFailures,
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

"""
The admin API of C{--workers}: the supervisor serves it, and asks each
worker's own admin API (on a loopback socket the supervisor bound) for the
answer.

  - C{GET /status}: each pool's backends with each worker's counts added
    up (and their states, when the workers disagree, as C{mixed}), the
    routes with each worker's counts added up, and under C{workers} each
    worker's own status;
  - C{GET /metrics}: each worker's series with a C{worker} label, each
    sample once (L{mergeMetrics}), and the supervisor's own
    (L{workerMetrics});
  - C{GET /backends} and C{GET /backends/HOST:PORT}, and the same under
    C{/pools/NAME}: the backends as in C{/status}; C{GET /routes}: the
    routes as in C{/status};
  - C{HEAD} wherever C{GET} is: the workers are asked with C{GET};
  - a change (C{POST}, C{PATCH}, C{DELETE}) goes to every worker, token and
    all; when they all answer alike, that is the answer, otherwise 502
    with each worker's.  A change of a backend that some workers made and
    the others do not know (yet: a restarted worker that has not resolved
    DNS, or one that has not seen DNS's last change) is asked again of
    those as a replay, which they keep for when the backend appears.
    Changes are remembered as they were asked, their pool's path
    (C{/pools/NAME/...}) and all, and made again on a restarted worker.

Costs one loopback request per worker per admin request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import treq
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from txlb import __version__
from txlb.admin import REPLAY_HEADER, adminAccess, mainPool, refuseChange, sinceOf
from txlb.health import quietPool
from txlb.history import History
from txlb.metrics import BUCKETS
from txlb.statuspage import StatusPage

#: Seconds a worker gets to answer the supervisor's admin request.
WORKER_TIMEOUT = 5.0

#: Seconds a restarted worker gets to answer a replayed change: it may still
#: be starting (PyPy on a busy machine takes seconds), its admin socket
#: queueing the request meanwhile.
REPLAY_TIMEOUT = 60.0

#: Per-backend status fields that are counts, added up over workers (each
#: worker's share of a limit, too).
SUMMED = (
    "active",
    "requests",
    "failures",
    "errors",
    "checkFailures",
    "requestsPerSecond",
    "limit",
)

#: Request headers passed on to the workers.  Not C{Origin} nor
#: C{Sec-Fetch-Site}: the supervisor checks where a change comes from
#: (L{refuseChange}), and its origin is not the worker's.
_PASSED = (b"authorization", b"content-type")


class Change(NamedTuple):
    """
    An admin change every worker made, as it was asked.
    """

    method: bytes
    uri: bytes
    headers: Headers
    body: bytes

    def replayed(self) -> Change:
        """
        This change, as made again on a worker: kept if the backend it
        changes is not one of that worker's yet.
        """
        headers = self.headers.copy()
        headers.setRawHeaders(REPLAY_HEADER, [b"1"])
        return self._replace(headers=headers)


def ask(
    port: int,
    method: bytes,
    uri: bytes,
    headers: Headers,
    body: bytes,
    reactor: Any,
    timeout: float = WORKER_TIMEOUT,
) -> Any:
    """
    Ask the worker whose admin socket is on C{port}, waiting C{timeout}
    seconds at most.

    @return: A L{Deferred<twisted.internet.defer.Deferred>} firing with the
        answer's code and content.
    """
    return treq.request(
        method.decode("ascii"),
        f"http://127.0.0.1:{port}{uri.decode('ascii')}",
        data=body or None,
        headers=headers,
        pool=quietPool(reactor),
        reactor=reactor,
        timeout=timeout,
    ).addCallback(_read)


_log = Logger()


async def replay(port: int, changes: Sequence[Change], reactor: Any) -> None:
    """
    Make the admin C{changes} again, in order, on the worker whose admin
    socket is on C{port}: one that was restarted, which starts from the
    configuration.  A change the worker refuses is logged, and the others
    are still made.
    """
    for change in changes:
        try:
            code, content = await ask(port, *change.replayed(), reactor, REPLAY_TIMEOUT)
        except Exception as e:
            code, content = None, str(e).encode()
        if code is None or not 200 <= code < 300:
            _log.error(
                "Replaying {method} {uri} on a restarted worker failed: {code} {answer}",
                method=change.method.decode("ascii"),
                uri=change.uri.decode("ascii"),
                code=code,
                answer=content.decode("utf-8", "replace")[:200],
            )


class Workers(Protocol):
    """
    What the admin API needs of L{txlb.workers.supervisor.Supervisor}.
    """

    config: Any
    started: float

    def adminPorts(self) -> list[int]:
        """
        The port of each worker's loopback admin socket.
        """

    def describe(self) -> list[dict[str, Any]]:
        """
        Each worker's process id (C{None} while it is restarted) and restarts.
        """

    def changed(self, change: Change) -> None:
        """
        Every worker made C{change}: a worker started later must make it too.
        """


def mergeBackends(statuses: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """
    The backends of several workers' C{/status} as one list: counts added
    up (the latency buckets too), the mean latency, the most recent last
    error, and a state that is C{mixed} when the workers disagree;
    everything else as the first worker that has the backend says.
    """
    merged: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    for backends in statuses:
        for backend in backends:
            address = backend["address"]
            latency = backend.get("latencyMs")
            if latency is not None:
                latencies.setdefault(address, []).append(latency)
            total = merged.get(address)
            if total is None:
                merged[address] = dict(backend)
                continue
            for field in SUMMED:
                total[field] += backend[field]
            if total["state"] != backend["state"]:
                total["state"] = "mixed"
            age = backend.get("lastErrorAge")
            if age is not None and (
                total.get("lastErrorAge") is None or age < total["lastErrorAge"]
            ):
                total["lastError"], total["lastErrorAge"] = backend["lastError"], age
            buckets = backend.get("latencyBuckets")
            if buckets is not None:
                before = total.get("latencyBuckets") or [0] * len(buckets)
                total["latencyBuckets"] = [a + b for a, b in zip(before, buckets)]
    for address, total in merged.items():
        values = latencies.get(address)
        total["latencyMs"] = round(sum(values) / len(values), 2) if values else None
        total["requestsPerSecond"] = round(total["requestsPerSecond"], 2)
    return list(merged.values())


def mergePools(statuses: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """
    The pools of several workers' C{/status} as one list, by name, in the
    order the workers give them: each pool's backends merged as
    L{mergeBackends} does, its shadow's counts and its queue added up; everything
    else (the algorithm, which the admin API may have switched) as the
    first worker that has the pool says.
    """
    merged: dict[str, dict[str, Any]] = {}
    backends: dict[str, list[Sequence[dict[str, Any]]]] = {}
    shadows: dict[str, list[dict[str, Any]]] = {}
    queues: dict[str, list[dict[str, Any]]] = {}
    for pools in statuses:
        for pool in pools:
            name = pool["name"]
            merged.setdefault(name, dict(pool))
            backends.setdefault(name, []).append(pool["backends"])
            if pool.get("shadow") is not None:
                shadows.setdefault(name, []).append(pool["shadow"])
            if pool.get("queue") is not None:
                queues.setdefault(name, []).append(pool["queue"])
    for name, pool in merged.items():
        pool["backends"] = mergeBackends(backends[name])
        pool["shadow"] = mergeShadows(shadows[name]) if name in shadows else None
        pool["queue"] = mergeQueues(queues.get(name, []))
    return list(merged.values())


def mergeShadows(shadows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """
    Several workers' counts of one pool's shadow policy as one: picks,
    comparisons and errors added up, and the agreement over all the
    comparisons.
    """
    compared = sum(shadow["compared"] for shadow in shadows)
    agreed = sum((shadow["agreement"] or 0) * shadow["compared"] for shadow in shadows)
    picks: dict[str, int] = {}
    for shadow in shadows:
        for address, count in shadow["picks"].items():
            picks[address] = picks.get(address, 0) + count
    return {
        "algorithm": shadows[0]["algorithm"],
        "compared": compared,
        "agreement": round(agreed / compared, 4) if compared else None,
        "picks": picks,
        "errors": sum(shadow["errors"] for shadow in shadows),
    }


def mergeRoutes(statuses: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """
    The routes of several workers as one list, by label, with the
    requests each matched added up; everything else as the first worker
    that has the route says.
    """
    merged: dict[str, dict[str, Any]] = {}
    for routes in statuses:
        for route in routes:
            total = merged.get(route["label"])
            if total is None:
                merged[route["label"]] = dict(route)
            else:
                total["requests"] += route["requests"]
    return list(merged.values())


def mergeQueues(queues: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """
    The workers' queues (each worker has its own) as one: their lengths,
    sizes and counts added up, the time-out as the first worker says.
    """
    if not queues:
        return None
    merged = dict(queues[0])
    for queue in queues[1:]:
        for field in ("length", "max", "full", "timedOut", "retriesRefused"):
            merged[field] += queue[field]
    return merged


class _Families:
    """
    A collector that yields the metric families it is given.
    """

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def mergeMetrics(expositions: Sequence[tuple[int, str]], own: Sequence[Metric] = ()) -> bytes:
    """
    Several workers' metrics as one exposition, each sample once: each
    worker's series with a C{worker="INDEX"} label added, and no series
    summed over the workers, so that PromQL's C{sum()} over any metric
    counts every request once.

    Gauges too stay per worker, even those most often alike in every
    worker (C{txlb_backend_up}): each worker has its own passive health
    checks and its own view, and a copy without the label would be added
    into a C{sum()} as well.

    @param expositions: Each answering worker's index and its exposition.
    @param own: The supervisor's own families, added as they are.
    """
    families: dict[str, Metric] = {}
    for index, text in expositions:
        worker = str(index)
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = Metric(family.name, family.documentation, family.type)
                families[family.name] = merged
            for sample in family.samples:
                merged.add_sample(
                    sample.name, {**sample.labels, "worker": worker}, sample.value, sample.timestamp
                )
    registry = CollectorRegistry()
    registry.register(_Families([*families.values(), *own]))
    return generate_latest(registry)


def workerMetrics(answered: Sequence[bool], restarts: Sequence[int]) -> list[Metric]:
    """
    The supervisor's own metrics: whether each worker answered this scrape
    (its series are missing when it did not), and how often each was
    restarted.
    """
    up = GaugeMetricFamily(
        "txlb_worker_up",
        "Whether a worker answered the supervisor for this scrape (1) or not (0).",
        labels=["worker"],
    )
    restarted = CounterMetricFamily(
        "txlb_worker_restarts",
        "Times the supervisor restarted a worker that ended.",
        labels=["worker"],
    )
    for index, (ok, count) in enumerate(zip(answered, restarts)):
        up.add_metric([str(index)], 1 if ok else 0)
        restarted.add_metric([str(index)], count)
    return [up, restarted]


class WorkersAdmin(Resource):
    """
    The supervisor's admin listener's root: the status page at C{/}, the
    fanned-out API below.
    """

    def __init__(self, workers: Workers, reactor: Any) -> None:
        super().__init__()
        self.api = WorkersAPI(workers, reactor)
        self.putChild(b"", StatusPage())

    def getChild(self, path: bytes, request: server.Request) -> Resource:
        return self.api


class WorkersAPI(Resource):
    """
    The admin API for every path below the root, answered by asking every
    worker.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, workers: Workers, reactor: Any) -> None:
        super().__init__()
        self.workers = workers
        self.reactor = reactor
        self.token: str | None = workers.config["admin-token"]
        self.history = History(BUCKETS)

    async def record(self) -> None:
        """
        Add a sample of every backend of every pool to the history, from
        the workers that answer (none: no sample).
        """
        status = b"/status"
        asks = [
            ask(port, b"GET", status, Headers(), b"", self.reactor)
            for port in self.workers.adminPorts()
        ]
        results = await DeferredList(asks, consumeErrors=True)
        try:
            statuses = [
                json.loads(content)["pools"] for ok, (_, content) in _answered(results) if ok
            ]
            if statuses:
                workers = [{pool["name"]: pool["backends"] for pool in s} for s in statuses]
                merged = {pool["name"]: pool["backends"] for pool in mergePools(statuses)}
                self.history.record(self.reactor.seconds(), merged, workers)
        except Exception:
            # Logged, and the next sample is tried: an exception would end
            # the sampling for good.
            self._log.failure("Sampling the workers' status for the history failed")

    def render(self, request: server.Request) -> int:
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)
        path = request.uri.split(b"?")[0].rstrip(b"/")
        since = None
        try:
            if request.method not in (b"GET", b"HEAD"):
                refused = refuseChange(request, self.token)
                if refused is not None:
                    code, reason = refused
                    _finish(request, code, {"error": reason})
                    return server.NOT_DONE_YET
            elif path == b"/status":
                since = sinceOf(request)
        except ValueError as e:
            _finish(request, http.BAD_REQUEST, {"error": str(e)})
            return server.NOT_DONE_YET
        answering = self._answer(request)
        if path == b"/status" and request.method in (b"GET", b"HEAD"):
            answering.addCallback(self._forThePage, request, since)
        answering.addErrback(self._failed, request)
        answering.addCallback(lambda answer: None if gone else _finish(request, *answer))
        return server.NOT_DONE_YET

    def _forThePage(
        self, answer: tuple[int, Any], request: server.Request, since: float | None
    ) -> tuple[int, Any]:
        """
        Add to the status what the status page needs from the supervisor:
        whether changes need a token and C{request} has it, and the
        history's samples after C{since}.
        """
        code, status = answer
        status["admin"] = adminAccess(request, self.token)
        if since is not None:
            main = mainPool(pool["name"] for pool in status["pools"])
            status["history"] = self.history.answer(since, main)
        return code, status

    def _failed(self, failure: Any, request: server.Request) -> tuple[int, Any]:
        self._log.failure("The workers' admin API failed", failure)
        return http.BAD_GATEWAY, {"error": failure.getErrorMessage()}

    def _answer(self, request: server.Request) -> Deferred[tuple[int, Any]]:
        """
        Ask every worker, as C{request} asks (C{HEAD} as C{GET}, and a
        status without its query: the history is the supervisor's).
        """
        assert request.content is not None
        body = request.content.read()
        headers = Headers()
        for name in _PASSED:
            value = request.getHeader(name)
            if value is not None:
                headers.addRawHeader(name, value)
        method = b"GET" if request.method == b"HEAD" else request.method
        uri = request.uri
        if method == b"GET" and uri.split(b"?")[0].rstrip(b"/") == b"/status":
            uri = b"/status"
        change = Change(method, uri, headers, body)
        return Deferred.fromCoroutine(self._askAll(change))

    async def _askAll(self, change: Change) -> tuple[int, Any]:
        """
        The answer to C{change}, from every worker.
        """
        ports = self.workers.adminPorts()
        if change.method not in (b"GET", b"HEAD") and self.workers.config.get("etcd"):
            return await self._askOne(change, ports)
        results = await DeferredList(
            [ask(port, *change, self.reactor) for port in ports], consumeErrors=True
        )
        codes = [result[0] if ok else None for ok, result in results]
        unknown = [index for index, code in enumerate(codes) if code == http.NOT_FOUND]
        if (
            change.method not in (b"GET", b"HEAD")
            and unknown
            and any(code is not None and 200 <= code < 300 for code in codes)
        ):
            again = await DeferredList(
                [ask(ports[index], *change.replayed(), self.reactor) for index in unknown],
                consumeErrors=True,
            )
            for index, result in zip(unknown, again):
                results[index] = result
        return self._combine(results, change)

    async def _askOne(self, change: Change, ports: list[int]) -> tuple[int, Any]:
        """
        The answer to C{change} in a fleet (C{--etcd}): one worker writes
        it to etcd, and every worker applies it from there (the next one
        is asked if it does not answer).  Nothing is kept to replay: a
        restarted worker reads etcd.
        """
        failure = None
        for port in ports:
            try:
                code, content = await ask(port, *change, self.reactor)
            except Exception as e:
                failure = e
                continue
            return code, _decoded(content)
        raise failure or RuntimeError("no worker to ask")

    def _combine(self, results: list[tuple[bool, Any]], change: Change) -> tuple[int, Any]:
        """
        The answer to the admin request C{change}, from the workers'
        C{results}; a change they all made is remembered.
        """
        method, path = change.method, change.uri.split(b"?")[0].rstrip(b"/")
        answers = [answer for _, answer in _answered(results)]
        if method == b"GET" and path == b"/metrics":
            answered = [code == http.OK for code, _ in answers]
            texts = [
                (index, content.decode())
                for index, (ok, (_, content)) in enumerate(zip(answered, answers))
                if ok
            ]
            restarts = [worker["restarts"] for worker in self.workers.describe()]
            return http.OK, mergeMetrics(texts, workerMetrics(answered, restarts))
        if method == b"GET" and path == b"/status":
            return http.OK, self._status(answers)
        backends = _withoutPool(path)
        if method == b"GET" and answers[0][0] == http.OK:
            contents = [json.loads(content) for code, content in answers if code == http.OK]
            if backends == b"/backends":
                return http.OK, {"backends": mergeBackends([c["backends"] for c in contents])}
            if backends.startswith(b"/backends/"):
                return http.OK, mergeBackends([[c] for c in contents])[0]
            if path == b"/routes":
                return http.OK, {"routes": mergeRoutes([c["routes"] for c in contents])}
        made = [(code, content) for code, content in answers if code and 200 <= code < 300]
        if method not in (b"GET", b"HEAD") and made and len(made) == len(answers):
            # Made by every worker, or kept by some for when the backend
            # appears: the answer of one that made it.
            self.workers.changed(change)
            first = next((a for a in made if a[0] != http.ACCEPTED), made[0])
            return first[0], _decoded(first[1])
        codes = {code for code, _ in answers}
        code, content = answers[0]
        if len(codes) == 1 and code is not None:
            return code, _decoded(content)
        return (
            http.BAD_GATEWAY,
            {
                "error": "the workers answered differently",
                "workers": [
                    {"worker": index, "code": code, "answer": _decoded(content)}
                    for index, (code, content) in enumerate(answers)
                ],
            },
        )

    def _status(self, answers: list[tuple[int | None, Any]]) -> dict[str, Any]:
        workers: list[dict[str, Any]] = []
        for index, (code, content) in enumerate(answers):
            if code == http.OK:
                workers.append({"worker": index, **json.loads(content)})
            else:
                workers.append({"worker": index, "error": _decoded(content)})
        for worker, process in zip(workers, self.workers.describe()):
            worker.update(process)
        config = self.workers.config
        answering = [worker for worker in workers if "pools" in worker]
        pools = mergePools([worker["pools"] for worker in answering])
        name = mainPool(pool["name"] for pool in pools)
        # The algorithm as the workers have it: the admin API may have
        # switched it since the configuration was read.
        main = next((pool for pool in pools if pool["name"] == name), {})
        return {
            "version": __version__,
            "uptime": round(self.reactor.seconds() - self.workers.started, 1),
            "algorithm": main.get("algorithm", config["algo"]),
            "usesWeights": main.get("usesWeights", True),
            "listen": config["listen"],
            "backendTLS": main.get("backendTLS"),
            "shadow": main.get("shadow"),
            "latencyBounds": list(BUCKETS),
            "maxConn": main.get("maxConn"),
            "queue": main.get("queue"),
            "backends": main.get("backends", []),
            "pools": pools,
            "routes": mergeRoutes([worker["routes"] for worker in answering]),
            "workers": workers,
            # Each worker follows etcd itself: the first's connection.
            **({"etcd": answering[0]["etcd"]} if answering and "etcd" in answering[0] else {}),
        }


def _answered(results: list[tuple[bool, Any]]) -> list[tuple[bool, tuple[int | None, Any]]]:
    """
    Whether each worker answered 200, and its answer's code and content,
    from a L{DeferredList}'s C{results} of L{ask}s (a code of C{None} and
    why, for a worker that did not answer).
    """
    answers: list[tuple[bool, tuple[int | None, Any]]] = []
    for ok, result in results:
        if not ok:
            answers.append((False, (None, f"no answer: {result.getErrorMessage()}")))
        else:
            answers.append((result[0] == http.OK, result))
    return answers


def _withoutPool(path: bytes) -> bytes:
    """
    The path of an admin request without its C{/pools/NAME} in front: what
    it asks of the pool.
    """
    parts = path.split(b"/", 3)
    if len(parts) >= 3 and parts[1] == b"pools":
        return b"/" + parts[3] if len(parts) == 4 else b""
    return path


def _read(response: Any) -> Any:
    return treq.content(response).addCallback(lambda content: (response.code, content))


def _decoded(content: Any) -> Any:
    if isinstance(content, bytes):
        try:
            return json.loads(content)
        except ValueError:
            return content.decode("utf-8", "replace")
    return content


def _finish(request: server.Request, code: int, answer: Any) -> None:
    """
    Send C{answer}: metrics as they are, anything else as JSON.
    """
    request.setResponseCode(code)
    if code == http.UNAUTHORIZED:
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="txlb"')
    if isinstance(answer, bytes):
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        body = answer
    else:
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        body = json.dumps(answer, indent=1).encode() + b"\n"
    # A HEAD request's answer has the length GET's has, and no body (Twisted
    # drops what is written).
    request.setHeader(b"Content-Length", b"%d" % len(body))
    request.write(body)
    request.finish()

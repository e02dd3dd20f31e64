"""
Exact pick sequences for every algorithm.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.algorithmrequest import makeRequest
from txlb.algorithms import ALGORITHMS, algorithmNamed
from txlb.algorithms.ewma import PENALTY, PeakEWMA
from txlb.algorithms.iphash import IPHash
from txlb.algorithms.keyhash import KeyHash, requestKey
from txlb.algorithms.leastconn import LeastConnections
from txlb.algorithms.p2c import PowerOfTwoChoices
from txlb.algorithms.roundrobin import RoundRobin
from txlb.algorithms.swrr import SmoothWeightedRoundRobin
from txlb.algorithms.weighted import WeightedRoundRobin
from txlb.backend import Backend
from txlb.interfaces import IAlgorithm, IResponseObserver


def seedBackends() -> list[Backend]:
    """
    The seed's three backends, weighted 1:3:2.
    """
    return [
        Backend("localhost", 8081, 1),
        Backend("localhost", 8082, 3),
        Backend("localhost", 8083, 2),
    ]


def ports(
    algorithm: IAlgorithm,
    count: int,
    clientHost: str = "127.0.0.1",
    down: tuple[int, ...] = (),
) -> list[int]:
    """
    The ports of C{count} picks, while the backends on the C{down} ports are
    not candidates.
    """
    up = [b for b in algorithm.backends if b.port not in down]
    request = makeRequest(clientHost)
    return [algorithm.pick(request, up).port for _ in range(count)]


IPHASH_CLIENTS = (
    "192.168.1.10",
    "192.168.1.20",
    "10.0.0.1",
    "::1",
    "10.0.0.2",
    "10.0.0.3",
    "172.16.0.9",
)


class AlgorithmTestsMixin:
    """
    What every algorithm promises.
    """

    algorithmClass: type

    def test_interface(self) -> None:
        """
        The algorithm provides L{IAlgorithm} and is named for C{--algo}.
        """
        algorithm = self.algorithmClass(seedBackends())
        self.assertTrue(verifyObject(IAlgorithm, algorithm))
        self.assertEqual(algorithm.name, self.algorithmClass.name)

    def test_picksOnlyItsBackends(self) -> None:
        """
        Every pick is one of the backends it was made with.
        """
        backends = seedBackends()
        algorithm = self.algorithmClass(backends)
        for i in range(50):
            self.assertIn(algorithm.pick(makeRequest(f"10.0.0.{i}"), algorithm.backends), backends)

    def test_singleBackend(self) -> None:
        """
        With one backend, every pick is that backend.
        """
        only = Backend("127.0.0.1", 9000, 4)
        algorithm = self.algorithmClass([only])
        self.assertEqual(
            {algorithm.pick(makeRequest(f"10.0.0.{i}"), algorithm.backends) for i in range(10)},
            {only},
        )


class RoundRobinTests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = RoundRobin

    def test_skipsDown(self) -> None:
        """
        A backend that is not a candidate is skipped; the order of the others
        stays.
        """
        self.assertEqual(
            ports(RoundRobin(seedBackends()), 5, down=(8082,)), [8081, 8083, 8081, 8083, 8081]
        )

    def test_foreignCandidates(self) -> None:
        """
        Candidates that are none of its backends are refused.
        """
        self.assertRaises(
            ValueError, RoundRobin(seedBackends()).pick, makeRequest(), [Backend("x", 1)]
        )

    def test_sequence(self) -> None:
        """
        Backends are picked in order, wrapping around, whatever the client.
        """
        algorithm = RoundRobin(seedBackends())
        self.assertEqual(
            [algorithm.pick(makeRequest(f"10.0.0.{i}"), algorithm.backends).port for i in range(7)],
            [8081, 8082, 8083, 8081, 8082, 8083, 8081],
        )


class WeightedRoundRobinTests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = WeightedRoundRobin

    def test_skipsDown(self) -> None:
        """
        A backend that is down loses its slots; the others keep theirs.
        """
        self.assertEqual(
            ports(WeightedRoundRobin(seedBackends()), 6, down=(8082,)),
            [8081, 8083, 8083, 8081, 8083, 8083],
        )

    def test_foreignCandidates(self) -> None:
        """
        Candidates that are none of its backends are refused.
        """
        self.assertRaises(
            ValueError, WeightedRoundRobin(seedBackends()).pick, makeRequest(), [Backend("x", 1)]
        )

    def test_seedSequence(self) -> None:
        """
        Weights 1:3:2 give the seed's expanded list, then start again.
        """
        self.assertEqual(
            ports(WeightedRoundRobin(seedBackends()), 12),
            [8081, 8082, 8082, 8082, 8083, 8083] * 2,
        )

    def test_equalWeights(self) -> None:
        """
        Equal weights pick like round robin.
        """
        backends = [Backend("h", port, 2) for port in (1, 2)]
        self.assertEqual(ports(WeightedRoundRobin(backends), 6), [1, 1, 2, 2, 1, 1])


class LeastConnectionsTests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = LeastConnections

    def test_skipsDown(self) -> None:
        """
        A backend that is down is never picked, even when it is the least
        busy.
        """
        backends = seedBackends()
        backends[0].active = backends[2].active = 4
        self.assertEqual(
            ports(LeastConnections(backends), 4, down=(8082,)), [8081, 8083, 8081, 8083]
        )

    def test_foreignCandidates(self) -> None:
        """
        Candidates that are none of its backends are refused.
        """
        self.assertRaises(
            ValueError, LeastConnections(seedBackends()).pick, makeRequest(), [Backend("x", 1)]
        )

    def test_fewestActive(self) -> None:
        """
        The backend with the fewest requests in flight is picked.
        """
        backends = seedBackends()
        backends[0].active, backends[1].active, backends[2].active = 5, 2, 8
        self.assertEqual(ports(LeastConnections(backends), 3), [8082, 8082, 8082])

    def test_tiesGoRoundRobin(self) -> None:
        """
        Among backends tied for fewest, picks rotate instead of always taking
        the first.
        """
        self.assertEqual(
            ports(LeastConnections(seedBackends()), 7),
            [8081, 8082, 8083, 8081, 8082, 8083, 8081],
        )

    def test_tiesSkipBusier(self) -> None:
        """
        The rotation among tied backends skips a busier one.
        """
        backends = seedBackends()
        backends[1].active = 1
        self.assertEqual(ports(LeastConnections(backends), 4), [8081, 8083, 8081, 8083])

    def test_followsActiveCounts(self) -> None:
        """
        Each pick reads the counts as they are at that moment.
        """
        backends = seedBackends()
        algorithm = LeastConnections(backends)
        picks = []
        for _ in range(6):
            backend = algorithm.pick(makeRequest("127.0.0.1"), backends)
            backend.active += 1
            picks.append(backend.port)
        self.assertEqual(picks, [8081, 8082, 8083, 8081, 8082, 8083])


class IPHashTests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = IPHash

    clients = [f"192.168.{i}.{j}" for i in range(4) for j in range(1, 51)]

    def test_sameClientSameBackend(self) -> None:
        """
        A client IP reaches the same backend on every request.
        """
        algorithm = IPHash(seedBackends())
        for client in self.clients:
            self.assertEqual(
                len(
                    {algorithm.pick(makeRequest(client), algorithm.backends).port for _ in range(5)}
                ),
                1,
            )

    def test_stableAcrossInstances(self) -> None:
        """
        The mapping does not depend on the process: these picks were
        computed once and must never change (Python's salted C{hash()} would
        change them at every start).
        """
        algorithm = IPHash([Backend("localhost", port) for port in (8081, 8082, 8083)])
        self.assertEqual(
            [
                algorithm.pick(makeRequest(client), algorithm.backends).port
                for client in IPHASH_CLIENTS
            ],
            [8081, 8081, 8082, 8081, 8082, 8083, 8082],
        )

    def test_independentOfOrderAndCase(self) -> None:
        """
        The pick depends on the backends' addresses and weights only: the
        order they are listed in and the case of their host names change
        nothing.
        """
        backends = [Backend("api.internal", 80, 2), Backend("10.0.0.5", 80), Backend("::1", 81)]
        forward = IPHash(backends)
        shouted = [Backend(b.host.upper(), b.port, b.weight) for b in reversed(backends)]
        backward = IPHash(shouted)
        for client in self.clients:
            request = makeRequest(client)
            self.assertEqual(
                forward.pick(request, forward.backends).key,
                backward.pick(request, backward.backends).key,
            )

    def test_spreadsClients(self) -> None:
        """
        Many clients spread over all backends, none getting under a sixth.
        """
        algorithm = IPHash([Backend("localhost", port) for port in (8081, 8082, 8083)])
        counts: dict[int, int] = {}
        for client in self.clients:
            port = algorithm.pick(makeRequest(client), algorithm.backends).port
            counts[port] = counts.get(port, 0) + 1
        self.assertEqual(sorted(counts), [8081, 8082, 8083])
        self.assertGreater(min(counts.values()), len(self.clients) / 6)

    def test_removalMovesOnlyItsClients(self) -> None:
        """
        Removing one backend moves only the clients it had.
        """
        backends = [Backend("localhost", port) for port in (8081, 8082, 8083, 8084)]
        before = IPHash(backends)
        after = IPHash(backends[:2] + backends[3:])
        moved = 0
        for client in self.clients:
            old, new = (
                before.pick(makeRequest(client), before.backends),
                after.pick(makeRequest(client), after.backends),
            )
            if old is backends[2]:
                moved += 1
            else:
                self.assertIs(new, old)
        self.assertGreater(moved, 0)

    def test_downMovesOnlyItsClientsAndBack(self) -> None:
        """
        While a backend is down only its clients move, and they return when
        it is back.
        """
        backends = [Backend("localhost", port) for port in (8081, 8082, 8083, 8084)]
        algorithm = IPHash(backends)
        before = {client: algorithm.pick(makeRequest(client), backends) for client in self.clients}
        up = [b for b in backends if b.port != 8083]
        for client in self.clients:
            during = algorithm.pick(makeRequest(client), up)
            if before[client].port == 8083:
                self.assertNotEqual(during.port, 8083)
            else:
                self.assertIs(during, before[client])
        self.assertEqual(
            {c: algorithm.pick(makeRequest(c), backends) for c in self.clients}, before
        )

    def test_weightsBiasClients(self) -> None:
        """
        A backend of weight 3 gets more clients than one of weight 1.
        """
        heavy, light = Backend("h", 1, 3), Backend("h", 2, 1)
        algorithm = IPHash([heavy, light])
        onHeavy = sum(
            algorithm.pick(makeRequest(client), algorithm.backends) is heavy
            for client in self.clients
        )
        self.assertGreater(onHeavy, len(self.clients) * 0.6)


class SmoothWeightedRoundRobinTests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = SmoothWeightedRoundRobin

    def test_nginxSequence(self) -> None:
        """
        Weights 1:3:2 interleave as nginx does, then start again.
        """
        self.assertEqual(
            ports(SmoothWeightedRoundRobin(seedBackends()), 12),
            [8082, 8083, 8081, 8082, 8083, 8082] * 2,
        )

    def test_skipsDown(self) -> None:
        """
        A backend that is not a candidate neither gains nor gives back: the
        others interleave by their own weights (1:2).
        """
        self.assertEqual(
            ports(SmoothWeightedRoundRobin(seedBackends()), 6, down=(8082,)),
            [8083, 8081, 8083, 8083, 8081, 8083],
        )

    def test_equalWeights(self) -> None:
        """
        Equal weights pick like round robin.
        """
        backends = [Backend("h", port, 2) for port in (1, 2, 3)]
        self.assertEqual(ports(SmoothWeightedRoundRobin(backends), 6), [1, 2, 3, 1, 2, 3])

    def test_foreignCandidates(self) -> None:
        """
        Candidates that are none of its backends are refused.
        """
        self.assertRaises(
            ValueError,
            SmoothWeightedRoundRobin(seedBackends()).pick,
            makeRequest(),
            [Backend("x", 1)],
        )


def loadUp(algorithm: IAlgorithm, count: int) -> list[int]:
    """
    Make C{count} picks, none of them finishing, and return the requests in
    flight on each backend.
    """
    request = makeRequest()
    for _ in range(count):
        algorithm.pick(request, algorithm.backends).active += 1
    return [backend.active for backend in algorithm.backends]


class PowerOfTwoChoicesTests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = PowerOfTwoChoices

    def make(self, backends: list[Backend], seed: int = 1) -> PowerOfTwoChoices:
        self.clock = Clock()
        return PowerOfTwoChoices(backends, random.Random(seed), self.clock)

    def test_seededSequence(self) -> None:
        """
        With every backend idle, a pick is the first of two drawn: the
        sequence of a seed never changes.
        """
        algorithm = self.make([Backend("h", port) for port in (1, 2, 3)])
        self.assertEqual(ports(algorithm, 10), [1, 2, 2, 2, 1, 2, 2, 3, 3, 2])

    def test_lessLoadedOfTwo(self) -> None:
        """
        The busiest backend is never picked: whichever it is drawn with has
        fewer requests in flight.  (The same draws as
        L{test_seededSequence}, with 3 replaced.)
        """
        backends = [Backend("h", port) for port in (1, 2, 3)]
        backends[2].active = 9
        self.assertEqual(ports(self.make(backends), 10), [1, 2, 2, 2, 1, 2, 2, 1, 2, 2])

    def test_weightAware(self) -> None:
        """
        Requests in flight settle in proportion to the weights, 1:3:2.
        """
        self.assertEqual(loadUp(self.make(seedBackends()), 60), [10, 30, 20])

    def test_reportedLoad(self) -> None:
        """
        A backend reporting 0.75 load counts a quarter of its weight: it
        holds about a quarter of the requests in flight of the others.
        """
        backends = [Backend("h", port) for port in (1, 2, 3)]
        backends[0].reportLoad(b"0.75", 0)
        self.assertEqual(loadUp(self.make(backends), 60), [6, 27, 27])

    def test_reportedLoadFades(self) -> None:
        """
        A load reported once fades: at first the loaded backend loses to a
        busier one, a minute later it wins.
        """
        one, other = Backend("h", 1), Backend("h", 2)
        one.active, other.active = 1, 2
        one.reportLoad(b"1", 0)
        algorithm = self.make([one, other])
        self.assertIs(algorithm.pick(makeRequest(), [one, other]), other)
        self.clock.advance(60)
        self.assertIs(algorithm.pick(makeRequest(), [one, other]), one)


def simulate(
    algorithm: IAlgorithm,
    clock: Clock,
    latency: dict[int, float],
    until: float,
    changes: tuple[tuple[float, int, float], ...] = (),
    concurrency: int = 4,
) -> list[tuple[float, int]]:
    """
    Keep C{concurrency} requests in flight until C{until} seconds, each
    backend answering in C{latency[port]} seconds; at C{(time, port,
    seconds)} in C{changes} a backend changes speed.  Return each pick's
    time and port.
    """
    picks = []
    request = makeRequest()

    def send() -> None:
        backend = algorithm.pick(request, algorithm.backends)
        backend.active += 1
        picks.append((clock.seconds(), backend.port))
        seconds = latency[backend.port]

        def answered() -> None:
            backend.active -= 1
            if IResponseObserver.providedBy(algorithm):
                algorithm.answered(backend, seconds)
            if clock.seconds() < until:
                send()

        clock.callLater(seconds, answered)

    for _ in range(concurrency):
        send()
    for at, port, seconds in changes:
        clock.callLater(at, latency.__setitem__, port, seconds)
    for _ in range(100_000):
        calls = clock.getDelayedCalls()
        if not calls:
            break
        clock.advance(min(call.getTime() for call in calls) - clock.seconds())
    return picks


def shares(picks: list[tuple[float, int]], start: float, end: float) -> dict[int, int]:
    """
    How many of C{picks} went to each port from C{start} to C{end}.
    """
    counts: dict[int, int] = {}
    for at, port in picks:
        if start <= at < end:
            counts[port] = counts.get(port, 0) + 1
    return dict(sorted(counts.items()))


class PeakEWMATests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = PeakEWMA

    def make(self, backends: list[Backend], decay: float = 10.0) -> PeakEWMA:
        self.clock = Clock()
        return PeakEWMA(backends, random.Random(1), self.clock, decay)

    def test_observer(self) -> None:
        """
        It learns from responses: the proxy feeds it through
        L{IResponseObserver}.
        """
        self.assertTrue(verifyObject(IResponseObserver, self.make(seedBackends())))

    def test_slowBackendStarved(self) -> None:
        """
        Of three backends answering in 10, 10 and 100 ms, the slow one gets
        one request in two seconds; power of two choices, blind to latency,
        gives it 39.
        """
        latency = {1: 0.01, 2: 0.01, 3: 0.1}
        algorithm = self.make([Backend("h", port) for port in (1, 2, 3)])
        self.assertEqual(
            shares(simulate(algorithm, self.clock, dict(latency), 2), 0, 2),
            {1: 385, 2: 405, 3: 1},
        )
        clock = Clock()
        blind = PowerOfTwoChoices(
            [Backend("h", port) for port in (1, 2, 3)], random.Random(1), clock
        )
        self.assertEqual(
            shares(simulate(blind, clock, dict(latency), 2), 0, 2),
            {1: 201, 2: 219, 3: 39},
        )

    def test_turnsSlowThenRecovers(self) -> None:
        """
        A backend that turns slow (10 to 100 ms) at 2 s gets 2 requests in
        the next second; back to 10 ms at 4 s, it wins back its third of the
        traffic within a few decay times (1 s here).
        """
        algorithm = self.make([Backend("h", port) for port in (1, 2, 3)], decay=1.0)
        picks = simulate(
            algorithm, self.clock, {1: 0.01, 2: 0.01, 3: 0.01}, 10, ((2, 3, 0.1), (4, 3, 0.01))
        )
        self.assertEqual(
            [shares(picks, start, start + 2)[3] for start in (0, 2, 4, 6, 8)],
            [264, 3, 117, 213, 216],
        )
        self.assertEqual(shares(picks, 2, 3), {1: 186, 2: 198, 3: 2})

    def test_idleBackendRetried(self) -> None:
        """
        The latency of a backend nobody sends to fades: 100 ms measured a
        minute ago costs less than 10 ms measured now.
        """
        slow, fast = Backend("h", 1), Backend("h", 2)
        algorithm = self.make([slow, fast])
        algorithm.answered(slow, 0.1)
        self.clock.advance(60)
        algorithm.answered(fast, 0.01)
        self.assertLess(algorithm.cost(slow, 60), algorithm.cost(fast, 60))
        self.assertIs(algorithm.pick(makeRequest(), [slow, fast]), slow)

    def test_peak(self) -> None:
        """
        A slower answer counts at once; a faster one only moves the average
        by how long ago the last one was.
        """
        backend = Backend("h", 1)
        algorithm = self.make([backend])
        algorithm.answered(backend, 0.01)
        algorithm.answered(backend, 0.1)
        self.assertEqual(algorithm.latency(backend, 0), 0.1)
        self.clock.advance(10)
        algorithm.answered(backend, 0.01)
        self.assertAlmostEqual(
            algorithm.latency(backend, 10), 0.1 / 2.718281828 + 0.01 * (1 - 1 / 2.718281828)
        )

    def test_costs(self) -> None:
        """
        The cost is the latency times (in flight + 1) over the capacity; a
        backend not measured yet costs 0 when idle and more than any
        measured one when busy.
        """
        backend, fresh = Backend("h", 1, 2), Backend("h", 2)
        algorithm = self.make([backend, fresh])
        algorithm.answered(backend, 0.01)
        backend.active = 3
        self.assertEqual(algorithm.cost(backend, 0), 0.01 * 4 / 2)
        backend.reportLoad(b"0.5", 0)
        self.assertEqual(algorithm.cost(backend, 0), 0.01 * 4 / 1)
        self.assertEqual(algorithm.cost(fresh, 0), 0)
        fresh.active = 1
        self.assertEqual(algorithm.cost(fresh, 0), PENALTY + 1)

    def test_removedBackend(self) -> None:
        """
        An answer from a backend removed since is ignored.
        """
        algorithm = self.make([Backend("h", 1)])
        algorithm.answered(Backend("h", 2), 0.5)
        self.assertEqual(algorithm.latency(algorithm.backends[0], 0), 0)


HASH_PATHS = [f"/item/{i}".encode() for i in range(8)]


class KeyHashTests(AlgorithmTestsMixin, SynchronousTestCase):
    algorithmClass = KeyHash

    def test_keys(self) -> None:
        """
        Each C{--hash-key} takes its key from the request; a missing or
        empty one is none.
        """
        request = makeRequest(
            "10.1.2.3",
            b"/a/b?x=1&y=&x=2",
            ((b"X-User", b"ann"), (b"x-user", b"bob"), (b"Cookie", b"sid=42; e=")),
        )
        table = [
            ("ip", "", b"10.1.2.3"),
            ("path", "", b"/a/b"),
            ("uri", "", b"/a/b?x=1&y=&x=2"),
            ("header", "X-User", b"ann, bob"),
            ("header", "X-None", None),
            ("cookie", "sid", b"42"),
            ("cookie", "e", None),
            ("cookie", "none", None),
            ("query", "x", b"1"),
            ("query", "y", None),
            ("query", "z", None),
        ]
        for kind, name, key in table:
            self.assertEqual(requestKey(request, kind, name), key, (kind, name))

    def test_ipAsIPHash(self) -> None:
        """
        C{--hash-key ip} without bounded loads picks exactly as C{iphash}.
        """
        backends = seedBackends()
        hashed, iphash = KeyHash(backends, balanceFactor=0), IPHash(backends)
        for client in IPHASH_CLIENTS:
            request = makeRequest(client)
            self.assertIs(hashed.pick(request, backends), iphash.pick(request, backends))

    def test_stableChoice(self) -> None:
        """
        A key's backend depends on the key and the backends' addresses and
        weights only: these picks were computed once and must never change,
        whatever the order of the backends.
        """
        backends = [Backend("localhost", port) for port in (8081, 8082, 8083)]
        expected = [8081, 8082, 8083, 8082, 8083, 8082, 8081, 8082]
        for order in (backends, backends[::-1]):
            algorithm = KeyHash(order, key="path")
            self.assertEqual(
                [algorithm.pick(makeRequest(target=path), order).port for path in HASH_PATHS],
                expected,
            )

    def test_missingKeyRoundRobin(self) -> None:
        """
        Requests without the key go round robin.
        """
        self.assertEqual(
            ports(KeyHash(seedBackends(), key="header:X-User"), 4), [8081, 8082, 8083, 8081]
        )

    def test_overflowToNextChoice(self) -> None:
        """
        When the key's first choice is at its bound, the request goes to the
        key's next choice under its bound, even if another is idler; and
        back once the load falls.
        """
        backends = [Backend("localhost", port) for port in (8081, 8082, 8083)]
        algorithm = KeyHash(backends, key="path")
        request = makeRequest(target=HASH_PATHS[0])
        # The key ranks 8081, 8082, 8083.
        first = algorithm.pick(request, backends)
        self.assertEqual(first.port, 8081)
        # 3 in flight: 1.25 * (3 + 1) / 3 rounds up to 2 each.
        first.active, backends[1].active = 2, 1
        self.assertEqual(algorithm.pick(request, backends).port, 8082)
        first.active = 1
        self.assertIs(algorithm.pick(request, backends), first)

    def assertBounded(self, factor: float, backends: list[Backend]) -> list[int]:
        """
        Send one hot key 60 times, none finishing; at every pick, check
        that no backend holds more than C{factor} times its share of the
        requests in flight, rounded up.
        """
        algorithm = KeyHash(backends, key="path", balanceFactor=factor)
        weights = sum(b.weight for b in backends)
        for count in range(1, 61):
            algorithm.pick(makeRequest(target=b"/hot"), backends).active += 1
            for backend in backends:
                bound = -(-count * factor * backend.weight // weights)
                self.assertLessEqual(backend.active, bound, (count, backend.port))
        return [b.active for b in backends]

    def test_boundedLoads(self) -> None:
        """
        A single hot key spreads over the backends, none above 1.25 times
        its share.
        """
        self.assertEqual(
            self.assertBounded(1.25, [Backend("h", port) for port in (1, 2, 3)]), [10, 25, 25]
        )

    def test_boundedLoadsWeighted(self) -> None:
        """
        The bound follows the weights.
        """
        self.assertEqual(self.assertBounded(1.25, seedBackends()), [13, 38, 9])

    def test_noBound(self) -> None:
        """
        With a factor of 0 the hot key stays on its backend whatever the
        load.
        """
        backends = [Backend("h", port) for port in (1, 2, 3)]
        algorithm = KeyHash(backends, key="path", balanceFactor=0)
        self.assertEqual(loadUp(algorithm, 30), [30, 0, 0])


class UsesWeightsTests(SynchronousTestCase):
    """
    Each built-in algorithm's C{usesWeights}, which the status page reads,
    says truly whether its picks depend on the weights.
    """

    def picks(self, name: str, weights: tuple[int, ...]) -> list[int]:
        """
        The ports of 300 picks of algorithm C{name} over backends of
        C{weights}, for clients from 50 addresses, with about a third of the
        requests in flight at any time and the backends answering at
        different speeds.
        """
        clock = Clock()
        backends = [Backend("h", port, weight) for port, weight in enumerate(weights, 1)]
        make = algorithmNamed(name)
        if name in ("p2c", "ewma"):
            algorithm = make(backends, random=random.Random(1), reactor=clock)
        else:
            algorithm = make(backends)
        sequence, inFlight = [], []
        for i in range(300):
            backend = algorithm.pick(makeRequest(f"10.0.{i % 7}.{i % 50}"), algorithm.backends)
            backend.active += 1
            inFlight.append(backend)
            sequence.append(backend.port)
            clock.advance(0.01)
            if i % 3:
                done = inFlight.pop(0)
                done.active -= 1
                if IResponseObserver.providedBy(algorithm):
                    algorithm.answered(done, 0.01 * done.port)
        return sequence

    def test_usesWeights(self) -> None:
        """
        Changing one weight changes the picks of exactly the algorithms that
        say they use weights.
        """
        for name, make in ALGORITHMS.items():
            changed = self.picks(name, (1, 1, 1)) != self.picks(name, (1, 5, 1))
            self.assertEqual(changed, make.usesWeights, name)
            self.assertEqual(sorted(set(self.picks(name, (1, 1, 1)))), [1, 2, 3], name)

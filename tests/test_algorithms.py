"""
Exact pick sequences for every algorithm.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txlb.backend import Backend
from txlb.interfaces import IAlgorithm
from txlb.iphash import IPHash
from txlb.leastconn import LeastConnections
from txlb.roundrobin import RoundRobin
from txlb.weighted import WeightedRoundRobin

from .requests import makeRequest


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

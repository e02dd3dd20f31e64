"""
Tests for L{txlb.keytables}: bounded per-key tables, private or shared
between processes.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import txlb
from txlb.keytables import ROUTE_TABLES, WAYS, Buckets, ClientCounts, Region, workerHashSeed

#: Seconds any wait on another process may take.
WAIT = 30.0

#: A process that adopts the region on file descriptor C{argv[1]}, then
#: runs C{argv[2]} with C{region}, C{buckets} and C{fingerprint} defined.
_CHILD = """
import os, sys, time
from txlb.keytables import Buckets, ClientCounts, Region
region = Region.adopt(int(sys.argv[1]), os.environ.get("PYTHONHASHSEED"))
buckets = Buckets(region, time.monotonic)
fingerprint = region.fingerprint
exec(sys.argv[2])
"""


def runChild(
    region: Region, code: str, names: Sequence[str] = (), **kwargs: object
) -> subprocess.Popen[str]:
    """
    Start a Python process that shares C{region} and runs C{code}, with
    C{names} as C{sys.argv[3:]}.
    """
    assert region.fd is not None and region.hashSeed is not None
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(txlb.__file__).parent.parent)
    env["PYTHONHASHSEED"] = region.hashSeed
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(region.fd), code, *names],
        pass_fds=[region.fd],
        env=env,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


class RegionTests(SynchronousTestCase):
    def test_roundedToSets(self) -> None:
        """
        A table holds the keys asked for, rounded up to whole sets, and at
        least one set.
        """
        for keys, records in [(1, WAYS), (WAYS, WAYS), (WAYS + 1, 2 * WAYS), (100, 104)]:
            region = Region.create(keys)
            self.addCleanup(region.close)
            self.assertEqual((region.buckets, region.clients), (records, records))

    def test_fingerprint(self) -> None:
        """
        A fingerprint is a 64-bit hash of the key, never 0 (CPython's hash of
        C{b""} is 0).
        """
        region = Region.create(8)
        self.addCleanup(region.close)
        self.assertEqual(region.fingerprint(b"a"), region.fingerprint(b"a"))
        self.assertNotEqual(region.fingerprint(b"a"), region.fingerprint(b"b"))
        self.assertLess(region.fingerprint(b"a"), 2**64)
        self.assertNotEqual(region.fingerprint(b""), 0)

    def test_sameInEveryProcess(self) -> None:
        """
        Processes started with the region's C{PYTHONHASHSEED} compute the
        same fingerprints; another seed gives others.
        """
        region = Region.create(8, hashSeed="1234")
        self.addCleanup(region.close)
        fingerprints = []
        for seed in ("1234", "1234", "99"):
            env = {**os.environ, "PYTHONHASHSEED": seed}
            env["PYTHONPATH"] = str(Path(txlb.__file__).parent.parent)
            code = "from txlb.keytables import Region; print(Region.create(8).fingerprint(b'k'))"
            output = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT
            )
            fingerprints.append(int(output.stdout))
        self.assertEqual(fingerprints[0], fingerprints[1])
        self.assertNotEqual(fingerprints[0], fingerprints[2])

    def test_workerHashSeed(self) -> None:
        """
        Workers get the supervisor's C{PYTHONHASHSEED} if it is a number,
        else a random one of Python's range.
        """
        self.assertEqual(workerHashSeed({"PYTHONHASHSEED": "42"}), "42")
        for environ in ({}, {"PYTHONHASHSEED": "random"}, {"PYTHONHASHSEED": ""}):
            seeds = {workerHashSeed(environ) for _ in range(20)}
            self.assertGreater(len(seeds), 1)
            self.assertTrue(all(1 <= int(seed) < 2**32 for seed in seeds))

    def test_adoptSameTables(self) -> None:
        """
        A region adopted from its file descriptor has its maker's sizes and
        seed.
        """
        region = Region.create(100, workers=3, hashSeed="7")
        self.addCleanup(region.close)
        assert region.fd is not None
        adopted = Region.adopt(os.dup(region.fd), "7")
        self.addCleanup(adopted.close)
        self.assertEqual(
            (adopted.buckets, adopted.clients, adopted.workers, adopted.hashSeed),
            (region.buckets, region.clients, 3, "7"),
        )

    def test_adoptOtherSeed(self) -> None:
        """
        A process whose C{PYTHONHASHSEED} is not the region's would count
        keys apart from the others: it is refused in one line.
        """
        region = Region.create(8, hashSeed="7")
        self.addCleanup(region.close)
        assert region.fd is not None
        fd = os.dup(region.fd)
        self.addCleanup(os.close, fd)
        for seed in (None, "8"):
            e = self.assertRaises(ValueError, Region.adopt, fd, seed)
            self.assertEqual(str(e), f"PYTHONHASHSEED is {seed!r}, not the key tables' '7'")

    def test_adoptNoRegion(self) -> None:
        """
        A file descriptor holding something else is refused in one line.
        """
        read, write = os.pipe()
        self.addCleanup(os.close, read)
        self.addCleanup(os.close, write)
        e = self.assertRaises(ValueError, Region.adopt, read, None)
        self.assertEqual(str(e), f"file descriptor {read} holds no txlb key tables")
        path = self.mktemp()
        Path(path).write_bytes(b"x" * 4096)
        fd = os.open(path, os.O_RDWR)
        self.addCleanup(os.close, fd)
        e = self.assertRaises(ValueError, Region.adopt, fd, None)
        self.assertEqual(str(e), f"file descriptor {fd} holds no txlb key tables")

    def test_lockIsPerProcess(self) -> None:
        """
        Two regions over one memfd (as a supervisor's and a worker's) each
        lock on a description of their own, so they exclude each other.
        """
        region = Region.create(8, hashSeed="7")
        self.addCleanup(region.close)
        assert region.fd is not None
        other = Region.adopt(os.dup(region.fd), "7")
        self.addCleanup(other.close)
        region.lock()
        self.assertRaises(
            BlockingIOError,
            fcntl.flock,
            other._lockFd,  # type: ignore[arg-type]
            fcntl.LOCK_EX | fcntl.LOCK_NB,
        )
        region.unlock()
        other.lock()
        other.unlock()


class BucketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.region = Region.create(WAYS)
        self.addCleanup(self.region.close)
        self.buckets = Buckets(self.region, self.clock.seconds)

    def takes(self, fingerprint: int, count: int, rate: float, burst: float) -> list[float]:
        return [self.buckets.take(fingerprint, rate, burst) for _ in range(count)]

    def test_burstThenRate(self) -> None:
        """
        A new key has C{burst} tokens; then one comes every 1/rate seconds,
        and a refusal says how long until the next.
        """
        self.assertEqual(self.takes(1, 4, 2.0, 3), [0, 0, 0, 0.5])
        self.clock.advance(0.25)
        self.assertEqual(self.takes(1, 1, 2.0, 3), [0.25])
        self.clock.advance(0.25)
        self.assertEqual(self.takes(1, 2, 2.0, 3), [0, 0.5])

    def test_refusalTakesNothing(self) -> None:
        """
        A refused request takes no token: a client retrying at once does not
        push its next success further away.
        """
        self.takes(1, 1, 1.0, 1)
        self.assertEqual(self.takes(1, 5, 1.0, 1), [1.0] * 5)
        self.clock.advance(1)
        self.assertEqual(self.takes(1, 1, 1.0, 1), [0])

    def test_fillsUpToBurst(self) -> None:
        """
        A bucket left alone fills up to C{burst}, no more.
        """
        self.takes(1, 3, 1.0, 3)
        self.clock.advance(1000)
        self.assertEqual(self.takes(1, 4, 1.0, 3), [0, 0, 0, 1.0])

    def test_steadyBelowRate(self) -> None:
        """
        A key sending steadily at the rate is never refused, even with a
        burst of 1.
        """
        for _ in range(100):
            self.assertEqual(self.buckets.take(7, 10.0, 1), 0)
            self.clock.advance(0.1)

    def test_throughputIsBurstPlusRate(self) -> None:
        """
        Over T seconds of requests as fast as they come, a key gets
        C{burst + rate * T} through (the last request at T = 5).
        """
        allowed = 0
        for _ in range(1001):
            allowed += self.buckets.take(7, 50.0, 20) == 0
            self.clock.advance(0.005)
        self.assertEqual(allowed, 20 + 50 * 5)

    def test_keysApart(self) -> None:
        """
        Each key has a bucket of its own.
        """
        self.assertEqual(self.takes(1, 2, 1.0, 1), [0, 1.0])
        self.assertEqual(self.takes(2, 2, 1.0, 1), [0, 1.0])

    def test_leastRecentlyUsedDropped(self) -> None:
        """
        A key beyond the set's room takes the record of the least recently
        used key, which starts afresh when it comes back; the others keep
        their state.
        """
        for fingerprint in range(1, WAYS + 1):
            self.buckets.take(fingerprint, 1.0, 1)
            self.clock.advance(0.001)
        # 1 was used last of all now; 2 is the least recently used.
        self.buckets.take(1, 1.0, 1)
        self.clock.advance(0.001)
        self.assertEqual(self.buckets.take(WAYS + 1, 1.0, 1), 0)
        self.assertEqual(len(self.buckets), WAYS)
        self.assertEqual(self.buckets.take(2, 1.0, 1), 0)  # forgotten: full again
        self.assertGreater(self.buckets.take(1, 1.0, 1), 0)  # remembered: empty
        self.assertGreater(self.buckets.take(WAYS, 1.0, 1), 0)

    def test_boundedWhateverTheKeys(self) -> None:
        """
        However many keys come, the table holds at most its records.
        """
        region = Region.create(100)
        self.addCleanup(region.close)
        buckets = Buckets(region, self.clock.seconds)
        for key in range(10_000):
            buckets.take(region.fingerprint(b"%d" % key), 1.0, 1)
        self.assertEqual(len(buckets), 104)

    def test_garbledRecords(self) -> None:
        """
        A record garbled by a writer that died mid-write (or any bytes at
        all) reads as a full bucket, never an error or a bucket that never
        refills.
        """
        self.clock.advance(100)
        for tokens, stamp in [
            (math.nan, 50.0),
            (-5.0, 50.0),
            (1.0, math.nan),
            (0.0, 1e300),  # far in the future: would never refill
            (math.inf, 50.0),
            (0.5, -math.inf),
        ]:
            struct.pack_into(
                "<Qdd", self.region.memory, self.region.bucketsOffset, 9, tokens, stamp
            )
            self.assertEqual(self.takes(9, 3, 1.0, 2), [0, 0, 1.0], (tokens, stamp))
        self.region.memory[self.region.bucketsOffset : self.region.bucketsOffset + 24 * WAYS] = (
            b"\xff" * 24 * WAYS
        )
        self.assertEqual(self.takes(9, 3, 1.0, 2), [0, 0, 1.0])

    def test_clockBehind(self) -> None:
        """
        A process whose clock read is a little behind the last writer's
        adds no tokens and does not move the stamp back.
        """
        self.clock.advance(10)
        self.takes(1, 1, 1.0, 1)
        self.clock.advance(-0.5)
        self.assertEqual(self.takes(1, 1, 1.0, 1), [1.0])
        self.clock.advance(0.5)
        self.assertEqual(self.takes(1, 1, 1.0, 1), [1.0])
        self.clock.advance(1)
        self.assertEqual(self.takes(1, 1, 1.0, 1), [0])


class SharedBucketTests(SynchronousTestCase):
    """
    Buckets shared with other processes.
    """

    def setUp(self) -> None:
        self.region = Region.create(64, hashSeed="5")
        self.addCleanup(self.region.close)
        self.buckets = Buckets(self.region, time.monotonic)

    def test_sharedWithAnotherProcess(self) -> None:
        """
        Tokens another process takes are gone for this one.
        """
        child = runChild(
            self.region,
            "print(sum(buckets.take(fingerprint(b'k'), 0.001, 5) == 0 for _ in range(3)),"
            " fingerprint(b'k'))",
            stdout=subprocess.PIPE,
        )
        output, _ = child.communicate(timeout=WAIT)
        taken, fingerprintText = output.split()
        self.assertEqual(taken, "3")
        # This process has another hash seed: the child's fingerprint.
        fingerprint = int(fingerprintText)
        self.assertEqual(
            [self.buckets.take(fingerprint, 0.001, 5) == 0 for _ in range(3)],
            [True, True, False],
        )

    def test_killedHoldingTheLock(self) -> None:
        """
        A process SIGKILLed while it holds the lock wedges nobody: the
        kernel releases the lock as the process dies.
        """
        child = runChild(
            self.region,
            "region.lock(); print('locked', flush=True); time.sleep(60)",
            stdout=subprocess.PIPE,
        )
        self.addCleanup(lambda: child.poll() is None and child.kill())
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline(), "locked\n")
        probe = os.open(f"/proc/self/fd/{self.region.fd}", os.O_RDWR)
        self.addCleanup(os.close, probe)
        self.assertRaises(BlockingIOError, fcntl.flock, probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(WAIT)
        child.stdout.close()
        # Not blocking, or the test would hang rather than fail.
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_UN)
        self.assertEqual(self.buckets.take(5, 1.0, 1), 0)

    def test_noDoubleSpending(self) -> None:
        """
        Two processes taking from one bucket as fast as they can take
        exactly its tokens between them, however their takes interleave.
        """
        code = (
            "n = 0\n"
            "for _ in range(20000): n += buckets.take(fingerprint(b'k'), 1e-9, 5000) == 0\n"
            "print(n)"
        )
        children = [runChild(self.region, code, stdout=subprocess.PIPE) for _ in range(2)]
        outputs = [int(child.communicate(timeout=WAIT)[0]) for child in children]
        self.assertEqual(sum(outputs), 5000)


class RouteTableTests(SynchronousTestCase):
    """
    The route tables' directory: a table per route's limit, kept while the
    limit is claimed, shared with other processes.
    """

    def setUp(self) -> None:
        self.region = Region.create(64, hashSeed="5")
        self.addCleanup(self.region.close)

    def size(self) -> int:
        assert self.region.fd is not None
        return os.fstat(self.region.fd).st_size

    def test_ownTables(self) -> None:
        """
        Each limit gets a table of its own, as many records as the
        region's, and the region grows only as tables are first used.
        """
        base = self.size()
        self.assertEqual(base, self.region.routeTablesOffset)
        first, second = self.region.claimTable(b"api"), self.region.claimTable(b"web")
        self.assertNotEqual(first, second)
        self.assertEqual(self.size(), base + 2 * self.region.tableBytes)
        clock = Clock()
        api, web = (Buckets(self.region, clock.seconds, slot) for slot in (first, second))
        own = Buckets(self.region, clock.seconds)
        self.assertEqual(api.take(7, 1.0, 1), 0)
        self.assertEqual((len(api), len(web), len(own)), (1, 0, 0))
        self.assertEqual(web.take(7, 1.0, 1), 0)
        self.assertEqual(api.take(7, 1.0, 1), 1.0)

    def test_claimedAgain(self) -> None:
        """
        A limit claimed again (a reload that keeps it) gets its table back,
        buckets and all.
        """
        slot = self.region.claimTable(b"api")
        buckets = Buckets(self.region, Clock().seconds, slot)
        buckets.take(7, 1.0, 1)
        self.assertEqual(self.region.claimTable(b"web"), slot + 1)
        self.assertEqual(self.region.claimTable(b"api"), slot)
        self.assertEqual(len(buckets), 1)

    def test_oldestClaimTaken(self) -> None:
        """
        With every slot held, a new limit takes the slot claimed longest
        ago, emptied: none of the other limit's buckets are left.
        """
        slots = [self.region.claimTable(b"limit %d" % index) for index in range(ROUTE_TABLES)]
        self.assertEqual(slots, list(range(ROUTE_TABLES)))
        buckets = Buckets(self.region, Clock().seconds, 0)
        for key in range(1, 20):
            buckets.take(key, 1.0, 1)
        self.assertEqual(len(buckets), 19)
        # Slot 0 claimed again: slot 1 is now the one claimed longest ago.
        self.assertEqual(self.region.claimTable(b"limit 0"), 0)
        self.assertEqual(self.region.claimTable(b"new"), 1)
        self.assertEqual(self.region.claimTable(b"newer"), 2)
        self.assertEqual(len(buckets), 19)
        self.assertEqual(self.region.claimTable(b"limit 3"), 3)
        for index in range(4, ROUTE_TABLES):
            self.region.claimTable(b"limit %d" % index)
        self.assertEqual(self.region.claimTable(b"newest"), 0)
        self.assertEqual(len(buckets), 0)
        self.assertEqual(
            self.size(), self.region.routeTablesOffset + ROUTE_TABLES * self.region.tableBytes
        )

    def test_privateRegion(self) -> None:
        """
        A region private to this process has route tables too.
        """
        region = Region.create(64)
        self.addCleanup(region.close)
        buckets = Buckets(region, Clock().seconds, region.claimTable(b"api"))
        self.assertEqual([buckets.take(7, 1.0, 1), buckets.take(7, 1.0, 1)], [0, 1.0])

    def test_sharedWithAnotherProcess(self) -> None:
        """
        Another process claiming the same limit finds the same table (the
        region grown by the first), and takes from the same buckets; one
        claiming another limit gets another table.  (Two children: their
        fingerprints are those of the region's hash seed, not this
        process's.)
        """
        code = (
            "slots = [region.claimTable(name.encode()) for name in sys.argv[3:]]\n"
            "shared = Buckets(region, time.monotonic, slots[-1])\n"
            "print(*slots, sum(shared.take(fingerprint(b'k'), 0.001, 5) == 0 for _ in range(3)))"
        )
        outputs = []
        for names in (["api"], ["web", "api"]):
            child = runChild(self.region, code, stdout=subprocess.PIPE, names=names)
            outputs.append(child.communicate(timeout=WAIT)[0].split())
        self.assertEqual(outputs, [["0", "3"], ["1", "0", "2"]])
        self.assertEqual(self.size(), self.region.routeTablesOffset + 2 * self.region.tableBytes)


class ClientCountTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.region = Region.create(WAYS, workers=3)
        self.addCleanup(self.region.close)
        self.workers = [ClientCounts(self.region, worker) for worker in range(3)]

    def test_limit(self) -> None:
        """
        An address may have C{limit} connections open in all workers
        together; the next is refused until one closes.
        """
        first, second, third = self.workers
        self.assertEqual([first.opened(1, 3), second.opened(1, 3), third.opened(1, 3)], [True] * 3)
        self.assertEqual([first.opened(1, 3), second.opened(1, 3)], [False, False])
        self.assertEqual(first.count(1), 3)
        second.closed(1)
        self.assertEqual(first.count(1), 2)
        self.assertTrue(first.opened(1, 3))
        self.assertEqual(first.count(1), 3)

    def test_addressesApart(self) -> None:
        """
        Each address counts alone.
        """
        first = self.workers[0]
        self.assertEqual(
            [first.opened(1, 1), first.opened(2, 1), first.opened(1, 1)], [True, True, False]
        )

    def test_closedWithoutOpen(self) -> None:
        """
        A close this worker did not count changes nothing, and counts never
        go below zero.
        """
        first, second, _ = self.workers
        first.opened(1, 5)
        second.closed(1)
        second.closed(2)
        self.assertEqual(first.count(1), 1)

    def test_fullTable(self) -> None:
        """
        With every record of the set held by connected addresses, a new
        address cannot be counted (L{None}); once one closes all its
        connections, its record is free.
        """
        first = self.workers[0]
        for fingerprint in range(1, WAYS + 1):
            self.assertTrue(first.opened(fingerprint, 5))
        self.assertIsNone(first.opened(WAYS + 1, 5))
        first.closed(3)
        self.assertTrue(first.opened(WAYS + 1, 5))
        self.assertEqual((first.count(3), first.count(WAYS + 1)), (0, 1))

    def test_forgetWorker(self) -> None:
        """
        A dead worker's counts are cleared, the others' kept.
        """
        first, second, third = self.workers
        for counts in (first, second, second, third):
            counts.opened(1, 10)
        first.forgetWorker(1)
        self.assertEqual(first.count(1), 2)
        self.assertTrue(second.opened(1, 3))
        self.assertFalse(third.opened(1, 3))

    def test_evenWorkers(self) -> None:
        """
        Records with an even number of columns need no padding, and count
        the same.
        """
        region = Region.create(WAYS, workers=2)
        self.addCleanup(region.close)
        first, second = ClientCounts(region, 0), ClientCounts(region, 1)
        self.assertEqual(
            [first.opened(4, 2), second.opened(4, 2), second.opened(4, 2)], [True, True, False]
        )
        self.assertEqual(ClientCounts.recordSize(2), 16)
        self.assertEqual(ClientCounts.recordSize(3), 24)

    def test_badWorker(self) -> None:
        """
        A worker index outside the region's workers is refused.
        """
        e = self.assertRaises(ValueError, ClientCounts, self.region, 3)
        self.assertEqual(str(e), "worker 3 of 3")

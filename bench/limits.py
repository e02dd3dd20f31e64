"""
What txlb's overload protection costs per request: microseconds per check
of each piece, in this process, with no load around.

    python bench/limits.py            # CPython
    pypy3 bench/limits.py             # PyPy (with Twisted importable)

Each figure is the median of --runs runs of --count calls, after one run
to warm up (PyPy's JIT).  ``shared`` is the region --workers use (a memfd
and an flock taken and released around each check); ``lockf`` is the same
with a POSIX record lock per set instead, the design not taken; ``round
trip`` is one small message to another process and its answer over a UNIX
socket pair, the least a check asking a supervisor for tokens would cost.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock

from txlb.adaptive import AdaptiveLimit
from txlb.admission import Admission
from txlb.backend import Backend
from txlb.keytables import Buckets, ClientCounts, Region
from txlb.ratelimit import Rate, RateLimit
from txlb.retrybudget import RetryBudget


def measure(function: Callable[[int], object], count: int, runs: int) -> float:
    """
    Microseconds per call of C{function(i)}, the median of C{runs} runs.
    """
    times = []
    for run in range(runs + 1):
        started = time.perf_counter()
        for index in range(count):
            function(index)
        if run:
            times.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(times)


def rateLimit(region: Region) -> Callable[[int], object]:
    limit = RateLimit(Buckets(region, time.monotonic), region.fingerprint, Rate(10**9, 1.0))
    keys = [b"10.1.%d.%d" % (index // 256, index % 256) for index in range(1000)]
    return lambda index: limit.checkKey(keys[index % 1000])


def newKeys(region: Region) -> Callable[[int], object]:
    limit = RateLimit(Buckets(region, time.monotonic), region.fingerprint, Rate(10, 1.0))
    return lambda index: limit.checkKey(b"%d" % index)


def perSetLocks(region: Region) -> Region:
    """
    C{region}, locking one byte per set with C{lockf} instead of the whole
    region with C{flock}.
    """
    fd = region.fd
    offsets = {}

    def lock() -> None:
        # Buckets.take does not say which set: the offset of a set, as it
        # would be, from a counter.
        offset = offsets.setdefault("next", 0)
        offsets["next"] = (offset + 192) % (192 * 1024)
        offsets["held"] = offset
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)  # type: ignore[arg-type]

    def unlock() -> None:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offsets["held"])  # type: ignore[arg-type]

    region.lock, region.unlock = lock, unlock
    return region


def clientCounts(region: Region) -> Callable[[int], object]:
    counts = ClientCounts(region)
    fingerprint = region.fingerprint

    def check(index: int) -> None:
        key = fingerprint(b"10.1.%d.%d" % (index % 250, index % 7))
        counts.opened(key, 1000)
        counts.closed(key)

    return check


def admission(maxConn: int = 100) -> Callable[[int], object]:
    clock = Clock()
    pool = Admission(clock, maxConn=maxConn)
    backends = [Backend("127.0.0.1", port) for port in (8081, 8082, 8083)]
    pool.setBackends(backends)

    def check(index: int) -> None:
        free = pool.admitNow(backends)
        backend = free[index % len(free)]
        backend.active += 1
        backend.active -= 1
        pool.released(backend)

    return check


def adaptive() -> Callable[[int], object]:
    now = [0.0]
    limit = AdaptiveLimit(lambda: now[0])

    def observe(index: int) -> None:
        now[0] += 0.0001
        limit.observe(0.010 + (index % 7) * 0.001, limit.limit)

    return observe


def retryBudget() -> Callable[[int], object]:
    budget = RetryBudget()

    def check(index: int) -> None:
        budget.requestStarted()
        if budget.startRetry():
            budget.retryEnded()
        budget.requestEnded()

    return check


def roundTrip() -> tuple[Callable[[int], object], Callable[[], None]]:
    """
    One 16-byte message to a child process and its answer.
    """
    here, there = socket.socketpair()
    pid = os.fork()
    if not pid:
        here.close()
        while True:
            data = there.recv(16)
            if not data:
                os._exit(0)
            there.sendall(data)
    there.close()

    def ask(index: int) -> None:
        here.sendall(b"x" * 16)
        here.recv(16)

    def stop() -> None:
        here.close()
        os.waitpid(pid, 0)

    return ask, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    count, runs = arguments.count, arguments.runs
    rows: list[tuple[str, float]] = []

    def row(name: str, function: Callable[[int], object], scale: int = 1) -> None:
        rows.append((name, measure(function, count // scale, runs)))

    private = Region.create(100_000)
    shared = Region.create(100_000, 2, hashSeed="1")
    row("fingerprint (hash())", lambda index: private.fingerprint(b"10.1.2.%d" % index))
    row("rate limit, 1,000 keys, one process", rateLimit(private))
    row("rate limit, 1,000 keys, shared (flock)", rateLimit(shared))
    row(
        "rate limit, 1,000 keys, shared (lockf per set)",
        rateLimit(perSetLocks(Region.create(100_000, 2, hashSeed="1"))),
    )
    row("rate limit, a new key each time, one process", newKeys(Region.create(100_000)))
    row("client connection opened and closed, shared", clientCounts(shared))
    row("admission: admitted and released, free backends", admission())
    row("admission: admitted and released, no limits (the default)", admission(0))
    row("adaptive limit: one latency observed", adaptive())
    row("retry budget: a request with one retry", retryBudget())
    ask, stop = roundTrip()
    row("round trip to another process (UNIX socket pair)", ask, scale=10)
    stop()
    implementation = sys.implementation.name
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"| check ({implementation} {version}) | µs per call |")
    print("| --- | ---: |")
    for name, micros in rows:
        print(f"| {name} | {micros:.2f} |")


if __name__ == "__main__":
    main()

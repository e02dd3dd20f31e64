"""
CPU per relayed request, measured in memory.

C{bench/run.py} measures txlb with wrk over loopback, on a machine that other
work shares: its requests/s move by tens of percent from run to run.  This
script relays C{GET /ping} through txlb's real objects instead (the service
that C{twistd -n --logfile FILE txlb --backends ...} builds, its HTTP/1.1
server channel, the exchange, the backend client and twistd's log written
once per turn to a real file), over in-memory transports driven by a
L{HeapReactor}, and reports the process's CPU time per request
(C{time.process_time}), which other processes hardly change.  What it leaves
out is the same for every version of txlb: the reactor's C{epoll} and the
sockets' system calls.

    python bench/cpu.py                      # 20,000 requests, best of 5
    python bench/cpu.py --access-log-file    # the access log to its own file
    python bench/cpu.py --profile 20         # and cProfile's top 20
    pypy3 bench/cpu.py --warmup 50000        # PyPy's JIT needs a longer warm-up

It imports txlb from the current directory first: run it from the checkout
to measure.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.getcwd())

from twisted.internet.address import IPv4Address
from twisted.internet.base import ReactorBase
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import globalLogBeginner
from twisted.python import threadable

from txlb.tap import Options, makeService

#: What wrk sends.
REQUEST = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
#: What the benchmark's nginx backends answer.
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 08 Dec 2026 02:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\npong\n"
)
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


class HeapReactor(MemoryReactor):
    """
    A L{MemoryReactor} whose timed calls are kept as Twisted's own reactors
    keep them (a heap, cancelled calls dropped lazily: L{ReactorBase}'s
    code), not as L{twisted.internet.task.Clock} does (a list sorted again
    on every call, which would cost more here than half of txlb's own
    work).  Time stands still unless L{now} is changed.
    """

    now = 1_000_000_000.0
    running = True

    def __init__(self) -> None:
        super().__init__()
        self.threadCallQueue: list[Any] = []
        self._pendingTimedCalls: list[Any] = []
        self._newTimedCalls: list[Any] = []
        self._cancellations = 0
        self._justStopped = False

    def seconds(self) -> float:
        return self.now

    callLater = ReactorBase.callLater
    _moveCallLaterSooner = ReactorBase._moveCallLaterSooner
    _cancelCallLater = ReactorBase._cancelCallLater
    _insertNewDelayedCalls = ReactorBase._insertNewDelayedCalls
    getDelayedCalls = ReactorBase.getDelayedCalls
    runUntilCurrent = ReactorBase.runUntilCurrent

    def advance(self, seconds: float) -> None:
        """
        Move time on by C{seconds} and run the calls due, as one turn.
        """
        self.now += seconds
        self.runUntilCurrent()


class Relay:
    """
    txlb as twistd starts it, over a memory reactor, with C{connections}
    kept-alive clients sending one request after the other.
    """

    def __init__(self, directory: str, connections: int, accessLogFile: bool) -> None:
        self.reactor = HeapReactor()
        threadable.registerAsIOThread()
        twistd = {"nodaemon": True, "logfile": os.path.join(directory, "twistd.log")}
        options = Options()
        arguments = ["--backends", "127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083"]
        if accessLogFile:
            arguments += ["--access-log-file", os.path.join(directory, "access.log")]
        options.parseOptions(arguments)
        options.parent = twistd  # type: ignore[assignment]
        self.service: Any = makeService(options, self.reactor)
        # twistd begins logging to its observer (here, txlb's TurnLog).
        globalLogBeginner.beginLoggingTo([self.service.mainLog], redirectStandardIO=False)
        self.service.privilegedStartService()
        self.service.startService()
        self.clients = []
        for _ in range(connections):
            channel = self.service.site.buildProtocol(CLIENT)
            transport = StringTransport(peerAddress=CLIENT)
            channel.makeConnection(transport)
            self.clients.append((channel, transport))
        self.backends: list[Any] = []

    def relay(self, client: int) -> bytes:
        """
        One request from client number C{client}, through to a backend and
        back; return what the client received.
        """
        channel, transport = self.clients[client]
        channel.dataReceived(REQUEST)
        reactor = self.reactor
        while reactor.tcpClients:
            host, port, factory, _, _ = reactor.tcpClients.pop(0)
            factory.doStart()
            backend = factory.buildProtocol(IPv4Address("TCP", host, port))
            toBackend = StringTransport(peerAddress=IPv4Address("TCP", host, port))
            backend.makeConnection(toBackend)
            self.backends.append((backend, toBackend))
            reactor.advance(0)
        for backend, toBackend in self.backends:
            if toBackend.io.tell():
                toBackend.clear()
                backend.dataReceived(RESPONSE)
        reactor.advance(0)
        answer = transport.value()
        transport.clear()
        return answer

    def run(self, count: int) -> float:
        """
        Relay C{count} requests, the clients in turn; return the CPU seconds
        per request.
        """
        clients = len(self.clients)
        start = time.process_time()
        for i in range(count):
            self.relay(i % clients)
        return (time.process_time() - start) / count

    def stop(self) -> None:
        self.service.stopService()
        self.service.mainLog.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5, help="keep the best of N runs")
    parser.add_argument("--warmup", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--access-log-file", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile's top N")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        relay = Relay(directory, arguments.connections, arguments.access_log_file)
        answer = relay.relay(0)
        if not answer.startswith(b"HTTP/1.1 200 OK\r\n") or not answer.endswith(b"pong\n"):
            raise SystemExit(f"unexpected answer: {answer!r}")
        relay.run(arguments.warmup)
        best = min(relay.run(arguments.requests) for _ in range(arguments.repeat))
        print(
            f"{sys.implementation.name}: {best * 1e6:.1f} us CPU per request "
            f"(best of {arguments.repeat} x {arguments.requests}, "
            f"{arguments.connections} connections"
            f"{', --access-log-file' if arguments.access_log_file else ''})"
        )
        if arguments.profile:
            profile = cProfile.Profile()
            profile.runcall(relay.run, arguments.requests)
            stats = pstats.Stats(profile)
            stats.sort_stats("tottime").print_stats(arguments.profile)
        relay.stop()


if __name__ == "__main__":
    main()

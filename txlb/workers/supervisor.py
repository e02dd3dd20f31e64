"""
C{--workers N}: a supervisor process that starts N worker processes, each
an ordinary balancer (L{txlb.workers.worker}), and keeps them running.

The supervisor binds one listening socket per worker, all on the
C{--listen} address with C{SO_REUSEPORT}, so that the kernel spreads new
connections over them (by a hash of the connection's addresses), and hands
each worker its socket.  Measured on a 2-core machine, this split 65
connections at worst 24:41, where one shared socket split them at worst
56:9 (a worker that wakes up first accepts many at once).  The supervisor
keeps the sockets open while a worker restarts, so that the connections
the kernel queues on a dead worker's socket wait for its successor instead
of being refused.  This works the same on every Twisted (no
C{makeBinding}) for C{tcp:} and C{tcp6:} descriptions.

The supervisor restarts a worker that ends (at most once a second per
worker), forwards SIGHUP, stops every worker gracefully on SIGTERM or
SIGINT (a second one makes them cut their requests) and exits when all are
gone.  With C{--admin}, it serves the admin API itself and fans it out to
each worker's loopback admin socket (L{txlb.workers.workeradmin}).  It makes
the tables the client limits count in (L{txlb.keytables.Region}) and hands
them to every worker, and clears a dead worker's connection counts.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from typing import Any

from twisted.application import strports
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from txlb.admin import AdminSite
from txlb.history import INTERVAL as HISTORY_INTERVAL
from txlb.keytables import ClientCounts, Region, workerHashSeed
from txlb.service import StartupError, logAdmin
from txlb.signals import Signals
from txlb.workers.worker import (
    ADMIN_FD,
    KEYTABLES_FD,
    WORKER_ENV,
    WORKERS_ENV,
    WorkerLogObserver,
    listenFDs,
)
from txlb.workers.workeradmin import Change, WorkersAdmin, replay

#: Seconds that must pass between two starts of one worker.
RESTART_INTERVAL = 1.0

#: Seconds the workers get beyond C{--drain-timeout} to exit before they
#: are killed.
EXIT_GRACE = 5.0

#: What the twistd console script runs (it has no C{""} on C{sys.path}).
_TWISTD = "import sys; sys.path.remove(''); from twisted.scripts.twistd import run; run()"

#: The log observer of a worker, which says which worker wrote each line.
_LOGGER = f"{WorkerLogObserver.__module__}.{WorkerLogObserver.__name__}"

#: Twisted's default listen backlog.
_BACKLOG = 50


def parseListen(description: str) -> tuple[socket.AddressFamily, str, int, int]:
    """
    The address family, interface, port and backlog of a C{tcp:} or
    C{tcp6:} endpoint description.

    @raise ValueError: For any other description, which workers cannot
        share.
    """
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6"):
        raise ValueError(f"workers can share tcp: and tcp6: addresses only, not {kind}:")
    family = socket.AF_INET if kind == "tcp" else socket.AF_INET6
    interface, backlog, port = "", _BACKLOG, None
    for argument in re.split(r"(?<!\\):", rest):  # colons escaped as \: are in values
        name, equals, value = argument.partition("=")
        value = value.replace("\\", "")
        if not equals and port is None:
            port = name
        elif name == "port":
            port = value
        elif name == "interface":
            interface = value
        elif name == "backlog":
            backlog = int(value)
        else:
            raise ValueError(f"unknown argument {argument!r}")
    if port is None or not port.isdigit():
        raise ValueError("no port")
    return family, interface, int(port), backlog


def reusePortSockets(description: str, count: int) -> list[socket.socket]:
    """
    C{count} listening sockets on the address of C{description}, with
    C{SO_REUSEPORT}; a port of 0 becomes the one the first socket got.

    @raise OSError: When the address cannot be bound.
    """
    family, interface, port, backlog = parseListen(description)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            listening = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(listening)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listening.bind((interface, port))
            port = listening.getsockname()[1]
            listening.listen(backlog)
            # Twisted's adopted port accepts in a loop until EAGAIN.
            listening.setblocking(False)
    except OSError:
        for listening in sockets:
            listening.close()
        raise
    return sockets


class _Worker(ProcessProtocol):
    """
    One worker process, and what the supervisor knows of it.

    @ivar started: When it was last started, in the reactor's seconds.
    @ivar restarts: How many times it was restarted.
    """

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started = 0.0
        self.restarts = 0
        self.pid: int | None = None
        self.pending: Any = None

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)


class Supervisor(MultiService):
    """
    The supervisor of C{--workers N} worker processes.

    @ivar listenSockets: Each worker's listening sockets, by listener.
    @ivar adminSockets: Each worker's loopback admin socket (none without
        C{--admin}).
    """

    _log = Logger()

    def __init__(self, config: Any, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.started = reactor.seconds()
        self.workers = [_Worker(self, index) for index in range(config["workers"])]
        self.listenSockets: list[list[socket.socket]] = []
        self.adminSockets: list[socket.socket] = []
        self._stopping = False
        self._allEnded: Deferred[None] | None = None
        #: The admin changes every worker made since the last reload, for a
        #: restarted worker to make too.
        self.changes: list[Change] = []
        #: The client limits' tables, shared with every worker: a limit is
        #: the whole txlb's.
        #: The workers' PYTHONHASHSEED, one for all: the tables' key
        #: fingerprints are Python's hash().
        self.hashSeed = workerHashSeed(os.environ)
        self.keyTables = Region.create(config["rate-limit-keys"], len(self.workers), self.hashSeed)
        self.admin = None
        self.recorder = None
        if config["admin"] is not None:
            admin = WorkersAdmin(self, reactor)
            self.admin = strports.service(config["admin"], AdminSite(admin), reactor=reactor)
            # The status page's history, sampled from the workers.
            self.recorder = TimerService(
                HISTORY_INTERVAL, lambda: Deferred.fromCoroutine(admin.api.record())
            )
            self.recorder.clock = reactor

    def adminPorts(self) -> list[int]:
        """
        The port of each worker's loopback admin socket.
        """
        return [adminSocket.getsockname()[1] for adminSocket in self.adminSockets]

    def describe(self) -> list[dict[str, Any]]:
        """
        Each worker's process id (C{None} while it is restarted) and restarts.
        """
        return [{"pid": worker.pid, "restarts": worker.restarts} for worker in self.workers]

    def changed(self, change: Change) -> None:
        """
        Every worker made the admin C{change}: a restarted one makes it too,
        until the next reload (which, in each worker, replaces what the
        admin API changed with the configuration).
        """
        self.changes.append(change)

    def bind(self) -> None:
        """
        Bind every socket, and check that the workers can open the access
        log, before twistd daemonizes (see L{LoadBalancerService.bind}): a
        worker that cannot start would be restarted forever.

        @raise StartupError: With one line, if something cannot be had.
        """
        if self.listenSockets:
            return
        path = self.config["access-log-file"]
        if path is not None:
            try:
                open(path, "ab").close()
            except OSError as e:
                raise StartupError(f"txlb: --access-log-file: {e}") from None
        count = len(self.workers)
        try:
            for description in self.config["listen"]:
                self.listenSockets.append(reusePortSockets(description, count))
            if self.admin is not None:
                self.adminSockets = [
                    reusePortSockets("tcp:0:interface=127.0.0.1", 1)[0] for _ in range(count)
                ]
                self.admin.privilegedStartService()
        except (CannotListenError, OSError) as e:
            for listening in self._sockets():
                listening.close()
            self.listenSockets, self.adminSockets = [], []
            raise StartupError(f"txlb: cannot listen: {e}") from None
        super().privilegedStartService()

    def privilegedStartService(self) -> None:
        """
        Bind (see L{bind}) unless that is done.
        """
        self.bind()

    def _sockets(self) -> list[socket.socket]:
        """
        Every socket it bound for the workers.
        """
        return [*(s for sockets in self.listenSockets for s in sockets), *self.adminSockets]

    def startService(self) -> None:
        self._log.info(
            "txlb supervising {count} workers on {listen}",
            count=len(self.workers),
            listen=", ".join(self.config["listen"]),
        )
        if self.config["admin"] is not None:
            logAdmin(self._log, self.config["admin"])
        self.started = self.reactor.seconds()
        super().startService()
        for worker in self.workers:
            self._start(worker)
        if self.admin is not None:
            self.admin.startService()
        if self.recorder is not None:
            self.recorder.startService()
        signals = Signals(
            self.reactor,
            self._log,
            "Received {signal}: stopping the workers gracefully",
            "Received {signal} again: workers cut their requests",
            lambda: self._signalWorkers(signal.SIGTERM),
            self.reload,
        )
        self.reactor.addSystemEventTrigger("after", "startup", signals.install)

    def _start(self, worker: _Worker) -> None:
        worker.pending = None
        worker.started = self.reactor.seconds()
        childFDs: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        for fd, sockets in zip(listenFDs(len(self.listenSockets)), self.listenSockets):
            childFDs[fd] = sockets[worker.index].fileno()
        if self.adminSockets:
            childFDs[ADMIN_FD] = self.adminSockets[worker.index].fileno()
        assert self.keyTables.fd is not None
        childFDs[KEYTABLES_FD] = self.keyTables.fd
        arguments = [sys.executable, "-c", _TWISTD, "-n", "--pidfile=", "--logger", _LOGGER, "txlb"]
        arguments += [*self.config.commandLine, "--workers", "1"]
        process = self.reactor.spawnProcess(
            worker,
            sys.executable,
            arguments,
            env={
                **os.environ,
                WORKER_ENV: str(worker.index),
                WORKERS_ENV: str(len(self.workers)),
                "PYTHONHASHSEED": self.hashSeed,
            },
            childFDs=childFDs,
        )
        worker.pid = process.pid
        self._log.info("Worker {index} started, pid {pid}", index=worker.index, pid=worker.pid)
        if worker.restarts and self.changes:
            # Its admin socket queues the requests until it listens.
            port = self.adminSockets[worker.index].getsockname()[1]
            Deferred.fromCoroutine(replay(port, list(self.changes), self.reactor))

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        pid, worker.pid = worker.pid, None
        # Its connections died with it.
        ClientCounts(self.keyTables).forgetWorker(worker.index)
        if self._stopping:
            self._log.info("Worker {index} (pid {pid}) exited", index=worker.index, pid=pid)
            if self._allEnded is not None and not self.runningWorkers():
                self._allEnded.callback(None)
            return
        why = "exited 0" if reason.check(ProcessDone) else reason.getErrorMessage()
        delay = max(0.0, worker.started + RESTART_INTERVAL - self.reactor.seconds())
        self._log.error(
            "Worker {index} (pid {pid}) ended ({why}): restarting it in {delay:.1f} s",
            index=worker.index,
            pid=pid,
            why=why,
            delay=delay,
        )
        worker.restarts += 1
        worker.pending = self.reactor.callLater(delay, self._start, worker)

    def runningWorkers(self) -> list[_Worker]:
        """
        The workers whose process is there.
        """
        return [worker for worker in self.workers if worker.pid is not None]

    def _signalWorkers(self, number: signal.Signals) -> None:
        for worker in self.runningWorkers():
            assert worker.pid is not None
            try:
                os.kill(worker.pid, number)
            except ProcessLookupError:
                pass

    def reload(self) -> None:
        """
        Have every worker reload its configuration.
        """
        self._log.info("Received SIGHUP: passing it to the workers")
        self.changes.clear()
        self._signalWorkers(signal.SIGHUP)

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """
        Stop every worker gracefully, killing those still there after the
        drain timeout and some grace; then the admin listener.
        """
        self._stopping = True
        if self.recorder is not None and self.recorder.running:
            # First: once the workers are gone, a sample would wait for
            # them until it timed out.
            await self.recorder.stopService()
        for worker in self.workers:
            if worker.pending is not None:
                worker.pending.cancel()
                worker.pending = None
        if self.runningWorkers():
            self._allEnded = Deferred()
            self._signalWorkers(signal.SIGTERM)
            kill = self.reactor.callLater(
                self.config["drain-timeout"] + EXIT_GRACE, self._signalWorkers, signal.SIGKILL
            )
            await self._allEnded
            if kill.active():
                kill.cancel()
        await super().stopService()
        if self.admin is not None:
            await self.admin.stopService()
        for listening in self._sockets():
            listening.close()
        self.keyTables.close()

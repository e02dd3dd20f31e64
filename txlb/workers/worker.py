"""
The worker side of C{--workers}: a worker is an ordinary balancer whose
listening sockets come from its supervisor (L{txlb.workers.supervisor}) instead of
C{--listen} and C{--admin}.

The supervisor starts each worker as C{twistd -n --pidfile= --logger
txlb.workers.worker.WorkerLogObserver txlb ARGS --workers 1} with
C{TXLB_WORKER} set to the worker's index (and C{TXLB_WORKERS} to their
number, for each worker's share of C{--max-conn}), the listening socket of
the first C{--listen} on file descriptor 3 (and those of the others on 6, 7
and on, L{listenFDs}), with C{--admin}, the worker's own loopback admin
socket on file descriptor 4, and the client limits' shared tables
(L{txlb.keytables.Region}) on file descriptor 5.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    Logger,
    formatEventAsClassicLogText,
)
from zope.interface import implementer

#: The environment variable that makes a C{twistd txlb} a worker, holding
#: its index (0 to N - 1).
WORKER_ENV = "TXLB_WORKER"
#: The environment variable holding how many workers there are, N.
WORKERS_ENV = "TXLB_WORKERS"

#: The file descriptors a worker gets its (first) listening and admin
#: sockets on, and the key tables it shares with the other workers.
LISTEN_FD, ADMIN_FD, KEYTABLES_FD = 3, 4, 5
#: The file descriptor of its second listening socket, the others following.
MORE_LISTEN_FDS = 6


def listenFDs(count: int) -> list[int]:
    """
    The file descriptors of a worker's C{count} listening sockets, in the
    order of C{--listen}.
    """
    return [LISTEN_FD, *range(MORE_LISTEN_FDS, MORE_LISTEN_FDS + count - 1)]


#: Seconds between two looks at whether the supervisor is still there.
PARENT_POLL = 1.0


def workerIndex(environ: Mapping[str, str]) -> int | None:
    """
    The index of this worker, or C{None} when this process is no worker.
    """
    value = environ.get(WORKER_ENV)
    return None if value is None else int(value)


def workerCount(environ: Mapping[str, str]) -> int:
    """
    How many workers share the limits with this one (1 when this process
    is no worker).
    """
    return int(environ.get(WORKERS_ENV, "1"))


def adoptedEndpoint(reactor: Any, fd: int) -> IStreamServerEndpoint:
    """
    An endpoint listening on the inherited socket C{fd}, of whatever family
    it is.
    """
    probe = socket.socket(fileno=fd)
    family = probe.family
    probe.detach()
    return AdoptedStreamServerEndpoint(reactor, fd, family)


@implementer(ILogObserver)
class WorkerLogObserver:
    """
    A worker's log (twistd's C{--logger}): twistd's text lines on the
    standard output the worker shares with its supervisor and the other
    workers, each saying which worker wrote it, as in C{2026-11-29T05:34:41+0000
    [worker 1] [txlb.service.LoadBalancerService#info] txlb listening on
    tcp:8080}, and each event with a C{worker} field (the index) for any
    other observer.

    The worker writes its own lines, so the label costs a dictionary entry
    and a string concatenation per line, in the worker: no line passes
    through the supervisor.
    """

    def __init__(self, output: IO[str] | None = None, index: int | None = None) -> None:
        self.index = workerIndex(os.environ) if index is None else index
        self._label = f" [worker {self.index}] "
        self._file = FileLogObserver(sys.stdout if output is None else output, self._format)

    def _format(self, event: LogEvent) -> str | None:
        text = formatEventAsClassicLogText(event)
        if text is None:
            return None
        # twistd's timestamp has no space in it.
        stamp, _, rest = text.partition(" ")
        return stamp + self._label + rest

    def __call__(self, event: LogEvent) -> None:
        event["worker"] = self.index
        self._file(event)


class ParentWatch(Service):
    """
    Stop this worker gracefully when its supervisor is gone (killed with
    SIGKILL, say), instead of serving on as an orphan: the parent process
    then changes.
    """

    _log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.supervisorPid = os.getppid()
        self._loop = LoopingCall(self._look)
        self._loop.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._loop.start(PARENT_POLL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def _look(self) -> None:
        if os.getppid() != self.supervisorPid:
            self._log.warn("The supervisor (pid {pid}) is gone: stopping", pid=self.supervisorPid)
            self._loop.stop()
            self.reactor.stop()

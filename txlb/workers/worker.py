"""
The worker side of C{--workers}: a worker is an ordinary balancer whose
listening sockets come from its supervisor (L{txlb.workers.supervisor}) instead of
C{--listen} and C{--admin}.

The supervisor starts each worker as C{twistd -n --pidfile= txlb ARGS
--workers 1} with C{TXLB_WORKER} set to the worker's index (and
C{TXLB_WORKERS} to their number, for each worker's share of C{--max-conn}), the listening
socket on file descriptor 3, with C{--admin}, the worker's own loopback
admin socket on file descriptor 4, and the client limits' shared tables
(L{txlb.keytables.Region}) on file descriptor 5.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

#: The environment variable that makes a C{twistd txlb} a worker, holding
#: its index (0 to N - 1).
WORKER_ENV = "TXLB_WORKER"
#: The environment variable holding how many workers there are, N.
WORKERS_ENV = "TXLB_WORKERS"

#: The file descriptors a worker gets its listening and admin sockets on,
#: and the key tables it shares with the other workers.
LISTEN_FD, ADMIN_FD, KEYTABLES_FD = 3, 4, 5

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

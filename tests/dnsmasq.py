"""
A real dnsmasq for the tests: Debian's C{dnsmasq-base}, started on a free
loopback port in a temporary folder, answering only the records it is given
(C{--no-resolv}: it never asks anyone else).

dnsmasq behaves as DNS servers people run do, and unlike a twisted.names
server: it rotates the order of its records on every query, answers AAAA
with REFUSED for a name it does not serve C{--local}, and closes a TCP
connection after 100 queries.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

#: Where Debian's dnsmasq-base puts it (not on a normal user's PATH).
DNSMASQ = "/usr/sbin/dnsmasq"

#: Seconds dnsmasq gets to listen.
START = 10.0


def freeLoopbackPort() -> int:
    """
    A loopback port nobody listens on, over TCP or UDP.
    """
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp.bind(("127.0.0.1", port))
        return port


class Dnsmasq:
    """
    One dnsmasq on 127.0.0.1:L{port}, stopped when the test ends.

    @ivar port: Its port, which a restart keeps.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        if not os.access(DNSMASQ, os.X_OK):
            raise SkipTest(f"no {DNSMASQ}: install Debian's dnsmasq-base (.ci/run does)")
        self.folder = Path(testCase.mktemp()).absolute()
        self.folder.mkdir()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        testCase.addCleanup(self.stop)

    def start(self, *options: str) -> Dnsmasq:
        """
        Start it with C{options} (C{--srv-host=...}, C{--host-record=...},
        C{--local=/test/}), on the port it had if it had one, and wait until
        it takes TCP connections.
        """
        for _ in range(5):
            port = self.port or freeLoopbackPort()
            process = subprocess.Popen(
                [
                    DNSMASQ,
                    *("--no-resolv", "--no-hosts", "--keep-in-foreground"),
                    "--conf-file=/dev/null",
                    f"--port={port}",
                    *("--listen-address=127.0.0.1", "--bind-interfaces"),
                    f"--pid-file={self.folder / 'dnsmasq.pid'}",
                    f"--log-facility={self.folder / 'dnsmasq.log'}",
                    *options,
                ],
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._listening(process, port):
                self.process, self.port = process, port
                return self
        raise AssertionError(f"dnsmasq did not start: {self.log()}")

    def _listening(self, process: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + START
        while time.monotonic() < deadline:
            if process.poll() is not None:
                # The port was taken in between, say.
                return False
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.02)
        process.kill()
        process.wait()
        return False

    def restart(self, *options: str) -> Dnsmasq:
        """
        Stop it, and start it again with C{options} on the same port.
        """
        self.stop()
        return self.start(*options)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None

    @property
    def server(self) -> tuple[str, int]:
        """
        Its address, as a resolver is given it.
        """
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        path = self.folder / "dnsmasq.log"
        return path.read_text() if path.exists() else "(no log)"

"""
Several txlb that agree: three real C{twistd txlb} processes over the same
backends, listed in different orders and started with different
C{PYTHONHASHSEED}s, send each client IP to the same backend.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import txlb
from tests.algorithmrequest import makeRequest
from txlb.algorithms.iphash import IPHash
from txlb.backend import Backend

TAC = Path(__file__).parent.parent / "backend_server.tac"

# What the twistd console script does, run by this Python.
_RUN_TWISTD = "import sys; sys.path.remove(''); from twisted.scripts.twistd import run; run()"

#: Seconds a process gets to start listening.
START_TIMEOUT = 30


def freePorts(count: int) -> list[int]:
    """
    C{count} distinct ports free on 127.0.0.1 right now.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def ping(port: int, source: str) -> str:
    """
    The body of C{GET /ping} sent to C{port} from the address C{source}.
    """
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request("GET", "/ping")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


class AgreementTests(SynchronousTestCase):
    def start(self, name: str, arguments: list[str], port: int, **env: str) -> None:
        """
        Run C{twistd -n --pidfile= ARGUMENTS} with the txlb under test, and
        wait until it listens on C{port}; it is killed at the end.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        environment = dict(os.environ, **env)
        # The txlb under test (a checkout or the installed package) comes first.
        environment["PYTHONPATH"] = str(Path(txlb.__file__).parent.parent)
        with open(os.path.join(directory, "output"), "w") as output:
            process = subprocess.Popen(
                [sys.executable, "-c", _RUN_TWISTD, "-n", "--pidfile=", *arguments],
                cwd=directory,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

        def stop() -> None:
            process.kill()
            process.wait(timeout=10)

        self.addCleanup(stop)
        deadline = time.monotonic() + START_TIMEOUT
        while not listening(port):
            if time.monotonic() > deadline or process.poll() is not None:
                with open(os.path.join(directory, "output")) as output:
                    self.fail(f"{name} did not start listening on {port}:\n{output.read()}")
            time.sleep(0.1)

    def test_threeInstancesAgree(self) -> None:
        """
        Three txlb with C{--algo iphash} over the same weighted backends,
        listed in three orders, each started with its own C{PYTHONHASHSEED},
        send each of 30 client IPs (127.x.y.z source addresses) to the same
        backend: the one rendezvous hashing gives in this process too.
        """
        ports = freePorts(6)
        backendPorts, balancerPorts = ports[:3], ports[3:]
        weights = {backendPorts[0]: 1, backendPorts[1]: 2, backendPorts[2]: 1}
        specs = [f"127.0.0.1:{port}={weights[port]}" for port in backendPorts]
        self.start(
            "backends",
            ["-y", str(TAC)],
            backendPorts[-1],
            BACKEND_PORTS=",".join(map(str, backendPorts)),
        )
        for port in backendPorts:
            self.assertTrue(listening(port), port)
        orders = [specs, specs[::-1], [specs[1], specs[2], specs[0]]]
        for seed, (order, port) in enumerate(zip(orders, balancerPorts)):
            self.start(
                f"txlb {seed}",
                [
                    *("txlb", "--listen", f"tcp:{port}:interface=127.0.0.1"),
                    *("--algo", "iphash", "--backends", ",".join(order)),
                ],
                port,
                PYTHONHASHSEED=str(seed + 1),
            )
        clients = [f"127.{i}.{i * 7 % 256}.{i + 10}" for i in range(30)]
        expected = IPHash([Backend("127.0.0.1", p, weights[p]) for p in backendPorts])
        chosen = {}
        for client in clients:
            answers = {ping(port, client) for port in balancerPorts}
            self.assertEqual(len(answers), 1, (client, answers))
            chosen[client] = answers.pop()
            pick = expected.pick(makeRequest(client), expected.backends)
            self.assertEqual(chosen[client], f"pong from backend :{pick.port}\n", client)
        # Not a vacuous agreement: the clients spread over every backend.
        self.assertEqual(len(set(chosen.values())), 3)

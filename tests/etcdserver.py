"""
A real etcd for the tests: one member on free loopback ports, its data in a
temporary folder, with fast elections so that it starts (and elects itself)
in a fraction of a second.

It can be stopped (SIGTERM, then SIGKILL), killed, frozen (SIGSTOP: it keeps
accepting connections and answers nothing) and started again on the same
ports and data, compacted, put behind TLS with a CA made here, and have
authentication turned on.  Debian's etcd-server and etcd-client packages
provide C{etcd} and C{etcdctl} (3.4); without them the tests skip, saying
so.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet.task import deferLater

from tests.helpers import PKI, freePort

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"

#: Why the etcd tests skip, or None when they can run.
SKIP = (
    None
    if os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)
    else "etcd and etcdctl are not installed (Debian: apt-get install etcd-server etcd-client)"
)

#: The root user enableAuth creates, which etcdctl then speaks as.
ROOT_PASSWORD = "root-password"


class Certificates:
    """
    A CA, a certificate for etcd on 127.0.0.1 and a client certificate, all
    PEM files in C{directory}; and a second CA, which signed none of them.
    """

    def __init__(self, directory: str) -> None:
        pki = PKI(directory)
        self.ca = pki.caPath
        # The gateway dials etcd's own gRPC port with the server certificate,
        # as a client: it needs both uses, or every call answers 503.
        self.server, self.serverKey = pki.leaf(
            "etcd",
            addresses=["127.0.0.1"],
            usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        self.client, self.clientKey = pki.leaf("txlb")
        self.otherCA = PKI(os.path.join(directory, "other"), "another CA").caPath


class EtcdServer:
    """
    One etcd member on 127.0.0.1, in C{directory}.

    @ivar url: Its client URL.
    """

    def __init__(
        self,
        directory: str,
        reactor: Any,
        tls: Certificates | None = None,
        options: Sequence[str] = (),
    ) -> None:
        """
        @param tls: Serve TLS with these certificates and require a client
            certificate.
        @param options: More etcd options (C{--auth-token-ttl=2}...).
        """
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.reactor = reactor
        self.tls = tls
        self.options = list(options)
        self.clientPort = freePort()
        self.peerPort = freePort()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.clientPort}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.directory / "etcd.log"
        self._authenticated = False

    def command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peerPort}"
        command = [
            ETCD,
            "--name=test",
            f"--data-dir={self.directory / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            # 10 ms heartbeats and a 100 ms election timeout: it leads at once,
            # and the least lease TTL is 1 s.
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--listen-metrics-urls=",
            "--log-level=warn",
        ]
        if self.tls is not None:
            command += [
                f"--cert-file={self.tls.server}",
                f"--key-file={self.tls.serverKey}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        return command + self.options

    async def start(self, timeout: float = 20.0) -> None:
        """
        Start etcd and wait until it answers.
        """
        assert self.process is None, "already running"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = self.reactor.seconds() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"etcd exited at start: {self._logTail()}")
            if self.reactor.seconds() > deadline:
                await self.stop()
                raise RuntimeError(f"etcd did not answer within {timeout} s: {self._logTail()}")
            await deferLater(self.reactor, 0.05, lambda: None)

    async def stop(self, timeout: float = 5.0) -> None:
        """
        Stop etcd as an operator would (SIGTERM), or kill it if it takes
        longer than C{timeout}.
        """
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
        deadline = self.reactor.seconds() + timeout
        while process.poll() is None:
            if self.reactor.seconds() > deadline:
                process.kill()
                process.wait()
                break
            await deferLater(self.reactor, 0.02, lambda: None)

    def kill(self) -> None:
        """
        Kill etcd at once (SIGKILL), as a crash would.
        """
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    async def restart(self) -> None:
        """
        Stop and start again, on the same ports and data.
        """
        await self.stop()
        await self.start()

    def freeze(self) -> None:
        """
        Stop etcd's process (SIGSTOP): the kernel still accepts connections
        on its ports, and nothing answers.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """
        Let a frozen etcd run again (SIGCONT).
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def etcdctl(self, *arguments: str) -> str:
        """
        Run C{etcdctl} against this etcd (as root once authentication is
        on) and return what it printed.
        """
        command = [ETCDCTL, f"--endpoints={self.url}", "--command-timeout=10s"]
        if self.tls is not None:
            command += [
                f"--cacert={self.tls.ca}",
                f"--cert={self.tls.client}",
                f"--key={self.tls.clientKey}",
            ]
        if self._authenticated:
            command.append(f"--user=root:{ROOT_PASSWORD}")
        done = subprocess.run(
            command + list(arguments),
            capture_output=True,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"etcdctl {' '.join(arguments)}: {done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode()

    def revision(self) -> int:
        """
        The store's revision now.
        """
        status = json.loads(self.etcdctl("endpoint", "status", "--write-out=json"))
        return int(status[0]["Status"]["header"]["revision"])

    def compact(self, revision: int | None = None) -> int:
        """
        Compact the history up to C{revision} (the current one by default),
        physically, so that nothing before it can be watched.

        @return: The revision compacted to.
        """
        if revision is None:
            revision = self.revision()
        self.etcdctl("compaction", "--physical", str(revision))
        return revision

    def enableAuth(self, user: str, password: str, prefix: str = "/txlb/") -> None:
        """
        Turn authentication on, with C{user} allowed to read and write the
        keys under C{prefix} (and C{root} to do anything).
        """
        self.etcdctl("user", "add", f"root:{ROOT_PASSWORD}")
        self.etcdctl("user", "grant-role", "root", "root")
        self.etcdctl("user", "add", f"{user}:{password}")
        self.etcdctl("role", "add", "txlb")
        self.etcdctl("role", "grant-permission", "txlb", "--prefix=true", "readwrite", prefix)
        self.etcdctl("user", "grant-role", user, "txlb")
        self.etcdctl("auth", "enable")
        self._authenticated = True

    def _answers(self) -> bool:
        """
        Whether etcd answers its health check (it has a leader).
        """
        try:
            if self.tls is not None:
                context = ssl.create_default_context(cafile=self.tls.ca)
                context.load_cert_chain(self.tls.client, self.tls.clientKey)
                connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                    "127.0.0.1", self.clientPort, timeout=1, context=context
                )
            else:
                connection = http.client.HTTPConnection("127.0.0.1", self.clientPort, timeout=1)
            try:
                connection.request("GET", "/health")
                answer = connection.getresponse()
                return answer.status == 200 and b"true" in answer.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException):
            return False

    def _logTail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-5:]) or "no log"


async def startEtcd(testCase: Any, **keywords: Any) -> EtcdServer:
    """
    Start an etcd in a temporary folder of C{testCase}, stopped (killed, if
    need be) when the test ends.
    """
    from twisted.internet import reactor

    server = EtcdServer(testCase.mktemp(), reactor, **keywords)
    testCase.addCleanup(server.kill)
    await server.start()
    return server

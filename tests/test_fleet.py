"""
txlb as a fleet (C{--etcd}, L{txlb.fleet}) over a real etcd (Debian's
etcd-server 3.4, C{tests/etcdserver.py}), started by each test on loopback
ports in a temporary folder: balancers built by C{makeService} in this
process, in front of the test backends, following one prefix.

Every wait is bounded (L{waitFor}).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.portforward import ProxyFactory, ProxyServer
from twisted.trial.unittest import TestCase

from tests.etcdserver import SKIP, Certificates, EtcdServer, startEtcd
from tests.helpers import RawClient, freePort, waitFor
from txlb.service import LoadBalancerService
from txlb.tap import Options, makeService
from txlb.testbackend import BackendResource, makeBackendSite

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def reloads(service: LoadBalancerService, result: str) -> float:
    value = service.resource.metrics.registry.get_sample_value(
        "txlb_config_reloads_total", {"result": result}
    )
    return value or 0.0


def addresses(service: LoadBalancerService, pool: str = "default") -> list[str]:
    """
    The addresses of the backends of C{pool} that take new requests.
    """
    return sorted(b.address for b in service.pools[pool].resource.pool.backends if not b.draining)


class _CutProxy(ProxyServer):
    def connectionMade(self) -> None:
        self.factory.connections.append(self)
        super().connectionMade()


class CuttableProxy:
    """
    A loopback TCP forwarder to etcd that a test can cut (every connection
    aborted, the port closed) and restore on the same port: etcd stays up
    and can be written to and compacted while a balancer cannot reach it.
    """

    def __init__(self, target: int) -> None:
        self.factory = ProxyFactory("127.0.0.1", target)
        self.factory.protocol = _CutProxy
        self.factory.connections = []
        self.port = freePort()
        self.listening: Any = None
        self.url = f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        self.listening = reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")

    def cut(self) -> Deferred[None]:
        for connection in self.factory.connections:
            connection.transport.abortConnection()
        self.factory.connections = []
        listening, self.listening = self.listening, None
        return listening.stopListening()  # type: ignore[no-any-return]


class FleetTestCase(TestCase):
    skip = SKIP
    timeout = 90

    async def startEtcd(self, **keywords: Any) -> EtcdServer:
        self.server = await startEtcd(self, **keywords)
        self.addCleanup(lambda: Deferred.fromCoroutine(self.server.stop()))
        return self.server

    def put(self, key: str, value: str, *options: str) -> None:
        self.server.etcdctl("put", *options, "/txlb/" + key, value)

    def delete(self, key: str) -> None:
        self.server.etcdctl("del", "/txlb/" + key)

    def startBackends(self, count: int) -> list[int]:
        ports = []
        for _ in range(count):
            port = reactor.listenTCP(0, makeBackendSite(), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)
        return ports

    def instance(self, text: str = "", etcd: str | None = None) -> tuple[Any, int, int]:
        """
        Start a balancer following C{etcd} (this test's etcd by default),
        from a configuration file of C{text} plus a free listener, a free
        admin listener and C{etcd}.

        @return: The service, its port and its admin port.
        """
        port, admin = freePort(), freePort()
        path = self.mktemp()
        Path(path).write_text(
            f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            f'admin = "tcp:{admin}:interface=127.0.0.1"\n'
            f'etcd = ["{etcd or self.server.url}"]\n' + text,
            encoding="utf-8",
        )
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service, port, admin

    async def caughtUp(self, *services: Any) -> None:
        """
        Wait until every one of C{services} has applied etcd's revision now.
        """
        revision = self.server.revision()
        await waitFor(
            lambda: all(s.fleet.revision >= revision for s in services),
            15,
            f"revision {revision} applied everywhere",
        )

    async def get(
        self, port: int, path: str = "/ping", source: str | None = None
    ) -> tuple[int, bytes]:
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", port, bindAddress=None if source is None else (source, 0)
        )
        client = await connectProtocol(endpoint, RawClient())
        client.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
        )
        received = await client.closed
        head, _, body = received.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    async def admin(self, port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = await treq.request(
            method,
            f"http://127.0.0.1:{port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            persistent=False,
        )
        content = await response.content()
        return response.code, json.loads(content) if content else None


class ConfigurationTests(FleetTestCase):
    async def test_documentApplied(self) -> None:
        """
        etcd's C{config.toml} applies as a reload does, over the file: its
        pools and routes serve, and each change is applied once.
        """
        await self.startEtcd()
        a, b = self.startBackends(2)
        service, port, _ = self.instance(f'backends = "127.0.0.1:{a}"\n')
        await self.caughtUp(service)
        self.assertEqual(await self.get(port), (200, f"pong from backend :{a}\n".encode()))
        self.put(
            "config.toml",
            f'backends = "127.0.0.1:{a}"\nalgo = "leastconn"\n'
            f'[pools.b]\nbackends = ["127.0.0.1:{b}"]\n'
            '[[routes]]\npath-prefix = "/b"\npool = "b"\nstrip-prefix = true\n'
            '[[routes]]\npool = "default"\n',
        )
        await self.caughtUp(service)
        self.assertEqual(
            await self.get(port, "/b/ping"), (200, f"pong from backend :{b}\n".encode())
        )
        self.assertEqual(await self.get(port), (200, f"pong from backend :{a}\n".encode()))
        self.assertEqual(reloads(service, "success"), 1)
        self.assertEqual(service.fleet.configRevision, self.server.revision())
        self.assertEqual(service.pools["default"].options["algo"], "leastconn")
        # Deleted: back to the file alone.
        self.delete("config.toml")
        await self.caughtUp(service)
        self.assertNotIn("b", service.pools)
        self.assertEqual(service.pools["default"].options["algo"], "roundrobin")
        self.assertEqual(reloads(service, "success"), 2)

    async def test_badDocumentRefused(self) -> None:
        """
        A document that does not parse, or that holds a key only a restart
        changes, is refused and counted; the last good one stays.
        """
        await self.startEtcd()
        a, b = self.startBackends(2)
        service, port, _ = self.instance(f'backends = "127.0.0.1:{a}"\n')
        self.put("config.toml", f'backends = "127.0.0.1:{b}"\n')
        await self.caughtUp(service)
        self.assertEqual(addresses(service), [f"127.0.0.1:{b}"])
        good = service.fleet.configRevision
        self.put("config.toml", "backends = [")
        await self.caughtUp(service)
        self.put("config.toml", f'backends = "127.0.0.1:{a}"\nworkers = 4\n')
        await self.caughtUp(service)
        self.put("config.toml", 'algo = "nosuchthing"\n')
        await self.caughtUp(service)
        self.assertEqual(reloads(service, "failure"), 3)
        self.assertEqual(reloads(service, "success"), 1)
        self.assertEqual(service.fleet.configRevision, good)
        self.assertEqual(addresses(service), [f"127.0.0.1:{b}"])
        self.assertEqual(await self.get(port), (200, f"pong from backend :{b}\n".encode()))

    def test_restartKeysRefused(self) -> None:
        """
        The document may not hold listen, workers, admin or the etcd
        options: one line says so.
        """
        path = self.mktemp()
        Path(path).write_text('backends = "127.0.0.1:1"\netcd = ["http://127.0.0.1:1"]\n')
        options = Options()
        options.parseOptions(["--config", path])
        for text, key in [
            ('listen = ["tcp:1"]', "listen"),
            ("workers = 2", "workers"),
            ('admin = "tcp:9"', "admin"),
            ('etcd-prefix = "/x/"', "etcd-prefix"),
        ]:
            with self.assertRaises(Exception) as caught:
                options.withDocument(text, "etcd /txlb/config.toml")
            self.assertEqual(
                str(caught.exception),
                f"etcd /txlb/config.toml: {key}: only a restart changes these:"
                " set them in --config or on the command line",
            )


class MembershipTests(FleetTestCase):
    async def test_membersJoinAndLeaseExpiryRemoves(self) -> None:
        """
        A backend registered under a lease joins the pool; when the lease
        expires, every instance drops it, and the others stay.
        """
        await self.startEtcd()
        a, b = self.startBackends(2)
        service, port, _ = self.instance()
        await self.caughtUp(service)
        # No backends yet: it does not listen (as with DNS).
        with self.assertRaises(ConnectionRefusedError):
            await self.get(port)
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        lease = self.server.etcdctl("lease", "grant", "1").split()[1]
        self.put(f"pools/default/backends/127.0.0.1:{b}", '{"weight": 2}', f"--lease={lease}")
        await self.caughtUp(service)
        self.assertEqual(addresses(service), sorted([f"127.0.0.1:{a}", f"127.0.0.1:{b}"]))
        [weighted] = [x for x in service.pools["default"].resource.pool.backends if x.weight == 2]
        self.assertEqual(weighted.port, b)
        await waitFor(lambda: addresses(service) == [f"127.0.0.1:{a}"], 10, "the lease expiring")
        for _ in range(4):
            self.assertEqual(await self.get(port), (200, f"pong from backend :{a}\n".encode()))
        # All gone: the pool answers 503 until one comes back.
        self.delete(f"pools/default/backends/127.0.0.1:{a}")
        await self.caughtUp(service)
        self.assertEqual(
            await self.get(port), (503, b"503 Service Unavailable: pool default has no backends\n")
        )

    async def test_leaseExpiryDrainsNotCuts(self) -> None:
        """
        A request in flight on a backend whose lease expires is answered
        in full: the backend drains out of the pool, it is not cut.
        """
        await self.startEtcd()
        delays: dict[int, float] = {}
        listening = reactor.listenTCP(
            0, makeBackendSite(BackendResource(delays)), interface="127.0.0.1"
        )
        self.addCleanup(listening.stopListening)
        slow = listening.getHost().port
        delays[slow] = 3.0
        service, port, _ = self.instance()
        lease = self.server.etcdctl("lease", "grant", "1").split()[1]
        self.put(f"pools/default/backends/127.0.0.1:{slow}", "", f"--lease={lease}")
        await self.caughtUp(service)
        answer = Deferred.fromCoroutine(self.get(port))
        await waitFor(lambda: addresses(service) == [], 10, "the lease expiring")
        self.assertFalse(answer.called)
        self.assertEqual(await answer, (200, f"pong from backend :{slow}\n".encode()))

    async def test_badMemberIgnored(self) -> None:
        """
        A member key whose value cannot be read is ignored and counted in
        C{txlb_etcd_refused_keys}; the others apply.
        """
        await self.startEtcd()
        a, b = self.startBackends(2)
        service, _, _ = self.instance()
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        self.put(f"pools/default/backends/127.0.0.1:{b}", '{"weight": 0}')
        await self.caughtUp(service)
        await waitFor(lambda: service.fleet.connected, 10, "the watch")
        self.assertEqual(addresses(service), [f"127.0.0.1:{a}"])
        registry = service.resource.metrics.registry
        self.assertEqual(registry.get_sample_value("txlb_etcd_refused_keys"), 1)
        self.assertEqual(registry.get_sample_value("txlb_etcd_connected"), 1)
        self.assertEqual(registry.get_sample_value("txlb_etcd_revision"), self.server.revision())


class AdminTests(FleetTestCase):
    async def test_drainReachesEveryInstance(self) -> None:
        """
        A drain through instance A's admin API is written to etcd, answered
        once etcd took it, and applied by instance B too; a restore undoes
        it everywhere.
        """
        await self.startEtcd()
        a, b = self.startBackends(2)
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        self.put(f"pools/default/backends/127.0.0.1:{b}", "")
        first, _, admin = self.instance()
        second, _, _ = self.instance()
        await self.caughtUp(first, second)
        code, answer = await self.admin(admin, "POST", f"/backends/127.0.0.1:{a}/drain")
        self.assertEqual((code, answer["state"]), (200, "draining"))
        self.assertEqual(answer["etcdRevision"], self.server.revision())
        stored = self.server.etcdctl(
            "get", "--print-value-only", f"/txlb/state/pools/default/backends/127.0.0.1:{a}"
        )
        self.assertEqual(json.loads(stored), {"draining": True})
        await self.caughtUp(second)
        self.assertEqual(addresses(second), [f"127.0.0.1:{b}"])
        code, answer = await self.admin(
            admin, "PATCH", f"/backends/127.0.0.1:{a}", {"draining": False, "weight": 3}
        )
        self.assertEqual((code, answer["state"], answer["weight"]), (200, "up", 3))
        await self.caughtUp(second)
        self.assertEqual(addresses(second), sorted([f"127.0.0.1:{a}", f"127.0.0.1:{b}"]))
        self.assertEqual(
            {x.port: x.weight for x in second.pools["default"].resource.pool.backends},
            {a: 3, b: 1},
        )

    async def test_algorithmSwitchReachesEveryInstance(self) -> None:
        """
        An algorithm switch through one instance applies on the others.
        """
        await self.startEtcd()
        (a,) = self.startBackends(1)
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        _, _, admin = self.instance()
        second, _, _ = self.instance()
        code, answer = await self.admin(admin, "PUT", "/algorithm", {"algo": "p2c"})
        self.assertEqual((code, answer["algorithm"]), (200, "p2c"))
        await self.caughtUp(second)
        self.assertEqual(second.pools["default"].options["algo"], "p2c")

    async def test_etcdDownRefusesTheChange(self) -> None:
        """
        With etcd unreachable, a change is refused with 503 and changes
        nothing; the balancer keeps serving.
        """
        await self.startEtcd()
        (a,) = self.startBackends(1)
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        service, port, admin = self.instance()
        await self.caughtUp(service)
        await self.server.stop()
        service.fleet.client.timeout = 1.0
        code, answer = await self.admin(admin, "POST", f"/backends/127.0.0.1:{a}/drain")
        self.assertEqual(code, 503)
        self.assertTrue(answer["error"].startswith("nothing changed: "), answer)
        self.assertEqual(addresses(service), [f"127.0.0.1:{a}"])
        self.assertEqual(await self.get(port), (200, f"pong from backend :{a}\n".encode()))
        _, status = await self.admin(admin, "GET", "/status")
        await waitFor(lambda: not service.fleet.connected, 15, "the watch noticing")
        _, status = await self.admin(admin, "GET", "/status")
        self.assertEqual(status["etcd"]["connected"], False)


class FollowingTests(FleetTestCase):
    async def test_restartResumes(self) -> None:
        """
        etcd stopped and started again: the balancer serves meanwhile with
        what it had, shows it is not connected, and resumes its watch from
        its revision, applying every change once.
        """
        await self.startEtcd()
        a, b = self.startBackends(2)
        service, port, _ = self.instance()
        self.put("config.toml", 'algo = "leastconn"\n')
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        await self.caughtUp(service)
        await self.server.stop()
        await waitFor(lambda: not service.fleet.connected, 15, "the watch noticing")
        registry = service.resource.metrics.registry
        self.assertEqual(registry.get_sample_value("txlb_etcd_connected"), 0)
        self.assertEqual(await self.get(port), (200, f"pong from backend :{a}\n".encode()))
        before = service.fleet.revision
        await self.server.start()
        self.put(f"pools/default/backends/127.0.0.1:{b}", "")
        await self.caughtUp(service)
        self.assertTrue(service.fleet.connected)
        self.assertEqual(service.fleet.revision, before + 1)
        self.assertEqual(addresses(service), sorted([f"127.0.0.1:{a}", f"127.0.0.1:{b}"]))
        self.assertEqual(reloads(service, "success"), 1)
        self.assertEqual(service.pools["default"].options["algo"], "leastconn")

    async def test_compactionDuringDisconnect(self) -> None:
        """
        Changes made and compacted away while a balancer cannot reach etcd
        are read in full when it can again: a member deleted meanwhile is
        gone, one added is there.
        """
        await self.startEtcd()
        a, b, c = self.startBackends(3)
        proxy = CuttableProxy(self.server.clientPort)
        proxy.open()
        self.addCleanup(lambda: proxy.cut() if proxy.listening else None)
        service, _, _ = self.instance(etcd=proxy.url)
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        self.put(f"pools/default/backends/127.0.0.1:{b}", "")
        await self.caughtUp(service)
        await proxy.cut()
        await waitFor(lambda: not service.fleet.connected, 15, "the watch noticing")
        self.delete(f"pools/default/backends/127.0.0.1:{a}")
        self.put(f"pools/default/backends/127.0.0.1:{c}", "")
        self.server.compact()
        proxy.open()
        await self.caughtUp(service)
        await waitFor(lambda: service.fleet.connected, 10, "the watch again")
        self.assertEqual(addresses(service), sorted([f"127.0.0.1:{b}", f"127.0.0.1:{c}"]))


class WaitingTests(FleetTestCase):
    def test_noEtcdNoConfigGivesUp(self) -> None:
        """
        Started without --config and etcd down, txlb says it waits, then
        gives up after --etcd-timeout with one line.
        """
        started = time.monotonic()
        done = subprocess.run(
            [
                TWISTD,
                "-n",
                "--pidfile=",
                "txlb",
                "--listen",
                f"tcp:{freePort()}:interface=127.0.0.1",
                "--etcd",
                f"http://127.0.0.1:{freePort()}",
                "--etcd-timeout",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(done.returncode, 0)
        lines = done.stderr.strip().splitlines()
        self.assertTrue(lines[0].startswith("txlb: waiting for etcd to read /txlb/"), lines)
        self.assertTrue(
            lines[-1].startswith("txlb: etcd did not answer within --etcd-timeout 1 s"), lines
        )
        self.assertLess(time.monotonic() - started, 30)


class AgreementTests(FleetTestCase):
    async def test_threeInstancesIphashAgree(self) -> None:
        """
        Three instances with iphash send each client to the same backend,
        after every change: members joining and leaving, a weight, a drain
        through one instance's admin API, a new document.
        """
        await self.startEtcd()
        ports = self.startBackends(4)
        for p in ports[:3]:
            self.put(f"pools/default/backends/127.0.0.1:{p}", "")
        instances = [self.instance('algo = "iphash"\n') for _ in range(3)]
        services = [s for s, _, _ in instances]
        sources = [f"127.0.0.{n}" for n in range(2, 26)]

        def pong(port: int) -> bytes:
            return f"pong from backend :{port}\n".encode()

        async def agree(what: str, serving: list[int]) -> list[bytes]:
            """
            Every instance sends each client to the same backend, one of
            C{serving}.
            """
            await self.caughtUp(*services)
            picks = []
            for _, port, _ in instances:
                picks.append([(await self.get(port, source=s))[1] for s in sources])
            self.assertEqual(picks[0], picks[1], what)
            self.assertEqual(picks[0], picks[2], what)
            self.assertLessEqual(set(picks[0]), {pong(p) for p in serving}, what)
            return picks[0]

        # The clients spread (24 clients all on one of 3 backends: 3 / 3**24).
        self.assertGreater(len(set(await agree("at start", ports[:3]))), 1)
        self.put(f"pools/default/backends/127.0.0.1:{ports[3]}", "")
        await agree("a member joined", ports)
        self.delete(f"pools/default/backends/127.0.0.1:{ports[0]}")
        await agree("a member left", ports[1:])
        self.put(f"pools/default/backends/127.0.0.1:{ports[1]}", '{"weight": 2}')
        await agree("a weight changed", ports[1:])
        code, _ = await self.admin(instances[1][2], "POST", f"/backends/127.0.0.1:{ports[2]}/drain")
        self.assertEqual(code, 200)
        await agree("a drain through one admin API", [ports[1], ports[3]])
        self.put("config.toml", 'algo = "iphash"\nmax-fails = 5\n')
        await agree("a new document", [ports[1], ports[3]])


class EtcdLaterTests(FleetTestCase):
    """
    txlb started while etcd is down, and etcd coming up afterwards.
    """

    def watchLog(self) -> list[str]:
        """
        The lines logged from now on by etcd's follower.
        """
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace", "").startswith("txlb.etcd"):
                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines

    async def test_configFirstThenEtcd(self) -> None:
        """
        With --config and etcd down, txlb serves the file's configuration
        at once, says once that etcd cannot be reached, and when etcd comes
        applies its document and members as a reload.
        """
        a, b, c = self.startBackends(3)
        # Its ports are chosen, and nothing listens on them yet.
        self.server = EtcdServer(self.mktemp(), reactor)
        self.addCleanup(self.server.kill)
        lines = self.watchLog()
        service, port, _ = self.instance(f'backends = "127.0.0.1:{a}"\n', etcd=self.server.url)
        self.assertEqual(await self.get(port), (200, f"pong from backend :{a}\n".encode()))
        await waitFor(lambda: service.fleet.follower.state == "waiting", 10, "a first try")
        # Still serving while it retries.
        await deferLater(reactor, 1.0)
        self.assertEqual(await self.get(port), (200, f"pong from backend :{a}\n".encode()))
        self.assertEqual((service.fleet.connected, service.fleet.revision), (False, 0))
        registry = service.resource.metrics.registry
        self.assertEqual(registry.get_sample_value("txlb_etcd_connected"), 0)
        self.assertEqual([line for line in lines if "retrying" in line], lines)
        self.assertEqual(len(lines), 1, lines)
        await self.server.start()
        self.put("config.toml", f'backends = "127.0.0.1:{b}"\nalgo = "leastconn"\n')
        configured = self.server.revision()
        self.put(f"pools/default/backends/127.0.0.1:{c}", '{"weight": 2}')
        await self.caughtUp(service)
        await waitFor(lambda: service.fleet.connected, 10, "the watch")
        self.assertEqual(addresses(service), sorted([f"127.0.0.1:{b}", f"127.0.0.1:{c}"]))
        self.assertEqual(service.pools["default"].options["algo"], "leastconn")
        # Read whole (at the store's revision), or followed: either is the document's.
        self.assertIn(service.fleet.configRevision, (configured, self.server.revision()))
        self.assertEqual(reloads(service, "success"), 1)
        self.assertEqual(reloads(service, "failure"), 0)
        answers = {(await self.get(port))[1] for _ in range(6)}
        self.assertEqual(
            answers,
            {f"pong from backend :{b}\n".encode(), f"pong from backend :{c}\n".encode()},
        )
        following = [line for line in lines if "following /txlb/" in line]
        self.assertEqual(len(following), 1, lines)
        self.assertEqual(len(lines), 2, lines)

    async def test_noConfigWaitsForEtcd(self) -> None:
        """
        Without --config and etcd down, txlb says once that it waits and
        serves nothing; when etcd comes within --etcd-timeout, it serves
        etcd's document and members.
        """
        (a,) = self.startBackends(1)
        await self.startEtcd()
        self.put("config.toml", 'algo = "leastconn"\nmax-fails = 7\n')
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        written = self.server.revision()
        await self.server.stop()
        port, admin = freePort(), freePort()
        directory = Path(self.mktemp())
        directory.mkdir()
        out, err = directory / "out", directory / "err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [
                    TWISTD,
                    "-n",
                    "--pidfile=",
                    "txlb",
                    "--listen",
                    f"tcp:{port}:interface=127.0.0.1",
                    "--admin",
                    f"tcp:{admin}:interface=127.0.0.1",
                    "--etcd",
                    self.server.url,
                    "--etcd-timeout",
                    "60",
                ],
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
            )
        self.addCleanup(stopProcess, process)
        await waitFor(lambda: "waiting for etcd" in err.read_text(), 30, "the waiting line")
        self.assertIsNone(process.poll())
        with self.assertRaises(ConnectionRefusedError):
            await self.get(port)
        await self.server.start()

        async def serving() -> bool:
            try:
                return await self.get(port) == (200, f"pong from backend :{a}\n".encode())
            except ConnectionRefusedError:
                return False

        deadline = reactor.seconds() + 30
        while not await serving():
            self.assertIsNone(process.poll(), err.read_text())
            self.assertLess(reactor.seconds(), deadline, "txlb did not start serving")
            await deferLater(reactor, 0.1)
        lines = err.read_text().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(
            lines[0].startswith(
                "txlb: waiting for etcd to read /txlb/ (no --config to start from; at most 60 s): "
            ),
            lines,
        )
        _, status = await self.admin(admin, "GET", "/status")
        self.assertEqual(status["algorithm"], "leastconn")
        # Read whole at start: the revision of the read.
        self.assertEqual(status["etcd"]["configRevision"], written)
        self.assertEqual(status["etcd"]["revision"], written)
        self.assertEqual([b["address"] for b in status["backends"]], [f"127.0.0.1:{a}"])


def stopProcess(process: subprocess.Popen[Any]) -> None:
    """
    End C{process} (SIGTERM, then SIGKILL after 10 s).
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class WorkersTests(FleetTestCase):
    """
    A fleet instance run as C{--workers 2}: a real supervisor and its two
    worker processes, each following etcd.
    """

    async def supervisor(self, config: str) -> int:
        """
        Start C{twistd txlb --workers 2} from a configuration file of
        C{config} plus a free listener, a free admin listener and this
        test's etcd; wait until both workers answer.

        @return: The supervisor's admin port.
        """
        port, admin = freePort(), freePort()
        path = Path(self.mktemp())
        path.write_text(
            f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
            f'admin = "tcp:{admin}:interface=127.0.0.1"\n'
            f'etcd = ["{self.server.url}"]\n'
            "workers = 2\n" + config,
            encoding="utf-8",
        )
        self.log = Path(self.mktemp())
        with self.log.open("wb") as log:
            process = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "txlb", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.addCleanup(stopProcessGroup, process)
        self.process = process
        await self.until(admin, lambda s: len(self.workerStates(s)) == 2, "both workers")
        return admin

    def workerStates(self, status: dict[str, Any]) -> list[dict[str, str]]:
        """
        Each answering worker's backends and their states, from the
        supervisor's status.
        """
        return [
            {b["address"]: b["state"] for b in worker["backends"]}
            for worker in status["workers"]
            if "backends" in worker and worker.get("pid") is not None
        ]

    async def until(self, admin: int, condition: Any, what: str) -> dict[str, Any]:
        """
        Ask the supervisor's status until C{condition} holds of it (30 s at
        most): the status then.
        """
        deadline = reactor.seconds() + 30
        while True:
            self.assertIsNone(self.process.poll(), self.log.read_text())
            try:
                code, status = await self.admin(admin, "GET", "/status")
            except ConnectionRefusedError:
                code, status = None, None
            if code == 200 and condition(status):
                return dict(status)
            if reactor.seconds() > deadline:
                self.fail(f"no {what} in time: {status}\n{self.log.read_text()}")
            await deferLater(reactor, 0.1)

    async def test_drainWrittenOnceAppliedByBoth(self) -> None:
        """
        A drain through the supervisor's admin API is written to etcd once
        (by one worker), answered with etcd's revision for it once etcd
        took it, and applied by both workers; with etcd down, a change is
        refused and no worker makes it.
        """
        await self.startEtcd()
        a, b = self.startBackends(2)
        first, second = f"127.0.0.1:{a}", f"127.0.0.1:{b}"
        self.put(f"pools/default/backends/{first}", "")
        self.put(f"pools/default/backends/{second}", "")
        admin = await self.supervisor("")
        up = {first: "up", second: "up"}
        await self.until(admin, lambda s: self.workerStates(s) == [up, up], "both members")
        before = self.server.revision()
        code, answer = await self.admin(admin, "POST", f"/backends/{first}/drain")
        self.assertEqual((code, answer["state"]), (200, "draining"), answer)
        # One write, which etcd had accepted when the answer came.
        self.assertEqual(self.server.revision(), before + 1)
        self.assertEqual(answer["etcdRevision"], before + 1)
        [stored] = json.loads(
            self.server.etcdctl(
                "get", "--write-out=json", f"/txlb/state/pools/default/backends/{first}"
            )
        )["kvs"]
        self.assertEqual(
            (stored["version"], stored["create_revision"], stored["mod_revision"]),
            (1, before + 1, before + 1),
        )
        self.assertEqual(json.loads(base64.b64decode(stored["value"])), {"draining": True})
        drained = {first: "draining", second: "up"}
        status = await self.until(
            admin, lambda s: self.workerStates(s) == [drained, drained], "both workers draining"
        )
        self.assertEqual(status["etcd"]["revision"], before + 1)
        self.assertEqual(self.server.revision(), before + 1)
        # etcd down: refused, and made by neither worker.
        await self.server.stop()
        code, answer = await self.admin(admin, "PATCH", f"/backends/{second}", {"draining": True})
        self.assertEqual(code, 503, answer)
        self.assertTrue(answer["error"].startswith("nothing changed: "), answer)
        status = await self.until(admin, lambda s: True, "a status")
        self.assertEqual(self.workerStates(status), [drained, drained])


def stopProcessGroup(process: subprocess.Popen[Any]) -> None:
    """
    End C{process} and every process it started (its session's group):
    SIGTERM, then SIGKILL after 10 s.
    """
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


class SecuredEtcdTests(FleetTestCase):
    """
    The balancer reaching an etcd that wants TLS with client certificates,
    or a user and password.
    """

    async def test_tlsClientCertificate(self) -> None:
        """
        With --etcd-ca, --etcd-cert and --etcd-key, a balancer follows an
        etcd run with --client-cert-auth and writes its admin changes
        there; one that does not trust etcd's CA follows nothing.
        """
        certificates = Certificates(self.mktemp())
        await self.startEtcd(tls=certificates)
        a, b = self.startBackends(2)
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        self.put(f"pools/default/backends/127.0.0.1:{b}", "")
        tls = f'etcd-cert = "{certificates.client}"\netcd-key = "{certificates.clientKey}"\n'
        service, port, admin = self.instance(f'etcd-ca = "{certificates.ca}"\n' + tls)
        untrusting, _, _ = self.instance(f'etcd-ca = "{certificates.otherCA}"\n' + tls)
        await self.caughtUp(service)
        await waitFor(lambda: service.fleet.connected, 10, "the watch")
        self.assertTrue(service.fleet.follower.endpoint.startswith("https://"))
        self.assertEqual(addresses(service), sorted([f"127.0.0.1:{a}", f"127.0.0.1:{b}"]))
        code, answer = await self.admin(admin, "POST", f"/backends/127.0.0.1:{a}/drain")
        self.assertEqual((code, answer["etcdRevision"]), (200, self.server.revision()))
        await self.caughtUp(service)
        self.assertEqual(addresses(service), [f"127.0.0.1:{b}"])
        self.assertEqual(await self.get(port), (200, f"pong from backend :{b}\n".encode()))
        self.assertEqual((untrusting.fleet.connected, untrusting.fleet.revision), (False, 0))
        self.assertEqual(addresses(untrusting), [])

    async def test_userAndPassword(self) -> None:
        """
        With --etcd-user and --etcd-password-file, a balancer follows an
        etcd with authentication on and writes its admin changes there; one
        with a wrong password follows nothing.
        """
        await self.startEtcd()
        self.server.enableAuth("txlb", "right horse")
        a, b = self.startBackends(2)
        self.put("config.toml", 'algo = "leastconn"\n')
        self.put(f"pools/default/backends/127.0.0.1:{a}", "")
        self.put(f"pools/default/backends/127.0.0.1:{b}", "")
        right, wrong = Path(self.mktemp()), Path(self.mktemp())
        right.write_text("right horse\n")
        wrong.write_text("battery staple\n")
        service, port, admin = self.instance(
            f'etcd-user = "txlb"\netcd-password-file = "{right}"\n'
        )
        refused, _, _ = self.instance(f'etcd-user = "txlb"\netcd-password-file = "{wrong}"\n')
        await self.caughtUp(service)
        await waitFor(lambda: service.fleet.connected, 10, "the watch")
        self.assertEqual(addresses(service), sorted([f"127.0.0.1:{a}", f"127.0.0.1:{b}"]))
        self.assertEqual(service.pools["default"].options["algo"], "leastconn")
        code, answer = await self.admin(admin, "POST", f"/backends/127.0.0.1:{a}/drain")
        self.assertEqual((code, answer["etcdRevision"]), (200, self.server.revision()))
        await self.caughtUp(service)
        self.assertEqual(addresses(service), [f"127.0.0.1:{b}"])
        self.assertEqual(await self.get(port), (200, f"pong from backend :{b}\n".encode()))
        self.assertEqual((refused.fleet.connected, refused.fleet.revision), (False, 0))
        self.assertEqual(refused.pools["default"].options["algo"], "roundrobin")

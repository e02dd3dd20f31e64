"""
txlb as a fleet (C{--etcd}, L{txlb.fleet}) over a real etcd (Debian's
etcd-server 3.4, C{tests/etcdserver.py}), started by each test on loopback
ports in a temporary folder: balancers built by C{makeService} in this
process, in front of the test backends, following one prefix.

Every wait is bounded (L{waitFor}).
"""

from __future__ import annotations

import json
import os
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
from twisted.protocols.portforward import ProxyFactory, ProxyServer
from twisted.trial.unittest import TestCase

from tests.etcdserver import SKIP, EtcdServer, startEtcd
from tests.helpers import RawClient, freePort, waitFor
from txlb.service import LoadBalancerService
from txlb.tap import Options, makeService
from txlb.testbackend import makeBackendSite

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

    async def startEtcd(self) -> EtcdServer:
        self.server = await startEtcd(self)
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

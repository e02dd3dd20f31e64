"""
The command line: options, their errors, and the service they make.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import PKI
from txlb.algorithms.iphash import IPHash
from txlb.algorithms.roundrobin import RoundRobin
from txlb.algorithms.weighted import WeightedRoundRobin
from txlb.backend import Backend, parseBackend
from txlb.server import LoadBalancerSite
from txlb.service import LoadBalancerService, StartupError
from txlb.settings import ProxySettings
from txlb.tap import Options, makeService, pidLocked


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


LIMIT = "the limit of requests in flight (after /) must be a whole number from 1 to 1000000"


class ParseBackendTests(SynchronousTestCase):
    def test_valid(self) -> None:
        """
        Each accepted form gives its host, port, weight and whether it is
        reached over TLS.
        """
        table = [
            ("localhost:8081", ("localhost", 8081, 1, False)),
            ("http://localhost:8082=3", ("localhost", 8082, 3, False)),
            ("HTTP://10.0.0.1:80/", ("10.0.0.1", 80, 1, False)),
            (" backend-1.internal:65535=10 ", ("backend-1.internal", 65535, 10, False)),
            ("[::1]:8081=2", ("::1", 8081, 2, False)),
            ("https://api.internal:443", ("api.internal", 443, 1, True)),
            ("HTTPS://[::1]:8443=4/", ("::1", 8443, 4, True)),
            ("https://[::1]:8443", ("::1", 8443, 1, True)),
            ("https://[::1]:8443/", ("::1", 8443, 1, True)),
        ]
        for spec, expected in table:
            backend = parseBackend(spec)
            self.assertEqual(
                (backend.host, backend.port, backend.weight, backend.tls), expected, spec
            )
            self.assertEqual(backend.maxConn, 0, spec)

    def test_maxConn(self) -> None:
        """
        C{=WEIGHT/MAXCONN} gives a backend its own limit of requests in
        flight.
        """
        table = [
            ("localhost:8081=1/10", ("localhost", 8081, 1, False, 10)),
            ("https://[::1]:8443=3/1/", ("::1", 8443, 3, True, 1)),
            ("a.internal:80=1000/1000000", ("a.internal", 80, 1000, False, 1_000_000)),
        ]
        for spec, expected in table:
            backend = parseBackend(spec)
            self.assertEqual(
                (backend.host, backend.port, backend.weight, backend.tls, backend.maxConn),
                expected,
                spec,
            )

    def test_invalid(self) -> None:
        """
        Each bad form is refused with a reason that names it.
        """
        table = [
            ("localhost", "missing port"),
            ("localhost:", "bad port ''"),
            ("localhost:http", "bad port 'http'"),
            ("localhost:0", "bad port '0'"),
            ("localhost:70000", "bad port '70000'"),
            ("localhost:80=0", "the weight must be a whole number from 1 to 1000"),
            ("localhost:80=-1", "the weight must be a whole number from 1 to 1000"),
            ("localhost:80=1.5", "the weight must be a whole number from 1 to 1000"),
            ("localhost:80=", "the weight must be a whole number from 1 to 1000"),
            ("localhost:80=1001", "the weight must be a whole number from 1 to 1000"),
            ("ftp://localhost:21", "unknown scheme 'ftp'"),
            (":80", "bad host ''"),
            ("bad host:80", "bad host 'bad host'"),
            ("[::1]", "missing port"),
            ("[nothex]:80", "bad host 'nothex'"),
            ("localhost:80=1/0", LIMIT),
            ("localhost:80=1/", LIMIT),
            ("localhost:80=1/x", LIMIT),
            ("localhost:80=1/1.5", LIMIT),
            ("localhost:80=1/-1", LIMIT),
            ("localhost:80=1/\N{SUPERSCRIPT TWO}", LIMIT),
            ("localhost:80=1/1000001", LIMIT),
            ("localhost:80=/5", "the weight must be a whole number from 1 to 1000"),
        ]
        for spec, reason in table:
            with self.assertRaises(SystemExit) as caught:
                parse("--backends", spec)
            message = str(caught.exception.code)
            self.assertIn(f"--backends: {spec!r}: {reason}", message)
            self.assertNotIn("\n", message)

    def test_maxConnOption(self) -> None:
        """
        C{--backends} takes a backend's own limit after its weight.
        """
        options = parse("--backends", "a:1,b:2=3/5")
        self.assertEqual(
            [(b.address, b.weight, b.maxConn) for b in options["backends"]],
            [("a:1", 1, 0), ("b:2", 3, 5)],
        )


class OptionsTests(SynchronousTestCase):
    def assertUsageError(self, args: list[str], message: str) -> None:
        with self.assertRaises(SystemExit) as caught:
            parse(*args)
        self.assertEqual(caught.exception.code, f"txlb: {message} (see twistd txlb --help)")

    def test_unknownOption(self) -> None:
        """
        An unknown long option is answered with the nearest known one, if
        one is near.
        """
        table = [
            (
                ["--helth-path", "/h"],
                "option --helth-path not recognized: did you mean --health-path?",
            ),
            (
                ["--backends-dnss", "a.test:80"],
                "option --backends-dnss not recognized: did you mean --backends-dns?",
            ),
            (["--retrys=2"], "option --retrys not recognized: did you mean --retries?"),
            (["--colour"], "option --colour not recognized"),
            (["-x"], "option -x not recognized"),
        ]
        for args, message in table:
            self.assertUsageError(["--backends", "a:1", *args], message)

    def test_helpOneLinePerOption(self) -> None:
        """
        Each option's help is one run of words: the docstrings of opt_
        methods, which become help, lose their line ends and indentation.
        """
        options = Options()
        self.assertEqual(
            options.docs["backends-dns"],
            "Backends from DNS: _service._proto.NAME (SRV records) or NAME:PORT"
            " (A and AAAA records). Repeatable.",
        )
        for name, doc in options.docs.items():
            self.assertEqual(doc, " ".join(doc.split()), name)

    def test_endpointHint(self) -> None:
        """
        A port, or an IPv4 address or localhost and a port, where an
        endpoint description is expected, is answered with the description
        meant.
        """
        table = [
            (
                ["--listen", "8090"],
                "--listen: '8090': Unknown endpoint type: '8090': did you mean tcp:8090?",
            ),
            (
                ["--listen", "127.0.0.1:8090"],
                "--listen: '127.0.0.1:8090': Unknown endpoint type: '127.0.0.1':"
                " did you mean tcp:8090:interface=127.0.0.1?",
            ),
            (
                ["--admin", "localhost:9000"],
                "--admin: 'localhost:9000': Unknown endpoint type: 'localhost':"
                " did you mean tcp:9000:interface=127.0.0.1?",
            ),
            (
                ["--listen", "example.com:80"],
                "--listen: 'example.com:80': Unknown endpoint type: 'example.com'",
            ),
            (
                ["--listen", "tcp:http"],
                "--listen: 'tcp:http': invalid literal for int() with base 10: 'http'",
            ),
        ]
        for args, message in table:
            self.assertUsageError(["--backends", "a:1", *args], message)

    def test_defaults(self) -> None:
        """
        Without options but backends: listen on TCP 8080, round robin, 5 s
        connect timeout.
        """
        options = parse("--backends", "a:1,b:2")
        self.assertEqual(options["listen"], ["tcp:8080"])
        self.assertEqual(options["algo"], "roundrobin")
        self.assertEqual(options["connect-timeout"], 5.0)
        self.assertEqual([b.address for b in options["backends"]], ["a:1", "b:2"])

    def test_connectTimeout(self) -> None:
        """
        C{--connect-timeout} takes fractions of a second.
        """
        self.assertEqual(parse("--demo", "--connect-timeout", "2.5")["connect-timeout"], 2.5)

    def test_resilienceDefaults(self) -> None:
        """
        Every resilience knob has a finite default; health checks are off.
        """
        options = parse("--demo")
        self.assertEqual(
            {
                name: options[name]
                for name in [
                    "health-path",
                    "health-interval",
                    "health-timeout",
                    "health-rise",
                    "health-fall",
                    "max-fails",
                    "fail-timeout",
                    "retries",
                    "response-timeout",
                    "idle-timeout",
                    "client-timeout",
                    "drain-timeout",
                    "max-body-size",
                    "retry-non-idempotent",
                    "forwarded-for",
                    "forwarded",
                    "via",
                ]
            },
            {
                "health-path": None,
                "health-interval": 5.0,
                "health-timeout": 2.0,
                "health-rise": 2,
                "health-fall": 3,
                "max-fails": 3,
                "fail-timeout": 10.0,
                "retries": 2,
                "response-timeout": 30.0,
                "idle-timeout": 60.0,
                "client-timeout": 30.0,
                "drain-timeout": 30.0,
                "max-body-size": None,
                "retry-non-idempotent": 0,
                "forwarded-for": 0,
                "forwarded": 0,
                "via": 0,
            },
        )

    def test_settings(self) -> None:
        """
        The options reach the proxy's settings.
        """
        settings = parse(
            "--demo",
            "--retries",
            "0",
            "--retry-non-idempotent",
            "--response-timeout",
            "3",
            "--idle-timeout",
            "4",
            "--client-timeout",
            "5",
            "--connect-timeout",
            "1.5",
            "--max-body-size",
            "10M",
            "--forwarded-for",
            "--forwarded",
            "--via",
        ).settings()
        self.assertEqual(
            settings,
            ProxySettings(
                connectTimeout=1.5,
                responseTimeout=3,
                idleTimeout=4,
                clientTimeout=5,
                retries=0,
                retryNonIdempotent=True,
                maxBodySize=10 * 1024 * 1024,
                forwardedFor=True,
                forwarded=True,
                via=True,
            ),
        )

    def test_sizes(self) -> None:
        """
        Sizes take K, M and G suffixes, in powers of 1024.
        """
        for text, size in [("512", 512), ("1k", 1024), ("2M", 2 * 1024**2), ("1G", 1024**3)]:
            self.assertEqual(parse("--demo", "--max-body-size", text)["max-body-size"], size)

    def test_algorithms(self) -> None:
        """
        Every algorithm is accepted by name.
        """
        for name in [
            "roundrobin",
            "weighted",
            "leastconn",
            "iphash",
            "swrr",
            "p2c",
            "ewma",
            "hash",
        ]:
            self.assertEqual(parse("--algo", name, "--backends", "a:1")["algo"], name)

    def test_algorithmDefaults(self) -> None:
        """
        C{hash} hashes the client IP with a balance factor of 1.25; slow
        start is off; backends report their load in C{X-Txlb-Load}.
        """
        options = parse("--demo")
        self.assertEqual(
            [options[name] for name in ("hash-key", "hash-balance-factor", "slow-start")],
            ["ip", 1.25, 0.0],
        )
        self.assertEqual(options.settings().loadHeader, "X-Txlb-Load")

    def test_hashOptions(self) -> None:
        """
        C{--hash-key} and C{--hash-balance-factor} reach the C{hash}
        algorithm.
        """
        options = parse(
            "--backends",
            "a:1",
            "--algo",
            "hash",
            "--hash-key",
            "cookie:sid",
            "--hash-balance-factor",
            "1.5",
        )
        algorithm = options.algorithm()(options["backends"])
        self.assertEqual(
            (algorithm.kind, algorithm.keyName, algorithm.balanceFactor), ("cookie", "sid", 1.5)
        )

    def test_loadHeader(self) -> None:
        """
        C{--load-header} names the field the proxy reads and drops.
        """
        settings = parse("--demo", "--load-header", "X-Load").settings()
        self.assertEqual((settings.loadHeader, settings.loadField), ("X-Load", b"x-load"))
        self.assertIn(b"x-load", settings.toClientDrop)

    def test_demo(self) -> None:
        """
        C{--demo} balances over the seed's three backends, weighted 1:3:2,
        with the weighted algorithm.
        """
        options = parse("--demo")
        self.assertEqual(
            [(b.address, b.weight) for b in options["backends"]],
            [("127.0.0.1:8081", 1), ("127.0.0.1:8082", 3), ("127.0.0.1:8083", 2)],
        )
        self.assertEqual(options["algo"], "weighted")

    def test_demoWithAlgo(self) -> None:
        """
        C{--algo} overrides the demo's algorithm.
        """
        self.assertEqual(parse("--demo", "--algo", "iphash")["algo"], "iphash")

    def test_errors(self) -> None:
        """
        Bad command lines end with one line saying what is wrong.
        """
        table = [
            ([], "no backends: give --backends HOST:PORT[,...], --backends-dns NAME or --demo"),
            (["--backends", ""], "--backends: no backends given"),
            (["--backends", " , "], "--backends: ' , ': an empty entry"),
            (["--backends", "a:1,,b:2"], "--backends: 'a:1,,b:2': an empty entry"),
            (["--backends", "a:1,A:1"], "--backends: A:1 is listed twice"),
            (
                ["--backends", "a:1", "--algo", "random"],
                "--algo: unknown algorithm 'random' (choose from roundrobin, weighted, leastconn, iphash, swrr, p2c, ewma, hash, a name in the txlb.algorithms entry points, or package.module:Name)",
            ),
            (["--demo", "--backends", "a:1"], "--demo starts its own backends: drop --backends"),
            (["--demo", "--listen", "nope:1"], "--listen: 'nope:1': Unknown endpoint type: 'nope'"),
            (
                ["--demo", "--connect-timeout", "0"],
                "--connect-timeout: '0' is not a positive number of seconds",
            ),
            (
                ["--demo", "--connect-timeout", "soon"],
                "--connect-timeout: 'soon' is not a positive number of seconds",
            ),
            (
                ["--demo", "--connect-timeout", "inf"],
                "--connect-timeout: 'inf' is not a positive number of seconds",
            ),
            (["--demo", "--frobnicate"], "option --frobnicate not recognized"),
            (["--demo", "--retries", "-1"], "--retries: '-1' is not a whole number of at least 0"),
            (
                ["--demo", "--health-fall", "0"],
                "--health-fall: '0' is not a whole number of at least 1",
            ),
            (
                ["--demo", "--max-fails", "x"],
                "--max-fails: 'x' is not a whole number of at least 1",
            ),
            (
                ["--demo", "--health-path", "health"],
                "--health-path: 'health' is not a path like /health",
            ),
            (
                ["--demo", "--health-path", "/a b"],
                "--health-path: '/a b' is not a path like /health",
            ),
            (
                ["--demo", "--max-body-size", "10X"],
                "--max-body-size: '10X' is not a size like 1048576 or 10M",
            ),
            (
                ["--demo", "--max-body-size", "0"],
                "--max-body-size: '0' is not a size like 1048576 or 10M",
            ),
            (
                ["--demo", "--drain-timeout", "-5"],
                "--drain-timeout: '-5' is not a positive number of seconds",
            ),
            (
                ["--demo", "--slow-start", "-1"],
                "--slow-start: '-1' is not a number of seconds (0 for off)",
            ),
            (
                ["--demo", "--hash-key", "host"],
                "--hash-key: 'host': the key is one of ip, path, uri, header:NAME,"
                " cookie:NAME or query:NAME",
            ),
            (["--demo", "--hash-key", "header"], "--hash-key: 'header': expected header:NAME"),
            (["--demo", "--hash-key", "ip:x"], "--hash-key: 'ip:x': expected ip"),
            (
                ["--demo", "--hash-key", "cookie:a b"],
                "--hash-key: 'cookie:a b': the name must be printable ASCII without spaces",
            ),
            (
                ["--demo", "--hash-balance-factor", "0.5"],
                "--hash-balance-factor: '0.5' is not 0 (off) or a number of at least 1",
            ),
            (
                ["--demo", "--hash-balance-factor", "inf"],
                "--hash-balance-factor: 'inf' is not 0 (off) or a number of at least 1",
            ),
            (["--demo", "--load-header", "X Load"], "--load-header: 'X Load' is not a header name"),
        ]
        for args, message in table:
            self.assertUsageError(args, message)


class MakeServiceTests(SynchronousTestCase):
    def start(self, *args: str) -> MemoryReactorClock:
        memory = MemoryReactorClock()
        service = makeService(parse(*args), memory)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return memory

    def listeners(self, memory: MemoryReactorClock) -> dict[int, object]:
        return {port: factory for port, factory, _, _ in memory.tcpServers}

    def test_listens(self) -> None:
        """
        The service listens where C{--listen} says, with the balancer's site
        and the chosen algorithm over the given backends.
        """
        memory = self.start(
            "--listen", "tcp:9090:interface=127.0.0.1", "--backends", "a:1,b:2", "--algo", "iphash"
        )
        ((port, factory, _, interface),) = memory.tcpServers
        self.assertEqual((port, interface), (9090, "127.0.0.1"))
        self.assertIsInstance(factory, LoadBalancerSite)
        algorithm = factory.resource.pools["default"].algorithm
        self.assertIsInstance(algorithm, IPHash)
        self.assertEqual([b.address for b in algorithm.backends], ["a:1", "b:2"])

    def test_default(self) -> None:
        """
        By default it listens on 8080 with round robin.
        """
        memory = self.start("--backends", "a:1")
        site = self.listeners(memory)[8080]
        self.assertIsInstance(site.resource.pools["default"].algorithm, RoundRobin)

    def test_demo(self) -> None:
        """
        C{--demo} also serves three backends on 8081-8083, balanced by
        weighted round robin.
        """
        memory = self.start("--demo")
        listeners = self.listeners(memory)
        self.assertEqual(sorted(listeners), [8080, 8081, 8082, 8083])
        self.assertIsInstance(
            listeners[8080].resource.pools["default"].algorithm, WeightedRoundRobin
        )

    def test_slowStart(self) -> None:
        """
        C{--slow-start} reaches the pool, and the C{hash} options survive a
        change of backends through the admin API (the algorithm is made
        again with them).
        """
        memory = self.start(
            "--backends", "a:1", "--slow-start", "30", "--algo", "hash", "--hash-key", "path"
        )
        resource = self.listeners(memory)[8080].resource.pools["default"]
        self.assertEqual(resource.pool.slowStart, 30.0)
        resource.setBackends([Backend("b", 2)])
        self.assertEqual(resource.algorithm.kind, "path")

    def test_healthChecks(self) -> None:
        """
        With C{--health-path}, the backends are checked at start.
        """
        memory = self.start("--backends", "127.0.0.1:9001", "--health-path", "/health")
        ((host, port, _, timeout, _),) = memory.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 9001, 2.0))

    def test_noHealthChecksByDefault(self) -> None:
        """
        Without C{--health-path}, nothing connects to the backends at start.
        """
        memory = self.start("--backends", "127.0.0.1:9001")
        self.assertEqual(memory.tcpClients, [])

    def test_portInUse(self) -> None:
        """
        A port that cannot be bound ends start-up with one line as the
        service is made, before twistd daemonizes (C{tests/test_startup.py}
        runs twistd).
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with self.assertRaises(SystemExit) as caught:
            makeService(parse("--listen", f"tcp:{port}:interface=127.0.0.1", "--backends", "a:1"))
        self.assertEqual(
            caught.exception.code,
            f"txlb: cannot listen: Couldn't listen on 127.0.0.1:{port}:"
            " [Errno 98] Address already in use.",
        )

    def test_pidLocked(self) -> None:
        """
        UNIX sockets have a lock file naming the process that bound them,
        unless C{lockfile=0}; other endpoints have none.
        """
        table = [
            ("unix:/run/txlb.sock", True),
            ("unix:/run/txlb.sock:mode=660:lockfile=1", True),
            ("unix:/run/txlb.sock:lockfile=0", False),
            ("unix:/run/a\\:lockfile=0.sock", True),
            ("tcp:8080", False),
            ("systemd:domain=INET:index=0", False),
        ]
        self.assertEqual([(d, pidLocked(d)) for d, _ in table], table)

    def test_boundOnce(self) -> None:
        """
        The ports C{makeService} bound are not bound again when twistd
        starts the service.
        """
        memory = MemoryReactorClock()
        service = makeService(parse("--demo"), memory)
        self.assertEqual(len(memory.tcpServers), 4)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(len(memory.tcpServers), 4)

    def test_startupErrorIsAnException(self) -> None:
        """
        Started by other means than C{makeService}, the service reports a
        port it cannot bind with an ordinary exception, which twistd
        reports through its start-up pipe when daemonized; L{SystemExit}
        would leave twistd's parent process waiting on that pipe forever.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        options = parse("--listen", f"tcp:{port}:interface=127.0.0.1", "--backends", "a:1")
        resource = makeService(parse("--backends", "a:1"), MemoryReactorClock()).resource
        service = LoadBalancerService(options, LoadBalancerSite(resource), reactor)
        with self.assertRaises(StartupError) as caught:
            service.privilegedStartService()
        self.assertNotIsInstance(caught.exception, SystemExit)
        self.assertEqual(
            str(caught.exception),
            f"txlb: cannot listen: Couldn't listen on 127.0.0.1:{port}:"
            " [Errno 98] Address already in use.",
        )


class EtcdOptionsTests(SynchronousTestCase):
    """
    The C{--etcd*} options: what each takes, and one line for each bad
    value or combination.
    """

    def setUp(self) -> None:
        directory = self.mktemp()
        pki = PKI(directory)
        self.ca = pki.caPath
        self.cert, self.key = pki.leaf("txlb")
        self.otherCert, self.otherKey = pki.leaf("other")
        self.password = os.path.join(directory, "password")
        with open(self.password, "w") as file:
            file.write("s3cret\nnot this\n")
        self.empty = os.path.join(directory, "empty")
        open(self.empty, "w").close()
        self.missing = os.path.join(directory, "missing")

    def assertUsageError(self, args: list[str], message: str) -> None:
        with self.assertRaises(SystemExit) as caught:
            parse(*args)
        self.assertEqual(caught.exception.code, f"txlb: {message} (see twistd txlb --help)")

    def test_defaults(self) -> None:
        """
        Without C{--etcd}, none of it is used; with it, the prefix is
        C{/txlb/}, the wait at start 30 s, no TLS of our own and no user.
        """
        options = parse("--backends", "a:1")
        self.assertEqual(options["etcd"], [])
        self.assertIsNone(options.etcdTLS)
        options = parse("--etcd", "http://127.0.0.1:2379")
        self.assertEqual(options["etcd"], ["http://127.0.0.1:2379"])
        self.assertEqual(options["etcd-prefix"], "/txlb/")
        self.assertEqual(options["etcd-timeout"], 30.0)
        self.assertIsNone(options["etcd-user"])
        self.assertEqual(options.etcdPassword, "")
        self.assertIsNone(options.etcdTLS.trustRoot)
        self.assertIsNone(options.etcdTLS.clientCertificate)

    def test_membersOnly(self) -> None:
        """
        With C{--etcd} and no backends, the pool C{default} is etcd's
        members alone.
        """
        options = parse("--etcd", "http://127.0.0.1:2379")
        self.assertEqual(list(options.pools()), ["default"])
        self.assertEqual(options["backends"], [])

    def test_values(self) -> None:
        """
        Each option's accepted forms: endpoints in order with their default
        port, a prefix ending with C{/}, seconds as a number.
        """
        options = parse(
            "--etcd",
            "http://10.0.0.1",
            "--etcd",
            " https://[::1]:12379/ ",
            "--etcd",
            "HTTP://etcd.internal:2380",
            "--etcd-prefix",
            "/fleet/site-a",
            "--etcd-timeout",
            "2.5",
        )
        self.assertEqual(
            options["etcd"],
            ["http://10.0.0.1:2379", "https://[::1]:12379", "http://etcd.internal:2380"],
        )
        self.assertEqual(options["etcd-prefix"], "/fleet/site-a/")
        self.assertEqual(options["etcd-timeout"], 2.5)
        self.assertEqual(parse("--etcd", "http://h", "--etcd-prefix", "/")["etcd-prefix"], "/")

    def test_tls(self) -> None:
        """
        C{--etcd-ca} is the one CA trusted; C{--etcd-cert} and
        C{--etcd-key} the certificate sent.
        """
        options = parse(
            "--etcd",
            "https://127.0.0.1:2379",
            "--etcd-ca",
            self.ca,
            "--etcd-cert",
            self.cert,
            "--etcd-key",
            self.key,
        )
        tls = options.etcdTLS
        self.assertIsNotNone(tls.trustRoot)
        self.assertEqual(
            tls.clientCertificate.getSubject().commonName,
            b"txlb",  # type: ignore[union-attr]
        )
        options = parse("--etcd", "https://127.0.0.1:2379", "--etcd-ca", self.ca)
        self.assertIsNotNone(options.etcdTLS.trustRoot)
        self.assertIsNone(options.etcdTLS.clientCertificate)

    def test_user(self) -> None:
        """
        C{--etcd-user}'s password is the first line of
        C{--etcd-password-file}.
        """
        options = parse(
            "--etcd",
            "http://127.0.0.1:2379",
            "--etcd-user",
            "txlb",
            "--etcd-password-file",
            self.password,
        )
        self.assertEqual((options["etcd-user"], options.etcdPassword), ("txlb", "s3cret"))

    def test_configFile(self) -> None:
        """
        The configuration file takes every C{--etcd*} option, as the
        command line does.
        """
        path = self.mktemp()
        with open(path, "w") as file:
            file.write(
                'etcd = ["https://127.0.0.1:1", "https://127.0.0.2:1"]\n'
                'etcd-prefix = "/site"\n'
                "etcd-timeout = 4\n"
                f'etcd-ca = "{self.ca}"\n'
                f'etcd-cert = "{self.cert}"\n'
                f'etcd-key = "{self.key}"\n'
                'etcd-user = "txlb"\n'
                f'etcd-password-file = "{self.password}"\n'
            )
        options = parse("--config", path)
        self.assertEqual(options["etcd"], ["https://127.0.0.1:1", "https://127.0.0.2:1"])
        self.assertEqual((options["etcd-prefix"], options["etcd-timeout"]), ("/site/", 4.0))
        self.assertEqual((options["etcd-user"], options.etcdPassword), ("txlb", "s3cret"))
        self.assertIsNotNone(options.etcdTLS.trustRoot)
        self.assertIsNotNone(options.etcdTLS.clientCertificate)
        with open(path, "w") as file:
            file.write('etcd = ["http://127.0.0.1:1"]\netcd-user = "txlb"\n')
        self.assertUsageError(
            ["--config", path], "--etcd-user and --etcd-password-file go together: give both"
        )

    def test_errors(self) -> None:
        """
        Each bad value or combination ends with one line naming it.
        """
        etcd = ["--etcd", "http://127.0.0.1:2379"]
        tls = ["--etcd", "https://127.0.0.1:2379"]
        table = [
            (
                ["--etcd", "127.0.0.1:2379"],
                "--etcd: '127.0.0.1:2379': expected http://HOST:PORT or https://HOST:PORT",
            ),
            (["--etcd", ""], "--etcd: '': expected http://HOST:PORT or https://HOST:PORT"),
            (["--etcd", "http://"], "--etcd: 'http://': no host"),
            (
                ["--etcd", "http://h:0"],
                "--etcd: 'http://h:0': port 0 is not a port etcd listens on",
            ),
            (["--etcd", "http://h:65536"], "--etcd: 'http://h:65536': Port out of range 0-65535"),
            (
                ["--etcd", "http://h:2379/v3"],
                "--etcd: 'http://h:2379/v3': expected only SCHEME://HOST:PORT, with no path",
            ),
            (
                [*etcd, "--etcd", "http://127.0.0.1:2379/"],
                "--etcd: http://127.0.0.1:2379 is listed twice",
            ),
            (
                [*etcd, "--etcd-prefix", ""],
                "--etcd-prefix: '' is not a key prefix like /txlb/",
            ),
            (
                [*etcd, "--etcd-prefix", "/a b/"],
                "--etcd-prefix: '/a b/' is not a key prefix like /txlb/",
            ),
            (
                [*etcd, "--etcd-prefix", "/caf\u00e9/"],
                "--etcd-prefix: '/caf\u00e9/' is not a key prefix like /txlb/",
            ),
            (
                [*etcd, "--etcd-timeout", "0"],
                "--etcd-timeout: '0' is not a positive number of seconds",
            ),
            (
                [*etcd, "--etcd-timeout", "-1"],
                "--etcd-timeout: '-1' is not a positive number of seconds",
            ),
            (
                [*etcd, "--etcd-timeout", "soon"],
                "--etcd-timeout: 'soon' is not a positive number of seconds",
            ),
            (
                [*etcd, "--etcd-timeout", "inf"],
                "--etcd-timeout: 'inf' is not a positive number of seconds",
            ),
            (["--backends", "a:1", "--etcd-ca", self.ca], "--etcd-ca needs --etcd"),
            (["--backends", "a:1", "--etcd-cert", self.cert], "--etcd-cert needs --etcd"),
            (["--backends", "a:1", "--etcd-key", self.key], "--etcd-key needs --etcd"),
            (["--backends", "a:1", "--etcd-user", "u"], "--etcd-user needs --etcd"),
            (
                ["--backends", "a:1", "--etcd-password-file", self.password],
                "--etcd-password-file needs --etcd",
            ),
            (
                [*etcd, "--etcd-ca", self.ca],
                "--etcd-ca is for https:// etcd endpoints: no --etcd is https://",
            ),
            (
                [*etcd, "--etcd-cert", self.cert, "--etcd-key", self.key],
                "--etcd-cert is for https:// etcd endpoints: no --etcd is https://",
            ),
            (
                [*tls, "--etcd-ca", self.missing],
                f"--etcd-ca: {self.missing}: No such file or directory",
            ),
            (
                [*tls, "--etcd-ca", self.empty],
                f"--etcd-ca: {self.empty}: no PEM certificate in the file",
            ),
            (
                [*tls, "--etcd-ca", self.password],
                f"--etcd-ca: {self.password}: no PEM certificate in the file",
            ),
            (
                [*tls, "--etcd-cert", self.cert],
                "--etcd-cert and --etcd-key go together: give both",
            ),
            (
                [*tls, "--etcd-key", self.key],
                "--etcd-cert and --etcd-key go together: give both",
            ),
            (
                [*tls, "--etcd-cert", self.empty, "--etcd-key", self.key],
                f"--etcd-cert: {self.empty}: no PEM certificate in the file",
            ),
            (
                [*tls, "--etcd-cert", self.missing, "--etcd-key", self.key],
                f"--etcd-cert: {self.missing}: No such file or directory",
            ),
            (
                [*etcd, "--etcd-user", "txlb"],
                "--etcd-user and --etcd-password-file go together: give both",
            ),
            (
                [*etcd, "--etcd-password-file", self.password],
                "--etcd-user and --etcd-password-file go together: give both",
            ),
            (
                [*etcd, "--etcd-user", "", "--etcd-password-file", self.password],
                "--etcd-user: empty: give the etcd user's name",
            ),
            (
                [*etcd, "--etcd-user", "txlb", "--etcd-password-file", self.missing],
                f"--etcd-password-file: {self.missing}: No such file or directory",
            ),
            (
                [*etcd, "--etcd-user", "txlb", "--etcd-password-file", self.empty],
                f"--etcd-password-file: {self.empty}: no password on its first line",
            ),
        ]
        for args, message in table:
            self.assertUsageError(args, message)

    def test_keyOfAnotherCertificate(self) -> None:
        """
        A key that is not the certificate's is one line naming both.
        """
        with self.assertRaises(SystemExit) as caught:
            parse(
                "--etcd",
                "https://127.0.0.1:2379",
                "--etcd-cert",
                self.cert,
                "--etcd-key",
                self.otherKey,
            )
        message = str(caught.exception.code)
        self.assertEqual(len(message.splitlines()), 1, message)
        self.assertTrue(message.startswith("txlb: --etcd-key"), message)

"""
Policies written in Python: C{--algo package.module:Name} and the
C{txlb.algorithms} entry points, the fallback when a live policy raises,
the shadow policy, and switching policies at runtime.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import treq
from treq.client import HTTPClient
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from tests import policyexamples
from tests.helpers import CONFIG, GET, OK, Harness, ServiceHarness, freePort, waitFor
from txlb.admin import AdminResource
from txlb.algorithms import ALGORITHMS
from txlb.algorithms.p2c import PowerOfTwoChoices
from txlb.algorithms.policyloader import findAlgorithm, makeChecked
from txlb.algorithms.roundrobin import RoundRobin
from txlb.backend import Backend
from txlb.service import LoadBalancerService
from txlb.tap import Options, makeService
from txlb.testbackend import BackendResource, makeBackendSite

BACKENDS = [Backend("127.0.0.1", 8081), Backend("127.0.0.1", 8082)]


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--backends", "127.0.0.1:8081,127.0.0.1:8082", *args])
    return options


class FindAlgorithmTests(SynchronousTestCase):
    def test_found(self) -> None:
        """
        A built-in name gives its class; C{package.module:Name} the object
        it names, dotted names included.
        """
        table = [
            ("roundrobin", RoundRobin),
            ("p2c", PowerOfTwoChoices),
            ("tests.policyexamples:First", policyexamples.First),
            ("tests:policyexamples.Last", policyexamples.Last),
        ]
        for spec, expected in table:
            self.assertIs(findAlgorithm(spec, ALGORITHMS), expected, spec)

    def test_notFound(self) -> None:
        """
        Each way of naming nothing usable gives one line saying which.
        """
        table = [
            (
                "random",
                "unknown algorithm 'random' (choose from roundrobin, weighted, leastconn, iphash,"
                " swrr, p2c, ewma, hash, a name in the txlb.algorithms entry points, or"
                " package.module:Name)",
            ),
            (
                "tests.nosuchmodule:X",
                "'tests.nosuchmodule:X': no module named 'tests.nosuchmodule'",
            ),
            ("nosuchpackage.policy:X", "'nosuchpackage.policy:X': no module named 'nosuchpackage'"),
            (
                "tests.policyexamples:Missing",
                "'tests.policyexamples:Missing': tests.policyexamples has no 'Missing'",
            ),
            (
                "tests.policyexamples:NOT_A_CLASS",
                "'tests.policyexamples:NOT_A_CLASS' is not a class",
            ),
            (":First", "':First' is not package.module:Name"),
            ("tests.policyexamples:", "'tests.policyexamples:' is not package.module:Name"),
            ("a:b:c", "'a:b:c' is not package.module:Name"),
        ]
        for spec, message in table:
            with self.assertRaises(ValueError) as caught:
                findAlgorithm(spec, ALGORITHMS)
            self.assertEqual(str(caught.exception), message, spec)

    def test_importFails(self) -> None:
        """
        A module that raises while being imported is named, with what it
        raised.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        Path(directory, "txlb_broken_policy.py").write_text("import math\nmath.nope\n")
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(sys.modules.pop, "txlb_broken_policy", None)
        with self.assertRaises(ValueError) as caught:
            findAlgorithm("txlb_broken_policy:X", ALGORITHMS)
        self.assertEqual(
            str(caught.exception),
            "'txlb_broken_policy:X': importing txlb_broken_policy failed:"
            " AttributeError: module 'math' has no attribute 'nope'",
        )

    def test_checked(self) -> None:
        """
        L{makeChecked} gives the instance a good class makes.
        """
        algorithm = makeChecked(policyexamples.First, BACKENDS, "first")
        self.assertIsInstance(algorithm, policyexamples.First)
        self.assertEqual(algorithm.backends, tuple(BACKENDS))

    def test_checkFails(self) -> None:
        """
        A class that does not make a working L{IAlgorithm} provider is
        refused with one line: not declared, a method missing, raising when
        made.
        """
        table = [
            (
                policyexamples.Undeclared,
                "'x' is not an IAlgorithm provider: DoesNotImplement: The object"
                " <tests.policyexamples.Undeclared object",
            ),
            (
                policyexamples.NoPick,
                "'x' is not an IAlgorithm provider: BrokenImplementation: The object"
                " <tests.policyexamples.NoPick object",
            ),
            (
                policyexamples.Unmakeable,
                "'x' raised when made: RuntimeError: needs a config file",
            ),
        ]
        for make, start in table:
            with self.assertRaises(ValueError) as caught:
                makeChecked(make, BACKENDS, "x")
            message = str(caught.exception)
            self.assertTrue(message.startswith(start), message)
            self.assertNotIn("\n", message)
        with self.assertRaises(ValueError) as caught:
            makeChecked(policyexamples.Undeclared, BACKENDS, "x")
        self.assertIn("Does not declaratively implement the interface", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            makeChecked(policyexamples.NoPick, BACKENDS, "x")
        self.assertIn(
            ".pick(request, candidates) attribute was not provided", str(caught.exception)
        )


class CommandLineTests(SynchronousTestCase):
    def test_module(self) -> None:
        """
        C{--algo package.module:Name} makes that class from the backends.
        """
        options = parse("--algo", "tests.policyexamples:Last")
        algorithm = options.algorithm()(BACKENDS)
        self.assertIsInstance(algorithm, policyexamples.Last)

    def test_shadow(self) -> None:
        """
        C{--shadow-algo} takes the same names; without it there is none.
        """
        self.assertIsNone(parse().shadow())
        self.assertIs(parse("--shadow-algo", "p2c").shadow(), PowerOfTwoChoices)
        self.assertIs(
            parse("--shadow-algo", "tests.policyexamples:First").shadow(), policyexamples.First
        )

    def test_errors(self) -> None:
        """
        A policy that cannot be loaded or made ends the start with one line
        naming the option.
        """
        table = [
            (
                ["--algo", "tests.policyexamples:Missing"],
                "txlb: --algo: 'tests.policyexamples:Missing': tests.policyexamples has no"
                " 'Missing' (see twistd txlb --help)",
            ),
            (
                ["--algo", "tests.policyexamples:Unmakeable"],
                "txlb: --algo: 'tests.policyexamples:Unmakeable' raised when made:"
                " RuntimeError: needs a config file (see twistd txlb --help)",
            ),
            (
                ["--shadow-algo", "nosuch.module:X"],
                "txlb: --shadow-algo: 'nosuch.module:X': no module named 'nosuch'"
                " (see twistd txlb --help)",
            ),
            (
                ["--algo", " p2c"],
                "txlb: --algo: ' p2c' is not an algorithm name (see twistd txlb --help)",
            ),
        ]
        for args, message in table:
            with self.assertRaises(SystemExit) as caught:
                parse(*args)
            self.assertEqual(str(caught.exception), message, args)

    def test_notAProvider(self) -> None:
        """
        A class that is not an IAlgorithm provider ends the start with one
        line.
        """
        with self.assertRaises(SystemExit) as caught:
            parse("--algo", "tests.policyexamples:Undeclared")
        message = str(caught.exception)
        self.assertTrue(
            message.startswith(
                "txlb: --algo: 'tests.policyexamples:Undeclared' is not an IAlgorithm provider: "
            ),
            message,
        )
        self.assertNotIn("\n", message)


#: A package offering an algorithm in the entry points, as a wheel holds it.
WHEEL_FILES = {
    "txlb_policy_demo.py": """
from zope.interface import implementer
from txlb.interfaces import IAlgorithm

@implementer(IAlgorithm)
class Backwards:
    name = "backwards"

    def __init__(self, backends):
        self.backends = tuple(backends)

    def pick(self, request, candidates):
        return candidates[-1]
""",
    "txlb_policy_demo-1.0.dist-info/METADATA": (
        "Metadata-Version: 2.1\nName: txlb-policy-demo\nVersion: 1.0\n"
    ),
    "txlb_policy_demo-1.0.dist-info/WHEEL": (
        "Wheel-Version: 1.0\nGenerator: txlb tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    ),
    "txlb_policy_demo-1.0.dist-info/entry_points.txt": (
        "[txlb.algorithms]\nbackwards = txlb_policy_demo:Backwards\n"
    ),
    "txlb_policy_demo-1.0.dist-info/top_level.txt": "txlb_policy_demo\n",
}

#: What the venv's Python runs: the command line, then a pick.
CHECK = """
from txlb.tap import Options
options = Options()
options.parseOptions(["--backends", "127.0.0.1:8081,127.0.0.1:8082", "--algo", "backwards"])
algorithm = options.algorithm()(options["backends"])
print(type(algorithm).__module__, algorithm.pick(None, algorithm.backends).address)
"""


class EntryPointTests(SynchronousTestCase):
    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run a command with what this process imports (txlb, Twisted, pip)
        on the path, for at most a minute.
        """
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env = {**os.environ, "PYTHONPATH": path}
        return subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def test_installedPackage(self) -> None:
        """
        A package installed with pip that lists an algorithm in the
        C{txlb.algorithms} entry points is found by its name with
        C{--algo NAME}; without the package, that name is unknown.
        """
        base = Path(self.mktemp())
        base.mkdir()
        venv = base / "venv"
        made = self.command(
            sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)
        )
        python = venv / "bin" / "python"
        if made.returncode != 0 or not python.exists():
            raise SkipTest(f"cannot make a venv with {sys.executable}: {made.stderr.strip()}")
        wheel = base / "txlb_policy_demo-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            for name, text in WHEEL_FILES.items():
                archive.writestr(name, text.lstrip("\n"))
            archive.writestr("txlb_policy_demo-1.0.dist-info/RECORD", "")
        before = self.command(str(python), "-c", CHECK)
        self.assertIn("--algo: unknown algorithm 'backwards'", before.stderr)
        installed = self.command(
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            str(wheel),
        )
        self.assertEqual(installed.returncode, 0, installed.stderr)
        after = self.command(str(python), "-c", CHECK)
        self.assertEqual((after.stdout, after.stderr), ("txlb_policy_demo 127.0.0.1:8082\n", ""))


class FallbackTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = Harness(self, count=3)
        policyexamples.Raising.works = 0

    def use(self, algorithm: Any) -> None:
        self.harness.resource.useAlgorithm(algorithm(self.harness.backends))

    def picks(self, count: int) -> list[int]:
        return [self.harness.resource.pick(None).port for _ in range(count)]  # type: ignore[arg-type]

    def test_raises(self) -> None:
        """
        A live policy that raises has each such request picked by round
        robin instead, over the candidates.
        """
        self.use(policyexamples.Raising)
        self.harness.backends[1].draining = True
        self.assertEqual(self.picks(4), [8081, 8083, 8081, 8083])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_notACandidate(self) -> None:
        """
        A policy that picks a backend that is no candidate is treated as
        one that raised.
        """
        self.use(policyexamples.Stranger)
        self.assertEqual(self.picks(2), [8081, 8082])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_onlyFailingPicks(self) -> None:
        """
        Picks the policy makes go where it says; only those where it raises
        fall back.
        """
        policyexamples.Raising.works = 2
        self.use(policyexamples.Raising)
        self.assertEqual(self.picks(4), [8081, 8081, 8081, 8082])
        self.flushLoggedErrors(ZeroDivisionError)

    def test_loggedOncePerMinute(self) -> None:
        """
        The failure is logged once a minute at most; the next entry says
        how many were not, and every one is counted in /metrics.
        """
        self.use(policyexamples.Raising)
        self.picks(3)
        self.harness.reactor.advance(59)
        self.picks(1)
        self.harness.reactor.advance(1)
        self.picks(1)
        errors = self.flushLoggedErrors(ZeroDivisionError)
        self.assertEqual(len(errors), 2)
        messages = [m for m in self.harness.messages() if "failed to pick" in m]
        self.assertEqual(
            [m.split(" (")[1] for m in messages],
            [
                "0 more failures since the last entry; logged at most once a minute)",
                "3 more failures since the last entry; logged at most once a minute)",
            ],
        )
        self.assertTrue(messages[0].startswith("Algorithm first failed to pick; round robin"))
        self.assertIn(
            b'txlb_algorithm_fallbacks_total{pool="default"} 5.0',
            self.harness.resource.metrics.exposition(),
        )

    def test_request(self) -> None:
        """
        A request whose policy raises is forwarded and answered as any
        other.
        """
        self.use(policyexamples.Raising)
        _, client = self.harness.client(GET)
        backend, toBackend = self.harness.backend()
        self.assertEqual(toBackend.value(), GET)
        backend.dataReceived(OK)
        self.assertTrue(client.value().startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(client.value().endswith(b"\r\n\r\nok"))
        self.flushLoggedErrors(ZeroDivisionError)


class ShadowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = Harness(self, count=3)
        self.resource = self.harness.resource
        policyexamples.Raising.works = 0

    def picks(self, count: int) -> list[int]:
        return [self.resource.pick(None).port for _ in range(count)]  # type: ignore[arg-type]

    def test_neverRoutes(self) -> None:
        """
        The live policy routes, whatever the shadow chooses.
        """
        self.resource.useShadow("last", policyexamples.Last)
        self.assertEqual(self.picks(4), [8081, 8082, 8083, 8081])

    def test_counts(self) -> None:
        """
        The shadow's choices are counted: picks, agreement with the live
        policy, and how many each backend would have had.  (Round robin
        picks 8081, 8082, 8083, 8081, then 8082 and 8083 with 8081
        draining: the shadow agrees on the first, fourth and fifth.)
        """
        self.resource.useShadow("first", policyexamples.First)
        self.picks(4)
        self.harness.backends[0].draining = True
        self.picks(2)
        self.assertEqual(
            self.resource.shadow.status(),  # type: ignore[union-attr]
            {
                "algorithm": "first",
                "compared": 6,
                "agreement": 0.5,
                "picks": {"127.0.0.1:8081": 4, "127.0.0.1:8082": 2},
                "errors": 0,
            },
        )

    def test_metrics(self) -> None:
        """
        /metrics shows the shadow's picks, agreement, errors and per-backend
        picks.
        """
        self.resource.useShadow("first", policyexamples.First)
        self.picks(4)
        text = self.resource.metrics.exposition().decode()
        for line in (
            'txlb_shadow_picks_total{policy="first",pool="default"} 4.0',
            'txlb_shadow_agreed_total{policy="first",pool="default"} 2.0',
            'txlb_shadow_errors_total{policy="first",pool="default"} 0.0',
            'txlb_shadow_agreement_ratio{policy="first",pool="default"} 0.5',
            'txlb_shadow_backend_picks_total{backend="127.0.0.1:8081",policy="first",pool="default"} 4.0',
        ):
            self.assertIn(line, text)

    def test_noShadowNoMetrics(self) -> None:
        """
        Without a shadow, /metrics has no shadow series.
        """
        self.assertNotIn(b"txlb_shadow", self.resource.metrics.exposition())

    def test_raisingShadow(self) -> None:
        """
        A shadow that raises changes nothing for live traffic; it is
        counted, and logged at most once a minute.
        """
        self.resource.useShadow("raising", policyexamples.Raising)
        self.assertEqual(self.picks(3), [8081, 8082, 8083])
        self.harness.reactor.advance(60)
        self.picks(1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.assertEqual(self.resource.shadow.errors, 4)  # type: ignore[union-attr]
        self.assertEqual(self.resource.shadow.compared, 0)  # type: ignore[union-attr]
        messages = [m for m in self.harness.messages() if m.startswith("Shadow policy")]
        self.assertEqual(
            messages[1],
            "Shadow policy raising raised while picking (no effect on traffic; 2 more errors"
            " since the last entry; logged at most once a minute)",
        )

    def test_strangerShadow(self) -> None:
        """
        A shadow that chooses a backend that is no candidate counts as one
        that raised.
        """
        self.resource.useShadow("stranger", policyexamples.Stranger)
        self.picks(2)
        self.assertEqual(self.resource.shadow.errors, 2)  # type: ignore[union-attr]
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unmakeableShadow(self) -> None:
        """
        A shadow that raises when made again (for new backends) sits out,
        logged; live traffic goes on.
        """
        self.resource.useShadow("first", policyexamples.First)
        self.resource.shadow.makeAlgorithm = policyexamples.Unmakeable  # type: ignore[union-attr]
        self.resource.setBackends(self.harness.backends[:2])
        self.assertEqual(self.picks(2), [8081, 8082])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.resource.shadow.compared, 0)  # type: ignore[union-attr]

    def test_observes(self) -> None:
        """
        A shadow that observes responses hears of each one, beside a live
        policy that does not.
        """
        policyexamples.Listening.heard = []
        self.resource.useShadow("listening", policyexamples.Listening)
        self.harness.client(GET)
        backend, _ = self.harness.backend()
        self.harness.reactor.advance(0.25)
        backend.dataReceived(OK)
        self.assertEqual(policyexamples.Listening.heard, [("127.0.0.1:8081", 0.25)])

    def test_bothObserve(self) -> None:
        """
        When the live policy and the shadow both observe responses, both
        hear of each one.
        """
        policyexamples.Listening.heard = []
        resource = self.resource
        resource.useAlgorithm(policyexamples.Listening(self.harness.backends))
        resource.useShadow("listening", policyexamples.Listening)
        self.harness.client(GET)
        backend, _ = self.harness.backend()
        backend.dataReceived(OK)
        self.assertEqual(
            policyexamples.Listening.heard, [("127.0.0.1:8081", 0.0), ("127.0.0.1:8081", 0.0)]
        )

    def test_off(self) -> None:
        """
        C{useShadow(None, None)} ends the shadow.
        """
        self.resource.useShadow("first", policyexamples.First)
        self.resource.useShadow(None, None)
        self.assertIsNone(self.resource.shadow)
        self.assertIsNone(self.resource.answered)


class SwitchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.harness = ServiceHarness(self, CONFIG)
        self.admin = StubTreq(AdminResource(self.harness.service, "s3cret"))

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = Headers({b"Authorization": [b"Bearer s3cret"]})
        data = None if body is None else json.dumps(body).encode()
        response = self.successResultOf(
            self.admin.request(method, f"http://admin{path}", headers=headers, data=data)
        )
        return response.code, json.loads(self.successResultOf(response.content()))

    def test_admin(self) -> None:
        """
        C{PUT /algorithm} switches the algorithm and the shadow at once, and
        /status shows them.
        """
        code, answer = self.call(
            "PUT",
            "/algorithm",
            {"algo": "tests.policyexamples:Last", "shadow": "tests.policyexamples:First"},
        )
        self.assertEqual(
            (code, answer),
            (
                200,
                {"algorithm": "tests.policyexamples:Last", "shadow": "tests.policyexamples:First"},
            ),
        )
        resource = self.harness.resource
        self.assertIsInstance(resource.algorithm, policyexamples.Last)
        self.assertEqual([resource.pick(None).port for _ in range(2)], [8082, 8082])  # type: ignore[arg-type]
        _, status = self.call("GET", "/status")
        self.assertEqual(status["algorithm"], "tests.policyexamples:Last")
        self.assertEqual(
            status["shadow"],
            {
                "algorithm": "tests.policyexamples:First",
                "compared": 2,
                "agreement": 0.0,
                "picks": {"127.0.0.1:8081": 2},
                "errors": 0,
            },
        )
        code, answer = self.call("PUT", "/algorithm", {"shadow": None})
        self.assertEqual(
            (code, answer), (200, {"algorithm": "tests.policyexamples:Last", "shadow": None})
        )
        self.assertIsNone(resource.shadow)

    def test_adminRefuses(self) -> None:
        """
        A bad switch is refused with 400 and one line, and changes nothing,
        not even the part that was good.
        """
        resource = self.harness.resource
        before = resource.algorithm
        table = [
            ({}, 'expected {"algo": "NAME"} and/or {"shadow": "NAME" or null}'),
            ({"algo": None}, 'expected {"algo": "NAME"} and/or {"shadow": "NAME" or null}'),
            (
                {"algo": "p2c", "x": 1},
                'expected {"algo": "NAME"} and/or {"shadow": "NAME" or null}',
            ),
            (
                {"algo": "p2c", "shadow": "tests.policyexamples:Unmakeable"},
                "--shadow-algo: 'tests.policyexamples:Unmakeable' raised when made:"
                " RuntimeError: needs a config file",
            ),
        ]
        for body, error in table:
            self.assertEqual(self.call("PUT", "/algorithm", body), (400, {"error": error}), body)
        self.assertIs(resource.algorithm, before)
        self.assertIsNone(resource.shadow)
        self.assertEqual(self.call("GET", "/algorithm")[0], 405)

    def test_inFlightKeepBackend(self) -> None:
        """
        A request in flight when the algorithm changes ends on its backend;
        the next one is picked by the new algorithm.
        """
        harness = self.harness
        _, first = harness.client(GET)
        backend, _ = harness.backend()
        self.assertEqual(backend.transport.getPeer().port, 8081)
        self.call("PUT", "/algorithm", {"algo": "tests.policyexamples:First"})
        harness.client(GET)
        second, _ = harness.backend()
        backend.dataReceived(OK)
        self.assertTrue(first.value().endswith(b"\r\n\r\nok"))
        self.assertEqual(second.transport.getPeer().port, 8081)
        self.assertEqual([b.active for b in harness.backends], [1, 0])

    def test_reload(self) -> None:
        """
        A reload switches the algorithm and the shadow to the file's; the
        shadow's counts go on while it stays the same one.
        """
        harness = self.harness
        harness.write(CONFIG + 'shadow-algo = "tests.policyexamples:First"\n')
        self.assertTrue(harness.service.reload())
        resource = harness.resource
        resource.pick(None)  # type: ignore[arg-type]
        harness.write(
            CONFIG.replace('"roundrobin"', '"tests.policyexamples:Last"')
            + 'shadow-algo = "tests.policyexamples:First"\n'
        )
        self.assertTrue(harness.service.reload())
        self.assertIsInstance(resource.algorithm, policyexamples.Last)
        resource.pick(None)  # type: ignore[arg-type]
        self.assertEqual(resource.shadow.compared, 2)  # type: ignore[union-attr]
        self.assertEqual(resource.shadow.agreed, 1)  # type: ignore[union-attr]
        harness.write(CONFIG)
        self.assertTrue(harness.service.reload())
        self.assertIsNone(resource.shadow)

    def test_reloadRefuses(self) -> None:
        """
        A file naming a broken policy fails the reload with one line, and
        the running algorithm stays.
        """
        harness = self.harness
        before = harness.resource.algorithm
        harness.write(CONFIG.replace('"roundrobin"', '"tests.policyexamples:NoPick"'))
        self.assertFalse(harness.service.reload())
        self.assertIs(harness.resource.algorithm, before)
        failed = [m for m in harness.messages() if m.startswith("Reload failed")]
        self.assertEqual(len(failed), 1)
        self.assertTrue(
            failed[0].startswith(
                "Reload failed, the configuration stays as it was: --algo:"
                " 'tests.policyexamples:NoPick' is not an IAlgorithm provider: "
            ),
            failed[0],
        )


class SwitchUnderLoadTests(TestCase):
    """
    Switching policies while requests flow, over real loopback sockets.
    """

    async def test_noRequestLost(self) -> None:
        """
        Eight clients send requests back to back, each answered after 10 to
        30 ms (a seeded jitter, so they do not fall into step), while the
        admin API switches the algorithm (and adds a shadow), a reload
        switches it again (while requests are in flight), and the admin API
        once more: every request gets its 200, and every backend served.
        Each step waits for 40 more answers rather than for a time, so that
        a slow machine (a cold PyPy under load) sees as much traffic around
        each switch as a fast one.
        """
        delays = Jitter()
        backendPorts = []
        for _ in range(3):
            port = reactor.listenTCP(
                0, makeBackendSite(BackendResource(delays)), interface="127.0.0.1"
            )
            self.addCleanup(port.stopListening)
            backendPorts.append(port.getHost().port)
        listen, admin = freePort(), freePort()
        path = self.mktemp()
        backends = ", ".join(f'"127.0.0.1:{p}"' for p in backendPorts)
        text = (
            f'listen = "tcp:{listen}:interface=127.0.0.1"\n'
            f'admin = "tcp:{admin}:interface=127.0.0.1"\n'
            f"backends = [{backends}]\n"
        )
        Path(path).write_text(text + 'algo = "roundrobin"\n')
        options = Options()
        options.parseOptions(["--config", path])
        service: LoadBalancerService = makeService(options, reactor)  # type: ignore[assignment]
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        http = HTTPClient(Agent(reactor, pool=pool))
        results: list[tuple[int, bytes]] = []
        failures: list[Any] = []
        running = [True]

        async def client() -> None:
            while running[0]:
                try:
                    response = await http.get(f"http://127.0.0.1:{listen}/ping")
                    results.append((response.code, await treq.content(response)))
                except Exception as e:
                    failures.append(e)

        async def flowing() -> None:
            """
            Wait for 40 more answers.
            """
            enough = len(results) + 40
            await waitFor(lambda: len(results) >= enough or failures, 30, "40 more answers")

        async def switch(body: dict[str, Any]) -> None:
            await flowing()
            response = await http.put(
                f"http://127.0.0.1:{admin}/algorithm", data=json.dumps(body).encode()
            )
            self.assertEqual(response.code, 200, await treq.text_content(response))

        clients = [Deferred.fromCoroutine(client()) for _ in range(8)]
        await switch({"algo": "tests.policyexamples:First", "shadow": "p2c"})
        await flowing()
        await waitFor(lambda: service.resource.inFlight() > 0)
        # In the same turn as the check: requests are in flight.
        Path(path).write_text(text + 'algo = "p2c"\nshadow-algo = "ewma"\n')
        self.assertTrue(service.reload())
        await switch({"algo": "swrr", "shadow": None})
        await flowing()
        running[0] = False
        for done in clients:
            await done

        self.assertEqual(failures, [])
        self.assertEqual({code for code, _ in results}, {200})
        self.assertEqual(
            {body for _, body in results},
            {b"pong from backend :%d\n" % port for port in backendPorts},
        )
        self.assertEqual(service.pools["default"].resource.algorithm.name, "swrr")


class Jitter(dict):  # type: ignore[type-arg]
    """
    A test backend's delays: 10 to 30 ms for every port, drawn from a
    seeded generator.
    """

    def __init__(self) -> None:
        super().__init__()
        self.random = random.Random(8)

    def get(self, port: object, default: object = None) -> float:  # type: ignore[override]
        return self.random.uniform(0.01, 0.03)

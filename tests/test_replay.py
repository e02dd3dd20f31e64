"""
C{txlb-replay}: a small generated access log replayed through policies,
with exact numbers.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers import GET, OK, Harness, ServiceHarness
from txlb.accesslog import AccessLogFile
from txlb.replay import Entry, NotAnAccessLogError, byPool, main, readLog

STAMP = "2026-11-29T08:00:00+0000"


def entry(k: int, **changes: Any) -> str:
    """
    The log's C{k}th line: requests alternate between a backend that
    answers in 10 ms (8081) and one that answers in 100 ms (8082), as round
    robin sent them.
    """
    fast = k % 2 == 0
    milliseconds = 10.0 if fast else 100.0
    record = {
        "time": STAMP,
        "client": f"10.0.0.{k % 4 + 1}",
        "method": "GET",
        "target": f"/item/{k % 3}",
        "backend": "127.0.0.1:8081" if fast else "127.0.0.1:8082",
        "status": 200,
        "bytesIn": 0,
        "bytesOut": 2,
        "connectMs": 0.5,
        "firstByteMs": milliseconds,
        "totalMs": milliseconds + 1,
        "retries": 0,
        "flag": "--",
        "error": None,
    }
    record.update(changes)
    return json.dumps(record)


#: Twenty requests in one second, one refused with no backend (left out),
#: one line with twistd's prefix, and a line that is no entry at all.
LOG = [
    *(entry(k) for k in range(3)),
    entry(99, backend="-", status=503, firstByteMs=None, totalMs=0.2),
    f"{STAMP} [txlb.proxy.LoadBalancerResource#info] {entry(3)}",
    "2026-11-29T08:00:00+0000 [-] Log opened.",
    *(entry(k) for k in range(4, 20)),
]


#: A site of two pools with 127.0.0.1:8081 in both: api.example.com goes
#: to C{api}, the rest to C{web}.
POOLS_CONFIG = """
[pools.api]
backends = ["127.0.0.1:8081", "127.0.0.1:8082"]

[pools.web]
algo = "weighted"
backends = ["127.0.0.1:8083", "127.0.0.1:8081"]

[[routes]]
host = "api.example.com"
pool = "api"

[[routes]]
pool = "web"
"""

#: The twenty requests of L{LOG}, to the pool C{api}, and after each odd one
#: a request to the pool C{web}: ten in all, alternating between 8081 (the
#: pool C{api}'s fast backend), which answers them in 200 ms, and 8083,
#: which answers in 1 ms.
POOLS_LOG: list[str] = []
for _k in range(20):
    POOLS_LOG.append(entry(_k, pool="api"))
    if _k % 2:
        slow = _k % 4 == 1
        POOLS_LOG.append(
            entry(
                _k,
                pool="web",
                backend="127.0.0.1:8081" if slow else "127.0.0.1:8083",
                firstByteMs=200.0 if slow else 1.0,
            )
        )


class ReadLogTests(SynchronousTestCase):
    def test_entries(self) -> None:
        """
        The requests that reached a backend, arriving evenly over the
        second they were logged in (twice as fast at speed 2), each with the
        latency to its response head.
        """
        entries = readLog(LOG, speed=2)
        self.assertEqual(len(entries), 20)
        self.assertEqual(
            entries[:2],
            [
                Entry("10.0.0.1", "GET", "/item/0", "127.0.0.1:8081", 0.0, 0.01),
                Entry("10.0.0.2", "GET", "/item/1", "127.0.0.1:8082", 0.025, 0.1),
            ],
        )
        self.assertEqual(entries[19].arrival, 0.475)

    def test_seconds(self) -> None:
        """
        Arrivals count from the first second logged, whatever the offsets
        of the stamps; without a response head, the total time is the
        latency.
        """
        entries = readLog(
            [
                entry(0, time="2026-11-29T08:00:00+0000"),
                entry(1, time="2026-11-29T09:00:01+01:00", firstByteMs=None),
                entry(2, time="2026-11-29T03:00:02-0500"),
            ]
        )
        self.assertEqual(
            [(e.arrival, e.seconds) for e in entries], [(0, 0.01), (1, 0.101), (2, 0.01)]
        )

    def test_queued(self) -> None:
        """
        The time a request waited in txlb's queue is not the backend's: it
        is taken off the latency.
        """
        (queued,) = readLog([entry(0, queueMs=4.0, firstByteMs=14.0)])
        self.assertAlmostEqual(queued.seconds, 0.01)
        line = (
            "2025-11-29T08:00:00+0000 client=10.0.0.7 method=GET path=/item "
            "\N{RIGHTWARDS ARROW} backend=127.0.0.1:8081 status=200 ms=14.0 queued=4.0ms"
        )
        (queued,) = readLog([line])
        self.assertAlmostEqual(queued.seconds, 0.01)

    def written(self, accessLog: str) -> list[str]:
        """
        The access-log file the balancer writes in format C{accessLog} for
        a request answered after 250 ms, a request whose backend refused the
        connection and that the next one answered at once, and a request
        refused with no backend (a bad request line).
        """
        harness = Harness(self, accessLog=accessLog)
        path = self.mktemp()
        file = harness.resource.accessLog.file = AccessLogFile(path, harness.reactor)
        harness.reactor.advance(1764403200)  # 2025-11-29T08:00:00Z
        harness.client(GET)
        backend, _ = harness.backend()
        harness.reactor.advance(0.25)
        backend.dataReceived(OK)
        harness.client(GET)
        harness.refuse(ConnectionRefusedError())
        # The retry goes to the first backend, on the connection kept alive.
        backend.dataReceived(OK)
        harness.client(b"GET /a b HTTP/1.1\r\n\r\n")
        file.close()
        return Path(path).read_text().splitlines()

    def test_textFile(self) -> None:
        """
        A text access-log file, as the balancer writes it, is read: each
        request that reached a backend, at the total time its line gives
        (it has no other), and marked as read from a text line.
        """
        lines = self.written("text")
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            readLog(lines),
            [
                Entry("10.0.0.7", "GET", "/item", "127.0.0.1:8081", 0.0, 0.25, text=True),
                Entry("10.0.0.7", "GET", "/item", "127.0.0.1:8081", 0.5, 0.0, text=True),
            ],
        )

    def test_jsonFile(self) -> None:
        """
        A JSON access-log file, as the balancer writes it, is read alike, at
        the times to the response head.
        """
        lines = self.written("json")
        self.assertEqual(len(lines), 3)
        self.assertEqual(
            readLog(lines),
            [
                Entry("10.0.0.7", "GET", "/item", "127.0.0.1:8081", 0.0, 0.25, pool="default"),
                Entry("10.0.0.7", "GET", "/item", "127.0.0.1:8081", 0.5, 0.0, pool="default"),
            ],
        )

    def writtenByPool(self, accessLog: str) -> list[str]:
        """
        The access-log file a balancer of two pools and routes writes in
        format C{accessLog}: a request to the pool C{api}, one to C{web}.
        """
        harness = ServiceHarness(self, POOLS_CONFIG, "--access-log", accessLog)
        path = self.mktemp()
        file = harness.resource.accessLog.file = AccessLogFile(path, harness.reactor)
        harness.reactor.advance(1764403200)  # 2025-11-29T08:00:00Z
        for host in (b"api.example.com", b"www.example.com"):
            harness.client(b"GET /item HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            backend, _ = harness.backend()
            backend.dataReceived(OK)
        file.close()
        return Path(path).read_text().splitlines()

    def test_poolsOfText(self) -> None:
        """
        The text lines of a site with routes name each request's pool,
        which is read.
        """
        entries = readLog(self.writtenByPool("text"))
        self.assertEqual(
            [(e.backend, e.pool, e.text) for e in entries],
            [("127.0.0.1:8081", "api", True), ("127.0.0.1:8083", "web", True)],
        )

    def test_poolsOfJSON(self) -> None:
        """
        The JSON lines name each request's pool, which is read.
        """
        entries = readLog(self.writtenByPool("json"))
        self.assertEqual(
            [(e.backend, e.pool, e.text) for e in entries],
            [("127.0.0.1:8081", "api", False), ("127.0.0.1:8083", "web", False)],
        )

    def test_byPool(self) -> None:
        """
        Entries are grouped by pool, in the order the pools first appear,
        each keeping its arrival in the whole log; an entry that names no
        pool is the pool C{default}'s.
        """
        entries = readLog(
            [entry(0, pool="web"), entry(1), entry(2, pool="api"), entry(3, pool="web")]
        )
        grouped = byPool(entries)
        self.assertEqual(list(grouped), ["web", "default", "api"])
        self.assertEqual([e.arrival for e in grouped["web"]], [0.0, 0.75])

    def test_twistdLog(self) -> None:
        """
        In twistd's log, a line's time is twistd's stamp before it: for
        text lines, and for JSON ones, which have no C{time} there.
        """
        prefix = "[txlb.proxy.LoadBalancerResource#info]"
        jsonEntry = json.loads(entry(1))
        del jsonEntry["time"]
        entries = readLog(
            [
                "2026-11-29T08:00:00+0000 [-] Log opened.",
                f"2026-11-29T08:00:00+0000 {prefix} client=10.0.0.1 method=GET"
                " path=/item/0 \N{RIGHTWARDS ARROW} backend=127.0.0.1:8081 status=200 ms=10.5",
                f"2026-11-29T08:00:01+0000 {prefix} {json.dumps(jsonEntry)}",
                f"2026-11-29T08:00:02+0000 {prefix} client=10.0.0.2 method=POST path=/a"
                " \N{RIGHTWARDS ARROW} backend=127.0.0.1:8082 status=502 ms=3.0"
                ' error="connection refused"',
                f"2026-11-29T08:00:02+0000 {prefix} client=10.0.0.2 method=GET path=/b"
                ' \N{RIGHTWARDS ARROW} backend=- status=503 ms=0.1 error="no backend"',
            ]
        )
        self.assertEqual(
            entries,
            [
                Entry("10.0.0.1", "GET", "/item/0", "127.0.0.1:8081", 0, 0.0105, text=True),
                Entry("10.0.0.2", "GET", "/item/1", "127.0.0.1:8082", 1, 0.1),
                Entry("10.0.0.2", "POST", "/a", "127.0.0.1:8082", 2, 0.003, text=True),
            ],
        )

    def test_noTime(self) -> None:
        """
        An entry with no time is refused with its line's number.
        """
        with self.assertRaises(ValueError) as caught:
            readLog(
                [
                    "client=10.0.0.1 method=GET path=/ \N{RIGHTWARDS ARROW}"
                    " backend=127.0.0.1:8081 status=200 ms=1.0"
                ]
            )
        self.assertEqual(str(caught.exception), "line 1: an access-log entry without a time")

    def test_notAnAccessLog(self) -> None:
        """
        A file with no access-log line at all says so.
        """
        self.assertRaises(NotAnAccessLogError, readLog, ["hello", "2026-11-29T08:00:00+0000 [-] x"])

    def test_bad(self) -> None:
        """
        A line whose object is not an access-log entry is refused with its
        number.
        """
        with self.assertRaises(ValueError) as caught:
            readLog([entry(0), '{"time": "x"}'])
        self.assertTrue(str(caught.exception).startswith("line 2: not a JSON access-log entry"))


class ReplayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        Path(self.path).write_text("\n".join(LOG) + "\n")

    def replay(self, *args: str) -> tuple[int, str]:
        """
        Run C{txlb-replay ARGS}: its status and output; what it wrote on
        stderr is in C{self.stderr}.
        """
        out = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        code = main([*args], out)
        return code, out.getvalue()

    def config(self, text: str) -> str:
        """
        The path of a configuration file of C{text}.
        """
        path = self.mktemp()
        Path(path).write_text(text)
        return path

    def test_textLog(self) -> None:
        """
        A text access log is replayed, at the total times of its lines, and
        a note says so.
        """
        path = self.mktemp()
        prefix = "2026-11-29T08:00:00+0000 [txlb.proxy.LoadBalancerResource#info]"
        Path(path).write_text(
            "".join(
                f"{prefix} client={e.client} method={e.method} path={e.target}"
                f" \N{RIGHTWARDS ARROW} backend={e.backend} status=200"
                f" ms={e.seconds * 1000:.1f}\n"
                for e in readLog(LOG)
            )
        )
        text = self.replay("--speed", "2", "--concurrency", "1", path, "roundrobin", "leastconn")
        self.assertEqual(
            text,
            self.replay("--speed", "2", "--concurrency", "1", self.path, "roundrobin", "leastconn"),
        )
        self.assertEqual(text[0], 0)
        self.replay("--speed", "2", path, "roundrobin")
        self.assertIn(
            "txlb-replay: note: a text line has no time to the response head: backends serve"
            " at the requests' total times (ms=); --access-log json logs both\n",
            self.stderr.getvalue(),
        )

    def test_optionsAnywhere(self) -> None:
        """
        Options may follow the log and the policies, or sit between them;
        after C{--}, everything is a policy.
        """
        first = self.replay("-s", "2", "-c", "1", self.path, "roundrobin", "leastconn")
        self.assertEqual(first[0], 0)
        self.assertEqual(
            self.replay(self.path, "roundrobin", "--speed=2", "leastconn", "-c", "1"), first
        )
        self.assertEqual(self.replay(self.path, "-c1", "roundrobin", "-s", "2", "leastconn"), first)
        self.assertEqual(self.replay(self.path, "--", "-c")[0], 2)
        self.assertEqual(
            self.stderr.getvalue(),
            "txlb-replay: unknown algorithm '-c' (choose from roundrobin, weighted, leastconn, iphash, swrr, p2c, ewma, hash, a name in the txlb.algorithms entry points, or package.module:Name)\n",
        )

    def test_usage(self) -> None:
        """
        The usage line names the program.
        """
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit):
            main(["--help"])
        self.assertEqual(
            out.getvalue().splitlines()[0],
            "Usage: txlb-replay [options] ACCESS_LOG POLICY [POLICY ...]",
        )

    def test_weightsNoted(self) -> None:
        """
        Without C{--backends} or C{--config}, every backend weighs 1, and a
        note says so.
        """
        code, out = self.replay(self.path, "weighted")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines()[1],
            "weighted    1.00    10.0   100.0           50.0%           50.0%",
        )
        self.assertEqual(
            self.stderr.getvalue(),
            "txlb-replay: note: the log keeps no weights: every backend weighs 1 (give them"
            " with --backends HOST:PORT=WEIGHT,... or --config FILE)\n",
        )

    def test_weightsFromConfig(self) -> None:
        """
        C{--config} takes the backends, their weights and the hash key from
        the balancer's configuration file; C{--backends} and C{--hash-key}
        win over it.
        """
        path = self.config(
            'backends = ["127.0.0.1:8081=3", "127.0.0.1:8082"]\nhash-key = "path"\nretries = 1\n'
        )
        code, out = self.replay("--config", path, self.path, "weighted")
        self.assertEqual((code, self.stderr.getvalue()), (0, ""))
        self.assertEqual(
            out.splitlines()[1],
            "weighted    1.00    10.0   100.0           75.0%           25.0%",
        )
        weighted = ("-b", "127.0.0.1:8081=3,127.0.0.1:8082")
        self.assertEqual(
            self.replay("--config", path, self.path, "hash"),
            self.replay(*weighted, "--hash-key", "path", self.path, "hash"),
        )
        self.assertNotEqual(
            self.replay(*weighted, "--hash-key", "path", self.path, "hash"),
            self.replay(*weighted, self.path, "hash"),
        )
        self.assertEqual(
            self.replay("--config", path, "--hash-key", "ip", self.path, "hash"),
            self.replay(*weighted, self.path, "hash"),
        )
        code, out = self.replay(
            "--config", path, "-b", "127.0.0.1:8081,127.0.0.1:8082=3", self.path, "weighted"
        )
        self.assertEqual(
            out.splitlines()[1],
            "weighted    1.00   100.0   100.0           25.0%           75.0%",
        )

    def test_configErrors(self) -> None:
        """
        A configuration file that cannot be used ends with one line.
        """
        table = [
            ("/nonexistent/txlb.toml", "[Errno 2] No such file or directory"),
            (self.config("backends = "), "Invalid value"),
            (self.config("backends = [1]"), 'backends: expected a list of "HOST:PORT[=WEIGHT]"'),
            (self.config('backends = ["a:0"]'), "'a:0': bad port '0'"),
            (self.config("hash-key = 1"), "hash-key: expected a string"),
        ]
        for path, reason in table:
            code, out = self.replay("--config", path, self.path, "weighted")
            self.assertEqual((code, out), (2, ""), path)
            self.assertTrue(
                self.stderr.getvalue().startswith(f"txlb-replay: --config {path}: {reason}"),
                self.stderr.getvalue(),
            )

    def test_plotNeedsMatplotlib(self) -> None:
        """
        Without matplotlib, C{--plot} ends at once with one line, before
        the log is even read.
        """
        self.patch(sys, "modules", {**sys.modules, "matplotlib": None})
        code, out = self.replay("--plot", "out.png", "/nonexistent/log", "roundrobin")
        self.assertEqual(
            (code, out, self.stderr.getvalue()),
            (2, "", "txlb-replay: --plot needs matplotlib (pip install txlb[bench])\n"),
        )

    def test_table(self) -> None:
        """
        Each policy's spread, modelled p50 and p99, and backend shares.

        Round robin by hand: at twice the logged speed a request arrives
        every 25 ms.  8081 gets every other one and serves it in 10 ms: ten
        at 10 ms.  8082 gets the others, one every 50 ms, and takes 100 ms
        each, one at a time: the jth (from 0) waits 50j ms, so its latency
        is 100 + 50j ms, up to 550.  p50 (the 10th of 20) is 10 ms, p99
        (the 20th) 550 ms.  Always the first backend: all twenty at 10 ms.
        """
        code, out = self.replay(
            "--speed",
            "2",
            "--concurrency",
            "1",
            self.path,
            "roundrobin",
            "leastconn",
            "p2c",
            "ewma",
            "tests.policyexamples:First",
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "policy                      spread  p50 ms  p99 ms  127.0.0.1:8081  127.0.0.1:8082",
                "roundrobin                    1.00    10.0   550.0           50.0%           50.0%",
                "leastconn                     1.50    10.0   100.0           75.0%           25.0%",
                "p2c                           1.60    10.0   100.0           80.0%           20.0%",
                "ewma                          1.90    10.0   100.0           95.0%            5.0%",
                "tests.policyexamples:First    2.00    10.0    10.0          100.0%            0.0%",
            ],
        )

    def test_concurrency(self) -> None:
        """
        With two requests at once per backend, round robin's slow backend
        takes its request every 50 ms in two slots of 100 ms: none waits,
        and p99 is 100 ms.
        """
        code, out = self.replay("-s", "2", "-c", "2", self.path, "roundrobin")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines()[1],
            "roundrobin    1.00    10.0   100.0           50.0%           50.0%",
        )

    def test_backends(self) -> None:
        """
        C{--backends} gives the backends and their weights: a third one the
        log never used serves at the latencies of all, and the spread is
        measured against each one's weighted share.
        """
        code, out = self.replay(
            "--backends",
            "127.0.0.1:8081=2,127.0.0.1:8082,127.0.0.1:8083",
            self.path,
            "swrr",
            "roundrobin",
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "policy      spread  p50 ms  p99 ms  127.0.0.1:8081  127.0.0.1:8082  127.0.0.1:8083",
                "swrr          1.00    10.0   100.0           50.0%           25.0%           25.0%",
                "roundrobin    1.40    10.0   100.0           35.0%           35.0%           30.0%",
            ],
        )

    def test_hashKey(self) -> None:
        """
        C{--hash-key} is what C{hash} hashes: each of the log's three paths
        keeps to one backend, C{/item/2} (6 requests) to 8081, C{/item/0}
        and C{/item/1} (7 each) to 8082, which is slow; by client address
        (the default key) they spread otherwise.
        """
        code, out = self.replay("--hash-key", "path", self.path, "hash")
        self.assertEqual(code, 0)
        byPath = self.replay(self.path, "hash")[1]
        self.assertNotEqual(out, byPath)
        self.assertEqual(
            out.splitlines()[1],
            "hash      1.40   100.0   100.0           30.0%           70.0%",
        )

    def test_errors(self) -> None:
        """
        A bad command line, file or policy ends with one line on stderr and
        status 2.
        """
        bad = self.mktemp()
        Path(bad).write_text('{"nope": 1}\n')
        empty = self.mktemp()
        Path(empty).write_text(entry(0, backend="-") + "\n")
        notLog = self.mktemp()
        Path(notLog).write_text("2026-11-29T08:00:00+0000 [-] Log opened.\n")
        table = [
            ([self.path], "txlb-replay: name at least one policy"),
            ([self.path, "random"], "txlb-replay: unknown algorithm 'random'"),
            (
                [self.path, "tests.policyexamples:Unmakeable"],
                "txlb-replay: 'tests.policyexamples:Unmakeable' raised when made:"
                " RuntimeError: needs a config file",
            ),
            (
                [bad, "roundrobin"],
                "txlb-replay: line 1: not a JSON access-log entry ('backend')",
            ),
            ([empty, "roundrobin"], f"txlb-replay: {empty}: no request reached a backend"),
            (
                [notLog, "roundrobin"],
                f"txlb-replay: {notLog}: not txlb's access log (no line is a text or JSON"
                " access-log line)",
            ),
            (["nosuchfile", "roundrobin"], "txlb-replay: [Errno 2] No such file or directory"),
            (["-c", "0", self.path, "p2c"], "txlb-replay: --concurrency: must be at least 1"),
            (["-s", "0", self.path, "p2c"], "txlb-replay: --speed: '0' is not a positive number"),
            (["--hash-key", "body", self.path, "hash"], "txlb-replay: --hash-key: "),
        ]
        for args, start in table:
            code, out = self.replay(*args)
            self.assertEqual((code, out), (2, ""), args)
            message = self.stderr.getvalue()
            self.assertTrue(message.startswith(start), (args, message))
            self.assertEqual(message.count("\n"), 1, message)

    def test_plot(self) -> None:
        """
        C{--plot} writes a PNG of the shares and latencies.
        """
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SkipTest("matplotlib (the bench extra) is not installed") from None
        png = self.mktemp() + ".png"
        code, _ = self.replay("--plot", png, self.path, "roundrobin", "p2c")
        self.assertEqual(code, 0)
        self.assertEqual(Path(png).read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def test_perPool(self) -> None:
        """
        A log of two pools is replayed per pool, each under its name: each
        pool's requests through the policy over its own backends, each
        backend serving at the latencies of that pool's requests (8081
        answered the pool C{api} in 10 ms, C{web} in 200 ms).  With room
        for every request at once, the latencies are the service times.
        """
        path = self.mktemp()
        Path(path).write_text("\n".join(POOLS_LOG) + "\n")
        code, out = self.replay("-c", "100", path, "roundrobin")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines(),
            [
                "pool api: 20 requests, 2 backends",
                "policy      spread  p50 ms  p99 ms  127.0.0.1:8081  127.0.0.1:8082",
                "roundrobin    1.00    10.0   100.0           50.0%           50.0%",
                "",
                "pool web: 10 requests, 2 backends",
                "policy      spread  p50 ms  p99 ms  127.0.0.1:8081  127.0.0.1:8083",
                "roundrobin    1.00     1.0   200.0           50.0%           50.0%",
            ],
        )
        self.assertEqual(
            self.stderr.getvalue(),
            "txlb-replay: note: the log keeps no weights: every backend of pools api, web"
            " weighs 1 (give them with --config FILE)\n",
        )

    def test_poolsFromConfig(self) -> None:
        """
        C{--config} gives each pool its backends, with their weights, and
        its hash key (its own, else the top level's); a pool it does not
        have takes the log's backends, and a note says so.  Smooth weighted
        round robin over 3:1 gives 8083 eight of web's ten requests (two
        rounds of four, then two more): 1.07 times its share.
        """
        path = self.mktemp()
        Path(path).write_text("\n".join(POOLS_LOG) + "\n")
        config = self.config(
            'hash-key = "path"\n[pools.web]\nbackends = ["127.0.0.1:8083=3", "127.0.0.1:8081"]\n'
        )
        code, out = self.replay("--config", config, "-c", "100", path, "swrr")
        self.assertEqual(code, 0)
        self.assertEqual(
            out.splitlines()[3:],
            [
                "",
                "pool web: 10 requests, 2 backends",
                "policy  spread  p50 ms  p99 ms  127.0.0.1:8083  127.0.0.1:8081",
                "swrr      1.07     1.0   200.0           80.0%           20.0%",
            ],
        )
        self.assertEqual(
            self.stderr.getvalue(),
            "txlb-replay: note: the log keeps no weights: every backend of pool api weighs 1"
            " (give them with --config FILE)\n",
        )
        byPath = self.replay("--config", config, "--hash-key", "path", path, "hash")
        self.assertEqual(self.replay("--config", config, path, "hash"), byPath)
        self.assertNotEqual(
            self.replay("--config", config, "--hash-key", "ip", path, "hash"), byPath
        )

    def test_onePoolAsToday(self) -> None:
        """
        A log of one pool, named or not, is replayed as a log without
        pools: one table, no heading; C{--backends} gives its backends.
        """
        path = self.mktemp()
        Path(path).write_text("\n".join(entry(k, pool="api") for k in range(20)) + "\n")
        args = ("-s", "2", "-c", "1", "-b", "127.0.0.1:8081,127.0.0.1:8082")
        self.assertEqual(
            self.replay(*args, path, "roundrobin", "leastconn"),
            self.replay(*args, self.path, "roundrobin", "leastconn"),
        )
        self.assertEqual(self.replay(*args, path, "roundrobin")[1].splitlines()[0][:6], "policy")

    def test_backendsOfOnePool(self) -> None:
        """
        C{--backends} names one pool's backends: with a log of several
        pools, it is refused with one line.
        """
        path = self.mktemp()
        Path(path).write_text("\n".join(POOLS_LOG) + "\n")
        code, out = self.replay("-b", "127.0.0.1:8081", path, "roundrobin")
        self.assertEqual((code, out), (2, ""))
        self.assertEqual(
            self.stderr.getvalue(),
            "txlb-replay: --backends gives the backends of one pool, and the log has 2"
            " (api, web): give each pool's with --config FILE\n",
        )

    def test_poolConfigErrors(self) -> None:
        """
        A pool's backends or hash key that txlb would not take end with
        one line naming the pool.
        """
        table = [
            ("[pools.web]\nbackends = [1]\n", 'pools.web.backends: expected a list of "HOST:PORT'),
            ('[pools.web]\nbackends = ["a:0"]\n', "pools.web.backends: 'a:0': bad port '0'"),
            ('[pools.web]\nhash-key = "body"\n', "pools.web.hash-key: "),
            ("pools = 1\n", "pools: expected tables ([pools.NAME])"),
        ]
        for text, reason in table:
            path = self.config(text)
            code, out = self.replay("--config", path, self.path, "weighted")
            self.assertEqual((code, out), (2, ""), text)
            message = self.stderr.getvalue()
            self.assertTrue(message.startswith(f"txlb-replay: --config {path}: {reason}"), message)
            self.assertEqual(message.count("\n"), 1, message)

    def test_plotPerPool(self) -> None:
        """
        With several pools, C{--plot} draws a row per pool.
        """
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SkipTest("matplotlib (the bench extra) is not installed") from None
        path = self.mktemp()
        Path(path).write_text("\n".join(POOLS_LOG) + "\n")
        png = self.mktemp() + ".png"
        code, _ = self.replay("--plot", png, path, "roundrobin", "p2c")
        self.assertEqual(code, 0)
        data = Path(png).read_bytes()
        self.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual(struct.unpack(">II", data[16:24]), (1100, 800))

"""
C{txlb-replay}: a small generated access log replayed through policies,
with exact numbers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from txlb.replay import Entry, main, readLog

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
        out = io.StringIO()
        code = main([*args], out)
        return code, out.getvalue()

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
        table = [
            ([self.path], "txlb-replay: name at least one policy"),
            ([self.path, "random"], "txlb-replay: unknown algorithm 'random'"),
            (
                [self.path, "tests.policyexamples:Unmakeable"],
                "txlb-replay: 'tests.policyexamples:Unmakeable' raised when made:"
                " RuntimeError: needs a config file",
            ),
            ([bad, "roundrobin"], "txlb-replay: line 1: not a JSON access-log entry ('time')"),
            ([empty, "roundrobin"], f"txlb-replay: {empty}: no request reached a backend"),
            (["nosuchfile", "roundrobin"], "txlb-replay: [Errno 2] No such file or directory"),
            (["-c", "0", self.path, "p2c"], "txlb-replay: --concurrency: must be at least 1"),
            (["-s", "0", self.path, "p2c"], "txlb-replay: --speed: '0' is not a positive number"),
            (["--hash-key", "body", self.path, "hash"], "txlb-replay: --hash-key: "),
        ]
        for args, start in table:
            stderr = io.StringIO()
            self.patch(__import__("sys"), "stderr", stderr)
            code, out = self.replay(*args)
            self.assertEqual((code, out), (2, ""), args)
            message = stderr.getvalue()
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

"""
The access log in a file of its own: batched writes, timestamps, reopening,
and what reaches the main log too.
"""

from __future__ import annotations

import json
import os
import time

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import CONFIG, GET, OK, Harness, ServiceHarness
from txlb import accesslog
from txlb.accesslog import AccessLogFile


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class AccessLogFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000.25)
        self.path = self.mktemp()
        self.log = AccessLogFile(self.path, self.clock)
        self.addCleanup(self.log.close)

    def test_batched(self) -> None:
        """
        Lines wait in memory until the flush interval has passed, then are
        written together, in order.
        """
        self.log.write("one")
        self.log.write("two")
        self.assertEqual(read(self.path), b"")
        self.clock.advance(accesslog.FLUSH_INTERVAL)
        self.assertEqual(read(self.path), b"one\ntwo\n")

    def test_fullBufferWritten(self) -> None:
        """
        Once the buffer holds BUFFER_SIZE bytes, they are written at once.
        """
        line = "x" * 1023
        for _ in range(accesslog.BUFFER_SIZE // 1024):
            self.log.write(line)
        self.assertEqual(len(read(self.path)), accesslog.BUFFER_SIZE)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timestamp(self) -> None:
        """
        The timestamp is the local time in twistd's format, and changes with
        the second.
        """
        self.assertEqual(
            self.log.timestamp(),
            time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(1_800_000_000)),
        )
        self.clock.advance(1)
        self.assertEqual(
            self.log.timestamp(),
            time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(1_800_000_001)),
        )

    def test_reopen(self) -> None:
        """
        After the file is moved away (logrotate), reopening writes what
        waited to the old file and new lines to a new one at the path.
        """
        self.log.write("before")
        os.rename(self.path, self.path + ".1")
        self.log.reopen()
        self.log.write("after")
        self.log.flush()
        self.assertEqual(read(self.path + ".1"), b"before\n")
        self.assertEqual(read(self.path), b"after\n")

    def test_appends(self) -> None:
        """
        An existing file is appended to, not truncated.
        """
        self.log.write("first")
        self.log.close()
        again = AccessLogFile(self.path, self.clock)
        again.write("second")
        again.close()
        self.assertEqual(read(self.path), b"first\nsecond\n")


class ProxyAccessLogFileTests(SynchronousTestCase):
    def harness(self, **settings: object) -> tuple[Harness, str]:
        harness = Harness(self, **settings)
        path = self.mktemp()
        harness.resource.accessLog.file = AccessLogFile(path, harness.reactor)
        self.addCleanup(harness.resource.accessLog.file.close)
        return harness, path

    def test_textLine(self) -> None:
        """
        A request's line goes to the file with the timestamp in front, and
        not to the main log.
        """
        harness, path = self.harness()
        harness.client(b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n")
        backend, _ = harness.backend()
        harness.reactor.advance(0.0013)
        backend.dataReceived(OK)
        harness.resource.accessLog.file.flush()  # type: ignore[union-attr]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(0))
        self.assertEqual(
            read(path).decode(),
            f"{stamp} client=10.0.0.7 method=GET path=/ping \N{RIGHTWARDS ARROW} "
            "backend=127.0.0.1:8081 status=200 ms=1.3\n",
        )
        self.assertEqual(harness.accessLog(), [])

    def test_jsonLine(self) -> None:
        """
        With the JSON format, each line is a plain JSON object, its time
        first.
        """
        harness, path = self.harness(accessLog="json")
        harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        harness.resource.accessLog.file.flush()  # type: ignore[union-attr]
        line = json.loads(read(path))
        self.assertEqual(list(line)[:3], ["time", "client", "method"])
        self.assertEqual((line["status"], line["flag"]), (200, "-"))

    def test_failureInBoth(self) -> None:
        """
        A request that ends in a backend failure is logged in the file and
        in the main log.
        """
        harness, path = self.harness(retries=0)
        harness.client(GET)
        harness.refuse(ConnectionRefusedError())
        harness.resource.accessLog.file.flush()  # type: ignore[union-attr]
        self.assertIn(b"status=502", read(path))
        self.assertEqual(len(harness.accessLog()), 1)
        self.assertIn("status=502", harness.accessLog()[0])


class ServiceAccessLogFileTests(SynchronousTestCase):
    def test_reloadReopens(self) -> None:
        """
        A reload (SIGHUP) reopens the access-log file, so lines after it go
        to a new file at the path.
        """
        path = os.path.abspath(self.mktemp())
        harness = ServiceHarness(self, CONFIG + f'access-log-file = "{path}"\n')
        harness.client(GET)
        backend, _ = harness.backend()
        backend.dataReceived(OK)
        os.rename(path, path + ".1")
        harness.service.reload()
        self.assertIn(b"status=200", read(path + ".1"))
        self.assertTrue(os.path.exists(path))

    def test_cannotOpen(self) -> None:
        """
        A file that cannot be opened stops the start with one line.
        """
        with self.assertRaises(SystemExit) as caught:
            ServiceHarness(self, CONFIG + 'access-log-file = "/nonexistent-txlb-dir/access.log"\n')
        self.assertTrue(str(caught.exception).startswith("txlb: --access-log-file: "))

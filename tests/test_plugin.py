"""
txlb as users start it: the twistd plugin of the installed package.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.helpers import TWISTD, freePort, portsFree, runIn, startTxlb


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """
        Twisted's plugin system finds the C{txlb} service maker.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("txlb", makers)
        self.assertTrue(verifyObject(IServiceMaker, makers["txlb"]))
        self.assertTrue(verifyObject(IPlugin, makers["txlb"]))

    def test_fromInstalledPackage(self) -> None:
        """
        Outside the checkout, twistd lists C{txlb}, and the plugin and the
        package it loads come from the installed package, not the checkout.
        """
        elsewhere = self.mktemp()
        os.mkdir(elsewhere)
        where = runIn(
            elsewhere,
            sys.executable,
            "-c",
            "import twisted.plugins.txlb_plugin as plugin, txlb; print(plugin.__file__); print(txlb.__file__)",
        )
        self.assertEqual(where.returncode, 0, where.stderr)
        for path in where.stdout.split():
            self.assertIn("site-packages", Path(path).parts, f"{path} is not installed")
        listed = runIn(elsewhere, TWISTD, "--help")
        self.assertIn("txlb", listed.stdout.split())

    def test_badOptionOneLine(self) -> None:
        """
        A bad option ends twistd with one line naming it, and no traceback.
        """
        result = runIn(
            ".", TWISTD, "-n", "--pidfile=", "txlb", "--algo", "nope", "--backends", "a:1"
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            (result.stdout + result.stderr).splitlines(),
            [
                "txlb: --algo: unknown algorithm 'nope' (choose from roundrobin, weighted, leastconn, iphash, swrr, p2c, ewma, hash, a name in the txlb.algorithms entry points, or package.module:Name) (see twistd txlb --help)"
            ],
        )

    def test_replayScript(self) -> None:
        """
        The package installs the C{txlb-replay} console script, which ends
        a bad command line with one line.
        """
        script = Path(sys.executable).parent / "txlb-replay"
        result = runIn(".", str(script), "--concurrency", "0", "log.json", "p2c")
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (2, "", "txlb-replay: --concurrency: must be at least 1\n"),
        )


class QuickStartTests(SynchronousTestCase):
    def test_demo(self) -> None:
        """
        The README's C{twistd -n --pidfile= txlb --demo} serves at once, and
        six pings give the seed's weighted 1:3:2 output, each logged; SIGTERM
        stops it cleanly.
        """
        if not portsFree(8080, 8081, 8082, 8083):
            raise self.skipTest("ports 8080-8083 are in use")
        process = startTxlb(self, 8080, "--demo")
        bodies = [
            urllib.request.urlopen("http://127.0.0.1:8080/ping", timeout=5).read().decode()
            for _ in range(6)
        ]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        self.assertEqual(
            "".join(bodies),
            "pong from backend :8081\npong from backend :8082\npong from backend :8082\n"
            "pong from backend :8082\npong from backend :8083\npong from backend :8083\n",
        )
        self.assertEqual(process.returncode, 0)
        self.assertIn("Server Shut Down.", output)
        self.assertIn(
            "client=127.0.0.1 method=GET path=/ping \N{RIGHTWARDS ARROW} backend=127.0.0.1:8081 status=200",
            output,
        )
        self.assertNotIn("Traceback", output)


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """
    A backend that takes a second over C{/slow}.
    """

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.0)
        body = b"done\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class GracefulStopTests(SynchronousTestCase):
    def test_sigtermDrains(self) -> None:
        """
        On SIGTERM txlb stops accepting connections, lets the request in
        flight finish, and exits 0.
        """
        backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        self.addCleanup(backend.server_close)
        self.addCleanup(backend.shutdown)
        port = freePort()
        listen = f"tcp:{port}:interface=127.0.0.1"
        backendAddress = f"127.0.0.1:{backend.server_address[1]}"
        process = startTxlb(self, port, "--listen", listen, "--backends", backendAddress)
        answers: list[bytes] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=10).read()
            )
        )
        slow.start()
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(idle.close)
        idle.sendall(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        answer = b""
        while not answer.endswith(b"done\n"):
            answer += idle.recv(4096)
        time.sleep(0.4)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # The idle kept-alive connection is closed at once.
        self.assertEqual(idle.recv(4096), b"")
        slow.join(10)
        output, _ = process.communicate(timeout=20)
        self.assertEqual(answers, [b"done\n"])
        self.assertEqual(process.returncode, 0, output)
        self.assertIn("Received SIGTERM: stopping gracefully", output)
        self.assertIn("Waiting for 1 requests in flight (at most 30.0 s)", output)


class ReloadSignalTests(SynchronousTestCase):
    def test_sighup(self) -> None:
        """
        SIGHUP makes a running txlb re-read its configuration file: new
        requests go to the backends the file now lists.
        """
        first, second = (
            http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler) for _ in range(2)
        )
        for backend in (first, second):
            threading.Thread(target=backend.serve_forever, daemon=True).start()
            self.addCleanup(backend.server_close)
            self.addCleanup(backend.shutdown)
        port = freePort()
        path = os.path.abspath(self.mktemp())

        def configure(backend: http.server.ThreadingHTTPServer) -> None:
            with open(path, "w", encoding="utf-8") as file:
                file.write(
                    f'listen = "tcp:{port}:interface=127.0.0.1"\n'
                    f'backends = ["127.0.0.1:{backend.server_address[1]}"]\n'
                )

        configure(first)
        process = startTxlb(self, port, "--config", path)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        configure(second)
        process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        self.assertIn(f"Reloaded {path}", output)
        backends = [
            line.split("backend=")[1].split()[0]
            for line in output.splitlines()
            if "client=" in line
        ]
        self.assertEqual(
            backends,
            [f"127.0.0.1:{first.server_address[1]}", f"127.0.0.1:{second.server_address[1]}"],
        )


class LogFileTests(SynchronousTestCase):
    def test_accessLinesInOrder(self) -> None:
        """
        With C{--logfile}, every request's access line reaches twistd's log
        file, in order with twistd's own lines, and nothing is lost at the
        stop: the lines written once per reactor turn are all written.
        """
        backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        self.addCleanup(backend.server_close)
        self.addCleanup(backend.shutdown)
        port = freePort()
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        logPath = os.path.join(directory, "txlb.log")
        process = startTxlb(
            self,
            port,
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--backends",
            f"127.0.0.1:{backend.server_address[1]}",
            directory=directory,
            twistd=("--logfile", logPath),
        )
        connection = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(connection.close)
        # The access line of a request is logged just after its answer goes
        # out, so a signal can come between: the last request is one whose
        # answer says that the line of the one before is logged.
        for n in range(31):
            connection.sendall(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % n)
            answer = b""
            while not answer.endswith(b"done\n"):
                answer += connection.recv(4096)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        self.assertEqual((process.returncode, output), (0, ""))
        with open(logPath, encoding="utf-8") as file:
            lines = file.read().splitlines()
        paths = [line.split(" path=")[1].split()[0] for line in lines if " client=" in line]
        self.assertEqual(paths, [f"/{n}" for n in range(31)])
        access = [n for n, line in enumerate(lines) if " client=" in line]
        stopping = [n for n, line in enumerate(lines) if "Received SIGTERM" in line]
        self.assertEqual(len(stopping), 1)
        self.assertLess(access[-2], stopping[0])
        self.assertTrue(lines[-1].endswith("Server Shut Down."), lines[-3:])
        self.assertTrue(lines[-2].endswith("Main loop terminated."), lines[-3:])
        self.assertNotIn("Traceback", "\n".join(lines))

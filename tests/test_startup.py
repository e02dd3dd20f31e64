"""
Start-up failures as users meet them: C{twistd txlb} run as a real process,
daemonized (twistd's default) and in the foreground (C{-n}), must end at
once with one line on stderr and a non-zero status, never hang.

These start the installed package's C{twistd}: reinstall after a change.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import PKI, freePort

TWISTD = str(Path(sys.executable).parent / "twistd")

#: Seconds a start-up failure may take to be reported: far more than it
#: needs (about one on a loaded machine), so only a hang fails.
HANG = 30.0


def listening() -> socket.socket:
    """
    A socket listening on a loopback port, which txlb then cannot bind.
    """
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    return taken


class StartupFailureTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)

    def twistd(self, daemon: bool, *args: str) -> tuple[int, str, str, float]:
        """
        Run C{twistd [-n] --pidfile=twistd.pid txlb ARGS} from an empty
        folder, as a user would.  A daemon it leaves running is killed, and
        fails the test.

        @return: Its exit status, stdout, stderr and the seconds it took.
        """
        directory = self.directory
        # Nor PYTHONUNBUFFERED, which a user's shell does not set either:
        # without it, PyPy's stderr is not line-buffered.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONUNBUFFERED")}
        command = [TWISTD, *([] if daemon else ["-n"]), "--pidfile=twistd.pid", "txlb", *args]
        started = time.monotonic()
        try:
            result = subprocess.run(
                command,
                cwd=directory,
                env=env,
                capture_output=True,
                text=True,
                timeout=HANG,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.fail(f"{' '.join(command)} hung")
        took = time.monotonic() - started
        pidFile = Path(directory) / "twistd.pid"
        # A daemon that failed after the fork has told its parent, which
        # exits at once, while it still removes its pid file: give it a
        # moment (on a loaded machine it may take some) before calling the
        # file left behind.
        deadline = time.monotonic() + HANG
        while pidFile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if pidFile.exists():
            _kill(int(pidFile.read_text()))
            self.fail(f"{' '.join(command)} left {pidFile} behind")
        return result.returncode, result.stdout, result.stderr, took

    def assertOneLine(self, args: list[str], line: str) -> None:
        """
        Daemonized and in the foreground, C{twistd txlb ARGS} ends with
        status 1 and exactly C{line} on stderr, and nothing on stdout.
        """
        for daemon in (True, False):
            code, out, err, took = self.twistd(daemon, *args)
            mode = "daemonized" if daemon else "with -n"
            self.assertEqual((code, out, err), (1, "", line + "\n"), mode)
            self.assertLess(took, HANG, mode)

    def test_portInUse(self) -> None:
        """
        A C{--listen} port another process holds.
        """
        taken = listening()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        self.assertOneLine(
            ["--backends", "localhost:8081", "--listen", f"tcp:{port}:interface=127.0.0.1"],
            f"txlb: cannot listen: Couldn't listen on 127.0.0.1:{port}:"
            " [Errno 98] Address already in use.",
        )

    def test_adminPortInUse(self) -> None:
        """
        An C{--admin} port another process holds.
        """
        taken = listening()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        self.assertOneLine(
            [
                "--backends",
                "localhost:8081",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--admin",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            f"txlb: cannot listen: Couldn't listen on 127.0.0.1:{port}:"
            " [Errno 98] Address already in use.",
        )

    def test_accessLogFolderMissing(self) -> None:
        """
        An C{--access-log-file} in a folder that does not exist.
        """
        self.assertOneLine(
            [
                "--backends",
                "localhost:8081",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--access-log-file",
                "/nonexistent/dir/a.log",
            ],
            "txlb: --access-log-file: [Errno 2] No such file or directory:"
            " '/nonexistent/dir/a.log'",
        )

    def test_certificateMissing(self) -> None:
        """
        A TLS C{--listen} whose certificate file does not exist.
        """
        self.assertOneLine(
            ["--backends", "localhost:8081", "--listen", "ssl:0:privateKey=nope.pem"],
            "txlb: --listen: 'ssl:0:privateKey=nope.pem': [Errno 2] No such file or"
            f" directory: '{self.directory}/nope.pem' (see twistd txlb --help)",
        )

    def test_workersPortInUse(self) -> None:
        """
        C{--workers} whose C{--listen} port another process holds: the
        supervisor ends, rather than starting workers that cannot serve.
        """
        taken = listening()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        self.assertOneLine(
            [
                "--backends",
                "localhost:8081",
                "--workers",
                "2",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            "txlb: cannot listen: [Errno 98] Address already in use",
        )

    def test_workersAccessLogFolderMissing(self) -> None:
        """
        C{--workers} with an C{--access-log-file} no worker could open: the
        supervisor ends, rather than restarting workers that fail forever.
        """
        self.assertOneLine(
            [
                "--backends",
                "localhost:8081",
                "--workers",
                "2",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--access-log-file",
                "/nonexistent/dir/a.log",
            ],
            "txlb: --access-log-file: [Errno 2] No such file or directory:"
            " '/nonexistent/dir/a.log'",
        )

    def test_unixSocketFolderMissing(self) -> None:
        """
        A UNIX socket C{--listen} in a folder that does not exist.  In the
        foreground, one line; a daemon binds its UNIX sockets after twistd
        forks (see L{DaemonTests.test_unixSocketLock}), so twistd reports
        it, in its own words, but at once and with status 1 (under PyPy
        too, whose stderr twistd's parent leaves without flushing).
        """
        args = ["--backends", "localhost:8081", "--listen", "unix:/nonexistent/txlb.sock"]
        line = "txlb: cannot listen: [Errno 2] No such file or directory: "
        code, out, err, took = self.twistd(False, *args)
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith(line), err)
        self.assertEqual(err.count("\n"), 1, err)
        code, out, err, took = self.twistd(True, *args)
        self.assertEqual((code, out), (1, ""))
        self.assertIn(line, err)
        self.assertLess(took, HANG)


class DaemonTests(SynchronousTestCase):
    def test_unixSocketLock(self) -> None:
        """
        A daemon's UNIX socket lock names the daemon, not the process twistd
        forked it from, and goes with it.
        """
        # A short folder of its own: a UNIX socket's path must fit in 108
        # bytes, which trial's temporary folder under a deep checkout
        # (and with -j) does not.
        directory = Path(tempfile.mkdtemp(prefix="txlb-"))
        self.addCleanup(shutil.rmtree, directory, True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        result = subprocess.run(
            [
                TWISTD,
                "--pidfile=twistd.pid",
                "txlb",
                "--backends",
                "localhost:8081",
                "--listen",
                f"unix:{directory}/txlb.sock",
            ],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG,
            check=False,
        )
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))
        pid = (directory / "twistd.pid").read_text()
        self.addCleanup(_kill, int(pid))
        self.assertEqual(os.readlink(directory / "txlb.sock.lock"), pid)
        # Serving, so its signal handlers are in place.
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(HANG)
            client.connect(str(directory / "txlb.sock"))
            client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            self.assertTrue(client.recv(100).startswith(b"HTTP/1.1 "))
        os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + HANG
        while (directory / "twistd.pid").exists():
            self.assertLess(time.monotonic(), deadline, "the daemon did not stop")
            time.sleep(0.1)
        self.assertFalse(os.path.lexists(directory / "txlb.sock.lock"))

    def test_servesAndStops(self) -> None:
        """
        Daemonized, txlb serves on the ports it bound before twistd forked,
        with TLS in front (answering plain HTTP with a 400 it can read), and
        writes its pid file; SIGTERM stops it and removes the pid file.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        pki = PKI(str(directory))
        certificate, key = pki.leaf("server", ["localhost"])
        port, backendPort = freePort(), freePort()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        backend = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(backendPort)],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.addCleanup(backend.wait)
        self.addCleanup(backend.kill)
        (directory / "hello.txt").write_text("hello\n")
        result = subprocess.run(
            [
                TWISTD,
                "--pidfile=twistd.pid",
                "txlb",
                "--backends",
                f"127.0.0.1:{backendPort}",
                "--listen",
                f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={certificate}",
            ],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG,
            check=False,
        )
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))
        pid = int((directory / "twistd.pid").read_text())
        self.addCleanup(_kill, pid)
        context = ssl.create_default_context(cafile=pki.caPath)
        deadline = time.monotonic() + HANG
        while True:
            try:
                body = urllib.request.urlopen(
                    f"https://localhost:{port}/hello.txt", timeout=5, context=context
                ).read()
                break
            except OSError:
                # The test backend may not listen yet.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.assertEqual(body, b"hello\n")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while chunk := plain.recv(4096):
                answer += chunk
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\nThe plain HTTP request was sent to HTTPS port\n"))
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + HANG
        while (directory / "twistd.pid").exists():
            self.assertLess(time.monotonic(), deadline, "the daemon did not stop")
            time.sleep(0.1)


def _kill(pid: int) -> None:
    """
    Kill the twistd of pid C{pid}, if it is still there.
    """
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"twistd" in command:
        os.kill(pid, signal.SIGKILL)

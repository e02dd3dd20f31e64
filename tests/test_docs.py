"""
What the README and docs/ promise, run as they are written there: the
README's commands, the configuration examples, the TLS certificate
recipes, the systemd units, and C{--version} (the one-line errors they
quote are run by C{tests/test_docmessages.py}).

The commands are read from the documents themselves (named code blocks,
fenced examples), so a document and its test cannot drift apart.
"""

from __future__ import annotations

import http.server
import importlib
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import PKI, TWISTD, freePort, runIn, startTxlb
from txlb import __version__, config, routeconfig, tap

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
REPLAY = str(Path(sys.executable).parent / "txlb-replay")


def fences(path: Path) -> Iterator[tuple[str, str]]:
    """
    The fenced code blocks of a Markdown file: (info string, text).
    """
    text = path.read_text(encoding="utf-8")
    for match in re.finditer(r"^(`{3,})([^\n`]*)\n(.*?)^\1$", text, re.MULTILINE | re.DOTALL):
        yield match.group(2).strip(), match.group(3)


def namedBlock(path: Path, name: str) -> str:
    """
    The text of the MyST code block named C{name} in C{path}
    (C{```{code-block} sh} with C{:name: NAME}), without its options.
    """
    for info, text in fences(path):
        if info.startswith("{code-block}") and f":name: {name}\n" in text:
            return text.split("\n\n", 1)[1]
    raise AssertionError(f"{path.name} has no code block named {name}")


def commands(block: str) -> list[list[str]]:
    """
    The shell commands of a block, continuation lines joined and comments
    dropped, each split into its words.
    """
    joined = block.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and line[0] != "#"]


def markdownFiles() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


class ReadmeTests(SynchronousTestCase):
    def readmeCommands(self) -> list[str]:
        info, block = next(fences(ROOT / "README.md"))
        self.assertEqual(info, "sh")
        return [line.split("    #")[0].strip() for line in block.splitlines()]

    def test_twoCommands(self) -> None:
        """
        The README starts with exactly two commands: one makes a virtual
        environment, installs txlb there and runs C{--demo} as
        C{tests.test_plugin.QuickStartTests} runs it; the other makes the
        same environment and runs tox.
        """
        install, tests = self.readmeCommands()
        self.assertEqual(
            install,
            "python3 -m venv .venv && .venv/bin/pip install . && "
            ".venv/bin/twistd -n --pidfile= txlb --demo",
        )
        self.assertEqual(
            tests, "python3 -m venv .venv && .venv/bin/pip install tox && .venv/bin/tox"
        )

    def test_ciRunsTheTestCommand(self) -> None:
        """
        C{.ci/run}, which CI runs, runs the README's test command as it is
        written there.
        """
        _, tests = self.readmeCommands()
        script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
        self.assertIn(tests, [line.strip() for line in script.splitlines()])

    def test_ciInstallsWhatTheTestsUse(self) -> None:
        """
        C{.ci/run} installs every Debian package the README says the tests
        use, and the venv module the README's commands need.
        """
        script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
        for package in (
            "pypy3",
            "chromium",
            "curl",
            "openssl",
            "dnsmasq-base",
            "etcd-server",
            "etcd-client",
            "python3-venv",
        ):
            self.assertIn(f"missing+=({package})", script)


class ConfigurationExampleTests(SynchronousTestCase):
    def test_examplesParse(self) -> None:
        """
        Every TOML example of the README and the docs, and
        C{txlb.example.toml}, is a configuration file txlb accepts, run from
        a folder holding the C{key.pem} and C{cert.pem} the examples name.
        An example of routes that names pools it does not define (a part
        of a file) is checked with stand-ins for them.
        """
        examples = [
            (path.name, text)
            for path in markdownFiles()
            for info, text in fences(path)
            if info == "toml"
        ]
        code = [text for path in markdownFiles() for info, text in fences(path) if info == "python"]
        examples.append(("txlb.example.toml", (ROOT / "txlb.example.toml").read_text()))
        self.assertGreater(len(examples), 4)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        cert, key = PKI(folder).leaf("site", names=["localhost"])
        os.rename(cert, os.path.join(folder, "cert.pem"))
        os.rename(key, os.path.join(folder, "key.pem"))
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(folder)
        self.addCleanup(sys.path.remove, folder)
        sys.path.insert(0, folder)
        for name, text in examples:
            path = os.path.abspath(f"example-{len(text)}.toml")
            before, after = _standIns(text)
            Path(path).write_text(before + text + after, encoding="utf-8")
            _installRouters(text, code)
            try:
                tap.Options.fromFile(path, [])
            except Exception as e:
                self.fail(f"{name}: {text}\n{e}")

    def test_everyKeyOfTheExampleFile(self) -> None:
        """
        C{txlb.example.toml}, which the reference calls the list of every
        key, names every option a file may hold (commented out or not).
        """
        text = (ROOT / "txlb.example.toml").read_text(encoding="utf-8")
        named = set(re.findall(r"^#? ?([a-z0-9-]+) = ", text, re.MULTILINE))
        options = tap.Options()
        keys = set()
        for spelled in options.longOpt:
            name = spelled.rstrip("=")
            try:
                config.arguments(
                    f'{name} = "x"',
                    {row[0] for row in tap.Options.optParameters},
                    {row[0] for row in tap.Options.optFlags},
                    tap.REPEATABLE,
                )
            except config.ConfigError as e:
                if "unknown setting" in str(e):
                    continue
            keys.add(name)
        self.assertEqual(keys - named, set())

    def test_everyRouteKey(self) -> None:
        """
        The routes' reference names every key a route may have.
        """
        text = (ROOT / "docs" / "routing.md").read_text(encoding="utf-8")
        self.assertEqual(
            [key for key in routeconfig.KEYS if not re.search(rf"`{key}( = [^`]*)?`", text)], []
        )


def _installRouters(text: str, code: list[str]) -> None:
    """
    Write, as a module of the current folder, the example code (of
    C{code}) that defines each router the routes of C{text} name: the
    users' module a part of a file refers to.
    """
    for route in config.tomllib.loads(text).get("routes", []):
        spec = route.get("router")
        if spec is None:
            continue
        module, _, name = spec.partition(":")
        [source] = [block for block in code if re.search(rf"^class {name}\b", block, re.M)]
        parts = module.split(".")
        for depth in range(1, len(parts)):
            package = Path(*parts[:depth])
            package.mkdir(exist_ok=True)
            (package / "__init__.py").touch()
        Path(*parts[:-1], f"{parts[-1]}.py").write_text(source, encoding="utf-8")
        importlib.invalidate_caches()


def _standIns(text: str) -> tuple[str, str]:
    """
    What makes C{text}, a part of a file, a whole one: backends for it
    when it has none at all (to put before it), and pools for the pool
    names its routes use but it does not define (after it).
    """
    document = config.tomllib.loads(text)
    defined = set(document.get("pools", {}))
    used: set[str] = set()
    for route in document.get("routes", []):
        used |= {route[key] for key in ("pool", "mirror") if key in route}
        used |= set(route.get("split", {}))
    missing = sorted(used - defined - {"default"})
    after = "".join(f'\n[pools.{name}]\nbackends = ["127.0.0.1:9"]\n' for name in missing)
    hasDefault = "backends" in document or "backends-dns" in document
    if hasDefault or defined or missing or "default" in used:
        before = "" if hasDefault or "default" not in used else 'backends = ["127.0.0.1:9"]\n'
    else:
        before = 'backends = ["127.0.0.1:9"]\n'
    return before, after


class Backend(http.server.BaseHTTPRequestHandler):
    """
    Answers C{pong}, and over TLS the common name of the client
    certificate it was shown.
    """

    def do_GET(self) -> None:
        body = b"pong\n"
        if isinstance(self.connection, ssl.SSLSocket):
            subject = dict(part[0] for part in self.connection.getpeercert()["subject"])
            body = f"pong to {subject['commonName']}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(testCase: SynchronousTestCase, context: ssl.SSLContext | None = None) -> int:
    """
    Start a L{Backend} on a free loopback port, over TLS with C{context};
    return the port.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    testCase.addCleanup(server.server_close)
    testCase.addCleanup(server.shutdown)
    return server.server_address[1]


class TLSRecipeTests(SynchronousTestCase):
    """
    docs/tls.md's certificate recipes, run as written, then txlb started as
    the page starts it, with the files they made.
    """

    def setUp(self) -> None:
        if shutil.which("openssl") is None:
            raise self.skipTest("openssl is not installed (apt-get install openssl)")
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)

    def runRecipe(self, name: str) -> None:
        recipe = namedBlock(DOCS / "tls.md", name)
        result = subprocess.run(
            ["sh", "-e", "-c", recipe],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)

    def startAsDocumented(self, name: str, backend: str) -> tuple[int, list[str]]:
        """
        Start the C{twistd} command of block C{name} on a free loopback
        port, with C{backend} as its backends; return the port and the
        block's other commands, on that port.
        """
        twistd, *clients = commands(namedBlock(DOCS / "tls.md", name))
        self.assertEqual(twistd[:4], ["twistd", "-n", "--pidfile=", "txlb"])
        port = freePort()
        arguments = []
        for word, value in zip(twistd[4::2], twistd[5::2]):
            if word == "--listen":
                self.assertTrue(value.startswith("ssl:8443:"), value)
                value = value.replace("ssl:8443:", f"ssl:{port}:interface=127.0.0.1:")
            elif word == "--backends":
                value = backend
            arguments += [word, value]
        startTxlb(self, port, *arguments, directory=self.directory)
        return port, [
            [word.replace(":8443/", f":{port}/") for word in client] for client in clients
        ]

    def fetch(self, port: int, cafile: str) -> bytes:
        context = ssl.create_default_context(cafile=os.path.join(self.directory, cafile))
        return urllib.request.urlopen(
            f"https://localhost:{port}/ping", context=context, timeout=10
        ).read()

    def curl(self, client: list[str]) -> bytes:
        self.assertEqual(client[:2], ["curl", "--cacert"])
        return subprocess.run(
            client, cwd=self.directory, capture_output=True, timeout=30, check=True
        ).stdout

    def test_selfSigned(self) -> None:
        """
        The self-signed recipe makes C{key.pem} and C{cert.pem}; txlb
        listens with them, and a client that trusts C{cert.pem} gets the
        backend's answer through it over TLS, for the name C{localhost}.
        """
        self.runRecipe("recipe-self-signed")
        backend = serve(self)
        port, _ = self.startAsDocumented("run-self-signed", f"127.0.0.1:{backend}")
        self.assertEqual(self.fetch(port, "cert.pem"), b"pong\n")

    def test_certificateAuthority(self) -> None:
        """
        The CA recipe makes a CA, a server certificate and a client
        certificate. txlb listens with the server certificate, and reaches
        an C{https://} backend that serves a certificate of the same CA and
        requires a client certificate of it: the backend sees txlb's, and a
        client that trusts C{ca.pem} gets the answer (with the docs' curl
        command too, when curl is installed).
        """
        self.runRecipe("recipe-ca")
        backendContext = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        backendContext.load_cert_chain(
            os.path.join(self.directory, "server.pem"),
            os.path.join(self.directory, "server-key.pem"),
        )
        backendContext.verify_mode = ssl.CERT_REQUIRED
        backendContext.load_verify_locations(os.path.join(self.directory, "ca.pem"))
        backend = serve(self, backendContext)
        port, clients = self.startAsDocumented("run-ca", f"https://localhost:{backend}")
        self.assertEqual(self.fetch(port, "ca.pem"), b"pong to txlb\n")
        if shutil.which("curl") is not None:
            [client] = clients
            self.assertEqual(self.curl(client), b"pong to txlb\n")

    def test_untrustedRefused(self) -> None:
        """
        The CA recipe's server certificate is not trusted by a client that
        trusts only the self-signed one: the check above can fail.
        """
        self.runRecipe("recipe-self-signed")
        self.runRecipe("recipe-ca")
        port, _ = self.startAsDocumented("run-ca", f"https://localhost:{freePort()}")
        with self.assertRaises(urllib.error.URLError) as caught:
            self.fetch(port, "cert.pem")
        self.assertIsInstance(caught.exception.reason, ssl.SSLCertVerificationError)


class SystemdTests(SynchronousTestCase):
    """
    docs/deploying.md's systemd units.
    """

    def units(self) -> tuple[str, str]:
        path = DOCS / "deploying.md"
        return namedBlock(path, "unit-socket"), namedBlock(path, "unit-service")

    def execStart(self) -> list[str]:
        [line] = [line for line in self.units()[1].splitlines() if line.startswith("ExecStart=")]
        return shlex.split(line.removeprefix("ExecStart="))

    def test_unitsVerify(self) -> None:
        """
        C{systemd-analyze verify} accepts both units (with this
        environment's twistd as the program).
        """
        if shutil.which("systemd-analyze") is None:
            raise self.skipTest("systemd-analyze is not installed")
        directory = self.mktemp()
        os.mkdir(directory)
        socketUnit, serviceUnit = self.units()
        Path(directory, "txlb.socket").write_text(socketUnit)
        program = self.execStart()[0]
        Path(directory, "txlb.service").write_text(serviceUnit.replace(program, TWISTD))
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", "txlb.socket", "txlb.service"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        # Problems are reported with the unit file's path.
        problems = [line for line in result.stderr.splitlines() if "txlb." in line]
        self.assertEqual((result.returncode, problems), (0, []), result.stderr)

    def test_socketActivation(self) -> None:
        """
        txlb started with the service's C{ExecStart} arguments, as systemd
        starts it for the socket unit (the socket on file descriptor 3,
        named by C{LISTEN_FDNAMES}, with C{LISTEN_FDS} and C{LISTEN_PID}),
        serves on that socket.
        """
        socketUnit, _ = self.units()
        [name] = re.findall(r"^FileDescriptorName=(\S+)$", socketUnit, re.MULTILINE)
        arguments = self.execStart()
        self.assertEqual(arguments[1:4], ["-n", "--pidfile=", "txlb"])
        self.assertIn(f"systemd:domain=INET6:name={name}", arguments)
        try:
            listening = socket.socket(socket.AF_INET6)
            listening.bind(("::1", 0))
        except OSError:
            raise self.skipTest("no IPv6 loopback") from None
        self.addCleanup(listening.close)
        listening.listen(16)
        port = listening.getsockname()[1]
        backend = serve(self)
        path = os.path.abspath(self.mktemp())
        Path(path).write_text(f'backends = ["127.0.0.1:{backend}"]\n')
        arguments = [path if word == "/etc/txlb/txlb.toml" else word for word in arguments]
        # What systemd does between fork and exec: the socket on 3, and
        # LISTEN_PID naming the process that will run twistd.
        adopt = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[2], sys.argv[2:])"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", adopt, str(listening.fileno()), TWISTD, *arguments[1:]],
            env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": name},
            pass_fds=[listening.fileno()],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(process.kill)
        try:
            answer = urllib.request.urlopen(f"http://[::1]:{port}/", timeout=20).read()
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=20)
        self.assertEqual(answer, b"pong\n", output)
        self.assertIn(f"txlb listening on systemd:domain=INET6:name={name}", output)


class VersionTests(SynchronousTestCase):
    def test_twistd(self) -> None:
        """
        C{twistd txlb --version} prints txlb's version, then Twisted's and
        Python's, on one line, and exits 0.
        """
        result = runIn(".", TWISTD, "txlb", "--version")
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertRegex(
            result.stdout, rf"^txlb {re.escape(__version__)} \(Twisted [0-9.]+\w*, \w+ [0-9.]+\)\n$"
        )

    def test_replay(self) -> None:
        """
        C{txlb-replay --version} prints the same line.
        """
        result = runIn(".", REPLAY, "--version")
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertTrue(result.stdout.startswith(f"txlb {__version__} (Twisted "), result.stdout)

    def test_installedMetadata(self) -> None:
        """
        The installed package's metadata has the version of
        C{txlb/__init__.py}, which setup.py reads.
        """
        from importlib.metadata import version

        self.assertEqual(version("txlb"), __version__)

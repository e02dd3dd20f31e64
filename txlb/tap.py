"""
The C{twistd txlb} command: its options, and C{makeService}, which builds
the balancer (L{txlb.service.LoadBalancerService}) they describe.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from txlb import config, dns, tls, versionLine
from txlb.admission import DEFAULT_MAX_QUEUE, DEFAULT_QUEUE_TIMEOUT, parseMaxConn
from txlb.algorithms import ALGORITHMS, algorithmNamed
from txlb.algorithms.keyhash import DEFAULT_BALANCE_FACTOR, parseKey
from txlb.algorithms.policyloader import MakeAlgorithm, makeChecked
from txlb.backend import Backend, BackendPool, parseBackends
from txlb.client import BackendClient
from txlb.clientlimits import ClientLimits
from txlb.http1 import isToken
from txlb.keytables import Region
from txlb.proxy import LoadBalancerResource
from txlb.ratelimit import DEFAULT_KEYS, Rate, parseRate, parseRateKey
from txlb.retrybudget import DEFAULT_PERCENT, parsePercent
from txlb.server import LoadBalancerSite
from txlb.service import LoadBalancerService, StartupError
from txlb.settings import ProxySettings
from txlb.sticky import StickyCookie
from txlb.testbackend import makeBackendService
from txlb.workers.supervisor import Supervisor, parseListen
from txlb.workers.worker import (
    ADMIN_FD,
    KEYTABLES_FD,
    LISTEN_FD,
    ParentWatch,
    adoptedEndpoint,
    workerCount,
    workerIndex,
)

#: The backends C{--demo} starts: the seed's three, weighted 1:3:2.
DEMO_BACKENDS = "127.0.0.1:8081=1,127.0.0.1:8082=3,127.0.0.1:8083=2"


def backendList(specs: str) -> list[Backend]:
    """
    Parse C{--backends} (see L{parseBackends}).
    """
    try:
        return parseBackends(specs)
    except ValueError as e:
        raise usage.UsageError(f"--backends: {e}") from None


#: Options that may be given several times, each adding to a list.
REPEATABLE = frozenset({"backends-dns", "dns-server"})


def algorithmName(option: str) -> Callable[[str], str]:
    """
    A coerce function for an option naming an algorithm: one of
    L{ALGORITHMS}, a name in the C{txlb.algorithms} entry points, or
    C{package.module:Name}.  Whether it names a working algorithm is
    checked once the backends are known (L{Options.checkedAlgorithm}).
    """

    def parse(text: str) -> str:
        if not text.strip() or text != text.strip():
            raise usage.UsageError(f"--{option}: {text!r} is not an algorithm name")
        return text

    return parse


def seconds(option: str, zero: bool = False) -> Callable[[str], float]:
    """
    A coerce function for an option taking a positive number of seconds
    (or 0 too, if C{zero}).
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1
        if not (0 <= value if zero else 0 < value) or value == float("inf"):
            kind = "number of seconds (0 for off)" if zero else "positive number of seconds"
            raise usage.UsageError(f"{option}: {text!r} is not a {kind}")
        return value

    return parse


def parseHashKey(text: str) -> str:
    try:
        parseKey(text)
    except ValueError as e:
        raise usage.UsageError(f"--hash-key: {e}") from None
    return text


def parseBalanceFactor(text: str) -> float:
    """
    Parse C{--hash-balance-factor}: 0 (no bound), or a number of at least 1.
    """
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not (value == 0 or 1 <= value < float("inf")):
        raise usage.UsageError(
            f"--hash-balance-factor: {text!r} is not 0 (off) or a number of at least 1"
        )
    return value


def rateLimit(text: str) -> Rate:
    try:
        return parseRate(text)
    except ValueError as e:
        raise usage.UsageError(f"--rate-limit: {e}") from None


def rateLimitKey(text: str) -> str:
    try:
        return parseRateKey(text)
    except ValueError as e:
        raise usage.UsageError(f"--rate-limit-key: {e}") from None


def maxConn(text: str) -> int | str:
    """
    C{--max-conn}: a whole number (0: no limit) or C{auto}.
    """
    try:
        return parseMaxConn(text)
    except ValueError as e:
        raise usage.UsageError(f"--max-conn: {e}") from None


def retryBudget(text: str) -> float:
    """
    C{--retry-budget}: a percentage from 0 to 100.
    """
    try:
        return parsePercent(text)
    except ValueError as e:
        raise usage.UsageError(f"--retry-budget: {e}") from None


def parseHeaderName(text: str) -> str:
    if not isToken(text.encode("ascii", "replace")):
        raise usage.UsageError(f"--load-header: {text!r} is not a header name")
    return text


def parseCookieName(text: str) -> str:
    if not isToken(text.encode("ascii", "replace")):
        raise usage.UsageError(f"--sticky-cookie: {text!r} is not a cookie name")
    return text


def count(option: str, minimum: int) -> Callable[[str], int]:
    """
    A coerce function for an option taking a whole number of at least
    C{minimum}.
    """

    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise usage.UsageError(
                f"{option}: {text!r} is not a whole number of at least {minimum}"
            )
        return int(text)

    return parse


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parseSize(text: str) -> int:
    """
    Parse C{--max-body-size}: bytes, or with a K, M or G suffix (powers of
    1024).
    """
    digits, unit = text[:-1], text[-1:].lower()
    if unit not in _UNITS:
        digits, unit = text, ""
    if not digits.isdigit() or int(digits) < 1:
        raise usage.UsageError(f"--max-body-size: {text!r} is not a size like 1048576 or 10M")
    return int(digits) * _UNITS[unit]


def parseLogFormat(text: str) -> str:
    if text not in ("text", "json"):
        raise usage.UsageError(f"--access-log: {text!r} is not text or json")
    return text


def loopbackOnly(description: str) -> bool:
    """
    Whether an endpoint description listens on loopback (or a UNIX
    socket) only; anything this cannot tell counts as not.
    """
    kind, _, rest = description.partition(":")
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for argument in re.split(r"(?<!\\):", rest):  # colons escaped as \: are in values
        name, equals, value = argument.partition("=")
        if equals and name == "interface":
            value = value.replace("\\", "")
            if value == "localhost":
                return True
            try:
                return ipaddress.ip_address(value).is_loopback
            except ValueError:
                return False
    return False


def endpointHint(description: str) -> str:
    """
    For a listening address given as a port or C{HOST:PORT} (as other
    servers take it), a hint naming the endpoint description meant; else
    nothing.
    """
    host, colon, port = description.rpartition(":")
    if not port.isdigit():
        return ""
    if not colon:
        return f": did you mean tcp:{port}?"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return ""
    return f": did you mean tcp:{port}:interface={address}?"


def pidLocked(description: str) -> bool:
    """
    Whether an endpoint description is a UNIX socket with a lock file
    (Twisted's default, unless C{lockfile=0}), which records the process id
    of the process that binds it: a daemon must bind it itself, after
    twistd forks, or the lock would name a process that is gone.
    """
    kind, _, rest = description.partition(":")
    if kind != "unix":
        return False
    for argument in re.split(r"(?<!\\):", rest):  # colons escaped as \: are in values
        name, equals, value = argument.partition("=")
        if equals and name == "lockfile":
            return value != "0"
    return True


def countCPUList(text: str) -> int:
    """
    The number of CPUs in a Linux CPU list such as C{0-3,8,10-11}.
    """
    count = 0
    for part in text.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def usableCPUs() -> int:
    """
    The number of CPUs this process may run on (its affinity mask, which
    C{taskset} and container CPU sets narrow), what C{--workers auto} starts.
    PyPy 3.9 has no C{os.sched_getaffinity}: there, Linux's
    C{/proc/self/status} tells, and elsewhere the CPU count.
    """
    getAffinity = getattr(os, "sched_getaffinity", None)
    if getAffinity is not None:
        return len(getAffinity(0))
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Cpus_allowed_list:"):
                    return countCPUList(line.split(":", 1)[1].strip())
    except OSError:
        pass
    return os.cpu_count() or 1


def parseWorkers(text: str) -> int:
    """
    Parse C{--workers}: a whole number of at least 1, or C{auto}.
    """
    if text == "auto":
        return usableCPUs()
    if not text.isdigit() or int(text) < 1:
        raise usage.UsageError(f"--workers: {text!r} is not auto or a whole number of at least 1")
    return int(text)


def parsePath(text: str) -> str:
    if not text.startswith("/") or any(c <= " " or c > "~" for c in text):
        raise usage.UsageError(f"--health-path: {text!r} is not a path like /health")
    return text


class Options(usage.Options):
    synopsis = "[--listen DESCRIPTION] (--backends LIST | --demo) [--algo NAME] [options]"
    longdesc = (
        "A transparent HTTP load balancer: every request is forwarded as the "
        "client sent it to a backend picked by the algorithm, and the answer "
        "comes back as the backend sent it."
    )

    optParameters = [
        ["listen", "l", "tcp:8080", "Endpoint description to listen on."],
        [
            "backends",
            "b",
            None,
            "Comma-separated [http://|https://]HOST:PORT[=WEIGHT[/MAXCONN]] (weight default 1; "
            "MAXCONN: the backend's own --max-conn).",
            backendList,
        ],
        [
            "algo",
            "a",
            None,
            f"Algorithm: {', '.join(ALGORITHMS)}, a name installed packages offer, "
            "or package.module:Name (default roundrobin).",
            algorithmName("algo"),
        ],
        [
            "shadow-algo",
            None,
            None,
            "An algorithm (as --algo) asked beside the live one on every request, "
            "never routing: /status and /metrics count its choices.",
            algorithmName("shadow-algo"),
        ],
        # Health.
        ["health-path", None, None, "Path of active health checks (off if absent).", parsePath],
        ["health-interval", None, 5.0, "Seconds between checks.", seconds("--health-interval")],
        ["health-timeout", None, 2.0, "Seconds a check may take.", seconds("--health-timeout")],
        ["health-rise", None, 2, "Passed checks in a row to be up.", count("--health-rise", 1)],
        ["health-fall", None, 3, "Failed checks in a row to be down.", count("--health-fall", 1)],
        [
            "max-fails",
            None,
            3,
            "Failures in a row on real traffic that take a backend out.",
            count("--max-fails", 1),
        ],
        [
            "fail-timeout",
            None,
            10.0,
            "Seconds a backend stays out after --max-fails failures.",
            seconds("--fail-timeout"),
        ],
        # Retries and timeouts.
        ["retries", None, 2, "Other backends to try for one request.", count("--retries", 0)],
        [
            "retry-budget",
            None,
            DEFAULT_PERCENT,
            "Retries in flight, in percent of the requests in flight (at least 3 are always "
            "allowed); retries over it are not made.",
            retryBudget,
        ],
        [
            "connect-timeout",
            None,
            5.0,
            "Seconds to wait for a connection to a backend.",
            seconds("--connect-timeout"),
        ],
        [
            "response-timeout",
            None,
            30.0,
            "Seconds to wait for a backend's response head.",
            seconds("--response-timeout"),
        ],
        [
            "idle-timeout",
            None,
            60.0,
            "Seconds without a byte either way mid-body.",
            seconds("--idle-timeout"),
        ],
        [
            "client-timeout",
            None,
            30.0,
            "Seconds a client may take to send a request head, or stay idle.",
            seconds("--client-timeout"),
        ],
        [
            "drain-timeout",
            None,
            30.0,
            "Seconds requests in flight may take to finish on SIGTERM/SIGINT.",
            seconds("--drain-timeout"),
        ],
        ["max-body-size", None, None, "Largest request body (e.g. 10M); 413 above.", parseSize],
        # Client limits.
        [
            "rate-limit",
            None,
            None,
            "Requests per client key, as 100/s, 6000/min or 1000/h; 429 with Retry-After "
            "above (off if absent).",
            rateLimit,
        ],
        [
            "rate-limit-burst",
            None,
            None,
            "Requests a key may send at once (default: one second's worth of --rate-limit).",
            count("--rate-limit-burst", 1),
        ],
        [
            "rate-limit-key",
            None,
            "ip",
            "What --rate-limit counts by: ip, header:NAME or cookie:NAME.",
            rateLimitKey,
        ],
        [
            "rate-limit-keys",
            None,
            DEFAULT_KEYS,
            "Keys the rate limit remembers at most (24 bytes each), and client addresses "
            "--max-client-conns counts; the least recently used are forgotten.",
            count("--rate-limit-keys", 1),
        ],
        [
            "max-client-conns",
            None,
            0,
            "Connections one client address may have open; more are closed at once (0: no limit).",
            count("--max-client-conns", 0),
        ],
        # Backend limits and the queue.
        [
            "max-conn",
            None,
            0,
            "Requests in flight a backend may have (0: no limit), or auto to learn each "
            "backend's from its latency; the others wait in the queue.",
            maxConn,
        ],
        [
            "max-queue",
            None,
            DEFAULT_MAX_QUEUE,
            "Requests that may wait for a backend below its limit; more get 503 (flag QF).",
            count("--max-queue", 0),
        ],
        [
            "queue-timeout",
            None,
            DEFAULT_QUEUE_TIMEOUT,
            "Seconds a request may wait in the queue; then 503 (flag QT).",
            seconds("--queue-timeout"),
        ],
        # Algorithms.
        [
            "hash-key",
            None,
            "ip",
            "What --algo hash hashes: ip, path, uri, header:NAME, cookie:NAME or query:NAME.",
            parseHashKey,
        ],
        [
            "hash-balance-factor",
            None,
            DEFAULT_BALANCE_FACTOR,
            "--algo hash: most requests in flight on a backend, times the mean (0: no bound).",
            parseBalanceFactor,
        ],
        [
            "slow-start",
            None,
            0.0,
            "Seconds over which a backend added or back up ramps to its full share (0: off).",
            seconds("--slow-start", zero=True),
        ],
        [
            "load-header",
            None,
            "X-Txlb-Load",
            "Response header backends report their load in (p2c and ewma use it; "
            "clients never see it).",
            parseHeaderName,
        ],
        [
            "sticky-cookie",
            None,
            None,
            "Insert a cookie of this name naming the backend, and route requests "
            "carrying it there while it is up (off if absent).",
            parseCookieName,
        ],
        # Operations.
        ["config", "c", None, "TOML file of these options; SIGHUP reloads it."],
        [
            "access-log",
            None,
            "text",
            "Access log format: text (one line) or json (one object).",
            parseLogFormat,
        ],
        [
            "access-log-file",
            None,
            None,
            "Write the access log to this file, in batches, instead of the main log "
            "(failures go to both); SIGHUP reopens it.",
        ],
        # TLS to https:// backends.
        ["backend-ca", None, None, "PEM file of the CAs to trust for https:// backends."],
        ["backend-cert", None, None, "PEM client certificate for https:// backends."],
        ["backend-key", None, None, "PEM private key of --backend-cert."],
        ["backend-sni", None, None, "Server name to send and verify (default: the host)."],
        # Backends from DNS (see opt_backends_dns and opt_dns_server).
        [
            "dns-min-ttl",
            None,
            5.0,
            "Seconds a DNS answer is used at least, whatever its TTL (and the retry delay).",
            seconds("--dns-min-ttl"),
        ],
        [
            "dns-max-ttl",
            None,
            60.0,
            "Seconds a DNS answer is used at most, whatever its TTL.",
            seconds("--dns-max-ttl"),
        ],
        ["admin", None, None, "Endpoint of the admin API and status page (off if absent)."],
        ["admin-token", None, None, "Bearer token the admin API's changes need."],
        [
            "workers",
            "w",
            1,
            "Worker processes serving --listen: a number, or auto for one per usable CPU.",
            parseWorkers,
        ],
    ]
    optFlags = [
        [
            "demo",
            None,
            "Also serve three test backends on 127.0.0.1:8081-8083 and "
            "balance over them (weights 1:3:2, weighted algorithm unless "
            "--algo says otherwise).",
        ],
        [
            "retry-non-idempotent",
            None,
            "Also retry POST and PATCH requests that reached a failing backend.",
        ],
        [
            "forwarded-for",
            None,
            "Append the client to X-Forwarded-For; set X-Forwarded-Proto and -Host.",
        ],
        ["forwarded", None, "Append an RFC 7239 Forwarded element."],
        ["via", None, "Append this hop to Via."],
        [
            "backend-insecure",
            None,
            "Do not verify https:// backends' certificates (logged loudly).",
        ],
        ["no-http2", None, "Offer only HTTP/1.1 in ALPN on a TLS --listen (h2 is offered first)."],
        ["h2c", None, "Also take HTTP/2 with prior knowledge on a cleartext --listen."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["backends-dns"] = []
        self["dns-server"] = []
        # An opt_ method's docstring is its help, indentation and line ends
        # included: make it one line, as the others are.
        self.docs = {name: doc and " ".join(doc.split()) for name, doc in self.docs.items()}

    def opt_version(self) -> None:
        """
        Display txlb's version (and Twisted's and Python's) and exit.
        """
        print(versionLine())
        sys.exit(0)

    def opt_backends_dns(self, text: str) -> None:
        """
        Backends from DNS: _service._proto.NAME (SRV records) or NAME:PORT (A
        and AAAA records). Repeatable.
        """
        try:
            self["backends-dns"].append(dns.parseDNSName(text))
        except ValueError as e:
            raise usage.UsageError(f"--backends-dns: {e}") from None

    def opt_dns_server(self, text: str) -> None:
        """
        DNS server to ask, IP[:PORT] (default: those of /etc/resolv.conf).
        Repeatable.
        """
        try:
            self["dns-server"].append(dns.parseServer(text))
        except ValueError as e:
            raise usage.UsageError(f"--dns-server: {e}") from None

    #: The command line given, which overrides the configuration file.
    commandLine: list[str] = []
    _fromFile = False

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse as usual, but end a bad command line with one line naming what
        is wrong, not twistd's whole usage text.
        """
        self.commandLine = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            message = str(e)
            unknown = re.fullmatch(r"option --(\S+) not recognized", message)
            if unknown is not None:
                longNames = (name.rstrip("=") for name in self.longOpt)
                message += config.didYouMean(unknown.group(1), longNames, "--")
            raise SystemExit(f"txlb: {message} (see twistd txlb --help)") from None

    @classmethod
    def fromFile(cls, path: str, commandLine: list[str]) -> Options:
        """
        The options of the configuration file at C{path}, overridden by
        C{commandLine}, checked as a command line is.

        @raise usage.UsageError: With one line saying what is wrong.
        """
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
            parameters = {row[0] for row in cast(list[list[str]], cls.optParameters)}
            flags = {row[0] for row in cast(list[list[str]], cls.optFlags)}
            fileArguments = config.arguments(text, parameters, flags, REPEATABLE)
        except (OSError, UnicodeDecodeError, config.ConfigError) as e:
            raise usage.UsageError(f"--config {path}: {e}") from None
        options = cls()
        options._fromFile = True
        options.commandLine = commandLine
        usage.Options.parseOptions(options, fileArguments + commandLine)
        return options

    def postOptions(self) -> None:
        if self["config"] is not None and not self._fromFile:
            self.update(self.fromFile(self["config"], self.commandLine))
            return
        if self["demo"]:
            if self["backends"] is not None:
                raise usage.UsageError("--demo starts its own backends: drop --backends")
            self["backends"] = parseBackends(DEMO_BACKENDS)
            self["algo"] = self["algo"] or "weighted"
        if self["backends"] is None and not self["backends-dns"]:
            raise usage.UsageError(
                "no backends: give --backends HOST:PORT[,...], --backends-dns NAME or --demo"
            )
        self["backends"] = self["backends"] or []
        if self["dns-min-ttl"] > self["dns-max-ttl"]:
            raise usage.UsageError("--dns-min-ttl must not be above --dns-max-ttl")
        self["algo"] = self["algo"] or "roundrobin"
        try:
            self["backend-tls"] = tls.fromOptions(
                self["backend-ca"],
                self["backend-cert"],
                self["backend-key"],
                self["backend-sni"],
                self["backend-insecure"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        for option in ("algo", "shadow-algo"):
            if self[option] is not None:
                self.checkedAlgorithm(option, self[option], self["backends"])
        from twisted.internet import reactor

        for option in ("listen", "admin"):
            if self[option] is None:
                continue
            try:
                serverFromString(reactor, self[option])
            except Exception as e:
                hint = endpointHint(self[option])
                raise usage.UsageError(f"--{option}: {self[option]!r}: {e}{hint}") from None
        if self["rate-limit-burst"] is not None and self["rate-limit"] is None:
            raise usage.UsageError("--rate-limit-burst needs --rate-limit")
        if self["max-client-conns"] and self["listen"].startswith("haproxy:"):
            # The PROXY header names the client after the connection is
            # made, when it would already be counted against the proxy.
            raise usage.UsageError(
                "--max-client-conns does not work with the PROXY protocol (haproxy: --listen) yet"
            )
        if self["workers"] > 1:
            if self["demo"]:
                raise usage.UsageError("--demo runs its backends in one process: drop --workers")
            try:
                parseListen(self["listen"])
            except ValueError as e:
                raise usage.UsageError(f"--workers: --listen {self['listen']!r}: {e}") from None
        if (
            self["admin"] is not None
            and not self["admin-token"]
            and not loopbackOnly(self["admin"])
        ):
            raise usage.UsageError(
                f"--admin: {self['admin']!r} is not loopback-only: give --admin-token, "
                "or listen on 127.0.0.1 (e.g. tcp:9000:interface=127.0.0.1)"
            )

    def clientLimits(self, region: Region, worker: int, clock: Any) -> ClientLimits:
        """
        The client limits these options ask for, counted in C{region}.
        """
        limits = ClientLimits(region, worker, clock)
        self.configureLimits(limits)
        return limits

    def configureLimits(self, limits: ClientLimits) -> None:
        """
        Set C{limits} as these options say (at start and on a reload).
        """
        limits.configure(
            self["rate-limit"],
            self["rate-limit-burst"],
            self["rate-limit-key"],
            self["max-client-conns"],
        )

    def settings(self) -> ProxySettings:
        """
        The proxy's settings from these options.
        """
        return ProxySettings(
            connectTimeout=self["connect-timeout"],
            responseTimeout=self["response-timeout"],
            idleTimeout=self["idle-timeout"],
            clientTimeout=self["client-timeout"],
            retries=self["retries"],
            retryNonIdempotent=self["retry-non-idempotent"],
            maxBodySize=self["max-body-size"],
            forwardedFor=self["forwarded-for"],
            forwarded=self["forwarded"],
            via=self["via"],
            accessLog=self["access-log"],
            loadHeader=self["load-header"],
            maxConn=self["max-conn"],
            maxQueue=self["max-queue"],
            queueTimeout=self["queue-timeout"],
            retryBudget=self["retry-budget"],
        )

    def algorithm(self) -> MakeAlgorithm:
        """
        What makes the algorithm C{--algo} names, with its options, from
        the backends.
        """
        return self.algorithmNamed(self["algo"])

    def shadow(self) -> MakeAlgorithm | None:
        """
        What makes the algorithm C{--shadow-algo} names, if it names one.
        """
        spec = self["shadow-algo"]
        return None if spec is None else self.algorithmNamed(spec)

    def sticky(self, clock: Any) -> StickyCookie | None:
        """
        The sticky cookie C{--sticky-cookie} asks for, if any.
        """
        name = self["sticky-cookie"]
        return None if name is None else StickyCookie(name, clock)

    def algorithmNamed(self, spec: str) -> MakeAlgorithm:
        """
        What makes the algorithm C{spec} names, with these options.

        @raise ValueError: With one line, if C{spec} names none.
        """
        return algorithmNamed(spec, self["hash-key"], self["hash-balance-factor"])

    def checkedAlgorithm(
        self, option: str, spec: str, backends: Sequence[Backend]
    ) -> MakeAlgorithm:
        """
        What makes the algorithm C{spec} names, after checking that it makes
        an L{IAlgorithm} provider from C{backends}.

        @raise usage.UsageError: With one line naming C{--option} and what
            is wrong.
        """
        try:
            make = self.algorithmNamed(spec)
            makeChecked(make, backends, spec)
        except ValueError as e:
            raise usage.UsageError(f"--{option}: {e}") from None
        return make


def makeService(config: Options, reactor: Any = None) -> IService:
    """
    The balancer described by C{config}, with the demo backends if asked,
    its ports bound and its access log open.

    twistd calls this before it daemonizes and before its log takes over
    the standard streams, so a failure to bind or open ends here with one
    line on stderr and status 1, daemonized or not.  A daemon listening on
    a UNIX socket with a lock file (L{pidLocked}) is the exception: it binds
    everything when twistd starts the service, after forking, and twistd
    reports a failure then through its start-up pipe, in its own words.
    """
    service = _build(config, reactor)
    parent = config.parent
    daemonizing = parent is not None and not (parent.get("nodaemon") or parent.get("debug"))
    if daemonizing:
        # twistd's parent process reports a failure of the daemon's start
        # on sys.__stderr__, then leaves with os._exit, which flushes
        # nothing: under PyPy, whose stderr is not line-buffered as
        # CPython's is, the report was lost.
        stderr = sys.__stderr__
        if isinstance(stderr, io.TextIOWrapper):
            stderr.reconfigure(line_buffering=True)
        if any(pidLocked(config[option] or "") for option in ("listen", "admin")):
            # Bound once twistd has forked, in privilegedStartService.
            return service
    try:
        service.bind()
    except StartupError as e:
        raise SystemExit(str(e)) from None
    return service


def _build(config: Options, reactor: Any) -> LoadBalancerService | Supervisor:
    if reactor is None:
        from twisted.internet import reactor
    index = workerIndex(os.environ)
    if index is None and config["workers"] > 1:
        return Supervisor(config, reactor)
    backends = config["backends"]
    pool = BackendPool(
        backends, reactor, config["max-fails"], config["fail-timeout"], config["slow-start"]
    )
    makeAlgorithm = config.algorithm()
    client = BackendClient(reactor, config["connect-timeout"], tls=config["backend-tls"])
    resource = LoadBalancerResource(
        makeAlgorithm(backends), client, reactor, pool, config.settings(), makeAlgorithm
    )
    resource.useShadow(config["shadow-algo"], config.shadow())
    resource.sticky = config.sticky(reactor)
    resource.admission.workers = workerCount(os.environ)
    if index is None:
        region = Region.create(config["rate-limit-keys"])
    else:
        region = Region.adopt(KEYTABLES_FD, os.environ.get("PYTHONHASHSEED"))
    resource.clientLimits = config.clientLimits(region, index or 0, reactor.seconds)
    site = LoadBalancerSite(resource, reactor, http2=not config["no-http2"], h2c=config["h2c"])
    if index is None:
        balancer = LoadBalancerService(config, site, reactor)
    else:
        admin = None if config["admin"] is None else adoptedEndpoint(reactor, ADMIN_FD)
        balancer = LoadBalancerService(
            config, site, reactor, (adoptedEndpoint(reactor, LISTEN_FD), admin)
        )
        balancer.stopSignals = (signal.SIGTERM,)
        ParentWatch(reactor).setServiceParent(balancer)
    if config["demo"]:
        demo = makeBackendService([b.port for b in backends], reactor=reactor)
        demo.setServiceParent(balancer)
    return balancer

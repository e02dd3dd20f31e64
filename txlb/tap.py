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
from twisted.logger import Logger
from twisted.python import usage

from txlb import config, dns, tls, versionLine
from txlb.accesslog import AccessLog
from txlb.admission import DEFAULT_MAX_QUEUE, DEFAULT_QUEUE_TIMEOUT, parseMaxConn
from txlb.algorithms import ALGORITHMS, algorithmNamed
from txlb.algorithms.keyhash import DEFAULT_BALANCE_FACTOR, parseKey
from txlb.algorithms.policyloader import MakeAlgorithm, makeChecked
from txlb.backend import Backend, parseBackends
from txlb.clientlimits import ClientLimits
from txlb.etcd import DEFAULT_PREFIX, parseEndpoint, readPassword, tlsSettings
from txlb.fleet import Fleet, clientFor, readAtStart
from txlb.http1 import isToken
from txlb.keytables import Region
from txlb.metrics import Metrics
from txlb.poolservice import makePool
from txlb.proxy import DEFAULT_POOL, LoadBalancerResource
from txlb.ratelimit import DEFAULT_KEYS, Rate, parseRate, parseRateKey
from txlb.retrybudget import DEFAULT_PERCENT, parsePercent
from txlb.routeconfig import RoutesError, parseRoutes
from txlb.routing import RoutingResource
from txlb.server import LoadBalancerSite
from txlb.service import RESTART_KEYS, LoadBalancerService, StartupError
from txlb.settings import ProxySettings
from txlb.sticky import StickyCookie
from txlb.testbackend import makeBackendService
from txlb.twistdlog import twistdLog
from txlb.workers.supervisor import Supervisor, parseListen
from txlb.workers.worker import (
    ADMIN_FD,
    KEYTABLES_FD,
    ParentWatch,
    adoptedEndpoint,
    listenFDs,
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
REPEATABLE = frozenset({"listen", "backends-dns", "dns-server", "etcd"})


#: The options that belong to a pool of backends: what a C{[pools.NAME]}
#: table may hold.  The command line's are those of the pool C{default}; a
#: pool's table takes the rest from the top level.
POOL_KEYS = frozenset(
    {
        "backends",
        "backends-dns",
        "algo",
        "shadow-algo",
        "hash-key",
        "hash-balance-factor",
        "sticky-cookie",
        "slow-start",
        "load-header",
        "health-path",
        "health-interval",
        "health-timeout",
        "health-rise",
        "health-fall",
        "max-fails",
        "fail-timeout",
        "retries",
        "retry-non-idempotent",
        "retry-budget",
        "max-conn",
        "max-queue",
        "queue-timeout",
        "connect-timeout",
        "response-timeout",
        "idle-timeout",
        "max-body-size",
        "backend-ca",
        "backend-cert",
        "backend-key",
        "backend-sni",
        "backend-insecure",
    }
)


def restartArguments(arguments: Sequence[str]) -> list[str]:
    """
    The arguments of L{RESTART_KEYS} among a configuration document's
    command-line C{arguments} (every one of them takes a value).
    """
    flags = {f"--{row[0]}" for row in Options.optFlags}
    kept: list[str] = []
    index = 0
    while index < len(arguments):
        size = 1 if arguments[index] in flags else 2
        if arguments[index][2:] in RESTART_KEYS:
            kept += arguments[index : index + size]
        index += size
    return kept


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


def parseEtcdPrefix(text: str) -> str:
    """
    Parse C{--etcd-prefix}: a key prefix of printable ASCII without spaces,
    ending with C{/} (added if missing), so that C{/txlb} does not also take
    C{/txlbother/}.
    """
    if not text or any(c <= " " or c > "~" for c in text):
        raise usage.UsageError(f"--etcd-prefix: {text!r} is not a key prefix like /txlb/")
    return text if text.endswith("/") else text + "/"


def parsePath(text: str) -> str:
    if not text.startswith("/") or any(c <= " " or c > "~" for c in text):
        raise usage.UsageError(f"--health-path: {text!r} is not a path like /health")
    return text


class PoolSettings(dict[str, Any]):
    """
    What follows from the options of one pool: its proxy settings, its
    algorithms and its sticky cookie.  Both the top level's L{Options} (the
    pool C{default}) and each L{PoolOptions} are such.

    @ivar name: The pool's name.
    """

    name = DEFAULT_POOL
    optParameters: Any
    optFlags: Any

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
            workers=workerCount(os.environ),
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


def checkPool(options: PoolSettings, checkBackends: bool = True) -> None:
    """
    Check what the options of a pool need together, and fill in what
    follows from them: the algorithm (round robin if none is named), the
    backend TLS settings, and, if C{checkBackends}, that the algorithms
    work on the backends.

    @raise usage.UsageError: With one line saying what is wrong.
    """
    options["algo"] = options["algo"] or "roundrobin"
    try:
        options["backend-tls"] = tls.fromOptions(
            options["backend-ca"],
            options["backend-cert"],
            options["backend-key"],
            options["backend-sni"],
            options["backend-insecure"],
        )
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    for option in ("algo", "shadow-algo"):
        spec = options[option]
        if spec is None:
            continue
        if checkBackends:
            options.checkedAlgorithm(option, spec, options["backends"] or [])
        else:
            # No backends to try it on yet (a fleet's members come from
            # etcd): the name, at least, must name an algorithm.
            try:
                options.algorithmNamed(spec)
            except ValueError as e:
                raise usage.UsageError(f"--{option}: {e}") from None


class Options(PoolSettings, usage.Options):
    synopsis = "[--listen DESCRIPTION] (--backends LIST | --demo) [--algo NAME] [options]"
    longdesc = (
        "A transparent HTTP load balancer: every request is forwarded as the "
        "client sent it to a backend picked by the algorithm, and the answer "
        "comes back as the backend sent it."
    )

    optParameters = [
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
        # A fleet's configuration in etcd (see opt_etcd).
        ["etcd-prefix", None, DEFAULT_PREFIX, "Prefix of txlb's keys in etcd.", parseEtcdPrefix],
        ["etcd-ca", None, None, "PEM file of the CAs to trust for https:// etcd endpoints."],
        ["etcd-cert", None, None, "PEM client certificate for etcd."],
        ["etcd-key", None, None, "PEM private key of --etcd-cert."],
        ["etcd-user", None, None, "etcd user to authenticate as."],
        [
            "etcd-password-file",
            None,
            None,
            "File whose first line is --etcd-user's password.",
        ],
        [
            "etcd-timeout",
            None,
            30.0,
            "Seconds to wait for etcd at start without --config, then give up.",
            seconds("--etcd-timeout"),
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
        self["listen"] = []
        self["backends-dns"] = []
        self["dns-server"] = []
        self["etcd"] = []
        #: The password of C{--etcd-user}, read from C{--etcd-password-file}
        #: (not an option: a reload's report lists the options that changed).
        self.etcdPassword = ""
        #: The pools of the configuration file, by name: their options.
        self.namedPools: dict[str, PoolOptions] = {}
        self["routes"] = []
        #: What the routes' check warns of (logged at start and reload).
        self.routeWarnings: list[str] = []
        # An opt_ method's docstring is its help, indentation and line ends
        # included: make it one line, as the others are.
        self.docs = {name: doc and " ".join(doc.split()) for name, doc in self.docs.items()}

    def opt_listen(self, text: str) -> None:
        """
        Endpoint description to listen on (default tcp:8080). Repeatable:
        every listener serves the same routes.
        """
        self["listen"].append(text)

    opt_l = opt_listen

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

    def opt_etcd(self, text: str) -> None:
        """
        URL of an etcd endpoint (http://HOST:PORT or https://...) to follow the
        fleet's configuration from. Repeatable: the cluster's endpoints, tried in
        turn.
        """
        try:
            endpoint = parseEndpoint(text)
        except ValueError as e:
            raise usage.UsageError(f"--etcd: {e}") from None
        if endpoint in self["etcd"]:
            raise usage.UsageError(f"--etcd: {endpoint} is listed twice")
        self["etcd"].append(endpoint)

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
    #: The configuration file's pools and routes, checked in postOptions.
    _document: config.Document | None = None
    #: The configuration file, as last read, if there is one.
    _fileDocument: config.Document | None = None
    #: Whether the pool C{default} exists without backends of its own: its
    #: backends are the members etcd lists (with C{--etcd}, and no pools).
    _membersOnly = False
    #: The TLS settings of C{--etcd-ca}, C{--etcd-cert} and C{--etcd-key}.
    etcdTLS: Any = None

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
        C{commandLine}, checked as a command line is; with its pools and
        routes.

        @raise usage.UsageError: With one line saying what is wrong, or
            one line per problem of the routes.
        """
        where = f"--config {path}"
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as e:
            raise usage.UsageError(f"{where}: {e}") from None
        document = cls._readDocument(text, where)
        return cls._fromDocument(document, where, commandLine, document)

    def withDocument(self, text: str | None, where: str) -> Options:
        """
        The options a fleet's configuration document (etcd's
        C{config.toml}) gives, read afresh: the document, with the options
        of L{RESTART_KEYS} the configuration file gives (which the document
        may not hold), overridden by the command line.  Without a document
        (C{None}), the file and the command line, as at start.

        @param where: What the document's errors name.
        @raise usage.UsageError: With one line per problem.
        """
        fileDocument = self._fileDocument
        if text is None:
            document = fileDocument or config.Document([], {}, None)
            path = self["config"]
            origin = "the command line" if path is None else f"--config {path}"
            return self._fromDocument(document, origin, self.commandLine, fileDocument)
        document = self._readDocument(text, where, RESTART_KEYS)
        local = [] if fileDocument is None else restartArguments(fileDocument.arguments)
        return self._fromDocument(document, where, self.commandLine, fileDocument, local, True)

    @classmethod
    def _readDocument(
        cls, text: str, where: str, refused: frozenset[str] = frozenset()
    ) -> config.Document:
        """
        Read a configuration document, which may not hold the keys
        C{refused}.

        @raise usage.UsageError: With one line naming C{where}.
        """
        parameters = {row[0] for row in cast(list[list[str]], cls.optParameters)}
        flags = {row[0] for row in cast(list[list[str]], cls.optFlags)}
        try:
            return config.read(
                text,
                parameters,
                flags,
                REPEATABLE,
                POOL_KEYS,
                refused,
                "only a restart changes these: set them in --config or on the command line",
            )
        except config.ConfigError as e:
            raise usage.UsageError(f"{where}: {e}") from None

    @classmethod
    def _fromDocument(
        cls,
        document: config.Document,
        where: str,
        commandLine: list[str],
        fileDocument: config.Document | None,
        local: Sequence[str] = (),
        sayWhere: bool = False,
    ) -> Options:
        """
        The options of C{document} (the file's, or etcd's), after C{local}
        and overridden by C{commandLine}.

        @param fileDocument: The configuration file's document, if there is
            a file, which a later L{withDocument} builds on.
        @param sayWhere: Prefix every error with C{where}, not only those
            of documents with pools or routes.
        """
        options = cls()
        options._fromFile = True
        options._document = document
        options._fileDocument = fileDocument
        options.commandLine = commandLine
        try:
            usage.Options.parseOptions(options, [*local, *document.arguments, *commandLine])
        except usage.UsageError as e:
            if not sayWhere and not document.pools and document.routes is None:
                raise
            # Perhaps a pool's or a route's: say where.
            raise usage.UsageError(
                "\n".join(f"{where}: {line}" for line in str(e).splitlines())
            ) from None
        return options

    def postOptions(self) -> None:
        if self["config"] is not None and not self._fromFile:
            loaded = self.fromFile(self["config"], self.commandLine)
            self.update(loaded)
            self.namedPools, self.routeWarnings = loaded.namedPools, loaded.routeWarnings
            self._document, self._fileDocument = loaded._document, loaded._fileDocument
            self._membersOnly = loaded._membersOnly
            self.etcdTLS, self.etcdPassword = loaded.etcdTLS, loaded.etcdPassword
            return
        self._checkEtcd()
        self["listen"] = self["listen"] or ["tcp:8080"]
        if self["demo"]:
            if self["backends"] is not None:
                raise usage.UsageError("--demo starts its own backends: drop --backends")
            self["backends"] = parseBackends(DEMO_BACKENDS)
            self["algo"] = self["algo"] or "weighted"
        document = self._document
        poolTables = {} if document is None else document.pools
        default = self["backends"] is not None or bool(self["backends-dns"])
        if not default and not poolTables:
            if not self["etcd"]:
                raise usage.UsageError(
                    "no backends: give --backends HOST:PORT[,...], --backends-dns NAME or --demo"
                )
            # The fleet's members in etcd are the pool default's backends.
            self._membersOnly = True
        if default and DEFAULT_POOL in poolTables:
            raise usage.UsageError(
                f"backends given twice: at the top level and in [pools.{DEFAULT_POOL}]"
            )
        self["backends"] = self["backends"] or []
        if self["dns-min-ttl"] > self["dns-max-ttl"]:
            raise usage.UsageError("--dns-min-ttl must not be above --dns-max-ttl")
        checkPool(self, checkBackends=default)
        self.namedPools = {
            name: PoolOptions.within(self, name, arguments)
            for name, arguments in poolTables.items()
        }
        if document is not None and document.routes is not None:
            names = self.pools()
            try:
                self["routes"], self.routeWarnings = parseRoutes(
                    document.routes, names, DEFAULT_POOL if DEFAULT_POOL in names else None
                )
            except RoutesError as e:
                raise usage.UsageError("\n".join(e.problems)) from None
        from twisted.internet import reactor

        for description in self["listen"]:
            try:
                serverFromString(reactor, description)
            except Exception as e:
                hint = endpointHint(description)
                raise usage.UsageError(f"--listen: {description!r}: {e}{hint}") from None
        if self["admin"] is not None:
            try:
                serverFromString(reactor, self["admin"])
            except Exception as e:
                hint = endpointHint(self["admin"])
                raise usage.UsageError(f"--admin: {self['admin']!r}: {e}{hint}") from None
        if self["rate-limit-burst"] is not None and self["rate-limit"] is None:
            raise usage.UsageError("--rate-limit-burst needs --rate-limit")
        if self["max-client-conns"] and any(d.startswith("haproxy:") for d in self["listen"]):
            # The PROXY header names the client after the connection is
            # made, when it would already be counted against the proxy.
            raise usage.UsageError(
                "--max-client-conns does not work with the PROXY protocol (haproxy: --listen) yet"
            )
        if self["workers"] > 1:
            if self["demo"]:
                raise usage.UsageError("--demo runs its backends in one process: drop --workers")
            for description in self["listen"]:
                try:
                    parseListen(description)
                except ValueError as e:
                    raise usage.UsageError(f"--workers: --listen {description!r}: {e}") from None
        if (
            self["admin"] is not None
            and not self["admin-token"]
            and not loopbackOnly(self["admin"])
        ):
            raise usage.UsageError(
                f"--admin: {self['admin']!r} is not loopback-only: give --admin-token, "
                "or listen on 127.0.0.1 (e.g. tcp:9000:interface=127.0.0.1)"
            )

    def _checkEtcd(self) -> None:
        """
        Check the options of etcd, and read C{--etcd-password-file}.
        """
        if not self["etcd"]:
            for option in ("etcd-ca", "etcd-cert", "etcd-key", "etcd-user", "etcd-password-file"):
                if self[option] is not None:
                    raise usage.UsageError(f"--{option} needs --etcd")
            return
        given = [o for o in ("etcd-ca", "etcd-cert", "etcd-key") if self[o] is not None]
        if given and not any(url.startswith("https://") for url in self["etcd"]):
            # Certificates for cleartext endpoints would be ignored: the
            # operator believes etcd is spoken to over TLS, and it is not.
            raise usage.UsageError(
                f"--{given[0]} is for https:// etcd endpoints: no --etcd is https://"
            )
        try:
            self.etcdTLS = tlsSettings(self["etcd-ca"], self["etcd-cert"], self["etcd-key"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if (self["etcd-user"] is None) != (self["etcd-password-file"] is None):
            raise usage.UsageError("--etcd-user and --etcd-password-file go together: give both")
        if self["etcd-user"] == "":
            raise usage.UsageError("--etcd-user: empty: give the etcd user's name")
        if self["etcd-password-file"] is not None:
            try:
                self.etcdPassword = readPassword(self["etcd-password-file"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None

    def pools(self) -> dict[str, PoolSettings]:
        """
        The options of each pool, by name: C{default} (these options, if
        they name backends), then the configuration file's, in its order.
        """
        pools: dict[str, PoolSettings] = {}
        if self["backends"] or self["backends-dns"] or self._membersOnly:
            pools[DEFAULT_POOL] = self
        pools.update(self.namedPools)
        return pools

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
            self["routes"],
        )


class PoolOptions(PoolSettings, usage.Options):
    """
    The options of one pool of the configuration file: those of
    L{POOL_KEYS} from its C{[pools.NAME]} table, checked as the command
    line's are; what the table leaves out, as the top level has it (but
    its backends, which are the pool's own).
    """

    optParameters = [row for row in Options.optParameters if row[0] in POOL_KEYS]
    optFlags = [row for row in Options.optFlags if row[0] in POOL_KEYS]
    opt_backends_dns = Options.opt_backends_dns

    @classmethod
    def within(cls, top: Options, name: str, arguments: list[str]) -> PoolOptions:
        """
        The pool C{name} of the options C{top}, from its table's
        C{arguments}.

        @raise usage.UsageError: With one line naming the pool and what is
            wrong.
        """
        pool = cls()
        pool.name = name
        for key, value in top.items():
            if key not in pool or key in ("backends", "backends-dns"):
                continue
            pool[key] = value
        pool["backends-dns"] = []
        # The top level's own, not what its algorithm check made of them.
        for key, value in top.items():
            if key not in POOL_KEYS and key not in pool:
                pool[key] = value
        try:
            usage.Options.parseOptions(pool, arguments)
        except usage.UsageError as e:
            raise usage.UsageError(f"[pools.{name}]: {e}") from None
        return pool

    def postOptions(self) -> None:
        if self["backends"] is None and not self["backends-dns"] and not self.get("etcd"):
            # (With --etcd, the pool's backends may all be etcd's members.)
            raise usage.UsageError("no backends: give backends or backends-dns")
        self["backends"] = self["backends"] or []
        checkPool(self)


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
        if any(
            pidLocked(description) for description in [*config["listen"], config["admin"] or ""]
        ):
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
    fleet = None
    started = config
    if config["etcd"]:
        fleet = _fleet(config, reactor)
        started = _started(fleet)
    if index is None and config["workers"] > 1:
        # Each worker follows etcd itself (docs/fleet.md says why).
        return Supervisor(config, reactor)
    config = started
    metrics = Metrics(reactor, lambda: resource.pools.values())
    accessLog = AccessLog(Logger(namespace=LoadBalancerResource.log.namespace))
    pools = {
        name: makePool(options, reactor, metrics, accessLog)
        for name, options in config.pools().items()
    }
    resource = RoutingResource(
        pools, config["routes"], config.settings(), metrics, accessLog, reactor
    )
    if index is None:
        region = Region.create(config["rate-limit-keys"])
    else:
        region = Region.adopt(KEYTABLES_FD, os.environ.get("PYTHONHASHSEED"))
    resource.clientLimits = config.clientLimits(region, index or 0, reactor.seconds)
    site = LoadBalancerSite(resource, reactor, http2=not config["no-http2"], h2c=config["h2c"])
    if index is None:
        balancer = LoadBalancerService(config, site, reactor, fleet=fleet)
    else:
        admin = None if config["admin"] is None else adoptedEndpoint(reactor, ADMIN_FD)
        balancer = LoadBalancerService(
            config,
            site,
            reactor,
            ([adoptedEndpoint(reactor, fd) for fd in listenFDs(len(config["listen"]))], admin),
            fleet=fleet,
        )
        balancer.stopSignals = (signal.SIGTERM,)
        ParentWatch(reactor).setServiceParent(balancer)
    # Under twistd, its log: once per reactor turn.
    balancer.mainLog = twistdLog(config.parent, reactor)
    if config["demo"]:
        demo = makeBackendService([b.port for b in config["backends"]], reactor=reactor)
        demo.setServiceParent(balancer)
    return balancer


def _fleet(config: Options, reactor: Any) -> Fleet:
    """
    What follows etcd for C{config}: without C{--config}, once etcd has
    been read (see L{readAtStart}); with it, from the file, etcd's
    configuration applying as soon as etcd answers.

    @raise SystemExit: With one line, if etcd did not answer in time.
    """
    initial = readAtStart(config) if config["config"] is None else None
    return Fleet(clientFor(config, reactor), config, reactor, config["etcd-prefix"], initial)


def _started(fleet: Fleet) -> Options:
    """
    The configuration to start with: etcd's document over the file and the
    command line, if etcd was read and holds one.

    @raise SystemExit: With one line per problem of the document.
    """
    try:
        return cast(Options, fleet.configuration())
    except usage.UsageError as e:
        raise SystemExit("\n".join(f"txlb: {line}" for line in str(e).splitlines())) from None

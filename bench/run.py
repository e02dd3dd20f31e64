"""
Side-by-side HTTP benchmark of txlb with wrk.

Measures C{GET /ping} through every target in one run, one after the other,
against the same three nginx backends:

  - direct: one nginx backend served directly, no proxy (the reference);
  - nginx and HAProxy as load balancers (configs: bench/*.in);
  - aiohttp relays, with and without uvloop (Python peers);
  - Twisted gauges: twisted.web answering itself, a lean pooled relay, a bare
    Agent relay (from ../shared/bench/) and ReverseProxyResource
    (bench/rpr_server.py);
  - txlb under twistd;
  - HTTP/2 toward the client, measured with h2load over h2c (HTTP/2 with
    prior knowledge in cleartext): nginx and HAProxy taking h2c, and txlb
    with C{--h2c}, with one stream per connection (C{-m1}, like wrk) and
    with ten (C{-m10}); the proxies speak HTTP/1.1 to the backends;

the Twisted targets under CPython and, when a PyPy with Twisted is found,
under PyPy too.  With at least two CPUs every proxy is pinned to one CPU and
wrk plus the backends to another (taskset).  Each target is started, polled
until C{GET /ping} answers 200 (over HTTP/2 for the h2c targets), warmed
up, measured and stopped before the next one; a target that fails is
marked and the run goes on.  Everything is stopped and the temporary
directory removed in a C{finally} block.

It prints requests/s, p50, p99 and mean latency per target (only the mean
for h2load, which prints no percentiles, unless C{--h2load-log}) and the
ratios between txlb and its peers, writes the table as Markdown and draws a PNG chart
(matplotlib, optional: the chart is skipped with a note if it is missing).
Run C{python bench/run.py --help}.
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from common import (
    CHECKOUT,
    HERE,
    HOST,
    STOP_TIMEOUT,
    Processes,
    exitOnSigterm,
    freePorts,
    txlbArgv,
    txlbEnv,
)

RPR_SERVER = os.path.join(HERE, "rpr_server.py")
GAUGES = os.path.normpath(os.path.join(CHECKOUT, os.pardir, "shared", "bench"))
BACKENDS = 3
#: The routes of the txlb-routes target: a site's table, the request
#: matching only the last.
ROUTES = 50

STARTUP_TRIES = 300  # polls of STARTUP_DELAY seconds each: 30 s at most
STARTUP_DELAY = 0.1
WRK_GRACE = 30.0  # seconds wrk may overrun its -d before it is killed
PROBE_TIMEOUT = 60.0  # seconds an interpreter or tool may take to say its version
SETTLE = 0.5  # seconds of rest between two targets
TICK = os.sysconf("SC_CLK_TCK")  # /proc/*/stat times are in these units
BUSY_WARN = 0.2  # CPUs of other load above which a row is flagged
MIN_CPU = 0.05  # CPUs a target must use for its requests per CPU-second to be shown


@dataclass(frozen=True)
class Spec:
    """
    A kind of target: how it is named, grouped and started.

    @ivar runtime: C{"native"}, C{"cpython"} (the C{--python} interpreter)
        or C{"pypy"} (the C{--pypy} one).
    @ivar kind: the chart group: C{"native"}, C{"peer"}, C{"gauge"} or
        C{"txlb"}.
    @ivar needs: modules the interpreter must import for the target to be
        available.
    @ivar short: the name in the ratios.
    @ivar streams: 0 for an HTTP/1.1 target measured with wrk; else the
        target takes HTTP/2 with prior knowledge (h2c) and is measured with
        h2load opening this many streams at once on each connection (C{-m}).
    """

    key: str
    label: str
    short: str
    kind: str
    runtime: str
    needs: tuple = ()
    streams: int = 0

    @property
    def client(self):
        """
        The load generator: C{"wrk"} or C{"h2load"}.
        """
        return "h2load" if self.streams else "wrk"


def _pythonSpecs(runtime, suffix):
    tw = ("twisted",)
    return [
        Spec("pong" + suffix, "twisted.web pong (no backend)", "pong", "gauge", runtime, tw),
        Spec("lean" + suffix, "lean relay gauge", "lean gauge", "gauge", runtime, tw),
        Spec("agent" + suffix, "Agent relay gauge", "Agent gauge", "gauge", runtime, tw),
        Spec("rpr" + suffix, "ReverseProxyResource (1 backend)", "RPR", "gauge", runtime, tw),
        Spec("txlb" + suffix, f"txlb ({BACKENDS} backends)", "txlb", "txlb", runtime, tw),
        Spec(
            "txlb-alf" + suffix,
            f"txlb ({BACKENDS} backends), --access-log-file",
            "txlb+alf",
            "txlb",
            runtime,
            tw,
        ),
        Spec(
            "txlb-routes" + suffix,
            f"txlb ({BACKENDS} backends), {ROUTES} routes",
            "txlb routes",
            "txlb",
            runtime,
            tw,
        ),
        Spec(
            "txlb-h2c" + suffix,
            f"txlb ({BACKENDS} backends), --h2c, h2load -m1",
            "txlb h2c",
            "txlb",
            runtime,
            tw,
            streams=1,
        ),
        Spec(
            "txlb-h2c-m10" + suffix,
            f"txlb ({BACKENDS} backends), --h2c, h2load -m10",
            "txlb h2c -m10",
            "txlb",
            runtime,
            tw,
            streams=10,
        ),
    ]


SPECS = [
    Spec("direct", "nginx backend, direct (no proxy)", "direct", "native", "native"),
    Spec("nginx", "nginx proxy (keepalive upstream)", "nginx", "native", "native"),
    Spec("haproxy", "HAProxy (http-reuse always)", "HAProxy", "native", "native"),
    Spec("nginx-h2c", "nginx proxy, h2c, h2load -m1", "nginx h2c", "native", "native", streams=1),
    Spec(
        "nginx-h2c-m10",
        "nginx proxy, h2c, h2load -m10",
        "nginx h2c -m10",
        "native",
        "native",
        streams=10,
    ),
    Spec("haproxy-h2c", "HAProxy, h2c, h2load -m1", "HAProxy h2c", "native", "native", streams=1),
    Spec("aiohttp", "aiohttp relay", "aiohttp", "peer", "cpython", ("aiohttp",)),
    Spec(
        "aiohttp-uvloop",
        "aiohttp relay + uvloop",
        "aiohttp+uvloop",
        "peer",
        "cpython",
        ("aiohttp", "uvloop"),
    ),
    *_pythonSpecs("cpython", ""),
    *_pythonSpecs("pypy", "-pypy"),
]
SPEC = {spec.key: spec for spec in SPECS}
RUNTIME_NAMES = {"native": "native", "cpython": "CPython", "pypy": "PyPy"}

# (numerator, denominator): the requests/s ratios printed after the table.
RATIOS = [
    ("txlb-alf", "lean"),
    ("txlb-alf-pypy", "lean-pypy"),
    ("txlb-alf", "aiohttp-uvloop"),
    ("txlb-alf-pypy", "aiohttp-uvloop"),
    ("txlb-alf", "agent"),
    ("txlb-alf-pypy", "agent-pypy"),
    ("txlb", "lean"),
    ("txlb-pypy", "lean-pypy"),
    ("txlb", "aiohttp-uvloop"),
    ("txlb-pypy", "aiohttp-uvloop"),
    ("txlb", "agent"),
    ("txlb-pypy", "agent-pypy"),
    ("txlb", "rpr"),
    ("txlb-pypy", "rpr-pypy"),
    ("txlb", "pong"),
    ("txlb-pypy", "pong-pypy"),
    # HTTP/2 (h2c, measured with h2load) against HTTP/1.1 (wrk), and against
    # the native proxies taking h2c.
    ("txlb-routes", "txlb"),
    ("txlb-routes-pypy", "txlb-pypy"),
    ("txlb-h2c", "txlb"),
    ("txlb-h2c-pypy", "txlb-pypy"),
    ("nginx-h2c", "nginx"),
    ("txlb-h2c", "nginx-h2c"),
    ("txlb-h2c-pypy", "nginx-h2c"),
    ("txlb-h2c", "haproxy-h2c"),
    ("txlb-h2c-m10", "txlb-h2c"),
    ("txlb-h2c-m10-pypy", "txlb-h2c-pypy"),
    ("txlb-h2c-m10", "nginx-h2c-m10"),
    ("txlb-h2c-m10-pypy", "nginx-h2c-m10"),
]
ADDED_P50_GOAL = 0.2  # ms over direct at -c1, the target for txlb

WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_MEAN = re.compile(  # Avg, Stdev, Max
    r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m|h)", re.MULTILINE
)
H2LOAD_RPS = re.compile(r"^finished in [\d.]+\w+, ([\d.]+) req/s", re.MULTILINE)
H2LOAD_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
H2LOAD_STATUS = re.compile(
    r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE
)
H2LOAD_TIME = re.compile(  # min, max, mean
    r"^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", re.MULTILINE
)
H2LOAD_CLIENTS = re.compile(r"^req/s\s*:\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", re.MULTILINE)
H2LOAD_PROTOCOL = re.compile(r"^Application protocol: (\S+)", re.MULTILINE)
STALL_MS = 1000.0  # a request that took longer than this is named after the table
UNEVEN = 0.25  # a connection served at under this share of the mean is named too
MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}

PROBE = """\
import json, platform, sys
info = {"impl": platform.python_implementation(), "version": platform.python_version()}
if hasattr(sys, "pypy_version_info"):
    info["pypy"] = "%d.%d.%d" % tuple(sys.pypy_version_info[:3])
for name, module in (("twisted", "twisted.web"), ("aiohttp", "aiohttp"), ("uvloop", "uvloop")):
    try:
        __import__(module)
        info[name] = getattr(sys.modules[name], "__version__", "?")
    except Exception:
        info[name] = None
print(json.dumps(info))
"""


class BenchError(Exception):
    """
    A target, or the whole benchmark, cannot run; the message says why.
    """


@dataclass
class Target:
    """
    A started target: the port it listens on, its process and log files.

    @ivar owned: whether the process is this target's alone (stopped after
        it is measured) rather than the shared backends.
    """

    spec: Spec
    port: int
    proc: subprocess.Popen
    logs: tuple
    owned: bool = True


@dataclass
class Result:
    """
    What wrk reported for one target (or why it could not report).
    """

    rps: float = 0.0
    p50: float | None = None
    p99: float | None = None
    mean: float | None = None
    slowest: float | None = None
    warning: str | None = None
    requests: int = 0
    non2xx: int = 0
    socket_errors: int = 0
    failure: str | None = None
    reason: str | None = None
    proxyCpu: float | None = None
    loadCpu: float | None = None
    otherCpu: float | None = None
    otherSides: tuple | None = None
    skewed: bool = False

    @property
    def errors(self):
        """
        Non-2xx responses plus socket errors.
        """
        return self.non2xx + self.socket_errors

    @property
    def bad(self):
        """
        Whether this measurement must not be trusted.
        """
        return bool(self.failure or self.errors or not self.requests)

    @property
    def perCpu(self):
        """
        Requests per second of CPU time the target used: what it does with
        one CPU, which other load on the machine distorts less than
        requests/s (if the target, not wrk or the backends, sets the pace).
        """
        if self.bad or not self.proxyCpu or self.proxyCpu < MIN_CPU:
            return None
        return self.rps / self.proxyCpu

    @property
    def short(self):
        """
        One line for the table and the chart: why the row is bad, or "".
        """
        if self.reason:
            return self.reason
        if self.failure:
            return self.failure.splitlines()[0]
        if self.bad:
            return f"{self.errors} errors" if self.errors else "no requests"
        return ""


def routeTable(backendPorts, count=ROUTES):
    """
    A configuration of C{count} routes, as a site has them: hosts with a
    prefix each, then prefixes alone, sending to a second pool over the
    same backends; the last, a catch-all to the command line's pool
    C{default}, is the one the benchmark's C{GET /ping} (with the
    benchmark's host) matches.
    """
    backends = ", ".join(f'"{HOST}:{p}"' for p in backendPorts)
    lines = [f"[pools.other]\nbackends = [{backends}]\n"]
    hosts = (count - 1) // 2
    for i in range(hosts):
        lines.append(
            f'[[routes]]\nhost = "app{i}.example.com"\npath-prefix = "/v{i}"\npool = "other"\n'
        )
    for i in range(count - 1 - hosts):
        lines.append(f'[[routes]]\npath-prefix = "/api{i}"\npool = "other"\n')
    lines.append('[[routes]]\npool = "default"\n')
    return "\n".join(lines)


def tail(paths, lines=15):
    """
    The last C{lines} lines of each non-empty file in C{paths}, for errors.
    """
    parts = []
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                last = f.readlines()[-lines:]
        except OSError:
            continue
        if last:
            parts.append(f"--- last lines of {path}:\n" + "".join(last))
    return "\n".join(parts)


def systemBusy(cpu=None):
    """
    Seconds of CPU time all CPUs (or only CPU C{cpu}) have spent busy (user,
    nice, system) or stolen by the hypervisor since boot, from
    C{/proc/stat}.
    """
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as f:
        for line in f:
            fields = line.split()
            if fields[0] == name:
                user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, fields[1:9])
                return (user + nice + system + steal) / TICK
    return 0.0


def treeCpu(pids):
    """
    Seconds of CPU time used so far by the processes C{pids} and all their
    descendants (nginx's workers, for instance), from C{/proc/*/stat}.
    """
    parents, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / TICK
    tree, total = set(pids), 0.0
    for _ in range(8):  # deep enough for taskset, nginx master and worker
        tree |= {pid for pid, parent in parents.items() if parent in tree}
    for pid in tree:
        total += times.get(pid, 0.0)
    return total


def ownCpu():
    """
    Seconds of CPU time used by this process and its waited-for children
    (the wrk runs).
    """
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class CpuMeter:
    """
    What the CPUs did while wrk measured one target, in CPUs (CPU-seconds
    per second): the CPU the target used; how busy the CPU of wrk and the
    backends was (1.0: saturated, so they, not the target, set the pace);
    and the CPU that neither the target, the backends, wrk nor this script
    used (other load on the machine, or hypervisor steal), in all and, when
    pinned, on the target's CPU and on wrk's.
    """

    def __init__(self, proxyPid, backendPid, isProxy, proxyCpu, loadCpu):
        self.proxyPid, self.backendPid, self.isProxy = proxyPid, backendPid, isProxy
        self.cpus = proxyCpu, loadCpu
        self.start = self.sample()

    def sample(self):
        proxy = treeCpu([self.proxyPid]) if self.isProxy else 0.0
        load = treeCpu([self.backendPid]) + ownCpu()
        pinned = [systemBusy(cpu) if cpu is not None else 0.0 for cpu in self.cpus]
        return time.monotonic(), systemBusy(), proxy, load, *pinned

    def stop(self, result):
        """
        Store the CPU use since the start in C{result}, and whether other
        load skewed it: other load on the target's CPU, or on wrk's (where
        it delays wrk and the backends, and so the target, even when that
        CPU is not saturated).
        """
        end = self.sample()
        seconds = end[0] - self.start[0]
        if seconds <= 0:
            return
        busy, proxy, load, busyProxy, busyLoad = (
            (end[i] - self.start[i]) / seconds for i in range(1, 6)
        )
        result.proxyCpu = proxy if self.isProxy else None
        result.otherCpu = max(0.0, busy - proxy - load)
        if self.cpus[1] is None:
            result.skewed = result.otherCpu > BUSY_WARN
            return
        result.loadCpu = min(1.0, busyLoad)
        if self.cpus[0] == self.cpus[1]:
            result.otherCpu = max(0.0, busyLoad - load - proxy)
            result.skewed = result.otherCpu > BUSY_WARN
            return
        result.otherSides = (max(0.0, busyProxy - proxy), max(0.0, busyLoad - load))
        onProxy, onLoad = result.otherSides
        result.skewed = onLoad > BUSY_WARN
        if self.isProxy:
            result.skewed = result.skewed or onProxy > BUSY_WARN


def otherLoad(seconds=1.0):
    """
    CPUs used by anything but this script over C{seconds}: the load that
    is already there before the benchmark starts.
    """
    start, own, began = systemBusy(), ownCpu(), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    return max(0.0, systemBusy() - start - (ownCpu() - own)) / elapsed


def lastError(paths):
    """
    The last line of the files in C{paths} that looks like a Python
    exception or an error message, for the one-line reason of a failure.
    """
    found = None
    for path in paths:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    line = line.strip()
                    if re.match(r"^[\w.]*(Error|Exception)\b|^\[ALERT\]|\[emerg\]|^error", line):
                        found = line
        except OSError:
            continue
    return found[:100] if found else None


def httpStatus(port):
    """
    The status code of C{GET /ping} on 127.0.0.1:C{port}, or L{None}.
    """
    request = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(request)
            status = s.recv(64).split(b" ", 2)
        return int(status[1])
    except (OSError, ValueError, IndexError):
        return None


# HPACK's static table: the :status values it has an index for.
H2_STATIC_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}


def h2Status(port):
    """
    The status code of C{GET /ping} on 127.0.0.1:C{port} over HTTP/2 with
    prior knowledge (h2c), or L{None}: a minimal client, enough for a
    server whose answer's first header is C{:status} from HPACK's static
    table (as nginx, HAProxy and hyper-h2 send 200); another status is
    taken for L{None}, so the poll goes on and reports the last one.
    """
    authority = HOST.encode()
    block = (
        b"\x82\x86"  # :method GET, :scheme http (static table)
        + b"\x04\x05/ping"  # :path, literal without indexing
        + b"\x01"
        + bytes([len(authority)])
        + authority  # :authority
    )
    frames = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # empty SETTINGS
        + len(block).to_bytes(3, "big")
        + b"\x01\x05\x00\x00\x00\x01"  # HEADERS, END_STREAM | END_HEADERS, stream 1
        + block
    )
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(frames)
            data = b""
            while True:
                while len(data) >= 9:
                    length = int.from_bytes(data[:3], "big")
                    kind, flags, stream = data[3], data[4], int.from_bytes(data[5:9], "big")
                    if len(data) < 9 + length:
                        break
                    payload, data = data[9 : 9 + length], data[9 + length :]
                    if kind == 7:  # GOAWAY
                        return None
                    if kind == 1 and stream & 0x7FFFFFFF == 1:  # HEADERS on our stream
                        if flags & 0x08:  # PADDED
                            payload = payload[1:]
                        if flags & 0x20:  # PRIORITY
                            payload = payload[5:]
                        first = payload[0] if payload else 0
                        return H2_STATIC_STATUS.get(first & 0x7F) if first & 0x80 else None
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except (OSError, ValueError, IndexError):
        return None


def waitUntilServing(label, port, proc, logs, probe=httpStatus):
    """
    Poll C{GET /ping} (with C{probe}: L{httpStatus} over HTTP/1.1, or
    L{h2Status} over h2c) until it answers 200, a bounded number of times.

    @raise BenchError: if the process exits or never answers 200.
    """
    status = None
    for _ in range(STARTUP_TRIES):
        if proc.poll() is not None:
            raise BenchError(
                f"{label} exited with code {proc.returncode} on startup\n" + tail(logs)
            )
        status = probe(port)
        if status == 200:
            return
        time.sleep(STARTUP_DELAY)
    over = " over h2c" if probe is h2Status else ""
    raise BenchError(
        f"{label} on port {port} did not answer GET /ping{over} with 200 "
        f"(last status: {status})\n" + tail(logs)
    )


def fill(template, **values):
    """
    The config template file C{template} in bench/ with each C{@NAME@}
    replaced by C{values[NAME]}.

    @raise BenchError: if a placeholder is left without a value.
    """
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    left = re.search(r"@[A-Z]+@", text)
    if left:
        raise BenchError(f"{template}: no value for {left.group()}")
    return text


def toMs(value, unit):
    """
    Convert a wrk latency such as C{("1.5", "us")} to milliseconds.
    """
    return float(value) * MS_PER_UNIT[unit]


def parseWrk(text):
    """
    Extract throughput, p50/p99 latency and errors from wrk's output.
    """
    result = Result()
    rps = WRK_RPS.search(text)
    requests = WRK_REQUESTS.search(text)
    if rps is None or requests is None:
        result.failure = "could not parse wrk output"
        return result
    result.rps = float(rps.group(1))
    result.requests = int(requests.group(1))
    latencies = {m.group(1): toMs(m.group(2), m.group(3)) for m in WRK_LATENCY.finditer(text)}
    result.p50, result.p99 = latencies.get("50"), latencies.get("99")
    non2xx = WRK_NON2XX.search(text)
    result.non2xx = int(non2xx.group(1)) if non2xx else 0
    sockets = WRK_SOCKET.search(text)
    result.socket_errors = sum(map(int, sockets.groups())) if sockets else 0
    mean = WRK_MEAN.search(text)
    if mean:
        result.mean = toMs(mean.group(1), mean.group(2))
        result.slowest = toMs(mean.group(3), mean.group(4))
    stalled(result)
    return result


def parseH2load(text, log=None):
    """
    Extract throughput, latency and errors from h2load's output, and p50
    and p99 from its per-request log file C{log} (C{--log-file}) if given.

    h2load prints the min, max, mean and standard deviation of the time
    for a request, not percentiles.  Non-2xx counts 4xx and 5xx responses
    (as wrk's "Non-2xx or 3xx"), socket errors the streams that errored or
    timed out.  Requests started but not done when the duration ended (at
    most C{-c} times C{-m}) are not errors.  h2load exits 0 whatever
    happened, so a connection that was not h2c is a failure here.
    """
    result = Result()
    rps, requests = H2LOAD_RPS.search(text), H2LOAD_REQUESTS.search(text)
    if rps is None or requests is None:
        result.failure = "could not parse h2load output"
        return result
    result.rps = float(rps.group(1))
    _total, _started, done, _succeeded, failed, errored, timeout = map(int, requests.groups())
    result.requests = done
    status = H2LOAD_STATUS.search(text)
    bad = int(status.group(3)) + int(status.group(4)) if status else 0
    result.non2xx = max(bad, failed - errored - timeout)
    result.socket_errors = errored + timeout
    protocol = H2LOAD_PROTOCOL.search(text)
    if protocol is None or protocol.group(1) != "h2c":
        got = protocol.group(1) if protocol else "no connection"
        result.failure = f"h2load did not speak h2c ({got})"
    times = H2LOAD_TIME.search(text)
    if times and done:
        result.slowest = toMs(times.group(3), times.group(4))
        result.mean = toMs(times.group(5), times.group(6))
    if log:
        result.p50, result.p99 = logPercentiles(log)
    stalled(result)
    clients = H2LOAD_CLIENTS.search(text)
    if clients and done:
        low, _high, mean = map(float, clients.groups())
        if mean and low < UNEVEN * mean:
            warn(result, f"slowest connection {low:,.0f} req/s, mean {mean:,.0f}")
    return result


def logPercentiles(path):
    """
    p50 and p99 in milliseconds of the successful requests in an h2load
    C{--log-file} (start, status, microseconds per line), by nearest rank;
    L{None} if there are none.
    """
    times = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) == 3 and fields[1].startswith(("2", "3")):
                    times.append(int(fields[2]))
    except (OSError, ValueError):
        return None, None
    if not times:
        return None, None
    times.sort()

    def rank(q):
        return times[min(len(times) - 1, max(0, -(-len(times) * q // 100) - 1))] / 1000.0

    return rank(50), rank(99)


def stalled(result):
    """
    Note in C{result} a request slower than L{STALL_MS}: a stall that
    requests/s and p99 can hide.
    """
    if result.slowest is not None and result.slowest > STALL_MS:
        warn(result, f"slowest request {result.slowest / 1000.0:.2f} s")


def warn(result, note):
    """
    Add C{note} to the warnings of C{result}.
    """
    result.warning = f"{result.warning}; {note}" if result.warning else note


def logTrouble(paths):
    """
    How many lines of the twistd logs C{paths} (and their rotated copies,
    C{PATH.1} ...) Twisted logged at the critical or error level, and the
    text of the first; (0, None) if none.
    """
    count, first = 0, None
    for path in paths:
        rotated = [p for p in glob.glob(glob.escape(path) + ".*") if p.rpartition(".")[2].isdigit()]
        rotated.sort(key=lambda p: -int(p.rpartition(".")[2]))  # oldest first
        for name in [*rotated, path]:
            try:
                with open(name, errors="replace") as f:
                    for line in f:
                        if "#critical] " in line or "#error] " in line:
                            count += 1
                            if first is None:
                                first = line.split("] ", 1)[1].strip()[:100]
            except OSError:
                continue
    return count, first


def command(argv, timeout=PROBE_TIMEOUT):
    """
    Run a short command in C{/} (so that this checkout's C{twisted/plugins}
    is not taken for Twisted); its output and exit code, or L{None} if it
    cannot be run.
    """
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=timeout, cwd="/"
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout + done.stderr, done.returncode


def probePython(python):
    """
    What the interpreter C{python} is and which of Twisted, aiohttp and
    uvloop it imports (their versions, or L{None}).

    @raise BenchError: if it cannot be run.
    """
    out = command([python, "-c", PROBE])
    if out is None or out[1] != 0:
        detail = (out[0].strip().splitlines() or [""])[-1] if out else "cannot be run"
        raise BenchError(f"{python}: {detail}")
    try:
        info = json.loads(out[0].strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError(f"{python}: unexpected output {out[0]!r}") from None
    info["path"] = python
    return info


def describePython(info):
    """
    E.g. "CPython 3.11.7" or "PyPy 7.3.11 (Python 3.9.16)", with Twisted's
    version.
    """
    if info.get("pypy"):
        text = f"PyPy {info['pypy']} (Python {info['version']})"
    else:
        text = f"{info['impl']} {info['version']}"
    if info.get("twisted"):
        text += f", Twisted {info['twisted']}"
    return text


def findPypy(args):
    """
    The PyPy to run the PyPy targets with, as L{probePython} describes it,
    or L{None} and a note saying why there is none.

    C{--pypy PATH} is used if given (C{--pypy none} turns PyPy off);
    otherwise C{pypy3} then C{pypy} on the PATH, if one imports Twisted.
    """
    if args.pypy is not None:
        if args.pypy.lower() in ("", "none", "no"):
            return None, "PyPy targets off (--pypy none)"
        candidates = [args.pypy]
    else:
        candidates = [p for p in map(shutil.which, ("pypy3", "pypy")) if p]
        if not candidates:
            return None, "no pypy3 on the PATH; give --pypy PATH"
    notes = []
    for python in candidates:
        try:
            info = probePython(python)
        except BenchError as e:
            notes.append(str(e))
            continue
        if not info.get("pypy"):
            notes.append(f"{python} is {info['impl']}, not PyPy")
        elif not info.get("twisted"):
            notes.append(f"{python} cannot import twisted")
        else:
            return info, None
    hint = "" if args.pypy else "; give --pypy PATH (see bench/README.md)"
    return None, "; ".join(notes) + hint


def toolVersion(argv, pattern):
    """
    The version a tool prints, matched by C{pattern}'s first group, or "?".
    """
    out = command(argv)
    match = re.search(pattern, out[0]) if out else None
    return match.group(1) if match else "?"


def machine():
    """
    The CPU model, the number of CPUs, and the operating system.
    """
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    system = platform.system()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    system = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {system}, Linux {platform.release()}"


class Bench:
    """
    One benchmark run: the tools, interpreters, backends and CPU pinning
    that every target shares, and how to start each target.
    """

    def __init__(self, args, tools, cpython, pypy, tmp, procs):
        self.args = args
        self.tools = tools
        self.interpreters = {"cpython": cpython, "pypy": pypy}
        self.tmp = tmp
        self.procs = procs
        self.backends = []
        self.backendProc = None
        self.backendLogs = ()
        cpus = sorted(os.sched_getaffinity(0))
        if args.pin == "none" or not tools.get("taskset"):
            self.proxyCpu = self.loadCpu = None
        elif args.pin == "split" and len(cpus) >= 2:
            self.proxyCpu, self.loadCpu = cpus[0], cpus[1]
        else:
            self.proxyCpu = self.loadCpu = cpus[0]

    @property
    def pinning(self):
        """
        How processes are pinned, in words.
        """
        if self.proxyCpu is None:
            return "no CPU pinning"
        if self.proxyCpu == self.loadCpu:
            return f"each proxy, wrk (or h2load) and the backends pinned to CPU {self.proxyCpu}"
        return (
            f"each proxy pinned to CPU {self.proxyCpu}, "
            f"wrk (or h2load) and the {BACKENDS} nginx backends to CPU {self.loadCpu}"
        )

    def pin(self, cpu, argv):
        """
        C{argv} run on C{cpu} only, if pinning is on.
        """
        if cpu is None:
            return list(argv)
        return [self.tools["taskset"], "-c", str(cpu), *argv]

    def unavailable(self, spec):
        """
        Why C{spec} cannot run here, or L{None} if it can.
        """
        if spec.key.startswith("haproxy") and not self.tools.get("haproxy"):
            return "haproxy not installed (apt-get install haproxy)"
        if spec.client == "h2load" and not self.tools.get("h2load"):
            return "h2load not installed (apt-get install nghttp2-client)"
        if spec.runtime == "native":
            return None
        info = self.interpreters[spec.runtime]
        if info is None:
            return "no PyPy with Twisted (see --pypy)"
        missing = [m for m in spec.needs if not info.get(m)]
        if missing:
            return f"{info['path']} cannot import {', '.join(missing)}"
        if spec.kind == "gauge" and not spec.key.startswith("rpr"):
            script = os.path.join(self.args.gauges, self.gaugeScript(spec))
            if not os.path.exists(script):
                return f"{script} not found (see --gauges)"
        return None

    @staticmethod
    def gaugeScript(spec):
        name = spec.key.removesuffix("-pypy")
        return {"pong": "twisted_pong.py", "lean": "lean_gauge.py", "agent": "agent_gauge.py"}[name]

    def directory(self, name):
        """
        A fresh directory C{name} in the temporary directory.
        """
        path = os.path.join(self.tmp, name)
        os.makedirs(path, exist_ok=True)
        return path

    def startBackends(self):
        """
        Start the nginx backends on the load CPU and wait until they answer.

        @raise BenchError: if they do not.
        """
        self.backends = freePorts(BACKENDS)
        where = self.directory("backends")
        servers = "\n".join(
            f"    server {{\n        listen {HOST}:{port} backlog=1024;\n"
            f'        location = /ping {{ return 200 "pong\\n"; }}\n'
            f"        location / {{ return 404; }}\n    }}"
            for port in self.backends
        )
        config = os.path.join(where, "nginx.conf")
        with open(config, "w") as f:
            f.write(fill("nginx-backends.conf.in", DIR=where, COUNT=BACKENDS, SERVERS=servers))
        errors = os.path.join(where, "error.log")
        argv = [self.tools["nginx"], "-p", where + "/", "-e", errors, "-c", config]
        self.backendProc = self.procs.start("backends", self.pin(self.loadCpu, argv))
        self.backendLogs = (self.procs.output("backends"), errors)
        for port in self.backends:
            waitUntilServing("nginx backends", port, self.backendProc, self.backendLogs)

    def start(self, spec):
        """
        Start the target C{spec} on a free port, pinned to the proxy CPU.

        @return: its L{Target}, not yet answering.
        """
        if spec.key == "direct":
            return Target(spec, self.backends[0], self.backendProc, self.backendLogs, False)
        (port,) = freePorts(1)
        name = spec.key
        env = None
        base = spec.key.removesuffix("-pypy").removesuffix("-m10")
        if base in ("nginx", "nginx-h2c"):
            where = self.directory(name)
            upstreams = "\n".join(f"        server {HOST}:{p};" for p in self.backends)
            config = os.path.join(where, "nginx.conf")
            with open(config, "w") as f:
                f.write(
                    fill(
                        "nginx-proxy.conf.in",
                        DIR=where,
                        HOST=HOST,
                        PORT=port,
                        LISTEN=" http2" if spec.streams else "",
                        UPSTREAMS=upstreams,
                    )
                )
            errors = os.path.join(where, "error.log")
            argv = [self.tools["nginx"], "-p", where + "/", "-e", errors, "-c", config]
            logs = (errors,)
        elif base in ("haproxy", "haproxy-h2c"):
            servers = "\n".join(
                f"    server b{i} {HOST}:{p}" for i, p in enumerate(self.backends, 1)
            )
            config = os.path.join(self.directory(name), "haproxy.cfg")
            with open(config, "w") as f:
                f.write(
                    fill(
                        "haproxy.cfg.in",
                        HOST=HOST,
                        PORT=port,
                        BIND=" proto h2" if spec.streams else "",
                        SERVERS=servers,
                    )
                )
            argv = [self.tools["haproxy"], "-db", "-f", config]
            logs = ()
        else:
            python = self.interpreters[spec.runtime]["path"]
            backendArgs = [str(p) for p in self.backends]
            if base.startswith("aiohttp"):
                script = os.path.join(self.args.gauges, "py_peer_aiohttp.py")
                argv = [python, script, str(port)]
                if base == "aiohttp-uvloop":
                    argv.append("--uvloop")
                env = dict(os.environ, BACKENDS=",".join(f"{HOST}:{p}" for p in self.backends))
                logs = ()
            elif base == "rpr":
                log = os.path.join(self.tmp, name + ".log")
                argv = [python, RPR_SERVER, str(port), backendArgs[0], log]
                logs = (log,)
            elif base in ("txlb", "txlb-alf", "txlb-h2c", "txlb-routes"):
                # txlb's access log goes to twistd's log file, or (txlb-alf)
                # to a file of its own, written in batches.
                log = os.path.join(self.tmp, name + ".log")
                options = ()
                logs = (log,)
                if base == "txlb-h2c":
                    options = ("--h2c",)
                if base == "txlb-routes":
                    routes = os.path.join(self.tmp, name + ".toml")
                    with open(routes, "w") as f:
                        f.write(routeTable(self.backends))
                    options = ("--config", routes)
                if base == "txlb-alf":
                    accessLog = os.path.join(self.tmp, name + ".access.log")
                    options = ("--access-log-file", accessLog)
                    logs = (log, accessLog)
                argv = txlbArgv(python, log, port, self.backends, options, algo=self.args.algo)
                env = txlbEnv(self.args.txlb_src)
            else:
                script = os.path.join(self.args.gauges, self.gaugeScript(spec))
                argv = [python, script, str(port)]
                if base != "pong":
                    argv += backendArgs
                logs = ()
        proc = self.procs.start(name, self.pin(self.proxyCpu, argv), env=env)
        return Target(spec, port, proc, (self.procs.output(name), *logs))

    def wrk(self, port, duration):
        """
        Run wrk (on the load CPU) against C{/ping} on C{port}.

        @return: wrk's standard output and standard error.
        @raise BenchError: if wrk fails or hangs.
        """
        return self.client(
            "wrk",
            [
                self.tools["wrk"],
                f"-t{self.args.threads}",
                f"-c{self.args.connections}",
                f"-d{duration}s",
                "--latency",
                f"http://{HOST}:{port}/ping",
            ],
            duration,
        )

    def h2load(self, port, duration, streams, log=None):
        """
        Run h2load (on the load CPU) against C{/ping} on C{port} over h2c,
        with C{streams} streams at once on each connection, writing one
        line per request to C{log} if given.

        @return: h2load's standard output and standard error.
        @raise BenchError: if h2load fails or hangs.
        """
        argv = [
            self.tools["h2load"],
            f"-t{self.args.threads}",
            f"-c{self.args.connections}",
            f"-m{streams}",
            f"-D{duration}",
        ]
        if log:
            argv.append("--log-file=" + log)
        return self.client("h2load", [*argv, f"http://{HOST}:{port}/ping"], duration)

    def client(self, name, argv, duration):
        """
        Run the load generator C{argv} for C{duration} seconds, pinned to
        the load CPU.

        @return: its standard output and standard error.
        @raise BenchError: if it fails or hangs.
        """
        argv = self.pin(self.loadCpu, argv)
        try:
            done = subprocess.run(
                argv,
                check=False,
                capture_output=True,
                text=True,
                timeout=duration + WRK_GRACE,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"{name} did not finish within {duration + WRK_GRACE}s") from None
        if done.returncode != 0:
            raise BenchError(f"{name} exited with {done.returncode}: {done.stderr.strip()}")
        return done.stdout + done.stderr

    def load(self, spec, port, duration, name=None):
        """
        Load C{port} for C{duration} seconds with the client of C{spec}:
        wrk, or h2load over h2c.  With a C{name}, measure: keep the
        output in the temporary directory as C{name}.wrk or C{name}.h2load
        (and h2load's per-request log with C{--h2load-log}).

        @return: the parsed L{Result}, if C{name} is given.
        """
        log = None
        if name and spec.client == "h2load" and self.args.h2load_log:
            log = os.path.join(self.tmp, name + ".h2load.tsv")
        if spec.client == "h2load":
            text = self.h2load(port, duration, spec.streams, log)
        else:
            text = self.wrk(port, duration)
        if name is None:
            return None
        with open(os.path.join(self.tmp, f"{name}.{spec.client}"), "w") as f:
            f.write(text)
        if spec.client == "h2load":
            return parseH2load(text, log)
        return parseWrk(text)

    def warmup(self, spec):
        """
        Seconds of warm-up for C{spec}: longer under PyPy, whose JIT warms up.
        """
        return self.args.pypy_warmup if spec.runtime == "pypy" else self.args.warmup

    def measure(self, spec):
        """
        Start C{spec}, wait until it answers, warm it up, measure it with
        wrk and stop it.  Never raises: a failure is in the L{Result}.
        """
        reason = self.unavailable(spec)
        if reason:
            return Result(failure=f"not available: {reason}", reason="not available: " + reason)
        target = None
        try:
            target = self.start(spec)
            probe = h2Status if spec.streams else httpStatus
            waitUntilServing(self.label(spec), target.port, target.proc, target.logs, probe)
            if self.warmup(spec) > 0:
                self.load(spec, target.port, self.warmup(spec))
            runs = []
            for i in range(self.args.repeat):
                meter = CpuMeter(
                    target.proc.pid, self.backendProc.pid, target.owned, self.proxyCpu, self.loadCpu
                )
                run = self.load(spec, target.port, self.args.duration, f"{spec.key}.{i + 1}")
                meter.stop(run)
                runs.append(run)
            # The best run: the one least disturbed by whatever else ran.
            result = max(runs, key=lambda r: (not r.bad, r.rps))
            if target.proc.poll() is not None:
                result.failure = f"process exited with code {target.proc.returncode}\n" + tail(
                    target.logs
                )
        except (BenchError, OSError) as e:
            result = Result(failure=str(e))
        if target is not None and result.failure:
            first = result.failure.splitlines()[0].removeprefix(self.label(spec) + " ")
            error = lastError(target.logs)
            result.reason = f"{first}: {error}" if error else first
        if target is not None and target.owned:
            if self.procs.stop(target.proc):
                warn(result, f"still running {STOP_TIMEOUT:.0f} s after SIGTERM, killed")
            if spec.kind == "txlb":
                count, first = logTrouble(target.logs)
                if count:
                    warn(result, f"{count} critical/error lines in its log, first: {first}")
        return result

    def label(self, spec):
        """
        The label of C{spec} with its interpreter, e.g. "txlb (3 backends) [PyPy]".
        """
        if spec.runtime == "native":
            return spec.label
        return f"{spec.label} [{RUNTIME_NAMES[spec.runtime]}]"


def formatMs(value, sign=False):
    """
    A latency in milliseconds for the table, or "-" if unknown.
    """
    if value is None:
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


@dataclass
class Row:
    """
    One line of the report: a target's spec, label and result, and how it
    compares with the direct backend.
    """

    spec: Spec
    label: str
    result: Result
    ofDirect: float | None = None
    addedP50: float | None = None


def compare(rows):
    """
    Fill in each row's share of the direct backend's requests/s and the p50
    it adds over the direct backend.
    """
    direct = next((r.result for r in rows if r.spec.key == "direct"), None)
    if direct is None or direct.bad:
        return
    for row in rows:
        if row.result.bad:
            continue
        if direct.rps:
            row.ofDirect = row.result.rps / direct.rps
        if row.result.p50 is not None and direct.p50 is not None:
            row.addedP50 = row.result.p50 - direct.p50


def ratios(rows):
    """
    The L{RATIOS} whose targets are both in C{rows}: (text, ratio of
    requests/s or None, ratio of requests per CPU-second or None, note).
    """
    byKey = {row.spec.key: row for row in rows}
    out = []
    for num, den in RATIOS:
        if num not in byKey or den not in byKey:
            continue
        a, b = byKey[num], byKey[den]
        runtimes = a.spec.runtime, b.spec.runtime
        if runtimes[0] == runtimes[1]:
            text = f"{a.spec.short} / {b.spec.short} ({RUNTIME_NAMES[runtimes[0]]})"
        else:
            text = " / ".join(f"{x.spec.short} ({RUNTIME_NAMES[x.spec.runtime]})" for x in (a, b))
        bad = [x.label for x in (a, b) if x.result.bad]
        if bad or not b.result.rps:
            note = f"n/a ({' and '.join(bad) or 'no requests'}: not valid)"
            out.append((text, None, None, note))
        else:
            a1, b1 = a.result.perCpu, b.result.perCpu
            out.append((text, a.result.rps / b.result.rps, a1 / b1 if a1 and b1 else None, ""))
    return out


def ratioLines(rows, valid=False):
    """
    The L{ratios} as lines of text (only those with a value if C{valid}).
    """
    return [
        f"{text}: " + (note if value is None else f"{value:.2f}x" + _perCpu(cpu))
        for text, value, cpu, note in ratios(rows)
        if value is not None or not valid
    ]


def _perCpu(ratio, bold=""):
    return "" if ratio is None else f" (per CPU-second: {bold}{ratio:.2f}x{bold})"


def addedLatency(rows, connections):
    """
    Lines on the p50 that txlb adds over the direct backend.
    """
    lines = []
    for row in rows:
        if row.spec.kind == "txlb" and row.addedP50 is not None:
            text = f"added p50, {row.label}: {row.addedP50:+.3f} ms over direct"
            if connections == 1:
                verdict = "within" if row.addedP50 <= ADDED_P50_GOAL else "over"
                text += f" ({verdict} the {ADDED_P50_GOAL} ms goal)"
            else:
                text += f" at -c{connections} (the {ADDED_P50_GOAL} ms goal is for -c1)"
            lines.append(text)
    return lines


COLUMNS = (
    "target",
    "requests/s",
    "of direct",
    "p50 ms",
    "+p50 ms",
    "p99 ms",
    "mean ms",
    "proxy CPU",
    "req/CPU-s",
    "wrk CPU",
    "other CPU",
    "errors",
)


def busy(result):
    """
    Whether other load on the machine may have skewed C{result}.
    """
    return result.skewed


def formatOther(result):
    """
    The other load during C{result}: on the target's CPU + on wrk's when
    pinned, else in all; "!" if it skewed the result.
    """
    if result.otherSides is not None:
        text = "{:.2f}+{:.2f}".format(*result.otherSides)
    elif result.otherCpu is not None:
        text = f"{result.otherCpu:.2f}"
    else:
        return "-"
    return text + (" !" if result.skewed else "")


def cells(row):
    """
    The table cells of C{row}, as text.
    """
    r = row.result
    if r.failure and not r.requests:
        return [row.label, "FAILED", *["-"] * (len(COLUMNS) - 3), r.short]
    errors = str(r.errors) + (" !!" if r.bad else "")
    return [
        row.label,
        f"{r.rps:,.0f}",
        "-" if row.ofDirect is None else f"{row.ofDirect:.2f}",
        formatMs(r.p50),
        formatMs(row.addedP50, sign=True),
        formatMs(r.p99),
        formatMs(r.mean),
        "-" if r.proxyCpu is None else f"{r.proxyCpu:.2f}",
        "-" if r.perCpu is None else f"{r.perCpu:,.0f}",
        "-" if r.loadCpu is None else f"{r.loadCpu:.2f}",
        formatOther(r),
        errors + (f" ({r.short})" if r.bad and r.short else ""),
    ]


def printReport(rows, connections):
    """
    Print the results table, the ratios, the added latency and warnings.
    """
    table = [list(COLUMNS)] + [cells(row) for row in rows]
    last = len(COLUMNS) - 1
    widths = [max(len(line[i]) for line in table) for i in range(last)]
    print()
    for line in table:
        head = f"{line[0]:<{widths[0]}}  " + "  ".join(
            f"{line[i]:>{widths[i]}}" for i in range(1, last)
        )
        print(f"{head}  {line[last]}")
    print(
        "\nh2load     the rows measured with h2load over h2c: -m streams at once on each of "
        "the -c connections;\n           h2load prints no percentiles, so p50 and p99 are "
        "'-' (unless --h2load-log)\n"
        "mean ms    the mean time for a request (wrk's Avg latency, h2load's mean time for "
        "request)\n"
        "proxy CPU  CPUs the target used while measured (1.00: its CPU is saturated)\n"
        "req/CPU-s  requests per second of the target's own CPU time (less distorted by "
        "other load)\n"
        "wrk CPU    how busy the CPU of wrk and the backends was (1.00: they set the pace; "
        "with --pin same,\n           the one CPU of all)\n"
        "other CPU  CPUs used by anything else (other processes, hypervisor steal) on "
        "the pinned CPU(s):\n"
        f"           target's + wrk's with --pin split. '!': skewed, above {BUSY_WARN} "
        "on either\n"
    )
    lines = ratioLines(rows)
    if lines:
        print("requests/s ratios:")
    for line in lines:
        print(f"  {line}")
    for line in addedLatency(rows, connections):
        print(line)
    flagged = [row.label for row in rows if busy(row.result)]
    if flagged:
        print(
            f"\n!! other load skewed {', '.join(flagged)}: run again on a quiet machine "
            "(--wait-idle), or compare req/CPU-s"
        )
    for line in warnings(rows):
        print(f"\n!! {line}")
    for row in rows:
        r = row.result
        if r.bad:
            print(
                f"\n!!! {row.label} is NOT a valid measurement: {r.requests} requests, "
                f"{r.non2xx} non-2xx/3xx, {r.socket_errors} socket errors"
            )
            if r.failure:
                print(f"!!! {r.failure.rstrip()}")


def warnings(rows):
    """
    Lines on the rows whose run had a stall or a connection served far
    less than the others, which requests/s alone can hide.
    """
    return [f"{row.label}: {row.result.warning}" for row in rows if row.result.warning]


def markdown(rows, connections, meta, chartPath, markdownPath):
    """
    The report as Markdown: where and how it was measured, the chart, the
    table, the ratios and the added latency.
    """
    lines = [
        f"Measured {meta['date']} on {meta['machine']}.",
        "",
        f"`{meta['command']}`: {meta['wrk']}; {meta['pinning']}; {'; '.join(meta['software'])}.",
        "",
    ]
    if chartPath:
        rel = os.path.relpath(chartPath, os.path.dirname(os.path.abspath(markdownPath)))
        what = "p50 latency" if connections == 1 else "requests/s"
        lines += [f"![{what} per target]({rel})", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("| --- | " + " | ".join(["---:"] * (len(COLUMNS) - 2)) + " | --- |")
    for row in rows:
        c = cells(row)
        lines.append("| " + " | ".join(x.replace("|", "/") for x in c) + " |")
    lines.append("")
    for text, value, cpu, note in ratios(rows):
        ratio = note if value is None else f"**{value:.2f}x**" + _perCpu(cpu)
        lines.append(f"- {text}: {ratio}")
    for line in addedLatency(rows, connections):
        lines.append(f"- {line}")
    for line in warnings(rows):
        lines.append(f"- **note**: {line}")
    if any(row.spec.client == "h2load" for row in rows):
        lines += [
            "",
            "The h2c rows are measured with h2load (HTTP/2 with prior knowledge, "
            "cleartext); h2load prints no percentiles, so their p50 and p99 are `-` "
            "(unless `--h2load-log`) and *mean ms* is its mean time for a request "
            "(wrk's Avg latency for the other rows).",
        ]
    if any(busy(row.result) for row in rows):
        lines += [
            "",
            f"*other CPU*: CPUs used by other processes on the target's CPU + on wrk's; "
            f"`!`: above {BUSY_WARN} on either while it was measured, so its numbers are "
            "skewed (*req/CPU-s* less so).",
        ]
    return "\n".join(lines).rstrip() + "\n"


def parseArgs(argv):
    """
    Command-line options.
    """
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(),
        epilog="targets: " + ", ".join(SPEC),
    )
    p.add_argument("-t", "--threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument(
        "-c",
        "--connections",
        type=int,
        default=32,
        help="wrk -c (default 32); -c 1 measures the latency each proxy adds",
    )
    p.add_argument(
        "-d", "--duration", type=int, default=10, help="seconds measured per target (default 10)"
    )
    p.add_argument(
        "--warmup", type=int, default=2, help="seconds of warm-up per target (default 2)"
    )
    p.add_argument(
        "--pypy-warmup",
        type=int,
        default=5,
        help="seconds of warm-up per PyPy target, for its JIT (default 5)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each target this many times (after one warm-up) and keep "
        "the run with the most requests/s (default 1)",
    )
    p.add_argument(
        "--wait-idle",
        type=int,
        default=0,
        metavar="SECONDS",
        help="before starting, wait up to this long for other load on the "
        f"machine to drop below {BUSY_WARN} CPU (default 0)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: -d 3, warm-up 1 s (PyPy 2 s); no chart or Markdown "
        "unless --chart or --markdown is given",
    )
    p.add_argument(
        "--targets",
        help="comma-separated targets to measure, in table order (default: all "
        "available; see the list below)",
    )
    p.add_argument(
        "--h2load-log",
        action="store_true",
        help="p50 and p99 for the h2load rows from its per-request log (--log-file), "
        "which costs h2load a write() per request on the load CPU",
    )
    p.add_argument("--algo", help="passed to txlb as --algo (default: roundrobin)")
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the CPython targets (default: this one)",
    )
    p.add_argument(
        "--pypy",
        help="a PyPy that imports Twisted, for the *-pypy targets (default: pypy3 "
        "on the PATH if it imports Twisted; 'none' to skip them)",
    )
    p.add_argument(
        "--txlb-src",
        default=CHECKOUT,
        help="directory txlb is imported from (default: this checkout)",
    )
    p.add_argument(
        "--gauges",
        default=GAUGES,
        help=f"directory of the gauge scripts (default: {GAUGES})",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory of logs and generated configs",
    )
    p.add_argument(
        "--pin",
        choices=("split", "same", "none"),
        help="split: each proxy on one CPU, wrk and the backends on another (the "
        "default, with 2 CPUs or more); same: all on one CPU (the default at -c 1, "
        "where only one process runs at a time, so that no request waits for another "
        "CPU to wake up); none: no pinning",
    )
    p.add_argument("--no-pin", dest="pin", action="store_const", const="none", help="--pin none")
    p.add_argument(
        "--chart",
        help="PNG chart to write (default: bench/results-cN.png for -c N; '' for none)",
    )
    p.add_argument(
        "--markdown",
        help="Markdown table to write (default: bench/results-cN.md for -c N; '' for none)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.pypy_warmup = 3, 1, 2
    if args.pin is None:
        args.pin = "same" if args.connections == 1 else "split"
    for name in ("chart", "markdown"):
        if getattr(args, name) is None:
            ext = "png" if name == "chart" else "md"
            default = os.path.join(HERE, f"results-c{args.connections}.{ext}")
            setattr(args, name, "" if args.quick else default)
    if args.connections < args.threads or min(args.threads, args.duration, args.repeat) < 1:
        p.error("need -t >= 1, -d >= 1, --repeat >= 1 and -c >= -t")
    if args.targets is not None:
        args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = [t for t in args.targets if t not in SPEC]
        if unknown or not args.targets:
            p.error(f"unknown target {','.join(unknown)}; choose from {','.join(SPEC)}")
    return args


def findTools():
    """
    Locate nginx, wrk, haproxy, h2load and taskset.

    @raise BenchError: if wrk or nginx is missing.
    """
    sbin = "/usr/sbin:/sbin"
    tools = {
        name: shutil.which(name) or shutil.which(name, path=sbin)
        for name in ("nginx", "wrk", "haproxy", "h2load", "taskset")
    }
    if not tools["wrk"] or not tools["nginx"]:
        raise BenchError("wrk and nginx are required: apt-get install wrk nginx-light")
    return tools


def describe(args, tools, cpython, pypy, bench, specs):
    """
    When, where and with what the run is made, for the report and chart.
    """
    clients = {spec.client for spec in specs}
    software = [describePython(cpython)]
    if cpython.get("aiohttp"):
        software[0] += f", aiohttp {cpython['aiohttp']}"
        if cpython.get("uvloop"):
            software[0] += f", uvloop {cpython['uvloop']}"
    if pypy:
        software.append(describePython(pypy))
    software.append("nginx " + toolVersion([tools["nginx"], "-v"], r"nginx/(\S+)"))
    if tools.get("haproxy"):
        software.append("HAProxy " + toolVersion([tools["haproxy"], "-v"], r"version (\d[\w.]*)"))
    if "wrk" in clients:
        software.append("wrk " + toolVersion([tools["wrk"], "-v"], r"wrk (\S+)"))
    if "h2load" in clients and tools.get("h2load"):
        version = toolVersion([tools["h2load"], "--version"], r"nghttp2/(\S+)")
        software.append("h2load (nghttp2) " + version)
    streams = sorted({spec.streams for spec in specs if spec.streams})
    load = []
    if "wrk" in clients or not streams:
        load.append(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s GET /ping")
    if streams:
        load.append(
            f"h2load -t{args.threads} -c{args.connections} "
            + " or ".join(f"-m{m}" for m in streams)
            + f" -D{args.duration} GET /ping over h2c (the h2c rows)"
        )
    now = datetime.datetime.now(datetime.UTC)
    return {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "software": software,
        "wrk": (
            ", ".join(load)
            + (f", best of {args.repeat}" if args.repeat > 1 else "")
            + f", warm-up {args.warmup} s"
            + (f" (PyPy {args.pypy_warmup} s)" if pypy else "")
            + f", {BACKENDS} nginx backends"
        ),
        "pinning": bench.pinning,
        "command": "python bench/run.py " + shlex.join(sys.argv[1:]),
        "connections": args.connections,
    }


def chooseTargets(args, bench, pypyNote):
    """
    The specs to measure: those asked for, or all that are available (the
    others are named in a note).
    """
    if args.targets is not None:
        return [SPEC[key] for key in args.targets]
    chosen, skipped = [], {}
    for spec in SPECS:
        reason = bench.unavailable(spec)
        if reason is None:
            chosen.append(spec)
        else:
            skipped.setdefault(reason, []).append(spec.key)
    for reason, keys in skipped.items():
        if keys and keys[0].endswith("-pypy") and pypyNote:
            reason = pypyNote
        print(f"note: skipping {', '.join(keys)}: {reason}")
    return chosen


def writeOutputs(args, rows, meta):
    """
    Write the Markdown table and the chart, if asked for.
    """
    chart = None
    if args.chart:
        try:
            import chart as charting
        except ImportError as e:
            print(f"note: no chart ({e}); pip install matplotlib, or txlb[bench]")
        else:
            notes = addedLatency(rows, args.connections)
            notes += [f"!! {line}" for line in warnings(rows)]
            charting.draw(args.chart, rows, meta, ratioLines(rows, True), notes)
            chart = args.chart
            print(f"chart: {args.chart}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, args.connections, meta, chart, args.markdown))
        print(f"markdown: {args.markdown}")


def run(args):
    """
    Start the backends, measure every target, report, stop everything.
    """
    tools = findTools()
    cpython = probePython(args.python)
    pypy, pypyNote = findPypy(args)
    if pypyNote and args.targets is not None:  # else the skipped targets are named with it
        print(f"note: {pypyNote}")
    tmp = tempfile.mkdtemp(prefix="txlb-bench-")
    procs = Processes(tmp)
    try:
        bench = Bench(args, tools, cpython, pypy, tmp, procs)
        specs = chooseTargets(args, bench, pypyNote)
        meta = describe(args, tools, cpython, pypy, bench, specs)
        print(f"{meta['machine']}\n{'; '.join(meta['software'])}")
        print(f"{meta['wrk']}; {bench.pinning}", flush=True)
        load = otherLoad()
        if load > BUSY_WARN and args.wait_idle:
            print(
                f"waiting up to {args.wait_idle} s for the machine to be idle: "
                f"{load:.2f} CPU used by others ...",
                flush=True,
            )
            began = time.monotonic()
            for _ in range(args.wait_idle):
                if load <= BUSY_WARN:
                    print(f"idle after {time.monotonic() - began:.0f} s")
                    break
                load = otherLoad()
        if load > BUSY_WARN:
            print(f"!! the machine is busy before the run: {load:.2f} CPU used by others")
        bench.startBackends()
        rows = []
        for spec in specs:
            if bench.backendProc.poll() is not None:
                raise BenchError("the nginx backends exited\n" + tail(bench.backendLogs))
            label = bench.label(spec)
            print(f"measuring {label} ...", flush=True)
            rows.append(Row(spec, label, bench.measure(spec)))
            time.sleep(SETTLE)
        compare(rows)
        printReport(rows, args.connections)
        writeOutputs(args, rows, meta)
    finally:
        procs.stopAll()
        if args.keep:
            print(f"kept the logs and configs in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    """
    Entry point: run the benchmark, exit 1 with a one-line error on failure.
    """
    args = parseArgs(argv)
    exitOnSigterm()
    try:
        run(args)
    except BenchError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("error: interrupted")


if __name__ == "__main__":
    main()

"""
Side-by-side HTTP benchmark of txlb with wrk.

Measures C{GET /ping} against three targets in one run:

  1. nginx: one nginx backend directly (the ceiling);
  2. rpr: Twisted's L{twisted.web.proxy.ReverseProxyResource} in front of
     ONE nginx backend (see bench/rpr_server.py);
  3. txlb: C{twistd -n txlb} balancing over THREE nginx backends.

The three backends are server blocks of a single nginx master (one worker)
with a generated configuration in a temporary directory.  Every server is
started here, polled until it answers on 127.0.0.1, warmed up, measured with
wrk, and stopped again in a C{finally} block.

Only the standard library (and bench/common.py) is used.  Run
C{python bench/run.py --help}.
"""

import argparse
import os
import re
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
    Processes,
    exitOnSigterm,
    freePorts,
    txlbArgv,
    txlbEnv,
)

RPR_SERVER = os.path.join(HERE, "rpr_server.py")
CHECKOUT_ENV = txlbEnv(CHECKOUT)
ALL_TARGETS = ("nginx", "rpr", "txlb")
BACKENDS = 3

STARTUP_TRIES = 150  # polls of STARTUP_DELAY seconds each: 15 s at most
STARTUP_DELAY = 0.1
WRK_GRACE = 30.0  # seconds wrk may overrun its -d before it is killed

NGINX_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {tmp}/nginx.pid;
error_log {errors} warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{servers}}}
"""

NGINX_SERVER = """\
    server {{
        listen {host}:{port};
        location = /ping {{ return 200 "pong\\n"; }}
        location / {{ return 404; }}
    }}
"""

WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
WRK_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
MS_PER_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


class BenchError(Exception):
    """
    The benchmark cannot run; the message is printed as a one-line error.
    """


@dataclass
class Target:
    """
    One thing to measure: a label, the port it listens on and its process.
    """

    key: str
    label: str
    port: int
    proc: subprocess.Popen
    logs: tuple


@dataclass
class Result:
    """
    What wrk reported for one target (or why it could not report).
    """

    rps: float = 0.0
    p50: float | None = None
    p99: float | None = None
    requests: int = 0
    non2xx: int = 0
    socket_errors: int = 0
    failure: str | None = None

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


def waitUntilServing(label, port, proc, logs):
    """
    Poll C{GET /ping} until it answers 200, a bounded number of times.

    @raise BenchError: if the process exits or never answers 200.
    """
    status = None
    for _ in range(STARTUP_TRIES):
        if proc.poll() is not None:
            raise BenchError(
                f"{label} exited with code {proc.returncode} on startup\n" + tail(logs)
            )
        status = httpStatus(port)
        if status == 200:
            return
        time.sleep(STARTUP_DELAY)
    raise BenchError(
        f"{label} on port {port} did not answer GET /ping with 200 "
        f"(last status: {status})\n" + tail(logs)
    )


def startNginx(procs, tmp, ports, nginx):
    """
    Write the nginx configuration for C{ports} and start its master.
    """
    servers = "".join(NGINX_SERVER.format(host=HOST, port=p) for p in ports)
    config = os.path.join(tmp, "nginx.conf")
    errors = os.path.join(tmp, "nginx-error.log")
    with open(config, "w") as f:
        f.write(NGINX_CONFIG.format(tmp=tmp, errors=errors, servers=servers))
    proc = procs.start("nginx", [nginx, "-p", tmp + "/", "-e", errors, "-c", config])
    return proc, (procs.output("nginx"), errors)


def startRPR(procs, tmp, python, port, backend):
    """
    Start bench/rpr_server.py proxying to the single nginx port C{backend}.
    """
    log = os.path.join(tmp, "rpr.log")
    proc = procs.start("rpr", [python, RPR_SERVER, str(port), str(backend), log])
    return proc, (procs.output("rpr"), log)


def startTxlb(procs, tmp, python, port, backends, algo):
    """
    Start C{twistd -n txlb} over C{backends}; its log goes to a file.

    txlb is imported from this checkout (the parent of bench/), not from
    whatever copy may be installed.
    """
    log = os.path.join(tmp, "txlb.log")
    argv = txlbArgv(python, log, port, backends, algo=algo)
    proc = procs.start("txlb", argv, env=CHECKOUT_ENV)
    return proc, (procs.output("txlb"), log)


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
    return result


def wrk(port, args, duration):
    """
    Run wrk against C{/ping} on C{port} for C{duration} seconds.

    @return: wrk's standard output and standard error.
    @raise BenchError: if wrk fails or hangs.
    """
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{duration}s",
        "--latency",
        f"http://{HOST}:{port}/ping",
    ]
    try:
        done = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=duration + WRK_GRACE,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + WRK_GRACE}s") from None
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout + done.stderr


def measure(target, args):
    """
    Warm C{target} up, then measure it with wrk.
    """
    try:
        if args.warmup > 0:
            wrk(target.port, args, args.warmup)
        result = parseWrk(wrk(target.port, args, args.duration))
    except BenchError as e:
        result = Result(failure=str(e))
    if target.proc.poll() is not None:
        result.failure = f"process exited with code {target.proc.returncode}\n" + tail(target.logs)
    return result


def pythonVersion(python):
    """
    Implementation and version of the interpreter C{python}, e.g. "CPython 3.11.7".
    """
    code = "import platform; print(platform.python_implementation(), platform.python_version())"
    try:
        done = subprocess.run(
            [python, "-c", code],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"cannot run --python {python}: {e}") from None
    if done.returncode != 0:
        raise BenchError(f"cannot run --python {python}: {done.stderr.strip()}")
    return done.stdout.strip()


def formatMs(value):
    """
    A latency in milliseconds for the table, or "-" if unknown.
    """
    return "-" if value is None else f"{value:.2f}"


def report(rows):
    """
    Print the results table, loud warnings, and the txlb/RPR ratio.
    """
    print()
    print(f"{'target':<36} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>10}")
    for target, result in rows:
        errors = str(result.errors) + (" !!" if result.bad else "")
        print(
            f"{target.label:<36} {result.rps:>11.2f} {formatMs(result.p50):>8} "
            f"{formatMs(result.p99):>8} {errors:>10}"
        )
    for target, result in rows:
        if result.bad:
            print(
                f"\n!!! WARNING: {target.label} is NOT a valid measurement: "
                f"{result.requests} requests, {result.non2xx} non-2xx/3xx, "
                f"{result.socket_errors} socket errors"
            )
            if result.failure:
                print(f"!!! {result.failure}")
    results = {target.key: result for target, result in rows}
    txlb, rpr = results.get("txlb"), results.get("rpr")
    if txlb and rpr and rpr.rps:
        ratio = f"{txlb.rps / rpr.rps:.2f}x"
        if txlb.bad or rpr.bad:
            ratio += " !! (from an invalid measurement, see above)"
    else:
        ratio = "n/a"
    print(f"\nratio txlb/ReverseProxyResource: {ratio}")


def parseArgs(argv):
    """
    Command-line options.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("-t", "--threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("-c", "--connections", type=int, default=32, help="wrk -c (default 32)")
    p.add_argument(
        "-d",
        "--duration",
        type=int,
        default=10,
        help="seconds measured per target (default 10)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="seconds of warm-up per target (default 2)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: -d3 and 1 s warm-up")
    p.add_argument(
        "--algo",
        help="passed to txlb as --algo (default: txlb's own default, roundrobin)",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for txlb and RPR, e.g. pypy3 "
        "(default: this one); it needs Twisted and txlb's dependencies",
    )
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="comma-separated subset of nginx,rpr,txlb (default: all)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 3, 1
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - set(ALL_TARGETS)
    if unknown or not args.targets:
        p.error(f"--targets must be a subset of {','.join(ALL_TARGETS)}")
    return args


def findTools():
    """
    Locate nginx; make sure wrk is on the PATH.

    @raise BenchError: if either is missing.
    """
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if not shutil.which("wrk") or not nginx:
        raise BenchError("wrk and nginx are required: apt-get install wrk nginx-light")
    return nginx


def startTargets(procs, tmp, args, nginx):
    """
    Start nginx and the requested proxies, and wait until all answer.

    @return: the L{Target}s to measure, in table order.
    """
    ports = freePorts(BACKENDS + 2)
    backends, rprPort, txlbPort = ports[:BACKENDS], ports[-2], ports[-1]
    nginxProc, nginxLogs = startNginx(procs, tmp, backends, nginx)
    targets = []
    if "nginx" in args.targets:
        targets.append(
            Target("nginx", "nginx (direct, 1 backend)", backends[0], nginxProc, nginxLogs)
        )
    if "rpr" in args.targets:
        proc, logs = startRPR(procs, tmp, args.python, rprPort, backends[0])
        targets.append(Target("rpr", "ReverseProxyResource (1 backend)", rprPort, proc, logs))
    if "txlb" in args.targets:
        proc, logs = startTxlb(procs, tmp, args.python, txlbPort, backends, args.algo)
        targets.append(
            Target(
                "txlb",
                f"txlb ({BACKENDS} backends, {args.algo or 'roundrobin'})",
                txlbPort,
                proc,
                logs,
            )
        )
    for port in backends:
        waitUntilServing("nginx", port, nginxProc, nginxLogs)
    for target in targets:
        waitUntilServing(target.label, target.port, target.proc, target.logs)
    return targets


def run(args):
    """
    Start everything, measure every target, print the report, stop everything.
    """
    nginx = findTools()
    version = pythonVersion(args.python)
    tmp = tempfile.mkdtemp(prefix="txlb-bench-")
    procs = Processes(tmp)
    try:
        targets = startTargets(procs, tmp, args, nginx)
        print(
            f"{version} ({args.python}); wrk -t{args.threads} "
            f"-c{args.connections} -d{args.duration}s, warm-up "
            f"{args.warmup}s; {os.cpu_count()} CPUs",
            flush=True,
        )
        rows = []
        for target in targets:
            print(f"measuring {target.label} ...", flush=True)
            rows.append((target, measure(target, args)))
        report(rows)
    finally:
        procs.stopAll()
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

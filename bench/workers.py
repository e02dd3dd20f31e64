"""
txlb with --workers 2 against --workers 1: requests/s under wrk, and how
the kernel spread the connections over the workers.

Both run unpinned (the workers, wrk and the nginx backends share every
CPU), one after the other, each --repeat times, with the same options
(--access-log-file unless --no-access-log-file).  The connection spread is
read with `ss` in the middle of each --workers 2 measurement: the
established connections to the listening port, by the process that holds
them.

    python bench/workers.py                   # 3 x 10 s of each, wrk -t2 -c64
    python bench/workers.py --python pypy3    # under another interpreter

Only the standard library, wrk, nginx and ss are used.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

from common import CHECKOUT, HOST, Processes, exitOnSigterm, freePorts, txlbArgv, txlbEnv
from run import BenchError, fill, otherLoad, parseWrk, treeCpu, waitUntilServing

BACKENDS = 3
WARMUP = 3.0  # seconds of wrk before each measurement (PyPy's JIT needs it)


def startBackends(procs, tmp):
    """
    The nginx backends of bench/run.py, three ports answering /ping.
    """
    ports = freePorts(BACKENDS)
    where = os.path.join(tmp, "backends")
    os.makedirs(where)
    servers = "\n".join(
        f"    server {{\n        listen {HOST}:{port} backlog=1024;\n"
        f'        location = /ping {{ return 200 "pong\\n"; }}\n    }}'
        for port in ports
    )
    config = os.path.join(where, "nginx.conf")
    with open(config, "w") as f:
        f.write(fill("nginx-backends.conf.in", DIR=where, COUNT=BACKENDS, SERVERS=servers))
    argv = ["nginx", "-p", where + "/", "-e", os.path.join(where, "error.log"), "-c", config]
    proc = procs.start("backends", argv)
    for port in ports:
        waitUntilServing("nginx backends", port, proc, [procs.output("backends")])
    return ports


def connectionsByProcess(port):
    """
    How many established connections to 127.0.0.1:C{port} each process
    holds, by pid.
    """
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    counts = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


def wrk(args, port, seconds):
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--latency"]
    done = subprocess.run(
        [*argv, f"http://{HOST}:{port}/ping"], capture_output=True, text=True, timeout=seconds + 30
    )
    return done.stdout


def measure(args, procs, tmp, backends, workers, run):
    """
    One measurement of txlb with C{workers}: requests/s, errors, the
    connections each worker held, and the CPUs txlb used (CPU-seconds per
    second, the supervisor and its workers together).
    """
    port, admin = freePorts(2)
    name = f"txlb-w{workers}-{run}"
    options = ["--workers", str(workers), "--admin", f"tcp:{admin}:interface={HOST}"]
    if args.access_log_file:
        options += ["--access-log-file", os.path.join(tmp, name + ".access")]
    argv = txlbArgv(args.python, os.path.join(tmp, name + ".log"), port, backends, options)
    proc = procs.start(name, argv, env=txlbEnv(CHECKOUT))
    try:
        waitUntilServing(name, port, proc, [os.path.join(tmp, name + ".log")])
        time.sleep(2)  # every worker up, not just the first
        wrk(args, port, WARMUP)
        spread = {}

        def look():
            time.sleep(args.duration / 2)
            spread.update(connectionsByProcess(port))

        looker = threading.Thread(target=look)
        looker.start()
        cpuBefore, began = treeCpu([proc.pid]), time.monotonic()
        result = parseWrk(wrk(args, port, args.duration))
        cpus = (treeCpu([proc.pid]) - cpuBefore) / (time.monotonic() - began)
        looker.join()
    finally:
        procs.stop(proc)
    if result.failure:
        raise BenchError(f"{name}: {result.failure}")
    counts = sorted((n for pid, n in spread.items() if pid != proc.pid), reverse=True)
    return result.rps, result.non2xx + result.socket_errors, counts, cpus


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--quiet",
        type=float,
        default=float("inf"),
        help="before each pair, wait until other processes use less than this many CPUs",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=600.0, help="seconds to wait for --quiet at most"
    )
    parser.add_argument("--no-access-log-file", dest="access_log_file", action="store_false")
    args = parser.parse_args()
    exitOnSigterm()
    with tempfile.TemporaryDirectory(prefix="txlb-workers-") as tmp:
        procs = Processes(tmp)
        try:
            backends = startBackends(procs, tmp)
            rows = []
            for run in range(args.repeat):
                other = otherLoad()
                deadline = time.monotonic() + args.quiet_wait
                while other > args.quiet and time.monotonic() < deadline:
                    other = otherLoad(2.0)
                one, oneErrors, _, oneCpus = measure(args, procs, tmp, backends, 1, run)
                two, twoErrors, counts, twoCpus = measure(args, procs, tmp, backends, 2, run)
                share = min(counts) / sum(counts) if len(counts) == 2 else 0.0
                rows.append((one, two, two / one, oneErrors + twoErrors, counts, share))
                print(
                    f"run {run + 1}: --workers 1 {one:,.0f} req/s, --workers 2 {two:,.0f} "
                    f"req/s: {two / one:.2f}x, errors {oneErrors + twoErrors}, "
                    f"connections {':'.join(map(str, counts))} "
                    f"({100 * share:.0f}:{100 - 100 * share:.0f}); txlb used "
                    f"{oneCpus:.2f} and {twoCpus:.2f} CPUs "
                    f"({one / oneCpus:,.0f} and {two / twoCpus:,.0f} req per CPU-second); "
                    f"other load before: {other:.2f} CPUs",
                    flush=True,
                )
        except BenchError as e:
            sys.exit(f"error: {e}")
        finally:
            procs.stopAll()
    ratios = [row[2] for row in rows]
    print(
        f"best {max(ratios):.2f}x, range {min(ratios):.2f}x to {max(ratios):.2f}x "
        f"over {len(rows)} runs; {args.python}, wrk -t{args.threads} -c{args.connections} "
        f"-d{args.duration:g}s, unpinned"
    )


if __name__ == "__main__":
    main()

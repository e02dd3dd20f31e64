"""
The algorithm targets of issue 8, measured in one run with wrk through txlb:

  1. tail latency: three test backends answering in 1, 1 and 10 ms, wrk
     -c32 through txlb with roundrobin, p2c and ewma; p50/p99 and each
     backend's share of the requests;
  2. a backend turning slow: all three at 1 ms, then one at 10 ms half way
     through the run (SIGUSR1 to it); how its request rate falls, in 100 ms
     steps, with ewma and with p2c;
  3. load feedback: all three at 1 ms, the third reporting a load of 0.8
     in X-Txlb-Load; each backend's share with roundrobin and p2c;
  4. hash with and without bounded loads: a Zipf-skewed stream of keys
     (1,000 keys, exponent 1.1, a fixed seed), sent as C{/ping?k=KEY} with
     C{--hash-key query:k} and a balance factor of 1.25, then 0 (off); from
     txlb's JSON access log, each backend's share of the in-flight load
     (time spent serving requests) against the mean, and the share of
     requests that reached their key's first choice.

Every backend is C{bench/algo_backend.py} (txlb's test backend) in its own
process.  Nothing is pinned: the figures include whatever else the machine
runs.  Only the standard library (and txlb, for the hash's first choices) is
used; run C{python bench/algorithms.py --help}.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import CHECKOUT, HERE, HOST, Processes, exitOnSigterm, freePorts, txlbArgv, txlbEnv
from run import parseWrk

sys.path.insert(0, CHECKOUT)
from txlb.algorithms.iphash import score
from txlb.backend import Backend

BACKEND = os.path.join(HERE, "algo_backend.py")
STARTUP_TRIES = 300
ZIPF_KEYS = 1000
ZIPF_EXPONENT = 1.1
ZIPF_STREAM = 50_000
SEED = 8


def waitFor(port):
    """
    Poll C{/ping} on C{port} until it answers (30 s at most).
    """
    for _ in range(STARTUP_TRIES):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


class Run:
    """
    One setting: three backends and txlb in front of them.
    """

    def __init__(self, args, procs, tmp, name, delays, slowMs=10, options=(), loads=(), ports=None):
        self.args, self.procs, self.tmp, self.name = args, procs, tmp, name
        *self.backendPorts, self.port = ports or freePorts(4)
        self.records = [os.path.join(tmp, f"{name}-{port}.json") for port in self.backendPorts]
        loads = loads or ((),) * len(delays)
        self.backends = [
            procs.start(
                f"{name}-backend-{port}",
                [args.python, BACKEND, str(port), str(delay), str(slowMs), record, *load],
                env=txlbEnv(CHECKOUT),
            )
            for port, delay, record, load in zip(self.backendPorts, delays, self.records, loads)
        ]
        for port in self.backendPorts:
            waitFor(port)
        self.accessLog = os.path.join(tmp, f"{name}-access.json")
        self.txlb = procs.start(
            f"{name}-txlb",
            txlbArgv(
                args.python,
                os.path.join(tmp, f"{name}-txlb.log"),
                self.port,
                self.backendPorts,
                ["--access-log", "json", "--access-log-file", self.accessLog, *options],
            ),
            env=txlbEnv(CHECKOUT),
        )
        waitFor(self.port)

    def wrk(self, seconds, script=None, threads=2):
        argv = ["wrk", f"-t{threads}", f"-c{self.args.connections}", f"-d{seconds}s", "--latency"]
        if script:
            argv += ["-s", script]
        argv.append(f"http://{HOST}:{self.port}/ping")
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def measure(self, seconds, script=None, threads=2, during=None):
        """
        Warm up, then run wrk for C{seconds}; call C{during} half way.
        Returns wrk's result and when the measurement started and ended.
        """
        self.wrk(self.args.warmup, script, threads).communicate()
        started = time.time()
        wrk = self.wrk(seconds, script, threads)
        if during is not None:
            time.sleep(seconds / 2)
            during()
        output, _ = wrk.communicate()
        return parseWrk(output), started, time.time()

    def turnSlow(self):
        """
        Make the third backend slow.
        """
        self.backends[2].send_signal(signal.SIGUSR1)

    def stop(self):
        """
        Stop txlb (which writes its access log), then the backends (which
        write their records); return the records.
        """
        self.procs.stop(self.txlb)
        for backend in self.backends:
            self.procs.stop(backend)
        records = []
        for path in self.records:
            with open(path) as file:
                records.append(json.load(file))
        return records

    def accessLogRecords(self):
        with open(self.accessLog) as file:
            return [json.loads(line) for line in file if line.strip()]


def shares(records, start, end):
    counts = [sum(start <= t < end for t in record["arrivals"]) for record in records]
    total = sum(counts) or 1
    return [count / total for count in counts]


def tailLatency(args, procs, tmp, lines):
    lines += [
        "## Tail latency: backends answering in 1, 1 and 10 ms",
        "",
        f"wrk -c{args.connections} for {args.duration} s (after {args.warmup} s of warm-up) "
        "through txlb.",
        "",
        "| algo | requests/s | p50 ms | p99 ms | p99 / roundrobin's | share 1 ms, 1 ms, 10 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    p99s = {}
    for algo in ("roundrobin", "p2c", "ewma"):
        run = Run(args, procs, tmp, f"tail-{algo}", (1, 1, 10), options=("--algo", algo))
        try:
            result, started, ended = run.measure(args.duration)
        finally:
            records = run.stop()
        p99s[algo] = result.p99
        ratio = result.p99 / p99s["roundrobin"] if result.p99 and p99s.get("roundrobin") else None
        share = ", ".join(f"{s:.1%}" for s in shares(records, started, ended))
        lines.append(
            f"| {algo} | {result.rps:,.0f} | {result.p50:.2f} | {result.p99:.2f} | "
            f"{'-' if ratio is None or algo == 'roundrobin' else f'{ratio:.2f}'} | {share} |"
        )
        print(lines[-1], flush=True)
    lines.append("")
    return p99s


def turningSlow(args, procs, tmp, lines):
    lines += [
        "## A backend turning slow mid-run",
        "",
        f"All three at 1 ms; the third turns 10 ms {args.duration / 2:g} s into a "
        f"{args.duration} s wrk -c{args.connections} run.  Its share of the requests:",
        "",
    ]
    for algo in ("ewma", "p2c"):
        run = Run(args, procs, tmp, f"slow-{algo}", (1, 1, 1), options=("--algo", algo))
        try:
            run.measure(args.duration, during=run.turnSlow)
        finally:
            records = run.stop()
        switched = records[2]["switched"]
        before = shares(records, switched - 1, switched)[2]
        steps = [shares(records, switched + i / 10, switched + (i + 1) / 10)[2] for i in range(10)]
        settled = shares(records, switched + 1, switched + args.duration / 2 - 0.5)[2]
        lines.append(
            f"- `{algo}`: {before:.1%} in the second before; "
            + ", ".join(f"{s:.1%}" for s in steps)
            + f" in each 100 ms of the second after; {settled:.1%} from then on."
        )
        print(lines[-1], flush=True)
    lines.append("")


def loadFeedback(args, procs, tmp, lines):
    lines += [
        "## Load feedback",
        "",
        "All three at 1 ms, the third reporting `X-Txlb-Load: 0.8` on every answer; "
        f"wrk -c{args.connections} for {args.duration} s.  Each backend's share of the requests:",
        "",
    ]
    for algo in ("roundrobin", "p2c"):
        run = Run(
            args,
            procs,
            tmp,
            f"load-{algo}",
            (1, 1, 1),
            options=("--algo", algo),
            loads=((), (), ("0.8",)),
        )
        try:
            _, started, ended = run.measure(args.duration)
        finally:
            records = run.stop()
        share = ", ".join(f"{s:.1%}" for s in shares(records, started, ended))
        lines.append(f"- `{algo}`: {share}")
        print(lines[-1], flush=True)
    lines.append("")


def zipfScript(tmp):
    """
    A wrk script sending C{/ping?k=KEY} for a Zipf-skewed stream of keys.
    """
    generator = random.Random(SEED)
    keys = list(range(1, ZIPF_KEYS + 1))
    weights = [1 / k**ZIPF_EXPONENT for k in keys]
    stream = generator.choices(keys, weights, k=ZIPF_STREAM)
    path = os.path.join(tmp, "zipf.lua")
    with open(path, "w") as file:
        file.write("local keys = {" + ",".join(map(str, stream)) + "}\n")
        file.write(
            "local i = 0\n"
            "request = function()\n"
            "  i = i % #keys + 1\n"
            '  return wrk.format("GET", "/ping?k=" .. keys[i])\n'
            "end\n"
        )
    return path, stream


def boundedLoads(args, procs, tmp, lines):
    script, stream = zipfScript(tmp)
    top = stream.count(1) / len(stream)
    lines += [
        "## Hash with bounded loads over a Zipf-skewed key stream",
        "",
        f"{ZIPF_KEYS} keys, exponent {ZIPF_EXPONENT} (the hottest key is {top:.1%} of the "
        f"requests), `--algo hash --hash-key query:k`, wrk -c{args.connections} for "
        f"{args.duration} s; backends at 1 ms.  Load is the time each backend spent on "
        "requests (its mean in-flight count), from txlb's access log.",
        "",
        "Both runs use the same ports, so each key prefers the same backend in both.",
        "",
        "| balance factor | busiest backend / mean load | loads | requests | reached first choice "
        "| p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ports = freePorts(4)
    for factor in ("1.25", "0"):
        run = Run(
            args,
            procs,
            tmp,
            f"hash-{factor}",
            (1, 1, 1),
            options=("--algo", "hash", "--hash-key", "query:k", "--hash-balance-factor", factor),
            ports=ports,
        )
        try:
            result, _, _ = run.measure(args.duration, script, threads=1)
        finally:
            run.stop()
        entries = run.accessLogRecords()
        addresses = [f"{HOST}:{port}" for port in run.backendPorts]
        backends = [Backend(HOST, port) for port in run.backendPorts]
        busy = {address: 0.0 for address in addresses}
        served = {address: 0 for address in addresses}
        first = 0
        for entry in entries:
            busy[entry["backend"]] = busy.get(entry["backend"], 0.0) + entry["totalMs"]
            served[entry["backend"]] = served.get(entry["backend"], 0) + 1
            key = entry["target"].partition("k=")[2].encode()
            best = max(backends, key=lambda b: score(key, b))
            first += best.address == entry["backend"]
        mean = sum(busy.values()) / len(addresses)
        loads = ", ".join(f"{busy[a] / mean:.2f}" for a in addresses)
        lines.append(
            f"| {factor if factor != '0' else '0 (off)'} | {max(busy.values()) / mean:.2f}x | "
            f"{loads} | {', '.join(f'{served[a] / len(entries):.1%}' for a in addresses)} | "
            f"{first / len(entries):.1%} | {result.p99:.2f} |"
        )
        print(lines[-1], flush=True)
    lines.append("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the Python txlb runs under")
    parser.add_argument("--duration", type=int, default=10, help="seconds of each measurement")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results-algorithms.md"), help="Markdown results"
    )
    args = parser.parse_args()
    exitOnSigterm()
    python = subprocess.run(
        [
            args.python,
            "-c",
            "import platform; print(platform.python_implementation(), platform.python_version())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    lines = [
        "# Algorithm benchmark",
        "",
        f"`python bench/algorithms.py`, {time.strftime('%Y-%m-%d')}: txlb under {python}, "
        f"{os.cpu_count()} CPUs shared by wrk, txlb and the three backends, nothing pinned.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        procs = Processes(tmp)
        try:
            tailLatency(args, procs, tmp, lines)
            turningSlow(args, procs, tmp, lines)
            loadFeedback(args, procs, tmp, lines)
            boundedLoads(args, procs, tmp, lines)
        finally:
            procs.stopAll()
    with open(args.out, "w") as file:
        file.write("\n".join(lines))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()

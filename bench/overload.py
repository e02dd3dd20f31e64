"""
The overload benchmark of issue 18: wrk with 200 connections through txlb
in front of three test backends of capacity 10 (C{BACKEND_CAPACITY=10}:
each serves 10 requests at a time in C{--delay} ms, and a request that
finds more in flight, itself included, takes one delay more for each one
beyond 10), with each of these settings in turn:

  - C{unloaded}: 10 connections, no limits (the latency to compare with);
  - C{no limits}: 200 connections, txlb sending every request on at once;
  - C{--max-conn 10}: 200 connections, at most 10 in flight per backend,
    the rest waiting in txlb's queue;
  - C{--max-conn auto}: 200 connections, each backend's limit learnt from
    its latency;
  - C{--max-conn 10 --max-queue 50}: the same with a queue too small for
    the connections, for the 503s;
  - C{--max-conn 10 --rate-limit R}: the same with a rate limit (every wrk
    connection comes from 127.0.0.1: one key), for the 429s.

For each: requests/s, the client's p50 and p99 (wrk), the 503s and 429s
and the backend's own p50 and p99 (from the response head's time less the
time queued, in txlb's JSON access log), and the ratio of each p99 to the
unloaded one.  During the C{auto} run, each backend's learnt limit, the
requests it has in flight and the queue's length are read from C{/status}
every C{--sample} seconds.

txlb runs under C{--python}, pinned to the first CPU; wrk and the backends
(one process, C{backend_server.tac}) to the second.  Writes
C{bench/results-overload.md} and, with matplotlib, C{bench/results-overload.png}
(requests/s and p99 per setting, and the learnt limits over time).  Only the
standard library (and matplotlib for the chart) is used; run
C{python bench/overload.py --help}.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from common import CHECKOUT, HERE, HOST, Processes, exitOnSigterm, freePorts, txlbArgv, txlbEnv
from run import parseWrk

TAC = os.path.join(CHECKOUT, "backend_server.tac")
STARTUP_TRIES = 300
CAPACITY = 10


def get(port, path, timeout=2):
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as response:
        return response.status, response.read()


def waitFor(port, path="/ping"):
    """
    Poll C{path} on C{port} until it answers 200 (30 s at most).
    """
    for _ in range(STARTUP_TRIES):
        try:
            if get(port, path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def pinned(cpu, argv):
    """
    C{argv} pinned to C{cpu}, if there are two CPUs to pin to.
    """
    if cpu is None:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def percentile(values, share):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Setting:
    def __init__(self, name, connections, options):
        self.name, self.connections, self.options = name, connections, options


def settings(args):
    return [
        Setting("unloaded", 10, []),
        Setting("no limits", args.connections, []),
        Setting("--max-conn 10", args.connections, ["--max-conn", "10"]),
        Setting("--max-conn auto", args.connections, ["--max-conn", "auto"]),
        Setting(
            "--max-conn 10 --max-queue 50",
            args.connections,
            ["--max-conn", "10", "--max-queue", "50"],
        ),
        Setting(
            f"--max-conn 10 --rate-limit {args.rate}",
            args.connections,
            ["--max-conn", "10", "--rate-limit", args.rate],
        ),
    ]


def accessLog(path, since):
    """
    The JSON access-log entries of requests logged from C{since} (a Unix
    time, to the second) on.
    """
    entries = []
    with open(path) as file:
        for line in file:
            if not line.strip():
                continue
            entry = json.loads(line)
            stamp = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            if stamp >= int(since):
                entries.append(entry)
    return entries


class Sampler(threading.Thread):
    """
    Reads C{/status} every C{interval} seconds until stopped: the time, and
    per backend its learnt limit and requests in flight, and the queue's
    length.
    """

    def __init__(self, adminPort, interval):
        super().__init__(daemon=True)
        self.adminPort, self.interval = adminPort, interval
        self.samples = []
        self.started = time.monotonic()
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(self.interval):
            try:
                status = json.loads(get(self.adminPort, "/status")[1])
            except (OSError, ValueError):
                continue
            self.samples.append(
                (
                    time.monotonic() - self.started,
                    [b["limit"] for b in status["backends"]],
                    [b["active"] for b in status["backends"]],
                    status["queue"]["length"],
                )
            )


def measure(args, procs, tmp, backendPorts, setting, cpus):
    """
    Start txlb with C{setting}, warm up, measure with wrk, stop it; return
    wrk's result, the access log's entries of the measurement, and the
    samples of C{/status}.
    """
    port, adminPort = freePorts(2)
    slug = "".join(c if c.isalnum() else "-" for c in setting.name).strip("-")
    log = os.path.join(tmp, f"{slug}-access.json")
    txlb = procs.start(
        f"{slug}-txlb",
        pinned(
            cpus[0],
            txlbArgv(
                args.python,
                os.path.join(tmp, f"{slug}-txlb.log"),
                port,
                backendPorts,
                [
                    "--access-log",
                    "json",
                    "--access-log-file",
                    log,
                    "--admin",
                    f"tcp:{adminPort}:interface={HOST}",
                    *setting.options,
                ],
            ),
        ),
        env=txlbEnv(args.txlb_src),
    )
    sampler = None
    try:
        waitFor(port)
        sampler = Sampler(adminPort, args.sample)
        sampler.start()

        def wrk(seconds):
            argv = [
                "wrk",
                "-t2",
                f"-c{setting.connections}",
                f"-d{seconds}s",
                "--timeout",
                "30s",
                "--latency",
                f"http://{HOST}:{port}/ping",
            ]
            return subprocess.run(
                pinned(cpus[1], argv), capture_output=True, text=True, check=False
            ).stdout

        wrk(args.warmup)
        started = time.time()
        result = parseWrk(wrk(args.duration))
    finally:
        if sampler is not None:
            sampler.stopping.set()
        procs.stop(txlb)
    return result, accessLog(log, started + 1), sampler.samples if sampler else []


def chart(rows, samples, path, footer):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, p99s, limits) = plt.subplots(
        3, 1, figsize=(10, 11), gridspec_kw={"height_ratios": [1, 1, 1.2]}
    )
    names = [row["name"] for row in rows]
    colours = ["#8C8C8C", "#C44E52", "#4C72B0", "#55A868", "#8172B3", "#DD8452"][: len(rows)]
    bars.barh(names, [row["rps"] for row in rows], color=colours)
    bars.invert_yaxis()
    bars.set_xlabel("requests/s (higher is better)")
    for index, row in enumerate(rows):
        bars.text(row["rps"], index, f" {row['rps']:,.0f}", va="center", fontsize=9)
    p99s.barh(names, [row["p99"] or 0 for row in rows], color=colours)
    p99s.invert_yaxis()
    p99s.set_xscale("log")
    p99s.set_xlabel("client p99, ms (log scale; lower is better)")
    for index, row in enumerate(rows):
        if row["p99"]:
            p99s.text(row["p99"], index, f" {row['p99']:,.0f} ms", va="center", fontsize=9)
    if samples:
        moments = [sample[0] for sample in samples]
        for backend in range(len(samples[0][1])):
            limits.plot(
                moments, [sample[1][backend] for sample in samples], label=f"backend {backend + 1}"
            )
        limits.axhline(CAPACITY, color="#8C8C8C", linestyle="--", label="capacity")
        limits.set_xlabel("seconds since txlb started (warm-up included)")
        limits.set_ylabel("learnt limit")
        limits.set_title("--max-conn auto: each backend's limit over time", fontsize=10)
        limits.legend(loc="upper right", fontsize=8)
    figure.suptitle("txlb under overload: 3 backends of capacity 10", fontsize=12)
    figure.text(0.01, 0.005, footer, fontsize=7, wrap=True)
    figure.tight_layout(rect=(0, 0.03, 1, 0.97))
    figure.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the Python txlb runs under")
    parser.add_argument("--txlb-src", default=CHECKOUT, help="the tree txlb is imported from")
    parser.add_argument("--duration", type=int, default=20, help="seconds of each measurement")
    parser.add_argument("--warmup", type=int, default=10, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--delay", type=int, default=50, help="the backends' delay, in ms")
    parser.add_argument("--rate", default="300/s", help="the rate limit of the last setting")
    parser.add_argument("--sample", type=float, default=0.25, help="seconds between samples")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing to CPUs")
    parser.add_argument("--out", default=os.path.join(HERE, "results-overload.md"))
    parser.add_argument("--chart", default=os.path.join(HERE, "results-overload.png"))
    args = parser.parse_args()
    exitOnSigterm()
    cpus = (None, None) if args.no_pin or (os.cpu_count() or 1) < 2 else (0, 1)
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
    before = os.getloadavg()
    rows, samples = [], []
    with tempfile.TemporaryDirectory() as tmp:
        procs = Processes(tmp)
        try:
            backendPorts = freePorts(3)
            env = dict(
                txlbEnv(args.txlb_src),
                BACKEND_PORTS=",".join(map(str, backendPorts)),
                BACKEND_CAPACITY=str(CAPACITY),
                BACKEND_DELAY_MS=",".join(f"{port}:{args.delay}" for port in backendPorts),
            )
            procs.start(
                "backends",
                pinned(
                    cpus[1],
                    [
                        args.python,
                        "-c",
                        "from twisted.scripts.twistd import run; run()",
                        "-n",
                        "--pidfile=",
                        "--logfile=" + os.path.join(tmp, "backends.log"),
                        "-y",
                        TAC,
                    ],
                ),
                env=env,
            )
            for port in backendPorts:
                waitFor(port)
            for setting in settings(args):
                result, entries, sampled = measure(args, procs, tmp, backendPorts, setting, cpus)
                served = [e for e in entries if e["backend"] != "-" and e["firstByteMs"]]
                backendMs = [e["firstByteMs"] - (e.get("queueMs") or 0) for e in served]
                queued = [e["queueMs"] for e in entries if e.get("queueMs") is not None]
                row = {
                    "name": setting.name,
                    "connections": setting.connections,
                    "rps": result.rps or 0.0,
                    "p50": result.p50,
                    "p99": result.p99,
                    "errors": result.socket_errors,
                    "503": sum(e["status"] == 503 for e in entries),
                    "429": sum(e["status"] == 429 for e in entries),
                    "backendP50": percentile(backendMs, 0.5),
                    "backendP99": percentile(backendMs, 0.99),
                    "queuedP99": percentile(queued, 0.99),
                    "logged": len(entries),
                }
                rows.append(row)
                if setting.name == "--max-conn auto":
                    samples = sampled
                print(json.dumps(row), flush=True)
        finally:
            procs.stopAll()
    after = os.getloadavg()
    base = rows[0]

    def ratio(value, reference):
        return f"{value / reference:.1f}x" if value and reference else "-"

    def ms(value):
        return "-" if value is None else f"{value:,.1f}"

    pinning = "txlb on CPU 0, wrk and the backends on CPU 1" if cpus[0] is not None else "unpinned"
    footer = (
        f"python bench/overload.py, {time.strftime('%Y-%m-%d %H:%M')}: txlb under {python}, "
        f"{pinning}; backends of capacity {CAPACITY} at {args.delay} ms; wrk -t2 --timeout 30s, "
        f"{args.warmup} s warm-up, {args.duration} s measured; load average "
        f"{before[0]:.1f} before, {after[0]:.1f} after (2 CPUs shared with other work)."
    )
    lines = [
        "# Overload benchmark",
        "",
        footer,
        "",
        f"![requests/s, p99 and learnt limits]({os.path.basename(args.chart)})",
        "",
        "| setting | connections | requests/s | p50 ms | p99 ms | p99 / unloaded | 503s | 429s "
        "| backend p50 ms | backend p99 ms | backend p99 / unloaded | queued p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| `{row['name']}` | {row['connections']} | {row['rps']:,.0f} | {ms(row['p50'])} | "
            f"{ms(row['p99'])} | {ratio(row['p99'], base['p99'])} | {row['503']} | "
            f"{row['429']} | {ms(row['backendP50'])} | {ms(row['backendP99'])} | "
            f"{ratio(row['backendP99'], base['backendP99'])} | {ms(row['queuedP99'])} |"
        )
    if samples:
        settled = [s for s in samples if s[0] >= 10]
        low = min(min(s[1]) for s in settled) if settled else None
        high = max(max(s[1]) for s in settled) if settled else None
        firstNear = next(
            (s[0] for s in samples if all(CAPACITY * 0.6 <= v <= CAPACITY * 1.5 for v in s[1])),
            None,
        )
        lines += [
            "",
            f"`--max-conn auto`: the learnt limits were within {CAPACITY * 0.6:g}-"
            f"{CAPACITY * 1.5:g} for all three backends from {ms(firstNear)} s after txlb "
            f"started; from 10 s on they ranged {low}-{high} ({len(settled)} samples, one "
            f"every {args.sample} s).",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as file:
        file.write(text)
    try:
        chart(rows, samples, args.chart, footer)
        print(f"chart: {args.chart}")
    except ImportError:
        print("no matplotlib: no chart")


if __name__ == "__main__":
    main()

"""
Fault soak of txlb: load through the balancer while its backends fail.

For C{--seconds} (default 180) C{--concurrency} clients (default 16) send a
mix of C{GET /item} and C{POST /order} (each POST with a unique id) through
txlb to three backends (bench/soak_backend.py), while a chaos loop kills and
restarts, hangs and resets the backends, at most two at a time, except for
one short window where all three are down.  At the end it prints what was
sent and how it was answered, the POST ids that reached a backend twice, the
GET failures while at least one backend was up, and txlb's memory, then one
PASS/FAIL line per acceptance criterion.  Exit code 0 if all pass, else 1.

Everything runs on 127.0.0.1 on free ports, in a temporary directory that is
removed at the end (unless C{--keep}); every process is stopped in a
C{finally} block.  Run C{python bench/soak.py --help}.
"""

import argparse
import collections
import heapq
import http.client
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
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
    txlbHelpOptions,
)

BACKEND_SCRIPT = os.path.join(HERE, "soak_backend.py")
BACKENDS = 3

#: The txlb options the soak runs with.  Those that C{twistd txlb --help}
#: does not list are dropped (and named) so the soak also runs against a
#: txlb that lacks some of them.  C{--retry-non-idempotent} is never given:
#: POSTs must not be retried.
TXLB_OPTIONS = (
    ("--health-path", "/health"),
    ("--health-interval", "1"),
    ("--health-timeout", "0.5"),
    ("--health-rise", "2"),
    ("--health-fall", "2"),
    ("--max-fails", "3"),
    ("--fail-timeout", "2"),
    ("--retries", "2"),
    ("--connect-timeout", "1"),
    ("--response-timeout", "3"),
    ("--idle-timeout", "5"),
    ("--client-timeout", "5"),
)

MAX_SECONDS = 3600
MAX_CONCURRENCY = 128
QUICK_SECONDS = 30
STARTUP_TIMEOUT = 15.0  # seconds for a process to answer after it starts
CONTROL_TIMEOUT = 2.0  # seconds for a direct request to a backend
PROGRESS_EVERY = 10.0
FAULT_KINDS = ("kill", "hang", "reset")
FAULT_GAP = (1.5, 4.0)  # seconds between the starts of two faults
FAULT_DURATION = (2.0, 5.0)  # seconds a fault lasts
RESTART_ALLOWANCE = 1.5  # seconds a killed backend may take to answer again
RSS_SLACK = (0.20, 10 * 1024)  # "flat": end <= warm-up plus 20% or 10 MB (kB)
SHOWN = 8  # examples listed per finding


class SoakError(Exception):
    """
    The soak cannot run; the message is printed as a one-line error.
    """


# Backends


def directRequest(port, method, target, timeout=CONTROL_TIMEOUT):
    """
    One request on a fresh connection to 127.0.0.1:C{port}.

    @return: the status code and body, or C{(None, reason)} on failure.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as e:
        return None, repr(e)
    finally:
        conn.close()


def tail(path, lines=15):
    """
    The last C{lines} lines of C{path}, for error messages.
    """
    try:
        with open(path, errors="replace") as f:
            return f"--- last lines of {path}:\n" + "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Backend:
    """
    One soak backend process on a fixed port, restartable on that port.
    """

    def __init__(self, index, port, procs):
        self.index = index
        self.port = port
        self.procs = procs
        self.name = f"backend{index + 1}"
        self.logPath = os.path.join(procs.tmp, self.name + ".orders")
        self.proc = None

    def start(self):
        """
        Start (or restart) the process; it appends to the same order log.
        """
        argv = [sys.executable, BACKEND_SCRIPT, str(self.port), self.logPath]
        self.proc = self.procs.start(self.name, argv)

    def kill(self):
        """
        C{SIGKILL} the process and reap it.
        """
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def serving(self):
        """
        Whether C{GET /health}, sent directly, answers 200 now.
        """
        return directRequest(self.port, "GET", "/health", timeout=0.5)[0] == 200

    def setMode(self, mode):
        """
        Switch the fault mode with C{POST /_fault?mode=MODE}.

        @raise SoakError: if the backend does not confirm it.
        """
        status, body = directRequest(self.port, "POST", f"/_fault?mode={mode}")
        if status != 200:
            raise SoakError(f"{self.name} :{self.port} refused mode {mode}: {status} {body!r}")

    def waitServing(self):
        """
        Poll until C{GET /health} answers 200.

        @raise SoakError: if the process exits or never answers.
        """
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SoakError(
                    f"{self.name} exited with code {self.proc.returncode}\n"
                    + tail(self.procs.output(self.name))
                )
            if self.serving():
                return
            time.sleep(0.05)
        raise SoakError(f"{self.name} did not answer on port {self.port}")


# txlb


def describeSource(source):
    """
    C{source}, with its git commit (and whether txlb's files differ from
    it) when it is a git work tree; read-only git commands only.
    """

    def git(*argv):
        done = subprocess.run(
            ["git", "-C", source, *argv], check=False, capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        commit = git("rev-parse", "--short", "HEAD")
        if commit is None or git("rev-parse", "--show-toplevel") != source:
            return source
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "txlb", "twisted")
    except (OSError, subprocess.TimeoutExpired):
        return source
    return f"{source} (commit {commit}{' + uncommitted changes' if dirty else ''})"


def txlbKnownOptions(env):
    """
    The long options that C{twistd txlb --help} lists.

    @raise SoakError: if the help cannot be read.
    """
    try:
        return txlbHelpOptions(sys.executable, env)
    except RuntimeError as e:
        raise SoakError(str(e)) from None


def txlbOptions(known):
    """
    Split L{TXLB_OPTIONS} into the arguments to pass and the options dropped.
    """
    passed, dropped = [], []
    for option, value in TXLB_OPTIONS:
        if option in known:
            passed += [option, value]
        else:
            dropped.append(option)
    return passed, dropped


def startTxlb(procs, env, port, backends, options, algo):
    """
    Start C{twistd -n txlb} in front of C{backends}, logging to a file, and
    wait until a C{GET /item} through it answers 200.
    """
    log = os.path.join(procs.tmp, "txlb.log")
    argv = txlbArgv(sys.executable, log, port, [b.port for b in backends], options, algo)
    proc = procs.start("txlb", argv, env=env)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    status = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SoakError(
                f"txlb exited with code {proc.returncode}\n"
                + tail(procs.output("txlb"))
                + tail(log)
            )
        status = directRequest(port, "GET", "/item?n=startup", timeout=1.0)[0]
        if status == 200:
            return proc
        time.sleep(0.1)
    raise SoakError(f"txlb did not answer GET /item with 200 (last: {status})\n" + tail(log))


def procStatus(pid):
    """
    txlb's resident memory in kB and its number of open file descriptors,
    or C{(None, None)} once it has gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration, ValueError):
        return None, None


# What happened


class Timeline:
    """
    When each backend was up: every change, stamped with C{time.monotonic()}.

    A backend is down from just before a fault is applied to it until the
    soak has seen it healthy again (a restarted backend answering
    C{GET /health} directly, or a hung or resetting one confirming mode ok).
    """

    def __init__(self, start, count):
        self.start = start
        self.lock = threading.Lock()
        self.up = [True] * count
        self.changes = [(start, count)]  # (time, number of backends up after it)
        self.downs = []  # (time, backend index): each time a backend went down

    def mark(self, index, up):
        """
        Record that backend C{index} is now up or down.
        """
        with self.lock:
            if self.up[index] == up:
                return
            now = time.monotonic()
            self.up[index] = up
            self.changes.append((now, sum(self.up)))
            if not up:
                self.downs.append((now, index))

    def upNow(self):
        """
        How many backends are up now.
        """
        with self.lock:
            return sum(self.up)

    def minUp(self, t0, t1):
        """
        The fewest backends up at any moment between C{t0} and C{t1}.
        """
        with self.lock:
            changes = list(self.changes)
        fewest = None
        for i, (t, count) in enumerate(changes):
            nextT = changes[i + 1][0] if i + 1 < len(changes) else float("inf")
            if nextT > t0 and t <= t1:
                fewest = count if fewest is None else min(fewest, count)
        return changes[0][1] if fewest is None else fewest

    def disturbed(self, t0, t1, indexes=None):
        """
        Whether one of the backends C{indexes} (any if L{None}) went down,
        or the pool came back from none up, between C{t0} and C{t1}: then
        txlb may not have noticed yet.
        """
        with self.lock:
            if any(t0 <= t <= t1 and (indexes is None or i in indexes) for t, i in self.downs):
                return True
            return any(
                t0 <= t <= t1 and count > 0 and previous == 0
                for (_, previous), (t, count) in itertools.pairwise(self.changes)
            )

    def shares(self, end):
        """
        The share of the time from the start to C{end} spent with 0..N
        backends up.
        """
        with self.lock:
            changes = [*self.changes, (end, None)]
        spent = collections.Counter()
        for (t, count), (nextT, _) in itertools.pairwise(changes):
            spent[count] += max(0.0, min(nextT, end) - t)
        total = max(end - self.start, 1e-9)
        return {count: seconds / total for count, seconds in spent.items()}


@dataclass
class Failure:
    """
    One request that did not get its expected answer.
    """

    method: str
    token: str
    start: float
    end: float
    outcome: str


class Stats:
    """
    What the clients sent and how each request was answered.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = collections.Counter()  # (method, outcome) -> requests
        self.sent = collections.Counter()  # method -> requests
        self.failures = []
        self.posts = {}  # order id -> outcome

    def record(self, method, token, outcome, expected, start, end):
        """
        Count one request; keep it if it failed, and every POST's outcome.
        """
        with self.lock:
            self.sent[method] += 1
            self.outcomes[method, outcome] += 1
            if outcome != expected:
                self.failures.append(Failure(method, token, start, end, outcome))
            if method == "POST":
                self.posts[token] = outcome

    def snapshot(self):
        """
        Requests sent, failed and unanswered so far.
        """
        with self.lock:
            sent = sum(self.sent.values())
            noAnswer = sum(n for (_, o), n in self.outcomes.items() if o.startswith("no answer"))
            return sent, len(self.failures), noAnswer


# Load


def classify(error):
    """
    A short name for why a request got no answer.
    """
    if isinstance(error, TimeoutError):
        return "no answer: timeout"
    if isinstance(error, http.client.RemoteDisconnected):
        return "no answer: closed"
    if isinstance(error, ConnectionResetError):
        return "no answer: reset"
    if isinstance(error, ConnectionRefusedError):
        return "no answer: refused"
    if isinstance(error, http.client.IncompleteRead):
        return "no answer: truncated body"
    return f"no answer: {type(error).__name__}"


def client(port, stats, stop, rng, postRatio, timeout):
    """
    One client: requests back to back on a persistent connection (a new one
    after an error or a C{Connection: close}) until C{stop} is set.

    Nothing is retried: a POST retried by the client could reach a backend
    twice through no fault of txlb's.
    """
    conn = None
    while not stop.is_set():
        if conn is None:
            conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        token = uuid.uuid4().hex
        if rng.random() < postRatio:
            method, target, expected = "POST", "/order", 201
            body, headers = f'{{"id": "{token}"}}', {"X-Order-Id": token}
            prefix = f"created {token} on :"
        else:
            method, target, expected = "GET", f"/item?n={token}", 200
            body, headers = None, {}
            prefix = f"item {token} from :"
        start = time.monotonic()
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            outcome = str(response.status)
            if response.status == expected and not data.decode(errors="replace").startswith(prefix):
                outcome += " with another request's body"
            if response.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            outcome = classify(e)
            conn.close()
            conn = None
        stats.record(method, token, outcome, str(expected), start, time.monotonic())
    if conn is not None:
        conn.close()


class Sampler(threading.Thread):
    """
    Samples txlb's RSS and open descriptors every second.
    """

    def __init__(self, pid, stop):
        super().__init__(name="sampler", daemon=True)
        self.pid = pid
        self.stop = stop
        self.samples = []  # (time, rss kB, fds)

    def sample(self):
        """
        Take one sample now, and return it.
        """
        rss, fds = procStatus(self.pid)
        if rss is not None:
            self.samples.append((time.monotonic(), rss, fds))
        return rss, fds

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(1.0)


# Chaos


@dataclass
class Fault:
    """
    One planned fault: C{kind} applied to C{backends} at C{at} seconds into
    the load, for C{duration} seconds.
    """

    at: float
    backends: tuple
    kind: str
    duration: float


def makePlan(rng, seconds, warmup, cooldown, allDown):
    """
    The faults of one run, at most two backends faulty at once, plus one
    window of C{allDown} seconds with all three killed, two thirds through.

    Each fault keeps its backend busy for its duration plus the time a
    restart may take, and a new fault only starts on a backend that is not
    busy when at most one other is, so the plan never has three down.
    """
    end = seconds - cooldown
    plan = []
    busy = [[] for _ in range(BACKENDS)]  # (from, to) per backend
    reserved = (float("inf"), float("inf"))
    if allDown > 0 and end - warmup >= allDown + RESTART_ALLOWANCE + 4:
        at = warmup + (end - warmup - allDown) * 2 / 3
        plan.append(Fault(at, tuple(range(BACKENDS)), "kill", allDown))
        # Nothing else from a second before until txlb has had time to recover.
        reserved = (at - 1.0, at + allDown + RESTART_ALLOWANCE + 2.0)
    kinds = list(FAULT_KINDS)
    rng.shuffle(kinds)  # taken in turn, so even a short run sees each kind
    t = warmup
    while t < end:
        t += rng.uniform(*FAULT_GAP)
        kind = kinds[0]
        duration = rng.uniform(*FAULT_DURATION)
        until = t + duration + (RESTART_ALLOWANCE if kind == "kill" else 0.5)
        if until > end or (t < reserved[1] and until > reserved[0]):
            continue

        def overlaps(index, t0=t, t1=until):
            return any(a < t1 and b > t0 for a, b in busy[index])

        free = [i for i in range(BACKENDS) if not overlaps(i)]
        if len(free) < BACKENDS - 1:
            continue
        index = rng.choice(free)
        busy[index].append((t, until))
        plan.append(Fault(t, (index,), kind, duration))
        kinds.append(kinds.pop(0))
    return sorted(plan, key=lambda f: f.at)


class Chaos(threading.Thread):
    """
    Applies the plan: kill and restart, hang, reset; keeps the L{Timeline}.

    Every action is an entry in a heap ordered by time; a restarted backend
    is probed every 0.1 s until it answers, a bounded number of times.
    """

    PROBES = int(STARTUP_TIMEOUT / 0.1)

    def __init__(self, plan, backends, timeline, stop, log):
        super().__init__(name="chaos", daemon=True)
        self.backends = backends
        self.timeline = timeline
        self.stop = stop
        self.log = log
        self.errors = []
        self.applied = collections.Counter()
        self.heap = []
        self.seq = 0
        for fault in plan:
            self.schedule(timeline.start + fault.at, self.begin, fault)

    def schedule(self, when, action, *args):
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, action, args))

    def run(self):
        try:
            while self.heap and not self.stop.is_set():
                when, _, action, args = heapq.heappop(self.heap)
                if self.stop.wait(max(0.0, when - time.monotonic())):
                    break
                action(*args)
        except SoakError as e:
            self.errors.append(str(e))
            self.log(f"chaos stopped: {e}")

    def names(self, fault):
        return ",".join(f":{self.backends[i].port}" for i in fault.backends)

    def begin(self, fault):
        """
        Take the fault's backends down, and schedule the end of the fault.
        """
        for i in fault.backends:
            self.timeline.mark(i, False)
        for i in fault.backends:
            if fault.kind == "kill":
                self.backends[i].kill()
            else:
                self.backends[i].setMode(fault.kind)
        self.applied["all down" if len(fault.backends) == BACKENDS else fault.kind] += 1
        self.log(
            f"{fault.kind} {self.names(fault)} for {fault.duration:.1f} s "
            f"({self.timeline.upNow()} of {BACKENDS} up)"
        )
        self.schedule(time.monotonic() + fault.duration, self.end, fault)

    def end(self, fault):
        """
        Restart killed backends (then probe them), or switch back to ok.
        """
        for i in fault.backends:
            if fault.kind == "kill":
                self.backends[i].start()
                self.schedule(time.monotonic() + 0.1, self.probe, i, self.PROBES)
            else:
                self.backends[i].setMode("ok")
                self.timeline.mark(i, True)
        if fault.kind != "kill":
            self.log(f"{fault.kind} {self.names(fault)} over ({self.timeline.upNow()} up)")

    def probe(self, index, left):
        """
        Mark a restarted backend up once it answers C{GET /health}.
        """
        backend = self.backends[index]
        if backend.serving():
            self.timeline.mark(index, True)
            self.log(f"restarted :{backend.port} serves ({self.timeline.upNow()} up)")
        elif backend.proc.poll() is not None or left <= 0:
            raise SoakError(f"{backend.name} did not come back on port {backend.port}")
        else:
            self.schedule(time.monotonic() + 0.1, self.probe, index, left - 1)


# Findings


def readOrderLogs(backends):
    """
    Every order id the backends logged: id -> list of C{(backend, mode)}.
    """
    seen = collections.defaultdict(list)
    for backend in backends:
        try:
            with open(backend.logPath, errors="replace") as f:
                for line in f:
                    orderId, _, mode = line.strip().partition(" ")
                    if orderId:
                        seen[orderId].append((backend.name, mode))
        except FileNotFoundError:
            pass
    return seen


ACCESS = re.compile(r" status=(\S+)")
ERROR = re.compile(r' error="([^"]*)"')
ITEM = re.compile(r" path=/item\?n=([0-9a-f]+) \S+ backend=\S+:(\d+) ")
STAMP = re.compile(r"^\S+ ")


def mask(text):
    """
    C{text} with request ids as C{ID}, object addresses as C{0xADDR} and
    other numbers as C{N}, so that log lines differing only there group.
    """
    text = re.sub(r"0x[0-9a-f]+", "0xADDR", re.sub(r"[0-9a-f]{32}", "ID", text))
    return re.sub(r"\d+", "N", text)


@dataclass
class TxlbLog:
    """
    What txlb's log says: statuses and errors of its access lines, its
    other lines grouped by L{mask}, tracebacks, and the backend
    ports named for each of the C{GET /item} tokens asked about.
    """

    statuses: collections.Counter
    errors: collections.Counter
    others: collections.Counter
    tracebacks: int
    backendsOf: dict


def readTxlbLog(tmp, tokens):
    """
    Read txlb's log and its rotated files; find which backends served the
    C{GET /item?n=TOKEN} requests for C{tokens}.
    """
    log = TxlbLog(collections.Counter(), collections.Counter(), collections.Counter(), 0, {})
    for name in sorted(n for n in os.listdir(tmp) if n.startswith("txlb.log")):
        with open(os.path.join(tmp, name), errors="replace") as f:
            for line in f:
                status = ACCESS.search(line)
                if status:
                    log.statuses[status.group(1)] += 1
                    error = ERROR.search(line)
                    if error:
                        log.errors[mask(error.group(1))] += 1
                    item = ITEM.search(line)
                    if item and item.group(1) in tokens:
                        log.backendsOf.setdefault(item.group(1), set()).add(int(item.group(2)))
                    continue
                if "Traceback" in line:
                    log.tracebacks += 1
                text = mask(STAMP.sub("", line.strip()))
                if text:
                    log.others[text] += 1
    return log


def judgeGets(failures, timeline, grace, backendsOf, indexOfPort):
    """
    Sort the failed GETs: those while no backend was up, those while at
    least one was (strict), and of those the ones outside the grace window.

    A failure is within the grace window if, from C{grace} seconds before
    it started until it ended, the pool came back from none up, or a
    backend went down: the backend(s) txlb's log names for that request,
    or any backend if the log names none.
    """
    allDown, strict, outside = [], [], []
    for failure in failures:
        if failure.method != "GET":
            continue
        if timeline.minUp(failure.start, failure.end) == 0:
            allDown.append(failure)
            continue
        strict.append(failure)
        ports = backendsOf.get(failure.token)
        indexes = {indexOfPort[p] for p in ports if p in indexOfPort} if ports else None
        if not timeline.disturbed(failure.start - grace, failure.end, indexes or None):
            outside.append(failure)
    return allDown, strict, outside


def megabytes(kb):
    return "-" if kb is None else f"{kb / 1024:.1f}"


def outcomeOrder(outcome):
    """
    Sort key: status codes in order, then odd answers, then no answers.
    """
    if outcome.isdigit():
        return (0, outcome)
    return (2 if outcome.startswith("no answer") else 1, outcome)


def printTable(stats):
    """
    Requests sent per method, and how they were answered.
    """
    outcomes = sorted({o for (_, o) in stats.outcomes}, key=outcomeOrder)
    print(f"{'':<44} {'GET':>8} {'POST':>8} {'total':>8}")

    def row(label, get, post):
        print(f"{label:<44} {get:>8} {post:>8} {get + post:>8}")

    row("requests sent", stats.sent["GET"], stats.sent["POST"])
    for outcome in outcomes:
        label = outcome if outcome.startswith("no answer") else f"answered {outcome}"
        row("  " + label, stats.outcomes["GET", outcome], stats.outcomes["POST", outcome])


def byOutcome(failures):
    """
    C{": 504 x41, no answer: timeout x2"} for a list of failures, or "".
    """
    counts = collections.Counter(f.outcome for f in failures)
    return (": " + ", ".join(f"{o} x{n}" for o, n in counts.most_common())) if counts else ""


def relative(timeline, t):
    return t - timeline.start


def report(args, ctx):
    """
    Print the findings and one PASS/FAIL line per acceptance criterion.

    @return: whether every criterion passed.
    """
    stats, timeline = ctx["stats"], ctx["timeline"]
    print("\n=== txlb fault soak: results ===")
    print(
        f"{ctx['loadSeconds']:.0f} s of load, {args.concurrency} clients, seed {args.seed}, "
        f"txlb from {ctx['source']}"
    )
    print(f"t=0 s is {ctx['wallStart']} in txlb's log")
    print("txlb options: " + " ".join(ctx["options"]))
    if ctx["dropped"]:
        print("txlb lacks (dropped): " + " ".join(ctx["dropped"]))
    print()
    printTable(stats)

    orders = ctx["orders"]
    twice = {i: where for i, where in orders.items() if len(where) > 1}
    created = {i for i, o in stats.posts.items() if o == "201"}
    unlogged = created - orders.keys()
    strange = orders.keys() - stats.posts.keys()
    reachedNo201 = [i for i in orders if i in stats.posts and stats.posts[i] != "201"]
    noAnswer = sum(n for (_, o), n in stats.outcomes.items() if o.startswith("no answer"))
    txlbLog = ctx["txlbLog"]
    allDown, strict, outside = judgeGets(
        stats.failures, timeline, args.grace, txlbLog.backendsOf, ctx["indexOfPort"]
    )
    shares = timeline.shares(ctx["loadEnd"])
    warm, end, peak, limit = ctx["rss"]

    def line(label, value):
        print(f"{label:<44} {value}")

    print()
    line("POST ids that reached a backend twice", len(twice))
    line("POSTs answered 201 but in no backend log", len(unlogged))
    line("ids in backend logs that no client sent", len(strange))
    line("POSTs that reached a backend, not answered 201", len(reachedNo201))
    line("GET failures while >= 1 backend up", f"{len(strict)} (strict){byOutcome(strict)}")
    line(
        "  of them outside the grace window",
        f"{len(outside)} (grace {args.grace:.1f} s){byOutcome(outside)}",
    )
    line("GET failures while 0 backends up", f"{len(allDown)}{byOutcome(allDown)}")
    line(
        "time with 3/2/1/0 backends up",
        "  ".join(f"{k}: {shares.get(k, 0.0):.0%}" for k in range(BACKENDS, -1, -1)),
    )
    line("faults applied", ", ".join(f"{k} {n}" for k, n in sorted(ctx["applied"].items())))
    line(
        "txlb RSS MB (warm-up / end / max)",
        f"{megabytes(warm)} / {megabytes(end)} / {megabytes(peak)}  (flat: end <= "
        f"{megabytes(limit)})",
    )
    line("txlb open fds (warm-up / end / max)", " / ".join(map(str, ctx["fds"])))
    if ctx["chaosErrors"]:
        line("chaos errors", "; ".join(ctx["chaosErrors"]))

    for title, found in (
        ("POST ids that reached a backend twice", list(twice.items())),
        ("POSTs answered 201 but in no backend log", sorted(unlogged)),
    ):
        if found:
            print(f"\n{title} (first {SHOWN}):")
            for item in found[:SHOWN]:
                orderId = item[0] if isinstance(item, tuple) else item
                where = orders.get(orderId, [])
                print(f"  {orderId}: client got {stats.posts.get(orderId)}, logged {where}")
    if outside:
        print(f"\nGET failures outside the grace window (first {SHOWN}):")
        for f in outside[:SHOWN]:
            via = ",".join(f":{p}" for p in sorted(txlbLog.backendsOf.get(f.token, ()))) or "?"
            print(
                f"  t={relative(timeline, f.start):7.2f}..{relative(timeline, f.end):7.2f} s  "
                f"{f.outcome}  via {via}  (backends up: at least "
                f"{timeline.minUp(f.start, f.end)})  n={f.token}"
            )

    print(
        "\ntxlb log: statuses "
        + ", ".join(f"{s}: {n}" for s, n in sorted(txlbLog.statuses.items()))
    )
    for error, n in txlbLog.errors.most_common(SHOWN):
        print(f"  {n:>7}  error={error}")
    if txlbLog.others:
        print("txlb log, other lines (request ids masked as ID, numbers as N):")
        for text, n in txlbLog.others.most_common(12):
            print(f"  {n:>7}  {text[:200]}")
    if txlbLog.tracebacks:
        print(f"!!! txlb logged {txlbLog.tracebacks} tracebacks (see the log with --keep)")

    checks = [
        ("every request got an answer", noAnswer == 0, f"{noAnswer} without an answer"),
        ("no POST reached a backend twice", not twice, f"{len(twice)} ids twice"),
        (
            "GETs succeed whenever >= 1 backend is up",
            not outside,
            f"{len(outside)} failed outside the {args.grace:.1f} s grace, {len(strict)} strict",
        ),
        (
            "txlb memory flat at the end",
            end is not None and warm is not None and end <= limit,
            f"end {megabytes(end)} MB, limit {megabytes(limit)} MB",
        ),
        ("txlb ran to the end", ctx["txlbAlive"], "txlb was running at the end"),
        ("the chaos plan ran", not ctx["chaosErrors"], "every fault applied and undone"),
    ]
    print()
    for label, passed, detail in checks:
        print(f"{'PASS' if passed else 'FAIL'}  {label}  ({detail})")
    allPassed = all(passed for _, passed, _ in checks)
    print(f"RESULT: {'PASS' if allPassed else 'FAIL'}")
    return allPassed


# The run


def soak(args, procs):
    """
    Start the backends and txlb, run load and chaos, and gather the findings.
    """
    env = txlbEnv(args.txlb_src)
    options, dropped = txlbOptions(txlbKnownOptions(env))
    if dropped:
        print("txlb does not know (dropped): " + " ".join(dropped), flush=True)
    ports = freePorts(BACKENDS + 1)
    backends = [Backend(i, port, procs) for i, port in enumerate(ports[:BACKENDS])]
    for backend in backends:
        backend.start()
    for backend in backends:
        backend.waitServing()
    txlbPort = ports[-1]
    txlb = startTxlb(procs, env, txlbPort, backends, options, args.algo)
    print(
        f"txlb pid {txlb.pid} on :{txlbPort}, backends "
        + ", ".join(f":{b.port}" for b in backends)
        + f"; {args.seconds} s of load (warm-up {args.warmup:.0f} s, cool-down "
        f"{args.cooldown:.0f} s), {args.concurrency} clients, seed {args.seed}",
        flush=True,
    )

    rng = random.Random(args.seed)
    plan = makePlan(rng, args.seconds, args.warmup, args.cooldown, args.all_down)
    stop = threading.Event()
    stats = Stats()
    timeline = Timeline(time.monotonic(), BACKENDS)
    wallStart = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def log(message):
        print(f"[{time.monotonic() - timeline.start:6.1f}s] {message}", flush=True)

    threads = [
        threading.Thread(
            target=client,
            args=(
                txlbPort,
                stats,
                stop,
                random.Random(rng.random()),
                args.post_ratio,
                args.client_timeout,
            ),
            name=f"client{n}",
            daemon=True,
        )
        for n in range(args.concurrency)
    ]
    sampler = Sampler(txlb.pid, stop)
    chaos = Chaos(plan, backends, timeline, stop, log)
    for thread in [*threads, sampler, chaos]:
        thread.start()
    warm = None
    try:
        deadline = timeline.start + args.seconds
        nextProgress = timeline.start + PROGRESS_EVERY
        while time.monotonic() < deadline and txlb.poll() is None:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            now = time.monotonic()
            if warm is None and now >= timeline.start + args.warmup:
                warm = sampler.sample()
                log(f"warm-up over: txlb RSS {megabytes(warm[0])} MB, {warm[1]} fds")
            if now >= nextProgress:
                nextProgress += PROGRESS_EVERY
                sent, failed, noAnswer = stats.snapshot()
                log(
                    f"sent {sent}, failed {failed}, no answer {noAnswer}; "
                    f"{timeline.upNow()} of {BACKENDS} up; txlb RSS "
                    f"{megabytes(procStatus(txlb.pid)[0])} MB"
                )
        final = sampler.sample()
        loadEnd = time.monotonic()
    finally:
        stop.set()
    txlbAlive = txlb.poll() is None
    if not txlbAlive:
        log(f"!!! txlb exited with code {txlb.returncode}")
    for thread in threads:
        thread.join(args.client_timeout + 5)
    chaos.join(STARTUP_TIMEOUT + 5)
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        raise SoakError(f"clients did not stop: {', '.join(stuck)}")
    log(f"load stopped; {stats.snapshot()[0]} requests")

    warmRss, warmFds = warm if warm else (None, None)
    limit = None
    if warmRss is not None:
        limit = max(warmRss * (1 + RSS_SLACK[0]), warmRss + RSS_SLACK[1])
    samples = sampler.samples
    return {
        "stats": stats,
        "timeline": timeline,
        "wallStart": wallStart,
        "source": describeSource(args.txlb_src),
        "loadEnd": loadEnd,
        "loadSeconds": loadEnd - timeline.start,
        "options": options,
        "dropped": dropped,
        "orders": readOrderLogs(backends),
        "rss": (warmRss, final[0], max((s[1] for s in samples), default=None), limit),
        "fds": (warmFds, final[1], max((s[2] for s in samples), default=None)),
        "applied": chaos.applied,
        "chaosErrors": chaos.errors,
        "txlbAlive": txlbAlive,
        "txlbLog": readTxlbLog(procs.tmp, {f.token for f in stats.failures if f.method == "GET"}),
        "indexOfPort": {b.port: b.index for b in backends},
    }


def parseArgs(argv):
    """
    Command-line options, bounded.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument(
        "--seconds",
        type=int,
        default=180,
        help=f"seconds of load (default 180, at most {MAX_SECONDS})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: --seconds {QUICK_SECONDS}",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help=f"concurrent clients (default 16, at most {MAX_CONCURRENCY})",
    )
    p.add_argument(
        "--post-ratio",
        type=float,
        default=0.4,
        help="share of requests that are POSTs (default 0.4)",
    )
    p.add_argument(
        "--client-timeout",
        type=float,
        default=15.0,
        help="seconds a client waits for an answer before counting none (default 15)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=3.0,
        help="seconds after a backend goes down (or the pool comes back from none "
        "up) in which a failed GET is not held against txlb (default 3)",
    )
    p.add_argument(
        "--all-down",
        type=float,
        default=4.0,
        help="seconds of the one window with all backends killed (default 4; 0: none)",
    )
    p.add_argument("--seed", type=int, help="seed of the fault plan (default: random)")
    p.add_argument("--algo", help="passed to txlb as --algo (default: txlb's own)")
    p.add_argument(
        "--txlb-src",
        default=CHECKOUT,
        help="directory txlb is imported from (default: this checkout)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (logs) and print its path",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = QUICK_SECONDS
    if not 10 <= args.seconds <= MAX_SECONDS:
        p.error(f"--seconds must be between 10 and {MAX_SECONDS}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        p.error(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    if not 0 <= args.post_ratio <= 1:
        p.error("--post-ratio must be between 0 and 1")
    if not 1 <= args.client_timeout <= 120 or not 0 <= args.grace <= 60:
        p.error("--client-timeout must be 1-120 s and --grace 0-60 s")
    if not 0 <= args.all_down <= 30:
        p.error("--all-down must be 0-30 s")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    args.txlb_src = os.path.abspath(args.txlb_src)
    args.warmup = args.cooldown = max(5.0, min(15.0, args.seconds / 10))
    return args


def main(argv=None):
    """
    Entry point: run the soak, print the report, exit 0 only if all passed.
    """
    args = parseArgs(argv)
    exitOnSigterm()
    tmp = tempfile.mkdtemp(prefix="txlb-soak-")
    procs = Processes(tmp)
    try:
        ctx = soak(args, procs)
        passed = report(args, ctx)
    except SoakError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("error: interrupted")
    finally:
        procs.stopAll()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()

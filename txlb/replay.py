"""
C{txlb-replay}: replay an access log through one or more policies offline,
and compare what each would have done.

It reads txlb's access log in either format, from C{--access-log-file} or
from twistd's log: JSON (C{--access-log json}) or text (the default).  A
text line has no time to the response head, so a backend serves at the
total times the log recorded for it instead.

The model is a simple queue per backend, on a simulated clock:

  - requests arrive in the order of the log; the log's time has whole
    seconds, so the requests logged in one second arrive evenly spread over
    it (C{--speed} divides every arrival time, to try a heavier load);
  - each backend serves at the latencies the log recorded for it (time to
    the response head, C{firstByteMs}, else C{totalMs}; a text line's
    C{ms}), taken in turn in
    log order, whatever request it serves (one the log never used, at the
    latencies of all);
  - each backend serves C{--concurrency} requests at once; the others wait
    their turn, first come first served.  A request's modelled latency is
    its wait plus its service time;
  - the policy picks among all the backends (none is down), seeing each
    one's requests in the model (C{active}, queued ones included); one that
    provides L{IResponseObserver} hears of each modelled response.

Requests the log records with no backend (refused, no backend up) are left
out.  The backends and their weights are those C{--backends} gives, else
those of the balancer's configuration file (C{--config}), else those of the
log, in order of first appearance, weight 1: the log keeps no weights,
which are configuration (and a log cannot say which of several a backend
had over its time).

A log of a site of several pools (its entries name their pool) is replayed
per pool: each pool's requests through each policy over that pool's
backends (from C{--config}'s C{[pools.NAME]}, else the log's), in a model
of their own, and a table per pool.  A log whose entries name no pool (an
older one, or a text log without routes) is the pool C{default}'s, as
every request of a site without routes is.
"""

from __future__ import annotations

import calendar
import getopt
import heapq
import importlib.util
import inspect
import json
import math
import random
import re
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.web.http_headers import Headers

from txlb import versionLine
from txlb.accesslog import TEXT_LINE
from txlb.algorithms import algorithmNamed
from txlb.algorithms.keyhash import parseKey
from txlb.algorithms.policyloader import MakeAlgorithm, makeChecked
from txlb.backend import Backend, parseBackend, parseBackends
from txlb.config import tomllib
from txlb.interfaces import IAlgorithm, IResponseObserver
from txlb.proxy import DEFAULT_POOL


@dataclass
class Entry:
    """
    One request of the log.

    @ivar arrival: When it arrives in the model, in seconds from the start.
    @ivar seconds: The latency its backend recorded for it.
    @ivar text: Whether it comes from a text line, which has only the
        request's total time, not the time to the response head.
    @ivar pool: The pool the log says it went to, or C{None} when the log
        does not say (an older log, a text line of a site without routes).
    """

    client: str
    method: str
    target: str
    backend: str
    arrival: float
    seconds: float
    text: bool = False
    pool: str | None = None


class ReplayRequest:
    """
    What a policy may read of a request (see L{IAlgorithm.pick}), from a
    log entry: the client address, method and target; no header.
    """

    def __init__(self, entry: Entry) -> None:
        self.method = entry.method.encode("latin-1")
        self.uri = entry.target.encode("latin-1")
        self.requestHeaders = Headers()
        self._address = IPv4Address("TCP", entry.client, 0)

    def getClientAddress(self) -> IPv4Address:
        return self._address

    def getCookie(self, name: bytes) -> bytes | None:
        return None


#: The time twistd's log and the access-log file start a line with.
_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:[+-][0-9:]{4,5})?")


class NotAnAccessLogError(ValueError):
    """
    No line of the file is an access-log line.
    """


def readLog(lines: Iterable[str], speed: float = 1.0) -> list[Entry]:
    """
    The requests of an access log that reached a backend.

    A text line's time is the stamp before it; a JSON line's is its
    C{time}, or else the stamp before its object (in twistd's log, with
    the line's source).  Other lines are skipped.

    @raise ValueError: For a line whose object is not an access-log entry,
        or an entry without a time, with its number.
    @raise NotAnAccessLogError: When no line is an access-log line.
    """
    seconds: list[float] = []
    found: list[dict[str, Any]] = []
    read = False
    for number, line in enumerate(lines, 1):
        text = TEXT_LINE.search(line.rstrip("\r\n"))
        latency: float | None
        stamp: float | None
        if text is not None:
            record: dict[str, Any] = text.groupdict()
            stamp = _stampBefore(line[: text.start()], number)
            # The time it waited in txlb's queue was not the backend's.
            latency = float(record["ms"]) - float(record["queued"] or 0)
            backend = record["backend"]
            fields = (record["client"], record["method"], record["target"])
            pool = record["pool"]
        else:
            start = line.find("{")
            if start < 0:
                continue
            try:
                record = json.loads(line[start:])
                backend = record["backend"]
                latency = record.get("firstByteMs")
                if latency is None:
                    latency = record["totalMs"]
                if latency is not None:
                    latency -= record.get("queueMs") or 0.0
                fields = (record["client"], record["method"], record["target"])
                pool = record.get("pool")
                stamp = _seconds(record["time"]) if "time" in record else None
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"line {number}: not a JSON access-log entry ({e})") from None
            if stamp is None:
                stamp = _stampBefore(line[:start], number)
        read = True
        if backend == "-" or latency is None:
            continue
        seconds.append(stamp)
        found.append(
            {
                "fields": fields,
                "backend": backend,
                "latency": latency / 1000,
                "text": bool(text),
                "pool": pool,
            }
        )
    if not read:
        raise NotAnAccessLogError("no line is an access-log line")
    entries = []
    first = min(seconds, default=0.0)
    perSecond: dict[float, int] = {}
    for stamp in seconds:
        perSecond[stamp] = perSecond.get(stamp, 0) + 1
    seen: dict[float, int] = {}
    for stamp, record in zip(seconds, found):
        index = seen[stamp] = seen.get(stamp, 0) + 1
        arrival = (stamp - first + (index - 1) / perSecond[stamp]) / speed
        client, method, target = record["fields"]
        entries.append(
            Entry(
                client,
                method,
                target,
                record["backend"],
                arrival,
                record["latency"],
                record["text"],
                record["pool"],
            )
        )
    return entries


def byPool(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """
    The entries of each pool, by name, in the order the pools first appear
    in the log; an entry that names no pool is the pool C{default}'s.

    Each keeps its arrival in the whole log, so that the model of each
    pool sees its requests when they came.
    """
    pools: dict[str, list[Entry]] = {}
    for entry in entries:
        pools.setdefault(entry.pool or DEFAULT_POOL, []).append(entry)
    return pools


def _stampBefore(prefix: str, number: int) -> float:
    """
    Seconds since the epoch of the time in C{prefix}, what comes before a
    line's entry.

    @raise ValueError: If it has none.
    """
    stamp = _STAMP.search(prefix)
    if stamp is None:
        raise ValueError(f"line {number}: an access-log entry without a time")
    return _seconds(stamp.group())


def _seconds(stamp: str) -> float:
    """
    Seconds since the epoch of an access-log C{time}: ISO 8601 to the
    second, with its offset (C{+0100}, C{-05:30}, or none for UTC).
    """
    seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    offset = stamp[19:].replace(":", "")
    if offset:
        sign = -1 if offset[0] == "-" else 1
        seconds -= sign * (int(offset[1:3]) * 3600 + int(offset[3:5]) * 60)
    return seconds


@dataclass
class Result:
    """
    What one policy did with the log, in the model.

    @ivar picks: Requests per backend address, in the backends' order.
    @ivar latencies: The modelled latency of each request, in seconds.
    """

    policy: str
    picks: dict[str, int]
    latencies: list[float] = field(repr=False)

    def share(self, address: str) -> float:
        total = sum(self.picks.values())
        return self.picks[address] / total if total else 0.0

    def spread(self, weights: dict[str, int]) -> float:
        """
        The busiest backend's requests over its fair share of them (by
        weight): 1 is even.
        """
        total = sum(self.picks.values())
        weight = sum(weights.values())
        if not total:
            return 0.0
        return max(self.picks[a] / (total * weights[a] / weight) for a in self.picks)

    def percentile(self, p: float) -> float:
        """
        The C{p}th percentile of the latencies, in seconds (nearest rank).
        """
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def simulate(
    entries: Sequence[Entry],
    backends: Sequence[Backend],
    algorithm: IAlgorithm,
    clock: Clock,
    concurrency: int,
    name: str,
) -> Result:
    """
    Run C{entries} through C{algorithm} over C{backends} in the model; the
    algorithm reads C{clock}, which the model moves.
    """
    byAddress = {backend.address: backend for backend in backends}
    service: dict[str, list[float]] = {address: [] for address in byAddress}
    for entry in entries:
        if entry.backend in service:
            service[entry.backend].append(entry.seconds)
    everyone = [entry.seconds for entry in entries]
    for times in service.values():
        # A backend the log never used serves at the latencies of all.
        times.extend([] if times else everyone)
    served: dict[str, deque[float]] = {address: deque() for address in byAddress}
    observe = algorithm.answered if IResponseObserver.providedBy(algorithm) else None
    busy = dict.fromkeys(byAddress, 0)
    waiting: dict[str, deque[float]] = {address: deque() for address in byAddress}
    ends: list[tuple[float, int, str, float, float]] = []
    picks = dict.fromkeys(byAddress, 0)
    latencies: list[float] = []
    order = 0

    def serviceTime(address: str) -> float:
        times = served[address]
        if not times:
            times.extend(service[address])
        return times.popleft()

    def start(address: str, arrival: float, now: float) -> None:
        nonlocal order
        busy[address] += 1
        order += 1
        heapq.heappush(ends, (now + serviceTime(address), order, address, arrival, now))

    def finishUntil(moment: float) -> None:
        while ends and ends[0][0] <= moment:
            end, _, address, arrival, _ = heapq.heappop(ends)
            clock.advance(end - clock.seconds())
            backend = byAddress[address]
            backend.active -= 1
            busy[address] -= 1
            latencies.append(end - arrival)
            if observe is not None:
                observe(backend, end - arrival)
            if waiting[address]:
                start(address, waiting[address].popleft(), end)

    for entry in entries:
        finishUntil(entry.arrival)
        clock.advance(entry.arrival - clock.seconds())
        backend = algorithm.pick(ReplayRequest(entry), backends)
        address = backend.address
        picks[address] += 1
        backend.active += 1
        if busy[address] < concurrency:
            start(address, entry.arrival, entry.arrival)
        else:
            waiting[address].append(entry.arrival)
    finishUntil(math.inf)
    return Result(name, picks, latencies)


def build(
    make: MakeAlgorithm, backends: Sequence[Backend], clock: Clock, seed: int, spec: str
) -> IAlgorithm:
    """
    The algorithm C{make} makes, on the model's clock and with a seeded
    random generator if it takes them (C{reactor=}, C{random=}).

    @raise ValueError: As L{makeChecked}.
    """
    try:
        parameters = inspect.signature(make).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    options: dict[str, Any] = {}
    if "reactor" in parameters:
        options["reactor"] = clock
    if "random" in parameters:
        options["random"] = random.Random(seed)
    return makeChecked(lambda b: make(b, **options), backends, spec)


def table(results: Sequence[Result], backends: Sequence[Backend]) -> str:
    """
    The results, one line per policy: spread, p50, p99 and each backend's
    share.
    """
    weights = {backend.address: backend.weight for backend in backends}
    width = max([len("policy"), *(len(r.policy) for r in results)])
    head = [f"{'policy':<{width}}", "spread", "p50 ms", "p99 ms"]
    head += [backend.address for backend in backends]
    lines = ["  ".join(head)]
    for result in results:
        row = [
            f"{result.policy:<{width}}",
            f"{result.spread(weights):6.2f}",
            f"{result.percentile(50) * 1000:6.1f}",
            f"{result.percentile(99) * 1000:6.1f}",
        ]
        row += [f"{result.share(b.address) * 100:{len(b.address) - 1}.1f}%" for b in backends]
        lines.append("  ".join(row))
    return "\n".join(lines) + "\n"


@dataclass
class Replayed:
    """
    What the policies did with one pool's requests.

    @ivar pool: The pool's name, or C{None} for the log of one pool.
    @ivar backends: The pool's backends, with their weights.
    @ivar results: Each policy's, in the order given.
    @ivar requests: How many of the log's requests went to the pool.
    """

    pool: str | None
    backends: Sequence[Backend]
    results: Sequence[Result]
    requests: int


def tables(replayed: Sequence[Replayed]) -> str:
    """
    The table of each pool, under its name when there are several.
    """
    parts = []
    for pool in replayed:
        head = ""
        if pool.pool is not None:
            backends = len(pool.backends)
            head = (
                f"pool {pool.pool}: {pool.requests} request{'s' * (pool.requests != 1)},"
                f" {backends} backend{'s' * (backends != 1)}\n"
            )
        parts.append(head + table(pool.results, pool.backends))
    return "\n".join(parts)


def plot(replayed: Sequence[Replayed], path: str) -> None:
    """
    Draw each policy's shares and p50/p99 latencies into C{path}: a row
    per pool.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(replayed), 2, figsize=(11, 4 * len(replayed)), squeeze=False)
    for pool, (shares, latency) in zip(replayed, axes):
        _plotPool(pool, shares, latency)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plotPool(pool: Replayed, shares: Any, latency: Any) -> None:
    """
    Draw one pool's shares and latencies on the axes C{shares} and
    C{latency}.
    """
    results, backends = pool.results, pool.backends
    count = len(results)
    width = 0.8 / count
    for index, result in enumerate(results):
        offsets = [i + index * width for i in range(len(backends))]
        shares.bar(offsets, [result.share(b.address) * 100 for b in backends], width)
        latency.bar(
            [index * 3, index * 3 + 1],
            [result.percentile(50) * 1000, result.percentile(99) * 1000],
            label=result.policy,
        )
    shares.set_xticks([i + 0.4 - width / 2 for i in range(len(backends))])
    shares.set_xticklabels([b.address for b in backends], fontsize=8)
    shares.set_ylabel("share of requests (%)")
    shares.set_title("Requests per backend" + ("" if pool.pool is None else f", pool {pool.pool}"))
    latency.set_xticks([i * 3 + 0.5 for i in range(count)])
    latency.set_xticklabels(
        [f"{r.policy}\np50 | p99" for r in results], fontsize=7, rotation=20, ha="right"
    )
    latency.set_ylabel("modelled latency (ms)")
    latency.set_title("Latency" + ("" if pool.pool is None else f", pool {pool.pool}"))
    latency.legend(fontsize=8)


def positive(option: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0
        if not 0 < value < math.inf:
            raise usage.UsageError(f"--{option}: {text!r} is not a positive number")
        return value

    return parse


class ReplayOptions(usage.Options):
    synopsis = "Usage: txlb-replay [options] ACCESS_LOG POLICY [POLICY ...]"
    longdesc = (
        "Replay txlb's access log (text or JSON, from --access-log-file or twistd's "
        "log) through each policy (any --algo name) in a queueing model where "
        "backends serve at the latencies the log recorded, and print each policy's "
        "load spread, backend shares and modelled p50/p99. Options may come anywhere."
    )
    optParameters = [
        [
            "backends",
            "b",
            None,
            "HOST:PORT[=WEIGHT],... (default: those of --config, else of the log, weight 1);"
            " for a log of one pool.",
        ],
        [
            "config",
            None,
            None,
            "txlb's configuration file: its pools' backends, weights and hash-key.",
        ],
        ["concurrency", "c", 4, "Requests each backend serves at once.", int],
        ["speed", "s", 1.0, "Arrivals this many times faster than logged.", positive("speed")],
        ["seed", None, 1, "Seed of the policies' random generators.", int],
        [
            "hash-key",
            None,
            None,
            "What hash hashes: ip, path, uri or query:NAME (default: that of --config, else ip).",
        ],
        ["plot", None, None, "Draw the results into this PNG (needs matplotlib)."],
    ]

    def opt_version(self) -> None:
        """
        Display txlb's version (and Twisted's and Python's) and exit.
        """
        print(versionLine())
        sys.exit(0)

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse as usual, but with options anywhere, before, between or after
        the log and the policies (as GNU's C{getopt} does); after C{--},
        everything is an argument.
        """
        arguments = list(sys.argv[1:] if options is None else options)
        try:
            found, rest = getopt.gnu_getopt(arguments, self.shortOpt, self.longOpt)
        except getopt.error as e:
            raise usage.UsageError(str(e)) from None
        ordered: list[str] = []
        for option, value in found:
            if option.startswith("--"):
                takesValue = option[2:] + "=" in self.longOpt
                ordered.append(f"{option}={value}" if takesValue else option)
            else:
                ordered += [option, value] if option[1] + ":" in self.shortOpt else [option]
        super().parseOptions([*ordered, "--", *rest])

    def parseArgs(self, log: str, *policies: str) -> None:  # type: ignore[override]
        if not policies:
            raise usage.UsageError("name at least one policy")
        self["log"] = log
        self["policies"] = list(policies)

    def postOptions(self) -> None:
        if self["concurrency"] < 1:
            raise usage.UsageError("--concurrency: must be at least 1")
        if self["plot"] is not None and importlib.util.find_spec("matplotlib") is None:
            raise usage.UsageError("--plot needs matplotlib (pip install txlb[bench])")


@dataclass
class Configured:
    """
    What the balancer's configuration file says of its pools.

    @ivar pools: Each pool's static backends (with their weights) and hash
        key, by name, each C{None} if the file does not set it; the top
        level's backends are the pool C{default}'s.
    @ivar hashKey: The top level's hash key, which a pool that sets none
        takes.
    """

    pools: dict[str, tuple[list[Backend] | None, str | None]]
    hashKey: str | None

    def backends(self, pool: str) -> list[Backend] | None:
        return self.pools.get(pool, (None, None))[0]

    def hashKeyOf(self, pool: str) -> str | None:
        return self.pools.get(pool, (None, None))[1] or self.hashKey


def fromConfig(path: str) -> Configured:
    """
    The pools of the balancer's configuration file at C{path}.

    @raise usage.UsageError: With one line, if the file cannot be read or
        a pool's C{backends} or C{hash-key} are not what txlb takes.
    """
    try:
        with open(path, "rb") as file:
            settings = tomllib.load(file)
        top = _poolOf(settings, "")
        tables = settings.get("pools", {})
        if not isinstance(tables, dict):
            raise ValueError("pools: expected tables ([pools.NAME])")
        pools = {DEFAULT_POOL: top}
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise ValueError(f"pools.{name}: expected a table ([pools.{name}])")
            pools[name] = _poolOf(table, f"pools.{name}.")
        return Configured(pools, top[1])
    except (OSError, ValueError) as e:
        # tomllib's TOMLDecodeError is a ValueError.
        raise usage.UsageError(f"--config {path}: {e}") from None


def _poolOf(table: dict[str, Any], where: str) -> tuple[list[Backend] | None, str | None]:
    """
    The backends and the hash key of a pool's C{table} (or the top
    level's), each C{None} if the table does not set it.

    @param where: What names the table's keys in a message.
    @raise ValueError: If they are not what txlb takes.
    """
    backends = table.get("backends")
    if isinstance(backends, list) and all(isinstance(b, str) for b in backends):
        backends = ",".join(backends)
    if not (backends is None or isinstance(backends, str)):
        raise ValueError(f'{where}backends: expected a list of "HOST:PORT[=WEIGHT]" strings')
    hashKey = table.get("hash-key")
    if not (hashKey is None or isinstance(hashKey, str)):
        raise ValueError(f"{where}hash-key: expected a string")
    if hashKey is not None:
        try:
            parseKey(hashKey)
        except ValueError as e:
            raise ValueError(f"{where}hash-key: {e}") from None
    try:
        return (None if backends is None else parseBackends(backends)), hashKey
    except ValueError as e:
        raise ValueError(f"{where}backends: {e}" if where else str(e)) from None


def main(argv: Sequence[str] | None = None, out: Any = None) -> int:
    """
    The C{txlb-replay} command.
    """
    out = out or sys.stdout
    options = ReplayOptions()
    # What the numbers depend on, for the user to know.
    notes: list[str] = []
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
        configured = Configured({}, None)
        if options["config"] is not None:
            configured = fromConfig(options["config"])
        try:
            with open(options["log"], encoding="utf-8", errors="replace") as file:
                entries = readLog(file, options["speed"])
        except NotAnAccessLogError:
            raise usage.UsageError(
                f"{options['log']}: not txlb's access log (no line is a text or JSON"
                " access-log line)"
            ) from None
        if not entries:
            raise usage.UsageError(f"{options['log']}: no request reached a backend")
        pools = byPool(entries)
        given = None
        if options["backends"] is not None:
            if len(pools) > 1:
                raise usage.UsageError(
                    f"--backends gives the backends of one pool, and the log has {len(pools)}"
                    f" ({', '.join(pools)}): give each pool's with --config FILE"
                )
            try:
                given = parseBackends(options["backends"])
            except ValueError as e:
                raise usage.UsageError(f"--backends: {e}") from None
        if options["hash-key"] is not None:
            try:
                parseKey(options["hash-key"])
            except ValueError as e:
                raise usage.UsageError(f"--hash-key: {e}") from None
        if any(entry.text for entry in entries):
            notes.append(
                "a text line has no time to the response head: backends serve at the"
                " requests' total times (ms=); --access-log json logs both"
            )
        unweighted: list[str] = []
        replayed = []
        for name, poolEntries in pools.items():
            specs = given or configured.backends(name)
            if specs is None:
                specs = [parseBackend(a) for a in dict.fromkeys(e.backend for e in poolEntries)]
                unweighted.append(name)
            hashKey = options["hash-key"] or configured.hashKeyOf(name) or "ip"
            results = [
                _replay(poolEntries, specs, spec, hashKey, options) for spec in options["policies"]
            ]
            titled = name if len(pools) > 1 else None
            replayed.append(Replayed(titled, specs, results, len(poolEntries)))
        if unweighted and len(pools) == 1:
            notes.insert(
                0,
                "the log keeps no weights: every backend weighs 1 (give them with"
                " --backends HOST:PORT=WEIGHT,... or --config FILE)",
            )
        elif unweighted:
            named = (
                f"pool {unweighted[0]}"
                if len(unweighted) == 1
                else "pools " + ", ".join(unweighted)
            )
            notes.insert(
                0,
                f"the log keeps no weights: every backend of {named} weighs 1 (give them"
                " with --config FILE)",
            )
    except (usage.UsageError, OSError, ValueError) as e:
        print(f"txlb-replay: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"txlb-replay: note: {note}", file=sys.stderr)
    out.write(tables(replayed))
    if options["plot"] is not None:
        plot(replayed, options["plot"])
    return 0


def _replay(
    entries: Sequence[Entry], specs: Sequence[Backend], spec: str, hashKey: str, options: Any
) -> Result:
    """
    One pool's C{entries} through the policy C{spec} over fresh copies of
    C{specs}, on a clock of its own.

    @raise usage.UsageError: If the policy cannot be made.
    """
    backends = [Backend(b.host, b.port, b.weight) for b in specs]
    clock = Clock()
    try:
        algorithm = build(algorithmNamed(spec, hashKey), backends, clock, options["seed"], spec)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    return simulate(entries, backends, algorithm, clock, options["concurrency"], spec)

"""
A fleet under load: three txlb instances (one with C{--workers 2}) following
one etcd, in front of test backends that register themselves under leases,
while backends die and come, the configuration document changes and an
operator drains and restores a backend through one instance's admin API.

Everything runs on 127.0.0.1 on free ports, in a temporary folder removed at
the end; every process is stopped in a C{finally} block.  The instances are
started without C{--config}: they wait for etcd and take everything from it.

It prints the requests answered and failed (by reason, with when), and, for
each change, how long it took to be applied by every instance (every worker
of the one with C{--workers}), read from their C{/status} every 10 ms: from
the write to etcd (the admin request, for a drain), from the kill for a
backend that died (its lease's TTL included), from its first answer for a
new backend.  A backend that leaves counts as applied once no process sends
it new requests (out of the pool, or draining the requests it has).

Run C{python bench/fleet.py [--seconds 40] [--concurrency 8]}.  Only the
standard library; txlb is imported from this checkout.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request

from common import CHECKOUT, HOST, TWISTD, Processes, exitOnSigterm, freePorts, txlbEnv

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
TTL = 2  # seconds of the backends' leases
POLL = 0.01  # seconds between two looks at the instances' status
SETTLE = 15.0  # seconds a change may take to reach every instance


class FleetError(Exception):
    pass


def waitFor(what, condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.05)
    raise FleetError(f"timed out waiting for {what}")


def request(port, method, path, body=None, timeout=5.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Etcd:
    def __init__(self, procs, tmp):
        self.port, peer = freePorts(2)
        self.url = f"http://{HOST}:{self.port}"
        peerURL = f"http://{HOST}:{peer}"
        self.proc = procs.start(
            "etcd",
            [
                ETCD,
                "--name=bench",
                f"--data-dir={os.path.join(tmp, 'etcd')}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peerURL}",
                f"--initial-advertise-peer-urls={peerURL}",
                f"--initial-cluster=bench={peerURL}",
                "--heartbeat-interval=10",
                "--election-timeout=100",
                "--listen-metrics-urls=",
                "--log-level=warn",
            ],
        )
        waitFor("etcd", lambda: request(self.port, "GET", "/health")[0] == 200)

    def put(self, key, value):
        """
        Put C{value} at C{/txlb/KEY}, and return the revision of the write.
        """
        body = json.dumps(
            {
                "key": base64.b64encode(f"/txlb/{key}".encode()).decode(),
                "value": base64.b64encode(value.encode()).decode(),
            }
        ).encode()
        with urllib.request.urlopen(f"{self.url}/v3/kv/put", body, timeout=5) as answer:
            return int(json.load(answer)["header"]["revision"])


class Instance:
    def __init__(self, name, procs, etcd, workers=1):
        self.name = name
        self.port, self.admin = freePorts(2)
        argv = [
            sys.executable,
            "-c",
            TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={os.path.join(procs.tmp, name + '.log')}",
            "txlb",
            "--listen",
            f"tcp:{self.port}:interface={HOST}",
            "--admin",
            f"tcp:{self.admin}:interface={HOST}",
            "--etcd",
            etcd.url,
        ]
        if workers > 1:
            argv += ["--workers", str(workers)]
        self.proc = procs.start(name, argv, env=txlbEnv(CHECKOUT))

    def views(self):
        """
        The status of each process that serves: the instance's, or each of
        its workers'.
        """
        code, body = request(self.admin, "GET", "/status", timeout=2)
        if code != 200:
            raise ValueError(code)
        status = json.loads(body)
        return status.get("workers", [status])


def startBackend(procs, etcd, index):
    (port,) = freePorts(1)
    env = dict(
        txlbEnv(CHECKOUT),
        BACKEND_PORTS=str(port),
        BACKEND_ETCD=etcd.url,
        BACKEND_ETCD_TTL=str(TTL),
    )
    tac = os.path.join(CHECKOUT, "backend_server.tac")
    proc = procs.start(
        f"backend{index}", [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "-y", tac], env=env
    )
    waitFor(f"backend {port}", lambda: request(port, "GET", "/ping", timeout=1)[0] == 200)
    return proc, f"{HOST}:{port}"


class Load:
    """
    C{concurrency} threads sending C{GET /ping} to the instances in turn,
    each on its own keep-alive connection to each instance.
    """

    def __init__(self, instances, concurrency, started):
        self.instances = instances
        self.started = started
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered = 0
        self.failed = []
        self.threads = [
            threading.Thread(target=self.client, daemon=True) for _ in range(concurrency)
        ]

    def client(self):
        conns = {}
        turn = 0
        while not self.stop.is_set():
            instance = self.instances[turn % len(self.instances)]
            turn += 1
            conn = conns.get(instance.name)
            if conn is None:
                conn = conns[instance.name] = http.client.HTTPConnection(
                    HOST, instance.port, timeout=10
                )
            try:
                conn.request("GET", "/ping")
                response = conn.getresponse()
                body = response.read()
                ok = response.status == 200 and body.startswith(b"pong")
                reason = None if ok else f"{response.status} {body[:60]!r}"
            except (OSError, http.client.HTTPException) as e:
                reason = f"{type(e).__name__} (connection to {instance.name})"
                conn.close()
                conns.pop(instance.name)
            with self.lock:
                if reason is None:
                    self.answered += 1
                else:
                    self.failed.append((time.monotonic() - self.started, instance.name, reason))


def settle(instances, condition, since):
    """
    Wait until C{condition(view)} holds for every process of every
    instance; return the seconds since C{since} at which each instance
    had it everywhere.
    """
    reached = {}
    deadline = time.monotonic() + SETTLE
    while len(reached) < len(instances):
        if time.monotonic() > deadline:
            missing = sorted(i.name for i in instances if i.name not in reached)
            raise FleetError(f"not applied within {SETTLE:g} s by {', '.join(missing)}")
        for instance in instances:
            if instance.name in reached:
                continue
            try:
                if all(condition(view) for view in instance.views()):
                    reached[instance.name] = time.monotonic() - since
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                pass
        time.sleep(POLL)
    return reached


def backendsOf(view):
    return {b["address"]: b for b in view["backends"]}


def gone(address):
    """
    Whether a view no longer sends new requests to C{address}: out of the
    pool, or draining the requests it has before it leaves.
    """
    return lambda view: backendsOf(view).get(address, {"state": "draining"})["state"] == "draining"


def run(args, procs):
    etcd = Etcd(procs, procs.tmp)
    etcd.put("config.toml", 'algo = "roundrobin"\nretries = 2\n')
    backends = [startBackend(procs, etcd, index) for index in range(4)]
    instances = [
        Instance("A", procs, etcd),
        Instance("B", procs, etcd, workers=2),
        Instance("C", procs, etcd),
    ]
    for instance in instances:
        waitFor(
            f"instance {instance.name}",
            lambda instance=instance: all(len(view["backends"]) == 4 for view in instance.views()),
        )
    started = time.monotonic()
    load = Load(instances, args.concurrency, started)
    for thread in load.threads:
        thread.start()
    changes = []
    step = args.seconds / 8

    def change(what, act, condition):
        time.sleep(max(0.0, started + step * (len(changes) + 1) - time.monotonic()))
        at = time.monotonic()
        result = act()
        if isinstance(result, float):
            # When the change happened, if not when it was started.
            at = result
        reached = settle(instances, condition, at)
        changes.append((round(at - started, 1), what, reached))

    dead = backends[0][1]
    change(
        f"backend {dead} killed (SIGKILL; lease TTL {TTL} s)",
        lambda: backends[0][0].kill(),
        gone(dead),
    )
    newcomer = []

    def add():
        newcomer.append(startBackend(procs, etcd, 4))
        # From when it answers (and registers), not from its start.
        return time.monotonic()

    change(
        "a new backend registers",
        add,
        lambda view: newcomer[0][1] in backendsOf(view),
    )
    change(
        "config.toml: algo leastconn",
        lambda: etcd.put("config.toml", 'algo = "leastconn"\nretries = 2\n'),
        lambda view: view["algorithm"] == "leastconn",
    )
    drained = backends[1][1]
    change(
        f"drain {drained} through A's admin API",
        lambda: request(instances[0].admin, "POST", f"/backends/{drained}/drain"),
        lambda view: backendsOf(view)[drained]["state"] == "draining",
    )
    change(
        f"restore {drained} through B's admin API (its supervisor's)",
        lambda: request(instances[1].admin, "PATCH", f"/backends/{drained}", {"draining": False}),
        lambda view: backendsOf(view)[drained]["state"] == "up",
    )
    change(
        "config.toml: algo p2c",
        lambda: etcd.put("config.toml", 'algo = "p2c"\nretries = 2\n'),
        lambda view: view["algorithm"] == "p2c",
    )
    stopped = backends[2][1]
    change(
        f"backend {stopped} stopped (SIGTERM: lease revoked)",
        lambda: procs.stop(backends[2][0]),
        gone(stopped),
    )
    time.sleep(max(0.0, started + args.seconds - time.monotonic()))
    load.stop.set()
    for thread in load.threads:
        thread.join(15)
    return load, changes, time.monotonic() - started


def report(args, load, changes, seconds):
    print(
        f"# Fleet: 3 instances (B with --workers 2), 1 etcd, backends under {TTL} s leases;"
        f" {args.concurrency} clients for {seconds:.0f} s\n"
    )
    total = load.answered + len(load.failed)
    print(f"- requests: {total}, answered 200: {load.answered}, failed: {len(load.failed)}")
    for at, name, reason in load.failed[:20]:
        print(f"  - at {at:.1f} s via {name}: {reason}")
    print("\n| at (s) | change | applied by A / B / C (ms) |\n|---|---|---|")
    for at, what, reached in changes:
        times = " / ".join(f"{reached[n] * 1000:.0f}" for n in "ABC")
        print(f"| {at} | {what} | {times} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    exitOnSigterm()
    tmp = tempfile.mkdtemp(prefix="txlb-fleet-")
    procs = Processes(tmp)
    try:
        load, changes, seconds = run(args, procs)
        report(args, load, changes, seconds)
    except FleetError as e:
        print(f"fleet: {e} (logs in {tmp})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        procs.stopAll()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Memory targets of txlb, measured: one line per target with the figure and
PASS or FAIL.

  big      a 1 GiB response to a client reading at 10 MiB/s grows txlb by at
           most 32 MiB (peak VmRSS over the baseline taken after warm-up);
  idle     an idle keep-alive client connection costs at most 8 KiB
           ((VmRSS with N idle connections - VmRSS before) / N);
  head16,  a backend that sends a 16 MiB, a 64 MiB or an endless response
  head64,  head (header lines that never end) costs at most the head limit,
  endless  64 KiB, plus a noise allowance (--slack);
  mirror   a 1 GiB upload, sent as fast as txlb takes it and mirrored (a
           route's mirror) to a backend reading 1 MiB/s, grows txlb by at
           most 8 MiB more than the same upload without a mirror, and its
           backend gets all of it.

The backend is a small threaded raw-socket server inside this script; the
clients are plain sockets.  Each case gets a fresh txlb (twistd -n txlb,
imported from --txlb-src) and its own baseline.  Every wait is bounded by
time, every loop by count, and txlb's growth by --rss-cap.  Everything runs
on 127.0.0.1 in a temporary directory that is removed at the end (unless
--keep); every process is stopped in a finally block.  Exit code 0 if every
line passes, 1 if one fails, 2 if the run cannot be done.  Run
C{python bench/memory.py --help}.
"""

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs, urlsplit

from common import (
    CHECKOUT,
    HOST,
    STOP_TIMEOUT,
    Processes,
    exitOnSigterm,
    freePorts,
    txlbArgv,
    txlbEnv,
    txlbHelpOptions,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CASES = ("big", "idle", "head16", "head64", "endless", "mirror")
HEAD_SIZES = {"head16": 16 * MiB, "head64": 64 * MiB, "endless": None}

#: Targets from the issue.
BIG_TARGET = 32 * MiB
#: What a mirror may add to an upload's growth: the request's high mark
#: (512 KiB) waits for it at most, and its connection's buffer 64 KiB.
MIRROR_TARGET = 8 * MiB
IDLE_TARGET = 8 * KiB

STARTUP_TIMEOUT = 20.0  # seconds for txlb to answer after it starts
IO_TIMEOUT = 5.0  # seconds for one small request through txlb
SETTLE = 1.0  # seconds left to txlb before a baseline or an "after" reading
SAMPLE_EVERY = 0.05  # seconds between two VmRSS readings
PROGRESS_EVERY = 10.0
PATTERN = bytes(range(256)) * 4096  # the big body: this 1 MiB, repeated
MAX_HEAD = 64 * KiB  # the longest response head a client here accepts
IDLE_OPEN_TIMEOUT = 120.0  # seconds to open all idle connections

#: The txlb options every case runs with; those that `twistd txlb --help`
#: does not list are dropped (and named).  --client-timeout keeps the idle
#: connections open during the measurement; --retries 0 because with one
#: backend a retry only asks it again (a second 16 MiB head, or a 502 page
#: warm-up that takes the backend out after three failures).
BASE_OPTIONS = (("--client-timeout", "3600"), ("--retries", "0"))


class BenchError(Exception):
    """
    The run cannot be done; the message is printed as an error.
    """


def mib(n):
    return f"{n / MiB:.1f} MiB"


def human(n):
    """
    A size for a label: C{1 GiB}, C{200 MiB}, C{64 KiB}, or C{1.5 MiB}.
    """
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return mib(n) if n >= MiB else f"{n:,} bytes"


def signedMib(n):
    return f"{'+' if n >= 0 else '-'}{abs(n) / MiB:.1f} MiB"


# /proc


def rssBytes(pid):
    """
    VmRSS of C{pid} in bytes, or C{None} once it has gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KiB
    except (OSError, ValueError, IndexError):
        pass
    return None


class Sampler:
    """
    Reads txlb's VmRSS every L{SAMPLE_EVERY} s in a thread and keeps the
    peak.  Past C{cap} bytes of growth over C{base} it sets C{capped} and
    the C{halt} event, which stops the backend and the clients.
    """

    def __init__(self, pid, base, cap, halt):
        self.pid = pid
        self.base = base
        self.cap = cap
        self.halt = halt
        self.peak = base
        self.last = base
        self.capped = None  # seconds into the case when the cap was hit
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            rss = rssBytes(self.pid)
            if rss is None:
                return
            self.last = rss
            self.peak = max(self.peak, rss)
            if self.capped is None and rss - self.base > self.cap:
                self.capped = time.monotonic() - self.started
                self.halt.set()
            self._stop.wait(SAMPLE_EVERY)

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        rss = rssBytes(self.pid)
        if rss is not None:
            self.last = rss
            self.peak = max(self.peak, rss)

    @property
    def growth(self):
        return self.peak - self.base


# The backend


def sendAll(sock, data, stop):
    """
    Send all of C{data} unless C{stop()} turns true or the peer goes away.
    The socket has a short timeout, so that a blocked send notices.

    @return: whether everything was sent.
    """
    view = memoryview(data)
    while view:
        if stop():
            return False
        try:
            sent = sock.send(view)
        except TimeoutError:
            continue
        except OSError:
            return False
        view = view[sent:]
    return True


def padLine(lineSize, number=None):
    """
    One header line of C{lineSize} bytes with its CRLF: C{X-Pad: aaa...},
    or C{X-Pad-00000042: aaa...} if a C{number} is given.
    """
    name = b"X-Pad" if number is None else b"X-Pad-%08d" % number
    return name + b": " + b"a" * (lineSize - len(name) - 4) + b"\r\n"


class Backend:
    """
    A raw-socket HTTP/1.1 backend on 127.0.0.1, one thread per connection,
    keep-alive.  Its answers, by path:

      /small          200 with a 3-byte body
      /big?size=N     200 with Content-Length N and N bytes of L{PATTERN},
                      as fast as the connection takes them
      /head?size=N    C{HTTP/1.1 200 OK} then N bytes of X-Pad header lines
                      (all named X-Pad, or X-Pad-00000001... if distinct),
                      never ending the head, then silence until the peer
                      closes; size=0: header lines without end
      /head?size=N&end=1  the same N bytes of lines, then a proper end
                      (Content-Length: 0): a legal head, for warm-up
      /bad            a line that is not HTTP, then close
      /sink           (a PUT) reads the Content-Length body, at most
                      C{readRate} bytes/s if not 0, then 200

    Setting C{halt} stops every send and hold; L{close} stops everything.
    """

    def __init__(self, lineSize, distinct, readRate=0):
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(512)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.lineSize = lineSize
        self.distinct = distinct
        self.chunkLines = max(1, MiB // lineSize)
        self.padChunk = padLine(lineSize) * self.chunkLines
        self.headTook = None  # seconds the last unended head took to send
        self.closed = threading.Event()
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.requests = {}  # path: count
        self.sentHead = 0  # bytes of head lines sent by /head answers
        self.readRate = readRate
        self.sunk = 0  # bytes of /sink bodies read
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def stopping(self):
        return self.closed.is_set() or self.halt.is_set()

    def _accept(self):
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self.active += 1
                self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn):
        try:
            conn.settimeout(0.2)
            buf = b""
            for _ in range(1_000_000):  # requests on one connection
                head, buf = self._readHead(conn, buf)
                if head is None:
                    return
                if head.startswith(b"PUT /sink "):
                    buf = self._sink(conn, head, buf)
                    if buf is None:
                        return
                if not self._answer(conn, head):
                    return
        finally:
            conn.close()
            with self.lock:
                self.active -= 1

    def _readHead(self, conn, buf):
        while b"\r\n\r\n" not in buf:
            if self.closed.is_set() or len(buf) > MAX_HEAD:
                return None, b""
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None, b""
            if not data:
                return None, b""
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head, rest

    def _sink(self, conn, head, buf):
        """
        Read the body of a C{PUT /sink} (C{buf} holds its start), at most
        L{readRate} bytes/s if set.

        @return: what follows the body, or C{None} if the connection ended
            first.
        """
        match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        remaining = int(match.group(1)) if match else 0
        taken = min(len(buf), remaining)
        remaining -= taken
        buf = buf[taken:]
        self._sunk(taken)
        started, got = time.monotonic(), taken
        chunk = bytearray(64 * KiB)
        while remaining:
            if self.stopping():
                return None
            allowed = min(len(chunk), remaining)
            if self.readRate:
                allowed = min(allowed, int(self.readRate * (time.monotonic() - started)) - got)
                if allowed <= 0:
                    time.sleep(min(0.05, (1 - allowed) / self.readRate))
                    continue
            try:
                n = conn.recv_into(chunk, allowed)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not n:
                return None
            remaining -= n
            got += n
            self._sunk(n)
        return buf

    def _sunk(self, n):
        with self.lock:
            self.sunk += n

    def _answer(self, conn, head):
        """
        Answer one request; return whether the connection stays open.
        """
        try:
            _, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        except ValueError:
            return False
        url = urlsplit(target)
        query = parse_qs(url.query)
        with self.lock:
            self.requests[url.path] = self.requests.get(url.path, 0) + 1
        if url.path in ("/small", "/sink"):
            return sendAll(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n", self.stopping)
        if url.path == "/big":
            size = int(query["size"][0])
            if not sendAll(
                conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, self.stopping
            ):
                return False
            whole, part = divmod(size, len(PATTERN))
            for _ in range(whole):
                if not sendAll(conn, PATTERN, self.stopping):
                    return False
            return sendAll(conn, PATTERN[:part], self.stopping)
        if url.path == "/head":
            return self._head(conn, int(query["size"][0]), "end" in query)
        if url.path == "/bad":
            sendAll(conn, b"THIS IS NOT HTTP\r\n\r\n", self.stopping)
            return False
        return sendAll(conn, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", self.stopping)

    def _head(self, conn, size, end):
        if not sendAll(conn, b"HTTP/1.1 200 OK\r\n", self.stopping):
            return False
        started = time.monotonic()
        lines = -(-size // self.lineSize) if size else None  # None: endless
        number = 0
        while lines is None or lines > 0:
            count = self.chunkLines if lines is None else min(lines, self.chunkLines)
            if self.distinct:
                chunk = b"".join(padLine(self.lineSize, number + i) for i in range(count))
                number += count
            else:
                chunk = self.padChunk[: count * self.lineSize]
            if not sendAll(conn, chunk, self.stopping):
                return False
            with self.lock:
                self.sentHead += len(chunk)
            if lines is not None:
                lines -= count
        if end:
            return sendAll(conn, b"Content-Length: 0\r\n\r\n", self.stopping)
        self.headTook = time.monotonic() - started
        while not self.stopping():  # hold the unfinished head until the peer closes
            try:
                if not conn.recv(65536):
                    return False
            except TimeoutError:
                continue
            except OSError:
                return False
        return False

    def quiesce(self, timeout=5.0):
        """
        Stop every answer in progress and wait (bounded) for their
        connections to end, then accept new answers again.
        """
        self.halt.set()
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        self.halt.clear()
        self.resetCounts()

    def resetCounts(self):
        with self.lock:
            self.requests.clear()
            self.sentHead = 0
            self.headTook = None
            self.sunk = 0

    def close(self):
        self.closed.set()
        self.listener.close()
        self.acceptor.join(2)
        for thread in list(self.threads):
            thread.join(1)


# Clients


def readHead(sock, buf=b"", deadline=None, stop=lambda: False):
    """
    Read a response head from C{sock}.

    @return: C{(status, headers, rest)}; C{status} is C{None} if the
        connection ended (or the deadline or C{stop} came) first, and then
        C{headers} is a reason.
    """
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            return None, f"head over {MAX_HEAD // KiB} KiB", buf
        if stop() or (deadline is not None and time.monotonic() > deadline):
            return None, "no answer", buf
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if deadline is None:
                return None, "timed out", buf
            continue
        except ConnectionResetError:
            return None, "reset", buf
        except OSError as e:
            return None, repr(e), buf
        if not data:
            return None, "closed", buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        return None, f"not HTTP: {lines[0][:40]!r}", rest
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def get(sock, target):
    """
    One keep-alive C{GET} on C{sock} (with a timeout set), its body read in
    full.

    @return: the status and body.
    @raise BenchError: if no whole answer comes.
    """
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    status, headers, body = readHead(sock)
    if status is None:
        raise BenchError(f"GET {target} through txlb: {headers}")
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise BenchError(f"GET {target} through txlb: closed mid-body")
        body += data
    return status, body


def getOnce(port, target, timeout=IO_TIMEOUT):
    """
    L{get} on a new connection, closed afterwards.
    """
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        return get(sock, target)


def stillOpen(sock):
    """
    Whether txlb has left C{sock} open: a closed connection reads EOF.
    """
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def checkPattern(offset, data):
    """
    Whether C{data} is what L{PATTERN} repeated holds at C{offset}.
    """
    view = memoryview(data)
    while view:
        start = offset % len(PATTERN)
        n = min(len(view), len(PATTERN) - start)
        if view[:n] != PATTERN[start : start + n]:
            return False
        view, offset = view[n:], offset + n
    return True


# txlb


def describeSource(source):
    """
    C{source}, with its git commit when it is a git work tree.
    """
    try:
        done = subprocess.run(
            ["git", "-C", source, "log", "-1", "--format=%h %s"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return source
    return f"{source} ({done.stdout.strip()})" if done.returncode == 0 else source


def knownOptions(python, env):
    """
    The long options that C{twistd txlb --help} lists under C{python}.
    """
    try:
        return txlbHelpOptions(python, env)
    except RuntimeError as e:
        raise BenchError(str(e)) from None


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return f"\n--- last lines of {path}:\n" + "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Run:
    """
    What every case shares: options, the processes, the backend, the txlb
    command-line options that exist.
    """

    def __init__(self, args, procs, backend, env, known):
        self.args = args
        self.procs = procs
        self.backend = backend
        self.env = env
        self.options = []
        self.dropped = []
        for option, value in BASE_OPTIONS + tuple(args.txlb_options):
            if option in known:
                self.options += [option, value]
            else:
                self.dropped.append(option)
        self.results = []  # (case, target, measured, passed, note)

    def startTxlb(self, name, options=()):
        """
        Start a fresh txlb in front of the backend, with C{options} more,
        and wait until C{GET /small} through it answers 200.

        @return: the process and its port.
        """
        (port,) = freePorts(1)
        log = os.path.join(self.procs.tmp, name + ".log")
        argv = txlbArgv(self.args.python, log, port, [self.backend.port], [*self.options, *options])
        proc = self.procs.start(name, argv, env=self.env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(
                    f"txlb exited with code {proc.returncode}"
                    + tail(self.procs.output(name))
                    + tail(log)
                )
            try:
                last = getOnce(port, "/small", timeout=1.0)[0]
            except (OSError, BenchError) as e:
                last = e
            if last == 200:
                return proc, port
            time.sleep(0.1)
        raise BenchError(f"txlb did not answer GET /small with 200 (last: {last})" + tail(log))

    def stopTxlb(self, proc):
        """
        Stop one txlb, then let the backend finish what it was sending.
        """
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.backend.quiesce()

    def warmUp(self, port, extra=()):
        """
        Requests that make txlb import and allocate what any request needs:
        keep-alive and new connections, then C{extra} targets.
        """
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as sock:
            for _ in range(50):
                get(sock, "/small")
        for _ in range(50):
            getOnce(port, "/small")
        for target in extra:
            try:
                getOnce(port, target, timeout=15.0)
            except (OSError, BenchError):
                pass  # a 502 path may close the connection: that is warm-up too

    def baseline(self, pid):
        time.sleep(SETTLE)
        rss = rssBytes(pid)
        if rss is None:
            raise BenchError("txlb went away during warm-up")
        return rss

    def record(self, case, target, measured, passed, note=""):
        self.results.append((case, target, measured, passed, note))
        print(f"  -> {measured}: {'PASS' if passed else 'FAIL'}{'  ' + note if note else ''}")
        sys.stdout.flush()


# The cases


def caseBig(run):
    args = run.args
    size, rate = args.big_size, args.rate
    label = f"{human(size)} response, client at {human(rate)}/s"
    print(f"[big] {label}")
    proc, port = run.startTxlb("txlb-big")
    try:
        run.warmUp(port, [f"/big?size={4 * MiB}"])
        base = run.baseline(proc.pid)
        halt = run.backend.halt
        sampler = Sampler(proc.pid, base, args.rss_cap, halt)
        limit = size / rate * 1.5 + 30
        got, error, ok = 0, None, True
        started = time.monotonic()
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as sock:
                sock.sendall(f"GET /big?size={size} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                status, headers, rest = readHead(sock, deadline=started + 30, stop=halt.is_set)
                if status != 200 or headers.get("content-length") != str(size):
                    raise BenchError(f"answer: {status} {headers}")
                ok = checkPattern(0, rest)
                got = len(rest)
                buf = bytearray(64 * KiB)
                nextReport = started + PROGRESS_EVERY
                while got < size and ok:
                    now = time.monotonic()
                    if halt.is_set() or now - started > limit:
                        error = "stopped: " + ("RSS cap" if halt.is_set() else "time limit")
                        break
                    if now >= nextReport:
                        print(
                            f"  {now - started:4.0f} s: {mib(got)} received, "
                            f"txlb VmRSS {mib(sampler.last)} (peak {signedMib(sampler.growth)})"
                        )
                        sys.stdout.flush()
                        nextReport += PROGRESS_EVERY
                    allowed = min(len(buf), int(rate * (now - started)) - got, size - got)
                    if allowed <= 0:
                        time.sleep(min(0.05, (1 - allowed) / rate))
                        continue
                    try:
                        n = sock.recv_into(buf, allowed)
                    except TimeoutError:
                        continue
                    if not n:
                        error = "closed early"
                        break
                    ok = checkPattern(got, memoryview(buf)[:n])
                    got += n
                if got == size and ok:
                    sock.settimeout(0.5)  # nothing may follow the body
                    try:
                        extra = sock.recv(1)
                    except TimeoutError:
                        extra = b""
                    if extra:
                        error = "bytes after the body"
        except (OSError, BenchError) as e:
            error = str(e) or repr(e)
        elapsed = time.monotonic() - started
        sampler.stop()
    finally:
        run.stopTxlb(proc)
    whole = got == size and ok and error is None
    note = (
        f"base {mib(base)}, peak {mib(sampler.peak)}; client got {got:,} of {size:,} bytes"
        f"{' intact' if ok else ' CORRUPT'} in {elapsed:.1f} s"
        f" ({got / elapsed / MiB:.1f} MiB/s)" + (f"; {error}" if error else "")
    )
    if sampler.capped is not None:
        note += f"; --rss-cap hit after {sampler.capped:.1f} s"
    run.record(
        label,
        f"growth <= {human(BIG_TARGET)}",
        signedMib(sampler.growth),
        whole and sampler.growth <= BIG_TARGET,
        note,
    )


def caseIdle(run):
    n = run.args.idle
    label = f"idle keep-alive client connections x{n}"
    print(f"[idle] {label}")
    proc, port = run.startTxlb("txlb-idle")
    socks = []
    try:
        run.warmUp(port)
        # open and close a tenth as many first, so that the first ones do
        # not pay for growing txlb's tables alone
        for _ in range(max(1, n // 10)):
            getOnce(port, "/small")
        base = run.baseline(proc.pid)
        started = time.monotonic()
        error = None
        try:
            for _ in range(n):
                if time.monotonic() - started > IDLE_OPEN_TIMEOUT:
                    error = f"time limit after {len(socks)} connections"
                    break
                sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
                socks.append(sock)
                status, _ = get(sock, "/small")
                if status != 200:
                    error = f"GET /small answered {status}"
                    break
        except (OSError, BenchError) as e:
            error = f"after {len(socks)} connections: {e}"
        opened = time.monotonic() - started
        after = run.baseline(proc.pid)
        alive = sum(stillOpen(sock) for sock in socks)
        for sock in socks:
            sock.close()
        closedRss = run.baseline(proc.pid)
    finally:
        for sock in socks:
            sock.close()
        run.stopTxlb(proc)
    per = (after - base) / max(1, len(socks))
    note = (
        f"base {mib(base)}, with {len(socks)} idle {mib(after)} "
        f"({signedMib(after - base)}), {alive} still open after {SETTLE:.0f} s; "
        f"after closing them {mib(closedRss)}; opened in {opened:.1f} s"
        + (f"; {error}" if error else "")
    )
    run.record(
        label,
        f"<= {human(IDLE_TARGET)} per connection",
        f"{per / KiB:.2f} KiB per connection",
        error is None and alive == len(socks) == n and per <= IDLE_TARGET,
        note,
    )


def caseHead(run, name):
    args = run.args
    size = HEAD_SIZES[name]
    label = "endless response head" if size is None else f"{human(size)} response head, never ended"
    names = "distinct names" if run.backend.distinct else "all named X-Pad"
    print(f"[{name}] {label} ({run.backend.lineSize}-byte header lines, {names})")
    proc, port = run.startTxlb("txlb-" + name)
    halt = run.backend.halt
    try:
        run.warmUp(port, ["/bad", f"/head?size={32 * KiB}&end=1"])
        base = run.baseline(proc.pid)
        run.backend.resetCounts()
        sampler = Sampler(proc.pid, base, args.rss_cap, halt)
        started = time.monotonic()
        deadline = started + args.head_seconds
        answer, answeredAt, bodyBytes = None, None, 0
        try:
            with socket.create_connection((HOST, port), timeout=0.2) as sock:
                target = f"/head?size={size or 0}"
                sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                rest, waited = b"", 0.0
                while True:  # in slices, for a progress line every slice
                    waited = min(waited + PROGRESS_EVERY, args.head_seconds)
                    status, headers, rest = readHead(
                        sock, rest, deadline=started + waited, stop=halt.is_set
                    )
                    if headers != "no answer" or halt.is_set() or waited >= args.head_seconds:
                        break
                    print(
                        f"  {waited:4.0f} s: no answer yet; backend sent "
                        f"{mib(run.backend.sentHead)} of head, txlb VmRSS {mib(sampler.last)}"
                    )
                    sys.stdout.flush()
                answeredAt = time.monotonic() - started
                if status is None:
                    answer = headers
                else:
                    answer = str(status)
                    bodyBytes = len(rest)
                    length = int(headers.get("content-length", "0") or 0)
                    while bodyBytes < length and time.monotonic() < deadline:
                        try:
                            data = sock.recv(65536)
                        except TimeoutError:
                            continue
                        if not data:
                            break
                        bodyBytes += len(data)
        except OSError as e:
            answer, answeredAt = repr(e), time.monotonic() - started
        # leave txlb a moment to free what it held, then read it again
        time.sleep(SETTLE)
        sampler.stop()
        sent = run.backend.sentHead
        took = run.backend.headTook
        requests = run.backend.requests.get("/head", 0)
    finally:
        run.stopTxlb(proc)
    if answer == "no answer":
        what = f"no answer in {args.head_seconds:.0f} s"
    else:
        what = f"{answer} after {answeredAt:.2f} s"
    note = (
        f"base {mib(base)}, peak {mib(sampler.peak)}, {SETTLE:.0f} s after the end "
        f"{mib(sampler.last)}; client: {what}; backend sent {mib(sent)} of head"
        + (f" in {requests} requests" if requests != 1 else "")
        + (f", the last byte {took:.1f} s after the request" if took is not None else "")
    )
    if sampler.capped is not None:
        note += f"; --rss-cap hit after {sampler.capped:.1f} s, backend stopped"
    limit = args.head_limit + args.slack
    run.record(
        label,
        f"growth <= {human(args.head_limit)} (+{human(args.slack)} slack)",
        signedMib(sampler.growth),
        sampler.growth <= limit,
        note,
    )


def upload(run, name, mirror):
    """
    Send a C{--upload-size} upload to the backend through a fresh txlb, as
    fast as txlb takes it, mirrored to C{mirror} (a L{Backend}) if not
    C{None}.

    @return: txlb's growth (a L{Sampler}), the seconds it took, what the
        backend and the mirror read, and what went wrong, if anything.
    """
    args = run.args
    size = args.upload_size
    config = os.path.join(run.procs.tmp, name + ".toml")
    with open(config, "w") as f:
        if mirror is not None:
            f.write(
                f'[pools.shadow]\nbackends = ["{HOST}:{mirror.port}"]\n'
                '[[routes]]\npool = "default"\nmirror = "shadow"\n'
            )
    proc, port = run.startTxlb(name, ["--config", config])
    try:
        run.warmUp(port)
        base = run.baseline(proc.pid)
        run.backend.resetCounts()
        if mirror is not None:
            mirror.resetCounts()
        halt = run.backend.halt
        sampler = Sampler(proc.pid, base, args.rss_cap, halt)
        error, sent = None, 0
        started = time.monotonic()
        limit = size / (10 * MiB) + 30  # at least 10 MiB/s
        try:
            with socket.create_connection((HOST, port), timeout=0.5) as sock:
                sock.sendall(
                    f"PUT /sink HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {size}\r\n\r\n".encode()
                )
                nextReport = started + PROGRESS_EVERY
                while sent < size:
                    now = time.monotonic()
                    if halt.is_set() or now - started > limit:
                        raise BenchError(
                            "stopped: " + ("RSS cap" if halt.is_set() else "time limit")
                        )
                    if now >= nextReport:
                        print(
                            f"  {now - started:4.0f} s: {mib(sent)} sent, "
                            f"txlb VmRSS {mib(sampler.last)} (peak {signedMib(sampler.growth)})"
                        )
                        sys.stdout.flush()
                        nextReport += PROGRESS_EVERY
                    n = min(len(PATTERN), size - sent)
                    if not sendAll(sock, PATTERN[:n], halt.is_set):
                        raise BenchError(f"txlb closed the connection after {sent:,} bytes")
                    sent += n
                status, headers, _ = readHead(sock, deadline=started + limit, stop=halt.is_set)
                if status != 200:
                    raise BenchError(f"answer: {status} {headers}")
        except (OSError, BenchError) as e:
            error = str(e) or repr(e)
        took = time.monotonic() - started
        time.sleep(SETTLE)
        sampler.stop()
        got = run.backend.sunk
        copied = None if mirror is None else mirror.sunk
    finally:
        run.stopTxlb(proc)
    if got != size and error is None:
        error = f"the backend read {got:,} of {size:,} bytes"
    return sampler, took, copied, error


def caseMirror(run):
    args = run.args
    size, rate = args.upload_size, args.mirror_rate
    label = f"{human(size)} upload mirrored to a mirror reading {human(rate)}/s"
    print(f"[mirror] {human(size)} upload without a mirror")
    plain, plainTook, _, plainError = upload(run, "txlb-upload", None)
    print(
        f"  -> {signedMib(plain.growth)} in {plainTook:.1f} s"
        + (f"; {plainError}" if plainError else "")
    )
    print(f"[mirror] {label}")
    mirror = Backend(run.backend.lineSize, False, readRate=rate)
    try:
        mirrored, took, copied, error = upload(run, "txlb-mirror", mirror)
    finally:
        mirror.close()
    error = error or plainError
    note = (
        f"base {mib(mirrored.base)}, peak {mib(mirrored.peak)}; {size:,} bytes in {took:.1f} s"
        f" ({size / took / MiB:.1f} MiB/s), the mirror read {copied:,}"
        f" (its copy {'whole' if copied == size else 'cut'}); without a mirror"
        f" {signedMib(plain.growth)} in {plainTook:.1f} s" + (f"; {error}" if error else "")
    )
    if mirrored.capped is not None:
        note += f"; --rss-cap hit after {mirrored.capped:.1f} s"
    run.record(
        label,
        f"growth <= {human(MIRROR_TARGET)} over the upload's",
        signedMib(mirrored.growth),
        error is None and mirrored.growth <= plain.growth + MIRROR_TARGET,
        note,
    )


# Driver


def raiseFdLimit(idle):
    """
    Raise this process's soft limit on open files so that it and txlb
    (started afterwards, which inherits it) can each hold C{idle}
    connections and some more.

    @return: the new soft limit.
    """
    needed = idle + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise BenchError(
                f"--idle {idle} needs {needed} open files, the hard limit is "
                f"{hard}: lower --idle or raise the limit (ulimit -Hn)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft


def size(text):
    """
    An argparse type: bytes, or with a K, M or G suffix (powers of 1024).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 200M or 1G")
    value = float(match.group(1)) * {"": 1, "k": KiB, "m": MiB, "g": GiB}[match.group(2).lower()]
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive size")
    return int(value)


def txlbOption(text):
    """
    An argparse type: C{NAME=VALUE} as txlb's C{--NAME VALUE}.
    """
    name, equals, value = text.partition("=")
    name = name.lstrip("-")
    if not equals or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
        raise argparse.ArgumentTypeError(f"{text!r} is not like response-timeout=20")
    return "--" + name, value


def parseArgs(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].strip(),
        epilog="Sizes take K, M or G suffixes (powers of 1024).",
    )
    p.add_argument(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated cases to run (default: all of {','.join(CASES)})",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: --big-size 200M --upload-size 200M --head-seconds 10 (about 1.5 minutes)",
    )
    p.add_argument(
        "--big-size", type=size, default=GiB, help="size of the big response (default 1G)"
    )
    p.add_argument(
        "--rate", type=size, default=10 * MiB, help="bytes/s the big client reads (default 10M)"
    )
    p.add_argument(
        "--idle", type=int, default=2000, help="idle keep-alive connections (default 2000)"
    )
    p.add_argument(
        "--upload-size", type=size, default=GiB, help="size of the mirrored upload (default 1G)"
    )
    p.add_argument(
        "--mirror-rate",
        type=size,
        default=MiB,
        help="bytes/s the mirror reads the mirrored upload (default 1M)",
    )
    p.add_argument(
        "--head-seconds",
        type=float,
        default=35.0,
        help="seconds each head case waits for an answer (default 35: txlb's "
        "default --response-timeout is 30)",
    )
    p.add_argument(
        "--line-size",
        type=size,
        default=128,
        help="bytes per X-Pad header line, CRLF included (default 128)",
    )
    p.add_argument(
        "--distinct-names",
        action="store_true",
        help="name each header line differently (X-Pad-00000001: ...): "
        "many more fields for Twisted's Headers to keep",
    )
    p.add_argument(
        "--head-limit",
        type=size,
        default=64 * KiB,
        help="the response head limit the head cases are held to (default 64K)",
    )
    p.add_argument(
        "--slack",
        type=size,
        default=MiB,
        help="VmRSS noise allowed on top of --head-limit (default 1M)",
    )
    p.add_argument(
        "--rss-cap",
        type=size,
        default=2 * GiB,
        help="stop a case when txlb has grown this much (default 2G)",
    )
    p.add_argument(
        "--txlb-option",
        dest="txlb_options",
        action="append",
        type=txlbOption,
        default=[],
        metavar="NAME=VALUE",
        help="one more txlb option for every case, e.g. --txlb-option response-timeout=20",
    )
    p.add_argument(
        "--txlb-src",
        default=CHECKOUT,
        help="directory txlb is imported from (default: this checkout)",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help=f"interpreter that runs twistd txlb (default: {sys.executable})",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (txlb logs)")
    args = p.parse_args(argv)
    if args.quick:
        args.big_size = 200 * MiB
        args.upload_size = 200 * MiB
        args.head_seconds = 10.0
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(args.cases) - set(CASES)
    if unknown or not args.cases:
        p.error(f"--cases: choose from {','.join(CASES)}")
    if not 1 <= args.idle <= 100_000:
        p.error("--idle must be 1-100000")
    if not 1 <= args.head_seconds <= 600:
        p.error("--head-seconds must be 1-600")
    if not (24 if args.distinct_names else 10) <= args.line_size <= 16 * KiB:
        p.error("--line-size must be 10 bytes (24 with --distinct-names) to 16K")
    if args.big_size / args.rate > 3600:
        p.error("--big-size / --rate must be at most an hour")
    args.txlb_src = os.path.abspath(args.txlb_src)
    return args


def report(run):
    rows = [("case", "target", "measured", "result")] + [
        (case, target, measured, "PASS" if passed else "FAIL")
        for case, target, measured, passed, _ in run.results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for case, _, _, _, note in run.results:
        print(f"{case}: {note}")
    return all(passed for _, _, _, passed, _ in run.results)


def main(argv=None):
    args = parseArgs(argv)
    exitOnSigterm()
    tmp = tempfile.mkdtemp(prefix="txlb-memory-")
    procs = Processes(tmp)
    backend = None
    passed = False
    try:
        limit = raiseFdLimit(args.idle if "idle" in args.cases else 0)
        env = txlbEnv(args.txlb_src)
        known = knownOptions(args.python, env)
        backend = Backend(args.line_size, args.distinct_names)
        run = Run(args, procs, backend, env, known)
        print(f"txlb from {describeSource(args.txlb_src)}")
        print(f"interpreter {args.python}; open files limit {limit}")
        print(f"txlb options: {' '.join(run.options) or '(none)'}")
        if run.dropped:
            print(f"txlb lacks these options, dropped: {' '.join(run.dropped)}")
        sys.stdout.flush()
        for case in args.cases:
            if case == "big":
                caseBig(run)
            elif case == "idle":
                caseIdle(run)
            elif case == "mirror":
                caseMirror(run)
            else:
                caseHead(run, case)
        passed = report(run)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(2)
    finally:
        procs.stopAll()
        if backend is not None:
            backend.close()
        if args.keep:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
